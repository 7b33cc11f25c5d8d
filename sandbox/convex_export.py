"""Convex snapshot exports for the sandbox: the zip, and the export endpoints of the Convex double.

The zip follows the layout the backend's own export test checks (shared/vendors/convex.md
section 4):

    README.md
    _tables/documents.jsonl          one line per table: {"name": "users", "id": 10001}
    <table>/documents.jsonl          one document per line, with "_id" and "_creationTime"
    <table>/generated_schema.jsonl   first line: a JSON string of the inferred type

The endpoints are the ones `npx convex export` calls (runbook/clients/convex_export.py has the
sources): `POST /api/export/request/zip?includeStorage=`, the system query
`_system/cli/exports:getLatest` through `POST /api/function`, and `GET /api/export/zip/<ts>`, all
answering only `Authorization: Convex <deploy key>`. An export moves requested -> in_progress ->
completed over `build_s` seconds, as the real worker takes time; the zip is built at completion
from the tables the double holds at that moment.

Knobs (`SnapshotExports.control`, mounted at `/vendors/convex/exports` on the hub's control port):
`build_s`, `fail_next` (the next export ends `failed`), `corrupt_next` (the next zip served is cut
short); DELETE forgets every export and restores the defaults.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import random
import struct
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response

README = """This is a snapshot export of a Convex deployment (the TokenForge sandbox).
Each table is a folder holding documents.jsonl, one document per line; _tables lists the tables.
Import it with `npx convex import <this file>.zip`.
"""

Tables = Mapping[str, Sequence[Mapping[str, Any]]]

_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def document_id(table: str, n: int) -> str:
    """A stable id shaped like Convex's (32 base-32 characters), unique per table and row."""
    digest = hashlib.sha256(f"{table}:{n}".encode()).digest()
    return "".join(_ID_ALPHABET[b % 32] for b in digest)


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int64" if abs(value) >= 2**53 else "float64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array<any>"
    return "object"


def inferred_schema(docs: Sequence[Mapping[str, Any]]) -> str:
    """A shape of the documents in the spirit of the export's generated_schema line."""
    fields: dict[str, set[str]] = {}
    for doc in docs:
        for name, value in doc.items():
            fields.setdefault(name, set()).add(_type_of(value))
    if not fields:
        return "never"
    parts = [f"{name}: {' | '.join(sorted(types))}" for name, types in sorted(fields.items())]
    return "{" + ", ".join(parts) + "}"


def with_system_fields(table: str, docs: Sequence[Mapping[str, Any]], start_ms: float) -> list[dict[str, Any]]:
    out = []
    for i, doc in enumerate(docs):
        d = dict(doc)
        d.setdefault("_id", document_id(table, i))
        d.setdefault("_creationTime", start_ms + i * 1.5)
        out.append({"_creationTime": d.pop("_creationTime"), "_id": d.pop("_id"), **d})
    return out


def write_snapshot(target: Path | io.BytesIO, tables: Tables, created_ms: float | None = None) -> None:
    """Write a snapshot export zip of `tables` to a path or a buffer."""
    start = created_ms if created_ms is not None else time.time() * 1000 - 86_400_000
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("README.md", README)
        listing = "".join(json.dumps({"name": t, "id": 10001 + i}) + "\n" for i, t in enumerate(tables))
        zf.writestr("_tables/documents.jsonl", listing)
        for table, docs in tables.items():
            full = with_system_fields(table, docs, start)
            with zf.open(f"{table}/documents.jsonl", "w") as f:
                for doc in full:
                    f.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
            zf.writestr(f"{table}/generated_schema.jsonl", json.dumps(inferred_schema(full)) + "\n")


def build_snapshot_zip(
    directory: Path, tables: Tables, snapshot_ts: int | None = None, created_ms: float | None = None,
) -> Path:
    """`directory/snapshot_<ns>.zip` (the CLI's file name) holding `tables`."""
    ts = snapshot_ts if snapshot_ts is not None else time.time_ns()
    path = directory / f"snapshot_{ts}.zip"
    write_snapshot(path, tables, created_ms)
    return path


