"""The sandbox's HTTP services: the platform's own endpoints and the vendor doubles.

Each follows the documented shapes in shared/vendors (Slack incoming webhooks, PagerDuty Events
API v2, Convex's HTTP API); each records what it received so tests and the demo can read it back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response

Inner = Callable[[Request, Fault], Any]

FRONTEND_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TokenForge</title></head>
<body><h1>TokenForge</h1><p>Launch a token on Ethereum, BSC or Solana.</p></body></html>
"""


class Recorder:
    """What a receiver got, in order, with the time it arrived."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, **item: Any) -> None:
        self.items.append({"received_at": time.time(), **item})


async def frontend(request: Request, fault: Fault) -> Response:
    if request.method not in ("GET", "HEAD"):
        return Response.text("method not allowed", 405)
    return Response.text(FRONTEND_PAGE, content_type="text/html; charset=utf-8")


class PlatformApi:
    """The TokenForge API: `/health` answers only callers that present the API token."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def __call__(self, request: Request, fault: Fault) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Response.json({"error": "unauthorized"}, 401)
        if request.path == "/health":
            return Response.json({"status": "ok", "service": "tokenforge-api", "time": int(time.time())})
        return Response.json({"error": "not found"}, 404)


class ConvexDeployment:
    """The deployment's HTTP API: `/api/query|mutation|action` with the `{status, value}` envelope."""

    def __init__(self) -> None:
        self.functions: dict[str, Callable[[dict[str, Any]], Any]] = {
            "system:health": lambda args: {"ok": True, "tables": 4},
        }

    async def __call__(self, request: Request, fault: Fault) -> Response:
        if request.method == "GET" and request.path == "/":
            return Response.text("This Convex deployment is running. See https://docs.convex.dev/.")
        if request.method == "GET" and request.path == "/instance_version":
            return Response.text("1.27.0-sandbox")
        if request.method == "POST" and request.path in ("/api/query", "/api/mutation", "/api/action"):
            try:
                body = request.json()
                path, args = body["path"], body.get("args", {})
            except (ValueError, KeyError, TypeError):
                return Response.json(
                    {"status": "error", "errorMessage": "request body needs 'path' and 'args'"}, 400
                )
            function = self.functions.get(path)
            if function is None:
                return Response.json(
                    {"status": "error", "errorMessage": f"Could not find public function for '{path}'"}, 400
                )
            return Response.json({"status": "success", "value": function(args), "logLines": []})
        return Response.text("not found", 404)


