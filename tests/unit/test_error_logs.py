"""Error Log Review: Sentry and Convex parsers on the documented payloads, both clients against
httpx.MockTransport (pagination, every error path, the secrets kept out of messages), and the
judgement with a fixed `now`."""

from __future__ import annotations

import asyncio
import json
import tomllib
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from runbook.checks import Status
from runbook.clients import convex_logs, sentry
from runbook.procedures import error_logs
from runbook.secrets import SecretResolver

NOW = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
TOKEN = "sntryu_unit_test_token_0123456789abcdef"
DEPLOY_KEY = "prod:unit-test|deploykeyvalue0123456789"

# shared/vendors/sentry.md section 1 (the OpenAPI SIMPLE_ISSUE, count as the string real responses send)
DOC_ISSUE = {
    "id": "1", "shortId": "PUMP-STATION-1",
    "title": "This is an example Python exception",
    "culprit": "raven.scripts.runner in main",
    "permalink": "https://sentry.io/the-interstellar-jurisdiction/pump-station/issues/1/",
    "level": "error", "status": "unresolved", "statusDetails": {},
    "firstSeen": "2018-11-06T21:19:55Z", "lastSeen": "2018-11-06T21:19:55Z",
    "count": "150", "userCount": 0,
    "project": {"id": "2", "name": "Pump Station", "slug": "pump-station", "platform": "python"},
    "metadata": {"title": "..."}, "type": "default", "logger": None,
    "isBookmarked": False, "isPublic": False, "isSubscribed": True, "hasSeen": False,
    "numComments": 0, "shareId": None, "assignedTo": None, "annotations": [],
    "stats": {"24h": [[1541455200.0, 473], [1541458800.0, 914]]},
}
# shared/vendors/sentry.md section 2
DOC_LINK = (
    '<https://sentry.io/api/0/.../issues/?&cursor=0:0:1>; rel="previous"; results="false"; cursor="0:0:1", '
    '<https://sentry.io/api/0/.../issues/?&cursor=0:100:0>; rel="next"; results="true"; cursor="0:100:0"'
)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def issue(n: int, *, project: str = "mint-api", title: str = "TypeError", culprit: str = "mint", count="5",
          first_seen: datetime | None = None, last_seen: datetime | None = None, substatus: str | None = None) -> dict:
    out = {**DOC_ISSUE, "id": str(n), "shortId": f"PROJ-{n}", "title": title, "culprit": culprit, "count": count,
           "firstSeen": iso(first_seen or NOW - timedelta(hours=1)), "lastSeen": iso(last_seen or NOW),
           "permalink": f"https://sentry.io/tokenforge/{project}/issues/{n}/",
           "project": {"id": "7", "name": project, "slug": project, "platform": "node"}}
    if substatus is not None:
        out["substatus"] = substatus
    return out


def cfg(**overrides) -> error_logs.ErrorLogs:
    base = dict(
        sentry_url="https://sentry.test", sentry_org="tokenforge", sentry_projects=["mint-api"],
        sentry_token={"env": "SENTRY_TOKEN"}, convex_url="https://happy-otter-123.convex.cloud",
        convex_deploy_key={"env": "CONVEX_DEPLOY_KEY"}, new_error_threshold=3,
    )
    return error_logs.ErrorLogs(**{**base, **overrides})


def run(coro):
    return asyncio.run(coro)


def mock_client(handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=False)


