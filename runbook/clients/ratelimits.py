"""Rate-limit windows of the social APIs, and the deadline-bound GET every usage reader shares.

X (Twitter) API v2 and Discord report the caller's current rate-limit window in the headers of an
authenticated call (shared/vendors/x-twitter.md, shared/vendors/discord.md). Reading them costs one
request of the window being measured, so the cheapest authenticated call is used: X
`GET /2/users/me`, Discord `GET /users/@me`.

Every failure to get an answer (timeout, refused connection, 4xx/5xx, a 429, a body that is not
what the vendor documents) becomes a reading with an `error` string, never an exception, and no
message ever carries the key: each one passes through `scrub()` with the key that was sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any

import httpx
from pydantic import SecretStr

from runbook.clients.http_probe import BodyTooLarge, describe_error, read_limited

# Usage answers are a few hundred bytes; a runaway body must not fill memory.
MAX_BODY_BYTES = 1024 * 1024
# Enough of a vendor's error text to say what went wrong, not enough to flood a report line.
MAX_REASON_CHARS = 160


class ParseError(ValueError):
    """A vendor answer that does not have the documented shape; the message names what is missing."""


def scrub(text: str, secret: SecretStr | None) -> str:
    value = secret.get_secret_value() if secret is not None else ""
    if value:
        text = text.replace(value, "***")
    return text


@dataclass(frozen=True)
class VendorAnswer:
    """One HTTP answer, or why there was none (`error`)."""

    status: int | None = None
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""
    error: str | None = None
    latency_s: float | None = None

    def json(self) -> Any:
        """The body as JSON; raises ParseError when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise ParseError("the body is not JSON") from None

    def text(self, limit: int = MAX_REASON_CHARS) -> str:
        text = " ".join(self.body.decode("utf-8", "replace").split())
        return text if len(text) <= limit else text[: limit - 3] + "..."


