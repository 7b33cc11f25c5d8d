"""A checklist made of step flows: run them concurrently with their own alerts held back, then one
report and one alert naming every failing item."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from prefect import get_run_logger

from flows.publish import publish
from runbook.checks import CheckResult, worst
from runbook.procedures import system_health
from runbook.settings import Settings
from tasks.alerts import notify


def _checks(report: dict[str, Any]) -> list[CheckResult]:
    return [CheckResult.from_dict(c) for c in [*report.get("checks", []), *report.get("chains", [])]]


async def run_checklist(
    name: str, title: str, settings: Settings, steps: dict[str, Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """`steps` maps each step's flow name to its (not yet awaited) subflow run, called with alert=False."""
    started = system_health.now()
    reports = await asyncio.gather(*steps.values())
    checks = [c for step in reports for c in _checks(step)]
    status = worst(c.status for c in checks)
    heading = f"# {title}: {status.value.upper()} ({settings.environment})"
    markdown = "\n".join([heading, "", *(s["markdown"] for s in reports)])
    report: dict[str, Any] = {
        "checklist": name,
        "environment": settings.environment,
        "status": status.value,
        "passed": all(c.status.passed for c in checks),
        "started_at": started.isoformat(),
        "finished_at": system_health.now().isoformat(),
        "steps": {step: {"status": s["status"], "passed": s["passed"]} for step, s in zip(steps, reports, strict=True)},
        "checks": [c.to_dict() for c in checks],
        "markdown": markdown,
        "alerts": [],
    }
    report["alerts"] = await notify(settings, name, checks)
    if report["alerts"]:
        get_run_logger().warning("%s: %s; alert: %s", title, status.value, "; ".join(report["alerts"]))
    rows = [{"step": c.item, "check": c.target or c.name, "status": c.status.value, "observed": c.observed,
             "expected": c.expected, "severity": c.severity} for c in checks]
    await publish(name, markdown, rows, f"{title} ({settings.environment})")
    report["finished_at"] = system_health.now().isoformat()
    return report
