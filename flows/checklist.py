"""A checklist made of step flows: run them concurrently with their own alerts held back, then one
report and one alert naming every failing item, and at the end a heartbeat to the dead-man's switch
(`[heartbeat]`), so that a Prefect that stopped running checklists pages someone."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.publish import publish
from runbook.checks import CheckResult, worst
from runbook.clients import healthchecks
from runbook.clients.http_probe import make_client
from runbook.procedures import system_health
from runbook.secrets import SecretError
from runbook.settings import Settings
from tasks.alerts import notify
from tasks.common import resolver_for


@task(name="heartbeat", cache_policy=NO_CACHE, tags=["heartbeat"])
async def heartbeat(settings: Settings, failed: bool, summary: str) -> str:
    """Ping the configured check: success, or `/fail` when the checklist failed. Never raises: a lost
    ping must not fail the checklist (the check pages on its own when pings stop); it is reported."""
    cfg = settings.heartbeat
    if cfg is None:
        return "not configured ([heartbeat] ping_url)"
    try:
        url = resolver_for(settings).resolve(cfg.ping_url)
    except SecretError as exc:
        return f"not sent ({exc})"
    async with make_client(1) as client:
        delivery = await healthchecks.ping(client, url, failed=failed, body=summary, timeout_s=cfg.timeout_s,
                                           attempts=cfg.attempts)
    if not delivery.ok:
        get_run_logger().warning("heartbeat: %s", delivery.detail)
    return delivery.detail


def _checks(report: dict[str, Any]) -> list[CheckResult]:
    return [CheckResult.from_dict(c) for c in [*report.get("checks", []), *report.get("chains", [])]]


async def run_checklist(
    name: str, title: str, settings: Settings, steps: dict[str, Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """`steps` maps each step's flow name to its (not yet awaited) subflow run, called with alert=False."""
    started = system_health.now()
    try:
        reports = await asyncio.gather(*steps.values())
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
