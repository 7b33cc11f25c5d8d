"""Telegram Bot API double: `sendMessage`, the one method the emergency broadcast uses.

Shapes from shared/vendors/telegram.md: `POST /bot<token>/sendMessage` with a JSON body
(`chat_id`, `text`); the answer is always `{"ok": ...}`: `{"ok": true, "result": <Message>}` or
`{"ok": false, "error_code": N, "description": "..."}`, and flood control is HTTP 429 with
`parameters.retry_after`. The 401 for a wrong token and the 400 "chat not found" texts are
unconfirmed there; this double assumes them.

Knobs, on the hub's control port:
- `GET /vendors/telegram/messages` lists the messages sent; `DELETE` clears them and the flood limit.
- `POST /vendors/telegram/config` `{"flood_retry_after": s | null}` answers sendMessage with 429.
"""

from __future__ import annotations

import time
from typing import Any

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response

SANDBOX_BOT_TOKEN = "123456:telegram-sandbox-bot-token"  # noqa: S105 - the double's fixed token
SANDBOX_CHAT_ID = "@tokenforge_status"
MAX_TEXT = 4096


def _failure(code: int, description: str, **parameters: Any) -> Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return Response.json(body, code)


class TelegramBot:
    def __init__(self, token: str = SANDBOX_BOT_TOKEN, chats: tuple[str, ...] = (SANDBOX_CHAT_ID,)) -> None:
        self.token = token
        self.chats = set(chats)
        self.messages: list[dict[str, Any]] = []
        self.flood_retry_after: int | None = None

    async def __call__(self, request: Request, fault: Fault) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) != 2 or not parts[0].startswith("bot"):
            return _failure(404, "Not Found")
        if parts[0][3:] != self.token:
            return _failure(401, "Unauthorized")
        if parts[1].lower() != "sendmessage":
            return _failure(404, "Not Found: method not found")
        if self.flood_retry_after is not None:
            return _failure(429, f"Too Many Requests: retry after {self.flood_retry_after}",
                            retry_after=self.flood_retry_after)
        try:
            body = request.json()
            chat_id, text = str(body["chat_id"]), body["text"]
        except (ValueError, KeyError, TypeError):
            return _failure(400, "Bad Request: chat_id and text are required")
        if chat_id not in self.chats:
            return _failure(400, "Bad Request: chat not found")
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT:
            return _failure(400, "Bad Request: message text is empty or too long")
        message = {
            "message_id": len(self.messages) + 1,
            "date": int(time.time()),
            "chat": {"id": -1001000000001, "type": "channel", "username": chat_id.lstrip("@")},
            "text": text,
        }
        self.messages.append(message)
        return Response.json({"ok": True, "result": message})

    async def control(self, request: Request) -> Response | None:
        what = request.path.strip("/").split("/")[2:]  # after "vendors/telegram"
        if what == ["messages"]:
            if request.method == "DELETE":
                cleared = len(self.messages)
                self.messages.clear()
                self.flood_retry_after = None
                return Response.json({"cleared": cleared})
            return Response.json(self.messages)
        if what == ["config"]:
            if request.method == "POST":
                try:
                    value = request.json().get("flood_retry_after")
                    if value is not None and (not isinstance(value, int) or value < 1):
                        raise ValueError("flood_retry_after takes a whole number of seconds or null")
                except (ValueError, AttributeError) as exc:
                    return Response.json({"error": f"telegram config: {exc}"}, 400)
                self.flood_retry_after = value
            return Response.json({"flood_retry_after": self.flood_retry_after})
        return None


def build(plan: dict[str, Any]) -> TelegramBot:
    return TelegramBot(plan.get("vendor_keys", {}).get("telegram") or SANDBOX_BOT_TOKEN)
