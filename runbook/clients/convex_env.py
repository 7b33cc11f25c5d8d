"""Convex: a deployment's environment variables, through the Deployment Platform API.

Documented calls (shared/vendors/convex.md section 5; the backend's
`crates/local_backend/src/environment_variables.rs`), both with `Authorization: Convex <deploy key>`:
- `GET <deployment>/api/v1/list_environment_variables` answers
  `{"environmentVariables": {"NAME": "value", ...}}` (the handler's `ListEnvVarsResponse`);
- `POST <deployment>/api/v1/update_environment_variables` with `{"changes": [{"name": "A",
  "value": "1"}, {"name": "B"}]}` sets A and deletes B (a change without `value` deletes), all in
  one transaction; it answers 200 with an empty body. Setting a variable to the value it has is
  harmless, so a repeated restore changes nothing.

Values are secrets: they go out only in the update's body and come back only in the list; no
message raised here holds one (`scrub`), and the deploy key never appears either.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

import httpx
from pydantic import SecretStr

from runbook.clients.http_probe import BodyTooLarge, describe_error, read_limited
from runbook.secrets import scrub

MAX_BODY_BYTES = 1024 * 1024  # a deployment holds at most a few hundred short variables
LIST_PATH = "/api/v1/list_environment_variables"
UPDATE_PATH = "/api/v1/update_environment_variables"


class EnvApiError(Exception):
    """The environment-variable API gave no usable answer; the message holds no value or key."""


def _headers(deploy_key: SecretStr) -> dict[str, str]:
    return {"Authorization": f"Convex {deploy_key.get_secret_value()}", "Content-Type": "application/json"}


async def _call(client: httpx.AsyncClient, method: str, url: str, deploy_key: SecretStr, timeout_s: float,
                body: Mapping[str, object] | None, hide: list[str]) -> tuple[int, bytes]:
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(method, url, headers=_headers(deploy_key), timeout=httpx.Timeout(timeout_s),
                                     content=None if body is None else json.dumps(body).encode()) as response:
                raw = await read_limited(response, MAX_BODY_BYTES)
    except BodyTooLarge as exc:
        raise EnvApiError(f"{url}: {exc}") from None
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        raise EnvApiError(scrub(f"{url}: {describe_error(exc)}", hide)) from None
    if response.status_code != 200:
        text = raw[:200].decode("utf-8", "replace")
        raise EnvApiError(scrub(f"{url}: HTTP {response.status_code}: {text}", hide))
    return response.status_code, raw


async def list_variables(client: httpx.AsyncClient, convex_url: str, deploy_key: SecretStr,
                         timeout_s: float) -> dict[str, str]:
    """Every environment variable of the deployment, name -> value."""
    url = convex_url.rstrip("/") + LIST_PATH
    hide = [deploy_key.get_secret_value()]
    _, raw = await _call(client, "GET", url, deploy_key, timeout_s, None, hide)
    try:
        answer = json.loads(raw)
    except ValueError:
        raise EnvApiError(f"{url}: HTTP 200 without JSON") from None
    variables = answer.get("environmentVariables") if isinstance(answer, dict) else None
    if not isinstance(variables, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                  for k, v in variables.items()):
        raise EnvApiError(f"{url}: HTTP 200 without an environmentVariables object of strings")
    return dict(variables)


async def update_variables(client: httpx.AsyncClient, convex_url: str, deploy_key: SecretStr,
                           changes: Mapping[str, SecretStr | None], timeout_s: float) -> None:
    """Set (a value) or delete (None) each named variable, in one documented update."""
    if not changes:
        return
    url = convex_url.rstrip("/") + UPDATE_PATH
    body = {"changes": [{"name": name} if value is None else {"name": name, "value": value.get_secret_value()}
                        for name, value in sorted(changes.items())]}
    hide = [deploy_key.get_secret_value(), *(v.get_secret_value() for v in changes.values() if v is not None)]
    await _call(client, "POST", url, deploy_key, timeout_s, body, hide)


class ConvexEnv:
    """One deployment's variables as a recovery reads and sets them, on an injected client."""

    def __init__(self, client: httpx.AsyncClient, convex_url: str, deploy_key: SecretStr, timeout_s: float) -> None:
        self._client, self.convex_url, self._key, self.timeout_s = client, convex_url, deploy_key, timeout_s

    async def read(self) -> dict[str, str | None]:
        return dict(await list_variables(self._client, self.convex_url, self._key, self.timeout_s))

    async def write(self, values: Mapping[str, SecretStr]) -> None:
        await update_variables(self._client, self.convex_url, self._key, values, self.timeout_s)
