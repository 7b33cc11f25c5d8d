"""A Convex snapshot export (the zip `npx convex export` downloads), over the deployment's HTTP API.

Convex documents the export only as the CLI command (shared/vendors/convex.md section 4). These
are the HTTP calls the CLI makes, read from get-convex/convex-backend
`npm-packages/convex/src/cli/lib/convexExport.ts` and the routes in
`crates/local_backend/src/router.rs` / `snapshot_export.rs`, all with `Authorization: Convex
<deploy key>` (an admin key; the backend requires admin with write access):

1. `POST /api/export/request/zip?includeStorage=<bool>` -> 200 when the export is queued.
2. The export's state is the system query `_system/cli/exports:getLatest`, which answers the newest
   document of `_exports`: `{"_id", "state": "requested"|"in_progress"|"completed"|"failed",
   "start_ts", "complete_ts", ...}` (`start_ts` is the snapshot's time in nanoseconds). The CLI
   subscribes to it over the sync WebSocket; here it is polled with `POST /api/function`, the HTTP
   route that runs any function for an admin (`public_function_post` in `public_api.rs`).
   Depending on the value format an int64 comes back as a number, a decimal string, or
   `{"$integer": <base64 of 8 little-endian bytes>}`; all three are read.
3. `GET /api/export/zip/<start_ts>` streams the zip (`Content-Disposition: attachment;
   filename=snapshot_<ts>.zip`).

An export requested while another is running is refused by the backend; an export already
completed before this one was requested is told apart by its `_id`/`start_ts`, so an old
snapshot is never taken for the new one.

Synchronous on purpose: the backup runs in a worker thread beside boto3. Every request has the
client's timeout, and one monotonic deadline covers requesting, waiting and downloading.
"""

from __future__ import annotations

import base64
import re
import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

GET_LATEST = "_system/cli/exports:getLatest"
CHUNK = 1024 * 1024
MAX_STATE_BYTES = 1024 * 1024


class ExportFailed(Exception):
    """No snapshot was downloaded; the message says why (never the deploy key)."""


@dataclass(frozen=True)
class ExportState:
    id: str | None
    state: str
    start_ts: int | None  # nanoseconds since the epoch: the snapshot's point in time
    complete_ts: int | None


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    start_ts: int

    @property
    def snapshot_at(self) -> datetime:
        return ns_to_datetime(self.start_ts)


def ns_to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def parse_int64(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ExportFailed(f"{field}: a boolean, not a timestamp")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, dict) and isinstance(value.get("$integer"), str):
        try:
            raw = base64.b64decode(value["$integer"], validate=True)
            return int(struct.unpack("<q", raw)[0])
        except (ValueError, struct.error):
            raise ExportFailed(f"{field}: {{'$integer': ...}} is not 8 bytes of base64") from None
    raise ExportFailed(f"{field}: {type(value).__name__} {str(value)[:40]!r} is not a timestamp")


