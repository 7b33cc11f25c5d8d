"""Event logs of a time window from an EVM JSON-RPC endpoint, in block ranges the endpoint accepts.

Providers cap `eth_getLogs` by block range (Alchemy 2K blocks with unbounded results, Infura and
QuickNode 10K results, many public RPCs a few thousand blocks). We ask in ranges of at most
`max_range` blocks; when the endpoint answers that a range is too large or returns too many
results, the range is halved and the same start is asked again, down to one block. A range error on
a single block, any other RPC error, a malformed answer, an HTTP error or the total deadline is an
exception: the caller reports the chain as `unknown`, never as "no events".

The start of a time window is found by binary search over block timestamps
(`eth_getBlockByNumber`), in at most `max_requests` requests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from runbook.clients.evm import EndpointUnusable, RpcTransportError
from runbook.clients.http_probe import describe_error

T = TypeVar("T")

_ids = itertools.count(1)

# What providers say when a range must be smaller (lower-cased substrings of the error message).
_RANGE_HINTS = (
    "range too large", "range is too large", "block range", "too many results", "more than",
    "limit exceeded", "response size", "exceed maximum", "exceeds maximum", "query timeout",
    "too many logs", "range too wide", "range is too wide", "results exceed",
)
_RANGE_CODES = (-32005,)  # "limit exceeded" (EIP-1474), Infura's answer to a result-count overflow


class RpcError(EndpointUnusable):
    """The endpoint answered with a JSON-RPC error object. `data` is the object's `data` (a revert's
    encoded error, which nodes such as geth send apart from the message)."""

    def __init__(self, method: str, code: Any, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: RPC error {code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class RangeTooLarge(RpcError):
    """The endpoint refuses the block range (or its result count) even for one block."""


def is_range_error(error: RpcError) -> bool:
    text = error.message.lower()
    return error.code in _RANGE_CODES or any(hint in text for hint in _RANGE_HINTS)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise RpcTransportError(f"not a JSON-RPC answer: {exc}") from None


async def _post(client: httpx.AsyncClient, url: str, payload: Any, timeout_s: float) -> Any:
    response = await client.post(url, json=payload, timeout=httpx.Timeout(timeout_s))
    if response.status_code == 429:
        raise RpcTransportError("rate limited (HTTP 429)")
    if response.status_code >= 500:
        raise RpcTransportError(f"HTTP {response.status_code}")
    if response.status_code >= 400:
        # some providers answer a refused range with HTTP 400 and a JSON-RPC error body
        try:
            body = json.loads(response.content)
        except ValueError:
            raise RpcTransportError(f"HTTP {response.status_code}") from None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return body
        raise RpcTransportError(f"HTTP {response.status_code}")
    return _decode(response.content)


def _result(method: str, answer: Any) -> Any:
    if not isinstance(answer, dict):
        raise RpcTransportError(f"{method}: answer is not a JSON-RPC object")
    error = answer.get("error")
    if error is not None:
        if isinstance(error, dict):
            raise RpcError(method, error.get("code"), str(error.get("message", "")), error.get("data"))
        raise RpcError(method, None, str(error))
    if "result" not in answer:
        raise RpcTransportError(f"{method}: answer without a result")
    return answer["result"]


async def call(client: httpx.AsyncClient, url: str, method: str, params: list[Any], timeout_s: float) -> Any:
    """One JSON-RPC request; the result, or RpcError / RpcTransportError / httpx errors."""
    answer = await _post(client, url, {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params},
                         timeout_s)
    return _result(method, answer)


async def call_batch(
    client: httpx.AsyncClient, url: str, calls: Sequence[tuple[str, list[Any]]], timeout_s: float
) -> list[Any]:
    """One JSON-RPC batch; every call's result in order, or the first error as an exception."""
    if not calls:
        return []
    first = next(_ids)
    payload = [{"jsonrpc": "2.0", "id": first + i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    for _ in range(len(calls) - 1):
        next(_ids)
    answer = await _post(client, url, payload, timeout_s)
    if not isinstance(answer, list):
        _result(calls[0][0], answer)  # a single error object for the whole batch
        raise RpcTransportError("batch answer is not a list")
    by_id = {a.get("id"): a for a in answer if isinstance(a, dict)}
    if len(by_id) != len(calls):
        raise RpcTransportError(f"batch answered {len(answer)} items for {len(calls)} calls")
    return [_result(m, by_id.get(first + i)) for i, (m, _) in enumerate(calls)]


def _check_log(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise RpcTransportError("eth_getLogs: a log is not an object")
    for key in ("address", "topics", "data", "blockNumber", "transactionHash", "logIndex"):
        if key not in item:
            raise RpcTransportError(f"eth_getLogs: a log has no {key!r}")
    if not isinstance(item["topics"], list):
        raise RpcTransportError("eth_getLogs: topics is not a list")
    return item


async def get_logs(
    client: httpx.AsyncClient,
    url: str,
    *,
    address: str,
    topics: list[Any],
    from_block: int,
    to_block: int,
    max_range: int,
    deadline_s: float,
) -> list[dict[str, Any]]:
    """Every log of `address` matching `topics` in blocks [from_block, to_block], oldest first.

    Asks in ranges of at most `max_range` blocks; a range the endpoint refuses as too large (or as
    returning too many results) is halved and asked again, down to one block, and the smaller size
    is kept for the rest of the scan. Logs marked `removed` (reorged out) are dropped. The whole scan
    runs under `deadline_s`; each request under the time left.
    """
    if max_range < 1:
        raise ValueError("max_range must be at least 1")
    logs: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + deadline_s
    size = max_range
    start = from_block
    async with asyncio.timeout(deadline_s):
        while start <= to_block:
            end = min(start + size - 1, to_block)
            query = {"address": address, "topics": topics, "fromBlock": hex(start), "toBlock": hex(end)}
            try:
                got = await call(client, url, "eth_getLogs", [query], max(0.001, ends_at - loop.time()))
            except RpcError as exc:
                if not is_range_error(exc):
                    raise
                if size == 1:
                    raise RangeTooLarge("eth_getLogs", exc.code, f"refused even for block {start}: {exc.message}"
                                        ) from None
                size = max(1, (end - start + 1) // 2)
                continue
            if not isinstance(got, list):
                raise RpcTransportError("eth_getLogs: result is not a list")
            logs.extend(log for log in map(_check_log, got) if not log.get("removed"))
            start = end + 1
    logs.sort(key=lambda log: (int(log["blockNumber"], 16), int(log["logIndex"], 16)))
    return logs


def _block_time(method_params: Any, block: Any) -> int:
    if not isinstance(block, dict) or "timestamp" not in block:
        raise RpcTransportError(f"eth_getBlockByNumber({method_params}): no such block")
    return int(block["timestamp"], 16)


async def block_timestamp(client: httpx.AsyncClient, url: str, number: int, timeout_s: float) -> int:
    block = await call(client, url, "eth_getBlockByNumber", [hex(number), False], timeout_s)
    return _block_time(number, block)


async def first_block_at_or_after(
    client: httpx.AsyncClient,
    url: str,
    timestamp: float,
    *,
    head: int,
    head_timestamp: int,
    deadline_s: float,
    max_requests: int = 64,
) -> int:
    """The lowest block number whose timestamp is >= `timestamp` (head + 1 when none is).

    Binary search over `eth_getBlockByNumber` timestamps between block 0 and `head` (whose
    timestamp the caller already read): about log2(head) requests, never more than `max_requests`.
    """
    if head_timestamp < timestamp:
        return head + 1
    lo, hi = 0, head  # invariant: ts(hi) >= timestamp; the answer is in [lo, hi]
    requests = 0
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + deadline_s
    async with asyncio.timeout(deadline_s):
        while lo < hi:
            if requests >= max_requests:
                raise EndpointUnusable(f"block search took more than {max_requests} requests")
            mid = (lo + hi) // 2
            ts = await block_timestamp(client, url, mid, max(0.001, ends_at - loop.time()))
            requests += 1
            if ts >= timestamp:
                hi = mid
            else:
                lo = mid + 1
    return lo


@dataclass(frozen=True)
class Window:
    """The blocks of a time window on one endpoint: [from_block, to_block] (empty when from > to)."""

    from_block: int
    to_block: int


async def fresh_head(
    client: httpx.AsyncClient, url: str, *, chain_id: int, max_head_age_s: float, timeout_s: float,
) -> tuple[int, int]:
    """(number, timestamp) of the head of an endpoint that is on `chain_id` with a head no older
    than `max_head_age_s`; else EndpointUnusable saying which it is not. One batched request."""
    got_id, head_block = await call_batch(
        client, url, [("eth_chainId", []), ("eth_getBlockByNumber", ["latest", False])], timeout_s)
    if int(got_id, 16) != chain_id:
        raise EndpointUnusable(f"chain id {int(got_id, 16)}, expected {chain_id}")
    if not isinstance(head_block, dict):
        raise EndpointUnusable("latest block is null")
    head, head_ts = int(head_block["number"], 16), int(head_block["timestamp"], 16)
    age = time.time() - head_ts
    if age > max_head_age_s:
        raise EndpointUnusable(f"head {head} is {age:.0f} s old (limit {max_head_age_s:g} s)")
    return head, head_ts


async def open_window(
    client: httpx.AsyncClient,
    url: str,
    *,
    chain_id: int,
    max_head_age_s: float,
    since: float,
    timeout_s: float,
    deadline_s: float,
) -> Window:
    """The blocks from the first at or after `since` (Unix seconds) up to the head, on an endpoint
    that is on `chain_id` with a head no older than `max_head_age_s`; else EndpointUnusable."""
    head, head_ts = await fresh_head(client, url, chain_id=chain_id, max_head_age_s=max_head_age_s,
                                     timeout_s=timeout_s)
    start = await first_block_at_or_after(client, url, since, head=head, head_timestamp=head_ts,
                                          deadline_s=deadline_s)
    return Window(start, head)


async def first_usable(
    endpoints: Sequence[tuple[str, str]],
    attempt: Callable[[str], Awaitable[T]],
    deadline_s: float,
) -> tuple[str, T] | list[str]:
    """Try `attempt(url)` on each (name, url) in order, each under `deadline_s`: the first that
    succeeds as (name, result), or, when none does, why each was not used ("name: reason")."""
    tried: list[str] = []
    for name, url in endpoints:
        try:
            async with asyncio.timeout(deadline_s):
                return name, await attempt(url)
        except (EndpointUnusable, RpcTransportError) as exc:
            tried.append(f"{name}: {exc}")
        except (httpx.HTTPError, TimeoutError, OSError, ValueError, KeyError, TypeError) as exc:
            tried.append(f"{name}: {describe_error(exc)}")
    return tried
