"""System Health tasks: coarse on purpose (one task probes many endpoints concurrently), because
each task run costs a round trip to the Prefect backend and the checklist must stay fast."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from runbook.checks import CheckResult
from runbook.clients.http_probe import make_client
from runbook.procedures import system_health
from runbook.settings import Settings
from tasks.common import resolver_for


def backstop_s(settings: Settings) -> float:
    """A task timeout that only a stuck task reaches: every probe has its own, shorter deadline."""
    return max([settings.probes.timeout_s, *(settings.probe_timeout(e) for e in settings.endpoints)]) + 10


@task(name="probe-endpoints", cache_policy=NO_CACHE, tags=["system-health"])
async def probe_endpoints(settings: Settings) -> list[CheckResult]:
    """Frontend, backend and API endpoints, all at once."""
    async with make_client(settings.probes.max_connections) as client:
        return await system_health.probe_endpoints(settings, client, resolver_for(settings))


@task(name="probe-chains", cache_policy=NO_CACHE, tags=["system-health"])
async def probe_chains(settings: Settings) -> tuple[list[CheckResult], list[CheckResult]]:
    """Every RPC URL of every chain, all at once; returns per-endpoint results and per-chain rollups."""
    async with make_client(settings.probes.max_connections) as client:
        return await system_health.probe_chains(settings, client)
