"""Vercel: a project's environment variables (what `.env.production` holds), through the REST API.

Documented calls (vercel.com/docs/rest-api, "Projects"), `Authorization: Bearer <token>`, the team
as `teamId` on every call:
- `GET /v10/projects/{idOrName}/env?decrypt=true` ("Retrieve the environment variables of a
  project by id or name") answers `{"envs": [{"id", "key", "value", "type", "target": [...],
  "decrypted", ...}]}`;
- `GET /v1/projects/{idOrName}/env/{id}` ("Retrieve the decrypted value of an environment variable
  of a project by id") answers one `{"id", "key", "value", "type", "target", "decrypted"}`: asked
  when the list did not carry a decrypted value;
- `POST /v10/projects/{idOrName}/env?upsert=true` ("Create one or more environment variables")
  with a list of `{"key", "value", "type", "target"}`; with `upsert=true` an existing variable's
  value is updated instead of refused, so a repeated restore changes nothing. Answers 201 with
  `{"created": ..., "failed": [{"error": {"code", "message", "key"?}}]}`;
- errors are Vercel's `{"error": {"code", "message"}}` envelope (shared/vendors/vercel.md section 5).

Variables are written as `type: "encrypted"` (readable back, so the restore can be verified) for
one target (`production` by default). A Vercel variable takes effect in the next deployment built.
Values never appear in a message raised here, nor does the token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from runbook.clients.http_probe import BodyTooLarge, describe_error, read_limited
from runbook.clients.vercel import VercelConfig, VercelError, error_envelope
from runbook.secrets import scrub

MAX_BODY_BYTES = 2 * 1024 * 1024


class VercelEnv:
    """A project's variables for one target, on an injected client."""

    def __init__(self, client: httpx.AsyncClient, config: VercelConfig, token: SecretStr,
                 target: str = "production") -> None:
        self._client = client
        self.config = config
        self._token = token
        self.target = target

    def _project(self) -> str:
        return self.config.api_url.rstrip("/") + "/v10/projects/" + quote(self.config.project_id, safe="")

    async def _send(self, what: str, method: str, url: str, params: dict[str, str], body: Any,
                    hide: list[str]) -> Any:
        if self.config.team_id:
            params = {**params, "teamId": self.config.team_id}
        hide = [self._token.get_secret_value(), *hide]
        headers = {"Accept": "application/json", "Authorization": f"Bearer {self._token.get_secret_value()}"}
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body).encode()
        timeout_s = self.config.timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                async with self._client.stream(method, url, params=params, headers=headers, content=content,
                                               timeout=httpx.Timeout(timeout_s)) as response:
                    raw = await read_limited(response, MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            raise VercelError(what, "too_large", str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer is the error
            code = "timeout" if "timed out" in describe_error(exc) else "unreachable"
            raise VercelError(what, code, scrub(describe_error(exc), hide)) from None
        try:
            answer = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            answer = None
        if response.status_code not in (200, 201):
            code, message = error_envelope(answer) or (f"http_{response.status_code}", "")
            raise VercelError(what, code, scrub(message, hide), response.status_code)
        return answer

    async def read(self) -> dict[str, str | None]:
        """The target's variables, name -> value (None: present, but its value cannot be read back,
        e.g. a `sensitive` variable)."""
        answer = await self._send("list environment variables", "GET", self._project() + "/env",
                                  {"decrypt": "true"}, None, [])
        envs = answer.get("envs") if isinstance(answer, dict) else None
        if not isinstance(envs, list):
            raise VercelError("list environment variables", "bad_answer", "no 'envs' list in the answer")
        out: dict[str, str | None] = {}
        for entry in envs:
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                continue
            targets = entry.get("target")
            if self.target not in (targets if isinstance(targets, list) else [targets]):
                continue
            value = entry.get("value") if entry.get("decrypted") is True else None
            if value is None and isinstance(entry.get("id"), str):
                one = await self._send(
                    "read an environment variable", "GET", self.config.api_url.rstrip("/") + "/v1/projects/"
                    + quote(self.config.project_id, safe="") + "/env/" + quote(entry["id"], safe=""), {}, None, [])
                if isinstance(one, dict) and one.get("decrypted") is True and isinstance(one.get("value"), str):
                    value = one["value"]
            out[entry["key"]] = value if isinstance(value, str) else None
        return out

    async def write(self, values: Mapping[str, SecretStr]) -> None:
        """Create or update each variable for the target, in one documented upsert."""
        if not values:
            return
        secrets = [v.get_secret_value() for v in values.values()]
        body = [{"key": k, "value": v.get_secret_value(), "type": "encrypted", "target": [self.target]}
                for k, v in sorted(values.items())]
        answer = await self._send("set environment variables", "POST", self._project() + "/env",
                                  {"upsert": "true"}, body, secrets)
        failed = answer.get("failed") if isinstance(answer, dict) else None
        if failed:
            keys = [str((f.get("error") or {}).get("key") or "?") for f in failed if isinstance(f, dict)]
            raise VercelError("set environment variables", "failed",
                              f"{len(failed)} not set ({', '.join(keys)})")
