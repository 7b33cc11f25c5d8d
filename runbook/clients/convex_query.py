"""Run a Convex function (query, or mutation) through the deployment's documented HTTP API.

`POST <deployment>/api/query` (or `/api/mutation`) with `{"path": "module:function", "args": {...}, "format": "json"}`
answers `{"status": "success", "value": ...}` or `{"status": "error", "errorMessage": ...}`
(shared/vendors/convex.md section 1; the official client also treats HTTP 560 as "the function
threw"). Every way of not getting a value raises `QueryFailed` with a reason fit for a report.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from runbook.clients.http_probe import BodyTooLarge, describe_error, read_limited

MAX_BODY_BYTES = 4 * 1024 * 1024


class QueryFailed(Exception):
    """No value came back; the message says why (no secret in it)."""


async def query(
    client: httpx.AsyncClient,
    deployment_url: str,
    path: str,
    args: dict[str, Any],
    timeout_s: float,
    deploy_key: SecretStr | None = None,
    kind: Literal["query", "mutation"] = "query",
) -> Any:
    """The function's value, or QueryFailed. One deadline covers connecting, waiting and reading."""
    headers = {"Authorization": f"Convex {deploy_key.get_secret_value()}"} if deploy_key else {}
    body = {"path": path, "args": args, "format": "json"}
    url = deployment_url.rstrip("/") + f"/api/{kind}"
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", url, json=body, headers=headers,
                                     timeout=httpx.Timeout(timeout_s)) as response:
                raw = await read_limited(response, MAX_BODY_BYTES)
    except BodyTooLarge as exc:
        raise QueryFailed(f"{path}: {exc}") from None
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        raise QueryFailed(f"{path}: {describe_error(exc)}") from None
    status = response.status_code
    try:
        payload = json.loads(raw)
    except ValueError:
        raise QueryFailed(f"{path}: HTTP {status}, body is not JSON") from None
    if not isinstance(payload, dict) or "status" not in payload:
        raise QueryFailed(f"{path}: HTTP {status}, body is not a Convex answer")
    if payload["status"] != "success":
        message = payload.get("errorMessage") or "no errorMessage"
        raise QueryFailed(f"{path}: HTTP {status}: {str(message)[:300]}")
    if status != 200:
        raise QueryFailed(f"{path}: HTTP {status} with a success body")
    if "value" not in payload:
        raise QueryFailed(f"{path}: success without a value")
    return payload["value"]
