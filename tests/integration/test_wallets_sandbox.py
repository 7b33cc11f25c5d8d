"""Wallet Balance Check against the sandbox's real chains: batching, one block, failover, unknown."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import httpx
import pytest
from solders.keypair import Keypair

from runbook import settings as config
from runbook.checks import Status
from runbook.clients import evm
from runbook.clients.http_probe import make_client
from runbook.procedures import wallets
from sandbox import evm_setup

pytestmark = pytest.mark.sandbox


def check(settings):
    async def go():
        async with make_client(50) as client:
            return await wallets.check_wallets(settings, client, datetime.now(UTC))

    return asyncio.run(go())


def by_label(results):
    return {r.name: r for r in results}


def test_healthy_wallets_pass_and_name_the_block(sandbox):
    settings = config.load(sandbox.env_file)
    results, rows, reads = check(settings)
    assert {r.status for r in results} == {Status.ok}
    assert {row["balance"] for row in rows if row["chain"] != "solana"} == {2.0}
    assert [row["balance"] for row in rows if row["chain"] == "solana"] == [5.0]
    eth = next(r for r in reads if r.chain == "ethereum")
    assert eth.endpoint == "eth-rpc-1" and eth.method == "multicall3" and eth.block > 0
    assert all(f"at block {eth.block}" in r.observed for r in results if r.group == "ethereum")


def test_a_drained_wallet_fails_with_its_shortfall(sandbox):
    sandbox.fault("bsc-deployer", "low")
    results, rows, _ = check(config.load(sandbox.env_file))
    r = by_label(results)["bsc:bsc-deployer"]
    assert r.status is Status.fail
    assert "0.1000 BNB" in r.observed and "0.4000 BNB short" in r.observed
    assert [x.status for x in results if x.group != "bsc"] == [Status.ok, Status.ok]


def test_a_wrong_chain_primary_fails_over_to_the_backup(sandbox):
    sandbox.fault("eth-rpc-1", "wrong-chain")
    results, _, reads = check(config.load(sandbox.env_file))
    eth = next(r for r in reads if r.chain == "ethereum")
    assert eth.endpoint == "eth-rpc-2"
    assert eth.tried == ["eth-rpc-1: chain id 11155111, expected 1"]
    assert by_label(results)["ethereum:eth-deployer"].status is Status.ok


def test_no_usable_endpoint_is_unknown_never_zero(sandbox):
    sandbox.fault("sol-rpc-1", "down")
    sandbox.fault("sol-rpc-2", "status:503")
    results, rows, _ = check(config.load(sandbox.env_file))
    sol = by_label(results)["solana:sol-deployer"]
    assert sol.status is Status.unknown
    assert "sol-rpc-1: connection failed" in sol.observed and "sol-rpc-2: HTTP 503" in sol.observed
    assert next(row for row in rows if row["chain"] == "solana")["balance"] is None


def test_json_rpc_batch_is_used_where_multicall3_is_absent(sandbox):
    upstream = sandbox.state["chains"]["bsc"]["upstream"]
    body = {"jsonrpc": "2.0", "id": 1, "method": "anvil_setCode", "params": [evm.MULTICALL3, "0x"]}
    httpx.post(upstream, json=body, timeout=5).raise_for_status()
    try:
        results, _, reads = check(config.load(sandbox.env_file))
    finally:
        evm_setup.install_multicall3(upstream)
    bsc = next(r for r in reads if r.chain == "bsc")
    assert bsc.method == "json-rpc batch"
    assert by_label(results)["bsc:bsc-deployer"].status is Status.ok


def test_a_thousand_wallets_per_chain_take_at_most_ceil_n_over_batch_plus_one_requests(sandbox):
    base = config.load(sandbox.env_file)
    n = 1000
    many = [config.Wallet(chain=c, address="0x" + f"{i + 1:040x}", label=f"w{i}") for c in ("ethereum", "bsc")
            for i in range(n)]
    many += [config.Wallet(chain="solana", address=str(Keypair().pubkey()), label=f"s{i}") for i in range(n)]
    settings = base.model_copy(update={"wallets": many})
    before = sandbox.stats()
    results, _, reads = check(settings)
    after = sandbox.stats()
    used = {name: after[name] - before[name] for name in after}
    assert used["eth-rpc-1"] <= math.ceil(n / wallets.EVM_BATCH) + 1
    assert used["bsc-rpc-1"] <= math.ceil(n / wallets.EVM_BATCH) + 1
    assert used["sol-rpc-1"] <= math.ceil(n / 100) + 1
    assert used["eth-rpc-2"] == used["bsc-rpc-2"] == used["sol-rpc-2"] == 0
    assert len(results) == 3 * n
    # Unused EVM addresses hold nothing; new Solana keys do not exist yet: both are a real 0, not unknown.
    assert {r.status for r in results} == {Status.fail}
    assert all(read.requests == used[f"{ {'ethereum': 'eth', 'bsc': 'bsc', 'solana': 'sol'}[read.chain]}-rpc-1"]
               for read in reads)
