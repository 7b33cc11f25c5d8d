"""Slack Web API double: `conversations.create` and `chat.postMessage` for one workspace.

Shapes from shared/vendors/slack.md (sections 2-5):
- `POST /api/<method>`, the bot token as `Authorization: Bearer xoxb-...` or a `token` field; the
  body JSON or form-encoded.
- Every answer that reaches the method is HTTP 200: `{"ok": true, ...}` or
  `{"ok": false, "error": "<code>"}`. A wrong or missing token answers `invalid_auth` (the note
  confirms `invalid_auth`; `not_authed` is unconfirmed there, so it is not used).
- `conversations.create` (`name`, `is_private`): the channel object of the note's example
  (id, name, is_channel, is_group, is_im, created, creator, is_archived, is_general, unlinked,
  name_normalized); errors `name_taken`, `invalid_name_required`, `invalid_name_maxlength`
  (over 80), `invalid_name_specials` (anything but lowercase letters, digits, `-` and `_`).
- `chat.postMessage` (`channel` by id or name, `text` or `blocks`): `{"ok", "channel", "ts",
  "message": {"type", "text", "ts"}}`; errors `channel_not_found`, `no_text`, `msg_too_long`.
- Over the rate limit (by knob): HTTP 429 with `Retry-After: <s>`; the body is unconfirmed in the
  note, so the double sends its expected `{"ok": false, "error": "ratelimited"}`.

Knobs, on the hub's control port:
- `GET /vendors/slack-api/channels`: every channel with its messages; `GET .../messages`: every
  message posted, in order; `GET .../calls`: every call received (method, arguments, answer).
  `DELETE` on any of them empties the workspace.
- `POST /vendors/slack-api/config` `{"fail": "<error code>" | null, "ratelimit": <n calls> | 0,
  "retry_after_s": <s>}`: answer every call with that error (e.g. `account_inactive`), or the
  next n calls with a 429; `GET` shows it; `DELETE` restores the default (no failure).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response

SANDBOX_BOT_TOKEN = "xoxb-sandbox-incident-bot"  # noqa: S105 - the double's fixed token, not a credential
BOT_USER = "U0SANDBOXBOT"
NAME = re.compile(r"^[a-z0-9_-]+$")
MAX_NAME = 80
MAX_TEXT = 40_000


def _fail(code: str) -> Response:
    return Response.json({"ok": False, "error": code})


class SlackWorkspace:
    def __init__(self, token: str = SANDBOX_BOT_TOKEN) -> None:
        self.token = token
        self.channels: dict[str, dict[str, Any]] = {}  # by id
        self.messages: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.fail: str | None = None
        self.ratelimit = 0
        self.retry_after_s = 1

    async def __call__(self, request: Request, fault: Fault) -> Response:
        parts = request.path.strip("/").split("/")
        if request.method != "POST" or len(parts) != 2 or parts[0] != "api":
            return Response.json({"ok": False, "error": "unknown_method"}, 404)
        method = parts[1]
        try:
            args = self._arguments(request)
        except ValueError:
            return _fail("invalid_arguments")
        token = args.pop("token", None)
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ")
        if self.ratelimit > 0:
            self.ratelimit -= 1
            response = Response.json({"ok": False, "error": "ratelimited"}, 429)
            response.headers["Retry-After"] = str(self.retry_after_s)
            self._record(method, args, 429, "ratelimited")
            return response
        if token != self.token:
            answer = _fail("invalid_auth")
        elif self.fail:
            answer = _fail(self.fail)
        elif method == "conversations.create":
            answer = self._create(args)
        elif method == "chat.postMessage":
            answer = self._post(args)
        else:
            answer = _fail("unknown_method")
        self._record(method, args, answer.status, json.loads(answer.body).get("error"))
        return answer

    @staticmethod
    def _arguments(request: Request) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return dict(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True))
        if not request.body:
            return {}
        body = request.json()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return body

    def _record(self, method: str, args: dict[str, Any], status: int, error: str | None) -> None:
        self.calls.append({"received_at": time.time(), "method": method, "args": args, "status": status,
                           "ok": status == 200 and error is None, "error": error})

    def _create(self, args: dict[str, Any]) -> Response:
        name = str(args.get("name") or "")
        if not name:
            return _fail("invalid_name_required")
        if len(name) > MAX_NAME:
            return _fail("invalid_name_maxlength")
        if not NAME.match(name):
            return _fail("invalid_name_specials")
        if any(c["name"] == name for c in self.channels.values()):
            return _fail("name_taken")
        channel_id = "C" + secrets.token_hex(5).upper()
        private = args.get("is_private") in (True, "true", "1")
        channel = {"id": channel_id, "name": name, "is_channel": True, "is_group": False, "is_im": False,
                   "created": int(time.time()), "creator": BOT_USER, "is_archived": False, "is_general": False,
                   "unlinked": 0, "name_normalized": name}
        self.channels[channel_id] = {**channel, "is_private": private}
        return Response.json({"ok": True, "channel": channel})

    def _find(self, ref: str) -> dict[str, Any] | None:
        if ref in self.channels:
            return self.channels[ref]
        name = ref.removeprefix("#")
        return next((c for c in self.channels.values() if c["name"] == name), None)

    def _post(self, args: dict[str, Any]) -> Response:
        channel = self._find(str(args.get("channel") or ""))
        if channel is None:
            return _fail("channel_not_found")
        text = str(args.get("text") or "")
        if not text and not args.get("blocks") and not args.get("attachments"):
            return _fail("no_text")
        if len(text) > MAX_TEXT:
            return _fail("msg_too_long")
        ts = f"{time.time():.6f}"
        self.messages.append({"channel": channel["id"], "channel_name": channel["name"], "text": text, "ts": ts})
        return Response.json({"ok": True, "channel": channel["id"], "ts": ts,
                              "message": {"type": "message", "text": text, "ts": ts, "user": BOT_USER}})

    # -- knobs ---------------------------------------------------------------------------------

    async def control(self, request: Request) -> Response | None:
        what = request.path.strip("/").split("/")[2:]  # after "vendors/slack-api"
        if what in (["channels"], ["messages"], ["calls"]):
            if request.method == "DELETE":
                cleared = len(self.calls)
                self.channels.clear()
                self.messages.clear()
                self.calls.clear()
                return Response.json({"cleared": cleared})
            if what == ["channels"]:
                return Response.json([{**c, "messages": [m for m in self.messages if m["channel"] == c["id"]]}
                                      for c in self.channels.values()])
            return Response.json(self.messages if what == ["messages"] else self.calls)
        if what == ["config"]:
            if request.method == "DELETE":
                self.fail, self.ratelimit, self.retry_after_s = None, 0, 1
            elif request.method == "POST":
                try:
                    change = request.json()
                    fail = change.get("fail", self.fail)
                    ratelimit = int(change.get("ratelimit", self.ratelimit))
                    retry = int(change.get("retry_after_s", self.retry_after_s))
                    if fail is not None and not re.match(r"^[a-z_]+$", str(fail)):
                        raise ValueError("fail takes a Slack error code such as invalid_auth, or null")
                    if ratelimit < 0 or retry < 0:
                        raise ValueError("ratelimit and retry_after_s take whole numbers >= 0")
                except (ValueError, AttributeError, TypeError) as exc:
                    return Response.json({"error": f"slack-api config: {exc}"}, 400)
                self.fail, self.ratelimit, self.retry_after_s = fail, ratelimit, retry
            return Response.json({"fail": self.fail, "ratelimit": self.ratelimit,
                                  "retry_after_s": self.retry_after_s})
        return None


def build(plan: dict[str, Any]) -> SlackWorkspace:
    return SlackWorkspace(plan.get("vendor_keys", {}).get("slack-api") or SANDBOX_BOT_TOKEN)
