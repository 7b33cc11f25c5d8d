"""One alert per checklist run: grouped, naming every failing item, routed by severity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runbook.checks import CheckResult, Status
from runbook.settings import Notifications, Severity


@dataclass(frozen=True)
class Alert:
    checklist: str
    environment: str
    severity: Severity
    title: str
    lines: tuple[str, ...]

    @property
    def dedup_key(self) -> str:
        """Stable per checklist and environment, so a repeat updates the open page, not a new one."""
        return f"tokenforge-ops/{self.environment}/{self.checklist}"

    @property
    def text(self) -> str:
        return "\n".join([self.title, *(f"- {line}" for line in self.lines)])

    def slack_blocks(self) -> list[dict]:
        body = "\n".join(f"• {line}" for line in self.lines)
        return [
            {"type": "header", "text": {"type": "plain_text", "text": self.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}},
        ]


def compose(checklist: str, environment: str, results: Sequence[CheckResult]) -> Alert | None:
    """None when every check passed; otherwise one alert at the most severe failing item's level."""
    bad = [r for r in results if r.status in (Status.fail, Status.unknown)]
    if not bad:
        return None
    severity = min((Severity(r.severity) for r in bad), key=lambda s: s.rank)
    failed = sum(r.status is Status.fail for r in bad)
    unknown = len(bad) - failed
    counts = ", ".join(
        part for part in (f"{failed} failed" if failed else "", f"{unknown} unknown" if unknown else "") if part
    )
    title = f"[{severity.value}] {checklist} on {environment}: {counts}"
    lines = tuple(
        f"{r.status.value.upper()} {r.target or r.name} ({r.item}): {r.observed}; expected {r.expected}"
        for r in sorted(bad, key=lambda r: (Severity(r.severity).rank, r.name))
    )
    return Alert(checklist, environment, severity, title, lines)


def channels_for(alert: Alert, notifications: Notifications) -> list[str]:
    channels = []
    if notifications.slack is not None:
        channels.append("slack")
    if notifications.pagerduty is not None and alert.severity.rank <= notifications.page_at.rank:
        channels.append("pagerduty")
    return channels
