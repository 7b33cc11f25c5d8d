"""Vercel: production deployments of a project, promoting one, and Vercel's public status page.

Documented calls (shared/vendors/vercel.md):
- `GET /v6/deployments?projectId=&target=production&state=&limit=` lists deployments, newest
  first, with a `pagination.next` timestamp cursor (section 1);
- `GET /v13/deployments/{idOrUrl}` reads one deployment by `dpl_...` id or by hostname (section 2).
  Asked with the production domain's hostname it answers the deployment that domain points at,
  which is how the current production deployment is found (the CLI's `vercel inspect <domain>`
  does the same);
- `POST /v10/projects/{projectId}/promote/{deploymentId}` points production at an existing
  deployment without rebuilding; 201 or 202 (accepted, finishing asynchronously), no body to read
  (section 3);
- every error is `{"error": {"code", "message"}}`; `rate_limited` adds `limit: {remaining, reset,
  resetMs, total}` (section 5). The status carrying it is taken to be 429, and the reset is read
  from the body first, then from `X-RateLimit-Reset` or `Retry-After` when a server sends them;
- `GET https://www.vercel-status.com/api/v2/status.json`, the public Statuspage summary:
  `status.indicator` in none|minor|major|critical (section 6).

Every call runs under one total deadline (`timeout_s`). A call that gets no usable answer raises
`VercelError` (with Vercel's own code and message when it sent an envelope); the token never
appears in a message.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr

from runbook.clients.http_probe import BodyTooLarge, describe_error, read_limited
from runbook.config_types import HttpUrl, SecretRef, Strict
from runbook.secrets import scrub

# A page of deployments is tens of kilobytes; anything near this is not a Vercel answer.
MAX_BODY_BYTES = 4 * 1024 * 1024
STATES = ("BUILDING", "ERROR", "INITIALIZING", "QUEUED", "READY", "CANCELED")
INDICATORS = ("none", "minor", "major", "critical")


class VercelConfig(Strict):
    """The `[vercel]` section: the project whose production deployments the runbook rolls back."""

    api_url: HttpUrl = "https://api.vercel.com"
    token: SecretRef = Field(description="a Vercel access token, sent as `Authorization: Bearer <token>`")
    project_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$", description="the project's id (prj_...) or name")
    team_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,100}$",
                                description="team_... when the project belongs to a team")
    production_domain: str = Field(
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:[0-9]{1,5})?$",
        description="the hostname production traffic reaches (e.g. tokenforge.com); reading it as a "
                    "deployment answers the one currently serving")
    status_url: HttpUrl = Field(default="https://www.vercel-status.com/api/v2/status.json",
                                description="Vercel's public status JSON (Statuspage)")
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10
    max_rate_limit_wait_s: Annotated[float, Field(ge=0, le=300)] = Field(
        default=10, description="a 429 whose reset comes sooner than this is waited out once; a later one fails")
    verify_deadline_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=180, description="how long a rollback waits for production to serve the promoted deployment")
    verify_poll_s: Annotated[float, Field(gt=0, le=60)] = 3


class VercelError(Exception):
    """A Vercel call without a usable answer. `code` is Vercel's error code when it sent one
    (forbidden, not_found, rate_limited, ...), else a short word of ours (timeout, http_5xx, ...)."""

    def __init__(self, what: str, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"Vercel {what}: " + (f"HTTP {status} " if status else "") + f"{code}: {message}")
        self.what = what
        self.code = code
        self.message = message
        self.status = status


class VercelRateLimited(VercelError):
    """HTTP 429 `rate_limited`; `reset_epoch` is when the window reopens, when Vercel said."""

    def __init__(self, what: str, message: str, reset_epoch: float | None) -> None:
        super().__init__(what, "rate_limited", message, 429)
        self.reset_epoch = reset_epoch


@dataclass(frozen=True)
class Deployment:
    """One deployment, from either the list (`uid`) or the single read (`id`)."""

    id: str
    url: str | None
    state: str
    target: str | None
    created_ms: int
    ready_substate: str | None = None
    is_rollback_candidate: bool | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state == "READY"

    def label(self) -> str:
        return f"{self.id} ({self.url or 'no url yet'}, {self.state})"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "state": self.state, "target": self.target,
                "created_ms": self.created_ms, "ready_substate": self.ready_substate}


@dataclass(frozen=True)
class VercelStatus:
    indicator: Literal["none", "minor", "major", "critical"]
    description: str

    @property
    def operational(self) -> bool:
        return self.indicator == "none"


def parse_deployment(item: Any, where: str = "deployment") -> Deployment:
    if not isinstance(item, dict):
        raise ValueError(f"{where} is not an object")
    ident = item.get("uid") or item.get("id")
    if not isinstance(ident, str) or not ident:
        raise ValueError(f"{where} has no uid/id")
    state = item.get("readyState") or item.get("state") or item.get("status")
    if state not in STATES:
        raise ValueError(f"{where}.readyState is not one of {', '.join(STATES)}: {state!r}")
    created = item.get("createdAt", item.get("created"))
    if not isinstance(created, int) or isinstance(created, bool):
        raise ValueError(f"{where}.createdAt is not a millisecond timestamp")
    url = item.get("url")
    if url is not None and not isinstance(url, str):
        raise ValueError(f"{where}.url is not a string")
    meta: dict[str, Any] = item["meta"] if isinstance(item.get("meta"), dict) else {}
    rollback = item.get("isRollbackCandidate")
    return Deployment(ident, url, state, item.get("target"), created, item.get("readySubstate"),
                      rollback if isinstance(rollback, bool) else None, meta)


def parse_deployment_list(body: Any) -> tuple[list[Deployment], int | None]:
    """The list's deployments and the `pagination.next` cursor (None on the last page)."""
    if not isinstance(body, dict) or not isinstance(body.get("deployments"), list):
        raise ValueError("the answer has no 'deployments' list")
    deployments = [parse_deployment(d, f"deployments[{i}]") for i, d in enumerate(body["deployments"])]
    pagination = body.get("pagination")
    nxt = pagination.get("next") if isinstance(pagination, dict) else None
    return deployments, nxt if isinstance(nxt, int) and not isinstance(nxt, bool) else None


