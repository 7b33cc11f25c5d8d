"""API Usage Review: vendor parsers on documented payloads, thresholds, forecasts, and every client
against vendor failures through httpx.MockTransport (no network)."""

from __future__ import annotations

import asyncio
import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from runbook.checks import Status
from runbook.clients import alchemy, coingecko, ratelimits
from runbook.clients.http_probe import make_client
from runbook.clients.ratelimits import ParseError, RateWindow
from runbook.procedures import api_usage
from runbook.procedures.api_usage import ApiUsage
from runbook.secrets import SecretResolver

KEY = "cg-key-6f1e0c9d-canary"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

# shared/vendors/coingecko.md section 1, verbatim
CG_KEY_DOC = {
    "plan": "Other",
    "rate_limit_request_per_minute": 1000,
    "monthly_call_credit": 1000000,
    "current_total_monthly_calls": 104,
    "current_remaining_monthly_calls": 999896,
}
# shared/vendors/x-twitter.md
X_HEADERS_DOC = {"x-rate-limit-limit": "900", "x-rate-limit-remaining": "847", "x-rate-limit-reset": "1705420800"}
X_ME_DOC = {"data": {"id": "2244994945", "name": "X Dev", "username": "XDevelopers"}}
X_429_DOC = {"errors": [{"code": 88, "message": "Rate limit exceeded"}]}
# shared/vendors/discord.md
DISCORD_HEADERS_DOC = {
    "X-RateLimit-Limit": "5",
    "X-RateLimit-Remaining": "0",
    "X-RateLimit-Reset": "1470173023",
    "X-RateLimit-Reset-After": "1",
    "X-RateLimit-Bucket": "abcd1234",
}
DISCORD_429_HEADERS_DOC = {
    "Retry-After": "65",
    "X-RateLimit-Limit": "10",
    "X-RateLimit-Remaining": "0",
    "X-RateLimit-Reset": "1470173023.123",
    "X-RateLimit-Reset-After": "64.57",
    "X-RateLimit-Bucket": "abcd1234",
    "X-RateLimit-Scope": "user",
}
DISCORD_429_BODY_DOC = {"message": "You are being rate limited.", "retry_after": 64.57, "global": False}


# --- parsers -----------------------------------------------------------------------------------


def test_coingecko_key_parses_the_documented_answer():
    u = coingecko.parse_key(CG_KEY_DOC)
    assert (u.monthly_call_credit, u.used, u.remaining, u.plan, u.rate_limit_per_minute) == (
        1_000_000, 104, 999_896, "Other", 1000,
    )
    assert u.limit == 1_000_000


def test_coingecko_key_tolerates_the_sdk_per_key_overrides_and_uses_them_as_the_limit():
    u = coingecko.parse_key(
        {**CG_KEY_DOC, "api_key_monthly_call_credit": 5000, "api_key_rate_limit_request_per_minute": 30}
    )
    assert u.limit == 5000 and u.key_rate_limit_per_minute == 30


@pytest.mark.parametrize(
    "payload, words",
    [
        ({k: v for k, v in CG_KEY_DOC.items() if k != "current_total_monthly_calls"}, "current_total_monthly_calls"),
        ({**CG_KEY_DOC, "monthly_call_credit": "1000000"}, "monthly_call_credit"),
        ({**CG_KEY_DOC, "current_remaining_monthly_calls": True}, "current_remaining_monthly_calls"),
        ({**CG_KEY_DOC, "monthly_call_credit": 0}, "is 0"),
        ([CG_KEY_DOC], "not a JSON object"),
    ],
)
def test_coingecko_key_rejects_missing_or_malformed_fields_naming_them(payload, words):
    with pytest.raises(ParseError, match=words):
        coingecko.parse_key(payload)


