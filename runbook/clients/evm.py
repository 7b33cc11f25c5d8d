"""EVM chains through web3, on an httpx transport we control (deadlines, pool, test transports)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import httpx
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