def parse_status(body: Any) -> VercelStatus:
    status = body.get("status") if isinstance(body, dict) else None
    if not isinstance(status, dict):
        raise ValueError("the answer has no 'status' object")
    indicator = status.get("indicator")
    if indicator not in INDICATORS:
        raise ValueError(f"status.indicator is not one of {', '.join(INDICATORS)}: {indicator!r}")
    return VercelStatus(indicator, str(status.get("description") or ""))


def error_envelope(body: Any) -> tuple[str, str] | None:
    """Vercel's `{"error": {"code", "message"}}`, or None when the body is not one."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return None
    return error["code"], str(error.get("message") or "")


def rate_limit_reset(body: Any, headers: Mapping[str, str], now: float) -> float | None:
    """When a 429's window reopens (epoch seconds): the body's `limit.resetMs`/`reset`, else the
    `X-RateLimit-Reset` (epoch s) or `Retry-After` (s) headers."""
    error = body.get("error") if isinstance(body, dict) else None
    limit = error.get("limit") if isinstance(error, dict) else None
    if isinstance(limit, dict):
        if isinstance(limit.get("resetMs"), int | float):
            return float(limit["resetMs"]) / 1000
        if isinstance(limit.get("reset"), int | float):
            return float(limit["reset"])
    h = httpx.Headers(headers)
    for name, relative in (("x-ratelimit-reset", False), ("retry-after", True)):
        value = h.get(name)
        try:
            number = float(value) if value is not None else None
        except ValueError:
            number = None
        if number is not None:
            return now + number if relative else number
    return None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


class VercelClient:
    """The calls the runbook needs, on an injected client (its transport decides where they go)."""

    def __init__(self, client: httpx.AsyncClient, config: VercelConfig, token: SecretStr) -> None:
        self._client = client
        self.config = config
        self._token = token

    def _scrub(self, text: str) -> str:
        return scrub(text, [self._token.get_secret_value()])

    def _params(self, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
        params = {k: str(v) for k, v in (extra or {}).items() if v is not None}
        if self.config.team_id:
            params["teamId"] = self.config.team_id
        return params

    async def _send(self, what: str, method: str, url: str, params: Mapping[str, str] | None,
                    auth: bool) -> tuple[int, httpx.Headers, bytes]:
        timeout_s = self.config.timeout_s
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        try:
            async with asyncio.timeout(timeout_s):
                request = self._client.build_request(method, url, params=params, headers=headers,
                                                     timeout=httpx.Timeout(timeout_s))
                response = await self._client.send(request, stream=True)
                try:
                    body = await read_limited(response, MAX_BODY_BYTES)
                finally:
                    await response.aclose()
        except BodyTooLarge as exc:
            raise VercelError(what, "too_large", str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer is the error
            code = "timeout" if "timed out" in describe_error(exc) else "unreachable"
            raise VercelError(what, code, self._scrub(describe_error(exc))) from None
        return response.status_code, response.headers, body

    async def _call(self, what: str, method: str, url: str, params: Mapping[str, str] | None = None,
                    *, auth: bool = True, ok: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        """One call; a 429 whose window reopens within `max_rate_limit_wait_s` is waited out once."""
        for attempt in (1, 2):
            status, headers, raw = await self._send(what, method, url, params, auth)
            if status in ok:
                return status, _json(raw)
            body = _json(raw)
            envelope = error_envelope(body)
            if status == 429 or (envelope and envelope[0] == "rate_limited"):
                now = time.time()
                reset = rate_limit_reset(body, headers, now)
                message = self._scrub(envelope[1] if envelope else "rate limited")
                wait = None if reset is None else max(0.0, reset - now)
                if attempt == 1 and wait is not None and wait <= self.config.max_rate_limit_wait_s:
                    await asyncio.sleep(wait)
                    continue
                when = f"; the window reopens at {time.strftime('%H:%M:%S', time.gmtime(reset))} UTC" if reset else ""
                raise VercelRateLimited(what, message + when, reset)
            if envelope:
                raise VercelError(what, envelope[0], self._scrub(envelope[1]), status)
            code = "http_5xx" if status >= 500 else ("redirect" if 300 <= status < 400 else "http_error")
            text = " ".join(raw[:160].decode("utf-8", "replace").split())
            raise VercelError(what, code, self._scrub(text or "no error envelope in the answer"), status)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _api(self, path: str) -> str:
        return self.config.api_url.rstrip("/") + path

    async def list_production_deployments(self, *, state: str | None = "READY", limit: int = 20,
                                          until_ms: int | None = None) -> list[Deployment]:
        """Production deployments of the project, newest first (one page of at most `limit`)."""
        deployments, _ = await self.list_page(state=state, limit=limit, until_ms=until_ms)
        return deployments

    async def list_page(self, *, state: str | None = "READY", limit: int = 20,
                        until_ms: int | None = None) -> tuple[list[Deployment], int | None]:
        """One page of production deployments and the cursor to pass as `until_ms` for the next."""
        if state is not None and any(s not in STATES for s in state.split(",")):
            raise ValueError(f"state: {state!r} is not a comma list of {', '.join(STATES)}")
        if not 1 <= limit <= 100:
            raise ValueError("limit: between 1 and 100")
        params = self._params({"projectId": self.config.project_id, "target": "production", "state": state,
                               "limit": limit, "until": until_ms})
        _, body = await self._call("list deployments", "GET", self._api("/v6/deployments"), params)
        try:
            deployments, nxt = parse_deployment_list(body)
        except ValueError as exc:
            raise VercelError("list deployments", "malformed", str(exc), 200) from None
        wrong = [d.id for d in deployments if d.target not in (None, "production")]
        if wrong:
            raise VercelError("list deployments", "malformed", f"non-production deployments listed: {wrong}", 200)
        return deployments, nxt

    async def get_deployment(self, id_or_url: str) -> Deployment:
        what = f"get deployment {id_or_url}"
        _, body = await self._call(what, "GET", self._api(f"/v13/deployments/{quote(id_or_url, safe='')}"),
                                   self._params())
        try:
            return parse_deployment(body)
        except ValueError as exc:
            raise VercelError(what, "malformed", str(exc), 200) from None

    async def current_production(self) -> Deployment:
        """The deployment the production domain points at now."""
        return await self.get_deployment(self.config.production_domain)

    async def promote(self, deployment_id: str) -> int:
        """Point production at `deployment_id`; answers 201 (done) or 202 (accepted, finishing).
        The caller verifies by reading `current_production()` until it is that deployment."""
        if not deployment_id.startswith("dpl_"):
            raise ValueError(f"deployment id: {deployment_id!r} is not a dpl_... id")
        path = (f"/v10/projects/{quote(self.config.project_id, safe='')}/promote/"
                f"{quote(deployment_id, safe='')}")
        status, _ = await self._call(f"promote {deployment_id}", "POST", self._api(path), self._params(),
                                     ok=(200, 201, 202))
        return status

    async def status(self) -> VercelStatus:
        """Vercel's own public status page (no token is sent to it)."""
        _, body = await self._call("status page", "GET", self.config.status_url, auth=False)
        try:
            return parse_status(body)
        except ValueError as exc:
            raise VercelError("status page", "malformed", str(exc), 200) from None


def previous_good(deployments: list[Deployment], current: Deployment) -> Deployment | None:
    """The newest READY production deployment created before the current one: what
    `vercel rollback` without an argument returns to."""
    older = [d for d in deployments if d.ready and d.id != current.id and d.created_ms < current.created_ms]
    return max(older, key=lambda d: d.created_ms, default=None)
