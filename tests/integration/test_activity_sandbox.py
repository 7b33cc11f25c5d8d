"""The sandbox's activity generator: what it produces is what the Metrics Review and the Security Scan read.

Every number is read the way the runbook reads it: Convex query functions over HTTP in the documented
envelope, and TokenCreated events by eth_getLogs through the sandbox's RPC endpoints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_abi import decode
from eth_utils import keccak, to_checksum_address

from sandbox import evm_setup, stack

pytestmark = pytest.mark.sandbox

TFOPS = str(Path(sys.executable).parent / "tfops")
TOKEN_CREATED_TOPIC = "0x" + keccak(text="TokenCreated(address,address,string,string,uint256,uint256)").hex()
RPC = {"ethereum": "eth-rpc-1", "bsc": "bsc-rpc-1"}


def query(sb: stack.Sandbox, path: str, args: Any) -> httpx.Response:
    return httpx.post(sb.url("convex") + "/api/query", json={"path": path, "args": args, "format": "json"}, timeout=5)


def value(sb: stack.Sandbox, path: str, since_ms: int) -> Any:
    # untilMs a minute ahead: the function log moves an execution to the next free millisecond.
    answer = query(sb, path, {"sinceMs": since_ms, "untilMs": int(time.time() * 1000) + 60_000})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "success" and body["logLines"] == [], body
    return body["value"]


def wait_for(sb: stack.Sandbox, done: Callable[[dict[str, Any]], bool], timeout_s: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        totals = sb.activity()["totals"]
        if done(totals):
            return totals
        assert time.monotonic() < deadline, f"activity did not get there in {timeout_s} s: {totals}"
        time.sleep(0.1)


def rpc(sb: stack.Sandbox, chain: str, method: str, params: list[Any]) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    answer = httpx.post(sb.url(RPC[chain]), json=body, timeout=5).json()
    assert "error" not in answer, answer
    return answer["result"]


def test_activity_feeds_every_metric_and_stops_when_switched_off(sandbox):
    start_blocks = {chain: int(rpc(sandbox, chain, "eth_blockNumber", []), 16) for chain in RPC}
    since_ms = int(time.time() * 1000)
    sandbox.activity({"preset": "high", "tick_s": 0.2, "tokens_every_ticks": 1, "error_share": 0.1})
    wait_for(sandbox, lambda t: min(t["tokens_created"].values()) >= 1 and t["errors"] >= 1)
    stopped = sandbox.activity({"preset": "off"})  # stops without zeroing the totals
    assert stopped["running"] is False and stopped["settings"]["preset"] == "off"
    totals = stopped["totals"]

    creators = set(sandbox.state["activity"]["creators"])
    for chain, launched in totals["tokens_created"].items():
        factory = sandbox.state["chains"][chain]["token_factory"]
        logs = rpc(sandbox, chain, "eth_getLogs", [{"address": factory, "topics": [TOKEN_CREATED_TOPIC],
                                                    "fromBlock": hex(start_blocks[chain]), "toBlock": "latest"}])
        assert len(logs) >= launched >= 1, (chain, logs)  # a launch mined after the last count shows up too
        creator = to_checksum_address("0x" + logs[0]["topics"][2][-40:])
        name, symbol, supply, fee = decode(["string", "string", "uint256", "uint256"],
                                           bytes.fromhex(logs[0]["data"][2:]))
        assert creator in creators and name and symbol and supply > 0
        assert fee == sandbox.state["activity"]["token_fee_wei"]

    users = {e["user"] for e in sandbox.vendor("convex", "GET", "users") + sandbox.vendor("convex", "GET", "trades")}
    assert value(sandbox, "metrics:dailyActiveUsers", since_ms) == len(users) > 0
    volume = value(sandbox, "metrics:transactionVolume", since_ms)
    assert volume == pytest.approx(totals["volume_usd"], abs=0.01) and volume > 0
    assert totals["executions"] > totals["errors"] > 0
    assert value(sandbox, "metrics:errorRate", since_ms) == pytest.approx(totals["errors"] / totals["executions"])
    assert len(sandbox.vendor("convex", "GET", "logs")) == totals["executions"]
    assert totals["tx_failures"] == 0 and totals["last_error"] is None

    time.sleep(0.5)  # more than two ticks: nothing may arrive once it is off
    assert sandbox.activity()["totals"] == totals
    assert len(sandbox.vendor("convex", "GET", "logs")) == totals["executions"]
    reset = sandbox.vendor("activity", "DELETE", "")
    assert reset["running"] is False and reset["totals"]["ticks"] == 0
    assert set(reset["totals"]["tokens_created"].values()) == {0}


def test_a_refused_launch_is_counted_and_the_generator_carries_on(sandbox):
    upstream = sandbox.state["chains"]["ethereum"]["upstream"]
    creators = sandbox.state["activity"]["creators"]
    before = {a: int(httpx.post(upstream, json={"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance",
                                                "params": [a, "latest"]}, timeout=5).json()["result"], 16)
              for a in creators}
    for address in creators:  # nothing left to pay the fee with, on one chain only
        evm_setup.fund(upstream, address, 0)
    try:
        sandbox.activity({"preset": "normal", "tick_s": 0.1, "tokens_every_ticks": 1})
        totals = wait_for(sandbox, lambda t: t["tx_failures"] >= 2 and t["tokens_created"]["bsc"] >= 1)
    finally:
        sandbox.activity({"preset": "off"})
        for address, wei in before.items():
            evm_setup.fund(upstream, address, wei)
    assert totals["tokens_created"]["ethereum"] == 0
    assert totals["last_error"].startswith("ethereum: createToken(") and "refused" in totals["last_error"]
    assert totals["trades"] > 0 and totals["executions"] > 0


def test_presets_make_their_anomaly_and_bad_settings_are_refused(sandbox):
    def run(preset: str, ticks: int) -> tuple[int, dict[str, Any]]:
        sandbox.vendor("activity", "DELETE", "")
        sandbox.vendor("convex", "DELETE", "logs")
        since_ms = int(time.time() * 1000)
        sandbox.activity({"preset": preset, "tick_s": 0.05, "tokens_every_ticks": 0})
        wait_for(sandbox, lambda t: t["ticks"] >= ticks)
        return since_ms, sandbox.activity({"preset": "off"})["totals"]

    since_ms, totals = run("error-spike", 15)
    rate = value(sandbox, "metrics:errorRate", since_ms)
    assert rate == pytest.approx(totals["errors"] / totals["executions"])
    assert rate > 0.15  # the preset fails about 30%; the alert rule fires above 5%

    since_ms, totals = run("login-spike", 3)
    failed = value(sandbox, "security:failedLogins", since_ms)
    assert failed["count"] == totals["failed_logins"] >= 3 * 40
    assert all(s["source"].startswith("203.0.113.") for s in failed["top_sources"])

    _, normal = run("normal", 10)
    _, dropped = run("volume-drop", 10)
    assert dropped["volume_usd"] / dropped["trades"] < 0.2 * normal["volume_usd"] / normal["trades"]

    with pytest.raises(stack.SandboxError, match="unknown preset 'surge'; presets: off, normal, high"):
        sandbox.activity({"preset": "surge"})
    with pytest.raises(stack.SandboxError, match="error_share takes a number from 0 to 1, got 1.5"):
        sandbox.activity({"preset": "normal", "error_share": 1.5})
    with pytest.raises(stack.SandboxError, match="unknown field 'colour'"):
        sandbox.activity({"colour": "red"})
    assert sandbox.activity()["settings"]["preset"] == "off"

    answer = query(sandbox, "metrics:dailyActiveUsers", {"untilMs": 5})
    assert answer.status_code == 400 and answer.json()["status"] == "error"
    assert "`sinceMs`" in answer.json()["errorMessage"]


def test_tfops_sandbox_activity_shows_and_changes_the_settings(sandbox):
    def tfops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TFOPS, "sandbox", "activity", "--dir", str(sandbox.dir), *args], capture_output=True,
                              text=True, timeout=60, env=dict(os.environ), check=False)

    changed = tfops("normal", "--set", "tick_s=0.1", "--set", "tokens_every_ticks=0")
    assert changed.returncode == 0, changed.stderr
    shown = json.loads(changed.stdout)
    assert shown["running"] is True and shown["settings"] == sandbox.activity()["settings"]
    assert (shown["settings"]["preset"], shown["settings"]["tick_s"], shown["settings"]["trade_usd"]) == (
        "normal", 0.1, 250.0)

    refused = tfops("--set", "tick_s=0")
    assert refused.returncode == 2 and "tick_s takes a number from 0.05 to 3600, got 0" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sandbox.activity()["settings"]["tick_s"] == 0.1  # bad input changes nothing