def no_secret(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text and DEPLOY_KEY not in text, text


# -- Sentry parsers ---------------------------------------------------------------------------


def test_the_documented_issue_parses_with_count_as_a_string_and_user_count_an_int():
    [parsed] = sentry.parse_issues([DOC_ISSUE])
    assert parsed.id == "1" and parsed.short_id == "PUMP-STATION-1"
    assert parsed.title == "This is an example Python exception"
    assert parsed.culprit == "raven.scripts.runner in main"
    assert parsed.count == 150 and parsed.user_count == 0
    assert parsed.first_seen == datetime(2018, 11, 6, 21, 19, 55, tzinfo=UTC)
    assert parsed.last_seen == parsed.first_seen
    assert parsed.level == "error" and parsed.status == "unresolved"
    assert parsed.permalink == "https://sentry.io/the-interstellar-jurisdiction/pump-station/issues/1/"
    assert parsed.project == "pump-station"
    assert parsed.regressed is False and parsed.substatus is None


def test_count_as_the_openapi_examples_int_is_accepted_and_a_null_permalink_is_none():
    [parsed] = sentry.parse_issues([{**DOC_ISSUE, "count": 150, "permalink": None}])
    assert parsed.count == 150 and parsed.permalink is None


def test_substatus_regressed_marks_a_regression():
    [parsed] = sentry.parse_issues([{**DOC_ISSUE, "substatus": "regressed"}])
    assert parsed.regressed


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"detail": "x"}, "not a JSON array"),
        ([{**DOC_ISSUE, "count": "many"}], "issue[0].count is not a count"),
        ([{**DOC_ISSUE, "count": True}], "issue[0].count is not a count"),
        ([{**DOC_ISSUE, "userCount": "3"}], "issue[0].userCount is not an integer"),
        ([{**DOC_ISSUE, "firstSeen": "yesterday"}], "issue[0].firstSeen is not an ISO-8601 time"),
        ([DOC_ISSUE, {k: v for k, v in DOC_ISSUE.items() if k != "id"}], "issue[1].id is missing"),
        (["PUMP-STATION-1"], "issue[0] is not an object"),
    ],
)
def test_payloads_off_the_documented_shape_are_malformed_naming_the_field(payload, message):
    with pytest.raises(sentry.MalformedPayload, match=message.replace("[", r"\[").replace("]", r"\]")):
        sentry.parse_issues(payload)


def test_the_documented_link_header_parses_by_rel():
    links = sentry.parse_link_header(DOC_LINK)
    assert links["previous"].results is False and links["previous"].cursor == "0:0:1"
    assert links["next"].results is True and links["next"].cursor == "0:100:0"
    assert links["next"].url == "https://sentry.io/api/0/.../issues/?&cursor=0:100:0"
    assert sentry.next_cursor(links) == "0:100:0"


def test_next_is_followed_only_while_it_says_results_true():
    last = DOC_LINK.replace('rel="next"; results="true"', 'rel="next"; results="false"')
    assert sentry.next_cursor(sentry.parse_link_header(last)) is None
    assert sentry.next_cursor(sentry.parse_link_header(None)) is None
    assert sentry.next_cursor(sentry.parse_link_header("garbage")) is None


def test_rate_limit_headers_are_described():
    note = sentry.rate_limit_note(
        {"X-Sentry-Rate-Limit-Limit": "40", "X-Sentry-Rate-Limit-Remaining": "0",
         "X-Sentry-Rate-Limit-Reset": str(int(NOW.timestamp())), "Retry-After": "7",
         "X-Sentry-Rate-Limit-ConcurrentRemaining": "3"}
    )
    assert note == "Retry-After 7 s; 0 of 40 requests left in the window; window resets 09:00:00 UTC; " \
                   "3 concurrent slots left"


# -- Sentry client ----------------------------------------------------------------------------


def paged_sentry(pages: list[list[dict]], seen: list[httpx.Request], next_host: str = "sentry.test"):
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        offset = int(request.url.params.get("cursor", "0:0:0").split(":")[1])
        index = offset // 100
        more = index + 1 < len(pages)
        link = (
            f'<https://{next_host}/api/0/x/?cursor=0:{max(offset - 100, 0)}:1>; rel="previous"; '
            f'results="{"true" if offset else "false"}"; cursor="0:{max(offset - 100, 0)}:1", '
            f'<https://{next_host}/api/0/x/?cursor=0:{offset + 100}:0>; rel="next"; '
            f'results="{"true" if more else "false"}"; cursor="0:{offset + 100}:0"'
        )
        return httpx.Response(200, json=pages[index], headers={"Link": link})

    return handler


