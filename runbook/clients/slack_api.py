"""Slack's Web API, the two methods an incident needs: `conversations.create` and `chat.postMessage`.

Shapes from shared/vendors/slack.md: `POST https://slack.com/api/<method>` with
`Authorization: Bearer xoxb-...` and a JSON body; success and failure both come as HTTP 200, the
failure as `{"ok": false, "error": "<code>"}`; a rate limit is HTTP 429 with `Retry-After: <s>`.
A 429 is waited out (once, and only when the wait fits `max_retry_wait_s`); every other failure
raises `SlackApiError` carrying Slack's own code, so a caller can report it rather than guess.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from runbook.clients.http_probe import describe_error

DEFAULT_API_URL = "https://slack.com/api"


class SlackApiError(Exception):
    """A Web API call that did not succeed. `code` is Slack's error code (`invalid_auth`,
    `name_taken`, ...) or one of `ratelimited`, `http_<status>`, `transport`, `bad_response`."""

    def __init__(self, method: str, code: str, detail: str = "", retry_after_s: float | None = None) -> None:
        self.method = method
        self.code = code
        self.retry_after_s = retry_after_s
        super().__init__(f"slack {method}: {code}" + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class Channel:
    id: str | None
    name: str
    created: bool  # False: the name was taken, most likely by an earlier attempt for the same incident


@dataclass(frozen=True)
class Posted:
    channel: str
    ts: str


@dataclass(frozen=True)
class SlackApi:
    """One workspace's Web API as seen with one bot token. The token is resolved by the caller."""

    client: httpx.AsyncClient
    token: SecretStr
    api_url: str = DEFAULT_API_URL
    timeout_s: float = 10
    max_retry_wait_s: float = 30

    async def call(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The method's answer when `ok` is true; SlackApiError otherwise."""
        url = f"{self.api_url.rstrip('/')}/{method}"
        headers = {"Authorization": f"Bearer {self.token.get_secret_value()}"}
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(self.timeout_s):
                    response = await self.client.post(url, json=payload, headers=headers,
                                                      timeout=httpx.Timeout(self.timeout_s))
            except Exception as exc:  # noqa: BLE001 - the request carries the token: describe, never repr
                raise SlackApiError(method, "transport", describe_error(exc).split(" (")[0]) from None
            if response.status_code == 429:
                retry = _seconds(response.headers.get("Retry-After"))
                if attempt == 1 and retry is not None and retry <= self.max_retry_wait_s:
                    await asyncio.sleep(retry)
                    continue
                shown = "?" if retry is None else f"{retry:g}"
                raise SlackApiError(method, "ratelimited", f"HTTP 429, Retry-After {shown} s", retry_after_s=retry)
            if response.status_code != 200:
                raise SlackApiError(method, f"http_{response.status_code}", response.text.strip()[:80])
            try:
                body = response.json()
            except ValueError:
                raise SlackApiError(method, "bad_response", "not JSON") from None
            if not isinstance(body, dict) or not isinstance(body.get("ok"), bool):
                raise SlackApiError(method, "bad_response", "no `ok` field")
            if not body["ok"]:
                error = str(body.get("error") or "unknown_error")
                needed = f"needed {body['needed']}" if body.get("needed") else ""
                raise SlackApiError(method, error, needed)
            return body
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def create_channel(self, name: str, *, is_private: bool = False) -> Channel:
        """A new channel, or the existing one of that name (`name_taken`), so that a re-run for the
        same incident posts into the channel the first attempt made instead of failing."""
        try:
            body = await self.call("conversations.create", {"name": name, "is_private": is_private})
        except SlackApiError as exc:
            if exc.code == "name_taken":
                return Channel(None, name, created=False)
            raise
        channel = body.get("channel")
        if not isinstance(channel, dict) or not channel.get("id"):
            raise SlackApiError("conversations.create", "bad_response", "no channel.id in the answer")
        return Channel(str(channel["id"]), str(channel.get("name") or name), created=True)

    async def post_message(self, channel: str, text: str) -> Posted:
        """Post `text` to a channel given by id or name; the answer's `ts` proves it was stored."""
        body = await self.call("chat.postMessage", {"channel": channel, "text": text})
        ts = body.get("ts")
        if not isinstance(ts, str) or not ts:
            raise SlackApiError("chat.postMessage", "bad_response", "no ts in the answer")
        return Posted(str(body.get("channel") or channel), ts)


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
