"""Common Incidents 1-3 on a real Prefect server against the sandbox: a bad deploy rolled back and
the frontend answering again, the Convex redeploy confirmed in the flow run's form, and RPC
failover recorded where the platform reads it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prefect.variables import Variable
from prefect_runs import env_variant, form_of, paused_run, resume_and_wait

from flows.remediation import convex_redeploy_flow, frontend_rollback_flow, rpc_failover_flow, rpc_switch_back_flow
from runbook.procedures.remediation import active_rpc_variable
from tasks.remediation import rollback_journal_variable

pytestmark = pytest.mark.sandbox

ROLLBACK_JOURNAL = rollback_journal_variable("sandbox")
ETH_ACTIVE = active_rpc_variable("sandbox", "ethereum")


@pytest.fixture
def env(sandbox, tmp_path, prefect_api) -> str:
    """The sandbox's environment with no rollback journal or active-RPC record left by another test."""
    path = env_variant(sandbox, tmp_path)
    for name in (ROLLBACK_JOURNAL, ETH_ACTIVE):
        Variable.unset(name)
    return str(path)


def frontend_status(sandbox) -> int:
    return httpx.get(sandbox.url("frontend") + "/", timeout=5, trust_env=False).status_code


def vercel_state(sandbox) -> dict[str, Any]:
    return dict(sandbox.vendor("vercel", "GET", "deployments"))


# --- 1. frontend rollback ---------------------------------------------------------------------


async def test_a_bad_deploy_is_rolled_back_and_the_frontend_answers_again(sandbox, env):
    good = vercel_state(sandbox)["current"]
    bad = sandbox.vendor("vercel", "POST", "deployments", {"bad": True, "promote": True})["added"]
    sandbox.vendor("vercel", "POST", "config", {"promote_delay_s": 1.0})  # Vercel promotes asynchronously (202)
    assert frontend_status(sandbox) == 500
    state = await frontend_rollback_flow(env_file=env, return_state=True)
    assert state.is_completed(), state
    report = await state.result()
    assert (report["action"], report["verified"]) == ("promoted", True)
    assert (report["current_before"]["id"], report["target"]["id"], report["current_after"]["id"]) == (bad, good, good)
    assert frontend_status(sandbox) == 200
    assert vercel_state(sandbox)["current"] == good
    assert [p["deployment"] for p in vercel_state(sandbox)["promotions"]] == [good]
    assert any("HTTP 202" in s for s in report["steps"])
    [message] = sandbox.received("slack")
    assert message["text"].startswith(f"Frontend rolled back (sandbox): {bad} -> {good}")

    again = await (await frontend_rollback_flow(env_file=env, return_state=True)).result()
    assert again["action"] == "already-current" and again["passed"]
    assert len(vercel_state(sandbox)["promotions"]) == 1  # nothing promoted twice, nothing older promoted


async def test_a_dry_run_changes_nothing_and_tells_nobody(sandbox, env):
    bad = sandbox.vendor("vercel", "POST", "deployments", {"bad": True, "promote": True})["added"]
    report = await (await frontend_rollback_flow(env_file=env, dry_run=True, return_state=True)).result()
    assert report["action"] == "dry-run" and report["summary"].endswith(f"in place of {bad}")
    assert vercel_state(sandbox)["current"] == bad and vercel_state(sandbox)["promotions"] == []
    assert frontend_status(sandbox) == 500 and sandbox.received("slack") == []


async def test_a_healthy_frontend_is_not_rolled_back_unless_a_deployment_is_named(sandbox, env):
    deployments = vercel_state(sandbox)["deployments"]
    report = await (await frontend_rollback_flow(env_file=env, return_state=True)).result()
    assert report["action"] == "not-needed" and vercel_state(sandbox)["promotions"] == []
    oldest = deployments[0]["id"]
    named = await (await frontend_rollback_flow(env_file=env, deployment_id=oldest, return_state=True)).result()
    assert named["action"] == "promoted" and vercel_state(sandbox)["current"] == oldest


async def test_a_rerun_after_a_crash_promotes_the_same_deployment_not_an_older_one(sandbox, env):
    deployments = [d["id"] for d in vercel_state(sandbox)["deployments"]]
    bad = sandbox.vendor("vercel", "POST", "deployments", {"bad": True, "promote": True})["added"]
    # The crashed run had chosen the oldest deployment and written its journal before promoting.
    await Variable.aset(ROLLBACK_JOURNAL, {"from": bad, "to": deployments[0], "at": 0, "state": "promoting"})
    report = await (await frontend_rollback_flow(env_file=env, return_state=True)).result()
    assert report["target"]["id"] == deployments[0] != deployments[-1]
    assert vercel_state(sandbox)["current"] == deployments[0]


async def test_a_rollback_to_a_deployment_that_also_fails_is_not_verified(sandbox, env):
    sandbox.vendor("vercel", "POST", "deployments", {"bad": True, "promote": True})
    sandbox.vendor("vercel", "POST", "deployments", {"bad": True, "promote": True})
    state = await frontend_rollback_flow(env_file=env, return_state=True)
    assert state.is_failed()
    message = str(await state.result(raise_on_failure=False))
    assert "FAILED" in message and "did not serve it with the frontend answering" in message


async def test_an_unknown_deployment_id_fails_with_vercels_error(sandbox, env):
    state = await frontend_rollback_flow(env_file=env, deployment_id="dpl_doesnotexist", return_state=True)
    assert state.is_failed()
    assert "not_found" in str(await state.result(raise_on_failure=False))


