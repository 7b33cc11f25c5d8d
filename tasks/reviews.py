"""The review steps of the checklists (error logs, API usage, security, metrics): each one task over many sources."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from runbook.checks import CheckResult
from runbook.clients import coingecko
from runbook.clients.http_probe import make_client
from runbook.procedures import api_usage, error_logs, metrics, security_scan
from runbook.procedures.noise import apply_rules
from runbook.procedures.rate_limit import guarded_key_usage_reader
from runbook.settings import Settings
from tasks.breaker_store import guard_for
from tasks.common import resolver_for


@task(name="review-error-logs", cache_policy=NO_CACHE, tags=["error-logs"])
async def review_error_logs(settings: Settings, now: datetime) -> list[CheckResult]:
    """Sentry issues and Convex function errors of the window, all sources at once."""
    if settings.error_logs is None:
        return []
    async with make_client(16) as client:
        return await error_logs.review(settings.error_logs, client, resolver_for(settings), now)


@task(name="review-api-usage", cache_policy=NO_CACHE, tags=["api-usage"])
async def review_api_usage(settings: Settings, now: datetime) -> list[CheckResult]:
    """CoinGecko credits, Alchemy compute units, social APIs' rate-limit windows, all at once."""
    if settings.api_usage is None:
        return []
    guard = guard_for(settings, "coingecko", strict=False)
    reader = guarded_key_usage_reader(guard) if guard else coingecko.read_key_usage
    async with make_client(16) as client:
        return await api_usage.review(settings.api_usage, client, resolver_for(settings), now, reader)


@task(name="scan-security", cache_policy=NO_CACHE, tags=["security-scan"])
async def scan_security(settings: Settings, now: datetime) -> list[CheckResult]:
    """Every chain's FeeCollector events of the window and the backend's failed logins, at once.

    The backend is the Convex deployment named in [error_logs]: both steps read the same backend.
    """
    cfg = settings.security_scan
    if cfg is None:
        return []
    convex_url = settings.error_logs.convex_url if settings.error_logs else None
    if convex_url is None:
        raise ValueError("security_scan reads failed logins from the Convex deployment in [error_logs]; none is set")
    deploy_key = resolver_for(settings).resolve(settings.error_logs.convex_deploy_key) if settings.error_logs else None
    async with make_client(32) as client:
        return await security_scan.scan(cfg, dict(settings.chains), convex_url, client, now, deploy_key=deploy_key)


@task(name="review-metrics", cache_policy=NO_CACHE, tags=["metrics"])
async def review_metrics(
    settings: Settings, now: datetime, history: dict[str, list[tuple[datetime, float]]]
) -> tuple[list[CheckResult], list[dict[str, Any]]]:
    """Every metric of the window from Convex and the chains at once, judged against its baseline,
    then the configured threshold rules on the same values. Also the rows to keep for later runs."""
    cfg = settings.metrics
    if cfg is None:
        return [], []
    deploy_key = resolver_for(settings).resolve(cfg.convex_deploy_key) if cfg.convex_deploy_key else None
    async with make_client(32) as client:
        readings = await metrics.read_metrics(cfg, settings.chains, client, now, deploy_key)
    results = metrics.review(readings, history, cfg, now)
    results += apply_rules(settings.alerts.rules, metrics.values(readings))
    return results, metrics.history_rows(readings)
