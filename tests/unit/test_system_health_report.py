from datetime import UTC, datetime, timedelta

from runbook import settings as config
from runbook.checks import Observation, Status
from runbook.procedures import system_health

CHAIN = config.Chain(kind="evm", symbol="ETH", chain_id=1, rpc_urls=["http://a", "http://b"], max_head_age_s=10)
ITEM = system_health.CHAINS_ITEM


def rpc(name, chain_id=1, age=1.0, error=None):
    obs = Observation(name, values={} if error else {"chain_id": chain_id, "head_age_s": age, "latency_ms": 10.0},
                      error=error)
    return system_health.judge_rpc("ethereum", CHAIN, name, obs, config.Severity.P1)


def test_an_rpc_on_the_wrong_chain_fails_naming_both_chain_ids():
    r = rpc("eth-rpc-1", chain_id=11155111)
    assert r.status is Status.fail
    assert "11155111" in r.observed and "chain id 1" in r.expected


def test_a_stale_head_fails_with_its_age():
    r = rpc("eth-rpc-1", age=42.0)
    assert r.status is Status.fail
    assert r.observed == "head age 42.0 s"


def test_chain_is_up_degraded_or_down_by_which_rpcs_pass():
    up = system_health.chain_rollup("ethereum", CHAIN, [rpc("eth-rpc-1"), rpc("eth-rpc-2", error="timed out")])
    degraded = system_health.chain_rollup("ethereum", CHAIN, [rpc("eth-rpc-1", error="timed out"), rpc("eth-rpc-2")])
    down = system_health.chain_rollup(
        "ethereum", CHAIN, [rpc("eth-rpc-1", error="timed out"), rpc("eth-rpc-2", chain_id=5)]
    )
    assert up.status is Status.ok
    assert degraded.status is Status.warn
    assert degraded.observed.startswith("degraded: primary eth-rpc-1 fail, backup eth-rpc-2 answering")
    assert down.status is Status.fail
    assert "eth-rpc-1: timed out" in down.detail and "eth-rpc-2" in down.detail


def endpoint(name="frontend", component="frontend", severity="P0", **expect):
    return config.Endpoint(name=name, component=component, url="https://x.test/", severity=severity,
                           expect=config.Expectation(**expect))


def test_endpoint_conditions_cover_status_latency_marker_json_and_tls():
    e = endpoint(body_contains="TokenForge", json_field="status", json_value="ok", min_tls_days=14)
    obs = Observation("frontend", values={"status": 200, "latency_ms": 50.0, "body": b"<h1>TokenForge</h1>",
                                          "json": "ok", "tls_days": 3.0})
    r = system_health.judge_endpoint(e, obs)
    assert r.status is Status.fail
    assert r.observed == "TLS certificate valid 3 more days"
    obs_ok = Observation("frontend", values={**obs.values, "tls_days": 90.0})
    assert system_health.judge_endpoint(e, obs_ok).status is Status.ok


def test_tls_days_not_observed_on_https_is_unknown():
    obs = Observation("frontend", values={"status": 200, "latency_ms": 5.0, "body": b"", "tls_days": None})
    assert system_health.judge_endpoint(endpoint(), obs).status is Status.unknown


def report(results, chains):
    t = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    return system_health.HealthReport("prod", t, t + timedelta(seconds=1.5), results, chains)


def test_markdown_reads_like_the_runbook_checklist():
    fe = system_health.judge_endpoint(endpoint(), Observation("frontend", error="connection failed (refused)"))
    rpcs = [rpc("eth-rpc-1", error="timed out"), rpc("eth-rpc-2")]
    rep = report([fe, *rpcs], [system_health.chain_rollup("ethereum", CHAIN, rpcs)])
    md = system_health.render_markdown(rep)
    assert md.splitlines()[0] == "## System Health Check: FAIL (prod)"
    assert "- [ ] Frontend responsive: FAIL" in md
    assert "- [?] Convex backend healthy: UNKNOWN (nothing configured to check)" in md
    assert "- [x] Blockchain connections active: WARN" in md
    assert "    - FAIL eth-rpc-1: no answer: timed out" in md
    assert not rep.passed
    back = system_health.report_from_dict(rep.to_dict())
    assert system_health.render_markdown(back) == md
    assert {row["check"] for row in system_health.table_rows(rep)} == {"frontend", "eth-rpc-1", "eth-rpc-2",
                                                                     "ethereum (ETH)"}
