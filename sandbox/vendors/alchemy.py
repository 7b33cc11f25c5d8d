"""Alchemy Admin API double: `GET /v1/usage/summary` behind an Access Key.

From shared/vendors/alchemy.md: the Usage API lives at `https://admin-api.alchemy.com/v1`, takes
`Authorization: Bearer <access key>` (an Admin API Access Key, not an app's RPC key), and answers
200, 401, 403 or 404. Everything else is unconfirmed, and this double invents none of it:
- the 200 body's schema is not documented, so the double names no Alchemy field. By default it
  serves a placeholder object that says it is one, holding the knob's compute units at
  `PLACEHOLDER_FIELD`; configure the runbook's `used_cu_field` with that path in the sandbox.
  A body captured from the real API can be served verbatim with the `body` knob instead.
- error bodies are not documented: 401 and 404 answer a short plain-text reason.

Knobs (control port, `/vendors/alchemy/usage`):
- `GET` the current values; `DELETE` restores the defaults;
- `POST {"used_cu": 27000000}` sets month-to-date compute units in the placeholder body;
- `POST {"body": {...}}` serves that JSON verbatim (a captured real answer); `{"body": null}`
  returns to the placeholder.
"""

from __future__ import annotations

from typing import Any

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response

SANDBOX_ACCESS_KEY = "alchemy-sandbox-access-key"
# Not Alchemy's schema (which is undocumented): a path only this sandbox uses.
PLACEHOLDER_FIELD = "tfops_sandbox_placeholder.used_cu"
DEFAULT_USED_CU = 1_200_000


class AlchemyAdmin:
    def __init__(self, access_key: str = SANDBOX_ACCESS_KEY) -> None:
        self.access_key = access_key
        self.used_cu: int | float = DEFAULT_USED_CU
        self.body: Any = None

    def summary(self) -> Any:
        if self.body is not None:
            return self.body
        outer, inner = PLACEHOLDER_FIELD.split(".")
        return {
            outer: {
                inner: self.used_cu,
                "note": "sandbox placeholder: Alchemy's usage-summary schema is undocumented",
            }
        }

    async def __call__(self, request: Request, fault: Fault) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.access_key}":
            return Response.text("Unauthorized: requires authentication with an Access Key", 401)
        if request.method == "GET" and request.path == "/v1/usage/summary":
            return Response.json(self.summary())
        return Response.text("Not Found", 404)

    async def control(self, request: Request) -> Response | None:
        if request.path != "/vendors/alchemy/usage":
            return None
        if request.method == "DELETE":
            self.used_cu, self.body = DEFAULT_USED_CU, None
        elif request.method == "POST":
            try:
                update = request.json()
                if not isinstance(update, dict) or not set(update) <= {"used_cu", "body"}:
                    raise ValueError("knobs: used_cu (a number >= 0), body (JSON to serve verbatim, or null)")
                used = update.get("used_cu", self.used_cu)
                if isinstance(used, bool) or not isinstance(used, int | float) or used < 0:
                    raise ValueError("used_cu must be a number >= 0")
            except ValueError as exc:
                return Response.json({"error": str(exc)}, 400)
            self.used_cu = used
            if "body" in update:
                self.body = update["body"]
        return Response.json({"used_cu": self.used_cu, "field": PLACEHOLDER_FIELD, "summary": self.summary()})


def build(plan: dict[str, Any]) -> AlchemyAdmin:
    return AlchemyAdmin(plan.get("vendor_keys", {}).get("alchemy") or SANDBOX_ACCESS_KEY)
