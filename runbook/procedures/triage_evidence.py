"""The evidence triage reads, each gathered under its own deadline; a source that cannot be read
is an `unknown` fact with the reason, never a healthy default.

- Frontend and TLS: one probe of the configured frontend endpoint (the System Health probe). No
  answer or a 5xx is "down"; a certificate the client refuses is a TLS failure, read from the
  same handshake; a certificate that verifies yields its days left.
- DNS: the frontend host resolved by the system resolver; "name not known" is a failure, a
  temporary resolver failure or a timeout is unknown.
- Vercel: the public status page and the deployment the production domain serves.
- Convex: failed executions in the recent window from the function log, and the backend health check.
- RPC: every URL of every chain (answers, right chain, fresh head), rolled up per chain.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from urllib.parse import urlsplit

import httpx

from runbook.checks import Status
from runbook.clients.vercel import VercelClient, VercelError
from runbook.procedures import remediation
from runbook.procedures.triage import (
    BACKEND_HEALTH,
    CONVEX_ERRORS,
    DNS,
    FRONTEND,
    RPC_PREFIX,
    TLS,
    VERCEL_DEPLOYMENT,
    VERCEL_STATUS,
    Fact,
    not_gathered,
)
from runbook.secrets import SecretError, SecretResolver
from runbook.settings import Component, Endpoint, Settings

_TLS_HINTS = ("ssl", "certificate", "tls")


async def frontend_and_tls(settings: Settings, client: httpx.AsyncClient, resolver: SecretResolver) -> list[Fact]:
    endpoint = remediation.endpoint_of(settings, Component.frontend)
    if endpoint is None:
        why = "no frontend endpoint in the environment file"
        return [not_gathered(FRONTEND, why), not_gathered(TLS, why)]
    passed, line, observation = await remediation.check_endpoint(settings, endpoint, client, resolver)
    https = endpoint.url.startswith("https://")
    if observation is None:
        return [not_gathered(FRONTEND, line), not_gathered(TLS, line)]
    status_code = observation.get("status")
    if observation.error is not None:
        tls_broken = https and any(h in observation.error.lower() for h in _TLS_HINTS)
        frontend = Fact(FRONTEND, Status.fail, f"down: {observation.error}", endpoint.url)
        if tls_broken:
            tls = Fact(TLS, Status.fail, f"the certificate is refused: {observation.error}", endpoint.url)
        elif https:
            tls = not_gathered(TLS, f"no TLS handshake completed: {observation.error}")
        else:
            tls = Fact(TLS, Status.ok, "not applicable (http:// URL)")
        return [frontend, tls]
    if isinstance(status_code, int) and status_code >= 500:
        frontend = Fact(FRONTEND, Status.fail, f"down: {line}", endpoint.url)
    elif passed:
        frontend = Fact(FRONTEND, Status.ok, line, endpoint.url)
    else:
        frontend = Fact(FRONTEND, Status.warn, f"answers, but {line}", endpoint.url)
    return [frontend, _tls_fact(endpoint, observation.get("tls_days"), https)]


def _tls_fact(endpoint: Endpoint, days: float | None, https: bool) -> Fact:
    if not https:
        return Fact(TLS, Status.ok, "not applicable (http:// URL)")
    if days is None:
        return not_gathered(TLS, "the certificate's expiry was not readable")
    if days <= 0:
        return Fact(TLS, Status.fail, f"expired {-days:.0f} days ago")
    if days < endpoint.expect.min_tls_days:
        return Fact(TLS, Status.warn, f"valid, but only {days:.0f} more days (renew within "
                                      f"{endpoint.expect.min_tls_days})")
    return Fact(TLS, Status.ok, f"valid {days:.0f} more days")


async def dns(settings: Settings, timeout_s: float) -> Fact:
    endpoint = remediation.endpoint_of(settings, Component.frontend)
    if endpoint is None:
        return not_gathered(DNS, "no frontend endpoint in the environment file")
    host = urlsplit(endpoint.url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return Fact(DNS, Status.ok, f"{host} is an IP address; nothing to resolve")
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except TimeoutError:
        return not_gathered(DNS, f"resolving {host} timed out after {timeout_s:g} s")
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return Fact(DNS, Status.fail, f"{host} does not resolve ({exc.strerror})")
        return not_gathered(DNS, f"resolving {host}: {exc.strerror}")
    addresses = sorted({str(info[4][0]) for info in infos})
    took = (time.perf_counter() - started) * 1000
    return Fact(DNS, Status.ok, f"{host} resolves to {', '.join(addresses[:4])} ({took:.0f} ms)")


async def vercel(vc: VercelClient | None, why_not: str = "") -> list[Fact]:
    if vc is None:
        return [not_gathered(VERCEL_STATUS, why_not), not_gathered(VERCEL_DEPLOYMENT, why_not)]

    async def status() -> Fact:
        try:
            got = await vc.status()
        except VercelError as exc:
            return not_gathered(VERCEL_STATUS, str(exc))
        if got.indicator in ("major", "critical"):
            return Fact(VERCEL_STATUS, Status.fail, f"Vercel is down: {got.indicator}, {got.description}")
        if got.indicator == "minor":
            return Fact(VERCEL_STATUS, Status.warn, f"minor incident: {got.description}")
        return Fact(VERCEL_STATUS, Status.ok, f"up: {got.description or 'operational'}")

    async def deployment() -> Fact:
        try:
            current = await vc.current_production()
        except VercelError as exc:
            return not_gathered(VERCEL_DEPLOYMENT, str(exc))
        status = Status.ok if current.ready else Status.fail
        return Fact(VERCEL_DEPLOYMENT, status, f"{current.label()}", f"production domain {vc.config.production_domain}")

    return list(await asyncio.gather(status(), deployment()))


async def convex(settings: Settings, client: httpx.AsyncClient, resolver: SecretResolver,
                 window_s: float) -> list[Fact]:
    async def errors() -> Fact:
        cfg = settings.error_logs
        if cfg is None:
            return not_gathered(CONVEX_ERRORS, "no [error_logs] section: the Convex deployment is not configured")
        try:
            key = resolver.resolve(cfg.convex_deploy_key)
        except SecretError as exc:
            return not_gathered(CONVEX_ERRORS, str(exc))
        now = time.time()
        found = await remediation.convex_errors(client, cfg.convex_url, key, since_s=now - window_s, until_s=now,
                                                deadline_s=cfg.timeout_s, settle_s=cfg.convex_settle_s,
                                                max_pages=cfg.max_pages)
        window = f"in the last {window_s / 60:g} min"
        if found.total:
            return Fact(CONVEX_ERRORS, Status.fail, f"{found.line()} {window}",
                        "; ".join(f"{f['function']}: {str(f['last_error'])[:120]}" for f in found.functions[:5]))
        if not found.known or not found.complete:
            return not_gathered(CONVEX_ERRORS, found.error or "the log was not read to the end")
        return Fact(CONVEX_ERRORS, Status.ok, f"no failed executions {window}")

    async def health() -> Fact:
        endpoint = remediation.endpoint_of(settings, Component.backend)
        if endpoint is None:
            return not_gathered(BACKEND_HEALTH, "no backend endpoint in the environment file")
        passed, line, observation = await remediation.check_endpoint(settings, endpoint, client, resolver)
        if observation is None:
            return not_gathered(BACKEND_HEALTH, line)
        return Fact(BACKEND_HEALTH, Status.ok if passed else Status.fail, line, endpoint.url)

    return list(await asyncio.gather(errors(), health()))


async def rpc(settings: Settings, client: httpx.AsyncClient) -> list[Fact]:
    timeout_s = settings.probes.timeout_s

    async def one(name: str) -> Fact:
        checks = await remediation.chain_health(client, name, settings.chains[name], timeout_s)
        status, observed, detail = remediation.faulty_chain_status(checks)
        return Fact(RPC_PREFIX + name, status, observed, detail)

    return list(await asyncio.gather(*(one(n) for n in settings.chains)))
