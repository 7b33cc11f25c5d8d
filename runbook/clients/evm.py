"""EVM chains through web3, on an httpx transport we control (deadlines, pool, test transports)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, cast

import httpx
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak
from web3 import AsyncWeb3
from web3.providers.async_base import AsyncJSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from runbook.checks import Observation
from runbook.clients.http_probe import describe_error


class RpcTransportError(Exception):
    """The RPC did not give a usable JSON-RPC answer (HTTP error, rate limit, garbage)."""


class HttpxProvider(AsyncJSONBaseProvider):
    """A web3 provider that sends JSON-RPC over a shared httpx client.

    web3's own async provider brings aiohttp and its own session cache; ours shares the checklist's
    connection pool, takes an injectable transport, and never follows redirects.
    """

    def __init__(self, url: str, client: httpx.AsyncClient, timeout_s: float) -> None:
        super().__init__()
        self.endpoint_uri = url
        self._client = client
        self._timeout = httpx.Timeout(timeout_s)

    async def _post(self, payload: bytes) -> bytes:
        response = await self._client.post(
            self.endpoint_uri,
            content=payload,
            headers={"Content-Type": "application/json"},
            timeout=self._timeout,
        )
        if response.status_code == 429:
            raise RpcTransportError("rate limited (HTTP 429)")
        if response.status_code >= 400:
            raise RpcTransportError(f"HTTP {response.status_code}")
        return response.content

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        raw = await self._post(self.encode_rpc_request(method, params))
        return self._decode(raw)

    async def make_batch_request(
        self, batch_requests: list[tuple[RPCEndpoint, Any]]
    ) -> list[RPCResponse] | RPCResponse:
        raw = await self._post(self.encode_batch_rpc_request(batch_requests))
        decoded = self._decode(raw)
        if isinstance(decoded, list):
            return sorted(decoded, key=lambda r: cast(int, r.get("id", 0)))
        return decoded

    def _decode(self, raw: bytes) -> Any:
        try:
            return self.decode_rpc_response(raw)
        except ValueError as exc:
            raise RpcTransportError(f"not a JSON-RPC answer: {exc}") from None

    async def is_connected(self, show_traceback: bool = False) -> bool:
        return True


def web3_for(url: str, client: httpx.AsyncClient, timeout_s: float) -> AsyncWeb3:
    return AsyncWeb3(HttpxProvider(url, client, timeout_s))


def _rpc_error(item: Any) -> str | None:
    if isinstance(item, dict) and item.get("error"):
        err = item["error"]
        return f"RPC error {err.get('code')}: {err.get('message')}" if isinstance(err, dict) else str(err)
    return None


async def probe_endpoint(
    client: httpx.AsyncClient, target: str, url: str, *, deadline_s: float
) -> Observation:
    """Ask one RPC endpoint, in a single JSON-RPC batch, for its chain id and its latest block.

    Observes `chain_id`, `head` (block number), `head_age_s` and `latency_ms`.
    """
    provider = HttpxProvider(url, client, deadline_s)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(deadline_s):
            answers = await provider.make_batch_request(
                [
                    (RPCEndpoint("eth_chainId"), []),
                    (RPCEndpoint("eth_getBlockByNumber"), ["latest", False]),
                ]
            )
    except RpcTransportError as exc:
        return Observation(target, error=str(exc), latency_s=time.perf_counter() - started)
    except BaseException as exc:  # noqa: BLE001 - an unanswered probe is an observation
        if isinstance(exc, KeyboardInterrupt | SystemExit | asyncio.CancelledError):
            raise
        return Observation(target, error=describe_error(exc), latency_s=time.perf_counter() - started)
    latency = time.perf_counter() - started
    if not isinstance(answers, list) or len(answers) != 2:
        error = _rpc_error(answers) or "batch answer has the wrong shape"
        return Observation(target, error=error, latency_s=latency)
    values: dict[str, Any] = {"latency_ms": latency * 1000}
    errors = [e for e in (_rpc_error(a) for a in answers) if e]
    try:
        if not _rpc_error(answers[0]):
            values["chain_id"] = int(answers[0]["result"], 16)
        block = answers[1].get("result") if not _rpc_error(answers[1]) else None
        if isinstance(block, dict):
            values["head"] = int(block["number"], 16)
            values["head_age_s"] = max(0.0, time.time() - int(block["timestamp"], 16))
        elif not errors:
            errors.append("latest block is null")
    except (KeyError, TypeError, ValueError) as exc:
        errors.append(f"malformed answer: {exc!r}")
    return Observation(target, values=values, error="; ".join(errors) or None, latency_s=latency)


# ---- native balances, batched -------------------------------------------------------------------

MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
_AGGREGATE3 = bytes(keccak(text="aggregate3((address,bool,bytes)[])"))[:4]
_GET_ETH_BALANCE = bytes(keccak(text="getEthBalance(address)"))[:4]


class EndpointUnusable(Exception):
    """The endpoint answered but must not be used: wrong chain, stale head, or an RPC error."""


@dataclass(frozen=True)
class BalanceRead:
    endpoint: str
    block: int
    method: str  # "multicall3" or "json-rpc batch"
    requests: int
    balances: dict[str, int]


def _result(item: Any) -> Any:
    error = _rpc_error(item)
    if error or not isinstance(item, dict) or "result" not in item:
        raise EndpointUnusable(error or "answer without a result")
    return item["result"]


def encode_get_eth_balances(addresses: list[str]) -> str:
    calls = [(MULTICALL3, True, _GET_ETH_BALANCE + abi_encode(["address"], [a])) for a in addresses]
    return "0x" + (_AGGREGATE3 + abi_encode(["(address,bool,bytes)[]"], [calls])).hex()


def decode_get_eth_balances(data: str, count: int) -> list[int | None]:
    (results,) = abi_decode(["(bool,bytes)[]"], bytes.fromhex(data.removeprefix("0x")))
    if len(results) != count:
        raise EndpointUnusable(f"multicall answered {len(results)} results for {count} calls")
    return [abi_decode(["uint256"], data)[0] if ok and len(data) == 32 else None for ok, data in results]


async def read_native_balances(
    client: httpx.AsyncClient,
    url: str,
    addresses: list[str],
    *,
    chain_id: int,
    max_head_age_s: float,
    batch_size: int,
    deadline_s: float,
) -> BalanceRead:
    """Every address's balance at one block, in 1 + ceil(n / batch_size) requests.

    The first request checks the endpoint (chain id, head age) and whether Multicall3 is deployed;
    the rest read balances at that same head block: through Multicall3's getEthBalance where it
    exists, else as JSON-RPC batches of eth_getBalance.
    """
    provider = HttpxProvider(url, client, deadline_s)
    requests = 0
    async with asyncio.timeout(deadline_s):
        first = await provider.make_batch_request(
            [
                (RPCEndpoint("eth_chainId"), []),
                (RPCEndpoint("eth_getBlockByNumber"), ["latest", False]),
                (RPCEndpoint("eth_getCode"), [MULTICALL3, "latest"]),
            ]
        )
        requests += 1
        if not isinstance(first, list) or len(first) != 3:
            raise EndpointUnusable(_rpc_error(first) or "batch answer has the wrong shape")
        got_chain = int(_result(first[0]), 16)
        if got_chain != chain_id:
            raise EndpointUnusable(f"chain id {got_chain}, expected {chain_id}")
        block = _result(first[1])
        head, age = int(block["number"], 16), time.time() - int(block["timestamp"], 16)
        if age > max_head_age_s:
            raise EndpointUnusable(f"head {head} is {age:.0f} s old (limit {max_head_age_s:g} s)")
        has_multicall = _result(first[2]) not in ("0x", "0x0", None)
        tag = hex(head)
        balances: dict[str, int] = {}
        for start in range(0, len(addresses), batch_size):
            chunk = addresses[start : start + batch_size]
            if has_multicall:
                answer = await provider.make_request(
                    RPCEndpoint("eth_call"), [{"to": MULTICALL3, "data": encode_get_eth_balances(chunk)}, tag]
                )
                values = decode_get_eth_balances(_result(answer), len(chunk))
            else:
                answers = await provider.make_batch_request(
                    [(RPCEndpoint("eth_getBalance"), [a, tag]) for a in chunk]
                )
                if not isinstance(answers, list) or len(answers) != len(chunk):
                    raise EndpointUnusable(_rpc_error(answers) or "batch answer has the wrong shape")
                values = [int(_result(a), 16) for a in answers]
            requests += 1
            balances.update({a: v for a, v in zip(chunk, values, strict=True) if v is not None})
    return BalanceRead(url, head, "multicall3" if has_multicall else "json-rpc batch", requests, balances)
