"""The review steps (error logs, API usage) as flows against the sandbox's vendor doubles."""

from __future__ import annotations

import pytest

from flows.reviews import error_logs_flow

pytestmark = [pytest.mark.sandbox]


def clear(sandbox):
    sandbox.vendor("sentry", "DELETE", "issues")
    sandbox.vendor("convex", "DELETE", "logs")


async def test_quiet_logs_pass(prefect_api, sandbox):
    clear(sandbox)
    report = await error_logs_flow(env_file=str(sandbox.env_file))
    assert report["passed"] is True, report["markdown"]
    assert {c["name"] for c in report["checks"]} == {"sentry:tokenforge-web", "sentry:tokenforge-backend",
                                                     "convex:logs"}


async def test_a_new_sentry_issue_is_named_in_the_report(prefect_api, sandbox):
    clear(sandbox)
    sandbox.vendor("sentry", "POST", "issues", {"project": "tokenforge-web", "title": "TypeError: fee is undefined"})
    report = await error_logs_flow(env_file=str(sandbox.env_file))
    web = next(c for c in report["checks"] if c["name"] == "sentry:tokenforge-web")
    assert web["status"] == "warn"
    assert "TypeError: fee is undefined" in web["observed"]
    assert "## Error Log Review: WARN" in report["markdown"]
    assert sandbox.received("slack") == []  # a warning is reported, not paged or posted


async def test_api_usage_flow_fails_coingecko_at_96_percent_and_alerts(prefect_api, sandbox):
    from flows.reviews import api_usage_flow

    quiet = await api_usage_flow(env_file=str(sandbox.env_file), alert=False)
    statuses = {c["name"]: c["status"] for c in quiet["checks"]}
    # Alchemy does not document its usage body: the sandbox serves the placeholder field the env file names.
    assert statuses == {"coingecko": "ok", "alchemy": "ok", "x": "ok", "discord": "ok"}, quiet["markdown"]
    sandbox.vendor("coingecko", "POST", "usage", {"used": 96_000, "limit": 100_000})
    report = await api_usage_flow(env_file=str(sandbox.env_file))
    cg = next(c for c in report["checks"] if c["name"] == "coingecko")
    assert cg["status"] == "fail" and "96,000 of 100,000 credits used (96.0%)" in cg["observed"]
    assert [c["status"] for c in report["checks"] if c["name"] != "coingecko"] == ["ok", "ok", "ok"]
    slack = sandbox.received("slack")
    assert len(slack) == 1 and "CoinGecko" in slack[0]["text"]


async def test_security_scan_flow_flags_a_spike_of_failed_logins_and_names_the_source(prefect_api, sandbox):
    from flows.reviews import security_scan_flow

    quiet = await security_scan_flow(env_file=str(sandbox.env_file), alert=False)
    names = {c["name"]: c["status"] for c in quiet["checks"]}
    assert names["security:failed-logins"] == "ok", quiet["markdown"]
    assert {"security:onchain:ethereum", "security:onchain:bsc"} <= set(names)
    sandbox.vendor("convex", "POST", "logins", {"source": "203.0.113.7", "count": 30, "ago_s": 600})
    report = await security_scan_flow(env_file=str(sandbox.env_file))
    logins = next(c for c in report["checks"] if c["name"] == "security:failed-logins")
    assert logins["status"] == "fail" and "203.0.113.7" in logins["observed"]
    assert len(sandbox.received("slack")) == 1
