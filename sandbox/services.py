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
    """The deployment's HTTP API: `/api/query|mutation|action` with the `{status, value}` envelope,
    and `/api/stream_function_logs`, the log endpoint `npx convex logs` polls.

    The log endpoint (shared/vendors/convex.md section 3, and the backend's
    `crates/local_backend/src/logs.rs`): `GET ?cursor=<ms>` with `Authorization: Convex <deploy
    key>` answers `{"entries": [...], "newCursor": <ms>}` with every entry newer than the cursor and
    the newest entry's time as the new cursor; when nothing is newer it holds the request (a long
    poll, `long_poll_s`, 60 s like the backend) and then answers no entries and the same cursor.
    Entries carry the documented fields only: kind, identifier, udfType, logLines, timestamp
    (seconds), executionTime (seconds), error.

    Knobs, on the hub's control port:
    - `POST /vendors/convex/logs` `{"function": "tokens:create", "udfType": "Mutation", "error": "...",
      "count": n, "ago_s": 600, "logLines": [...]}` (or a list of them) adds `count` executions that
      ended `ago_s` seconds ago; without `error` they succeeded. `GET` lists, `DELETE` clears.
    - `POST /vendors/convex/logs/config` `{"page_size": n | null, "long_poll_s": s}`: at most
      `page_size` entries per answer (the backend sends all; paging is for tests), and how long a
      caught-up request is held. `GET` shows it, `DELETE` restores the defaults.
    """

    SANDBOX_DEPLOY_KEY = "prod:tokenforge-sandbox|c2FuZGJveC1kZXBsb3kta2V5LW5vdC1hLXNlY3JldA=="
    LONG_POLL_S = 60.0
    UDF_TYPES = ("Query", "Mutation", "Action", "HttpAction")

    def __init__(self, deploy_key: str = SANDBOX_DEPLOY_KEY) -> None:
        self.functions: dict[str, Callable[[dict[str, Any]], Any]] = {
            "system:health": lambda args: {"ok": True, "tables": 4},
            "security:failedLogins": self._failed_logins,
        }
        self.failed_logins: list[dict[str, Any]] = []  # {"source": ip, "at": unix seconds}
        self.deploy_key = deploy_key
        self.log: list[tuple[int, dict[str, Any]]] = []  # (time in ms, entry), oldest first, unique times
        self.log_page_size: int | None = None
        self.long_poll_s = self.LONG_POLL_S

    async def __call__(self, request: Request, fault: Fault) -> Response:
        if request.method == "GET" and request.path == "/":
            return Response.text("This Convex deployment is running. See https://docs.convex.dev/.")
        if request.method == "GET" and request.path == "/instance_version":
            return Response.text("1.27.0-sandbox")
        if request.method == "GET" and request.path == "/api/stream_function_logs":
            return await self._stream_function_logs(request)
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

    async def _stream_function_logs(self, request: Request) -> Response:
        import asyncio

        if request.headers.get("authorization") != f"Convex {self.deploy_key}":
            # unconfirmed: Convex's status and body for a bad deploy key are not documented
            # (convex.md section 1); a 401 with a code and message is this double's assumption.
            return Response.json({"code": "Unauthenticated", "message": "The deploy key is not valid"}, 401)
        try:
            cursor = float(request.query["cursor"][0])
        except (KeyError, IndexError, ValueError):
            return Response.text("Failed to deserialize query string: missing or invalid field `cursor`", 400)
        held_until = time.monotonic() + self.long_poll_s
        while True:
            newer = [(ms, entry) for ms, entry in self.log if ms > cursor]
            if newer:
                break
            if time.monotonic() >= held_until:
                return Response.json({"entries": [], "newCursor": cursor})
            await asyncio.sleep(0.02)
        if self.log_page_size:
            newer = newer[: self.log_page_size]
        return Response.json({"entries": [entry for _, entry in newer], "newCursor": newer[-1][0]})

    def add_log_entries(self, spec: dict[str, Any]) -> int:
        function = spec.get("function")
        if not isinstance(function, str) or not function:
            raise ValueError("a log entry needs 'function', e.g. 'tokens:create'")
        udf_type = spec.get("udfType", "Mutation")
        if udf_type not in self.UDF_TYPES:
            raise ValueError(f"udfType must be one of {', '.join(self.UDF_TYPES)}")
        count = int(spec.get("count", 1))
        if not 1 <= count <= 100_000:
            raise ValueError("count takes 1 to 100000")
        error = spec.get("error")
        lines = spec.get("logLines", [])
        if not isinstance(lines, list):
            raise ValueError("logLines must be a list (of strings or structured log lines)")
        ms = int((time.time() - float(spec.get("ago_s", 0))) * 1000)
        taken = {t for t, _ in self.log}
        for _ in range(count):
            while ms in taken:  # one entry per millisecond, so that a cursor never splits a tie
                ms += 1
            taken.add(ms)
            self.log.append((ms, {
                "kind": "Completion",
                "identifier": function,
                "udfType": udf_type,
                "logLines": lines,
                "timestamp": ms / 1000,
                "executionTime": 0.012,
                "error": None if error is None else str(error),
            }))
        self.log.sort(key=lambda item: item[0])
        return count

    def _failed_logins(self, args: dict[str, Any]) -> dict[str, Any]:
        """`security:failedLogins({"sinceMs": ms})`: how many logins failed since then, and from where."""
        since_s = float(args.get("sinceMs", 0)) / 1000
        counts: dict[str, int] = {}
        for login in self.failed_logins:
            if login["at"] >= since_s:
                counts[login["source"]] = counts.get(login["source"], 0) + 1
        top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:10]
        return {"count": sum(counts.values()), "top_sources": [{"source": s, "count": n} for s, n in top]}

    async def control(self, request: Request) -> Response | None:
        what = request.path.strip("/").split("/")[2:]  # after "vendors/convex"
        if what == ["logins"]:
            # `POST {"source": ip, "count": n, "ago_s": s}` adds n failed logins from `source` that
            # happened `ago_s` seconds ago (answered by `security:failedLogins`); GET lists; DELETE clears.
            if request.method == "GET":
                return Response.json(self.failed_logins)
            if request.method == "DELETE":
                cleared, self.failed_logins = len(self.failed_logins), []
                return Response.json({"cleared": cleared})
            if request.method == "POST":
                try:
                    body = request.json()
                    source, count = str(body["source"]), int(body.get("count", 1))
                    at = time.time() - float(body.get("ago_s", 0))
                    if not source or not 1 <= count <= 100_000:
                        raise ValueError("needs a 'source' and a count of 1 to 100000")
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    return Response.json({"error": f"convex logins: {exc}"}, 400)
                self.failed_logins += [{"source": source, "at": at}] * count
                return Response.json({"added": count, "total": len(self.failed_logins)})
        if what == ["logs"]:
            if request.method == "GET":
                return Response.json([entry for _, entry in self.log])
            if request.method == "DELETE":
                cleared, self.log = len(self.log), []
                return Response.json({"cleared": cleared})
            if request.method == "POST":
                try:
                    body = request.json()
                    specs = body if isinstance(body, list) else [body]
                    added = sum(self.add_log_entries(dict(spec)) for spec in specs)
                except (ValueError, TypeError) as exc:
                    return Response.json({"error": f"convex logs: {exc}"}, 400)
                return Response.json({"added": added, "total": len(self.log)})
        if what == ["logs", "config"]:
            if request.method == "DELETE":
                self.log_page_size, self.long_poll_s = None, self.LONG_POLL_S
            if request.method == "POST":
                try:
                    body = request.json()
                    page_size = body.get("page_size", self.log_page_size)
                    long_poll_s = float(body.get("long_poll_s", self.long_poll_s))
                    if page_size is not None and int(page_size) < 1:
                        raise ValueError("page_size takes a positive number or null")
                    if not 0 <= long_poll_s <= 600:
                        raise ValueError("long_poll_s takes 0 to 600")
                except (ValueError, TypeError, AttributeError) as exc:
                    return Response.json({"error": f"convex logs config: {exc}"}, 400)
                self.log_page_size = None if page_size is None else int(page_size)
                self.long_poll_s = long_poll_s
            return Response.json({"page_size": self.log_page_size, "long_poll_s": self.long_poll_s})
        return None


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