def parse_state(value: Any) -> ExportState | None:
    """The `_exports` document getLatest answers; None when no export was ever requested."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("state"), str):
        raise ExportFailed(f"{GET_LATEST} answered {str(value)[:80]!r}, not an export document")
    return ExportState(
        id=str(value["_id"]) if value.get("_id") is not None else None,
        state=value["state"],
        start_ts=parse_int64(value.get("start_ts"), "start_ts"),
        complete_ts=parse_int64(value.get("complete_ts"), "complete_ts"),
    )


class ConvexExporter:
    """Request, await and download one snapshot export of the deployment at `url`."""

    def __init__(
        self,
        url: str,
        deploy_key: SecretStr,
        *,
        timeout_s: float = 30,
        deadline_s: float = 1800,
        poll_interval_s: float = 2,
        include_storage: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._key = deploy_key
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.poll_interval_s = poll_interval_s
        self.include_storage = include_storage
        self._transport = transport

    def _client(self) -> httpx.Client:
        return httpx.Client(
            transport=self._transport, timeout=httpx.Timeout(self.timeout_s), follow_redirects=False,
            trust_env=False, headers={"Authorization": f"Convex {self._key.get_secret_value()}",
                                      "User-Agent": "tokenforge-ops/backup"},
        )

    def _fail(self, what: str, exc: BaseException) -> ExportFailed:
        if isinstance(exc, httpx.TimeoutException):
            reason = "timed out"
        elif isinstance(exc, httpx.ConnectError):
            reason = "connection failed"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        return ExportFailed(f"{self.url}: {what}: {reason}")

    def latest(self, client: httpx.Client) -> ExportState | None:
        body = {"path": GET_LATEST, "args": {}, "format": "json"}
        try:
            response = client.post(f"{self.url}/api/function", json=body)
        except httpx.HTTPError as exc:
            raise self._fail("export state not read", exc) from None
        if len(response.content) > MAX_STATE_BYTES:
            raise ExportFailed(f"{self.url}: export state answer too large")
        try:
            payload = response.json()
        except ValueError:
            raise ExportFailed(f"{self.url}: export state: HTTP {response.status_code}, body is not JSON") from None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            message = payload.get("errorMessage") if isinstance(payload, dict) else None
            raise ExportFailed(f"{self.url}: export state: HTTP {response.status_code}: "
                               f"{str(message or payload)[:300]}")
        return parse_state(payload.get("value"))

    def export(self, dest_dir: Path) -> Downloaded:
        """Request a new export, wait for it, and stream its zip into `dest_dir`."""
        deadline = time.monotonic() + self.deadline_s
        with self._client() as client:
            before = self.latest(client)
            if before is not None and before.state in ("requested", "in_progress"):
                raise ExportFailed(f"{self.url}: an export is already {before.state.replace('_', ' ')}; "
                                   "the backend runs one at a time")
            try:
                response = client.post(f"{self.url}/api/export/request/zip",
                                       params={"includeStorage": str(self.include_storage).lower()})
            except httpx.HTTPError as exc:
                raise self._fail("export not requested", exc) from None
            if response.status_code != 200:
                raise ExportFailed(f"{self.url}: export not requested: HTTP {response.status_code}: "
                                   f"{response.text[:300]}")
            state = self._await_completion(client, before, deadline)
            assert state.start_ts is not None
            return self._download(client, state.start_ts, dest_dir, deadline)

    def _await_completion(self, client: httpx.Client, before: ExportState | None, deadline: float) -> ExportState:
        while True:
            state = self.latest(client)
            ours = state is not None and (before is None or (state.id, state.start_ts) != (before.id, before.start_ts))
            if state is not None and ours:
                if state.state == "completed":
                    if state.start_ts is None:
                        raise ExportFailed(f"{self.url}: the completed export has no start_ts")
                    return state
                if state.state == "failed":
                    raise ExportFailed(f"{self.url}: the deployment reports the export failed")
                if state.state not in ("requested", "in_progress"):
                    raise ExportFailed(f"{self.url}: unexpected export state {state.state!r}")
            if time.monotonic() + self.poll_interval_s > deadline:
                now = state.state if state is not None else "not started"
                raise ExportFailed(f"{self.url}: the export did not complete within {self.deadline_s:g} s "
                                   f"(still {now})")
            time.sleep(self.poll_interval_s)

    def _download(self, client: httpx.Client, start_ts: int, dest_dir: Path, deadline: float) -> Downloaded:
        url = f"{self.url}/api/export/zip/{start_ts}"
        try:
            with client.stream("GET", url) as response:
                if response.status_code != 200:
                    response.read()
                    raise ExportFailed(f"{self.url}: export download: HTTP {response.status_code}: "
                                       f"{response.text[:300]}")
                name = _filename(response.headers.get("content-disposition", ""), start_ts)
                path = dest_dir / name
                size = 0
                with path.open("wb") as out:
                    for chunk in response.iter_bytes(CHUNK):
                        out.write(chunk)
                        size += len(chunk)
                        if time.monotonic() > deadline:
                            raise ExportFailed(f"{self.url}: the export download did not finish within "
                                               f"{self.deadline_s:g} s ({size} bytes so far)")
        except httpx.HTTPError as exc:
            raise self._fail("export download", exc) from None
        expected = response.headers.get("content-length")
        if expected is not None and expected.isdigit() and int(expected) != size:
            raise ExportFailed(f"{self.url}: export download ended after {size} of {expected} bytes")
        return Downloaded(path, size, start_ts)


def _filename(disposition: str, start_ts: int) -> str:
    match = re.match(r"attachment;\s*filename=\"?([^\";]+)\"?", disposition)
    name = match.group(1) if match else ""
    # The name comes from the server: only a plain file name is taken, never a path.
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", name) or name.startswith("."):
        name = f"snapshot_{start_ts}.zip"
    return name


def snapshot_ts_from_name(name: str) -> int | None:
    """`snapshot_<ns>.zip` (the CLI's name) -> ns."""
    match = re.fullmatch(r"snapshot_(\d{10,20})\.zip", name)
    return int(match.group(1)) if match else None