def test_coingecko_error_reason_reads_the_three_normalised_shapes():
    assert coingecko.error_reason({"status": {"error_code": 429, "error_message": "slow down"}}) == (
        "slow down (error_code 429)"
    )
    assert coingecko.error_reason({"error": {"status": {"error_code": 10002, "error_message": "missing"}}}) == (
        "missing (error_code 10002)"
    )
    assert coingecko.error_reason({"error": "coin not found"}) == "coin not found"
    assert coingecko.error_reason("<html>") is None


def test_x_headers_parse_the_documented_example_in_any_case():
    w = ratelimits.parse_x_headers(X_HEADERS_DOC)
    assert (w.limit, w.remaining, w.reset_epoch, w.used) == (900, 847, 1705420800.0, 53)
    upper = ratelimits.parse_x_headers({k.upper(): v for k, v in X_HEADERS_DOC.items()})
    assert upper == w


@pytest.mark.parametrize(
    "headers, words",
    [
        ({k: v for k, v in X_HEADERS_DOC.items() if k != "x-rate-limit-remaining"}, "no x-rate-limit-remaining"),
        ({**X_HEADERS_DOC, "x-rate-limit-limit": "lots"}, "not a number"),
        ({**X_HEADERS_DOC, "x-rate-limit-limit": "0"}, "is 0"),
        ({**X_HEADERS_DOC, "x-rate-limit-remaining": "901"}, "exceeds"),
        ({k: v for k, v in X_HEADERS_DOC.items() if k != "x-rate-limit-reset"}, "no x-rate-limit-reset"),
    ],
)
def test_x_headers_missing_or_malformed_are_parse_errors(headers, words):
    with pytest.raises(ParseError, match=words):
        ratelimits.parse_x_headers(headers)


def test_discord_headers_parse_both_documented_examples():
    w = ratelimits.parse_discord_headers(DISCORD_HEADERS_DOC)
    assert (w.limit, w.remaining, w.reset_epoch, w.reset_after_s, w.bucket) == (5, 0, 1470173023.0, 1.0, "abcd1234")
    w429 = ratelimits.parse_discord_headers(DISCORD_429_HEADERS_DOC)
    assert (w429.limit, w429.reset_epoch, w429.reset_after_s) == (10, 1470173023.123, 64.57)
    only_after = {k: v for k, v in DISCORD_HEADERS_DOC.items() if k != "X-RateLimit-Reset"}
    assert ratelimits.parse_discord_headers(only_after).reset_epoch is None
    with pytest.raises(ParseError, match="neither"):
        ratelimits.parse_discord_headers(
            {k: v for k, v in DISCORD_HEADERS_DOC.items() if not k.startswith("X-RateLimit-Reset")}
        )


def test_discord_error_reason_reads_the_429_body():
    assert ratelimits.discord_error_reason(DISCORD_429_BODY_DOC) == "You are being rate limited., retry_after 64.57 s"
    assert ratelimits.discord_error_reason({**DISCORD_429_BODY_DOC, "global": True}).endswith("global limit")


def test_x_error_reason_reads_the_documented_429_and_problem_bodies():
    assert ratelimits.x_error_reason(X_429_DOC) == "Rate limit exceeded (code 88)"
    assert ratelimits.x_error_reason({"title": "Unauthorized", "detail": "Unauthorized", "status": 401}) == (
        "Unauthorized - Unauthorized"
    )


def test_retry_hint_names_each_documented_header():
    assert ratelimits.retry_hint({"Retry-After": "65"}) == "Retry-After 65 s"
    assert "2024-01-16 16:00:00 UTC" in ratelimits.retry_hint({"x-rate-limit-reset": "1705420800"})
    assert ratelimits.retry_hint({"X-RateLimit-Reset-After": "64.57", "X-RateLimit-Reset": "1470173023.123"}) == (
        "window resets in 64.57 s"
    )
    assert ratelimits.retry_hint({}) == ""


def test_alchemy_summary_names_no_field_by_default_and_lists_what_came_back():
    with pytest.raises(ParseError, match=r"used_cu_field.*top-level fields: a, b"):
        alchemy.parse_summary({"b": 1, "a": {"x": 2}}, None)


