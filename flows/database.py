"""Weekly Maintenance 3: Database Optimization, as a flow."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger

from flows.environment import load_settings
from flows.publish import publish
from runbook.checks import Status, worst
from runbook.procedures import db_maintenance, system_health
from runbook.procedures.reports import render_step
from tasks.alerts import notify
from tasks.db_maintenance import clean_old_data, review_slow_queries

TITLE = "Database Optimization"


@flow(name="database-optimization", description="Runbook: Weekly Maintenance 3, Database Optimization.")
async def database_optimization_flow(env_file: str | None = None, alert: bool = True,
                                     dry_run: bool = False) -> dict[str, Any]:
    """Delete data past each table's retention (30 days unless configured) through the backend's
    maintenance mutation in bounded batches, with counts before and after; a run interrupted part way
    is continued by the next one at the same cutoff. Then the slowest functions from the function log.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        alert: send the alert when the cleanup fails or cannot be verified.
        dry_run: count what would be deleted; delete nothing and leave the saved progress alone.
    """
    settings = load_settings(env_file)
    started = system_health.now()
    cfg = settings.database
    (results, rows, state), (slow, timings) = await asyncio.gather(
        clean_old_data(settings, started, dry_run=dry_run), review_slow_queries(settings, started))
    checks = [*results, *slow]
    details = "" if cfg is None else db_maintenance.render_details(cfg, rows, timings, state)
    note = "Dry run: nothing was deleted." if dry_run else ""
    markdown = render_step(TITLE, checks, note) + ("\n" + details if details else "")
    status = worst(r.status for r in checks) if checks else Status.unknown
    report: dict[str, Any] = {
        "checklist": "database-optimization",
        "environment": settings.environment,
        "status": status.value,
        "passed": bool(checks) and all(r.status.passed for r in checks),
        "started_at": started.isoformat(),
        "finished_at": system_health.now().isoformat(),
        "checks": [r.to_dict() for r in checks],
        "tables": rows,
        "cleanup": state,
        "slow_functions": db_maintenance.timing_rows(timings, cfg.slow_query_ms) if cfg else [],
        "markdown": markdown,
        "alerts": [],
    }
    await publish("database-optimization", markdown, rows or [{"table": "(none configured)"}],
                  f"{TITLE} ({settings.environment})")
    if alert:
        report["alerts"] = await notify(settings, "database-optimization", checks)
    if report["alerts"]:
        get_run_logger().warning("%s: %s; alert: %s", TITLE, status.value, "; ".join(report["alerts"]))
    return report
