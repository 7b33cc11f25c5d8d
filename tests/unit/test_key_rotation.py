"""Key rotation and access review: configuration, naming, leftovers, verdicts (no network, no Prefect)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from runbook import settings as config
from runbook.checks import Status
from runbook.clients.vercel_tokens import TokenMeta
from runbook.procedures import access_review, key_rotation
from runbook.procedures.access_review import AccessReview, LoginEvent
from runbook.procedures.key_rotation import Rotation, SecurityAudit
from runbook.settings import ConfigError, Severity

NOW = datetime(2026, 5, 1, 5, 0, tzinfo=UTC)
DAY = 86_400_000
SERVICE = {"name": "vercel", "provider": "vercel", "api_url": "https://api.vercel.com",
           "admin_token": {"env": "VERCEL_ADMIN"}, "secret_block": "vercel-api-token"}


def test_the_section_loads_and_names_a_bad_field():
    cfg = SecurityAudit.model_validate({"services": [SERVICE]})
    assert cfg.service("vercel").secret_block == "vercel-api-token"
    assert cfg.secret_refs() == [cfg.services[0].admin_token]
    with pytest.raises(ConfigError, match=r"security_audit\.services\[0\]\.provider"):
        config.parse({"environment": "x", "security_audit": {"services": [{**SERVICE, "provider": "heroku"}]}})
    with pytest.raises(ConfigError, match="service name 'vercel' is used twice"):
        config.parse({"environment": "x", "security_audit": {"services": [SERVICE, SERVICE]}})
    with pytest.raises(ConfigError, match=r"secret_block"):
        config.parse({"environment": "x", "security_audit": {"services": [{**SERVICE, "secret_block": "Bad Name"}]}})
    with pytest.raises(KeyError, match="no service 'sentry'"):
        cfg.service("sentry")


def test_admin_tokens_are_among_the_environments_secret_references():
    s = config.parse({"environment": "x", "security_audit": {"services": [SERVICE]}})
    assert s.security_audit is not None
    assert s.security_audit.services[0].admin_token in s.secret_refs()


def test_only_the_last_four_characters_of_a_key_are_ever_shown():
    assert key_rotation.last4(SecretStr("tfsbx_abcdefghijklmnop")) == "...mnop"
    assert key_rotation.last4("short") == "...(short)"  # a short value would give most of itself away


def test_new_keys_are_named_by_prefix_service_and_time_and_leftovers_are_ours_only():
    name = key_rotation.token_name("tfops-rotation-", "vercel", NOW)
    assert name == "tfops-rotation-vercel-20260501T050000Z"
    tokens = [TokenMeta("live", "tfops-rotation-vercel-20260401T050000Z"), TokenMeta("left", name),
              TokenMeta("other-svc", "tfops-rotation-sentry-20260501T050000Z"), TokenMeta("human", "laptop")]
    found = key_rotation.leftovers(tokens, "tfops-rotation-", "vercel", {"live"})
    assert [t.id for t in found] == ["left"]


def test_a_key_age_is_in_days_and_unknown_without_a_creation_time():
    created = int(NOW.timestamp() * 1000) - 40 * DAY
    assert key_rotation.age_days(created, NOW) == pytest.approx(40)
    assert key_rotation.age_days(None, NOW) is None


@pytest.mark.parametrize(("outcome", "status", "severity"), [
    ("rotated", Status.ok, "P2"),
    ("not due", Status.ok, "P2"),
    ("rolled back", Status.fail, "P2"),
    ("rotated, old key still active", Status.fail, "P2"),
    ("rolled back, needs a person", Status.fail, "P1"),
])
def test_a_rotation_outcome_is_a_check(outcome, status, severity):
    r = Rotation("vercel", "vercel-api-token", outcome)
    r.step("inspect", "ok", "live key abc (...wxyz)")
    check = r.check(Severity.P2)
    assert (check.status, check.severity) == (status, severity)
    assert check.observed.startswith(outcome)


def test_a_provider_that_cannot_be_reached_is_unknown_not_a_failure_of_the_key():
    r = Rotation("vercel", "vercel-api-token", "not rotated")
    r.step("inspect", "failed", "provider not reachable: identify token: timed out")
    assert r.check(Severity.P2).status is Status.unknown


def _event(user: str, source: str | None, days_ago: float, ok: bool = True, admin: bool = False) -> LoginEvent:
    return LoginEvent(user, source, admin, ok, int(NOW.timestamp() * 1000 - days_ago * DAY))


def test_a_login_from_a_place_the_user_never_used_is_new_and_a_known_one_is_not():
    start = int(NOW.timestamp() * 1000) - 30 * DAY
    events = [_event("admin-1", "198.51.100.7", 60, admin=True),  # baseline
              _event("admin-1", "198.51.100.7", 3, admin=True),   # known place
              _event("admin-1", "203.0.113.99", 2, admin=True),   # new place
              _event("admin-1", "203.0.113.99", 1, admin=True),
              _event("user-7", "192.0.2.10", 5),                  # a user's new place
              _event("user-8", None, 4),                          # no source recorded
              _event("admin-1", "203.0.113.50", 1, ok=False, admin=True),
              _event("admin-1", "203.0.113.50", 0.5, ok=False, admin=True),
              _event("user-9", "203.0.113.51", 0.5, ok=False)]    # not an admin: not listed
    found = access_review.review(events, start, int(NOW.timestamp() * 1000))
    assert [(p.user, p.source, p.admin, p.logins) for p in found.new_places] == [
        ("admin-1", "203.0.113.99", True, 2), ("user-7", "192.0.2.10", False, 1)]
    assert [(f.user, f.source, f.attempts) for f in found.failed_admin] == [("admin-1", "203.0.113.50", 2)]
    assert found.no_source == 1

    checks = access_review.judge(found, AccessReview(convex_url="http://127.0.0.1:1"))
    assert [c.status for c in checks] == [Status.fail, Status.fail]
    assert "admin admin-1 from 203.0.113.99" in checks[0].observed and "user-7" not in checks[0].observed
    assert "2 failed admin login(s)" in checks[1].observed
    md = access_review.markdown_tables(found)
    assert "| admin-1 | yes | 203.0.113.99 |" in md and "| admin-1 | 203.0.113.50 | 2 |" in md


def test_only_admins_new_places_fail_unless_everyone_is_in_scope():
    start = int(NOW.timestamp() * 1000) - 30 * DAY
    found = access_review.review([_event("user-7", "192.0.2.10", 5)], start, int(NOW.timestamp() * 1000))
    assert access_review.judge(found, AccessReview(convex_url="http://x.test"))[0].status is Status.ok
    everyone = AccessReview(convex_url="http://x.test", new_place_scope="everyone")
    assert access_review.judge(found, everyone)[0].status is Status.fail


def test_an_unread_log_is_unknown_with_the_reason_never_quiet():
    checks = access_review.judge("security:loginEvents: timed out", AccessReview(convex_url="http://x.test"))
    assert [c.status for c in checks] == [Status.unknown, Status.unknown]
    assert all("timed out" in c.observed for c in checks)
    assert access_review.table_rows("timed out") == []


@pytest.mark.parametrize("page", [
    {"page": [], "isDone": True},
    {"page": [{"user": "u", "source": 1, "ok": True, "at": 1}], "isDone": True, "continueCursor": "c"},
    {"page": [{"user": "u", "ok": "yes", "at": 1}], "isDone": True, "continueCursor": "c"},
    [],
])
def test_a_page_not_in_the_documented_shape_is_an_error(page):
    with pytest.raises(ValueError):
        access_review.parse_page(page)