def list_issues(handler, **kw):
    async def go():
        async with mock_client(handler) as client:
            return await sentry.list_issues(
                client, "https://sentry.test/", "tokenforge", "mint-api", SecretStr(TOKEN),
                deadline_s=kw.pop("deadline_s", 2.0), **kw,
            )

    return run(go())


def test_issues_are_read_across_every_page_by_cursor_with_the_bearer_token():
    seen: list[httpx.Request] = []
    pages = [[issue(i) for i in range(p * 100, p * 100 + 100)] for p in range(2)] + [[issue(200)]]
    listing = list_issues(paged_sentry(pages, seen, next_host="evil.test"))
    assert listing.error is None and listing.complete
    assert listing.pages == 3 and len(listing.issues) == 201
    assert [r.url.params.get("cursor") for r in seen] == [None, "0:100:0", "0:200:0"]
    for r in seen:
        # the next page comes from the configured host, whatever the Link header's URL says
        assert r.url.host == "sentry.test"
        assert r.url.path == "/api/0/projects/tokenforge/mint-api/issues/"
        assert r.url.params["query"] == "is:unresolved" and r.url.params["statsPeriod"] == "24h"
        assert r.headers["Authorization"] == f"Bearer {TOKEN}"


def test_the_page_bound_stops_the_reading_and_says_it_is_incomplete():
    seen: list[httpx.Request] = []
    pages = [[issue(i)] for i in range(5)]
    listing = list_issues(paged_sentry(pages, seen), max_pages=2)
    assert listing.pages == 2 and len(listing.issues) == 2
    assert not listing.complete and listing.error is None
    assert len(seen) == 2


def test_a_repeating_cursor_is_malformed_not_a_loop():
    def handler(request):
        return httpx.Response(200, json=[issue(1)], headers={"Link": DOC_LINK})

    listing = list_issues(handler)
    assert listing.error is not None and "cursor repeats" in listing.error


