"""Remediation tasks: the rollback (with its journal in a Prefect Variable, so a re-run on any
worker sees what an earlier run promoted), the Convex readings, and the active-RPC record."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable

from runbook.clients.http_probe import make_client
from runbook.procedures import remediation
from runbook.procedures.remediation import ConvexErrors, FailoverReport, RollbackReport
from runbook.secrets import SecretError
from runbook.settings import Component, ConfigError, Settings
from tasks.common import post_to_team, resolver_for


def rollback_journal_variable(environment: str) -> str:
    return ("tfops-rollback-" + re.sub(r"[^a-z0-9_-]+", "-", environment.lower()))[:255]


@task(name="roll-back-frontend", cache_policy=NO_CACHE, tags=["remediation", "vercel"])
async def roll_back_frontend(settings: Settings, deployment_id: str | None, dry_run: bool,
                             only_if_down: bool) -> RollbackReport:
    """Promote the last good (or the given) production deployment and verify the frontend answers."""
    endpoint = remediation.endpoint_of(settings, Component.frontend)
    if endpoint is None:
        raise ConfigError(f"environment {settings.environment}",
                          ["endpoints: no frontend endpoint, so a rollback could not be verified"])
    resolver = resolver_for(settings)
    journal = rollback_journal_variable(settings.environment)
    logger = get_run_logger()

    async def journal_get() -> Mapping[str, Any] | None:
        value: Any = await Variable.aget(journal, default=None)
        return value if isinstance(value, dict) else None

    async def journal_put(entry: Mapping[str, Any]) -> None:
        await Variable.aset(journal, dict(entry), overwrite=True)

    async with make_client(4) as client:
        vc = remediation.vercel_client(settings, client, resolver)

        async def frontend_check() -> tuple[bool, str]:
            ok, line, _ = await remediation.check_endpoint(settings, endpoint, client, resolver)
            return ok, line

        report = await remediation.rollback(vc, settings.environment, deployment_id=deployment_id, dry_run=dry_run,
                                            only_if_down=only_if_down, frontend_check=frontend_check,
                                            journal_get=journal_get, journal_put=journal_put)
    for step in report.steps:
        logger.info("rollback: %s", step)
    return report


def _convex(settings: Settings) -> Any:
    if settings.error_logs is None:
        raise ConfigError(f"environment {settings.environment}",
                          ["error_logs: no [error_logs] section, so the Convex deployment is not configured"])
    return settings.error_logs


@task(name="find-convex-errors", cache_policy=NO_CACHE, tags=["remediation", "convex"])
async def find_convex_errors(settings: Settings, since_s: float, until_s: float) -> ConvexErrors:
    """Failed executions per function in [since_s, until_s], from the log `npx convex logs` reads."""
    cfg = _convex(settings)
    try:
        key = resolver_for(settings).resolve(cfg.convex_deploy_key)
    except SecretError as exc:
        return ConvexErrors([], 0, None, False, str(exc))
    async with make_client(2) as client:
        return await remediation.convex_errors(client, cfg.convex_url, key, since_s=since_s, until_s=until_s,
                                               deadline_s=cfg.timeout_s, settle_s=cfg.convex_settle_s,
                                               max_pages=cfg.max_pages)


@task(name="check-backend-health", cache_policy=NO_CACHE, tags=["remediation", "convex"])
async def check_backend_health(settings: Settings) -> tuple[bool, str]:
    endpoint = remediation.endpoint_of(settings, Component.backend)
    if endpoint is None:
        return False, "unknown (no backend endpoint in the environment file)"
    async with make_client(2) as client:
        ok, line, _ = await remediation.check_endpoint(settings, endpoint, client, resolver_for(settings))
    return ok, line


@task(name="read-active-rpc", cache_policy=NO_CACHE, tags=["remediation", "chains"])
async def read_active_rpc(environment: str, chain: str) -> dict[str, Any] | None:
    value: Any = await Variable.aget(remediation.active_rpc_variable(environment, chain), default=None)
    return value if isinstance(value, dict) else None


@task(name="choose-rpc", cache_policy=NO_CACHE, tags=["remediation", "chains"])
async def choose_rpc(settings: Settings, chain: str, previous: dict[str, Any] | None, direction: str,
                     dry_run: bool, force: bool) -> FailoverReport:
    """Failover: the first healthy backup. Switch back: the primary, only if healthy."""
    timeout_s = settings.probes.timeout_s
    async with make_client(8) as client:
        if direction == "failover":
            return await remediation.failover(client, settings.environment, chain, settings.chains[chain],
                                              timeout_s=timeout_s, previous=previous, dry_run=dry_run, force=force)
        return await remediation.switch_back(client, settings.environment, chain, settings.chains[chain],
                                             timeout_s=timeout_s, previous=previous, dry_run=dry_run)


@task(name="record-active-rpc", cache_policy=NO_CACHE, tags=["remediation", "chains"])
async def record_active_rpc(variable: str, record: dict[str, Any]) -> bool:
    """Write the active endpoint and read it back; True when the read-back is what was written."""
    await Variable.aset(variable, record, overwrite=True)
    back: Any = await Variable.aget(variable, default=None)
    return bool(back == record)


async def tell_team(settings: Settings, text: str) -> str:
    """The outcome on the team's Slack channel (the alerting webhook)."""
    sent = await post_to_team(settings, text)
    return sent.detail if sent else "slack: not configured"