def test_alchemy_summary_reads_the_configured_path_numbers_and_numeric_strings():
    payload = {"period": {"totals": [{"cu": 123}, {"cu": "456.5"}]}}
    assert alchemy.parse_summary(payload, "period.totals.0.cu") == 123.0
    assert alchemy.parse_summary(payload, "period.totals.1.cu") == 456.5
    with pytest.raises(ParseError, match="'period.totals.2'"):
        alchemy.parse_summary(payload, "period.totals.2.cu")
    with pytest.raises(ParseError, match="not a number"):
        alchemy.parse_summary({"cu": "many"}, "cu")
    with pytest.raises(ParseError, match="not a number"):
        alchemy.parse_summary({"cu": None}, "cu")
    with pytest.raises(ParseError, match="not a JSON object"):
        alchemy.parse_summary([1], "cu")


# --- thresholds and forecasts ------------------------------------------------------------------


def cfg(**overrides) -> ApiUsage:
    base = {
        "coingecko": {"api_key": {"env": "CG_KEY"}},
        "alchemy": {"access_key": {"env": "ALCHEMY_KEY"}, "monthly_cu_limit": 100_000, "used_cu_field": "cu"},
        "x": {"user_token": {"env": "X_TOKEN"}},
        "discord": {"bot_token": {"env": "DISCORD_TOKEN"}},
    }
    return ApiUsage.model_validate({**base, **overrides})


def monthly(used, limit=100_000, now=NOW, warn_at=0.80, fail_at=0.95, billing_day=1):
    return api_usage.judge_monthly(
        api_usage.COINGECKO, used=used, limit=limit, left=limit - used, unit="credits", now=now,
        billing_day=billing_day, warn_at=warn_at, fail_at=fail_at, severity="P2",
    )


@pytest.mark.parametrize(
    "used, status", [(79_900, Status.ok), (80_000, Status.warn), (94_999, Status.warn), (95_000, Status.fail)]
)
def test_monthly_thresholds_are_inclusive(used, status):
    assert monthly(used).status is status


def test_thresholds_are_configurable():
    assert monthly(60_000, warn_at=0.5, fail_at=0.6).status is Status.fail
    assert api_usage.grade(0.799, 0.8, 0.95) is Status.ok
    assert api_usage.grade(0.8, 0.8, 0.95) is Status.warn
    assert api_usage.grade(0.95, 0.8, 0.95) is Status.fail


def test_monthly_line_reads_like_the_report_with_the_run_out_date():
    r = monthly(96_000)
    assert r.status is Status.fail
    assert r.observed == "96,000 of 100,000 credits used (96.0%), 4,000 left; at this burn runs out on 2026-11-29"
    assert r.expected == "< 80% used"
    assert r.item == "API Usage Review" and r.target == "CoinGecko" and r.group == "CoinGecko"
    assert "billing period 2026-11-01 to 2026-12-01" in r.detail


def test_billing_period_handles_the_billing_day_and_year_ends():
    assert api_usage.billing_period(NOW) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    jan = datetime(2027, 1, 10, tzinfo=UTC)
    assert api_usage.billing_period(jan, 15) == (datetime(2026, 12, 15, tzinfo=UTC), datetime(2027, 1, 15, tzinfo=UTC))
    dec = datetime(2026, 12, 20, tzinfo=UTC)
    assert api_usage.billing_period(dec, 15) == (datetime(2026, 12, 15, tzinfo=UTC), datetime(2027, 1, 15, tzinfo=UTC))


def test_run_out_date_is_start_plus_elapsed_times_limit_over_used():
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    ten_days = start + timedelta(days=10)
    # half the quota in 10 days: runs out after 20 days
    assert api_usage.run_out_at(50_000, 100_000, start, end, ten_days) == start + timedelta(days=20)
    # a third in 10 days: lasts exactly the 30-day month, which is not running out
    assert api_usage.run_out_at(100_000 / 3, 100_000, start, end, ten_days) is None
    assert api_usage.run_out_at(0, 100_000, start, end, ten_days) is None
    assert api_usage.run_out_at(100_000, 100_000, start, end, ten_days) == ten_days


