"""Database Optimization tasks: the old-data cleanup (its progress in a Prefect Variable, so a re-run
on any worker continues the same cleanup) and the slow-query review."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable

from runbook.checks import CheckResult
from runbook.clients.http_probe import make_client
from runbook.procedures import db_maintenance
from runbook.procedures.db_maintenance import DatabaseMaintenance, FunctionTiming
from runbook.secrets import SecretError
from runbook.settings import Settings
from tasks.common import resolver_for


def progress_variable(environment: str) -> str:
    """The Prefect Variable holding an environment's cleanup progress (lowercase, digits, _ and -)."""
    return ("tfops-db-cleanup-" + re.sub(r"[^a-z0-9_-]+", "-", environment.lower()))[:255]


class VariableProgress:
    """The cleanup's progress as a Prefect Variable (JSON: table names, cutoffs, counts; no secret).

    Unlike a shortcut, this one must not be skipped silently: a save that fails is raised, because
    a cleanup whose progress is lost would start a new cutoff on the next run."""

    def __init__(self, environment: str) -> None:
        self.name = progress_variable(environment)

    async def load(self) -> Any:
        return await Variable.aget(self.name, default=None)

    async def save(self, value: dict[str, Any]) -> None:
        await Variable.aset(self.name, value, overwrite=True)  # type: ignore[arg-type]


def database_config(settings: Settings) -> DatabaseMaintenance | None:
    return getattr(settings, "database", None)


@task(name="clean-old-data", cache_policy=NO_CACHE, tags=["maintenance", "database"])
async def clean_old_data(
    settings: Settings, now: datetime, dry_run: bool = False
) -> tuple[list[CheckResult], list[dict[str, Any]], dict[str, Any]]:
    """Delete what is past retention in every configured table, in bounded batches, resumable."""
    cfg = database_config(settings)
    if cfg is None:
        return [], [], {}
    try:
        key = resolver_for(settings).resolve(cfg.convex_deploy_key)
    except SecretError as exc:
        return db_maintenance.not_read(cfg, f"cannot read database.convex_deploy_key: {exc}")[:-1], [], {}
    async with make_client(4) as client:
        results, rows, state = await db_maintenance.clean_old_data(
            cfg, client, key, VariableProgress(settings.environment), now, dry_run=dry_run)
    get_run_logger().info("database cleanup: %s", "; ".join(f"{r['table']} -{r['deleted']}" for r in rows))
    return results, rows, state


@task(name="review-slow-queries", cache_policy=NO_CACHE, tags=["maintenance", "database"])
async def review_slow_queries(settings: Settings, now: datetime) -> tuple[list[CheckResult], list[FunctionTiming]]:
    """p95 execution time per function from the Convex function log, against the threshold."""
    cfg = database_config(settings)
    if cfg is None:
        return [], []
    try:
        key = resolver_for(settings).resolve(cfg.convex_deploy_key)
    except SecretError as exc:
        return db_maintenance.not_read(cfg, f"cannot read database.convex_deploy_key: {exc}")[-1:], []
    async with make_client(4) as client:
        result, found = await db_maintenance.review_slow_queries(cfg, client, key, now)
    return [result], found