def answer(status: int, body: bytes | str = b"", headers: dict | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/instance_version":
            return httpx.Response(200, text="1.27.0")
        content = body.encode() if isinstance(body, str) else body
        return httpx.Response(status, content=content, headers=headers or {})

    return handler


def hang(seconds: float):
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(seconds)
        return httpx.Response(200, json=[])

    return handler


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


# Error bodies that quote the credential back: the clients must not pass it on.
ECHO = json.dumps({"detail": f"Invalid token {TOKEN}"})
CONVEX_ECHO = json.dumps({"code": "Unauthenticated", "message": f"Bad deploy key {DEPLOY_KEY}"})

SENTRY_FAILURES = [
    (answer(401, ECHO), "HTTP 401 unauthorized"),
    (answer(403, json.dumps({"detail": "You do not have permission to perform this action."})), "HTTP 403"),
    (answer(404, json.dumps({"detail": "The requested resource does not exist"})), "HTTP 404 not found"),
    (answer(429, b"", {"Retry-After": "30", "X-Sentry-Rate-Limit-Limit": "40",
                       "X-Sentry-Rate-Limit-Remaining": "0"}), "HTTP 429 rate limited (Retry-After 30 s; 0 of 40"),
    (answer(500, "<html>oops</html>"), "HTTP 500 server error"),
    (answer(200, "{not json"), "malformed response on the first page: the body is not JSON"),
    (answer(200, json.dumps({"detail": "x"})), "malformed response on the first page: the body is not a JSON array"),
    (answer(200, ECHO), "malformed response"),
    (hang(5), "timed out after 0.2 s"),
    (refuse, "connection failed"),
]


@pytest.mark.parametrize(("handler", "reason"), SENTRY_FAILURES)
def test_sentry_failures_are_an_error_result_never_an_exception_nor_the_token(handler, reason):
    listing = list_issues(handler, deadline_s=0.2)
    assert listing.error is not None and reason in listing.error, listing.error
    assert not listing.complete and listing.issues == []
    no_secret(listing.error, repr(listing))


def test_a_failure_on_a_later_page_keeps_the_issues_read_and_names_the_page():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(200, json=[issue(1)], headers={"Link": DOC_LINK})
        return httpx.Response(502, text="bad gateway")

    listing = list_issues(handler)
    assert listing.error == "HTTP 502 server error: bad gateway"
    assert len(listing.issues) == 1 and not listing.complete


# -- Convex parsers ---------------------------------------------------------------------------


def entry(identifier="tokens:create", error=None, ts=None, udf="Mutation", kind="Completion", lines=None) -> dict:
    out = {"identifier": identifier, "udfType": udf, "logLines": lines or [],
           "timestamp": (ts or NOW - timedelta(minutes=10)).timestamp(), "executionTime": 0.012,
           "error": error, "kind": kind}
    return out


def test_an_entry_with_string_log_lines_parses():
    parsed = convex_logs.parse_entry(entry(error="Uncaught Error: boom", lines=["[LOG] 'minting'", "[ERROR] 'x'"]))
    assert parsed.identifier == "tokens:create" and parsed.udf_type == "Mutation"
    assert parsed.error == "Uncaught Error: boom" and parsed.failed
    assert parsed.timestamp_s == (NOW - timedelta(minutes=10)).timestamp()
    assert [line.text for line in parsed.log_lines] == ["[LOG] 'minting'", "[ERROR] 'x'"]
    assert all(line.level is None for line in parsed.log_lines)


def test_an_entry_with_structured_log_lines_parses():
    structured = {"messages": ["minting", "42"], "level": "ERROR", "timestamp": 1748854800000, "isTruncated": True}
    parsed = convex_logs.parse_entry(entry(lines=[structured, "plain"]))
    first, second = parsed.log_lines
    assert first.text == "minting 42" and first.level == "ERROR"
    assert first.timestamp_ms == 1748854800000 and first.truncated
    assert second.text == "plain" and second.level is None
    assert not parsed.failed


def test_progress_entries_and_entries_without_kind():
    progress = convex_logs.parse_entry({**entry(error=None), "kind": "Progress"})
    assert not progress.failed
    legacy = {k: v for k, v in entry(error="boom").items() if k != "kind"}
    assert convex_logs.parse_entry(legacy).failed  # older backends: every entry is a completion


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "not a JSON object"),
        ({"entries": {}, "newCursor": 1}, "entries is not a list"),
        ({"entries": []}, "newCursor is not a number"),
        ({"entries": [{"udfType": "Query", "timestamp": 1}], "newCursor": 1}, r"entries\[0\].identifier is missing"),
        ({"entries": [entry(lines=[{"level": "LOG"}])], "newCursor": 1}, r"logLines\[0\].messages is not a list"),
        ({"entries": [{**entry(), "timestamp": "now"}], "newCursor": 1}, r"entries\[0\].timestamp is not a number"),
        ({"entries": [{**entry(), "error": {"message": "x"}}], "newCursor": 1}, "error is neither"),
    ],
)
def test_convex_payloads_off_the_documented_shape_are_malformed(payload, message):
    with pytest.raises(convex_logs.MalformedPayload, match=message):
        convex_logs.parse_page(payload)


