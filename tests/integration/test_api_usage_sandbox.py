"""API Usage Review against the sandbox's CoinGecko, Alchemy, X and Discord doubles, with their
usage knobs turned and the hub's faults injected in front of them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runbook.checks import CheckResult, Status
from runbook.clients.http_probe import make_client
from runbook.procedures import api_usage
from runbook.procedures.api_usage import ApiUsage
from runbook.secrets import SecretResolver
from sandbox import stack
from sandbox.vendors import alchemy as alchemy_double
from sandbox.vendors import coingecko as coingecko_double
from sandbox.vendors import social as social_doubles

pytestmark = pytest.mark.sandbox

ENV = {
    "CG_KEY": coingecko_double.SANDBOX_KEY,
    "ALCHEMY_ACCESS_KEY": alchemy_double.SANDBOX_ACCESS_KEY,
    "X_USER_TOKEN": social_doubles.X_SANDBOX_TOKEN,
    "DISCORD_BOT_TOKEN": social_doubles.DISCORD_SANDBOX_TOKEN,
}
KNOBS = {"coingecko": "usage", "alchemy": "usage", "x-api": "ratelimit", "discord": "ratelimit"}


@pytest.fixture
def sb(sandbox: stack.Sandbox) -> Iterator[stack.Sandbox]:
    """The sandbox with every usage double back at its defaults before and after the test."""
    for name, path in KNOBS.items():
        sandbox.vendor(name, "DELETE", path)
    yield sandbox
    for name, path in KNOBS.items():
        sandbox.vendor(name, "DELETE", path)


def config(sb: stack.Sandbox, **overrides) -> ApiUsage:
    sections = {
        "coingecko": {"base_url": sb.url("coingecko") + "/api/v3", "api_key": {"env": "CG_KEY"}},
        "alchemy": {
            "admin_url": sb.url("alchemy") + "/v1",
            "access_key": {"env": "ALCHEMY_ACCESS_KEY"},
            "monthly_cu_limit": 30_000_000,
            "used_cu_field": alchemy_double.PLACEHOLDER_FIELD,
        },
        "x": {"base_url": sb.url("x-api") + "/2", "user_token": {"env": "X_USER_TOKEN"}},
        "discord": {"base_url": sb.url("discord") + "/api/v10", "bot_token": {"env": "DISCORD_BOT_TOKEN"}},
        "timeout_s": 3.0,
    }
    return ApiUsage.model_validate({**sections, **overrides})


def review(sb: stack.Sandbox, cfg: ApiUsage | None = None, environ: dict[str, str] = ENV) -> dict[str, CheckResult]:
    async def run() -> list[CheckResult]:
        async with make_client(8) as client:
            resolver = SecretResolver(Path("."), environ=environ)
            return await api_usage.review(cfg or config(sb), client, resolver, datetime.now(UTC))

    return {r.name: r for r in asyncio.run(run())}


def test_the_doubles_defaults_pass_every_service(sb):
    results = review(sb)
    assert list(results) == ["coingecko", "alchemy", "x", "discord"]
    assert all(r.status is Status.ok for r in results.values()), results


@pytest.mark.parametrize(
    "used, status", [(96_000, Status.fail), (85_000, Status.warn), (10_000, Status.ok)]
)
def test_coingecko_usage_knob_drives_the_verdict(sb, used, status):
    sb.vendor("coingecko", "POST", "usage", {"used": used, "limit": 100_000})
    r = review(sb)["coingecko"]
    assert r.status is status, r
    left = 100_000 - used
    assert r.observed.startswith(f"{used:,} of 100,000 credits used ({used / 1000:.1f}%), {left:,} left; at this burn")
    assert r.expected == "< 80% used"


def test_coingecko_key_reports_the_documented_fields(sb):
    knobs = sb.vendor("coingecko", "POST", "usage", {"used": 96_000, "limit": 100_000})
    assert knobs["key_body"] == {
        "plan": "Analyst",
        "rate_limit_request_per_minute": 500,
        "monthly_call_credit": 100_000,
        "current_total_monthly_calls": 96_000,
        "current_remaining_monthly_calls": 4_000,
    }
    assert sb.vendor("coingecko", "GET", "usage")["used"] == 96_000


def test_coingecko_429_fault_is_unknown_naming_429(sb):
    sb.fault("coingecko", "status:429")
    r = review(sb)["coingecko"]
    assert r.status is Status.unknown
    assert "HTTP 429" in r.observed and "rate limited" in r.observed


def test_coingecko_throttled_body_is_unknown_with_the_vendor_message(sb):
    sb.vendor("coingecko", "POST", "usage", {"throttle": True})
    r = review(sb)["coingecko"]
    assert r.status is Status.unknown
    assert "HTTP 429" in r.observed and "exceeded the Rate Limit" in r.observed and "error_code 429" in r.observed


def test_coingecko_wrong_key_is_unknown_and_never_quotes_a_key(sb):
    wrong = "cg-wrong-key-canary-8842"
    r = review(sb, environ={**ENV, "CG_KEY": wrong})["coingecko"]
    assert r.status is Status.unknown
    assert "HTTP 401" in r.observed and "Invalid API Key" in r.observed
    assert wrong not in json.dumps(r.to_dict()) and coingecko_double.SANDBOX_KEY not in json.dumps(r.to_dict())


def test_x_with_5_of_900_left_fails(sb):
    sb.vendor("x-api", "POST", "ratelimit", {"limit": 900, "remaining": 5, "reset_in_s": 600})
    r = review(sb)["x"]
    assert r.status is Status.fail, r
    # the call itself spends one request of the window, as X's does
    assert r.observed.startswith("896 of 900 requests used in the current window (99.6%), 4 left; resets at ")
    assert "(in 10 min)" in r.observed
    assert sb.vendor("x-api", "GET", "ratelimit")["remaining"] == 4


def test_x_with_the_window_used_up_answers_429_and_fails(sb):
    sb.vendor("x-api", "POST", "ratelimit", {"limit": 900, "remaining": 0, "reset_in_s": 300})
    r = review(sb)["x"]
    assert r.status is Status.fail
    assert r.observed.startswith("900 of 900 requests used in the current window (100.0%), 0 left")
    assert "HTTP 429" in r.detail and "Rate limit exceeded (code 88)" in r.detail


def test_x_window_refills_after_its_reset(sb):
    sb.vendor("x-api", "POST", "ratelimit", {"limit": 900, "remaining": 0, "reset_in_s": 0, "window_s": 900})
    r = review(sb)["x"]
    assert r.status is Status.ok and "1 of 900 requests used" in r.observed


def test_x_wrong_token_is_unknown_with_401(sb):
    r = review(sb, environ={**ENV, "X_USER_TOKEN": "app-only-bearer"})["x"]
    assert r.status is Status.unknown and "HTTP 401" in r.observed and "app-only-bearer" not in r.observed


@pytest.mark.parametrize("remaining, status", [(3, Status.ok), (2, Status.warn), (1, Status.fail)])
def test_discord_window_knob_drives_the_verdict(sb, remaining, status):
    sb.vendor("discord", "POST", "ratelimit", {"limit": 10, "remaining": remaining + 1, "reset_in_s": 30})
    r = review(sb, config(sb, warn_at=0.75, fail_at=0.9))["discord"]
    assert r.status is status, r
    assert f"{10 - remaining} of 10 requests used" in r.observed
    assert "bucket sandbox-users-me" in r.detail


def test_discord_route_429_fails_and_global_429_is_unknown(sb):
    sb.vendor("discord", "POST", "ratelimit", {"limit": 5, "remaining": 0, "reset_in_s": 60})
    r = review(sb)["discord"]
    assert r.status is Status.fail and "5 of 5 requests used" in r.observed
    assert "Retry-After" in r.detail and "scope user" in r.detail

    sb.vendor("discord", "POST", "ratelimit", {"global": True})
    r = review(sb)["discord"]
    assert r.status is Status.unknown
    assert "HTTP 429" in r.observed and "global limit" in r.observed and "scope global" in r.observed


def test_alchemy_compute_units_from_the_usage_api(sb):
    sb.vendor("alchemy", "POST", "usage", {"used_cu": 27_000_000})
    r = review(sb)["alchemy"]
    assert r.status is Status.warn
    assert r.observed.startswith("27,000,000 of 30,000,000 compute units used (90.0%), 3,000,000 left")
    assert "limit 30,000,000 CU/month from configuration" in r.detail


def test_alchemy_serves_a_captured_body_verbatim(sb):
    sb.vendor("alchemy", "POST", "usage", {"body": {"captured": {"monthCu": "29100000"}}})
    r = review(sb, config(sb, alchemy={
        "admin_url": sb.url("alchemy") + "/v1", "access_key": {"env": "ALCHEMY_ACCESS_KEY"},
        "monthly_cu_limit": 30_000_000, "used_cu_field": "captured.monthCu",
    }))["alchemy"]
    assert r.status is Status.fail and "29,100,000 of 30,000,000" in r.observed


def test_alchemy_without_a_field_path_is_unknown_saying_why(sb):
    r = review(sb, config(sb, alchemy={
        "admin_url": sb.url("alchemy") + "/v1", "access_key": {"env": "ALCHEMY_ACCESS_KEY"},
        "monthly_cu_limit": 30_000_000,
    }))["alchemy"]
    assert r.status is Status.unknown
    assert "schema is not documented" in r.observed and "tfops_sandbox_placeholder" in r.observed


def test_alchemy_with_an_app_key_instead_of_an_access_key_is_unknown_naming_the_right_key(sb):
    r = review(sb, environ={**ENV, "ALCHEMY_ACCESS_KEY": "an-app-rpc-key"})["alchemy"]
    assert r.status is Status.unknown
    assert "HTTP 401" in r.observed and "Access Key scoped to Usage" in r.observed


@pytest.mark.parametrize(
    "target, mode, words",
    [("alchemy", "down", "connection failed"), ("discord", "hang", "timed out"), ("x-api", "status:503", "HTTP 503")],
)
def test_faults_make_that_service_unknown_and_leave_the_others(sb, target, mode, words):
    sb.fault(target, mode)
    results = review(sb, config(sb, timeout_s=1.0))
    name = {"x-api": "x"}.get(target, target)
    assert results[name].status is Status.unknown and words in results[name].observed, results[name]
    assert all(r.status is Status.ok for n, r in results.items() if n != name), results


def test_a_missing_secret_is_unknown_naming_the_reference(sb):
    environ = {k: v for k, v in ENV.items() if k != "DISCORD_BOT_TOKEN"}
    r = review(sb, environ=environ)["discord"]
    assert r.status is Status.unknown
    assert r.observed == "not checked: secret env:DISCORD_BOT_TOKEN: environment variable is not set"


def test_bad_knobs_are_refused(sb):
    with pytest.raises(stack.SandboxError, match="unknown knobs"):
        sb.vendor("coingecko", "POST", "usage", {"usd": 1})
    with pytest.raises(stack.SandboxError, match="remaining <= limit"):
        sb.vendor("x-api", "POST", "ratelimit", {"limit": 10, "remaining": 11})
    with pytest.raises(stack.SandboxError, match="used_cu"):
        sb.vendor("alchemy", "POST", "usage", {"used_cu": -1})
