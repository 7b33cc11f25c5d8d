"""Error Log Review against the sandbox's Sentry and Convex doubles, through the project's clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from runbook.checks import CheckResult, Status
from runbook.clients import convex_logs, http_probe, sentry
from runbook.procedures import error_logs
from runbook.secrets import SecretResolver
from sandbox import stack
from sandbox.services import ConvexDeployment
from sandbox.vendors.sentry import SANDBOX_ORG, SANDBOX_PROJECTS, SANDBOX_TOKEN

pytestmark = pytest.mark.sandbox

WEB, BACKEND = SANDBOX_PROJECTS
ENV = {"SENTRY_AUTH_TOKEN": SANDBOX_TOKEN, "CONVEX_DEPLOY_KEY": ConvexDeployment.SANDBOX_DEPLOY_KEY}


def reset_knobs(sb: stack.Sandbox) -> None:
    sb.vendor("sentry", "DELETE", "issues")
    sb.vendor("sentry", "POST", "config", {"per_page": 100})
    sb.vendor("convex", "DELETE", "logs")
    sb.vendor("convex", "DELETE", "logs/config")


@pytest.fixture
def sb(sandbox: stack.Sandbox) -> Iterator[stack.Sandbox]:
    """The shared sandbox with this module's knobs cleared before and after each test."""
    reset_knobs(sandbox)
    yield sandbox
    reset_knobs(sandbox)


def config(sb: stack.Sandbox, **overrides) -> error_logs.ErrorLogs:
    base = dict(
        sentry_url=sb.url("sentry"), sentry_org=SANDBOX_ORG, sentry_projects=list(SANDBOX_PROJECTS),
        sentry_token={"env": "SENTRY_AUTH_TOKEN"}, convex_url=sb.url("convex"),
        convex_deploy_key={"env": "CONVEX_DEPLOY_KEY"}, new_error_threshold=3, timeout_s=5, convex_settle_s=0.3,
    )
    return error_logs.ErrorLogs(**{**base, **overrides})


def review(cfg: error_logs.ErrorLogs, env: dict[str, str] | None = None) -> dict[str, CheckResult]:
    async def go() -> list[CheckResult]:
        async with http_probe.make_client(20) as client:
            resolver = SecretResolver(Path("."), environ=ENV if env is None else env)
            return await error_logs.review(cfg, client, resolver, datetime.now(UTC))

    return {r.name: r for r in asyncio.run(go())}


def add_issue(sb: stack.Sandbox, **spec) -> None:
    sb.vendor("sentry", "POST", "issues", {"level": "error", "count": 1, **spec})


def test_no_issues_and_no_errors_is_ok(sb):
    results = review(config(sb))
    assert list(results) == [f"sentry:{WEB}", f"sentry:{BACKEND}", "convex:logs"]
    for r in results.values():
        assert r.status is Status.ok, r
    assert results[f"sentry:{WEB}"].observed == "0 new, 0 regressed in 24 h"
    assert results["convex:logs"].observed == "0 failed executions in 24 h (0 log entries read)"


def test_one_new_sentry_issue_warns_naming_it(sb):
    add_issue(sb, project=WEB, title="TypeError: fee is undefined", culprit="mint", count=57)
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    add_issue(sb, project=WEB, title="Old noise", count=400, firstSeen=old)  # ongoing: not new
    results = review(config(sb))
    web = results[f"sentry:{WEB}"]
    assert web.status is Status.warn and web.severity == "P3"
    assert web.observed == (
        "1 new, 0 regressed in 24 h: TOKENFORGE-WEB-1 TypeError: fee is undefined in mint (57 events)"
    )
    assert results[f"sentry:{BACKEND}"].status is Status.ok


def test_a_regressed_issue_counts_as_a_new_error(sb):
    add_issue(sb, project=BACKEND, title="KeyError: 'pool'", culprit="swap", count=9, regressed=True)
    r = review(config(sb))[f"sentry:{BACKEND}"]
    assert r.status is Status.warn
    assert r.observed == (
        "0 new, 1 regressed in 24 h: TOKENFORGE-BACKEND-1 KeyError: 'pool' in swap (9 events, regressed)"
    )


def test_more_new_issues_than_the_threshold_fail_with_the_raised_severity(sb):
    for i in range(5):
        add_issue(sb, project=WEB, title=f"Error {i}", count=10 + i)
    r = review(config(sb, new_error_threshold=3, raised_severity="P1"))[f"sentry:{WEB}"]
    assert r.status is Status.fail and r.severity == "P1"
    assert r.observed.startswith("5 new, 0 regressed in 24 h: TOKENFORGE-WEB-5 Error 4 (14 events)")