def test_errors_are_counted_per_function_within_the_window():
    since = (NOW - timedelta(hours=24)).timestamp()
    entries = [convex_logs.parse_entry(e) for e in [
        entry("tokens:create", "E1", NOW - timedelta(hours=3)),
        entry("tokens:create", "E2 latest", NOW - timedelta(hours=1)),
        entry("tokens:create", "E0", NOW - timedelta(hours=2)),
        entry("tokens:mint", "M", NOW - timedelta(minutes=5), udf="Action"),
        entry("tokens:mint", None, NOW - timedelta(minutes=4), udf="Action"),  # success
        entry("tokens:old", "gone", NOW - timedelta(hours=25)),  # before the window
        {**entry("tokens:mint", "progress", NOW), "kind": "Progress"},
    ]]
    counts = convex_logs.errors_by_function(entries, since, NOW.timestamp())
    assert list(counts) == ["tokens:create", "tokens:mint"]
    assert counts["tokens:create"].count == 3 and counts["tokens:create"].last_error == "E2 latest"
    assert counts["tokens:mint"].count == 1 and counts["tokens:mint"].udf_type == "Action"


# -- Convex client ----------------------------------------------------------------------------


class FakeDeployment:
    """The log endpoint as the backend behaves: entries newer than the cursor, newest time as the
    new cursor, and a held request (long poll) when nothing is newer."""

    def __init__(self, entries: list[dict], page_size: int | None = None, hold_s: float = 30) -> None:
        self.entries = sorted(entries, key=lambda e: e["timestamp"])
        self.page_size = page_size
        self.hold_s = hold_s
        self.cursors: list[str] = []
        self.auth: list[str | None] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/instance_version":
            return httpx.Response(200, text="1.27.0")
        assert request.url.path == "/api/stream_function_logs"
        self.auth.append(request.headers.get("Authorization"))
        cursor = request.url.params["cursor"]
        self.cursors.append(cursor)
        newer = [e for e in self.entries if e["timestamp"] * 1000 > float(cursor)]
        if not newer:
            await asyncio.sleep(self.hold_s)
            return httpx.Response(200, json={"entries": [], "newCursor": float(cursor)})
        if self.page_size:
            newer = newer[: self.page_size]
        return httpx.Response(200, json={"entries": newer, "newCursor": newer[-1]["timestamp"] * 1000})


def read_logs(handler, **kw):
    async def go():
        async with mock_client(handler) as client:
            return await convex_logs.read_function_logs(
                client, "https://happy-otter-123.convex.cloud/", SecretStr(DEPLOY_KEY),
                since_ms=(NOW - timedelta(hours=24)).timestamp() * 1000,
                until_ms=kw.pop("until_ms", NOW.timestamp() * 1000),
                deadline_s=kw.pop("deadline_s", 3.0), settle_s=kw.pop("settle_s", 0.2), **kw,
            )

    return run(go())


def test_logs_are_read_by_cursor_until_the_deployment_holds_the_request():
    entries = [entry(f"fn:{i % 3}", "boom" if i % 2 else None, NOW - timedelta(minutes=60 - i)) for i in range(7)]
    fake = FakeDeployment(entries, page_size=3)
    read = read_logs(fake)
    assert read.error is None and read.complete
    assert read.pages == 3 and len(read.entries) == 7
    since_ms = str(int((NOW - timedelta(hours=24)).timestamp() * 1000))
    assert fake.cursors[0] == since_ms and len(fake.cursors) == 4  # the 4th was held: caught up
    assert set(fake.auth) == {f"Convex {DEPLOY_KEY}"}


def test_an_empty_page_with_the_same_cursor_is_caught_up():
    fake = FakeDeployment([entry(error="x")], hold_s=0)
    read = read_logs(fake)
    assert read.complete and read.error is None and len(read.entries) == 1 and read.pages == 2


def test_a_quiet_deployment_holds_the_first_request_and_that_is_zero_entries():
    read = read_logs(FakeDeployment([], hold_s=30), settle_s=0.2)
    assert read.error is None and read.complete and read.entries == [] and read.pages == 0
    assert read.latency_s is not None and read.latency_s < 2


