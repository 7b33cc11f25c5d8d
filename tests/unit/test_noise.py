"""Alert noise control (new / reminder / recovery across runs) and threshold rules, on fixed times."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from runbook.checks import CheckResult, Status
from runbook.config_types import Severity
from runbook.procedures import noise
from runbook.procedures.noise import RUNBOOK_ERROR_RATE_RULE, AlertPolicy, AlertState, ThresholdRule, apply_rules, plan

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
REMIND = timedelta(hours=4)
RUN = timedelta(minutes=15)  # a checklist every 15 minutes


def result(name: str, status: Status = Status.fail, severity: str = "P1") -> CheckResult:
    return CheckResult(name, "Frontend", status, f"{name} observed", f"{name} expected", severity=severity)


def ok(name: str, severity: str = "P1") -> CheckResult:
    return result(name, Status.ok, severity)


def run(results, previous=None, now=T0):
    return plan("system-health", "production", results, previous or AlertState(), now, REMIND)


# --- new, reminder, recovery -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "pages"), [("P0", True), ("P1", True), ("P2", False), ("P3", False)]
)
def test_first_failure_is_new_and_pages_only_at_p0_p1(severity, pages):
    notice, state = run([result("web", severity=severity), ok("api")])
    assert [t.result.name for t in notice.new] == ["web"]
    assert notice.reminders == () and notice.recovered == ()
    assert notice.severity is Severity(severity)
    assert notice.should_page(Severity.P1) is pages
    assert state.failing["web"] == noise.ItemState(T0, T0, Severity(severity), 1)
    assert "api" not in state.failing


def test_page_at_is_configurable():
    notice, _ = run([result("web", severity="P2")])
    assert notice.should_page(Severity.P2)
    assert not notice.should_page(Severity.P0)


def test_nothing_failing_is_empty_and_silent():
    notice, state = run([ok("web"), result("api", Status.warn)])
    assert notice.is_empty and notice.severity is None and not notice.should_page(Severity.P3)
    assert notice.slack_text() == ""
    assert state == AlertState()


def test_same_failure_next_run_is_silent_then_a_reminder_that_never_pages():
    _, state = run([result("web", severity="P0")])
    notice, state = run([result("web", severity="P0")], state, T0 + RUN)
    assert notice.is_empty  # reminded recently: nothing to say
    assert state.failing["web"] == noise.ItemState(T0, T0, Severity.P0, 2)

    notice, state = run([result("web", severity="P0")], state, T0 + REMIND)
    assert notice.new == () and [t.result.name for t in notice.reminders] == ["web"]
    assert notice.reminders[0].since == T0
    assert notice.severity is None and not notice.should_page(Severity.P3)
    assert "still failing since 2026-03-02 08:00 UTC" in notice.slack_text()
    assert state.failing["web"] == noise.ItemState(T0, T0 + REMIND, Severity.P0, 3)

    # the clock restarts at the reminder, not at the first failure
    notice, _ = run([result("web", severity="P0")], state, T0 + REMIND + RUN)
    assert notice.is_empty


def test_recovery_sends_a_note_and_forgets_the_item():
    _, state = run([result("web"), result("api")])
    notice, state = run([ok("web"), result("api")], state, T0 + RUN)
    assert [t.result.name for t in notice.recovered] == ["web"]
    assert notice.recovered[0].since == T0
    assert not notice.should_page(Severity.P3)
    assert set(state.failing) == {"api"}
    assert "OK web (Frontend): web observed - recovered (failing since 2026-03-02 08:00 UTC)" in notice.slack_text()


def test_failing_again_after_recovery_is_new_again():
    _, state = run([result("web")])
    _, state = run([ok("web")], state, T0 + RUN)
    notice, state = run([result("web")], state, T0 + 2 * RUN)
    assert [t.result.name for t in notice.new] == ["web"] and notice.should_page(Severity.P1)
    assert state.failing["web"].first_failed == T0 + 2 * RUN
    assert state.failing["web"].seen == 1


def test_two_new_failures_make_one_message_at_the_most_severe_level():
    notice, _ = run([result("status-page", severity="P3"), result("web", severity="P0"), ok("api")])
    assert notice.severity is Severity.P0 and notice.should_page(Severity.P1)
    text = notice.slack_text()
    lines = text.splitlines()
    assert lines[0] == "[P0] system-health on production: 2 new"
    # most severe first; every failing item named
    assert lines[1].startswith("- NEW FAIL [P0] web (Frontend): web observed; expected web expected")
    assert lines[2].startswith("- NEW FAIL [P3] status-page")
    assert len(lines) == 3


def test_one_message_orders_new_then_reminders_then_recoveries():
    _, state = run([result("old"), result("fixed")])
    notice, _ = run([result("old"), ok("fixed"), result("fresh", severity="P2")], state, T0 + REMIND)
    lines = notice.slack_text().splitlines()
    assert lines[0] == "[P2] system-health on production: 1 new, 1 still failing, 1 recovered"
    assert lines[1].startswith("- NEW FAIL [P2] fresh")
    assert lines[2].startswith("- FAIL [P1] old") and "still failing since" in lines[2]
    assert lines[3].startswith("- OK fixed") and "recovered" in lines[3]
    # a reminder at P1 does not make a P2 new item page
    assert notice.severity is Severity.P2 and not notice.should_page(Severity.P1)


def test_unknown_counts_as_failing_and_says_unknown():
    notice, state = run([result("rpc", Status.unknown)])
    assert [t.result.name for t in notice.new] == ["rpc"] and notice.should_page(Severity.P1)
    assert "NEW UNKNOWN [P1] rpc" in notice.slack_text()

    # unknown -> fail is the same failure going on, not a new one
    notice, state = run([result("rpc", Status.fail)], state, T0 + RUN)
    assert notice.is_empty and state.failing["rpc"].seen == 2
    notice, state = run([result("rpc", Status.unknown)], state, T0 + REMIND)
    assert "UNKNOWN [P1] rpc" in notice.slack_text() and "still failing since" in notice.slack_text()
    notice, state = run([ok("rpc")], state, T0 + REMIND + RUN)
    assert [t.result.name for t in notice.recovered] == ["rpc"] and state == AlertState()


def test_an_escalation_pages_again_but_a_de_escalation_is_quiet():
    _, state = run([result("web", severity="P2")])
    notice, state = run([result("web", severity="P0")], state, T0 + RUN)
    assert notice.should_page(Severity.P1) and notice.new[0].since == T0
    assert "escalated to P0, failing since 2026-03-02 08:00 UTC" in notice.slack_text()
    assert state.failing["web"] == noise.ItemState(T0, T0 + RUN, Severity.P0, 2)

    # P0 -> P2 -> P0 within the reminder window: already announced at P0, so silent
    notice, state = run([result("web", severity="P2")], state, T0 + 2 * RUN)
    assert notice.is_empty
    notice, state = run([result("web", severity="P0")], state, T0 + 3 * RUN)
    assert notice.is_empty


def test_a_check_missing_from_a_run_is_kept_not_recovered():
    _, state = run([result("web"), result("api")])
    notice, state = run([result("api")], state, T0 + RUN)
    assert notice.recovered == () and set(state.failing) == {"web", "api"}
    assert state.failing["web"].seen == 1


def test_a_repeated_name_cannot_hide_a_failure():
    notice, _ = run([ok("web"), result("web")])
    assert [t.result.name for t in notice.new] == ["web"]


def test_resolve_the_page_only_when_nothing_at_paging_level_is_left():
    _, state = run([result("web", severity="P1"), result("docs", severity="P3")])
    notice, state = run([ok("web"), result("docs", severity="P3")], state, T0 + RUN)
    assert notice.should_resolve(Severity.P1)
    assert not notice.should_resolve(Severity.P3)  # docs still fails at a paging level for P3
    notice, _ = run([ok("docs", severity="P3")], state, T0 + 2 * RUN)
    assert not notice.should_resolve(Severity.P1)  # nothing paged to resolve
    assert notice.should_resolve(Severity.P3)


def test_dedup_key_is_stable_per_checklist_and_environment_so_a_resolve_closes_the_page():
    first, state = run([result("web")])
    later, _ = run([ok("web")], state, T0 + RUN)
    assert first.dedup_key == later.dedup_key
    other, _ = plan("evening-checklist", "production", [result("web")], AlertState(), T0, REMIND)
    assert other.dedup_key != first.dedup_key


def test_recoveries_can_be_left_out_by_the_caller():
    _, state = run([result("web")])
    notice, state = run([ok("web")], state, T0 + RUN)
    quiet = replace(notice, recovered=())
    assert quiet.is_empty and quiet.should_resolve(Severity.P1) and state == AlertState()


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone"):
        run([result("web")], now=datetime(2026, 3, 2, 8, 0))


# --- state round-trip --------------------------------------------------------------------------------


def test_state_round_trips_through_json():
    _, state = run([result("web", severity="P0"), result("rpc", Status.unknown, "P2")])
    _, state = run([result("web", severity="P0"), result("rpc", Status.unknown, "P2")], state, T0 + REMIND)
    stored = json.dumps(state.to_dict())
    assert json.loads(stored) == {
        "v": 1,
        "failing": {"rpc": [1772438400, 1772452800, "P2", 2], "web": [1772438400, 1772452800, "P0", 2]},
    }
    loaded = AlertState.from_dict(json.loads(stored))
    assert loaded == state
    # and it plans the next run exactly as the original would
    nxt = [ok("web", "P0"), result("rpc", Status.unknown, "P2")]
    assert run(nxt, loaded, T0 + 2 * REMIND) == run(nxt, state, T0 + 2 * REMIND)


def test_state_keeps_times_exactly_whatever_the_timezone():
    paris = datetime(2026, 3, 2, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    notice, state = run([result("web")], now=paris)
    assert AlertState.from_dict(json.loads(json.dumps(state.to_dict()))).failing["web"].first_failed == paris
    # texts always say UTC
    _, state = run([result("web")], state, paris + REMIND)
    notice, _ = run([result("web")], state, paris + 2 * REMIND)
    assert "still failing since 2026-03-02 08:00 UTC" in notice.slack_text()


@pytest.mark.parametrize("empty", [None, {}])
def test_a_variable_never_set_is_the_empty_state(empty):
    assert AlertState.from_dict(empty) == AlertState()


@pytest.mark.parametrize(
    "bad",
    [
        {"nope": 1},
        {"v": 2, "failing": {}},
        {"v": 1, "failing": {"web": [1772438400]}},
        {"v": 1, "failing": {"web": ["2026-03-02T08:00:00Z", 1772438400, "P1", 1]}},
        {"v": 1, "failing": {"web": [1772438400, 1772438400, "high", 1]}},
        {"v": 1, "failing": {"web": [1772438400, 1772438400, "P1", "x"]}},
        {"v": 1, "failing": {"web": None}},
        {"v": 1, "failing": ["web"]},
    ],
)
def test_a_malformed_state_is_a_value_error(bad):
    with pytest.raises(ValueError):
        AlertState.from_dict(bad)


# --- threshold rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "status", "expected"),
    [
        (">", 6, Status.fail, "x <= 5"), (">", 5, Status.ok, "x <= 5"),
        (">=", 5, Status.fail, "x < 5"), (">=", 4.99, Status.ok, "x < 5"),
        ("<", 4, Status.fail, "x >= 5"), ("<", 5, Status.ok, "x >= 5"),
        ("<=", 5, Status.fail, "x > 5"), ("<=", 5.01, Status.ok, "x > 5"),
        ("==", 5, Status.fail, "x != 5"), ("==", 4, Status.ok, "x != 5"),
        ("!=", 4, Status.fail, "x == 5"), ("!=", 5, Status.ok, "x == 5"),
    ],
)
def test_every_operator(op, value, status, expected):
    rule = ThresholdRule(metric="x", op=op, threshold=5, severity="P2")
    [r] = apply_rules([rule], {"x": value})
    assert (r.status, r.expected, r.severity, r.item) == (status, expected, "P2", "Custom alerts")
    assert r.observed == f"x {value:g}"
    assert r.name == f"x {op} 5"  # no message: the condition names the alert


def test_runbook_example_fails_at_6_percent_with_p1_and_passes_at_5():
    [r] = apply_rules([RUNBOOK_ERROR_RATE_RULE], {"error_rate": 0.06})
    assert r.status is Status.fail and r.severity == "P1"
    assert (r.name, r.observed, r.expected) == ("Error rate exceeded 5%", "error_rate 0.06", "error_rate <= 0.05")
    assert r.detail == "Error rate exceeded 5%"
    [r] = apply_rules([RUNBOOK_ERROR_RATE_RULE], {"error_rate": 0.05})
    assert r.status is Status.ok and r.observed == "error_rate 0.05"


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({}, "error_rate was not reported"),
        ({"error_rate": None}, "error_rate has no value"),
        ({"error_rate": float("nan")}, "error_rate is not a number"),
    ],
)
def test_a_missing_metric_is_unknown_with_the_reason(metrics, reason):
    [r] = apply_rules([RUNBOOK_ERROR_RATE_RULE], metrics)
    assert r.status is Status.unknown and r.observed == f"unknown ({reason})" and r.detail == reason
    assert r.severity == "P1"


def test_one_result_per_rule_and_they_feed_plan():
    rules = [RUNBOOK_ERROR_RATE_RULE, ThresholdRule(metric="p95_latency_s", op=">", threshold=2, severity="P3")]
    results = apply_rules(rules, {"error_rate": 0.07, "p95_latency_s": 1.2})
    assert [r.status for r in results] == [Status.fail, Status.ok]
    notice, _ = run(results)
    assert notice.should_page(Severity.P1)
    assert "NEW FAIL [P1] Error rate exceeded 5% (Custom alerts): error_rate 0.07; expected error_rate <= 0.05" in (
        notice.slack_text()
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"metric": "Error Rate", "op": ">", "threshold": 1, "severity": "P1"},
        {"metric": "x", "op": "=>", "threshold": 1, "severity": "P1"},
        {"metric": "x", "op": ">", "threshold": float("nan"), "severity": "P1"},
        {"metric": "x", "op": ">", "threshold": 1, "severity": "high"},
        {"metric": "x", "op": ">", "threshold": 1, "severity": "P1", "extra": 1},
    ],
)
def test_a_bad_rule_is_refused_when_configuration_loads(bad):
    with pytest.raises(ValidationError):
        ThresholdRule.model_validate(bad)


def test_alert_policy_defaults_and_validation():
    policy = AlertPolicy()
    assert policy.remind_after == timedelta(hours=4) and policy.rules == [] and policy.send_recoveries
    policy = AlertPolicy.model_validate(
        {"remind_after_minutes": 30, "rules": [{"metric": "error_rate", "op": ">", "threshold": 0.05, "severity": "P1",
                                                "message": "Error rate exceeded 5%"}]}
    )
    assert policy.rules == [RUNBOOK_ERROR_RATE_RULE] and policy.remind_after == timedelta(minutes=30)
    with pytest.raises(ValidationError, match="remind_after_minutes"):
        AlertPolicy(remind_after_minutes=0)
    with pytest.raises(ValidationError, match="share a name"):
        AlertPolicy(rules=[RUNBOOK_ERROR_RATE_RULE, RUNBOOK_ERROR_RATE_RULE.model_copy(update={"threshold": 0.1})])


def test_a_state_of_many_failures_fits_a_prefect_variable():
    # Prefect refuses a Variable value over 5000 characters of (compact) JSON
    names = [f"wallet-ethereum-hot-{i:03}" for i in range(80)]
    _, state = run([result(n, severity="P0") for n in names], now=T0.replace(microsecond=123456))
    _, state = run([result(n, severity="P0") for n in names], state, T0 + 1000 * REMIND)
    assert len(json.dumps(state.to_dict(), separators=(",", ":"))) < 5000


def test_sub_second_times_do_not_break_the_round_trip():
    _, state = run([result("web")], now=T0.replace(microsecond=999999))
    assert state.failing["web"].first_failed == T0
    assert AlertState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
