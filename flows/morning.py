"""The Morning Checklist (09:00 UTC): the runbook's four steps, one report and one alert at the end.

Each step is its own flow, runnable alone; here they run concurrently as subflows with their own
alerts held back, so a bad morning pages once, naming every failing item.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger

from flows.environment import env_path, load_settings
from flows.publish import publish
from flows.reviews import api_usage_flow, error_logs_flow
from flows.system_health import system_health_flow
from flows.wallets import wallet_balances_flow
from runbook.checks import CheckResult, worst
from runbook.procedures import system_health
from tasks.alerts import notify

STEPS = ["system-health", "wallet-balances", "api-usage", "error-logs"]


def _checks(report: dict[str, Any]) -> list[CheckResult]:
    return [CheckResult.from_dict(c) for c in [*report.get("checks", []), *report.get("chains", [])]]


@flow(name="morning-checklist", description="Runbook: Morning Checklist (09:00 UTC), all steps.")
async def morning_checklist_flow(env_file: str | None = None) -> dict[str, Any]:
    """System Health, Wallet Balances, API Usage and Error Logs, concurrently; one report, one alert.

    Args:
        env_file: the environment file (TOML) to check; default: the TFOPS_ENV_FILE job variable.
    """
    env_file = env_path(env_file)
    settings = load_settings(env_file)
    started = system_health.now()
    steps = await asyncio.gather(
        system_health_flow(env_file=env_file, alert=False),
        wallet_balances_flow(env_file=env_file, alert=False),
        api_usage_flow(env_file=env_file, alert=False),
        error_logs_flow(env_file=env_file, alert=False),
    )
    checks = [c for step in steps for c in _checks(step)]
    status = worst(c.status for c in checks)
    title = f"# Morning Checklist: {status.value.upper()} ({settings.environment})"
    markdown = "\n".join([title, "", *(s["markdown"] for s in steps)])
    report: dict[str, Any] = {
        "checklist": "morning-checklist",
        "environment": settings.environment,
        "status": status.value,
        "passed": all(c.status.passed for c in checks),
        "started_at": started.isoformat(),
        "finished_at": system_health.now().isoformat(),
        "steps": {name: {"status": s["status"], "passed": s["passed"]} for name, s in zip(STEPS, steps, strict=True)},
        "checks": [c.to_dict() for c in checks],
        "markdown": markdown,
        "alerts": [],
    }
    report["alerts"] = await notify(settings, "morning-checklist", checks)
    if report["alerts"]:
        get_run_logger().warning("Morning Checklist: %s; alert: %s", status.value, "; ".join(report["alerts"]))
    rows = [{"step": c.item, "check": c.target or c.name, "status": c.status.value, "observed": c.observed,
             "expected": c.expected, "severity": c.severity} for c in checks]
    await publish("morning-checklist", markdown, rows, f"Morning Checklist ({settings.environment})")
    report["finished_at"] = system_health.now().isoformat()
    return report