def test_reading_stops_once_the_cursor_passes_the_review_start():
    entries = [entry("a", "x", NOW - timedelta(minutes=5)), entry("a", "y", NOW + timedelta(minutes=5))]
    fake = FakeDeployment(entries, page_size=1)
    read = read_logs(fake)
    assert read.complete and len(read.entries) == 2 and len(fake.cursors) == 2


def test_the_convex_page_bound_marks_the_reading_incomplete():
    entries = [entry("a", "x", NOW - timedelta(minutes=50 - i)) for i in range(10)]
    read = read_logs(FakeDeployment(entries, page_size=2), max_pages=3)
    assert not read.complete and read.pages == 3 and len(read.entries) == 6 and read.error is None


CONVEX_FAILURES = [
    (answer(401, CONVEX_ECHO), "HTTP 401 unauthorized: the deploy key was refused"),
    (answer(429, "Too many requests"), "HTTP 429 rate limited"),
    (answer(500, "internal"), "HTTP 500 server error"),
    (answer(200, "{not json"), "malformed response on the first page: the body is not JSON"),
    (answer(200, json.dumps({"entries": "none", "newCursor": 1})), "entries is not a list"),
    (hang(5), "timed out after 0.3 s (GET /instance_version)"),
    (refuse, "connection failed"),
]


@pytest.mark.parametrize(("handler", "reason"), CONVEX_FAILURES)
def test_convex_failures_are_an_error_result_never_an_exception_nor_the_key(handler, reason):
    read = read_logs(handler, deadline_s=0.3)
    assert read.error is not None and reason in read.error, read.error
    assert not read.complete
    no_secret(read.error, repr(read))


def test_a_slow_first_page_within_the_deadline_is_not_mistaken_for_the_long_poll():
    async def handler(request):
        if request.url.path == "/instance_version":
            await asyncio.sleep(0.3)
            return httpx.Response(200, text="1.27.0")
        if request.url.params["cursor"] == str(int((NOW - timedelta(hours=24)).timestamp() * 1000)):
            await asyncio.sleep(0.5)  # longer than settle_s, shorter than 3x the measured round trip
            return httpx.Response(200, json={"entries": [entry(error="x")], "newCursor": NOW.timestamp() * 1000})
        raise AssertionError("the cursor passed the review start: no further request")

    read = read_logs(handler, settle_s=0.1)
    assert read.error is None and len(read.entries) == 1


# -- configuration and judgement --------------------------------------------------------------

EXAMPLE_TOML = """
[error_logs]
sentry_url = "https://sentry.io"
sentry_org = "tokenforge"
sentry_projects = ["tokenforge-web", "tokenforge-backend"]
sentry_token = { env = "SENTRY_AUTH_TOKEN" }
convex_url = "https://happy-otter-123.convex.cloud"
convex_deploy_key = { prefect_secret = "convex-deploy-key" }
window_hours = 24
new_error_threshold = 5
severity = "P3"
raised_severity = "P2"
"""


def test_the_example_section_validates_with_the_documented_defaults():
    section = error_logs.ErrorLogs.model_validate(tomllib.loads(EXAMPLE_TOML)["error_logs"])
    assert section.sentry_query == "is:unresolved" and section.timeout_s == 20 and section.max_pages == 10
    assert section.convex_threshold == 5 and section.convex_settle_s == 2.0
    minimal = cfg(sentry_url="https://sentry.io")
    assert minimal.window_hours == 24 and minimal.severity.value == "P3" and minimal.raised_severity.value == "P2"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"raised_severity": "P3", "severity": "P1"}, "raised_severity must be at least as severe"),
        ({"sentry_projects": []}, "sentry_projects"),
        ({"sentry_projects": ["a", "a"]}, "listed twice"),
        ({"sentry_org": "Token Forge"}, "sentry_org"),
        ({"convex_url": "ftp://x"}, "convex_url"),
        ({"sentry_token": "sntrys_literal"}, "sentry_token"),
        ({"token": {"env": "X"}}, "token"),
        ({"timeout_s": 2, "convex_settle_s": 2}, "convex_settle_s must be shorter than timeout_s"),
    ],
)
def test_bad_sections_name_the_field(overrides, message):
    with pytest.raises(ValidationError, match=message):
        cfg(**overrides)


