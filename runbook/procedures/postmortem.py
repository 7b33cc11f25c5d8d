"""The post-mortem document the recovery checklist creates (Appendix C: "Post-mortem scheduled").

A template filled with what is known when recovery ends: the incident, the timeline (every event
with its UTC time, oldest first), the recovery checklist's items, and the measured RTO/RPO. The
sections people write afterwards are left as prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TEMPLATE = """# Post-mortem: {title}

- **Environment:** {environment}
- **Incident started:** {incident_at}
- **Severity:** {severity}
- **Document created:** {created_at}
- **Post-mortem meeting:** {meeting}
- **Incident record:** {incident_url}

## Summary

_What happened, who was affected and for how long, in three sentences._

## Timeline (UTC)

{timeline}

## Recovery checklist

{checklist}

## Recovery objectives

{objectives}

## Root cause

_Why it happened: the chain of causes, not the people._

## What went well / what went badly

_Detection, response, the runbook's procedures, the tools._

## Action items

| Action | Owner | Due |
|---|---|---|
| | | |
"""


@dataclass(frozen=True)
class Event:
    at: datetime
    what: str


def timeline_markdown(events: Sequence[Event]) -> str:
    if not events:
        return "_No events recorded._"
    rows = ["| Time | Event |", "|---|---|"]
    for e in sorted(events, key=lambda e: e.at):
        rows.append(f"| {e.at.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')} | {e.what.replace('|', '/')} |")
    return "\n".join(rows)


def render(
    *,
    title: str,
    environment: str,
    incident_at: datetime,
    severity: str,
    events: Sequence[Event],
    checklist: Sequence[Mapping[str, Any]],
    objectives: Sequence[str],
    meeting: str = "",
    incident_url: str = "",
    created_at: datetime | None = None,
) -> str:
    lines = [f"- {'[x]' if row.get('passed') else '[ ]'} {row.get('item')}: {row.get('observed', '')}"
             for row in checklist]
    return TEMPLATE.format(
        title=title,
        environment=environment,
        incident_at=incident_at.astimezone(UTC).isoformat(),
        severity=severity,
        created_at=(created_at or datetime.now(UTC)).isoformat(),
        meeting=meeting or "_to be scheduled_",
        incident_url=incident_url or "_none linked_",
        timeline=timeline_markdown(events),
        checklist="\n".join(lines) or "_not run_",
        objectives="\n".join(f"- {o}" for o in objectives) or "_not measured_",
    )
