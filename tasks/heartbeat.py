"""The dead-man's switch (`[heartbeat]`): every checklist ends by pinging it, so that a Prefect that
stopped running checklists pages someone."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from runbook.clients import healthchecks
from runbook.clients.http_probe import make_client
from runbook.secrets import SecretError
from runbook.settings import Settings
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
