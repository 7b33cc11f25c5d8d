"""Social API doubles: X (Twitter) API v2 `GET /2/users/me` and Discord `GET /api/v10/users/@me`,
each with a rate-limit window reported in the vendor's documented headers.

Shapes from shared/vendors/x-twitter.md and shared/vendors/discord.md.
- X: `Authorization: Bearer <user token>`; 200 `{"data": {"id", "name", "username"}}` (the
  default User fields are unconfirmed there); headers `x-rate-limit-limit`, `-remaining`,
  `-reset` (epoch seconds) on every answer; 429 with the documented body
  `{"errors": [{"code": 88, "message": "Rate limit exceeded"}]}` and no Retry-After.
  401 for a wrong token: unconfirmed; per the note's suggestion, an RFC-7807 problem object.
- Discord: `Authorization: Bot <token>` (unconfirmed there); headers `X-RateLimit-Limit`,
  `-Remaining`, `-Reset` (epoch, decimals), `-Reset-After` (decimals), `-Bucket`; a per-route 429
  adds `Retry-After` and `X-RateLimit-Scope: user` with body `{"message", "retry_after",
  "global": false}`; the global 429 has only `Retry-After`, `X-RateLimit-Global: true`,
  `X-RateLimit-Scope: global` and `"global": true`. Unconfirmed there: the 200 body of
  `/users/@me` (served as a minimal user object `{"id", "username", "bot"}`) and the 401 body
  (served as `{"message": "401: Unauthorized", "code": 0}`).

The window behaves like the vendors': every authenticated call spends one request, a call with
none left gets the 429, and the window refills when its reset time passes.

Knobs (control port, `/vendors/x-api/ratelimit` and `/vendors/discord/ratelimit`):
- `GET` the window; `DELETE` restores the defaults;
- `POST {"limit": 900, "remaining": 5, "reset_in_s": 600}` (or `"reset": <epoch s>`; also
  `window_s`, the length of the next windows). Discord also takes `"global": true|false` (answer
  the global 429) and `"bucket"`.
"""

from __future__ import annotations

import math
import time
from typing import Any

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response

X_SANDBOX_TOKEN = "x-sandbox-user-token"  # noqa: S105 - a sandbox-only value, not a credential
DISCORD_SANDBOX_TOKEN = "discord-sandbox-bot-token"  # noqa: S105 - sandbox-only
# An incoming webhook of the status channel: `POST /api/v10/webhooks/{id}/{token}` needs no other auth.
DISCORD_WEBHOOK_ID, DISCORD_WEBHOOK_TOKEN = "1190000000000000077", "discord-sandbox-webhook-token"


class Window:
    def __init__(self, limit: int, window_s: float) -> None:
        self.defaults = (limit, window_s)
        self.reset(time.time())

    def reset(self, now: float) -> None:
        self.limit, self.window_s = self.defaults
        self.remaining = self.limit
        self.reset_at = now + self.window_s

    def roll(self, now: float) -> None:
        if now >= self.reset_at:
            self.remaining = self.limit
            self.reset_at = now + self.window_s

    def take(self, now: float) -> bool:
        """Spend one request; False when none is left in the window."""
        self.roll(now)
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    def state(self, now: float) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "remaining": self.remaining,
            "reset": self.reset_at,
            "reset_in_s": round(max(self.reset_at - now, 0.0), 3),
            "window_s": self.window_s,
        }

    def update(self, knobs: dict[str, Any], now: float) -> None:
        """Validate every knob before changing anything; raises ValueError."""
        for name in ("limit", "remaining"):
            if name in knobs and (isinstance(knobs[name], bool) or not isinstance(knobs[name], int) or knobs[name] < 0):
                raise ValueError(f"{name} must be a whole number >= 0")
        for name in ("reset", "reset_in_s", "window_s"):
            value = knobs.get(name)
            if name in knobs and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ValueError(f"{name} must be a number >= 0")
        limit = knobs.get("limit", self.limit)
        remaining = knobs.get("remaining", min(self.remaining, limit))
        if limit == 0 or remaining > limit:
            raise ValueError("need 0 <= remaining <= limit and limit > 0")
        self.limit, self.remaining = limit, remaining
        self.window_s = knobs.get("window_s", self.window_s)
        if "reset" in knobs:
            self.reset_at = float(knobs["reset"])
        elif "reset_in_s" in knobs:
            self.reset_at = now + float(knobs["reset_in_s"])


def _knobs(request: Request, allowed: set[str]) -> dict[str, Any]:
    update = request.json()
    if not isinstance(update, dict):
        raise ValueError("a JSON object of knobs")
    unknown = set(update) - allowed
    if unknown:
        raise ValueError(f"unknown knobs {sorted(unknown)}; knobs: {sorted(allowed)}")
    return update


WINDOW_KNOBS = {"limit", "remaining", "reset", "reset_in_s", "window_s"}


class XApi:
    """X API v2, user context. Default window: 900 requests per 15 minutes (the docs' example)."""

    def __init__(self, token: str = X_SANDBOX_TOKEN) -> None:
        self.token = token
        self.window = Window(900, 900.0)
        self.user = {"id": "1790000000000000001", "name": "TokenForge Sandbox", "username": "tokenforge_sandbox"}

    def _headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(self.window.limit),
            "x-rate-limit-remaining": str(self.window.remaining),
            "x-rate-limit-reset": str(math.ceil(self.window.reset_at)),
        }

    async def __call__(self, request: Request, fault: Fault) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Response.json(
                {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}, 401
            )
        if request.method != "GET" or request.path != "/2/users/me":
            return Response.json(
                {"title": "Not Found Error", "type": "about:blank", "status": 404, "detail": "Not Found"}, 404
            )
        if not self.window.take(time.time()):
            return Response.json(
                {"errors": [{"code": 88, "message": "Rate limit exceeded"}]}, 429, headers=self._headers()
            )
        return Response.json({"data": self.user}, headers=self._headers())

    async def control(self, request: Request) -> Response | None:
        if request.path != "/vendors/x-api/ratelimit":
            return None
        now = time.time()
        if request.method == "DELETE":
            self.window.reset(now)
        elif request.method == "POST":
            try:
                self.window.update(_knobs(request, WINDOW_KNOBS), now)
            except ValueError as exc:
                return Response.json({"error": str(exc)}, 400)
        return Response.json(self.window.state(now))