def sample_tables(users: int = 50, tokens: int = 20, trades: int = 200, seed: int = 7) -> dict[str, list[dict]]:
    """TokenForge-shaped data: users, launched tokens, trades; deterministic for a seed."""
    rng = random.Random(seed)
    user_rows = [{"wallet": "0x" + rng.randbytes(20).hex(), "handle": f"user{i}", "verified": rng.random() < 0.3}
                 for i in range(users)]
    token_rows = [{"chain": rng.choice(["ethereum", "bsc", "solana"]), "symbol": f"TK{i}", "name": f"Token {i}",
                   "creator": document_id("users", rng.randrange(max(users, 1))), "supply": 10**9}
                  for i in range(tokens)]
    trade_rows = [{"token": document_id("tokens", rng.randrange(max(tokens, 1))),
                   "user": document_id("users", rng.randrange(max(users, 1))),
                   "side": rng.choice(["buy", "sell"]), "amount_usd": round(rng.uniform(5, 5000), 2)}
                  for _ in range(trades)]
    return {"users": user_rows, "tokens": token_rows, "trades": trade_rows}


def tables_of(deployment: Any) -> dict[str, list[dict[str, Any]]]:
    """What the Convex double holds, as tables: its logins, failed logins and trades on top of the
    sample data (so no table of a fresh sandbox is empty)."""
    base = sample_tables()
    return {
        "users": base["users"],
        "tokens": base["tokens"],
        "trades": base["trades"] + [dict(t) for t in getattr(deployment, "trades", [])],
        "logins": [dict(x) for x in getattr(deployment, "logins", [])],
        "failedLogins": [dict(x) for x in getattr(deployment, "failed_logins", [])],
    }


def encode_int64(n: int) -> dict[str, str]:
    """Convex's JSON encoding of an int64: 8 little-endian bytes, base64."""
    return {"$integer": base64.b64encode(struct.pack("<q", n)).decode()}


