"""Reports as the terminal shows them, rebuilt from the JSON a flow returns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from runbook.checks import CheckResult, Status, worst
from runbook.procedures import system_health

_MARK = {Status.ok: "[x]", Status.warn: "[x]", Status.fail: "[ ]", Status.unknown: "[?]"}


def render_step(title: str, results: Sequence[CheckResult], note: str = "") -> str:
    """A checklist step as the runbook reads: its verdict, then one line per check."""
    status = worst(r.status for r in results) if results else Status.unknown
    lines = [f"## {title}: {status.value.upper()}", ""]
    if note:
        lines += [note, ""]
    if not results:
        lines.append("- [?] nothing was checked (is this step configured in the environment file?)")
    for r in results:
        line = f"- {_MARK[r.status]} {r.target or r.name}: {r.status.value.upper()}, {r.observed}"
        if r.status is not Status.ok:
            line += f" (expected {r.expected})"
        lines.append(line)
    return "\n".join(lines) + "\n"


def render_text(report: dict[str, Any]) -> str:
    kind = report.get("checklist")
    if kind == "system-health":
        return system_health.render_text(system_health.report_from_dict(report))
    if "markdown" in report:
        return str(report["markdown"]).replace("## ", "", 1)
    return json.dumps(report, indent=2)
