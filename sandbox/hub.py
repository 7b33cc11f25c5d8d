"""The sandbox's service process: every HTTP endpoint, the Solana RPC, and the control API.

Run as `python -m sandbox.hub PLAN.json` by `tfops sandbox up`; it serves until SIGTERM.
The plan names every endpoint, its port and kind; the control API (on its own port) injects and
clears faults, returns what the receivers recorded, turns the vendor doubles' knobs, and steers the
activity generator (`/vendors/activity`, see sandbox/activity.py), which starts with the plan's preset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sandbox import faults as F
from sandbox.activity import PRESETS, ActivityGenerator
from sandbox.httpserver import Listener, Request, Response
from sandbox.services import (
    ConvexDeployment,
    EvmRpcEndpoint,
    JsonRpcRewriter,
    PagerDutyEvents,
    PlatformApi,
    SlackWebhook,
    frontend,
    parse_jsonrpc,
)
from sandbox.solana_rpc import SolanaLedger, SolanaRpcHandler
from sandbox.vendors import REGISTRY as VENDORS

log = logging.getLogger("sandbox.hub")


@dataclass
class Endpoint:
    """A named, faultable endpoint: the fault layer sits in front of the service."""

    name: str
    kind: str  # "http" or "rpc"
    listener: Listener
    service: Any
    fault: F.Fault = F.OK
    requests: int = 0
    hung: set[asyncio.Future[None]] = field(default_factory=set)

    async def handle(self, request: Request) -> Response:
        self.requests += 1
        fault = self.fault
        if fault.mode == "hang":
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.hung.add(waiter)
            try:
                await waiter  # released only when the fault changes or the sandbox stops
            finally:
                self.hung.discard(waiter)
            fault = self.fault
        if fault.mode == "slow":
            await asyncio.sleep(fault.seconds)
        if fault.mode == "status":
            return Response.json({"error": f"sandbox fault: status {fault.status}"}, fault.status)
        return await self.service(request, fault)

    async def set_fault(self, fault: F.Fault) -> None:
        F.check_applies(self.kind, fault)
        rewriter = getattr(self.service, "rewriter", None)
        if fault.mode == "stale" and rewriter is not None:
            rewriter.pinned_head = await self.service.current_head()
        self.fault = fault
        if fault.mode != "hang":
            for waiter in list(self.hung):
                if not waiter.done():
                    waiter.set_result(None)
        if fault.mode == "down":
            await self.listener.stop()
        else:
            await self.listener.start()


class SolanaRpcEndpoint:
    def __init__(self, ledger: SolanaLedger, wrong_genesis: str) -> None:
        self.ledger = ledger
        self.handler = SolanaRpcHandler(ledger)
        self.rewriter = JsonRpcRewriter({"getSlot": "number"}, {"getGenesisHash": wrong_genesis})

    async def current_head(self) -> int:
        answer = json.loads(self.handler.handle(b'{"jsonrpc":"2.0","id":1,"method":"getSlot"}'))
        return int(answer["result"])

    async def __call__(self, request: Request, fault: F.Fault) -> Response:
        if request.method != "POST":
            return Response.json({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "POST only"}}, 405)
        answer_bytes = self.handler.handle(request.body)
        parsed = parse_jsonrpc(request.body)
        if parsed is None or fault.mode not in ("stale", "wrong-chain"):
            return Response(200, answer_bytes, {"Content-Type": "application/json"})
        answer = json.loads(answer_bytes)
        self.rewriter.rewrite_responses(parsed[0], answer if isinstance(answer, list) else [answer], fault)
        return Response.json(answer)


class Wallet:
    """A deployer wallet whose balance a fault can drain below its floor."""

    def __init__(self, name: str, chain: str, address: str, healthy: int, low: int, hub: Hub) -> None:
        self.name, self.chain, self.address = name, chain, address
        self.healthy, self.low = healthy, low
        self.hub = hub
        self.fault = F.OK

    async def set_fault(self, fault: F.Fault) -> None:
        F.check_applies("wallet", fault)
        amount = self.low if fault.mode == "low" else self.healthy
        await self.hub.set_balance(self.chain, self.address, amount)
        self.fault = fault


class Hub:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.host = plan["host"]
        self.client = httpx.AsyncClient(timeout=10, trust_env=False)
        self.ledger = SolanaLedger(genesis_hash=plan["solana"]["genesis_hash"]) if "solana" in plan else None
        self.slack = SlackWebhook(plan["slack_path"])
        self.pagerduty = PagerDutyEvents()
        self.convex = ConvexDeployment()  # one backend: the API refuses while it is in maintenance
        self.endpoints: dict[str, Endpoint] = {}
        self.wallets: dict[str, Wallet] = {}
        for name, spec in plan["endpoints"].items():
            service, kind = self._service(spec)
            endpoint = Endpoint(name, kind, Listener(self.host, spec["port"], self._dispatch(name)), service)
            self.endpoints[name] = endpoint
        if "vercel" in self.endpoints and "frontend" in self.endpoints:
            # the frontend serves what Vercel's current production deployment serves
            self.endpoints["frontend"].service = self.endpoints["vercel"].service.fronting(frontend)
        for w in plan.get("wallets", []):
            self.wallets[w["target"]] = Wallet(w["target"], w["chain"], w["address"], w["healthy"], w["low"], self)
        self.control = Listener(self.host, plan["control_port"], self._control)
        convex = self.convex
        activity = plan.get("activity", {})
        self.activity = ActivityGenerator(
            convex,
            {chain: {"upstream": spec["upstream"], "token_factory": spec.get("token_factory", "")}
             for chain, spec in plan.get("chains", {}).items()},
            list(activity.get("creators", [])),
            int(activity.get("token_fee_wei", 0)),
            self.client,
        )

    def _service(self, spec: dict[str, Any]) -> tuple[Any, str]:
        kind = spec["kind"]
        if kind == "frontend":
            return frontend, "http"
        if kind == "api":
            return PlatformApi(self.plan["api_token"], convex=self.convex), "http"
        if kind == "convex":
            return self.convex, "http"
        if kind == "slack":
            return self.slack, "http"
        if kind == "pagerduty":
            return self.pagerduty, "http"
        if kind == "evm":
            return EvmRpcEndpoint(spec["upstream"], self.client, spec["wrong_chain_id"]), "rpc"
        if kind == "solana":
            assert self.ledger is not None
            return SolanaRpcEndpoint(self.ledger, spec["wrong_genesis"]), "rpc"
        if kind in VENDORS:
            return VENDORS[kind](self.plan), "http"
        raise ValueError(f"unknown endpoint kind {kind!r}")

    def _dispatch(self, name: str):  # noqa: ANN202
        async def handle(request: Request) -> Response:
            return await self.endpoints[name].handle(request)

        return handle

    async def set_balance(self, chain: str, address: str, amount: int) -> None:
        if chain == "solana":
            assert self.ledger is not None
            self.ledger.fund(address, amount)
            return
        upstream = self.plan["chains"][chain]["upstream"]
        response = await self.client.post(
            upstream,
            json={"jsonrpc": "2.0", "id": 1, "method": "anvil_setBalance", "params": [address, hex(amount)]},
        )
        response.raise_for_status()
        if "error" in response.json():
            raise RuntimeError(f"anvil_setBalance failed: {response.json()['error']}")

    async def start(self) -> None:
        for wallet in self.wallets.values():
            await wallet.set_fault(F.OK)
        for endpoint in self.endpoints.values():
            await endpoint.listener.start()
        await self.control.start()
        await self.activity.apply(PRESETS[self.plan.get("activity", {}).get("preset", "off")])

    async def stop(self) -> None:
        await self.activity.stop()
        for endpoint in self.endpoints.values():
            await endpoint.set_fault(F.OK)  # releases hung requests
            await endpoint.listener.stop()
        await self.control.stop()
        await self.client.aclose()

    def faults(self) -> dict[str, str]:
        out = {name: str(e.fault) for name, e in self.endpoints.items()}
        out.update({name: str(w.fault) for name, w in self.wallets.items()})
        return out

    async def _control(self, request: Request) -> Response:
        if request.path == "/ready":
            return Response.json({"ready": True, "endpoints": sorted(self.endpoints)})
        if request.path == "/faults" and request.method == "GET":
            return Response.json(self.faults())
        if request.path == "/faults" and request.method == "POST":
            return await self._set_fault(request)
        if request.path == "/stats":
            return Response.json({name: e.requests for name, e in self.endpoints.items()})
        if request.path.rstrip("/") == "/vendors/activity":
            return await self.activity.control(request)
        if request.path.startswith("/vendors/"):
            name = request.path.split("/")[2]
            service = self.endpoints[name].service if name in self.endpoints else None
            control = getattr(service, "control", None)
            answer = await control(request) if control is not None else None
            return answer or Response.json({"error": f"no knobs at {request.path}"}, 404)
        if request.path.startswith("/received/"):
            recorder = {"slack": self.slack.received, "pagerduty": self.pagerduty.received}.get(
                request.path.removeprefix("/received/")
            )
            if recorder is None:
                return Response.json({"error": "receivers: slack, pagerduty"}, 404)
            if request.method == "DELETE":
                recorder.items.clear()
            return Response.json(recorder.items)
        return Response.json({"error": "not found"}, 404)

    async def _set_fault(self, request: Request) -> Response:
        try:
            body = request.json()
            target, mode = body["target"], body["mode"]
            fault = F.parse(mode)
        except (ValueError, KeyError, TypeError) as exc:
            return Response.json({"error": str(exc)}, 400)
        thing = self.endpoints.get(target) or self.wallets.get(target)
        if thing is None:
            names = sorted([*self.endpoints, *self.wallets])
            return Response.json({"error": f"unknown target {target!r}; targets: {', '.join(names)}"}, 400)
        try:
            await thing.set_fault(fault)
        except F.FaultError as exc:
            return Response.json({"error": f"{target}: {exc}"}, 400)
        log.info("fault %s -> %s", target, fault)
        return Response.json({"target": target, "mode": str(fault)})


async def serve(plan_path: Path) -> None:
    plan = json.loads(plan_path.read_text())
    hub = Hub(plan)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await hub.start()
    log.info("sandbox hub serving %d endpoints", len(hub.endpoints))
    await stop.wait()
    await hub.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded RPC call is noise
    asyncio.run(serve(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