class SnapshotExports:
    """The export endpoints of one Convex deployment double.

    `tables` is called when an export completes, so the snapshot holds the double's data as it
    was then. Mount it in front of the deployment's own routes: `handle` answers the export
    routes and returns None for everything else.
    """

    GET_LATEST = "_system/cli/exports:getLatest"

    def __init__(self, deploy_key: str, tables: Callable[[], Tables] | None = None, build_s: float = 0.3) -> None:
        self.deploy_key = deploy_key
        self.tables = tables or sample_tables
        self.build_s = build_s
        self.fail_next = False
        self.corrupt_next = False
        self.exports: list[dict[str, Any]] = []  # the `_exports` documents, oldest first
        self.zips: dict[int, bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def configure(self, change: Mapping[str, Any]) -> dict[str, Any]:
        """Turn the knobs in `change` (any of build_s, fail_next, corrupt_next); ValueError names a bad one."""
        unknown = set(change) - {"build_s", "fail_next", "corrupt_next"}
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(sorted(unknown))}; knobs: build_s, fail_next, corrupt_next")
        if "build_s" in change:
            build_s = float(change["build_s"])
            if not 0 <= build_s <= 600:
                raise ValueError("build_s takes 0 to 600 seconds")
            self.build_s = build_s
        for name in ("fail_next", "corrupt_next"):
            if name in change:
                if not isinstance(change[name], bool):
                    raise ValueError(f"{name} takes true or false")
                setattr(self, name, change[name])
        return {"build_s": self.build_s, "fail_next": self.fail_next, "corrupt_next": self.corrupt_next}

    async def control(self, request: Request) -> Response:
        """`/vendors/convex/exports` on the hub's control port: GET shows the knobs and the exports,
        POST turns knobs, DELETE forgets every export and restores the defaults."""
        if request.method == "DELETE":
            self.reset()
        elif request.method == "POST":
            try:
                body = request.json()
                if not isinstance(body, dict):
                    raise ValueError("send a JSON object of knobs")
                self.configure(body)
            except (ValueError, TypeError) as exc:
                return Response.json({"error": f"convex exports: {exc}"}, 400)
        shown = ("_id", "state", "start_ts", "complete_ts")
        exports = [{k: v for k, v in doc.items() if k in shown} for doc in self.exports]
        return Response.json({**self.configure({}), "exports": exports})

    def reset(self) -> None:
        """Forget every export and restore the knobs' defaults."""
        for task in list(self._tasks):
            task.cancel()
        self.build_s, self.fail_next, self.corrupt_next = 0.3, False, False
        self.exports.clear()
        self.zips.clear()

    def latest(self) -> dict[str, Any] | None:
        if not self.exports:
            return None
        doc = dict(self.exports[-1])
        for name in ("start_ts", "complete_ts"):
            if doc.get(name) is not None:
                doc[name] = encode_int64(doc[name])
        return doc

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Convex {self.deploy_key}"

    async def handle(self, request: Request, fault: Fault) -> Response | None:
        """The answer for an export route, or None when the request is not one."""
        path = request.path
        is_state = request.method == "POST" and path == "/api/function"
        if not (path.startswith("/api/export/") or is_state):
            return None
        if is_state:
            try:
                body = request.json()
            except ValueError:
                return None
            if not isinstance(body, dict) or body.get("path") != self.GET_LATEST:
                return None
        if not self._authorized(request):
            # unconfirmed: the backend's exact 401 body (convex.md section 1); the log double's shape
            return Response.json({"code": "Unauthenticated", "message": "The deploy key is not valid"}, 401)
        if is_state:
            return Response.json({"status": "success", "value": self.latest(), "logLines": []})
        if request.method == "POST" and path == "/api/export/request/zip":
            return self._request(request)
        if request.method == "GET" and path.startswith("/api/export/zip/"):
            return self._download(path.rsplit("/", 1)[1])
        return Response.text("not found", 404)

    def _request(self, request: Request) -> Response:
        if self.exports and self.exports[-1]["state"] in ("requested", "in_progress"):
            return Response.json({"code": "ExportInProgress",
                                  "message": "There is already an export requested or in progress."}, 400)
        include = request.query.get("includeStorage", ["false"])[0] == "true"
        doc: dict[str, Any] = {"_id": document_id("_exports", len(self.exports)), "_creationTime": time.time() * 1000,
                               "state": "requested", "requestor": "snapshotExport", "format": {
                                   "format": "zip", "include_storage": include}}
        self.exports.append(doc)
        task = asyncio.get_running_loop().create_task(self._build(doc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Response(200)

    async def _build(self, doc: dict[str, Any]) -> None:
        await asyncio.sleep(self.build_s / 3)
        doc["state"] = "in_progress"
        start_ts = time.time_ns()
        doc["start_ts"] = start_ts
        await asyncio.sleep(self.build_s * 2 / 3)
        if self.fail_next:
            self.fail_next = False
            doc["state"] = "failed"
            return
        buffer = io.BytesIO()
        write_snapshot(buffer, self.tables())
        data = buffer.getvalue()
        if self.corrupt_next:
            self.corrupt_next = False
            data = data[: len(data) // 2]
        self.zips[start_ts] = data
        doc.update(state="completed", complete_ts=time.time_ns(), zip_object_key=f"exports/{start_ts}.zip")

    def _download(self, ts_text: str) -> Response:
        if not ts_text.isdigit():
            return Response.json({"code": "BadSnapshotTimestamp",
                                  "message": "Snapshot timestamp did not parse to a timestamp."}, 400)
        data = self.zips.get(int(ts_text))
        if data is None:
            return Response.json({"code": "NotFound", "message": f"no completed export at {ts_text}"}, 404)
        return Response(200, data, {"Content-Type": "application/zip",
                                    "Content-Disposition": f"attachment; filename=snapshot_{ts_text}.zip",
                                    "Cache-Control": "private, max-age=2592000"})
