"""Reports as the terminal shows them, rebuilt from the JSON a flow returns."""

from __future__ import annotations

import json
from typing import Any

from runbook.procedures import system_health


def render_text(report: dict[str, Any]) -> str:
    kind = report.get("checklist")
    if kind == "system-health":
        return system_health.render_text(system_health.report_from_dict(report))
    if "markdown" in report:
        return str(report["markdown"]).replace("## ", "", 1)
    return json.dumps(report, indent=2)
