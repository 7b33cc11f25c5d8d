"""Vercel access-token API double, on its own sandbox port (the deployments double is another service).

Follows the documented Authentication endpoints (vercel.com/docs/rest-api/authentication/...):
- `POST /v3/user/tokens` `{"name", "expiresAt"?}` -> 200 `{"token": {...}, "bearerToken": "..."}`;
- `GET /v5/user/tokens/{tokenId}`, `tokenId` = an id or `current` (the token the request is
  authenticated with) -> `{"token": {...}}`, 404 when there is no such token;
- `DELETE /v3/user/tokens/{tokenId}` (or `current`) -> `{"tokenId": "..."}`, 404 when there is none;
- `GET /v6/user/tokens` -> `{"tokens": [...], "pagination": {"count", "next": null, "prev": null}}`.
Token metadata carries the documented required fields (id, name, type, activeAt, createdAt) and
expiresAt when set. Every call needs `Authorization: Bearer <a live token>`; otherwise 403 with the
error envelope of shared/vendors/vercel.md section 5 (`forbidden`). Assumptions where the docs
are silent: a 404 body `{"error": {"code": "not_found", ...}}`; a deleted token answers as absent.

Two tokens exist at start: an admin token (`SANDBOX_ADMIN_TOKEN`, what the rotation manages keys
with) and the service's live key (`SANDBOX_LIVE_TOKEN`, created 40 days ago, so a rotation is due).

Knobs, on the hub's control port:
- `GET /vendors/vercel-tokens/tokens`: every token ever created, with `active`, its last four
  characters and (for tests) whether it authenticates; values are never shown. `DELETE` restores the
  two starting tokens.
- `POST /vendors/vercel-tokens/config` `{"reject_new": bool, "fail_delete": [token ids]}`: tokens
  created while `reject_new` is on never authenticate (so "verify new key" fails); a DELETE of an id
  listed in `fail_delete` answers 500 `internal_server_error` and revokes nothing. `GET` shows it,
  `DELETE` restores the defaults.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response

SANDBOX_ADMIN_TOKEN = "tfsbx_admin_Vq3sJ8kL2mN5pR7tW9yB"  # noqa: S105 - the double's fixed token, not a credential
SANDBOX_LIVE_TOKEN = "tfsbx_live_Hc4dF6gJ8kM2nP4qS6uX"  # noqa: S105 - the double's fixed token, not a credential
LIVE_AGE_S = 40 * 86_400


def _error(code: str, message: str, status: int) -> Response:
    return Response.json({"error": {"code": code, "message": message}}, status)


class VercelTokens:
    def __init__(self, admin_token: str = SANDBOX_ADMIN_TOKEN, live_token: str = SANDBOX_LIVE_TOKEN) -> None:
        self.admin_token, self.live_token = admin_token, live_token
        self.reset()
        self.reject_new = False
        self.fail_delete: set[str] = set()

    def reset(self) -> None:
        self.tokens: dict[str, dict[str, Any]] = {}  # id -> metadata + value + active
        now = int(time.time() * 1000)
        self._add("tfops-admin", self.admin_token, now - 2 * LIVE_AGE_S * 1000)
        self._add("tokenforge-api", self.live_token, now - LIVE_AGE_S * 1000)

    def _add(self, name: str, value: str, created_ms: int, expires_ms: int | None = None,
             rejected: bool = False) -> dict[str, Any]:
        token: dict[str, Any] = {"id": secrets.token_hex(32), "name": name, "type": "oauth2-token", "origin": "manual",
                 "activeAt": created_ms, "createdAt": created_ms, "value": value, "active": True,
                 "rejected": rejected}
        if expires_ms is not None:
            token["expiresAt"] = expires_ms
        self.tokens[token["id"]] = token
        return token

    @staticmethod
    def _meta(token: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in token.items() if k not in ("value", "active", "rejected")}

    def _caller(self, request: Request) -> dict[str, Any] | None:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return None
        value = header.removeprefix("Bearer ")
        now = time.time() * 1000
        for t in self.tokens.values():
            if t["value"] == value and t["active"] and not t["rejected"] and t.get("expiresAt", now + 1) > now:
                return t
        return None

    async def __call__(self, request: Request, fault: Fault) -> Response:
        caller = self._caller(request)
        if caller is None:
            return _error("forbidden", "Not authorized", 403)
        parts = request.path.strip("/").split("/")
        if parts[1:3] != ["user", "tokens"]:
            return _error("not_found", "The requested path was not found", 404)
        version, rest = parts[0], parts[3:]
        if request.method == "POST" and version == "v3" and not rest:
            return self._create(request)
        if request.method == "GET" and version == "v6" and not rest:
            tokens = [self._meta(t) for t in self.tokens.values() if t["active"]]
            return Response.json({"tokens": tokens, "pagination": {"count": len(tokens), "next": None, "prev": None}})
        if len(rest) == 1:
            token_id = caller["id"] if rest[0] == "current" else rest[0]
            token = self.tokens.get(token_id)
            if request.method == "GET" and version == "v5":
                if token is None or not token["active"]:
                    return _error("not_found", f"Could not find the token: {token_id}", 404)
                return Response.json({"token": self._meta(token)})
            if request.method == "DELETE" and version == "v3":
                if token_id in self.fail_delete:
                    return _error("internal_server_error", "An unexpected internal error occurred", 500)
                if token is None or not token["active"]:
                    return _error("not_found", f"Could not find the token: {token_id}", 404)
                token["active"] = False
                return Response.json({"tokenId": token_id})
        return _error("method_unknown", "This endpoint only responds to the documented methods", 405)

    def _create(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            return _error("bad_request", "Invalid JSON body", 400)
        name = body.get("name") if isinstance(body, dict) else None
        expires = body.get("expiresAt") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return _error("bad_request", "Invalid request: missing required property `name`", 400)
        if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int | float)):
            return _error("bad_request", "Invalid request: `expiresAt` should be number", 400)
        value = "tfsbx_" + secrets.token_urlsafe(24)
        token = self._add(name, value, int(time.time() * 1000), None if expires is None else int(expires),
                          rejected=self.reject_new)
        return Response.json({"token": self._meta(token), "bearerToken": value})

    async def control(self, request: Request) -> Response | None:
        what = request.path.strip("/").split("/")[2:]  # after "vendors/vercel-tokens"
        if what == ["tokens"]:
            if request.method == "DELETE":
                self.reset()
            return Response.json([{**self._meta(t), "active": t["active"], "last4": t["value"][-4:],
                                   "authenticates": t["active"] and not t["rejected"]} for t in self.tokens.values()])
        if what == ["config"]:
            if request.method == "DELETE":
                self.reject_new, self.fail_delete = False, set()
            elif request.method == "POST":
                try:
                    body = request.json()
                    if not isinstance(body, dict) or not set(body) <= {"reject_new", "fail_delete"}:
                        raise ValueError("knobs: reject_new (true/false), fail_delete (a list of token ids)")
                    reject = body.get("reject_new", self.reject_new)
                    fail = body.get("fail_delete", sorted(self.fail_delete))
                    if not isinstance(reject, bool) or not isinstance(fail, list):
                        raise ValueError("reject_new takes true or false; fail_delete a list of token ids")
                except ValueError as exc:
                    return Response.json({"error": f"vercel-tokens config: {exc}"}, 400)
                self.reject_new, self.fail_delete = reject, {str(i) for i in fail}
            return Response.json({"reject_new": self.reject_new, "fail_delete": sorted(self.fail_delete)})
        return None


def build(plan: dict[str, Any]) -> VercelTokens:
    keys = plan.get("vendor_keys", {})
    return VercelTokens(keys.get("vercel-tokens-admin") or SANDBOX_ADMIN_TOKEN,
                        keys.get("vercel-tokens-live") or SANDBOX_LIVE_TOKEN)