# --- 2. Convex redeploy -----------------------------------------------------------------------


async def paused_redeploy(sandbox, env, error, count, ago_s, watch_s):
    """Failed executions of `tokens:create` in the Convex logs, and the redeploy flow paused on its form."""
    sandbox.vendor("convex", "POST", "logs", {"function": "tokens:create", "udfType": "Mutation",
                                              "error": error, "count": count, "ago_s": ago_s})
    run = asyncio.create_task(convex_redeploy_flow(env_file=env, window_minutes=10, watch_s=watch_s, poll_s=1,
                                                   return_state=True))
    return run, await paused_run("convex-redeploy", 30)


async def test_convex_errors_pause_for_the_redeploy_and_are_verified_gone_after(sandbox, env):
    run, flow_run = await paused_redeploy(sandbox, env, "Uncaught Error: factory reverted", 5, 120, watch_s=1)
    steps = await form_of(flow_run)
    assert "npx convex deploy" in steps and "CONVEX_DEPLOY_KEY=" in steps
    assert "| `tokens:create` | Mutation | 5 |" in steps
    assert "c2FuZGJveC" not in steps  # the deploy key is named by its reference, never shown
    state = await resume_and_wait(flow_run, {"done": True, "operator": "on-call", "note": "deployed abc123"}, run, 60)
    assert state.is_completed(), state
    report = await state.result()
    assert report["verified"] and report["errors_after"] == "no failed executions"
    assert (report["answer"], report["operator"], report["note"]) == ("done", "on-call", "deployed abc123")
    assert "Verified" in sandbox.received("slack")[-1]["text"]


async def test_a_redeploy_not_done_fails_the_run(sandbox, env):
    run, flow_run = await paused_redeploy(sandbox, env, "Uncaught Error", 2, 30, watch_s=0)
    state = await resume_and_wait(flow_run, {"done": False, "note": "the previous commit has the same bug"}, run, 60)
    assert state.is_failed()
    assert "the previous commit has the same bug" in str(await state.result(raise_on_failure=False))


async def test_a_backend_still_failing_after_the_redeploy_is_not_verified(sandbox, env):
    run, flow_run = await paused_redeploy(sandbox, env, "Uncaught Error", 2, 30, watch_s=0)
    sandbox.fault("convex", "status:500")
    state = await resume_and_wait(flow_run, {"done": True}, run, 60)
    assert state.is_failed()
    assert "Not verified after the redeploy" in str(await state.result(raise_on_failure=False))


async def test_no_convex_errors_means_nothing_to_redeploy(sandbox, env):
    report = await (await convex_redeploy_flow(env_file=env, window_minutes=10, return_state=True)).result()
    assert report["verified"] and not report["asked"] and "nothing to redeploy" in report["outcome"]


# --- 3. RPC failover --------------------------------------------------------------------------


async def test_a_dead_primary_fails_over_to_the_backup_and_back_only_when_it_recovers(sandbox, env):
    sandbox.fault("eth-rpc-1", "down")
    report = await (await rpc_failover_flow(env_file=env, chain="ethereum", return_state=True)).result()
    assert report["action"] == "switched"
    active = await Variable.aget(ETH_ACTIVE)
    assert (active["name"], active["url"], active["role"]) == ("eth-rpc-2", sandbox.url("eth-rpc-2"), "backup")
    assert "eth-rpc-1" in active["reason"]
    assert sandbox.received("slack")[-1]["text"] == report["summary"]

    again = await (await rpc_failover_flow(env_file=env, chain="ethereum", return_state=True)).result()
    assert again["action"] == "already-active" and (await Variable.aget(ETH_ACTIVE)) == active

    refused = await rpc_switch_back_flow(env_file=env, chain="ethereum", return_state=True)
    assert refused.is_failed() and (await Variable.aget(ETH_ACTIVE)) == active
    sandbox.fault("eth-rpc-1", "ok")
    back = await (await rpc_switch_back_flow(env_file=env, chain="ethereum", return_state=True)).result()
    assert back["action"] == "switched"
    assert (await Variable.aget(ETH_ACTIVE))["role"] == "primary"


async def test_no_healthy_backup_fails_clearly_and_records_nothing(sandbox, env):
    sandbox.fault("eth-rpc-1", "down")
    sandbox.fault("eth-rpc-2", "wrong-chain")
    state = await rpc_failover_flow(env_file=env, chain="ethereum", return_state=True)
    assert state.is_failed()
    message = str(await state.result(raise_on_failure=False))
    assert "no healthy backup RPC for ethereum" in message and "chain id 11155111, expected 1" in message
    assert await Variable.aget(ETH_ACTIVE, default=None) is None


async def test_a_healthy_primary_is_left_alone_and_a_dry_run_records_nothing(sandbox, env):
    report = await (await rpc_failover_flow(env_file=env, chain="ethereum", return_state=True)).result()
    assert report["action"] == "primary-healthy"
    sandbox.fault("eth-rpc-1", "status:502")
    dry = await (await rpc_failover_flow(env_file=env, chain="ethereum", dry_run=True, return_state=True)).result()
    assert dry["action"] == "dry-run" and dry["chosen"]["name"] == "eth-rpc-2"
    assert await Variable.aget(ETH_ACTIVE, default=None) is None and sandbox.received("slack") == []


async def test_an_unknown_chain_is_refused_by_name(sandbox, env):
    state = await rpc_failover_flow(env_file=env, chain="polygon", return_state=True)
    assert state.is_failed()
    assert "chain: 'polygon' is not a configured chain" in str(await state.result(raise_on_failure=False))