def listing(issues: list[dict], **kw) -> sentry.IssueList:
    return sentry.IssueList("mint-api", sentry.parse_issues(issues), **{"pages": 1, **kw})


def test_no_new_issue_is_ok():
    old = issue(1, first_seen=NOW - timedelta(days=3), last_seen=NOW - timedelta(hours=1), substatus="ongoing")
    r = error_logs.judge_sentry(cfg(), listing([old]), NOW)
    assert r.status is Status.ok and r.severity == "P3"
    assert r.observed == "0 new, 0 regressed in 24 h"
    assert r.item == "Error Log Review" and r.name == "sentry:mint-api" and r.target == "Sentry tokenforge/mint-api"


def test_new_and_regressed_issues_warn_naming_them_most_events_first():
    issues = [
        issue(12, title="TypeError", culprit="mint", count="57"),
        issue(13, title="RangeError", culprit="fees", count="3"),
        issue(14, title="KeyError", culprit="swap", count="9", first_seen=NOW - timedelta(days=20),
              substatus="regressed"),
        issue(15, title="Stale", first_seen=NOW - timedelta(days=20), last_seen=NOW - timedelta(days=2),
              substatus="regressed"),  # regressed, but not seen in the window
    ]
    r = error_logs.judge_sentry(cfg(), listing(issues), NOW)
    assert r.status is Status.warn and r.severity == "P3"
    assert r.observed == ("2 new, 1 regressed in 24 h: PROJ-12 TypeError in mint (57 events), "
                          "PROJ-14 KeyError in swap (9 events, regressed), PROJ-13 RangeError in fees (3 events)")
    assert "https://sentry.io/tokenforge/mint-api/issues/12/" in r.detail


def test_more_new_issues_than_the_threshold_fail_with_the_raised_severity():
    issues = [issue(i) for i in range(7)]
    r = error_logs.judge_sentry(cfg(new_error_threshold=3, raised_severity="P1"), listing(issues), NOW)
    assert r.status is Status.fail and r.severity == "P1"
    assert r.observed.startswith("7 new, 0 regressed in 24 h: ") and r.observed.endswith("+2 more")
    at = error_logs.judge_sentry(cfg(new_error_threshold=7), listing(issues), NOW)
    assert at.status is Status.warn  # "more than the threshold", not "as many as"


def test_a_window_of_one_hour_counts_only_that_hour():
    issues = [issue(1, first_seen=NOW - timedelta(minutes=30)), issue(2, first_seen=NOW - timedelta(hours=2))]
    r = error_logs.judge_sentry(cfg(window_hours=1), listing(issues), NOW)
    assert r.observed.startswith("1 new, 0 regressed in 1 h: PROJ-1 ")


def test_an_incomplete_listing_is_unknown_unless_it_already_exceeds_the_threshold():
    few = error_logs.judge_sentry(cfg(), listing([issue(1)], complete=False, pages=10), NOW)
    assert few.status is Status.unknown and "stopped after 10 pages" in few.observed
    many = error_logs.judge_sentry(cfg(), listing([issue(i) for i in range(5)], complete=False, pages=10), NOW)
    assert many.status is Status.fail and many.observed.startswith("at least 5 new")


def test_an_unread_project_is_unknown_with_the_reason():
    r = error_logs.judge_sentry(cfg(), sentry.IssueList("mint-api", error="HTTP 429 rate limited", complete=False),
                                NOW)
    assert r.status is Status.unknown and r.observed == "unknown (Sentry not read: HTTP 429 rate limited)"


