from runbook.checks import Condition, Observation, Status, evaluate, judge, worst


def cond(key, limit):
    return Condition(key, f"<= {limit}", lambda v: v <= limit, describe=lambda v: f"{key} {v}")


def test_a_value_that_was_not_observed_is_unknown_not_judged():
    verdicts = judge(Observation("x", values={"a": 1}), [cond("a", 2), cond("b", 2)])
    assert [v.status for v in verdicts] == [Status.ok, Status.unknown]
    assert "b was not observed" in verdicts[1].observed


def test_an_unanswered_health_probe_fails_and_says_why():
    result = evaluate("fe", "Frontend responsive", Observation("fe", error="timed out"), [cond("a", 1)], severity="P0")
    assert result.status is Status.fail
    assert result.observed == "no answer: timed out"


def test_an_unanswered_probe_is_unknown_when_reaching_it_is_not_the_check():
    obs = Observation("w", error="RPC error -32000: boom")
    result = evaluate("w", "Wallet", obs, [cond("balance", 1)], severity="P1", reachable_is_required=False)
    assert result.status is Status.unknown
    assert "boom" in result.observed


def test_failing_conditions_are_named_with_observed_and_expected():
    result = evaluate("r", "i", Observation("r", values={"a": 5, "b": 1}), [cond("a", 2), cond("b", 2)], severity="P2")
    assert result.status is Status.fail
    assert result.observed == "a 5"
    assert result.expected == "<= 2"
    assert result.detail == "a: a 5, expected <= 2"


def test_worst_orders_fail_over_unknown_over_warn_over_ok():
    assert worst([Status.ok, Status.warn]) is Status.warn
    assert worst([Status.warn, Status.unknown]) is Status.unknown
    assert worst([Status.unknown, Status.fail, Status.ok]) is Status.fail
    assert worst([]) is Status.ok