def test_a_quota_that_lasts_says_so_with_the_projection():
    r = monthly(10_000, now=datetime(2026, 11, 16, tzinfo=UTC))
    assert r.status is Status.ok
    assert r.observed == (
        "10,000 of 100,000 credits used (10.0%), 90,000 left; "
        "at this burn lasts the billing period (about 20,000 by 2026-12-01)"
    )


def test_a_used_up_quota_fails_and_says_so():
    r = monthly(100_500)
    assert r.status is Status.fail
    assert r.observed == "100,500 of 100,000 credits used (100.5%), 0 left; the quota is used up"


def test_nothing_used_yet():
    assert monthly(0).observed.endswith("nothing used yet this billing period")


def test_window_line_reports_share_left_and_reset():
    reset = NOW + timedelta(minutes=10)
    r = api_usage.judge_window(
        api_usage.X, RateWindow(900, 5, reset_epoch=reset.timestamp()), now=NOW, warn_at=0.8, fail_at=0.95,
        severity="P2",
    )
    assert r.status is Status.fail
    assert r.observed == (
        "895 of 900 requests used in the current window (99.4%), 5 left; resets at 2026-11-28 12:10:00 UTC (in 10 min)"
    )
    assert r.expected == "< 80% of the rate-limit window used" and r.group == "Social APIs"


def test_window_reset_from_reset_after_when_no_epoch():
    r = api_usage.judge_window(
        api_usage.DISCORD, RateWindow(10, 9, reset_after_s=64.57, bucket="abcd1234"), now=NOW, warn_at=0.8,
        fail_at=0.95, severity="P2",
    )
    assert r.status is Status.ok
    assert "resets at 2026-11-28 12:01:04 UTC (in 65 s)" in r.observed and r.detail == "bucket abcd1234"


def test_unreadable_readings_are_unknown_with_the_reason():
    c = cfg()
    r = api_usage.judge_coingecko(c, coingecko.CreditReading(error="CoinGecko: timed out"), NOW)
    assert r.status is Status.unknown and r.observed == "usage not read: CoinGecko: timed out"
    r = api_usage.judge_social(c, api_usage.X, ratelimits.WindowReading(error="X: HTTP 500"), NOW)
    assert r.status is Status.unknown and "X: HTTP 500" in r.detail


# --- configuration -----------------------------------------------------------------------------

EXAMPLE_TOML = """
[api_usage]
warn_at = 0.8
fail_at = 0.95
severity = "P2"
timeout_s = 10.0

[api_usage.coingecko]
base_url = "https://pro-api.coingecko.com/api/v3"
api_key = { env = "COINGECKO_PRO_API_KEY" }

[api_usage.alchemy]
admin_url = "https://admin-api.alchemy.com/v1"
access_key = { prefect_secret = "alchemy-usage-access-key" }
monthly_cu_limit = 30000000

[api_usage.x]
user_token = { env = "X_USER_ACCESS_TOKEN" }

[api_usage.discord]
bot_token = { file = "secrets/discord_bot_token" }
"""


