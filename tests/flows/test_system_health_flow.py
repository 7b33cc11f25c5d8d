"""The System Health flow against the sandbox, on a real Prefect server: states, artifacts, alerts."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogHandler

from flows.system_health import system_health_flow

pytestmark = [pytest.mark.sandbox]


async def run(sandbox):
    state = await system_health_flow(env_file=str(sandbox.env_file), return_state=True)
    assert state.is_completed(), state
    return state.state_details.flow_run_id, await state.result()


async def artifacts_of(flow_run_id):
    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def by_name(report):
    return {c["name"]: c for c in [*report["checks"], *report["chains"]]}


async def test_healthy_sandbox_passes_every_check_and_sends_no_alert(prefect_api, sandbox):
    flow_run_id, report = await run(sandbox)
    checks = by_name(report)
    assert report["passed"] is True
    assert {c["status"] for c in checks.values()} == {"ok"}
    assert set(checks) == {"frontend", "convex", "api", "eth-rpc-1", "eth-rpc-2", "bsc-rpc-1", "bsc-rpc-2",
                           "sol-rpc-1", "sol-rpc-2", "chain:ethereum", "chain:bsc", "chain:solana"}
    assert sandbox.received("slack") == [] and sandbox.received("pagerduty") == []
    artifacts = await artifacts_of(flow_run_id)
    kinds = {a.type: a for a in artifacts}
    assert set(kinds) == {"markdown", "table"}
    markdown = kinds["markdown"].data
    assert markdown.startswith("## System Health Check: PASS (sandbox)")
    for item in ("Frontend responsive", "Convex backend healthy", "Blockchain connections active",
                 "API endpoints responding"):
        assert f"- [x] {item}: PASS" in markdown


async def test_frontend_down_fails_only_the_frontend_and_alerts_once(prefect_api, sandbox):
    sandbox.fault("frontend", "down")
    _, report = await run(sandbox)
    checks = by_name(report)
    assert checks["frontend"]["status"] == "fail"
    assert all(c["status"] == "ok" for name, c in checks.items() if name != "frontend")
    slack = sandbox.received("slack")
    assert len(slack) == 1
    assert slack[0]["text"].startswith("[P0] system-health on sandbox: 1 new")
    assert "frontend" in slack[0]["text"] and "convex" not in slack[0]["text"]
    pages = sandbox.received("pagerduty")
    assert len(pages) == 1 and pages[0]["event"]["payload"]["severity"] == "critical"
    assert report["alerts"] == ["slack: delivered", "pagerduty: accepted"]


async def test_a_hanging_primary_rpc_ends_within_the_deadline_and_the_chain_is_degraded(prefect_api, sandbox):
    sandbox.fault("eth-rpc-1", "hang")
    _, report = await run(sandbox)
    checks = by_name(report)
    deadline = 3.0  # [probes] timeout_s in the sandbox's environment file
    latencies = [c["latency_s"] for c in report["checks"] if c["latency_s"] is not None]
    # The probes end at the hanging one's deadline: no probe outlives it.
    assert deadline <= checks["eth-rpc-1"]["latency_s"] <= deadline + 0.5
    assert max(latencies) <= deadline + 0.5
    # The whole run adds Prefect's task-state round trips, which a busy SQLite server can stretch
    # by seconds on a 2-core machine; bench/system_health.py measures the flow end to end.
    assert report["duration_s"] <= deadline + 4, latencies
    assert checks["eth-rpc-1"]["status"] == "fail" and checks["eth-rpc-1"]["observed"] == "no answer: timed out"
    assert checks["chain:ethereum"]["status"] == "warn"
    assert checks["chain:ethereum"]["observed"].startswith("degraded: primary eth-rpc-1 fail, backup eth-rpc-2")
    # A failing backup-path endpoint does not page: the chain is still reachable.
    assert sandbox.received("pagerduty") == []
    assert len(sandbox.received("slack")) == 1


async def test_wrong_chain_id_names_expected_and_observed(prefect_api, sandbox):
    sandbox.fault("bsc-rpc-1", "wrong-chain")
    _, report = await run(sandbox)
    check = by_name(report)["bsc-rpc-1"]
    assert check["status"] == "fail"
    assert check["observed"] == "chain id 97" and check["expected"] == "chain id 56"


async def test_both_rpcs_of_a_chain_failing_is_down(prefect_api, sandbox):
    sandbox.fault("sol-rpc-1", "down")
    sandbox.fault("sol-rpc-2", "wrong-chain")
    _, report = await run(sandbox)
    chain = by_name(report)["chain:solana"]
    assert chain["status"] == "fail" and chain["observed"] == "down: no RPC endpoint healthy"
    assert len(sandbox.received("pagerduty")) == 1


async def test_no_secret_reaches_a_report_artifact_log_or_alert(prefect_api, sandbox):
    """Canary: the sandbox's secrets (webhook URL, routing key, API token) are known values; none may
    appear anywhere the run writes, even when the alert channel itself fails."""
    secrets = [p.read_text().strip() for p in (sandbox.dir / "secrets").iterdir()]
    secrets += [s.removeprefix("Bearer ") for s in secrets if s.startswith("Bearer ")]
    assert len(secrets) >= 4
    sandbox.fault("frontend", "down")
    sandbox.fault("slack", "status:500")
    flow_run_id, report = await run(sandbox)
    assert report["alerts"][0].startswith("slack: HTTP 500")
    await APILogHandler.aflush()  # logs reach the server in batches; make sure this run's are there
    async with get_client() as client:
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        flow_run = await client.read_flow_run(flow_run_id)
    written = [repr(report), *(a.data for a in await artifacts_of(flow_run_id)), *(log.message for log in logs),
               repr(flow_run.parameters)]
    written += [repr(p["event"]["payload"]) for p in sandbox.received("pagerduty")]
    assert logs, "the run wrote no logs: the canary would prove nothing"
    for secret in secrets:
        for text in written:
            assert secret not in str(text)


async def test_a_prefect_secret_block_reference_is_resolved_and_a_missing_one_is_unknown(prefect_api, sandbox,
                                                                                         tmp_path):
    from prefect.blocks.system import Secret

    token = (sandbox.dir / "secrets" / "api_token").read_text().strip()
    await Secret(value=token).save("tfops-test-api-auth", overwrite=True)
    text = sandbox.env_file.read_text()
    assert 'auth_header = { file = "secrets/api_token" }' in text
    for block, expected in (("tfops-test-api-auth", "ok"), ("tfops-test-missing", "unknown")):
        env = sandbox.dir / f"env-{block}.toml"
        env.write_text(text.replace('{ file = "secrets/api_token" }', f'{{ prefect_secret = "{block}" }}'))
        state = await system_health_flow(env_file=str(env), return_state=True)
        assert state.is_completed()
        api = by_name(await state.result())["api"]
        assert api["status"] == expected, api
    assert "prefect-secret:tfops-test-missing" in api["observed"]


async def test_a_repeat_failure_reminds_without_paging_and_a_recovery_resolves_the_page(prefect_api, sandbox):
    sandbox.fault("frontend", "down")
    await run(sandbox)
    _, again = await run(sandbox)
    assert again["alerts"] == []  # still failing, but within the reminder interval: no new page, no post
    sandbox.fault("frontend", "ok")
    _, recovered = await run(sandbox)
    slack = sandbox.received("slack")
    assert len(slack) == 2 and "recovered" in slack[1]["text"]
    pages = sandbox.received("pagerduty")
    assert [p["event"]["event_action"] for p in pages] == ["trigger", "resolve"]
    assert pages[0]["event"]["dedup_key"] == pages[1]["event"]["dedup_key"]
    assert recovered["alerts"] == ["slack: delivered", "pagerduty: accepted"]
