"""The Convex double's documents as tables that can lose records and be restored by an import.

The double's tables are computed from its stores (`tables_of`); this keeps what happened to them
since: documents deleted (a data-loss drill) and documents put back by an import. Documents get
their system fields (`_id`, `_creationTime`) pinned to the deployment's start, so two exports of
unchanged data hold the same documents, as on the real backend.

Import, as `npx convex import` sends it (crates/local_backend/src/router.rs `import_routes`, and
`snapshot_import.rs`'s `import` handler): `POST /api/import?format=zip&mode=<mode>` with the zip
as the body and `Authorization: Convex <deploy key>`; answers `{"numWritten": n}`. Modes follow
the backend's `ImportMode` (Replace, ReplaceAll, Append, RequireEmpty) in the handler's camelCase
spelling (assumed: `replace`, `replaceAll`, `append`, `requireEmpty`); this double does
`replace` and `replaceAll`, and answers 400 naming the mode otherwise. Errors use the backend's
`{"code", "message"}` shape (unconfirmed, as for the export double's errors).

Knob (`/vendors/convex/tables` on the hub's control port): `GET` shows each table's count;
`POST {"delete": {"trades": 25}}` deletes that many of a table's newest documents (the data-loss
drill's break); `DELETE` forgets every deletion and import (the tables as the stores say).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from typing import Any

from sandbox.convex_export import with_system_fields
from sandbox.httpserver import Request, Response

Tables = dict[str, list[dict[str, Any]]]
MODES = ("replace", "replaceAll", "append", "requireEmpty")


class TableStore:
    def __init__(self, live: Callable[[], Tables], deploy_key: str) -> None:
        self.live = live
        self.deploy_key = deploy_key
        self.start_ms = time.time() * 1000 - 86_400_000
        self.deleted: dict[str, set[str]] = {}
        self.added: dict[str, dict[str, dict[str, Any]]] = {}
        self.imports: list[dict[str, Any]] = []

    def current(self) -> Tables:
        """Every table as an export would see it now."""
        out: Tables = {}
        for table, docs in self.live().items():
            gone = self.deleted.get(table, set())
            rows = [d for d in with_system_fields(table, docs, self.start_ms) if d["_id"] not in gone]
            seen = {d["_id"] for d in rows}
            rows += [d for i, d in self.added.get(table, {}).items() if i not in seen and i not in gone]
            out[table] = rows
        for table, extra in self.added.items():
            if table not in out:
                gone = self.deleted.get(table, set())
                out[table] = [d for i, d in extra.items() if i not in gone]
        return out

    def delete(self, table: str, count: int) -> list[str]:
        rows = self.current().get(table)
        if rows is None:
            raise ValueError(f"no table {table!r}; tables: {', '.join(sorted(self.current()))}")
        if not 1 <= count <= len(rows):
            raise ValueError(f"{table} has {len(rows)} documents; delete takes 1 to {len(rows)}")
        ids = [d["_id"] for d in sorted(rows, key=lambda d: d["_creationTime"])[-count:]]
        self.deleted.setdefault(table, set()).update(ids)
        return ids

    def replace(self, tables: Tables, every_table: bool) -> int:
        now = self.current()
        targets = set(tables) | (set(now) if every_table else set())
        written = 0
        for table in targets:
            wanted = {d["_id"]: d for d in tables.get(table, [])}
            present = {d["_id"] for d in now.get(table, [])}
            self.deleted.setdefault(table, set()).update(present - set(wanted))
            self.deleted[table] -= set(wanted)
            self.added[table] = {i: d for i, d in wanted.items()}
            written += len(wanted)
        return written

    def reset(self) -> None:
        self.deleted.clear()
        self.added.clear()
        self.imports.clear()

    async def handle_import(self, request: Request) -> Response | None:
        """The answer for `POST /api/import`, or None for any other request."""
        if request.path != "/api/import":
            return None
        if request.method != "POST":
            return Response.json({"code": "MethodNotAllowed", "message": "POST only"}, 405)
        if request.headers.get("authorization") != f"Convex {self.deploy_key}":
            return Response.json({"code": "Unauthenticated", "message": "The deploy key is not valid"}, 401)
        fmt = request.query.get("format", [""])[0]
        mode = request.query.get("mode", ["requireEmpty"])[0]
        if fmt != "zip":
            return Response.json({"code": "BadRequest", "message": f"format {fmt!r}: this sandbox imports zip"}, 400)
        if mode not in MODES:
            return Response.json({"code": "BadRequest", "message": f"unknown mode {mode!r}"}, 400)
        if mode not in ("replace", "replaceAll"):
            return Response.json({"code": "BadRequest", "message": f"mode {mode!r}: this sandbox does replace and "
                                                                   "replaceAll"}, 400)
        try:
            tables = read_zip(request.body)
        except ValueError as exc:
            return Response.json({"code": "ImportFailed", "message": str(exc)}, 400)
        written = self.replace(tables, every_table=mode == "replaceAll")
        self.imports.append({"at": time.time(), "mode": mode, "tables": sorted(tables), "numWritten": written})
        return Response.json({"numWritten": written})

    async def control(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.reset()
        elif request.method == "POST":
            try:
                body = request.json()
                deletes = body.get("delete") if isinstance(body, dict) else None
                if not isinstance(deletes, dict) or not deletes:
                    raise ValueError('send {"delete": {"<table>": <count>}}')
                deleted = {t: len(self.delete(t, int(n))) for t, n in deletes.items()}
            except (ValueError, TypeError) as exc:
                return Response.json({"error": f"convex tables: {exc}"}, 400)
            return Response.json({"deleted": deleted, "counts": self.counts()})
        return Response.json({"counts": self.counts(), "imports": self.imports})

    def counts(self) -> dict[str, int]:
        return {t: len(rows) for t, rows in self.current().items()}


def read_zip(data: bytes) -> Tables:
    """A snapshot export zip's tables (the layout of shared/vendors/convex.md section 4)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            if "_tables/documents.jsonl" not in names:
                raise ValueError("the zip has no _tables/documents.jsonl")
            listed = [json.loads(line)["name"] for line in zf.read("_tables/documents.jsonl").decode().splitlines()
                      if line.strip()]
            tables: Tables = {}
            for table in listed:
                entry = f"{table}/documents.jsonl"
                if entry not in names:
                    raise ValueError(f"table {table} is listed but {entry} is missing")
                docs = [json.loads(line) for line in zf.read(entry).decode().splitlines() if line.strip()]
                if not all(isinstance(d, dict) and isinstance(d.get("_id"), str) for d in docs):
                    raise ValueError(f"{entry}: a document without _id")
                tables[table] = docs
            return tables
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a snapshot export zip ({exc})") from None