def test_pagination_across_three_pages_is_counted_exactly(sb):
    sb.vendor("sentry", "POST", "config", {"per_page": 2})
    for i in range(5):
        add_issue(sb, project=WEB, title=f"New {i}", count=1)
    add_issue(sb, project=WEB, title="Ongoing", count=1, firstSeen=(datetime.now(UTC) - timedelta(days=2)).isoformat())

    async def direct() -> sentry.IssueList:
        async with http_probe.make_client(4) as client:
            return await sentry.list_issues(
                client, sb.url("sentry"), SANDBOX_ORG, WEB, SecretStr(SANDBOX_TOKEN), deadline_s=5
            )

    listing = asyncio.run(direct())
    assert listing.error is None and listing.complete
    assert listing.pages == 3 and len(listing.issues) == 6
    assert len({i.id for i in listing.issues}) == 6
    assert all(isinstance(i.count, int) and i.permalink for i in listing.issues)

    before = sb.stats()["sentry"]
    r = review(config(sb, new_error_threshold=10))[f"sentry:{WEB}"]
    assert sb.stats()["sentry"] - before == 3 + 1  # three pages of this project, one of the other
    assert r.status is Status.warn and r.observed.startswith("5 new, 0 regressed in 24 h: ")


def test_the_page_bound_makes_a_long_listing_unknown(sb):
    sb.vendor("sentry", "POST", "config", {"per_page": 1})
    for i in range(3):
        add_issue(sb, project=WEB, title=f"New {i}")
    r = review(config(sb, max_pages=2, new_error_threshold=10))[f"sentry:{WEB}"]
    assert r.status is Status.unknown and "stopped after 2 pages" in r.observed


def test_convex_errors_are_counted_per_function_exactly(sb):
    sb.vendor("convex", "POST", "logs/config", {"page_size": 4})
    structured = {"messages": ["fee", "0"], "level": "ERROR", "timestamp": int(time.time() * 1000),
                  "isTruncated": False}
    sb.vendor("convex", "POST", "logs", [
        {"function": "tokens:create", "udfType": "Mutation", "error": "Uncaught Error: fee too low", "count": 7,
         "ago_s": 600, "logLines": ["[LOG] 'creating'"]},
        {"function": "tokens:mint", "udfType": "Action", "error": "Uncaught Error: RPC down", "count": 3,
         "ago_s": 3600, "logLines": [structured]},
        {"function": "tokens:create", "udfType": "Mutation", "count": 5, "ago_s": 300},  # succeeded
        {"function": "tokens:old", "udfType": "Query", "error": "stale", "count": 2, "ago_s": 25 * 3600},
    ])
    r = review(config(sb, convex_error_threshold=20))["convex:logs"]
    assert r.status is Status.warn and r.severity == "P3"
    assert r.observed == "10 failed executions in 24 h in 2 functions: tokens:create 7, tokens:mint 3"
    assert "tokens:mint (Action) last error: Uncaught Error: RPC down" in r.detail
    over = review(config(sb, convex_error_threshold=9, raised_severity="P1"))["convex:logs"]
    assert over.status is Status.fail and over.severity == "P1"


def test_the_convex_client_pages_by_cursor_and_reads_both_log_line_forms(sb):
    sb.vendor("convex", "POST", "logs/config", {"page_size": 2})
    structured = {"messages": ["minted", 3], "level": "INFO", "timestamp": int(time.time() * 1000),
                  "isTruncated": False}
    sb.vendor("convex", "POST", "logs", [
        {"function": "tokens:create", "error": "boom", "count": 3, "ago_s": 120, "logLines": ["[ERROR] 'boom'"]},
        {"function": "tokens:mint", "udfType": "Action", "count": 2, "ago_s": 60, "logLines": [structured]},
    ])
    now = time.time()

    async def direct() -> convex_logs.LogRead:
        async with http_probe.make_client(4) as client:
            return await convex_logs.read_function_logs(
                client, sb.url("convex"), SecretStr(ConvexDeployment.SANDBOX_DEPLOY_KEY),
                since_ms=(now - 86400) * 1000, until_ms=now * 1000, deadline_s=5, settle_s=0.3,
            )

    read = asyncio.run(direct())
    assert read.error is None and read.complete
    assert read.pages == 3 and len(read.entries) == 5
    assert read.entries[0].log_lines[0].text == "[ERROR] 'boom'"
    assert read.entries[-1].log_lines[0].text == "minted 3" and read.entries[-1].log_lines[0].level == "INFO"


def test_wrong_credentials_are_unknown_naming_the_401(sb):
    results = review(config(sb), env={"SENTRY_AUTH_TOKEN": "sntrys_wrong", "CONVEX_DEPLOY_KEY": "prod:x|wrong"})
    for r in results.values():
        assert r.status is Status.unknown and "HTTP 401" in r.observed, r
        assert "wrong" not in r.observed


def test_sentry_rate_limited_is_unknown_naming_429(sb):
    sb.fault("sentry", "status:429")
    results = review(config(sb))
    for project in SANDBOX_PROJECTS:
        r = results[f"sentry:{project}"]
        assert r.status is Status.unknown and "HTTP 429" in r.observed, r
    assert results["convex:logs"].status is Status.ok


def test_a_hung_convex_is_unknown_timed_out_within_the_deadline(sb):
    sb.fault("convex", "hang")
    started = time.monotonic()
    results = review(config(sb, timeout_s=1.0))
    elapsed = time.monotonic() - started
    r = results["convex:logs"]
    assert r.status is Status.unknown and "timed out" in r.observed, r
    assert elapsed < 2.5, elapsed
    assert results[f"sentry:{WEB}"].status is Status.ok
