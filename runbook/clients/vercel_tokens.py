"""Vercel access tokens through the REST API's documented Authentication endpoints.

Shapes, from vercel.com/docs/rest-api/authentication/{create-an-auth-token, get-auth-token-metadata,
delete-an-authentication-token, list-auth-tokens}:
- `POST /v3/user/tokens` `{"name", "expiresAt"?}` -> `{"token": {id, name, type, activeAt, createdAt,
  expiresAt?, ...}, "bearerToken": "..."}`; the bearer token is shown only in this answer.
- `GET /v5/user/tokens/{tokenId}` -> `{"token": {...}}`; the tokenId `current` names the token the
  request is authenticated with, which is how a key is checked and identified without listing.
- `DELETE /v3/user/tokens/{tokenId}` -> `{"tokenId": "..."}`; 404 when there is no such token.
- `GET /v6/user/tokens` -> `{"tokens": [...], "pagination": {"count", "next", "prev"}}`.
`Authorization: Bearer <token>`; optional `teamId` query. Errors carry the envelope of
shared/vendors/vercel.md section 5 (`{"error": {"code", "message"}}`); a missing or invalid token is
`forbidden` (403; 401 is handled the same way). Assumption, as in vercel.md section 1: the next page
of the list is asked for with `until=<pagination.next>`.

No message raised here ever contains a token value.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from runbook.clients.http_probe import BodyTooLarge, describe_error, read_limited
from runbook.clients.vercel import error_envelope

MAX_BODY_BYTES = 1024 * 1024
MAX_PAGES = 50


class TokenApiError(Exception):
    """The provider did not do what was asked; `status` is None when no answer came at all."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotAuthenticated(TokenApiError):
    """The presented token does not (or no longer) authenticate."""


@dataclass(frozen=True)
class TokenMeta:
    id: str
    name: str
    created_at_ms: int | None = None
    expires_at_ms: int | None = None


@dataclass(frozen=True)
class CreatedToken:
    meta: TokenMeta
    value: SecretStr


def _meta(value: Any) -> TokenMeta:
    if not isinstance(value, dict) or not isinstance(value.get("id"), str) or not value["id"]:
        raise TokenApiError("the answer has no token metadata with an id")
    created, expires = value.get("createdAt"), value.get("expiresAt")
    return TokenMeta(value["id"], str(value.get("name", "")),
                     int(created) if isinstance(created, int | float) else None,
                     int(expires) if isinstance(expires, int | float) else None)


class VercelTokens:
    """One account's tokens. The caller passes the credential of each call: the admin token to
    create, list and delete; the token under test to identify itself."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, timeout_s: float,
                 team_id: str | None = None) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._team = team_id

    async def _call(self, method: str, path: str, token: SecretStr, what: str, *,
                    body: dict[str, Any] | None = None, query: dict[str, Any] | None = None) -> tuple[int, Any]:
        params = {k: v for k, v in {**(query or {}), "teamId": self._team}.items() if v is not None}
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._client.stream(method, self._base + path, json=body, params=params, headers=headers,
                                               timeout=httpx.Timeout(self._timeout_s)) as response:
                    raw = await read_limited(response, MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            raise TokenApiError(f"{what}: {exc}") from None
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            raise TokenApiError(f"{what}: {describe_error(exc)}") from None
        status = response.status_code
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        if status in (401, 403):
            raise NotAuthenticated(f"{what}: HTTP {status} {_error_code(payload)}".rstrip(), status)
        return status, payload

    def _fail(self, what: str, status: int, payload: Any) -> TokenApiError:
        return TokenApiError(f"{what}: HTTP {status} {_error_code(payload)}".rstrip(), status)

    async def create(self, admin: SecretStr, name: str, expires_at_ms: int | None = None) -> CreatedToken:
        body: dict[str, Any] = {"name": name}
        if expires_at_ms is not None:
            body["expiresAt"] = expires_at_ms
        what = "create token"
        status, payload = await self._call("POST", "/v3/user/tokens", admin, what, body=body)
        if status != 200 or not isinstance(payload, dict):
            raise self._fail(what, status, payload)
        value = payload.get("bearerToken")
        if not isinstance(value, str) or not value:
            raise TokenApiError(f"{what}: the answer has no bearerToken", status)
        return CreatedToken(_meta(payload.get("token")), SecretStr(value))

    async def whoami(self, token: SecretStr) -> TokenMeta:
        """The metadata of `token` itself; NotAuthenticated when it is not (or no longer) valid."""
        what = "identify token"
        status, payload = await self._call("GET", "/v5/user/tokens/current", token, what)
        if status != 200 or not isinstance(payload, dict):
            raise self._fail(what, status, payload)
        return _meta(payload.get("token"))

    async def get(self, admin: SecretStr, token_id: str) -> TokenMeta | None:
        """The token's metadata, or None when the provider has no such (active) token."""
        what = f"read token {token_id}"
        status, payload = await self._call("GET", f"/v5/user/tokens/{token_id}", admin, what)
        if status == 404:
            return None
        if status != 200 or not isinstance(payload, dict):
            raise self._fail(what, status, payload)
        return _meta(payload.get("token"))

    async def delete(self, admin: SecretStr, token_id: str) -> bool:
        """True when this call deleted the token, False when it was already gone."""
        what = f"delete token {token_id}"
        status, payload = await self._call("DELETE", f"/v3/user/tokens/{token_id}", admin, what)
        if status == 404:
            return False
        if status != 200:
            raise self._fail(what, status, payload)
        return True

    async def list(self, admin: SecretStr) -> list[TokenMeta]:
        what = "list tokens"
        out: list[TokenMeta] = []
        until: Any = None
        for _ in range(MAX_PAGES):
            status, payload = await self._call("GET", "/v6/user/tokens", admin, what,
                                               query={"until": until} if until is not None else None)
            if status != 200 or not isinstance(payload, dict) or not isinstance(payload.get("tokens"), list):
                raise self._fail(what, status, payload)
            out += [_meta(t) for t in payload["tokens"]]
            pagination = payload.get("pagination")
            until = pagination.get("next") if isinstance(pagination, dict) else None
            if until is None or not payload["tokens"]:
                return out
        raise TokenApiError(f"{what}: more than {MAX_PAGES} pages")


def _error_code(payload: Any) -> str:
    envelope = error_envelope(payload)
    return envelope[0][:60] if envelope else ""