def log_read(entries: list[dict], **kw) -> convex_logs.LogRead:
    return convex_logs.LogRead([convex_logs.parse_entry(e) for e in entries], **{"pages": 1, **kw})


def test_convex_judgement_counts_failed_executions_per_function():
    quiet = error_logs.judge_convex(cfg(), log_read([entry(error=None)]), NOW)
    assert quiet.status is Status.ok and quiet.observed == "0 failed executions in 24 h (1 log entries read)"
    entries = [entry("tokens:create", "Uncaught Error: fee too low")] * 2 + [entry("tokens:mint", "boom", udf="Action")]
    some = error_logs.judge_convex(cfg(), log_read(entries), NOW)
    assert some.status is Status.warn and some.severity == "P3"
    assert some.observed == "3 failed executions in 24 h in 2 functions: tokens:create 2, tokens:mint 1"
    assert "tokens:create (Mutation) last error: Uncaught Error: fee too low" in some.detail
    many = error_logs.judge_convex(cfg(convex_error_threshold=2), log_read(entries), NOW)
    assert many.status is Status.fail and many.severity == "P2"


def test_convex_unread_or_incomplete_is_unknown():
    r = error_logs.judge_convex(cfg(), convex_logs.LogRead(error="timed out after 20 s", complete=False), NOW)
    assert r.status is Status.unknown and r.observed == "unknown (Convex logs not read: timed out after 20 s)"
    cut = error_logs.judge_convex(cfg(), log_read([entry(error="x")], complete=False, pages=10), NOW)
    assert cut.status is Status.unknown and "stopped after 10 pages" in cut.observed


# -- review: both sources together ------------------------------------------------------------


def both(sentry_handler, convex_handler):
    def handler(request: httpx.Request):
        if request.url.host == "sentry.test":
            return sentry_handler(request)
        return convex_handler(request)

    async def routed(request: httpx.Request):
        result = handler(request)
        return await result if asyncio.iscoroutine(result) else result

    return routed


def review(handler, env: dict[str, str], **overrides):
    async def go():
        async with mock_client(handler) as client:
            resolver = SecretResolver(Path("."), environ=env)
            return await error_logs.review(
                cfg(sentry_projects=["mint-api", "web"], convex_settle_s=0.2, timeout_s=2, **overrides),
                client, resolver, NOW,
            )

    return run(go())


ENV = {"SENTRY_TOKEN": TOKEN, "CONVEX_DEPLOY_KEY": DEPLOY_KEY}


def test_review_reads_every_project_and_convex_in_config_order():
    def sentry_handler(request):
        project = request.url.path.split("/")[5]
        return httpx.Response(200, json=[issue(1, project=project)] if project == "web" else [])

    fake = FakeDeployment([entry("tokens:create", "boom")])
    results = review(both(sentry_handler, fake), ENV)
    assert [r.name for r in results] == ["sentry:mint-api", "sentry:web", "convex:logs"]
    assert [r.status for r in results] == [Status.ok, Status.warn, Status.warn]
    assert all(r.item == "Error Log Review" for r in results)
    for r in results:
        no_secret(*map(str, asdict(r).values()))


def test_a_missing_secret_leaves_that_source_unknown_and_reads_the_others():
    fake = FakeDeployment([])
    results = review(both(lambda request: httpx.Response(200, json=[]), fake), {"CONVEX_DEPLOY_KEY": DEPLOY_KEY})
    by_name = {r.name: r for r in results}
    assert by_name["sentry:mint-api"].status is Status.unknown
    assert "env:SENTRY_TOKEN" in by_name["sentry:mint-api"].observed
    assert by_name["convex:logs"].status is Status.ok


def test_review_failures_never_carry_a_secret():
    results = review(both(answer(401, ECHO), answer(401, CONVEX_ECHO)), ENV)
    assert {r.status for r in results} == {Status.unknown}
    for r in results:
        assert "HTTP 401" in r.observed
        no_secret(*map(str, asdict(r).values()))
