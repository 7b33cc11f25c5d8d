"""Broadcast channels beyond Slack: a Telegram channel (Bot API `sendMessage`) and a Discord channel
(an incoming webhook). Both credentials sit in the URL, so no error text may carry the URL.

Shapes: shared/vendors/telegram.md (the `ok` envelope, `parameters.retry_after` on 429) and
Discord's Execute Webhook (`POST /webhooks/{id}/{token}?wait=true` answers the created message).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from pydantic import SecretStr

from runbook.clients.http_probe import describe_error
from runbook.clients.ratelimits import scrub
from runbook.clients.slack import Delivery


async def _post(client: httpx.AsyncClient, url: str, payload: dict[str, Any], timeout_s: float,
                secret: SecretStr) -> httpx.Response | str:
    try:
        async with asyncio.timeout(timeout_s):
            return await client.post(url, json=payload, timeout=httpx.Timeout(timeout_s))
    except Exception as exc:  # noqa: BLE001 - httpx puts the URL, and so the token, in some messages
        return scrub(describe_error(exc).split(" (")[0], secret)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def send_telegram(client: httpx.AsyncClient, base_url: str, bot_token: SecretStr, chat_id: str, text: str,
                        *, timeout_s: float) -> Delivery:
    url = f"{base_url.rstrip('/')}/bot{bot_token.get_secret_value()}/sendMessage"
    answer = await _post(client, url, {"chat_id": chat_id, "text": text[:4096],
                                       "link_preview_options": {"is_disabled": True}}, timeout_s, bot_token)
    if isinstance(answer, str):
        return Delivery(False, f"telegram: {answer}")
    body = _json(answer)
    if answer.status_code == 200 and isinstance(body, dict) and body.get("ok") is True:
        message_id = (body.get("result") or {}).get("message_id")
        return Delivery(True, f"telegram: delivered to {chat_id} (message {message_id})")
    if not isinstance(body, dict):
        return Delivery(False, f"telegram: HTTP {answer.status_code} without the Bot API's JSON answer")
    detail = scrub(str(body.get("description") or "no description"), bot_token)
    retry = (body.get("parameters") or {}).get("retry_after")
    if answer.status_code == 429 or body.get("error_code") == 429:
        return Delivery(False, f"telegram: rate limited, retry after {retry} s ({detail})")
    return Delivery(False, f"telegram: HTTP {answer.status_code}: {detail}")


async def send_discord(client: httpx.AsyncClient, webhook_url: SecretStr, text: str, *, timeout_s: float) -> Delivery:
    # wait=true: the answer is the message Discord saved, so delivery is confirmed, not assumed.
    url = webhook_url.get_secret_value().split("?")[0] + "?wait=true"
    answer = await _post(client, url, {"content": text[:2000], "allowed_mentions": {"parse": []}}, timeout_s,
                         webhook_url)
    if isinstance(answer, str):
        return Delivery(False, f"discord: {answer}")
    body = _json(answer)
    if answer.status_code == 200 and isinstance(body, dict) and body.get("id"):
        return Delivery(True, f"discord: delivered (message {body['id']})")
    if answer.status_code == 429:
        retry = body.get("retry_after") if isinstance(body, dict) else answer.headers.get("retry-after")
        return Delivery(False, f"discord: rate limited, retry after {retry} s")
    message = body.get("message") if isinstance(body, dict) else None
    return Delivery(False, f"discord: HTTP {answer.status_code}" + (f": {scrub(str(message), webhook_url)}"
                                                                     if message else ""))
