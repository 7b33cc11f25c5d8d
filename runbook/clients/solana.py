"""Solana RPC endpoints through solana-py's AsyncClient, each call under a total deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from solana.rpc.async_api import AsyncClient

from runbook.checks import Observation
from runbook.clients.http_probe import describe_error

ClientFactory = Callable[[str, float], AsyncClient]


def default_client(url: str, timeout_s: float) -> AsyncClient:
    # No transport retries: a retry would spend the probe's deadline on a second try unseen.
    return AsyncClient(url, timeout=timeout_s, http2=False, max_transport_retries=0)


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt | SystemExit | asyncio.CancelledError)


async def probe_endpoint(
    target: str,
    url: str,
    *,
    deadline_s: float,
    client_factory: ClientFactory = default_client,
) -> Observation:
    """Observe an endpoint's `genesis_hash`, `head` (slot), `head_age_s` and `latency_ms`.

    solders raises pyo3's PanicException on some malformed replies; it derives from BaseException,
    so it is caught here explicitly rather than crashing the whole checklist.
    """
    started = time.perf_counter()
    client = client_factory(url, deadline_s)
    values: dict[str, Any] = {}
    try:
        async with asyncio.timeout(deadline_s):
            genesis, slot = await asyncio.gather(client.get_genesis_hash(), client.get_slot())
            values["genesis_hash"] = str(genesis.value)
            values["head"] = int(slot.value)
            block_time = await client.get_block_time(slot.value)
            if block_time.value is not None:
                values["head_age_s"] = max(0.0, time.time() - int(block_time.value))
    except BaseException as exc:  # noqa: BLE001
        if _is_fatal(exc):
            raise
        return Observation(
            target, values=values, error=_describe(exc), latency_s=time.perf_counter() - started
        )
    finally:
        try:
            await asyncio.wait_for(client.close(), timeout=1)
        except BaseException as exc:  # noqa: BLE001 - closing must not mask the observation
            if _is_fatal(exc):
                raise
    latency = time.perf_counter() - started
    values["latency_ms"] = latency * 1000
    error = None if "head_age_s" in values else "block time of the head slot is not available"
    return Observation(target, values=values, error=error, latency_s=latency)


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "PanicException":
        return "malformed RPC answer (the decoder panicked)"
    if name in ("SolanaRpcException",) and exc.__cause__ is not None:
        return describe_error(exc.__cause__)
    if hasattr(exc, "message") and isinstance(exc.message, str):  # RPC error objects from solders
        return f"RPC error: {exc.message}"
    return describe_error(exc)
