"""The Convex double's environment variables, through the documented Deployment Platform API.

Shapes (shared/vendors/convex.md section 5; the backend's `environment_variables.rs`: the
`update_environment_variables` handler and `ListEnvVarsResponse`):
- `GET /api/v1/list_environment_variables` -> `{"environmentVariables": {"NAME": "value"}}`;
- `POST /api/v1/update_environment_variables` (also the older `/api/update_environment_variables`)
  with `{"changes": [{"name": "A", "value": "1"}, {"name": "B"}]}`: sets A, deletes B, all or
  nothing; 200 with an empty body. A name must start with a letter and hold letters, digits and
  `_` (the backend's `EnvVarName`); otherwise 400.
Both need `Authorization: Convex <deploy key>`; without it 401 with the `{"code", "message"}`
body the export double uses (unconfirmed, as there).

Knob (`/vendors/convex/environment` on the hub's control port): `GET` shows each variable's name
and the SHA-256 of its value, and the updates received; `POST {"remove": ["NAME"]}` deletes
variables (a drill's break), `POST {"set": {"NAME": "value"}}` changes them; `DELETE` restores the
deployment's starting variables and forgets the updates.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sandbox.httpserver import Request, Response

# The sandbox deployment's variables at start; the environment file points the recovery's
# references at files holding the same values, so a healthy sandbox needs no restore.
SANDBOX_ENVIRONMENT = {
    "ALCHEMY_API_KEY": "sandbox-alchemy-key-0001",
    "FEE_WALLET_ETHEREUM": "0x00000000000000000000000000000000000fee01",
    "SITE_URL": "https://tokenforge.sandbox",
}
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
PATHS = ("/api/v1/list_environment_variables", "/api/v1/update_environment_variables",
         "/api/update_environment_variables")


class EnvironmentVariables:
    def __init__(self, deploy_key: str) -> None:
        self.deploy_key = deploy_key
        self.values = dict(SANDBOX_ENVIRONMENT)
        self.updates: list[dict[str, Any]] = []  # names set and removed per update, never values

    async def handle(self, request: Request) -> Response | None:
        if request.path not in PATHS:
            return None
        if request.headers.get("authorization") != f"Convex {self.deploy_key}":
            return Response.json({"code": "Unauthenticated", "message": "The deploy key is not valid"}, 401)
        if request.path.endswith("list_environment_variables"):
            if request.method != "GET":
                return Response.json({"code": "NotFound", "message": f"no route for {request.path}"}, 404)
            return Response.json({"environmentVariables": dict(self.values)})
        if request.method != "POST":
            return Response.json({"code": "NotFound", "message": f"no route for {request.path}"}, 404)
        try:
            changes = request.json()["changes"]
            if not isinstance(changes, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return Response.json({"code": "BadJsonBody", "message": "missing field `changes`"}, 400)
        sets, removes = {}, []
        for change in changes:
            name = change.get("name") if isinstance(change, dict) else None
            if not isinstance(name, str) or not NAME.match(name):
                return Response.json({"code": "InvalidEnvVarName", "message": f"invalid name {name!r}"}, 400)
            value = change.get("value")
            if value is None:
                removes.append(name)
            elif isinstance(value, str):
                sets[name] = value
            else:
                return Response.json({"code": "InvalidEnvVarValue", "message": f"{name}: value is not a string"}, 400)
        for name in removes:
            self.values.pop(name, None)
        self.values.update(sets)
        self.updates.append({"set": sorted(sets), "removed": sorted(removes)})
        return Response(200, b"")

    def shown(self) -> dict[str, Any]:
        return {"variables": {n: hashlib.sha256(v.encode()).hexdigest() for n, v in sorted(self.values.items())},
                "updates": self.updates}

    async def control(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.values, self.updates = dict(SANDBOX_ENVIRONMENT), []
        if request.method == "POST":
            body = request.json()
            if not isinstance(body, dict):
                return Response.json({"error": "convex environment: takes remove (a list) or set (an object)"}, 400)
            for name in body.get("remove") or []:
                self.values.pop(str(name), None)
            for name, value in (body.get("set") or {}).items():
                self.values[str(name)] = str(value)
        return Response.json(self.shown())
