"""Morning Checklist step 1: System Health Check, as a flow."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger

from flows.environment import load_settings
from flows.publish import publish
from runbook.procedures import system_health
from tasks.alerts import notify
from tasks.health import backstop_s, probe_chains, probe_endpoints


@flow(name="system-health", description="Runbook: Morning Checklist 1, System Health Check.")
async def system_health_flow(env_file: str | None = None, alert: bool = True) -> dict[str, Any]:
    """Probe frontend, backend, every chain's RPC endpoints and the API, all at once.

    Args:
        env_file: the environment file (TOML) to check; default: the TFOPS_ENV_FILE job variable.
        alert: send the alert for failing checks (the Morning Checklist sends one for all steps).
    """
    logger = get_run_logger()
    settings = load_settings(env_file)
    started = system_health.now()
    backstop = backstop_s(settings)
    (results, (rpc_results, rollups)) = await asyncio.gather(
        probe_endpoints.with_options(timeout_seconds=backstop)(settings),
        probe_chains.with_options(timeout_seconds=backstop)(settings),
    )
    report = system_health.HealthReport(
        environment=settings.environment,
        started_at=started,
        finished_at=system_health.now(),
        results=[*results, *rpc_results],
        chains=rollups,
    )
    if alert:
        report.deliveries = await notify(settings, "system-health", report.all_checks())
    if report.deliveries:
        logger.warning("System health: %s; alert: %s", report.status.value, "; ".join(report.deliveries))
    markdown = system_health.render_markdown(report)
    await publish(
        "system-health", markdown, system_health.table_rows(report), f"System Health Check ({settings.environment})"
    )
    return {**report.to_dict(), "markdown": markdown}