async def vendor_get(
    client: httpx.AsyncClient,
    url: str,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    secret: SecretStr,
    vendor: str,
) -> VendorAnswer:
    """GET `url` under one total deadline (pool wait, connect, TLS, read). Never raises."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            request = client.build_request("GET", url, headers=dict(headers), timeout=httpx.Timeout(timeout_s))
            response = await client.send(request, stream=True)
            try:
                body = await read_limited(response, MAX_BODY_BYTES)
            except BodyTooLarge as exc:
                return VendorAnswer(response.status_code, response.headers, error=f"{vendor}: {exc}",
                                    latency_s=time.perf_counter() - started)
            finally:
                await response.aclose()
    except Exception as exc:  # noqa: BLE001 - a failure to get an answer is the reading
        # describe_error() covers timeouts (asyncio's and httpx's) and connection errors; the
        # message is scrubbed in case a transport error ever quotes a request header.
        return VendorAnswer(
            error=scrub(f"{vendor}: {describe_error(exc)}", secret), latency_s=time.perf_counter() - started
        )
    return VendorAnswer(response.status_code, response.headers, body, latency_s=time.perf_counter() - started)


def _epoch_text(value: str) -> str | None:
    try:
        moment = datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def retry_hint(headers: Mapping[str, str]) -> str:
    """What a 429 (or any answer) says about when to try again, from whichever header is there.

    `Retry-After` (seconds or an HTTP date; Discord, and tolerated anywhere), X's
    `x-rate-limit-reset` (epoch seconds), Discord's `X-RateLimit-Reset-After` (seconds) and
    `X-RateLimit-Reset` (epoch seconds, may have decimals). Empty when none is present.
    """
    h = httpx.Headers(headers)
    hints = []
    retry_after = h.get("retry-after")
    if retry_after:
        if retry_after.replace(".", "", 1).isdigit():
            hints.append(f"Retry-After {retry_after} s")
        else:
            try:
                hints.append(f"Retry-After {parsedate_to_datetime(retry_after):%Y-%m-%d %H:%M:%S} UTC")
            except (TypeError, ValueError):
                pass
    reset_after = h.get("x-ratelimit-reset-after")
    if reset_after:
        hints.append(f"window resets in {reset_after} s")
    for name in ("x-rate-limit-reset", "x-ratelimit-reset"):
        value = h.get(name)
        when = _epoch_text(value) if value else None
        if when and not reset_after:
            hints.append(f"window resets at {when}")
    return ", ".join(hints)


def http_error(vendor: str, answer: VendorAnswer, reason: str | None, secret: SecretStr) -> str:
    """One line for an answer that is not a success: status, what the vendor said, when to retry."""
    status = answer.status or 0
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "unknown status"
    parts = [f"{vendor}: HTTP {status} {phrase}"]
    if status == 429:
        parts[0] = f"{vendor}: rate limited (HTTP 429 {phrase})"
    elif status in (401, 403):
        parts[0] += " (the key was rejected)"
    elif 300 <= status < 400:
        parts[0] += " (redirects are not followed)"
    if reason:
        parts.append(reason[:MAX_REASON_CHARS])
    hint = retry_hint(answer.headers)
    if hint:
        parts.append(hint)
    return scrub("; ".join(parts), secret)


# --- rate-limit windows -------------------------------------------------------------------------


@dataclass(frozen=True)
class RateWindow:
    """The caller's current window: `limit` requests, `remaining` of them left, and when it resets
    (`reset_epoch` absolute, `reset_after_s` relative to the answer; either may be missing)."""

    limit: int
    remaining: int
    reset_epoch: float | None = None
    reset_after_s: float | None = None
    bucket: str | None = None

    @property
    def used(self) -> int:
        return self.limit - self.remaining

    @property
    def share_used(self) -> float:
        return self.used / self.limit


@dataclass(frozen=True)
class WindowReading:
    """A window read from a vendor, or why none could be (`error`). `note` qualifies a reading
    that came with a non-200 answer (an X/Discord 429 still carries its window's headers)."""

    window: RateWindow | None = None
    error: str | None = None
    http_status: int | None = None
    latency_s: float | None = None
    note: str = ""


def _int_header(h: httpx.Headers, name: str) -> int:
    value = h.get(name)
    if value is None:
        raise ParseError(f"no {name} header")
    try:
        number = float(value)
    except ValueError:
        raise ParseError(f"{name} is not a number: {value[:40]!r}") from None
    if not number.is_integer() or number < 0:
        raise ParseError(f"{name} is not a whole number >= 0: {value[:40]!r}")
    return int(number)


def _float_header(h: httpx.Headers, name: str) -> float | None:
    value = h.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ParseError(f"{name} is not a number: {value[:40]!r}") from None
    if number < 0 or number != number:
        raise ParseError(f"{name} is not a number >= 0: {value[:40]!r}")
    return number


def _window(limit: int, remaining: int, limit_name: str, remaining_name: str) -> tuple[int, int]:
    if limit == 0:
        raise ParseError(f"{limit_name} is 0")
    if remaining > limit:
        raise ParseError(f"{remaining_name} ({remaining}) exceeds {limit_name} ({limit})")
    return limit, remaining


def parse_x_headers(headers: Mapping[str, str]) -> RateWindow:
    """X API v2: `x-rate-limit-limit`, `x-rate-limit-remaining`, `x-rate-limit-reset` (epoch s)."""
    h = httpx.Headers(headers)
    limit, remaining = _window(
        _int_header(h, "x-rate-limit-limit"),
        _int_header(h, "x-rate-limit-remaining"),
        "x-rate-limit-limit",
        "x-rate-limit-remaining",
    )
    reset = _float_header(h, "x-rate-limit-reset")
    if reset is None:
        raise ParseError("no x-rate-limit-reset header")
    return RateWindow(limit, remaining, reset_epoch=reset)


def parse_discord_headers(headers: Mapping[str, str]) -> RateWindow:
    """Discord: `X-RateLimit-Limit`, `-Remaining`, `-Reset` (epoch s, may have decimals),
    `-Reset-After` (s, may have decimals), `-Bucket`. A reset time needs one of the two resets."""
    h = httpx.Headers(headers)
    limit, remaining = _window(
        _int_header(h, "x-ratelimit-limit"),
        _int_header(h, "x-ratelimit-remaining"),
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
    )
    reset = _float_header(h, "x-ratelimit-reset")
    reset_after = _float_header(h, "x-ratelimit-reset-after")
    if reset is None and reset_after is None:
        raise ParseError("neither X-RateLimit-Reset nor X-RateLimit-Reset-After is present")
    bucket = h.get("x-ratelimit-bucket")
    return RateWindow(limit, remaining, reset_epoch=reset, reset_after_s=reset_after, bucket=bucket)


def x_error_reason(body: Any) -> str | None:
    """What an X error body says. v2 answers errors as RFC-7807 problems (`title`, `detail`;
    unconfirmed for 401/429 in shared/vendors/x-twitter.md); the documented 429 body is the older
    `{"errors": [{"code": 88, "message": "Rate limit exceeded"}]}`. Both are read."""
    if not isinstance(body, dict):
        return None
    detail, title = body.get("detail"), body.get("title")
    if isinstance(detail, str) or isinstance(title, str):
        return " - ".join(str(x) for x in (title, detail) if isinstance(x, str) and x)
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        message = first.get("message") or first.get("detail") or first.get("title")
        code = first.get("code")
        if isinstance(message, str):
            return f"{message} (code {code})" if code is not None else message
    return None


def discord_error_reason(body: Any) -> str | None:
    """Discord error bodies carry `message` (and, on 429, `retry_after` and `global`)."""
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return None
    reason = body["message"]
    if body.get("code") not in (None, 0):
        reason += f" (code {body['code']})"
    if isinstance(body.get("retry_after"), int | float):
        reason += f", retry_after {body['retry_after']} s"
    if body.get("global") is True:
        reason += ", global limit"
    return reason


def _json_or_none(answer: VendorAnswer) -> Any:
    try:
        return answer.json()
    except ParseError:
        return None


def _x_body_problem(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        return None
    return "the /2/users/me answer has no 'data' object"


def _ok_reading(
    vendor: str,
    answer: VendorAnswer,
    secret: SecretStr,
    parse_headers: Callable[[Mapping[str, str]], RateWindow],
    body_problem: Callable[[Any], str | None],
) -> WindowReading:
    """A 200 answer as a reading: its window from the headers, if the body has the vendor's shape."""
    try:
        problem = body_problem(answer.json())
        if problem:
            raise ParseError(problem)
        window = parse_headers(answer.headers)
    except ParseError as exc:
        return WindowReading(error=scrub(f"{vendor}: HTTP 200 but {exc}", secret), http_status=200,
                             latency_s=answer.latency_s)
    return WindowReading(window, http_status=200, latency_s=answer.latency_s)


async def read_x_window(
    client: httpx.AsyncClient, base_url: str, user_token: SecretStr, *, timeout_s: float
) -> WindowReading:
    """`GET {base_url}/users/me` (base e.g. https://api.x.com/2) with a user-context bearer token.

    An app-only bearer token cannot call `/me`; X then answers an error, which is reported as such.
    """
    vendor = "X"
    answer = await vendor_get(
        client,
        base_url.rstrip("/") + "/users/me",
        {"Authorization": f"Bearer {user_token.get_secret_value()}"},
        timeout_s=timeout_s,
        secret=user_token,
        vendor=vendor,
    )
    if answer.error is not None:
        return WindowReading(error=answer.error, latency_s=answer.latency_s)
    if answer.status == 200:
        return _ok_reading(vendor, answer, user_token, parse_x_headers, _x_body_problem)
    if answer.status == 429:
        # A 429 that still carries the window's headers is a reading: the window is used up.
        try:
            window = parse_x_headers(answer.headers)
        except ParseError:
            pass
        else:
            note = http_error(vendor, answer, x_error_reason(_json_or_none(answer)), user_token)
            return WindowReading(window, http_status=429, latency_s=answer.latency_s, note=note)
    reason = x_error_reason(_json_or_none(answer)) or answer.text()
    return WindowReading(
        error=http_error(vendor, answer, reason, user_token), http_status=answer.status, latency_s=answer.latency_s
    )


async def read_discord_window(
    client: httpx.AsyncClient, base_url: str, bot_token: SecretStr, *, timeout_s: float
) -> WindowReading:
    """`GET {base_url}/users/@me` (base e.g. https://discord.com/api/v10) as the bot.

    `Authorization: Bot <token>` is unconfirmed in shared/vendors/discord.md (not in the
    rate-limit page it was read from); it is Discord's bot scheme. The 200 body's fields are not
    in that page either, so only "a JSON object" is required of it: the window is in the headers.
    """
    vendor = "Discord"
    answer = await vendor_get(
        client,
        base_url.rstrip("/") + "/users/@me",
        {"Authorization": f"Bot {bot_token.get_secret_value()}"},
        timeout_s=timeout_s,
        secret=bot_token,
        vendor=vendor,
    )
    if answer.error is not None:
        return WindowReading(error=answer.error, latency_s=answer.latency_s)
    if answer.status == 200:
        return _ok_reading(vendor, answer, bot_token, parse_discord_headers,
                           lambda body: None if isinstance(body, dict) else "the body is not a JSON object")
    body = _json_or_none(answer)
    if answer.status == 429:
        global_limit = answer.headers.get("x-ratelimit-global", "").lower() == "true" or (
            isinstance(body, dict) and body.get("global") is True
        )
        if not global_limit:
            # A per-route (or shared-resource) 429 carries the route's window: it is used up.
            try:
                window = parse_discord_headers(answer.headers)
            except ParseError:
                pass
            else:
                scope = answer.headers.get("x-ratelimit-scope")
                note = http_error(vendor, answer, discord_error_reason(body), bot_token)
                if scope:
                    note += f"; scope {scope}"
                return WindowReading(window, http_status=429, latency_s=answer.latency_s, note=note)
    reason = discord_error_reason(body) or answer.text()
    error = http_error(vendor, answer, reason, bot_token)
    scope = answer.headers.get("x-ratelimit-scope")
    if answer.status == 429 and scope:
        error += f"; scope {scope}"
    return WindowReading(error=error, http_status=answer.status, latency_s=answer.latency_s)
