"""Every fault mode on every target of the sandbox, observed through the project's own clients."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from runbook.clients import evm, http_probe, solana
from sandbox import stack

pytestmark = pytest.mark.sandbox

HTTP_TARGETS = ["frontend", "convex", "api", "slack", "pagerduty"]
EVM_TARGETS = ["eth-rpc-1", "eth-rpc-2", "bsc-rpc-1", "bsc-rpc-2"]
SOL_TARGETS = ["sol-rpc-1", "sol-rpc-2"]
ALL = HTTP_TARGETS + EVM_TARGETS + SOL_TARGETS


async def observe(sb: stack.Sandbox, target: str, deadline: float = 2.0):
    url = sb.url(target)
    if target in EVM_TARGETS:
        async with http_probe.make_client(4) as client:
            return await evm.probe_endpoint(client, target, url, deadline_s=deadline)
    if target in SOL_TARGETS:
        return await solana.probe_endpoint(target, url, deadline_s=deadline)
    async with http_probe.make_client(4) as client:
        return await http_probe.probe(client, target, url + "/", deadline_s=deadline)


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_every_target_answers_when_no_fault_is_set(sandbox):
    for target in ALL:
        obs = asyncio.run(observe(sandbox, target))
        assert obs.error is None or target in HTTP_TARGETS, (target, obs.error)
        if target in HTTP_TARGETS:
            assert obs.get("status") is not None, (target, obs.error)


@pytest.mark.parametrize("target", ALL)
def test_down_refuses_connections_and_ok_brings_it_back(sandbox, target):
    port = sandbox.state["endpoints"][target]["port"]
    sandbox.fault(target, "down")
    assert refused(port)
    obs = asyncio.run(observe(sandbox, target))
    assert obs.error is not None and obs.error.startswith("connection failed")
    sandbox.fault(target, "ok")
    assert not refused(port)


@pytest.mark.parametrize("target", ALL)
def test_hang_accepts_and_never_answers_so_the_probe_deadline_ends_it(sandbox, target):
    sandbox.fault(target, "hang")
    started = time.monotonic()
    obs = asyncio.run(observe(sandbox, target, deadline=0.5))
    elapsed = time.monotonic() - started
    assert obs.error == "timed out", obs.error
    assert elapsed < 0.5 + 1.0


@pytest.mark.parametrize("target", ALL)
def test_slow_delays_the_answer(sandbox, target):
    sandbox.fault(target, "slow:0.6")
    obs = asyncio.run(observe(sandbox, target, deadline=3))
    assert obs.latency_s is not None and obs.latency_s >= 0.6
    assert obs.error is None or target in HTTP_TARGETS


@pytest.mark.parametrize("target", HTTP_TARGETS + EVM_TARGETS)
def test_status_answers_with_that_http_code(sandbox, target):
    sandbox.fault(target, "status:503")
    if target in EVM_TARGETS:
        obs = asyncio.run(observe(sandbox, target))
        assert obs.error == "HTTP 503"
    else:
        r = httpx.get(sandbox.url(target) + "/", timeout=2)
        assert r.status_code == 503


def test_status_on_solana_is_an_observed_rpc_failure(sandbox):
    sandbox.fault("sol-rpc-1", "status:429")
    obs = asyncio.run(observe(sandbox, "sol-rpc-1"))
    assert obs.error is not None and "head" not in obs.values


@pytest.mark.parametrize("target", EVM_TARGETS + SOL_TARGETS)
def test_stale_pins_the_head_while_the_other_endpoint_moves_on(sandbox, target):
    sibling = target[:-1] + ("2" if target.endswith("1") else "1")
    sandbox.fault(target, "stale")
    first = asyncio.run(observe(sandbox, target))
    time.sleep(1.3)
    second = asyncio.run(observe(sandbox, target))
    other = asyncio.run(observe(sandbox, sibling))
    assert first.get("head") == second.get("head")
    assert second.get("head_age_s") >= 1.0
    assert other.get("head") > second.get("head")


@pytest.mark.parametrize("target", EVM_TARGETS + SOL_TARGETS)
def test_wrong_chain_reports_another_chain_identity(sandbox, target):
    before = asyncio.run(observe(sandbox, target))
    sandbox.fault(target, "wrong-chain")
    after = asyncio.run(observe(sandbox, target))
    key = "genesis_hash" if target in SOL_TARGETS else "chain_id"
    assert before.get(key) is not None and after.get(key) is not None
    assert before.get(key) != after.get(key)
    if target.startswith("bsc"):
        assert (before.get(key), after.get(key)) == (56, 97)


@pytest.mark.parametrize("target", ["frontend", "convex", "api"])
def test_chain_modes_are_refused_on_http_targets(sandbox, target):
    with pytest.raises(stack.SandboxError, match="only to RPC endpoints"):
        sandbox.fault(target, "stale")


def balance(sb: stack.Sandbox, wallet: dict) -> int:
    if wallet["chain"] == "solana":
        body = {"jsonrpc": "2.0", "id": 1, "method": "getBalance", "params": [wallet["address"]]}
        return int(httpx.post(sb.url("sol-rpc-2"), json=body, timeout=3).json()["result"]["value"])
    prefix = {"ethereum": "eth", "bsc": "bsc"}[wallet["chain"]]
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [wallet["address"], "latest"]}
    return int(httpx.post(sb.url(f"{prefix}-rpc-2"), json=body, timeout=3).json()["result"], 16)


@pytest.mark.parametrize("target", ["eth-deployer", "bsc-deployer", "sol-deployer"])
def test_low_drains_a_deployer_wallet_below_its_floor_and_ok_refunds_it(sandbox, target):
    wallet = next(w for w in sandbox.state["wallets"] if w["target"] == target)
    floor = {"ethereum": 5 * 10**17, "bsc": 5 * 10**17, "solana": 10**9}[wallet["chain"]]
    assert balance(sandbox, wallet) == wallet["healthy"] > floor
    sandbox.fault(target, "low")
    assert balance(sandbox, wallet) == wallet["low"] < floor
    sandbox.fault(target, "ok")
    assert balance(sandbox, wallet) == wallet["healthy"]


def test_unknown_targets_and_modes_are_refused(sandbox):
    with pytest.raises(stack.SandboxError, match="unknown target 'nope'"):
        sandbox.fault("nope", "down")
    with pytest.raises(stack.SandboxError, match="unknown fault mode"):
        sandbox.fault("frontend", "explode")


def test_fee_collectors_are_deployed_and_unpaused_on_both_chains(sandbox):
    paused_selector = "0x5c975abb"  # paused()
    for chain, prefix in (("ethereum", "eth"), ("bsc", "bsc")):
        address = sandbox.state["chains"][chain]["fee_collector"]
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                "params": [{"to": address, "data": paused_selector}, "latest"]}
        result = httpx.post(sandbox.url(f"{prefix}-rpc-1"), json=body, timeout=3).json()["result"]
        assert int(result, 16) == 0


def test_down_stops_every_process_and_frees_every_port(tmp_path):
    sb = stack.up(tmp_path / "sb")
    pids = dict(sb.state["pids"])
    ports = [s["port"] for s in sb.state["endpoints"].values()] + [sb.state["control_port"]]
    assert set(pids) == {"anvil-ethereum", "anvil-bsc", "s3", "hub"}
    assert stack.down(tmp_path / "sb") == []
    for name, pid in pids.items():
        assert not stack._alive(pid), name
    assert all(refused(p) for p in ports)
    assert not (tmp_path / "sb" / "sandbox.json").exists()
