"""Healthchecks.io double: the Pinging API of a self-hosted instance (`<SITE_ROOT>/ping/<uuid>`).

Shapes from shared/vendors/healthchecks.md: `HEAD`, `GET` or `POST` on `/ping/<uuid>` (success),
`/ping/<uuid>/start`, `/ping/<uuid>/fail`, `/ping/<uuid>/<exit-status>` (0 success, else failure)
and `/ping/<uuid>/log`; the answer is HTTP 200, `text/plain; charset=utf-8`, body `OK`,
`Access-Control-Allow-Origin: *`, and newer servers add `Ping-Body-Limit`. A POST body is kept up
to 100 kB. The note marks the answer for an unknown UUID unconfirmed; this double assumes what it
suggests: `404` with the text `not found` (and `400` `invalid url` for a malformed path).

Knobs, on the hub's control port:
- `GET /vendors/healthchecks/pings` lists the pings received, in order (`uuid`, `signal`: success,
  start, fail, log or the exit status, `method`, `body`, `received_at`); `DELETE` clears them.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response

SANDBOX_CHECK = str(uuid.UUID("5e1f0a5b-0c7e-4c1b-9a51-7f0b5e5a9e11"))
BODY_LIMIT = 100_000
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _ok() -> Response:
    response = Response.text("OK")
    response.headers.update({"Access-Control-Allow-Origin": "*", "Ping-Body-Limit": str(BODY_LIMIT)})
    return response


class Healthchecks:
    """One instance with a fixed set of checks, recording every ping."""

    def __init__(self, checks: set[str] | None = None) -> None:
        self.checks = set(checks or {SANDBOX_CHECK})
        self.pings: list[dict[str, Any]] = []

    async def __call__(self, request: Request, fault: Fault) -> Response:
        if request.method not in ("GET", "HEAD", "POST"):
            return Response.text("method not allowed", 405)
        parts = request.path.strip("/").split("/")
        if len(parts) not in (2, 3) or parts[0] != "ping" or not _UUID.match(parts[1]):
            return Response.text("invalid url", 400)
        signal = parts[2] if len(parts) == 3 else "success"
        if len(parts) == 3 and signal not in ("start", "fail", "log") and not (signal.isdigit() and int(signal) <= 255):
            return Response.text("invalid url", 400)
        if parts[1] not in self.checks:
            return Response.text("not found", 404)
        if signal == "0":
            signal = "success"
        self.pings.append({
            "received_at": time.time(), "uuid": parts[1], "signal": signal, "method": request.method,
            "body": request.body[:BODY_LIMIT].decode("utf-8", "replace"),
        })
        return _ok()

    async def control(self, request: Request) -> Response | None:
        what = request.path.strip("/").split("/")[2:]  # after "vendors/healthchecks"
        if what == ["pings"]:
            if request.method == "DELETE":
                cleared = len(self.pings)
                self.pings.clear()
                return Response.json({"cleared": cleared})
            return Response.json(self.pings)
        return None


def build(plan: dict[str, Any]) -> Healthchecks:
    return Healthchecks()
