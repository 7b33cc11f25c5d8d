"""The sandbox's HTTP services: the platform's own endpoints and the vendor doubles.

Each follows the documented shapes in shared/vendors (Slack incoming webhooks, PagerDuty Events
API v2, Convex's HTTP API); each records what it received so tests and the demo can read it back.
"""

from __future__ import annotations

import bisect
import json
import math
import time
from collections.abc import Callable
from typing import Any

import httpx

from sandbox.convex_envvars import EnvironmentVariables
from sandbox.convex_export import SnapshotExports, tables_of
from sandbox.convex_tables import TableStore
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
    """The TokenForge API: `/health` answers only callers that present the API token. While the
    backend is in maintenance (the emergency shutdown's switch) it refuses everyone with 503."""

    def __init__(self, token: str, convex: ConvexDeployment | None = None) -> None:
        self.token = token
        self.convex = convex

    async def __call__(self, request: Request, fault: Fault) -> Response:
        if self.convex is not None and self.convex.maintenance["enabled"]:
            return Response.json({"status": "maintenance", "error": "public access is disabled"}, 503)
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
    - `POST /vendors/convex/logins` `{"source": ip, "count": n, "ago_s": s}`: failed logins.
    - `POST /vendors/convex/users` `{"user": "u1", "count": n, "ago_s": s}`: successful logins.
      Both also take `"user"`/`"source"` (whichever the form lacks) and `"admin": true` (an admin
      account's login), which `security:loginEvents` reports.
    - `POST /vendors/convex/trades` `{"user": "u1", "amount_usd": 12.5, "count": n, "ago_s": s}`.
      Each of these three also takes a list of such objects; `GET` lists, `DELETE` clears.

    Query functions: `security:failedLogins({"sinceMs": ms})` -> `{count, top_sources}`; and the
    metrics, taking `{"sinceMs": ms, "untilMs": ms}` (untilMs optional, default now; the window is
    [sinceMs, untilMs)): `metrics:dailyActiveUsers` -> distinct users with a successful login or a trade;
    `metrics:transactionVolume` -> the trades' summed `amount_usd`, to the cent;
    `metrics:errorRate` -> failed / all executions in the function log that `/api/stream_function_logs`
    serves, or null when nothing ran. Arguments that do not fit answer 400 with the error envelope
    naming the argument.
    """

    SANDBOX_DEPLOY_KEY = "prod:tokenforge-sandbox|c2FuZGJveC1kZXBsb3kta2V5LW5vdC1hLXNlY3JldA=="
    LONG_POLL_S = 60.0
    UDF_TYPES = ("Query", "Mutation", "Action", "HttpAction")
    # The platform's own maintenance functions, called through the documented `/api/query` and
    # `/api/mutation` envelope (convex.md section 1); the tables are the stores below, by Convex name.
    COUNT_OLDER = "maintenance:countOlderThan"
    DELETE_OLDER = "maintenance:deleteOlderThan"
    TABLE_STORES = {"logins": "logins", "trades": "trades", "failedLogins": "failed_logins"}
    MAX_DELETE_LIMIT = 4000  # what one transaction may delete here; more is refused, as a real limit would

    def __init__(self, deploy_key: str = SANDBOX_DEPLOY_KEY) -> None:
        self.functions: dict[str, Callable[[dict[str, Any]], Any]] = {
            "system:health": lambda args: {"ok": True, "tables": 4},
            "security:failedLogins": self._failed_logins,
            "security:loginEvents": self._login_events,
            "metrics:dailyActiveUsers": self._daily_active_users,
            "metrics:transactionVolume": self._transaction_volume,
            "metrics:errorRate": self._error_rate,
        }
        self.failed_logins: list[dict[str, Any]] = []  # {"source": ip, "at": unix seconds}
        self.logins: list[dict[str, Any]] = []  # successful: {"user": id, "at": unix seconds}
        self.trades: list[dict[str, Any]] = []  # {"user": id, "amount_usd": float, "at": unix seconds}
        self.deploy_key = deploy_key
        self.log: list[tuple[int, dict[str, Any]]] = []  # (time in ms, entry), oldest first, unique times
        self.log_page_size: int | None = None
        self.long_poll_s = self.LONG_POLL_S
        # Deletions (a data-loss drill) and imports (the restore) act on these tables; exports read them.
        self.documents = TableStore(lambda: tables_of(self), deploy_key)
        self.exports = SnapshotExports(deploy_key, tables=self.documents.current)
        # Convex documents no maintenance switch: the platform's own `admin:setMaintenance` mutation
        # (deploy key only) is what the emergency shutdown calls; while on, public calls get 503.
        self.maintenance: dict[str, Any] = {"enabled": False, "reason": "", "since": None}
        # Database maintenance (see `_count_older_than`): deploy key only; knob `deletions`.
        self.functions.update({self.COUNT_OLDER: self._count_older_than, self.DELETE_OLDER: self._delete_older_than})
        self.deletions: list[dict[str, Any]] = []  # every deleteOlderThan call: table, beforeMs, limit, deleted
        self.deletions_fail_after: int | None = None
        # Environment variables through the documented API (sandbox/convex_envvars.py); knob `environment`.
        self.environment = EnvironmentVariables(deploy_key)

    async def __call__(self, request: Request, fault: Fault) -> Response:
        answer = await self.exports.handle(request, fault)
        if answer is not None:
            return answer
        imported = await self.documents.handle_import(request)
        if imported is not None:
            return imported
        env_answer = await self.environment.handle(request)
        if env_answer is not None:
            return env_answer
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
            admin = request.headers.get("authorization") == f"Convex {self.deploy_key}"
            if path == "admin:setMaintenance":
                if request.path != "/api/mutation":
                    return Response.json({"status": "error", "errorMessage": "admin:setMaintenance is a mutation"}, 400)
                if not admin:
                    return Response.json(
                        {"status": "error", "errorMessage": "admin:setMaintenance needs the deploy key"}, 401)
                try:
                    value = self._set_maintenance(args if isinstance(args, dict) else {})
                except ArgumentError as exc:
                    return Response.json({"status": "error", "errorMessage": f"{path}: {exc}"}, 400)
                return Response.json({"status": "success", "value": value, "logLines": []})
            if self.maintenance["enabled"] and not admin:
                return Response.json({"status": "error", "errorMessage": "TokenForge is in maintenance"}, 503)
            if path in (self.COUNT_OLDER, self.DELETE_OLDER) and not admin:
                return Response.json({"status": "error", "errorMessage": f"{path} needs the deploy key"}, 401)
            if path == self.DELETE_OLDER and request.path != "/api/mutation":
                return Response.json({"status": "error", "errorMessage": f"{path} is a mutation"}, 400)
            if path == self.DELETE_OLDER and self.deletions_fail_after is not None \
                    and len(self.deletions) >= self.deletions_fail_after:
                # a backend failing mid-cleanup (the `deletions` knob's fail_after)
                return Response.json({"status": "error", "errorMessage": "Server error: transaction aborted"}, 500)
            function = self.functions.get(path)
            if function is None:
                return Response.json(
                    {"status": "error", "errorMessage": f"Could not find public function for '{path}'"}, 400
                )
            try:
                if not isinstance(args, dict):
                    raise ArgumentError(f"args must be an object, got {type(args).__name__}")
                value = function(args)
            except ArgumentError as exc:
                return Response.json({"status": "error", "errorMessage": f"{path}: {exc}"}, 400)
            return Response.json({"status": "success", "value": value, "logLines": []})
        return Response.text("not found", 404)

    def _set_maintenance(self, args: dict[str, Any]) -> dict[str, Any]:
        enabled = args.get("enabled")
        if not isinstance(enabled, bool):
            raise ArgumentError("argument `enabled` must be true or false")
        was = self.maintenance["enabled"]
        self.maintenance = {"enabled": enabled, "reason": str(args.get("reason") or ""),
                            "since": time.time() if enabled else None}
        return {"enabled": enabled, "was_enabled": was}

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
            # The log is sorted by time: bisecting keeps a long poll cheap on a busy deployment.
            newer = self.log[bisect.bisect_right(self.log, cursor, key=lambda item: item[0]):]
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
        execution_time = spec.get("executionTime", 0.012)  # seconds, as the log entry carries it
        if isinstance(execution_time, bool) or not isinstance(execution_time, int | float) \
                or not 0 <= execution_time <= 600:
            raise ValueError("executionTime takes 0 to 600 (seconds)")
        log, added = self.log, []
        at = bisect.bisect_left(log, ms, key=lambda item: item[0])
        for _ in range(count):
            # One entry per millisecond, so that a cursor never splits a tie: walk the (sorted) log
            # past the times before `ms`, moving on a millisecond whenever `ms` is taken.
            while at < len(log) and log[at][0] <= ms:
                if log[at][0] == ms:
                    ms += 1
                at += 1
            added.append((ms, {
                "kind": "Completion",
                "identifier": function,
                "udfType": udf_type,
                "logLines": lines,
                "timestamp": ms / 1000,
                "executionTime": float(execution_time),
                "error": None if error is None else str(error),
            }))
            ms += 1
        at_the_end = not log or added[0][0] > log[-1][0]
        log.extend(added)
        if not at_the_end:  # two sorted runs: this sort is a single merge
            log.sort(key=lambda item: item[0])
        return count

    def add_failed_logins(self, spec: dict[str, Any]) -> int:
        """`{"source": ip, "count": n, "ago_s": s}`: n failed logins from `source`, `ago_s` seconds ago."""
        source = spec.get("source")
        if not isinstance(source, str) or not source:
            raise ValueError("a failed login needs a 'source' (the client IP), e.g. '203.0.113.7'")
        count, at = _count(spec), _at(spec)
        self.failed_logins += [{"source": source, "at": at, **_login_extras(spec)}] * count
        return count

    def add_logins(self, spec: dict[str, Any]) -> int:
        """`{"user": id, "count": n, "ago_s": s}`: n successful logins by `user`, `ago_s` seconds ago."""
        user, count, at = _user(spec), _count(spec), _at(spec)
        self.logins += [{"user": user, "at": at, **_login_extras(spec)}] * count
        return count

    def add_trades(self, spec: dict[str, Any]) -> int:
        """`{"user": id, "amount_usd": x, "count": n, "ago_s": s}`: n trades of x USD each by `user`."""
        user, count, at = _user(spec), _count(spec), _at(spec)
        amount = spec.get("amount_usd")
        if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 <= amount < math.inf:
            raise ValueError(f"amount_usd must be a number >= 0, got {amount!r}")
        self.trades += [{"user": user, "amount_usd": float(amount), "at": at}] * count
        return count

    def trim(self, keep: int) -> None:
        """Drop all but the newest `keep` items of each store, so a long-running generator stays bounded.

        The real backend keeps its function log in a bounded buffer too; the other stores stand in
        for tables, which a sandbox that runs for days does not need to keep whole.
        """
        for name in ("log", "failed_logins", "logins", "trades"):
            items = getattr(self, name)
            if len(items) > keep + keep // 10:  # in steps, not on every call: each cut moves the whole list
                del items[: len(items) - keep]

    def _daily_active_users(self, args: dict[str, Any]) -> int:
        since, until = _window(args)
        users = {e["user"] for store in (self.logins, self.trades) for e in store if since <= e["at"] * 1000 < until}
        return len(users)

    def _transaction_volume(self, args: dict[str, Any]) -> float:
        since, until = _window(args)
        return round(sum(t["amount_usd"] for t in self.trades if since <= t["at"] * 1000 < until), 2)

    def _error_rate(self, args: dict[str, Any]) -> float | None:
        since, until = _window(args)
        window = self.log[bisect.bisect_left(self.log, since, key=lambda item: item[0]):
                          bisect.bisect_left(self.log, until, key=lambda item: item[0])]
        if not window:
            return None  # no executions is not a 0% error rate: nothing could have failed
        return sum(1 for _, entry in window if entry["error"] is not None) / len(window)

    def _failed_logins(self, args: dict[str, Any]) -> dict[str, Any]:
        """`security:failedLogins({"sinceMs": ms})`: how many logins failed since then, and from where."""
        since_s = float(args.get("sinceMs", 0)) / 1000
        counts: dict[str, int] = {}
        for login in self.failed_logins:
            if login["at"] >= since_s:
                counts[login["source"]] = counts.get(login["source"], 0) + 1
        top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:10]
        return {"count": sum(counts.values()), "top_sources": [{"source": s, "count": n} for s, n in top]}

    def _login_events(self, args: dict[str, Any]) -> dict[str, Any]:
        """`security:loginEvents({"sinceMs", "untilMs"?, "paginationOpts": {"numItems", "cursor"}})`: every
        login (successful and failed) of [sinceMs, untilMs), oldest first, as a Convex paginated
        query answers (`{page, isDone, continueCursor}`, docs.convex.dev/database/pagination); each
        record is `{user, source, admin, ok, at}` with `at` in ms. The cursor is this double's own
        opaque string (an offset), as Convex's cursors are opaque."""
        since, until = _window(args)
        opts = args.get("paginationOpts")
        if not isinstance(opts, dict) or isinstance(opts.get("numItems"), bool) \
                or not isinstance(opts.get("numItems"), int) or opts["numItems"] < 1:
            raise ArgumentError("argument `paginationOpts` must be {numItems: n >= 1, cursor: string | null}")
        cursor = opts.get("cursor")
        try:
            start = 0 if cursor is None else int(str(cursor).removeprefix("offset:"))
        except ValueError:
            raise ArgumentError(f"paginationOpts.cursor {cursor!r} is not a cursor of this query") from None
        events = sorted(
            [{"user": e.get("user", "unknown"), "source": e.get("source"), "admin": bool(e.get("admin", False)),
              "ok": ok, "at": int(e["at"] * 1000)}
             for ok, store in ((True, self.logins), (False, self.failed_logins)) for e in store
             if since <= e["at"] * 1000 < until],
            key=lambda e: (e["at"], e["user"], str(e["source"])))
        end = start + int(opts["numItems"])
        return {"page": events[start:end], "isDone": end >= len(events), "continueCursor": f"offset:{end}"}

    def _store_of(self, args: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
        table = args.get("table")
        if table not in self.TABLE_STORES:
            raise ArgumentError(f"argument `table` must be one of {', '.join(self.TABLE_STORES)}, got {table!r}")
        return getattr(self, self.TABLE_STORES[table]), _millis(args, "beforeMs")

    def _count_older_than(self, args: dict[str, Any]) -> dict[str, int]:
        """`maintenance:countOlderThan({table, beforeMs})` -> `{"total": n, "older": m}`."""
        store, before = self._store_of(args)
        return {"total": len(store), "older": sum(1 for doc in store if doc["at"] * 1000 < before)}

    def _delete_older_than(self, args: dict[str, Any]) -> dict[str, Any]:
        """`maintenance:deleteOlderThan({table, beforeMs, limit})` -> `{"deleted": n, "hasMore": b}`:
        the oldest `limit` documents created before `beforeMs`, in one transaction."""
        store, before = self._store_of(args)
        limit = args.get("limit")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= self.MAX_DELETE_LIMIT:
            raise ArgumentError(f"argument `limit` takes 1 to {self.MAX_DELETE_LIMIT}, got {limit!r}")
        older = sorted((i for i, doc in enumerate(store) if doc["at"] * 1000 < before), key=lambda i: store[i]["at"])
        gone = set(older[:limit])
        store[:] = [doc for i, doc in enumerate(store) if i not in gone]
        self.deletions.append({"table": args["table"], "beforeMs": before, "limit": limit, "deleted": len(gone)})
        return {"deleted": len(gone), "hasMore": len(older) > len(gone)}

    async def control(self, request: Request) -> Response | None:
        what = request.path.strip("/").split("/")[2:]  # after "vendors/convex"
        if what == ["deletions"]:
            # GET: the deleteOlderThan calls so far; POST {"fail_after": n | null}: calls after the
            # first n fail (a backend failing mid-cleanup); DELETE forgets the calls and the fault.
            if request.method == "DELETE":
                self.deletions, self.deletions_fail_after = [], None
            if request.method == "POST":
                body = request.json()
                fail_after = body.get("fail_after") if isinstance(body, dict) else None
                if fail_after is not None and (isinstance(fail_after, bool) or not isinstance(fail_after, int)
                                               or fail_after < 0):
                    return Response.json({"error": "convex deletions: fail_after takes a count >= 0 or null"}, 400)
                self.deletions_fail_after = fail_after
            return Response.json({"calls": self.deletions, "fail_after": self.deletions_fail_after})
        if what == ["exports"]:
            return await self.exports.control(request)
        if what == ["tables"]:
            return await self.documents.control(request)
        if what == ["environment"]:
            return await self.environment.control(request)
        if what == ["maintenance"]:
            # GET shows the switch; DELETE turns it off (what a test does after an emergency drill)
            if request.method == "DELETE":
                self.maintenance = {"enabled": False, "reason": "", "since": None}
            return Response.json(self.maintenance)
        stores = {
            "logins": ("failed_logins", self.add_failed_logins),
            "users": ("logins", self.add_logins),
            "trades": ("trades", self.add_trades),
        }
        if len(what) == 1 and what[0] in stores:
            attribute, add = stores[what[0]]
            if request.method == "GET":
                return Response.json(getattr(self, attribute))
            if request.method == "DELETE":
                cleared = len(getattr(self, attribute))
                setattr(self, attribute, [])
                return Response.json({"cleared": cleared})
            if request.method == "POST":
                try:
                    body = request.json()
                    specs = body if isinstance(body, list) else [body]
                    added = sum(add(dict(spec)) for spec in specs)
                except (ValueError, TypeError) as exc:
                    return Response.json({"error": f"convex {what[0]}: {exc}"}, 400)
                return Response.json({"added": added, "total": len(getattr(self, attribute))})
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


class ArgumentError(ValueError):
    """A query function's arguments do not fit it; the message names the argument."""


def _millis(args: dict[str, Any], name: str, default: float | None = None) -> float:
    value = args.get(name)
    if value is None:
        value = default
    if value is None:
        raise ArgumentError(f"missing argument `{name}` (milliseconds since the Unix epoch)")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArgumentError(f"argument `{name}` must be a number of milliseconds since the Unix epoch, got {value!r}")
    return float(value)


def _window(args: dict[str, Any]) -> tuple[float, float]:
    """[sinceMs, untilMs) from a metric function's args; untilMs defaults to now."""
    since = _millis(args, "sinceMs")
    until = _millis(args, "untilMs", time.time() * 1000)
    if until < since:
        raise ArgumentError(f"argument `untilMs` ({until:.0f}) is before `sinceMs` ({since:.0f})")
    return since, until


def _count(spec: dict[str, Any]) -> int:
    count = spec.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100_000:
        raise ValueError(f"count takes a whole number from 1 to 100000, got {count!r}")
    return count


def _at(spec: dict[str, Any]) -> float:
    ago = spec.get("ago_s", 0)
    if isinstance(ago, bool) or not isinstance(ago, int | float) or not math.isfinite(ago):
        raise ValueError(f"ago_s takes a number of seconds, got {ago!r}")
    return time.time() - ago


def _login_extras(spec: dict[str, Any]) -> dict[str, Any]:
    """The optional fields of a login record: the other party's id / address, and the admin flag."""
    extras: dict[str, Any] = {}
    for name in ("user", "source"):
        if name in spec:
            if not isinstance(spec[name], str) or not spec[name]:
                raise ValueError(f"'{name}' must be a non-empty string, got {spec[name]!r}")
            extras[name] = spec[name]
    if "admin" in spec:
        if not isinstance(spec["admin"], bool):
            raise ValueError(f"'admin' takes true or false, got {spec['admin']!r}")
        extras["admin"] = spec["admin"]
    return extras


def _user(spec: dict[str, Any]) -> str:
    user = spec.get("user")
    if not isinstance(user, str) or not user:
        raise ValueError(f"needs a 'user' id, e.g. 'user-0001', got {user!r}")
    return user


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
