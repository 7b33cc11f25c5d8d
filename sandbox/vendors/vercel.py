"""Vercel double: one project's production deployments, promotion, and Vercel's public status JSON.

Shapes from shared/vendors/vercel.md:
- `GET /v6/deployments?projectId=&target=&state=&limit=&until=` (section 1): `{"pagination":
  {"count", "next", "prev"}, "deployments": [{uid, name, url, created, state, readyState,
  readySubstate, type, target, source, creator, meta, createdAt, buildingAt, ready, inspectorUrl,
  isRollbackCandidate, aliasError}]}`, newest first; `next` is null on the last page (the note
  says doubles should do so) and is passed back as `until`;
- `GET /v13/deployments/{idOrUrl}` (section 2): `{id, name, url, readyState, status, target,
  createdAt, projectId, creator, meta, regions, inspectorUrl, aliasAssigned}`; the production
  domain as `idOrUrl` answers the deployment it points at;
- `POST /v10/projects/{projectId}/promote/{deploymentId}` (section 3): 201 with no body, or 202
  when a knob delays the switch (the documented asynchronous promote);
- errors as `{"error": {"code", "message"}}` (section 5): 403 `forbidden` for a wrong token or
  team, 404 `not_found`, 400 `bad_request`, 429 `rate_limited` with the `limit` object;
- `GET /api/v2/status.json` (section 6), the Statuspage summary, served from the same port.

The frontend of the sandbox serves what the current production deployment serves: a deployment
marked bad answers 500 on every page (`fronting()`, wired by the hub).

Knobs, on the hub's control port:
- `GET /vendors/vercel/deployments`: every deployment with its `bad` flag, the current one, and the
  promotions received; `POST` `{"bad": true, "promote": true, "state": "READY"}` adds a new
  production deployment (bad or good; current when `promote`); `DELETE` restores the three good
  deployments, the newest current.
- `POST /vendors/vercel/status` `{"indicator": "major", "description": "..."}` sets the status page;
  `GET` shows it; `DELETE` restores "none".
- `POST /vendors/vercel/config` `{"rate_limited": N, "promote_delay_s": S}`: the next N API calls
  answer 429; promotions take S seconds to land (202); `GET` shows it; `DELETE` restores both.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response
from sandbox.vendors.vercel_env import ProjectEnv

SANDBOX_TOKEN = "vercel-sandbox-token"  # noqa: S105 - the double's fixed token, not a credential
SANDBOX_PROJECT_ID = "prj_tfsandbox0000000000000000"
SANDBOX_PROJECT_NAME = "tokenforge-web"
SANDBOX_TEAM_ID = "team_tfsandbox00000000000000"
PRODUCTION_DOMAIN = "tokenforge.sandbox"
INDICATORS = ("none", "minor", "major", "critical")
STATES = ("BUILDING", "ERROR", "INITIALIZING", "QUEUED", "READY", "CANCELED")
RATE_LIMIT_RESET_S = 2

BAD_PAGE = "A server error has occurred\n\nFUNCTION_INVOCATION_FAILED\n"


def _error(code: str, message: str, status: int, **extra: Any) -> Response:
    return Response.json({"error": {"code": code, "message": message, **extra}}, status)


@dataclass
class SandboxDeployment:
    uid: str
    created_ms: int
    state: str = "READY"
    bad: bool = False
    aliased: bool = False

    @property
    def url(self) -> str:
        return f"{SANDBOX_PROJECT_NAME}-{self.uid[4:13].lower()}.vercel.app"

    def listed(self, current: bool) -> dict[str, Any]:
        creator = {"uid": "usr_tfsandbox", "email": "ops@tokenforge.example", "username": "tokenforge-ops"}
        return {
            "uid": self.uid, "name": SANDBOX_PROJECT_NAME, "url": self.url, "created": self.created_ms,
            "state": self.state, "readyState": self.state,
            "readySubstate": ("PROMOTED" if self.aliased else "STAGED") if self.state == "READY" else None,
            "type": "LAMBDAS", "target": "production", "source": "git", "creator": creator, "meta": {},
            "createdAt": self.created_ms, "buildingAt": self.created_ms + 1000,
            "ready": self.created_ms + 60_000 if self.state == "READY" else None,
            "inspectorUrl": f"https://vercel.com/tokenforge/{SANDBOX_PROJECT_NAME}/{self.uid[4:]}",
            "isRollbackCandidate": self.state == "READY" and self.aliased and not current, "aliasError": None,
        }

    def single(self, current: bool) -> dict[str, Any]:
        return {
            "id": self.uid, "name": SANDBOX_PROJECT_NAME, "url": self.url, "readyState": self.state,
            "status": self.state, "target": "production", "createdAt": self.created_ms,
            "projectId": SANDBOX_PROJECT_ID, "creator": {"uid": "usr_tfsandbox", "username": "tokenforge-ops"},
            "meta": {}, "regions": ["iad1"],
            "inspectorUrl": f"https://vercel.com/tokenforge/{SANDBOX_PROJECT_NAME}/{self.uid[4:]}",
            "aliasAssigned": current,
        }


def _uid(n: int) -> str:
    return "dpl_" + hashlib.sha256(f"tokenforge-sandbox-{n}-{time.time_ns()}".encode()).hexdigest()[:28]


@dataclass
class Knobs:
    rate_limited: int = 0
    promote_delay_s: float = 0.0
    indicator: str = "none"
    description: str = "All Systems Operational"
    promotions: list[dict[str, Any]] = field(default_factory=list)


class VercelDouble:
    def __init__(self, token: str = SANDBOX_TOKEN) -> None:
        self.token = token
        self.knobs = Knobs()
        self.deployments: list[SandboxDeployment] = []
        self.current: str = ""
        self._count = 0
        self._pending: asyncio.TimerHandle | None = None
        self.reset_deployments()
        # The project's environment variables (sandbox/vendors/vercel_env.py); knob `environment`.
        self.environment = ProjectEnv((SANDBOX_PROJECT_ID, SANDBOX_PROJECT_NAME))

    # -- state ---------------------------------------------------------------------------------

    def _add(self, *, bad: bool = False, state: str = "READY", age_s: float = 0) -> SandboxDeployment:
        self._count += 1
        created = int((time.time() - age_s) * 1000)
        newest = max((d.created_ms for d in self.deployments), default=0)
        deployment = SandboxDeployment(_uid(self._count), max(created, newest + 1), state, bad)
        self.deployments.append(deployment)
        return deployment

    def reset_deployments(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self.deployments = []
        for age_h in (72, 48, 24):
            self._add(age_s=age_h * 3600).aliased = True
        self.current = self.deployments[-1].uid
        self.knobs.promotions = []

    def _by_id_or_url(self, id_or_url: str) -> SandboxDeployment | None:
        if id_or_url == PRODUCTION_DOMAIN:
            id_or_url = self.current
        return next((d for d in self.deployments if id_or_url in (d.uid, d.url)), None)

    def current_deployment(self) -> SandboxDeployment:
        found = self._by_id_or_url(self.current)
        assert found is not None
        return found

    def _make_current(self, uid: str) -> None:
        self._pending = None
        self.current = uid
        deployment = self._by_id_or_url(uid)
        if deployment is not None:
            deployment.aliased = True

    # -- the frontend ----------------------------------------------------------------------------

    def fronting(self, page: Any) -> Any:
        """The frontend's service: the page while the current deployment is good, a 500 when bad."""

        async def serve(request: Request, fault: Fault) -> Response:
            if self.current_deployment().bad:
                response = Response.text(BAD_PAGE, 500)
                response.headers["x-vercel-error"] = "FUNCTION_INVOCATION_FAILED"
                return response
            return await page(request, fault)

        return serve

    # -- the API -------------------------------------------------------------------------------

    async def __call__(self, request: Request, fault: Fault) -> Response:
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and parts == ["api", "v2", "status.json"]:
            return Response.json({
                "page": {"id": "vercelsandbox", "name": "Vercel", "url": "https://www.vercel-status.com",
                         "time_zone": "Etc/UTC", "updated_at": "2026-01-01T00:00:00.000Z"},
                "status": {"indicator": self.knobs.indicator, "description": self.knobs.description},
            })
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error("forbidden", "Not authorized", 403)
        team = request.query.get("teamId", [None])[0]
        if team is not None and team != SANDBOX_TEAM_ID:
            return _error("forbidden", "Not authorized", 403)
        if self.knobs.rate_limited > 0:
            self.knobs.rate_limited -= 1
            reset_ms = int((time.time() + RATE_LIMIT_RESET_S) * 1000)
            return _error("rate_limited", f"The rate limit of 100 exceeded for '{parts[-1]}'. "
                          f"Try again in {RATE_LIMIT_RESET_S} seconds", 429,
                          limit={"remaining": 0, "reset": reset_ms // 1000, "resetMs": reset_ms, "total": 100})
        env_answer = await self.environment.handle(request, parts)
        if env_answer is not None:
            return env_answer
        if request.method == "GET" and parts == ["v6", "deployments"]:
            return self._list(request)
        if request.method == "GET" and len(parts) == 3 and parts[:2] == ["v13", "deployments"]:
            deployment = self._by_id_or_url(parts[2])
            if deployment is None:
                return _error("not_found", f"Could not find the deployment: {parts[2]}", 404)
            return Response.json(deployment.single(deployment.uid == self.current))
        if request.method == "POST" and len(parts) == 5 and parts[:2] == ["v10", "projects"] and parts[3] == "promote":
            return self._promote(parts[2], parts[4])
        return _error("method_unknown" if request.method not in ("GET", "POST") else "not_found",
                      f"Could not find the route: {request.method} {request.path}", 404)

    def _project_matches(self, project: str | None) -> bool:
        return project in (SANDBOX_PROJECT_ID, SANDBOX_PROJECT_NAME)

    def _list(self, request: Request) -> Response:
        q = {k: v[0] for k, v in request.query.items()}
        if "projectId" in q and not self._project_matches(q["projectId"]):
            return _error("not_found", f"Could not find the project: {q['projectId']}", 404)
        try:
            limit = int(q.get("limit", "20"))
            until = int(q["until"]) if "until" in q else None
        except ValueError:
            return _error("bad_request", "Invalid query: limit and until take numbers", 400)
        states = set(q["state"].split(",")) if q.get("state") else set(STATES)
        if not states <= set(STATES) or not 1 <= limit <= 100:
            return _error("bad_request", "Invalid query: state or limit", 400)
        target = q.get("target")
        chosen = [d for d in sorted(self.deployments, key=lambda d: d.created_ms, reverse=True)
                  if d.state in states and (target in (None, "production"))
                  and (until is None or d.created_ms < until)]
        page = chosen[:limit]
        more = len(chosen) > limit
        return Response.json({
            "pagination": {"count": len(page), "next": page[-1].created_ms if more else None,
                           "prev": page[0].created_ms if page else None},
            "deployments": [d.listed(d.uid == self.current) for d in page],
        })

    def _promote(self, project: str, uid: str) -> Response:
        if not self._project_matches(project):
            return _error("not_found", f"Could not find the project: {project}", 404)
        deployment = self._by_id_or_url(uid)
        if deployment is None or not uid.startswith("dpl_"):
            return _error("not_found", f"Could not find the deployment: {uid}", 404)
        if deployment.state != "READY":
            return _error("bad_request", f"Deployment {uid} is not READY ({deployment.state})", 400)
        self.knobs.promotions.append({"deployment": uid, "received_at": time.time()})
        delay = self.knobs.promote_delay_s
        if delay > 0:
            if self._pending is not None:
                self._pending.cancel()
            self._pending = asyncio.get_running_loop().call_later(delay, self._make_current, uid)
            return Response(202, b"", {})
        self._make_current(uid)
        return Response(201, b"", {})

    # -- knobs ---------------------------------------------------------------------------------

    def _knob_state(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "deployments": [{"id": d.uid, "url": d.url, "state": d.state, "bad": d.bad, "created_ms": d.created_ms,
                             "current": d.uid == self.current} for d in self.deployments],
            "promotions": list(self.knobs.promotions),
        }

    async def control(self, request: Request) -> Response | None:
        what = request.path.strip("/").split("/")[2:]  # after "vendors/vercel"
        try:
            body = request.json() if request.method == "POST" and request.body else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            return Response.json({"error": f"vercel knob: {exc}"}, 400)
        if what == ["deployments"]:
            if request.method == "DELETE":
                self.reset_deployments()
            elif request.method == "POST":
                state = body.get("state", "READY")
                if state not in STATES:
                    return Response.json({"error": f"vercel knob: state is one of {', '.join(STATES)}"}, 400)
                added = self._add(bad=bool(body.get("bad", False)), state=state)
                if body.get("promote", True) and state == "READY":
                    self._make_current(added.uid)
                return Response.json({**self._knob_state(), "added": added.uid})
            return Response.json(self._knob_state())
        if what == ["environment"]:
            return await self.environment.control(request)
        if what == ["status"]:
            if request.method == "DELETE":
                self.knobs.indicator, self.knobs.description = "none", "All Systems Operational"
            elif request.method == "POST":
                indicator = body.get("indicator")
                if indicator not in INDICATORS:
                    return Response.json({"error": f"vercel knob: indicator is one of {', '.join(INDICATORS)}"}, 400)
                self.knobs.indicator = indicator
                self.knobs.description = str(body.get("description") or (
                    "All Systems Operational" if indicator == "none" else f"{indicator.title()} Service Outage"))
            return Response.json({"indicator": self.knobs.indicator, "description": self.knobs.description})
        if what == ["config"]:
            if request.method == "DELETE":
                self.knobs.rate_limited, self.knobs.promote_delay_s = 0, 0.0
            elif request.method == "POST":
                try:
                    self.knobs.rate_limited = int(body.get("rate_limited", self.knobs.rate_limited))
                    self.knobs.promote_delay_s = float(body.get("promote_delay_s", self.knobs.promote_delay_s))
                except (TypeError, ValueError):
                    return Response.json({"error": "vercel knob: rate_limited and promote_delay_s take numbers"}, 400)
            return Response.json({"rate_limited": self.knobs.rate_limited,
                                  "promote_delay_s": self.knobs.promote_delay_s})
        return None


def build(plan: dict[str, Any]) -> VercelDouble:
    return VercelDouble(plan.get("vendor_keys", {}).get("vercel") or SANDBOX_TOKEN)
