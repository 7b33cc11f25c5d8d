"""The decision tree "Is the site down?": every leaf from evidence, and unknown evidence never guessed."""

from __future__ import annotations

import pytest

from runbook.checks import Status
from runbook.procedures import triage as t
from runbook.procedures.triage import Evidence, Fact

OK, WARN, FAIL, UNKNOWN = Status.ok, Status.warn, Status.fail, Status.unknown


def healthy(**over: Status) -> Evidence:
    """Every fact healthy, then the ones named changed (keys as in triage, `rpc_eth` for rpc:eth)."""
    statuses = {t.FRONTEND: OK, t.VERCEL_STATUS: OK, t.VERCEL_DEPLOYMENT: OK, t.DNS: OK, t.TLS: OK,
                t.CONVEX_ERRORS: OK, t.BACKEND_HEALTH: OK, "rpc:eth": OK, "rpc:sol": OK}
    statuses.update({k.replace("rpc_", "rpc:"): v for k, v in over.items()})
    evidence = Evidence()
    evidence.add(*(Fact(k, s, f"{k} is {s.value}") for k, s in statuses.items()))
    return evidence


@pytest.mark.parametrize(("facts", "leaf"), [
    ({}, "healthy"),
    ({"frontend": UNKNOWN}, "frontend-unknown"),
    ({"frontend": FAIL, "vercel_status": FAIL}, "vercel-outage"),
    ({"frontend": FAIL, "dns": FAIL}, "dns-failure"),
    ({"frontend": FAIL, "tls": FAIL}, "tls-failure"),
    ({"frontend": FAIL}, "bad-deployment"),
    ({"frontend": FAIL, "vercel_deployment": FAIL}, "bad-deployment"),
    ({"frontend": FAIL, "vercel_status": UNKNOWN}, "site-down-cannot-tell"),
    ({"frontend": FAIL, "dns": UNKNOWN}, "site-down-cannot-tell"),
    ({"frontend": FAIL, "vercel_deployment": UNKNOWN}, "site-down-cannot-tell"),
    ({"frontend": WARN}, "frontend-issue"),
    ({"convex_errors": FAIL}, "backend-issue"),
    ({"backend_health": FAIL}, "backend-issue"),
    ({"rpc_eth": WARN}, "rpc-failover"),
    ({"rpc_sol": FAIL}, "chain-down"),
    ({"convex_errors": UNKNOWN}, "cannot-tell"),
    ({"rpc_eth": UNKNOWN}, "cannot-tell"),
])
def test_each_leaf(facts, leaf):
    diagnosis = t.diagnose(healthy(**facts))
    assert diagnosis.leaf == leaf
    assert diagnosis.certain is ("cannot-tell" not in leaf and leaf != "frontend-unknown")


def test_every_leaf_is_reached_by_a_case_above():
    reached = {t.diagnose(healthy(**f)).leaf for f, _ in test_each_leaf.pytestmark[0].args[1]}
    assert reached == set(t.LEAVES)


def test_a_definite_dns_failure_wins_over_an_unknown_vercel_status():
    d = t.diagnose(healthy(frontend=FAIL, vercel_status=UNKNOWN, dns=FAIL))
    assert d.leaf == "dns-failure"


def test_vercel_down_is_named_before_dns_as_the_tree_orders_it():
    assert t.diagnose(healthy(frontend=FAIL, vercel_status=FAIL, dns=FAIL)).leaf == "vercel-outage"


def test_missing_evidence_is_unknown_not_healthy():
    evidence = Evidence()
    evidence.add(Fact(t.FRONTEND, OK, "HTTP 200"))
    d = t.diagnose(evidence)
    assert d.leaf == "cannot-tell" and not d.certain
    assert "Convex function errors" in d.title and "Convex backend health check" in d.title
    assert evidence[t.DNS].status is UNKNOWN and "not gathered" in evidence[t.DNS].observed


def test_the_site_down_leaf_recommends_the_rollback_flow_and_lists_other_problems():
    d = t.diagnose(healthy(frontend=FAIL, convex_errors=FAIL, rpc_eth=WARN))
    assert (d.leaf, d.flow) == ("bad-deployment", "frontend-rollback")
    assert any("Convex function errors" in a for a in d.also) and any("RPC status: eth" in a for a in d.also)


def test_feature_issues_come_in_the_trees_order_and_the_rest_are_also_named():
    d = t.diagnose(healthy(convex_errors=FAIL, rpc_eth=WARN))
    assert (d.leaf, d.flow) == ("backend-issue", "convex-redeploy")
    assert d.also == ("Blockchain issue: the primary RPC of eth is failing (rpc-failover)",)


def test_markdown_shows_diagnosis_path_action_and_every_fact_with_unknowns_marked():
    evidence = healthy(frontend=FAIL)
    evidence.add(Fact(t.DNS, UNKNOWN, "unknown (resolver timed out)"))
    d = t.diagnose(evidence)
    md = t.render_markdown("prod", evidence, d)
    assert md.startswith("## Triage (prod): Site down; cannot tell why: DNS resolution of the frontend host unknown")
    assert "**Diagnosis:** `site-down-cannot-tell` (not certain)" in md
    assert "1. Is the site down? FAIL: frontend is fail" in md
    assert "- [?] DNS resolution of the frontend host: UNKNOWN, unknown (resolver timed out)" in md
    assert len(t.table_rows(evidence)) == 9


def test_facts_round_trip():
    f = Fact("rpc:eth", WARN, "degraded", "eth-rpc-1: timed out")
    assert Fact.from_dict(f.to_dict()) == f and f.title == "RPC status: eth"
