"""Checklist steps that are a list of checks: run, report, publish, alert (unless composed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from prefect import get_run_logger

from flows.publish import publish
from runbook.checks import CheckResult, Status, worst
from runbook.procedures import system_health
from runbook.procedures.reports import render_step
from runbook.settings import Settings
from tasks.alerts import notify


async def run_step(
    name: str,
    title: str,
    settings: Settings,
    check: Callable[[Settings, datetime], Awaitable[list[CheckResult]]],
    alert: bool,
) -> dict[str, Any]:
    started = system_health.now()
    results = await check(settings, started)
    markdown = render_step(title, results)
    status = worst(r.status for r in results) if results else Status.unknown
    report: dict[str, Any] = {
        "checklist": name,
        "environment": settings.environment,
        "status": status.value,
        "passed": bool(results) and all(r.status.passed for r in results),
        "started_at": started.isoformat(),
        "finished_at": system_health.now().isoformat(),
        "checks": [r.to_dict() for r in results],
        "markdown": markdown,
        "alerts": [],
    }
    rows = [{"check": r.target or r.name, "status": r.status.value, "observed": r.observed,
             "expected": r.expected, "severity": r.severity} for r in results]
    await publish(name, markdown, rows, f"{title} ({settings.environment})")
    if alert:
        report["alerts"] = await notify(settings, name, results)
    if report["alerts"]:
        get_run_logger().warning("%s: %s; alert: %s", title, status.value, "; ".join(report["alerts"]))
    return report
