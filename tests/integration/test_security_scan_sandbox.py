"""Security Scan against the sandbox's real anvil chains and its Convex double.

The sandbox is shared by the whole session: every test scans only the blocks after it started
(`since_block`), and leaves every FeeCollector unpaused with the roles it granted revoked.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from web3 import Web3

from runbook import settings as config
from runbook.checks import Status
from runbook.clients.http_probe import make_client
from runbook.procedures import security_scan as sec
from sandbox import evm_setup

pytestmark = pytest.mark.sandbox

ADMIN, PAUSER, TREASURY, DEPLOYER, OUTSIDER, PAYER = evm_setup.ANVIL_DEV_ACCOUNTS
SOURCE = "203.0.113.77"


def w3_of(sandbox, chain: str) -> Web3:
    return evm_setup.web3_for(sandbox.state["chains"][chain]["upstream"])


def collector(sandbox, chain: str) -> Any:
    w3 = w3_of(sandbox, chain)
    return w3.eth.contract(address=sandbox.state["chains"][chain]["fee_collector"],
                           abi=evm_setup.load_artifact("FeeCollector")["abi"])


def send(sandbox, chain: str, account: evm_setup.DevAccount, fn: str, *args: Any, value: int = 0) -> str:
    """Call a FeeCollector function from `account`, wait for the receipt, return the tx hash (0x...)."""
    w3 = w3_of(sandbox, chain)
    tx = getattr(collector(sandbox, chain).functions, fn)(*args).build_transaction({
        "from": account.address, "value": value, "chainId": w3.eth.chain_id,
        "nonce": w3.eth.get_transaction_count(account.address, "pending"),
    })
    signed = w3.eth.account.sign_transaction(tx, account.private_key)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.2)
    assert receipt["status"] == 1, f"{fn} reverted"
    return "0x" + bytes(tx_hash).hex()


def cfg(**over: Any) -> sec.SecurityScan:
    base: dict[str, Any] = {"admin_allowlist": [ADMIN.address], "expected_pausers": [PAUSER.address],
                            "expected_role_holders": [TREASURY.address], "withdrawal_threshold": 1.0,
                            "timeout_s": 5, "deadline_s": 20}
    return sec.SecurityScan.model_validate({**base, **over})


@pytest.fixture
def since(sandbox) -> dict[str, int]:
    """The first block after everything earlier tests did; scans start there."""
    sandbox.vendor("convex", "DELETE", "logins")
    start = {c: w3_of(sandbox, c).eth.block_number + 1 for c in sandbox.state["chains"]}
    yield start
    sandbox.vendor("convex", "DELETE", "logins")
    for chain in sandbox.state["chains"]:
        assert not collector(sandbox, chain).functions.paused().call(), f"{chain} left paused"


def scan(sandbox, since: dict[str, int], c: sec.SecurityScan | None = None) -> dict[str, Any]:
    settings = config.load(sandbox.env_file)

    async def go() -> list[Any]:
        async with make_client(20) as client:
            return await sec.scan(c or cfg(), settings.chains, sandbox.url("convex"), client, datetime.now(UTC),
                                  since_block=since)

    return {r.name: r for r in asyncio.run(go())}


def test_a_quiet_day_is_ok_everywhere(sandbox, since):
    results = scan(sandbox, since)
    assert set(results) == {"security:onchain:ethereum", "security:onchain:bsc", "security:failed-logins",
                            "security:unauthorized-access"}
    assert {r.status for r in results.values()} == {Status.ok}, [r.observed for r in results.values()]
    assert "no admin activity" in results["security:onchain:ethereum"].observed
    assert "via eth-rpc-1" in results["security:onchain:ethereum"].observed


def test_a_pauser_role_granted_to_an_outsider_fails_with_evidence(sandbox, since):
    granted = False
    try:
        tx = send(sandbox, "ethereum", ADMIN, "grantRole", evm_setup.PAUSER_ROLE, OUTSIDER.address)
        granted = True
        results = scan(sandbox, since)
    finally:
        if granted:
            send(sandbox, "ethereum", ADMIN, "revokeRole", evm_setup.PAUSER_ROLE, OUTSIDER.address)
    eth = results["security:onchain:ethereum"]
    assert eth.status is Status.fail and eth.severity == "P1"
    assert tx in eth.observed and ADMIN.address in eth.observed and OUTSIDER.address in eth.observed
    assert "PAUSER_ROLE granted to" in eth.observed and "not an expected role holder" in eth.observed
    assert results["security:onchain:bsc"].status is Status.ok
    assert results["security:unauthorized-access"].status is Status.ok  # the admin itself granted it


def test_a_pause_is_listed_when_expected_and_fails_otherwise(sandbox, since):
    paused = False
    try:
        tx = send(sandbox, "ethereum", PAUSER, "pause")
        paused = True
        expected = scan(sandbox, since)
        unexpected = scan(sandbox, since, cfg(expected_pausers=[]))
    finally:
        if paused:
            send(sandbox, "ethereum", ADMIN, "unpause")
    eth = expected["security:onchain:ethereum"]
    assert eth.status is Status.ok and "1 expected" in eth.observed
    assert tx in eth.observed and f"Paused by {PAUSER.address}" in eth.observed
    bad = unexpected["security:onchain:ethereum"]
    assert bad.status is Status.fail and tx in bad.observed and "not an expected pauser" in bad.observed
    who = unexpected["security:unauthorized-access"]
    assert who.status is Status.fail and who.target == PAUSER.address and tx in who.observed


def test_a_withdrawal_above_the_threshold_fails_with_evidence(sandbox, since):
    send(sandbox, "bsc", PAYER, "collectFee", value=3 * 10**18)
    tx = send(sandbox, "bsc", TREASURY, "withdraw", TREASURY.address, 3 * 10**18)
    results = scan(sandbox, since)
    bsc = results["security:onchain:bsc"]
    assert bsc.status is Status.fail
    assert f"withdrawal of 3 BNB to {TREASURY.address} by {TREASURY.address}" in bsc.observed
    assert tx in bsc.observed and "above the 1 BNB threshold" in bsc.observed
    block = w3_of(sandbox, "bsc").eth.get_transaction_receipt(tx)["blockNumber"]
    assert f"block {block}," in bsc.observed
    assert results["security:onchain:ethereum"].status is Status.ok
    relaxed = scan(sandbox, since, cfg(withdrawal_threshold=5))["security:onchain:bsc"]
    assert relaxed.status is Status.ok and tx in relaxed.observed


def test_thirty_failed_logins_from_one_source_fail_naming_it(sandbox, since):
    sandbox.vendor("convex", "POST", "logins", {"source": SOURCE, "count": 30, "ago_s": 600})
    sandbox.vendor("convex", "POST", "logins", {"source": "198.51.100.4", "count": 2, "ago_s": 60})
    sandbox.vendor("convex", "POST", "logins", {"source": "192.0.2.1", "count": 50, "ago_s": 2 * 86400})
    r = scan(sandbox, since)["security:failed-logins"]
    assert r.status is Status.fail and r.severity == "P2"
    assert r.observed.startswith("32 failed logins in 24 h") and f"{SOURCE} (30)" in r.observed
    assert "192.0.2.1" not in r.observed  # outside the window


def test_unreadable_chain_is_unknown_with_the_reason(sandbox, since):
    sandbox.fault("bsc-rpc-1", "down")
    sandbox.fault("bsc-rpc-2", "wrong-chain")
    results = scan(sandbox, since)
    bsc = results["security:onchain:bsc"]
    assert bsc.status is Status.unknown
    assert "bsc-rpc-1: connection failed" in bsc.observed and "bsc-rpc-2: chain id 97, expected 56" in bsc.observed
    assert results["security:onchain:ethereum"].status is Status.ok
    assert results["security:unauthorized-access"].status is Status.unknown


def test_failover_reads_through_the_backup(sandbox, since):
    sandbox.fault("eth-rpc-1", "wrong-chain")
    eth = scan(sandbox, since)["security:onchain:ethereum"]
    assert eth.status is Status.ok and "via eth-rpc-2" in eth.observed