class DiscordApi:
    """Discord REST v10 as a bot. Default window: 30 requests per 10 seconds (a sandbox choice:
    Discord says not to hard-code per-route limits, and the docs give none for this route)."""

    def __init__(self, token: str = DISCORD_SANDBOX_TOKEN) -> None:
        self.token = token
        self.window = Window(30, 10.0)
        self.bucket = "sandbox-users-me"
        self.global_limited = False
        self.global_retry_after = 0.5
        self.user = {"id": "1190000000000000001", "username": "tokenforge-sandbox-bot", "bot": True}
        self.webhook_messages: list[dict[str, Any]] = []

    def _headers(self, now: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.window.limit),
            "X-RateLimit-Remaining": str(self.window.remaining),
            "X-RateLimit-Reset": f"{self.window.reset_at:.3f}",
            "X-RateLimit-Reset-After": f"{max(self.window.reset_at - now, 0.0):.3f}",
            "X-RateLimit-Bucket": self.bucket,
        }

    def _execute_webhook(self, request: Request, parts: list[str]) -> Response:
        """Execute Webhook: JSON `{"content": ...}`; with `?wait=true` the answer is the created
        message, otherwise 204 (discord.com/developers/docs/resources/webhook#execute-webhook).
        An unknown webhook answers 404 "Unknown Webhook" with code 10015."""
        if request.method != "POST" or parts != [DISCORD_WEBHOOK_ID, DISCORD_WEBHOOK_TOKEN]:
            return Response.json({"message": "Unknown Webhook", "code": 10015}, 404)
        try:
            content = request.json().get("content")
        except (ValueError, AttributeError):
            content = None
        if not isinstance(content, str) or not 1 <= len(content) <= 2000:
            return Response.json({"message": "Cannot send an empty message", "code": 50006}, 400)
        message = {"id": str(1190000000000100000 + len(self.webhook_messages)), "type": 0, "content": content,
                   "channel_id": "1190000000000000042", "webhook_id": DISCORD_WEBHOOK_ID,
                   "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}
        self.webhook_messages.append(message)
        if request.query.get("wait", [""])[0].lower() == "true":
            return Response.json(message)
        return Response(204)

    async def __call__(self, request: Request, fault: Fault) -> Response:
        if request.path.startswith("/api/v10/webhooks/"):
            return self._execute_webhook(request, request.path.split("/")[4:])
        if request.headers.get("authorization") != f"Bot {self.token}":
            return Response.json({"message": "401: Unauthorized", "code": 0}, 401)
        if request.method != "GET" or request.path != "/api/v10/users/@me":
            return Response.json({"message": "404: Not Found", "code": 0}, 404)
        now = time.time()
        if self.global_limited:
            return Response.json(
                {"message": "You are being rate limited.", "retry_after": self.global_retry_after, "global": True},
                429,
                headers={
                    "Retry-After": str(math.ceil(self.global_retry_after)),
                    "X-RateLimit-Global": "true",
                    "X-RateLimit-Scope": "global",
                },
            )
        if not self.window.take(now):
            retry_after = round(max(self.window.reset_at - now, 0.0), 3)
            return Response.json(
                {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
                429,
                headers={**self._headers(now), "Retry-After": str(math.ceil(retry_after)),
                         "X-RateLimit-Scope": "user"},
            )
        return Response.json(self.user, headers=self._headers(now))

    async def control(self, request: Request) -> Response | None:
        if request.path == "/vendors/discord/webhook":
            if request.method == "DELETE":
                cleared = len(self.webhook_messages)
                self.webhook_messages.clear()
                return Response.json({"cleared": cleared})
            return Response.json(self.webhook_messages)
        if request.path != "/vendors/discord/ratelimit":
            return None
        now = time.time()
        if request.method == "DELETE":
            self.window.reset(now)
            self.global_limited = False
        elif request.method == "POST":
            try:
                knobs = _knobs(request, WINDOW_KNOBS | {"global", "bucket"})
                if "global" in knobs and not isinstance(knobs["global"], bool):
                    raise ValueError("global must be true or false")
                if "bucket" in knobs and not isinstance(knobs["bucket"], str):
                    raise ValueError("bucket must be a string")
                self.window.update({k: v for k, v in knobs.items() if k in WINDOW_KNOBS}, now)
            except ValueError as exc:
                return Response.json({"error": str(exc)}, 400)
            self.global_limited = knobs.get("global", self.global_limited)
            self.bucket = knobs.get("bucket", self.bucket)
        return Response.json({**self.window.state(now), "global": self.global_limited, "bucket": self.bucket})


def build_x(plan: dict[str, Any]) -> XApi:
    return XApi(plan.get("vendor_keys", {}).get("x-api") or X_SANDBOX_TOKEN)


def build_discord(plan: dict[str, Any]) -> DiscordApi:
    return DiscordApi(plan.get("vendor_keys", {}).get("discord") or DISCORD_SANDBOX_TOKEN)
