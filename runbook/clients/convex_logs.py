"""Convex function logs of a time window, read from the deployment's log endpoint.

Why `GET <deployment>/api/stream_function_logs?cursor=<ms>` (with `Authorization: Convex <deploy
key>`, answered by `{"entries": [...], "newCursor": <ms>}`, shared/vendors/convex.md section 3):

- It is the endpoint `npx convex logs` itself polls, so this reads the same data the runbook's
  command prints, without its text format (which the CLI does not keep stable).
- No Node subprocess: no `npx` on the worker, no process group to kill on a timeout, no deploy
  key handed to a child process.
- No plan requirement: log streams (webhook delivery) need the Pro plan and a receiver that is up
  when the errors happen; this endpoint answers on every deployment, on demand.
- We control the bounds: one total deadline, a page bound, and a short wait once caught up.

How the endpoint behaves (convex-backend `crates/local_backend/src/logs.rs` and
`crates/application/src/function_log.rs`): it answers every buffered entry newer than the cursor,
with `newCursor` set to the newest entry's time; when nothing is newer it holds the request (a
long poll, up to 60 s) and then answers `{"entries": [], "newCursor": <the same cursor>}`. It
sends no response headers while it holds. So reading "until newCursor stops moving" goes:

1. `GET /instance_version` (documented, no auth) within the deadline: a deployment that does not
   answer that is down or hung, and the result is that error, never "no errors".
2. From the window's start as the cursor, request a page; follow `newCursor` while it moves,
   until it passes the moment the review started (a busy deployment keeps producing entries:
   those are outside the window) or `max_pages` pages were read.
3. A log request whose response headers have not come after the hold time (`settle_s`, or three
   times the round trip step 1 measured, whichever is longer) is the long poll: nothing newer
   exists, the reading is caught up (on a quiet deployment this already happens on the first
   page). Once headers have come, reading the body may take the rest of the deadline.

Every failure after step 1 (refused, HTTP error, a body not in the documented shape, the total
deadline) makes the result's error; entries read before it are kept but marked incomplete.

The deployment keeps its function log in a bounded in-memory buffer, so on a busy deployment the
oldest part of a 24 h window may already be gone; the result says how far back the entries read
go (`oldest_s`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from runbook.clients.http_probe import BodyTooLarge, describe_error, read_limited
from runbook.secrets import scrub

MAX_BODY_BYTES = 32 * 1024 * 1024
UDF_TYPES = ("Query", "Mutation", "Action", "HttpAction")


class MalformedPayload(ValueError):
    """The body is not in the documented shape; the message says which field is wrong."""


@dataclass(frozen=True)
class LogLine:
    text: str
    level: str | None = None  # only the structured form carries a level
    timestamp_ms: float | None = None
    truncated: bool = False


@dataclass(frozen=True)
class LogEntry:
    identifier: str
    udf_type: str
    timestamp_s: float
    error: str | None
    log_lines: tuple[LogLine, ...] = ()
    kind: str = "Completion"
    execution_time_s: float | None = None

    @property
    def failed(self) -> bool:
        # Progress entries carry log lines of a running action, never its outcome.
        return self.kind == "Completion" and self.error is not None


@dataclass(frozen=True)
class FunctionErrors:
    identifier: str
    udf_type: str
    count: int
    last_error: str
    last_at_s: float


@dataclass(frozen=True)
class LogRead:
    """What the reading gave. `complete` is False when a bound (pages, deadline) stopped it before
    it was caught up; `error` is set when the first answer never came or was unusable."""

    entries: list[LogEntry] = field(default_factory=list)
    pages: int = 0
    complete: bool = True
    error: str | None = None
    latency_s: float | None = None
    cursor_ms: float | None = None

    @property
    def oldest_s(self) -> float | None:
        return min((e.timestamp_s for e in self.entries), default=None)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedPayload(f"{where} is not a number")
    return float(value)


def parse_log_line(value: Any, where: str = "logLine") -> LogLine:
    """A log line is a string, or `{messages[], level, timestamp, isTruncated}` (convex.md section 3)."""
    if isinstance(value, str):
        return LogLine(value)
    if isinstance(value, Mapping):
        messages = value.get("messages")
        if not isinstance(messages, list):
            raise MalformedPayload(f"{where}.messages is not a list")
        level = value.get("level")
        stamp = value.get("timestamp")
        return LogLine(
            " ".join(str(m) for m in messages),
            level if isinstance(level, str) else None,
            float(stamp) if isinstance(stamp, int | float) and not isinstance(stamp, bool) else None,
            value.get("isTruncated") is True,
        )
    raise MalformedPayload(f"{where} is neither a string nor a structured log line")


def parse_entry(obj: Any, where: str = "entry") -> LogEntry:
    if not isinstance(obj, Mapping):
        raise MalformedPayload(f"{where} is not an object")
    identifier = obj.get("identifier")
    if not isinstance(identifier, str) or not identifier:
        raise MalformedPayload(f"{where}.identifier is missing")
    udf_type = obj.get("udfType")
    if not isinstance(udf_type, str):
        raise MalformedPayload(f"{where}.udfType is missing")
    error = obj.get("error")
    if error is not None and not isinstance(error, str):
        raise MalformedPayload(f"{where}.error is neither a string nor null")
    lines = obj.get("logLines") or []
    if not isinstance(lines, list):
        raise MalformedPayload(f"{where}.logLines is not a list")
    kind = obj.get("kind", "Completion")  # older backends send no kind: every entry was a completion
    execution_time = obj.get("executionTime")
    return LogEntry(
        identifier=identifier,
        udf_type=udf_type,
        timestamp_s=_number(obj.get("timestamp"), f"{where}.timestamp"),
        error=error,
        log_lines=tuple(parse_log_line(line, f"{where}.logLines[{i}]") for i, line in enumerate(lines)),
        kind=kind if isinstance(kind, str) else "Completion",
        execution_time_s=_number(execution_time, f"{where}.executionTime") if execution_time is not None else None,
    )


def parse_page(payload: Any) -> tuple[list[LogEntry], float]:
    """`{"entries": [...], "newCursor": <ms>}` -> (entries, newCursor)."""
    if not isinstance(payload, Mapping):
        raise MalformedPayload("the body is not a JSON object")
    entries = payload.get("entries")
    if not isinstance(entries, list):
        raise MalformedPayload("entries is not a list")
    cursor = _number(payload.get("newCursor"), "newCursor")
    return [parse_entry(e, f"entries[{i}]") for i, e in enumerate(entries)], cursor


def errors_by_function(
    entries: Iterable[LogEntry], since_s: float, until_s: float | None = None
) -> dict[str, FunctionErrors]:
    """Failed executions in [since_s, until_s], counted per function, most errors first."""
    counts: dict[str, FunctionErrors] = {}
    for e in entries:
        if not e.failed or e.timestamp_s < since_s or (until_s is not None and e.timestamp_s > until_s):
            continue
        before = counts.get(e.identifier)
        if before is None:
            counts[e.identifier] = FunctionErrors(e.identifier, e.udf_type, 1, e.error or "", e.timestamp_s)
            continue
        latest = e.timestamp_s >= before.last_at_s
        counts[e.identifier] = FunctionErrors(
            e.identifier,
            before.udf_type,
            before.count + 1,
            (e.error or "") if latest else before.last_error,
            e.timestamp_s if latest else before.last_at_s,
        )
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1].count, kv[0])))


def _reason(status: int, body: bytes) -> str:
    """unconfirmed: Convex's error bodies for 401/403/429 are not documented (convex.md section 1),
    so the body is only quoted, shortened."""
    text = " ".join(body.decode("utf-8", "replace").split())[:120]
    label = {401: "unauthorized: the deploy key was refused", 403: "forbidden", 404: "not found",
             429: "rate limited"}.get(status, "server error" if status >= 500 else "")
    head = f"HTTP {status}" + (f" {label}" if label else "")
    return f"{head}: {text}" if text else head


async def _read_body(response: httpx.Response) -> bytes:
    try:
        return await read_limited(response, MAX_BODY_BYTES)
    except BodyTooLarge as exc:
        raise MalformedPayload(str(exc)) from None


def _cursor_param(ms: float) -> str:
    return str(int(ms)) if float(ms).is_integer() else repr(float(ms))


class _Held(Exception):
    """The deployment held a log request past the hold time: its long poll, nothing newer."""


async def read_function_logs(
    client: httpx.AsyncClient,
    deployment_url: str,
    deploy_key: SecretStr,
    *,
    since_ms: float,
    until_ms: float,
    deadline_s: float,
    max_pages: int = 10,
    settle_s: float = 2.0,
) -> LogRead:
    """Every log entry from `since_ms` on, until caught up (see the module docstring)."""
    base = deployment_url.rstrip("/")
    headers = {"Authorization": f"Convex {deploy_key.get_secret_value()}", "Accept": "application/json"}
    secret = [deploy_key.get_secret_value()]
    entries: list[LogEntry] = []
    pages = 0
    cursor = since_ms
    started = time.perf_counter()
    deadline = time.monotonic() + deadline_s

    def result(error: str | None = None, complete: bool = True) -> LogRead:
        return LogRead(
            entries, pages, complete, None if error is None else scrub(error, secret),
            time.perf_counter() - started, cursor,
        )

    def failure(exc: BaseException, where: str) -> LogRead:
        if isinstance(exc, MalformedPayload):
            return result(f"malformed response on {where}: {exc}", complete=False)
        reason = describe_error(exc)
        if reason == "timed out":
            reason = f"timed out after {deadline_s:g} s"
        return result(f"{reason} ({where})", complete=False)

    # 1. Is the deployment answering at all? Only then is a held log request its long poll.
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
            request = client.build_request(
                "GET", base + "/instance_version", timeout=httpx.Timeout(max(deadline - time.monotonic(), 0.001))
            )
            response = await client.send(request, stream=True)
            try:
                await _read_body(response)
            finally:
                await response.aclose()
    except Exception as exc:  # noqa: BLE001 - any failure to get an answer is the observation
        return failure(exc, "GET /instance_version")
    if response.status_code != 200:
        return result(_reason(response.status_code, b"") + " (GET /instance_version)", complete=False)
    # A log answer with entries comes about as fast as that one did; one held much longer is the
    # long poll. The hold time scales with the measured round trip so that a slow link is not
    # mistaken for "nothing newer".
    hold_s = max(settle_s, 3 * (time.perf_counter() - started))

    # 2. Follow the cursor.
    while True:
        if pages >= max_pages:
            return result(complete=False)
        where = "the first page" if pages == 0 else f"page {pages + 1}"
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            request = client.build_request(
                "GET",
                base + "/api/stream_function_logs",
                params={"cursor": _cursor_param(cursor)},
                headers=headers,
                timeout=httpx.Timeout(left),
            )
            try:
                async with asyncio.timeout(min(left, hold_s)):
                    response = await client.send(request, stream=True)  # returns once headers arrive
            except TimeoutError:
                if hold_s <= left:
                    raise _Held from None
                raise
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                    body = await _read_body(response)
            finally:
                await response.aclose()
        except _Held:
            return result()  # nothing newer than the cursor: caught up
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer is the observation
            return failure(exc, where)
        if response.status_code != 200:
            return result(f"{_reason(response.status_code, body)} ({where})", complete=False)
        try:
            page, new_cursor = parse_page(json.loads(body))
        except ValueError as exc:  # json's own errors and MalformedPayload
            reason = str(exc) if isinstance(exc, MalformedPayload) else "the body is not JSON"
            return result(f"malformed response on {where}: {reason}", complete=False)
        pages += 1
        entries.extend(page)
        if not page or new_cursor <= cursor:
            return result()  # newCursor stopped moving: caught up
        cursor = new_cursor
        if cursor >= until_ms:
            return result()  # past the moment the review started: the rest is outside the window
