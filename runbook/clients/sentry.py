"""Sentry: list a project's unresolved issues through the documented web API.

`GET /api/0/projects/{org}/{project}/issues/?query=is:unresolved&statsPeriod=24h` with
`Authorization: Bearer <auth token>`, answered by a JSON array of issues and a `Link` header for
cursor pagination (shared/vendors/sentry.md, sections 1 and 2). The parsers below are pure and
take the documented shapes; `list_issues` does the I/O and never raises on a vendor problem: a
401/403/404, a 429, a 5xx, a body that is not the documented shape, a timeout or a refused
connection each become `IssueList.error`, a sentence that never contains the token.

The endpoint is marked deprecated in Sentry's reference in favour of the organization issues
endpoint, whose parameters were not confirmed; the project endpoint is the documented one.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from runbook.clients.http_probe import BodyTooLarge, describe_error, read_limited
from runbook.secrets import scrub

# A page of 100 issues with their 24 h stats is tens of kilobytes; anything near this is not an
# issues page, and reading it whole would only fill memory.
MAX_BODY_BYTES = 8 * 1024 * 1024
RATE_LIMIT_HEADERS = (
    "X-Sentry-Rate-Limit-Limit",
    "X-Sentry-Rate-Limit-Remaining",
    "X-Sentry-Rate-Limit-Reset",
    "X-Sentry-Rate-Limit-ConcurrentLimit",
    "X-Sentry-Rate-Limit-ConcurrentRemaining",
)


class MalformedPayload(ValueError):
    """The body is not in the documented shape; the message says which field is wrong."""


@dataclass(frozen=True)
class Issue:
    id: str
    short_id: str
    title: str
    culprit: str
    level: str
    count: int
    user_count: int
    first_seen: datetime
    last_seen: datetime | None
    status: str
    permalink: str | None
    project: str | None = None
    substatus: str | None = None

    @property
    def regressed(self) -> bool:
        """True when Sentry marks the issue as regressed (resolved, then seen again).

        unconfirmed: shared/vendors/sentry.md names no regression marker for this endpoint. The
        `substatus` field with the value "regressed" comes from Sentry's own source (GroupSubStatus
        REGRESSED; `substatus` is in the issue examples of the API docs' source), not from the
        endpoint page read; an issue without it is never counted as regressed.
        """
        return self.substatus == "regressed"

    def label(self) -> str:
        where = f" in {self.culprit}" if self.culprit else ""
        return f"{self.short_id or self.id} {_clip(self.title, 80)}{where}"


@dataclass(frozen=True)
class Link:
    url: str
    rel: str
    results: bool | None
    cursor: str | None


@dataclass(frozen=True)
class IssueList:
    """What one project's listing gave. `complete` is False when the page bound or an error
    stopped the reading while Sentry still had more; `error` says why the reading failed (the
    issues of the pages read before it are kept)."""

    project: str
    issues: list[Issue] = field(default_factory=list)
    pages: int = 0
    complete: bool = True
    error: str | None = None
    latency_s: float | None = None


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_time(value: Any, where: str) -> datetime:
    """ISO-8601 UTC, as `firstSeen`/`lastSeen` are documented ("2018-11-06T21:19:55Z")."""
    if not isinstance(value, str):
        raise MalformedPayload(f"{where} is not an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedPayload(f"{where} is not an ISO-8601 time: {_clip(value, 40)!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_count(value: Any, where: str) -> int:
    """`count` is a string in real responses (the serializer does str(times_seen)); the OpenAPI
    example writes an int. Both are accepted; anything else is malformed."""
    if isinstance(value, bool):
        raise MalformedPayload(f"{where} is not a count")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise MalformedPayload(f"{where} is not a count: {_clip(str(value), 20)!r}")


def _text(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise MalformedPayload(f"{where}.{key} is missing")
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise MalformedPayload(f"{where}.{key} is not a string")
    return str(value)


def parse_issue(obj: Any, where: str = "issue") -> Issue:
    if not isinstance(obj, Mapping):
        raise MalformedPayload(f"{where} is not an object")
    user_count = obj.get("userCount", 0)
    if isinstance(user_count, bool) or not isinstance(user_count, int):
        raise MalformedPayload(f"{where}.userCount is not an integer")
    permalink = obj.get("permalink")  # null when the caller lacks access
    project = obj.get("project")
    substatus = obj.get("substatus")  # unconfirmed for this endpoint: see Issue.regressed
    last_seen = obj.get("lastSeen")
    return Issue(
        id=_text(obj, "id", where, required=True),
        short_id=_text(obj, "shortId", where),
        title=_text(obj, "title", where, required=True),
        culprit=_text(obj, "culprit", where),
        level=_text(obj, "level", where),
        count=parse_count(obj.get("count"), f"{where}.count"),
        user_count=user_count,
        first_seen=parse_time(obj.get("firstSeen"), f"{where}.firstSeen"),
        last_seen=None if last_seen is None else parse_time(last_seen, f"{where}.lastSeen"),
        status=_text(obj, "status", where),
        permalink=permalink if isinstance(permalink, str) else None,
        project=project.get("slug") if isinstance(project, Mapping) else None,
        substatus=substatus if isinstance(substatus, str) else None,
    )


def parse_issues(payload: Any) -> list[Issue]:
    """The documented response: a JSON array of issues."""
    if not isinstance(payload, list):
        raise MalformedPayload("the body is not a JSON array of issues")
    return [parse_issue(item, f"issue[{i}]") for i, item in enumerate(payload)]


_LINK = re.compile(r'<([^>]*)>((?:\s*;\s*[A-Za-z_-]+\s*=\s*"[^"]*")*)')
_PARAM = re.compile(r'([A-Za-z_-]+)\s*=\s*"([^"]*)"')


def parse_link_header(value: str | None) -> dict[str, Link]:
    """`<url>; rel="next"; results="true"; cursor="0:100:0", <url>; rel="previous"; ...` by rel."""
    links: dict[str, Link] = {}
    for url, params in _LINK.findall(value or ""):
        attrs = {k.lower(): v for k, v in _PARAM.findall(params)}
        rel = attrs.get("rel")
        if not rel:
            continue
        results = attrs.get("results")
        links[rel] = Link(
            url=url,
            rel=rel,
            results=None if results is None else results.lower() == "true",
            cursor=attrs.get("cursor"),
        )
    return links


def next_cursor(links: Mapping[str, Link]) -> str | None:
    """Follow `rel="next"` only while it says `results="true"` (both rels are always present)."""
    nxt = links.get("next")
    if nxt is None or nxt.results is not True or not nxt.cursor:
        return None
    return nxt.cursor


def rate_limit_note(headers: Mapping[str, str]) -> str:
    """The documented `X-Sentry-Rate-Limit-*` headers (and a Retry-After, unconfirmed for Sentry)."""
    parts = []
    retry = headers.get("Retry-After")
    if retry:
        parts.append(f"Retry-After {retry} s")
    remaining = headers.get("X-Sentry-Rate-Limit-Remaining")
    limit = headers.get("X-Sentry-Rate-Limit-Limit")
    if remaining is not None:
        parts.append(f"{remaining} of {limit or '?'} requests left in the window")
    reset = headers.get("X-Sentry-Rate-Limit-Reset")
    if reset:
        try:
            at = datetime.fromtimestamp(float(reset), UTC)
            parts.append(f"window resets {at:%H:%M:%S} UTC")
        except (ValueError, OverflowError):
            parts.append(f"window resets at {_clip(reset, 20)}")
    concurrent = headers.get("X-Sentry-Rate-Limit-ConcurrentRemaining")
    if concurrent is not None:
        parts.append(f"{concurrent} concurrent slots left")
    return "; ".join(parts)


def _detail(body: bytes) -> str:
    """A short reason from an error body. Sentry is a DRF app, whose error bodies are
    `{"detail": "..."}`; unconfirmed for these endpoints (sentry.md section 4), so plain text is
    quoted too."""
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if isinstance(value, Mapping) and isinstance(value.get("detail"), str):
        return _clip(value["detail"], 120)
    return _clip(body.decode("utf-8", "replace"), 120)


def describe_status(status: int, headers: Mapping[str, str], body: bytes) -> str:
    reason = _detail(body)
    suffix = f": {reason}" if reason else ""
    if status == 401:
        return f"HTTP 401 unauthorized: the token was refused{suffix}"
    if status == 403:
        return f"HTTP 403 forbidden: the token may not read this project{suffix}"
    if status == 404:
        return f"HTTP 404 not found: check the organization and project slugs{suffix}"
    if status == 429:
        note = rate_limit_note(headers)
        return "HTTP 429 rate limited" + (f" ({note})" if note else "")
    if status >= 500:
        return f"HTTP {status} server error{suffix}"
    return f"HTTP {status}{suffix}"


async def _get(
    client: httpx.AsyncClient, url: str, params: dict[str, str], headers: dict[str, str], timeout_s: float
) -> tuple[int, httpx.Headers, bytes]:
    request = client.build_request("GET", url, params=params, headers=headers, timeout=httpx.Timeout(timeout_s))
    response = await client.send(request, stream=True)
    try:
        body = await read_limited(response, MAX_BODY_BYTES)
    except BodyTooLarge as exc:
        raise MalformedPayload(str(exc)) from None
    finally:
        await response.aclose()
    return response.status_code, response.headers, body


def issues_url(base_url: str, org: str, project: str) -> str:
    return f"{base_url.rstrip('/')}/api/0/projects/{quote(org, safe='')}/{quote(project, safe='')}/issues/"


async def list_issues(
    client: httpx.AsyncClient,
    base_url: str,
    org: str,
    project: str,
    token: SecretStr,
    *,
    deadline_s: float,
    max_pages: int = 10,
    query: str = "is:unresolved",
    stats_period: str = "24h",
) -> IssueList:
    """Every page of a project's issues, within one total deadline and at most `max_pages` pages.

    The next page is requested from our own base URL with the `cursor` the Link header names,
    not from the URL inside the header: the bearer token goes only to the configured host.
    """
    url = issues_url(base_url, org, project)
    headers = {"Authorization": f"Bearer {token.get_secret_value()}", "Accept": "application/json"}
    params = {"query": query, "statsPeriod": stats_period}
    secret = [token.get_secret_value()]
    issues: list[Issue] = []
    pages = 0
    started = time.perf_counter()
    deadline = time.monotonic() + deadline_s

    def result(error: str | None = None, complete: bool = True) -> IssueList:
        return IssueList(
            project,
            issues,
            pages,
            complete and error is None,
            None if error is None else scrub(error, secret),
            time.perf_counter() - started,
        )

    cursor: str | None = None
    seen_cursors: set[str] = set()
    while True:
        if pages >= max_pages:
            return result(complete=False)
        left = deadline - time.monotonic()
        where = f"page {pages + 1}" if pages else "the first page"
        try:
            if left <= 0:
                raise TimeoutError
            async with asyncio.timeout(left):
                status, response_headers, body = await _get(
                    client, url, {**params, **({"cursor": cursor} if cursor else {})}, headers, left
                )
        except MalformedPayload as exc:
            return result(f"malformed response on {where}: {exc}")
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer is the observation
            reason = describe_error(exc)
            if reason == "timed out":
                reason = f"timed out after {deadline_s:g} s"
            return result(f"{reason} reading {where}" if pages else reason)
        if status != 200:
            return result(describe_status(status, response_headers, body))
        try:
            page = parse_issues(json.loads(body))
        except ValueError as exc:  # json's own errors and MalformedPayload
            reason = str(exc) if isinstance(exc, MalformedPayload) else "the body is not JSON"
            return result(f"malformed response on {where}: {reason}")
        pages += 1
        issues.extend(page)
        cursor = next_cursor(parse_link_header(response_headers.get("Link")))
        if cursor is None:
            return result()
        if cursor in seen_cursors:
            return result(f"malformed response on page {pages}: the next cursor repeats {cursor!r}")
        seen_cursors.add(cursor)
