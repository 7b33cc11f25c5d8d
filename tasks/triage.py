"""Triage tasks: one per source of evidence, run side by side by the flow; each returns facts,
never raises on a source that does not answer (that source's facts are `unknown`)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from runbook.clients.http_probe import make_client
from runbook.procedures import triage_evidence
from runbook.procedures.remediation import vercel_client
from runbook.procedures.triage import Fact
from runbook.secrets import SecretError
from runbook.settings import Settings
from tasks.common import resolver_for


@task(name="probe-frontend", cache_policy=NO_CACHE, tags=["triage"])
async def probe_frontend(settings: Settings) -> list[Fact]:
    """Is the site down? And its TLS certificate, from the same handshake."""
    async with make_client(2) as client:
        return await triage_evidence.frontend_and_tls(settings, client, resolver_for(settings))


@task(name="resolve-frontend-host", cache_policy=NO_CACHE, tags=["triage"])
async def resolve_frontend_host(settings: Settings) -> Fact:
    return await triage_evidence.dns(settings, settings.probes.timeout_s)


@task(name="read-vercel", cache_policy=NO_CACHE, tags=["triage", "vercel"])
async def read_vercel(settings: Settings) -> list[Fact]:
    """Vercel's status page and the deployment production serves."""
    if settings.vercel is None:
        return await triage_evidence.vercel(None, "no [vercel] section in the environment file")
    async with make_client(4) as client:
        try:
            vc = vercel_client(settings, client, resolver_for(settings))
        except SecretError as exc:
            return await triage_evidence.vercel(None, str(exc))
        return await triage_evidence.vercel(vc)


@task(name="read-convex", cache_policy=NO_CACHE, tags=["triage", "convex"])
async def read_convex(settings: Settings, window_s: float) -> list[Fact]:
    """Recent failed Convex executions and the backend health check."""
    async with make_client(4) as client:
        return await triage_evidence.convex(settings, client, resolver_for(settings), window_s)


@task(name="check-rpcs", cache_policy=NO_CACHE, tags=["triage", "chains"])
async def check_rpcs(settings: Settings) -> list[Fact]:
    """Every RPC URL of every chain at once, rolled up per chain."""
    async with make_client(settings.probes.max_connections) as client:
        return await triage_evidence.rpc(settings, client)
