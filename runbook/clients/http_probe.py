"""HTTP(S) probes with a total deadline each, run concurrently on one shared client."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from runbook.checks import Observation

# Bodies are only read to check a marker or a JSON field; a huge page must not fill memory.
MAX_BODY_BYTES = 256 * 1024


def make_client(
    max_connections: int,
    transport: httpx.AsyncBaseTransport | None = None,
    verify: bool | ssl.SSLContext = True,
) -> httpx.AsyncClient:
    """One client for a whole checklist: its pool must hold every concurrent probe, or a probe
    would wait for a free connection and spend its deadline in the queue.

    Few idle connections are kept: each URL is probed once a run, and httpcore rescans its whole
    pool per idle connection on every request, which with hundreds kept alive costs seconds of CPU
    (measured by bench/system_health.py) and holds up every probe's deadline timer.
    """
    return httpx.AsyncClient(
        transport=transport,
        verify=verify,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=min(10, max_connections)),
        headers={"User-Agent": "tokenforge-ops/health"},
        trust_env=False,
    )


class BodyTooLarge(Exception):
    pass


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """A streamed response's body, refused past `limit` bytes so that no answer can fill memory."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > limit:
            raise BodyTooLarge(f"the answer is larger than {limit // 1024:,} KiB")
    return bytes(body)


def _tls_days_left(response: httpx.Response) -> float | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    ssl_object = stream.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    not_after = cert.get("notAfter") if cert else None
    if not not_after:
        return None
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
    return (expires - datetime.now(UTC)).total_seconds() / 86400


def _json_at(body: bytes, dotted: str) -> Any:
    try:
        value: Any = json.loads(body)
    except ValueError:
        return None
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def describe_error(exc: BaseException) -> str:
    # By class name as well as by type: solana-py raises the same errors from its own httpx fork.
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, TimeoutError) or "TimeoutException" in names:
        return "timed out"
    if "ConnectError" in names:
        return f"connection failed ({exc or 'refused'})"
    if "RemoteProtocolError" in names:
        return f"protocol error ({exc})"
    return f"{type(exc).__name__}: {exc}"


async def probe(
    client: httpx.AsyncClient,
    target: str,
    url: str,
    *,
    deadline_s: float,
    method: str = "GET",
    body: str | None = None,
    headers: Mapping[str, str] | None = None,
    json_field: str | None = None,
) -> Observation:
    """Send one request and observe status, latency, TLS days left, and what the body says.

    The deadline covers everything: waiting for a pooled connection, connecting, TLS, and reading.
    """
    started = time.perf_counter()
    try:
        async with asyncio.timeout(deadline_s):
            request = client.build_request(
                method,
                url,
                content=body.encode() if body is not None else None,
                headers={**(headers or {}), **({"Content-Type": "application/json"} if body else {})},
                timeout=httpx.Timeout(deadline_s),
            )
            response = await client.send(request, stream=True)
            try:
                tls_days = _tls_days_left(response)
                chunks = bytearray()
                async for chunk in response.aiter_bytes():
                    chunks.extend(chunk)
                    if len(chunks) >= MAX_BODY_BYTES:
                        break
            finally:
                await response.aclose()
    except BaseException as exc:  # noqa: BLE001 - any failure to get an answer is the observation
        if isinstance(exc, KeyboardInterrupt | SystemExit | asyncio.CancelledError):
            raise
        return Observation(target, error=describe_error(exc), latency_s=time.perf_counter() - started)
    latency = time.perf_counter() - started
    values: dict[str, Any] = {
        "status": response.status_code,
        "latency_ms": latency * 1000,
        "body": bytes(chunks),
    }
    if url.startswith("https://"):
        values["tls_days"] = tls_days
    if json_field:
        values["json"] = _json_at(bytes(chunks), json_field)
    return Observation(target, values=values, latency_s=latency)
