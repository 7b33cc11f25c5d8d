"""The Vercel double's project environment variables (what `.env.production` holds).

Shapes from Vercel's REST API reference, "Projects" (vercel.com/docs/rest-api):
- `GET /v10/projects/{idOrName}/env` ("Retrieve the environment variables of a project by id or
  name"), query `decrypt=true|false`: `{"envs": [{"id", "key", "value", "type", "target": [...],
  "decrypted", "createdAt", "updatedAt", "configurationId", "gitBranch", ...}]}`. Without
  `decrypt=true` an encrypted variable's `value` is an opaque string and `decrypted` is false;
- `GET /v1/projects/{idOrName}/env/{id}` ("Retrieve the decrypted value of an environment
  variable of a project by id"): the one variable with `decrypted: true` and its value;
- `POST /v10/projects/{idOrName}/env` ("Create one or more environment variables"), query
  `upsert=true`, body one `{"key", "value", "type", "target"}` or a list of them: 201 with
  `{"created": <one or a list>, "failed": [...]}`. Without `upsert` a key that exists for a target
  goes to `failed` as `{"error": {"code": "ENV_CONFLICT", "message", "key"}}` (the code is an
  assumption: the reference names no conflict code).
Auth, team and rate limiting are the double's (sandbox/vendors/vercel.py), as for every call.

Knob (`/vendors/vercel/environment` on the hub's control port): `GET` shows each variable's key,
targets and value's SHA-256, and how many upserts came in; `POST {"remove": ["KEY"]}` deletes
variables (a drill's break), `POST {"set": {"KEY": "value"}}` changes a production one; `DELETE`
restores the project's starting variables.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from typing import Any

from sandbox.httpserver import Request, Response

SANDBOX_PROJECT_ENV = {
    "NEXT_PUBLIC_CONVEX_URL": "https://tokenforge-sandbox.convex.cloud",
    "SENTRY_AUTH_TOKEN": "sandbox-sentry-token-0001",
}
TYPES = ("system", "secret", "encrypted", "plain", "sensitive")
TARGETS = ("production", "preview", "development")


def _error(code: str, message: str, status: int) -> Response:
    return Response.json({"error": {"code": code, "message": message}}, status)


class ProjectEnv:
    def __init__(self, projects: tuple[str, ...]) -> None:
        self.projects = projects
        self._ids = itertools.count(1)
        self.envs: list[dict[str, Any]] = []
        self.upserts = 0
        self.reset()

    def reset(self) -> None:
        self.envs, self.upserts = [], 0
        for key, value in SANDBOX_PROJECT_ENV.items():
            self._put(key, value, "encrypted", ["production"])

    def _put(self, key: str, value: str, kind: str, targets: list[str]) -> dict[str, Any]:
        now = int(time.time() * 1000)
        for env in self.envs:
            if env["key"] == key and set(env["target"]) & set(targets):
                env.update(value=value, type=kind, target=sorted(set(env["target"]) | set(targets)), updatedAt=now)
                return env
        env = {"id": f"env_{next(self._ids):016d}", "key": key, "value": value, "type": kind, "target": targets,
               "configurationId": None, "gitBranch": None, "createdAt": now, "updatedAt": now}
        self.envs.append(env)
        return env

    @staticmethod
    def _shown(env: dict[str, Any], decrypt: bool) -> dict[str, Any]:
        if decrypt and env["type"] != "sensitive":
            return {**env, "decrypted": True}
        sealed = base64.b64encode(hashlib.sha256(env["value"].encode()).digest()).decode()
        return {**env, "value": sealed, "decrypted": False}

    async def handle(self, request: Request, parts: list[str]) -> Response | None:
        if len(parts) < 4 or parts[1] != "projects" or parts[3] != "env":
            return None
        if not ((parts[0] == "v10" and len(parts) == 4) or (parts[0] == "v1" and len(parts) == 5)):
            return None
        if parts[2] not in self.projects:
            return _error("not_found", f"Could not find the project: {parts[2]}", 404)
        if parts[0] == "v1":
            if request.method != "GET":
                return None
            env = next((e for e in self.envs if e["id"] == parts[4]), None)
            if env is None:
                return _error("not_found", f"Could not find the environment variable: {parts[4]}", 404)
            return Response.json(self._shown(env, True))
        if request.method == "GET":
            decrypt = request.query.get("decrypt", ["false"])[0] == "true"
            return Response.json({"envs": [self._shown(e, decrypt) for e in self.envs]})
        if request.method != "POST":
            return None
        try:
            body = request.json()
        except ValueError:
            return _error("bad_request", "Invalid JSON body", 400)
        items = body if isinstance(body, list) else [body]
        upsert = request.query.get("upsert", [""])[0] == "true"
        created, failed = [], []
        for item in items:
            ok = (isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("value"), str)
                  and item.get("type") in TYPES and isinstance(item.get("target"), list)
                  and item["target"] and all(t in TARGETS for t in item["target"]))
            if not ok:
                return _error("bad_request", "each variable needs key, value, type and target", 400)
            exists = any(e["key"] == item["key"] and set(e["target"]) & set(item["target"]) for e in self.envs)
            if exists and not upsert:
                failed.append({"error": {"code": "ENV_CONFLICT", "key": item["key"],
                                         "message": f"A variable with the name `{item['key']}` already exists"}})
                continue
            created.append(self._shown(self._put(item["key"], item["value"], item["type"], list(item["target"])),
                                       False))
        self.upserts += 1
        return Response.json({"created": created if isinstance(body, list) else (created[0] if created else None),
                              "failed": failed}, 201)

    async def control(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.reset()
        if request.method == "POST":
            body = request.json()
            if not isinstance(body, dict):
                return Response.json({"error": "vercel environment: takes remove (a list) or set (an object)"}, 400)
            gone = {str(k) for k in body.get("remove") or []}
            self.envs = [e for e in self.envs if e["key"] not in gone]
            for key, value in (body.get("set") or {}).items():
                self._put(str(key), str(value), "encrypted", ["production"])
        return Response.json({
            "variables": {e["key"]: {"target": e["target"], "sha256": hashlib.sha256(e["value"].encode()).hexdigest()}
                          for e in self.envs},
            "upserts": self.upserts})