def test_example_configuration_loads_with_vendor_defaults():
    c = ApiUsage.model_validate(tomllib.loads(EXAMPLE_TOML)["api_usage"])
    assert c.x is not None and c.x.base_url == "https://api.x.com/2"
    assert c.discord is not None and c.discord.base_url == "https://discord.com/api/v10"
    assert c.alchemy is not None and c.alchemy.used_cu_field is None and c.alchemy.billing_day == 1
    assert [r.describe() for r in c.secret_refs()] == [
        "env:COINGECKO_PRO_API_KEY", "prefect-secret:alchemy-usage-access-key", "env:X_USER_ACCESS_TOKEN",
        "file:secrets/discord_bot_token",
    ]


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"warn_at": 0.95, "fail_at": 0.9}, "warn_at must be below fail_at"),
        ({"coingecko": None, "alchemy": None, "x": None, "discord": None}, "at least one"),
        ({"coingecko": {"api_key": {"env": "K"}, "base_url": "ftp://x"}}, "not an http"),
        ({"coingecko": {"api_key": {"env": "K"}, "billing_day": 31}}, "less than or equal to 28"),
        ({"alchemy": {"access_key": {"env": "K"}}}, "monthly_cu_limit"),
        ({"alchemy": {"access_key": {"env": "K"}, "monthly_cu_limit": 1, "used_cu_field": "a b"}}, "pattern"),
        ({"x": {"token": {"env": "K"}}}, "Extra inputs"),
    ],
)
def test_bad_configuration_is_an_error_naming_it(overrides, words):
    with pytest.raises(ValidationError, match=words):
        cfg(**overrides)


# --- clients and review against failing vendors (MockTransport) --------------------------------

SECRETS = {"CG_KEY": KEY, "ALCHEMY_KEY": KEY + "-al", "X_TOKEN": KEY + "-x", "DISCORD_TOKEN": KEY + "-d"}


def resolver(environ=None) -> SecretResolver:
    return SecretResolver(Path("/nonexistent"), environ=SECRETS if environ is None else environ)


