"""Solana RPC endpoints through solana-py's AsyncClient, each call under a total deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
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


# ---- native balances, batched -------------------------------------------------------------------

MAX_KEYS_PER_CALL = 100  # getMultipleAccounts' documented limit


class EndpointUnusable(Exception):
    """The endpoint answered but must not be used: wrong cluster, stale head, or an RPC error."""


@dataclass(frozen=True)
class BalanceRead:
    endpoint: str
    block: int  # the slot every balance was read at (the lowest, if the node answered several)
    slots: tuple[int, ...]
    method: str
    requests: int
    balances: dict[str, int]


def _result(item: Any) -> Any:
    if not isinstance(item, dict):
        raise EndpointUnusable("answer is not a JSON-RPC object")
    if item.get("error"):
        err = item["error"]
        text = f"RPC error {err.get('code')}: {err.get('message')}" if isinstance(err, dict) else str(err)
        raise EndpointUnusable(text)
    if "result" not in item:
        raise EndpointUnusable("answer without a result")
    return item["result"]


async def _batch(
    client: httpx.AsyncClient, url: str, calls: list[tuple[str, list[Any]]], timeout_s: float
) -> list[Any]:
    body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    response = await client.post(url, json=body, timeout=httpx.Timeout(timeout_s))
    if response.status_code >= 400:
        raise EndpointUnusable(f"HTTP {response.status_code}")
    try:
        answers = response.json()
    except ValueError:
        raise EndpointUnusable("not a JSON answer") from None
    if not isinstance(answers, list):
        _result(answers)  # a single error object for the whole batch
        raise EndpointUnusable("batch answer is not a list")
    by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
    missing = [i for i in range(len(calls)) if i not in by_id]
    if missing:
        raise EndpointUnusable(f"batch answer lacks {len(missing)} of {len(calls)} results")
    return [by_id[i] for i in range(len(calls))]


async def read_native_balances(
    client: httpx.AsyncClient,
    url: str,
    pubkeys: list[str],
    *,
    genesis_hash: str,
    max_head_age_s: float,
    deadline_s: float,
) -> BalanceRead:
    """Lamports of every account in two HTTP requests: identity and head first, then one JSON-RPC
    batch of getMultipleAccounts calls (100 keys each) pinned to at least that slot.

    An account that does not exist holds 0 lamports: that is an observation, not a gap.
    """
    async with asyncio.timeout(deadline_s):
        genesis, slot = await _batch(client, url, [("getGenesisHash", []), ("getSlot", [])], deadline_s)
        if _result(genesis) != genesis_hash:
            raise EndpointUnusable(f"genesis {_result(genesis)}, expected {genesis_hash}")
        head = int(_result(slot))
        config = {"encoding": "base64", "dataSlice": {"offset": 0, "length": 0}, "minContextSlot": head}
        chunks = [pubkeys[i : i + MAX_KEYS_PER_CALL] for i in range(0, len(pubkeys), MAX_KEYS_PER_CALL)]
        answers = await _batch(
            client, url, [("getBlockTime", [head]), *(("getMultipleAccounts", [c, config]) for c in chunks)], deadline_s
        )
    block_time = _result(answers[0])
    if block_time is None:
        raise EndpointUnusable(f"no block time for slot {head}")
    age = time.time() - int(block_time)
    if age > max_head_age_s:
        raise EndpointUnusable(f"slot {head} is {age:.0f} s old (limit {max_head_age_s:g} s)")
    balances: dict[str, int] = {}
    slots = set()
    for chunk, answer in zip(chunks, answers[1:], strict=True):
        result = _result(answer)
        values = result.get("value") if isinstance(result, dict) else None
        if not isinstance(values, list) or len(values) != len(chunk):
            raise EndpointUnusable("getMultipleAccounts answered the wrong number of accounts")
        slots.add(int(result["context"]["slot"]))
        for key, account in zip(chunk, values, strict=True):
            balances[key] = 0 if account is None else int(account["lamports"])
    return BalanceRead(url, min(slots, default=head), tuple(sorted(slots)), "getMultipleAccounts", 2, balances)
