"""A checklist made of step flows: run them concurrently with their own alerts held back, then one
report and one alert naming every failing item, and at the end a heartbeat to the dead-man's switch
(`[heartbeat]`), so that a Prefect that stopped running checklists pages someone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from prefect import get_run_logger

from flows.environment import env_path, load_settings
from flows.publish import publish
from runbook.checks import CheckResult, worst
from runbook.procedures import system_health
from tasks.alerts import notify
from tasks.heartbeat import heartbeat

# A step flow, called as a subflow: `step(env_file=..., alert=False)` returns its report.
StepFlow = Callable[..., Awaitable[dict[str, Any]]]


def _checks(report: dict[str, Any]) -> list[CheckResult]:
    return [CheckResult.from_dict(c) for c in [*report.get("checks", []), *report.get("chains", [])]]


async def run_checklist(name: str, title: str, env_file: str | None, steps: dict[str, StepFlow]) -> dict[str, Any]:
    """`steps` maps each step's flow name to its flow; each runs on `env_file` with its alert held back."""
    env_file = env_path(env_file)
    settings = load_settings(env_file)
    started = system_health.now()
    try:
        reports = await asyncio.gather(*(step(env_file=env_file, alert=False) for step in steps.values()))
    except Exception as exc:
        await heartbeat(settings, True, f"{title} ({settings.environment}) did not finish: {type(exc).__name__}")
        raise
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
    failing = [f"- {c.item or c.name}: {c.target or c.name} {c.status.value}" for c in checks if not c.status.passed]
    report["heartbeat"] = await heartbeat(settings, not report["passed"], "\n".join([heading.lstrip("# "), *failing]))
    report["markdown"] = markdown = f"{markdown}\n\nHeartbeat (dead-man's switch): {report['heartbeat']}\n"
    await publish(name, markdown, rows, f"{title} ({settings.environment})")
    report["finished_at"] = system_health.now().isoformat()
    return report