def answer(status: int, body=None, headers=None, raw: bytes | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        return httpx.Response(status, content=content, headers={"Content-Type": "application/json", **(headers or {})})

    return handler


async def read_all(handler, timeout_s: float = 2.0, secret: str = KEY, used_cu_field: str | None = "cu"):
    """Each client once against `handler`: {vendor: error or None}."""
    key = SecretStr(secret)
    async with make_client(8, transport=httpx.MockTransport(handler)) as client:
        cg = await coingecko.read_key_usage(client, coingecko.PRO_ROOT, key, timeout_s=timeout_s)
        al = await alchemy.read_usage_summary(
            client, alchemy.ADMIN_ROOT, key, timeout_s=timeout_s, used_cu_field=used_cu_field
        )
        x = await ratelimits.read_x_window(client, "https://api.x.com/2", key, timeout_s=timeout_s)
        dc = await ratelimits.read_discord_window(client, "https://discord.com/api/v10", key, timeout_s=timeout_s)
    return {"coingecko": cg.error, "alchemy": al.error, "x": x.error, "discord": dc.error}


@pytest.mark.parametrize(
    "handler, words",
    [
        # every body echoes the key, as a careless vendor might: it must never reach a message
        (answer(401, {"error": f"bad key {KEY}", "message": f"bad key {KEY}", "detail": KEY}), "HTTP 401"),
        (answer(403, raw=f"forbidden {KEY}".encode()), "HTTP 403"),
        (answer(429, {"status": {"error_code": 429, "error_message": KEY}}, {"Retry-After": "30"}), "HTTP 429"),
        (answer(500, raw=b"<html>oops</html>"), "HTTP 500"),
        (answer(503, raw=b""), "HTTP 503"),
        (answer(301, raw=b"", headers={"Location": "https://elsewhere.test/"}), "redirects are not followed"),
        (answer(200, raw=b"{not json"), "not JSON"),
    ],
)
async def test_every_client_turns_vendor_errors_into_a_reason_without_the_key(handler, words):
    errors = await read_all(handler)
    for vendor, error in errors.items():
        assert error is not None and words in error, (vendor, error)
        assert KEY not in error, (vendor, error)


async def test_every_client_names_429_retry_information():
    errors = await read_all(answer(429, {}, {"Retry-After": "30"}))
    for vendor, error in errors.items():
        assert "rate limited (HTTP 429" in error and "Retry-After 30 s" in error, (vendor, error)


async def test_every_client_survives_timeouts_and_refused_connections():
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused while sending {KEY}", request=request)

    for handler, words in ((slow, "timed out"), (refused, "connection failed")):
        errors = await read_all(handler, timeout_s=0.05)
        for vendor, error in errors.items():
            assert error is not None and words in error and KEY not in error, (vendor, error)


async def test_a_200_without_the_documented_fields_is_a_reason():
    errors = await read_all(answer(200, {"unexpected": 1}))
    assert "no 'monthly_call_credit'" in errors["coingecko"]
    assert "no 'cu'" in errors["alchemy"]
    assert "no 'data' object" in errors["x"]
    assert "no x-ratelimit-limit header" in errors["discord"]


async def test_alchemy_without_a_field_path_fetches_and_explains():
    errors = await read_all(answer(200, {"whatever": {"x": 1}}), used_cu_field=None)
    assert "schema is not documented" in errors["alchemy"] and "whatever" in errors["alchemy"]


async def test_alchemy_401_says_which_key_the_usage_api_wants():
    errors = await read_all(answer(401, raw=b"requires authentication"))
    assert "Access Key scoped to Usage" in errors["alchemy"]


def vendor_handler(cg=None, cu=1_000, x_remaining=800, discord=None, seen=None):
    """A well-behaved set of vendors answering the documented shapes; checks each auth header."""

    def handler(request: httpx.Request) -> httpx.Response:
        host, path, auth = request.url.host, request.url.path, request.headers.get("authorization")
        if seen is not None:
            seen.append((host, path))
        if host == "pro-api.coingecko.com":
            assert path == "/api/v3/key" and request.headers["x-cg-pro-api-key"] == SECRETS["CG_KEY"]
            return httpx.Response(200, json=cg or CG_KEY_DOC)
        if host == "admin-api.alchemy.com":
            assert path == "/v1/usage/summary" and auth == f"Bearer {SECRETS['ALCHEMY_KEY']}"
            return httpx.Response(200, json={"cu": cu})
        if host == "api.x.com":
            assert path == "/2/users/me" and auth == f"Bearer {SECRETS['X_TOKEN']}"
            reset = str(int((NOW + timedelta(minutes=15)).timestamp()))
            return httpx.Response(
                200, json=X_ME_DOC,
                headers={"x-rate-limit-limit": "900", "x-rate-limit-remaining": str(x_remaining),
                         "x-rate-limit-reset": reset},
            )
        if host == "discord.com":
            assert path == "/api/v10/users/@me" and auth == f"Bot {SECRETS['DISCORD_TOKEN']}"
            status, headers, body = discord or (200, {**DISCORD_HEADERS_DOC, "X-RateLimit-Remaining": "4"}, {})
            return httpx.Response(status, json=body, headers=headers)
        raise AssertionError(f"unexpected call {request.url}")

    return handler


async def run_review(handler, config: ApiUsage | None = None, environ=None):
    async with make_client(8, transport=httpx.MockTransport(handler)) as client:
        results = await api_usage.review(config or cfg(), client, resolver(environ), NOW)
    return {r.name: r for r in results}


async def test_review_reads_every_service_in_order():
    results = await run_review(vendor_handler(cu=90_000))
    assert list(results) == ["coingecko", "alchemy", "x", "discord"]
    assert results["coingecko"].status is Status.ok
    assert results["coingecko"].observed.startswith("104 of 1,000,000 credits used (0.0%), 999,896 left")
    assert "plan Other" in results["coingecko"].detail and "rate limit 1,000 calls/min" in results["coingecko"].detail
    assert results["alchemy"].status is Status.warn
    assert results["alchemy"].observed.startswith("90,000 of 100,000 compute units used (90.0%)")
    assert results["x"].status is Status.ok and "100 of 900 requests used" in results["x"].observed
    assert results["discord"].status is Status.ok and "1 of 5 requests used" in results["discord"].observed
    for r in results.values():
        assert r.item == "API Usage Review" and r.severity == "P2"


async def test_review_runs_the_services_concurrently():
    started = asyncio.Event()
    arrived: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        arrived.append(request.url.host)
        if len(arrived) == 4:
            started.set()
        await asyncio.wait_for(started.wait(), 1)  # only returns if all four are in flight at once
        return vendor_handler()(request)

    results = await run_review(handler)
    assert all(r.status is Status.ok for r in results.values()), results


async def test_a_missing_secret_is_unknown_naming_the_reference_and_the_others_still_run():
    environ = {k: v for k, v in SECRETS.items() if k != "X_TOKEN"}
    seen: list[tuple[str, str]] = []
    results = await run_review(vendor_handler(seen=seen), environ=environ)
    x = results["x"]
    assert x.status is Status.unknown
    assert x.observed == "not checked: secret env:X_TOKEN: environment variable is not set"
    assert "api.x.com" not in {host for host, _ in seen}
    assert results["coingecko"].status is Status.ok and results["discord"].status is Status.ok


async def test_x_429_with_its_window_headers_is_a_reading_of_a_used_up_window():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.x.com":
            reset = str(int((NOW + timedelta(minutes=7)).timestamp()))
            return httpx.Response(
                429, json=X_429_DOC,
                headers={"x-rate-limit-limit": "900", "x-rate-limit-remaining": "0", "x-rate-limit-reset": reset},
            )
        return vendor_handler()(request)

    x = (await run_review(handler))["x"]
    assert x.status is Status.fail
    assert x.observed == (
        "900 of 900 requests used in the current window (100.0%), 0 left; resets at 2026-11-28 12:07:00 UTC (in 7 min)"
    )
    assert "rate limited (HTTP 429" in x.detail and "Rate limit exceeded (code 88)" in x.detail


async def test_x_429_without_window_headers_is_unknown_naming_429_and_the_reset():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.x.com":
            return httpx.Response(429, json=X_429_DOC, headers={"x-rate-limit-reset": "1705420800"})
        return vendor_handler()(request)

    x = (await run_review(handler))["x"]
    assert x.status is Status.unknown
    assert "rate limited (HTTP 429" in x.observed and "window resets at 2024-01-16 16:00:00 UTC" in x.observed


async def test_discord_route_429_is_a_reading_and_global_429_is_unknown():
    route = vendor_handler(discord=(429, DISCORD_429_HEADERS_DOC, DISCORD_429_BODY_DOC))
    d = (await run_review(route))["discord"]
    assert d.status is Status.fail and "10 of 10 requests used" in d.observed
    assert "scope user" in d.detail and "bucket abcd1234" in d.detail

    global_headers = {"Retry-After": "65", "X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"}
    glob = vendor_handler(discord=(429, global_headers, {**DISCORD_429_BODY_DOC, "global": True}))
    d = (await run_review(glob))["discord"]
    assert d.status is Status.unknown
    assert "HTTP 429" in d.observed and "global limit" in d.observed and "scope global" in d.observed


async def test_coingecko_per_key_cap_drives_the_share():
    body = {**CG_KEY_DOC, "current_total_monthly_calls": 4_900, "current_remaining_monthly_calls": 995_100,
            "api_key_monthly_call_credit": 5_000}
    r = (await run_review(vendor_handler(cg=body)))["coingecko"]
    assert r.status is Status.fail and r.observed.startswith("4,900 of 5,000 credits used (98.0%), 100 left")
    assert "per-key credit cap 5,000" in r.detail


async def test_review_never_leaks_a_key_into_any_result():
    def echo(request: httpx.Request) -> httpx.Response:
        said = " ".join(request.headers.values())
        return httpx.Response(401, json={"error": said, "message": said, "detail": said}, headers={"X-Echo": said})

    results = await run_review(echo)
    for r in results.values():
        assert r.status is Status.unknown
        text = json.dumps(r.to_dict())
        for secret in SECRETS.values():
            assert secret not in text, r