class SlackWebhook:
    """Incoming webhooks: 200 `ok`, or a plain-text error string with its HTTP status."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.received = Recorder()

    async def __call__(self, request: Request, fault: Fault) -> Response:
        if request.method != "POST" or request.path != self.path:
            return Response.text("no_service", 404)
        try:
            payload = request.json()
        except ValueError:
            return Response.text("invalid_payload", 400)
        if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
            return Response.text("no_text", 400)
        self.received.add(text=payload.get("text", ""), blocks=payload.get("blocks"))
        return Response.text("ok")


class PagerDutyEvents:
    """Events API v2 `/v2/enqueue`: 202 on an accepted event, 400 naming what is invalid."""

    def __init__(self) -> None:
        self.received = Recorder()

    async def __call__(self, request: Request, fault: Fault) -> Response:
        if request.method != "POST" or request.path != "/v2/enqueue":
            return Response.json({"status": "not found"}, 404)
        try:
            event = request.json()
        except ValueError:
            return _pd_invalid(["Event object is not valid JSON"])
        errors = _pd_errors(event)
        if errors:
            return _pd_invalid(errors)
        self.received.add(event=event)
        return Response.json(
            {"status": "success", "message": "Event processed", "dedup_key": event.get("dedup_key", "")},
            202,
        )


def _pd_invalid(errors: list[str]) -> Response:
    return Response.json({"status": "invalid event", "message": "Event object is invalid", "errors": errors}, 400)


def _pd_errors(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["Event object must be a JSON object"]
    errors = []
    if len(str(event.get("routing_key", ""))) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
    if action in ("acknowledge", "resolve") and not event.get("dedup_key"):
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or not an object")
        else:
            for key in ("summary", "source", "severity"):
                if not payload.get(key):
                    errors.append(f"'payload.{key}' is missing or blank")
            if payload.get("severity") not in (None, "critical", "error", "warning", "info"):
                errors.append("'payload.severity' is invalid")
    return errors


class JsonRpcRewriter:
    """Per-endpoint view of a chain for the `stale` and `wrong-chain` faults.

    A stale endpoint keeps answering, but its head is pinned where it was when the fault began,
    like a node that stopped following the chain. A wrong-chain endpoint reports another chain's
    identity, like an RPC URL that points at a testnet.
    """

    def __init__(self, head_methods: dict[str, str], identity: dict[str, Any]) -> None:
        # head_methods: method -> how to answer it when stale ("number" | "latest-param")
        self.head_methods = head_methods
        self.identity = identity
        self.pinned_head: int | None = None

    def rewrite_requests(self, items: list[dict[str, Any]], fault: Fault) -> None:
        if fault.mode != "stale" or self.pinned_head is None:
            return
        for item in items:
            if self.head_methods.get(item.get("method", "")) == "latest-param":
                params = list(item.get("params") or [])
                if params and params[0] in ("latest", "safe", "finalized", "pending"):
                    params[0] = hex(self.pinned_head)
                    item["params"] = params

    def rewrite_responses(
        self, requests: list[dict[str, Any]], responses: list[dict[str, Any]], fault: Fault
    ) -> None:
        methods = {json.dumps(r.get("id")): r.get("method") for r in requests}
        for response in responses:
            if "result" not in response:
                continue
            method = methods.get(json.dumps(response.get("id")))
            if fault.mode == "wrong-chain" and method in self.identity:
                response["result"] = self.identity[method]
            if fault.mode == "stale" and self.pinned_head is not None:
                how = self.head_methods.get(method or "")
                if how == "number-hex":
                    response["result"] = hex(self.pinned_head)
                elif how == "number":
                    response["result"] = self.pinned_head


def parse_jsonrpc(body: bytes) -> tuple[list[dict[str, Any]], bool] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if isinstance(value, dict):
        return [value], False
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value, True
    return None


class EvmRpcEndpoint:
    """One of a chain's RPC URLs: forwards JSON-RPC to the chain's anvil node."""

    def __init__(self, upstream: str, client: httpx.AsyncClient, wrong_chain_id: int) -> None:
        self.upstream = upstream
        self.client = client
        self.rewriter = JsonRpcRewriter(
            {"eth_blockNumber": "number-hex", "eth_getBlockByNumber": "latest-param"},
            {"eth_chainId": hex(wrong_chain_id), "net_version": str(wrong_chain_id)},
        )

    async def current_head(self) -> int:
        response = await self.client.post(
            self.upstream, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
        )
        return int(response.json()["result"], 16)

    async def __call__(self, request: Request, fault: Fault) -> Response:
        if request.method != "POST":
            return Response.json({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "POST only"}}, 405)
        parsed = parse_jsonrpc(request.body)
        body = request.body
        if parsed is not None and fault.mode in ("stale", "wrong-chain"):
            items, is_batch = parsed
            self.rewriter.rewrite_requests(items, fault)
            body = json.dumps(items if is_batch else items[0]).encode()
        upstream = await self.client.post(self.upstream, content=body, headers={"Content-Type": "application/json"})
        if parsed is None or fault.mode not in ("stale", "wrong-chain"):
            return Response(upstream.status_code, upstream.content, {"Content-Type": "application/json"})
        answer = upstream.json()
        responses = answer if isinstance(answer, list) else [answer]
        self.rewriter.rewrite_responses(parsed[0], responses, fault)
        return Response.json(answer, upstream.status_code)
