"""Slack incoming webhooks: one POST of text + blocks; errors are plain-text strings in the body."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from runbook.clients.http_probe import describe_error


@dataclass(frozen=True)
class Delivery:
    ok: bool
    detail: str


async def post_webhook(
    client: httpx.AsyncClient,
    webhook_url: SecretStr,
    text: str,
    blocks: list[dict[str, Any]] | None = None,
    *,
    timeout_s: float,
) -> Delivery:
    payload: dict[str, Any] = {"text": text}
    if blocks:
        payload["blocks"] = blocks
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(
                webhook_url.get_secret_value(), json=payload, timeout=httpx.Timeout(timeout_s)
            )
    except Exception as exc:  # noqa: BLE001 - the URL is a secret: describe, never repr, the error
        return Delivery(False, f"slack webhook: {describe_error(exc).split(' (')[0]}")
    if response.status_code == 200:
        return Delivery(True, "slack: delivered")
    if response.status_code == 429:
        retry = response.headers.get("Retry-After", "?")
        return Delivery(False, f"slack: rate limited (HTTP 429, Retry-After {retry}s)")
    reason = response.text.strip()[:80] or "no reason given"
    return Delivery(False, f"slack: HTTP {response.status_code} {reason}")
