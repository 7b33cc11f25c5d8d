"""Contract Maintenance flows on a real Prefect server against the sandbox's anvil chains: the gas
strategy from real fee history (stored, capped, unknown on a faulted RPC, used by the emergency
transactions), the fee review's numbers recomputed here from the raw inputs, and the approval-gated
change of the quoted fee."""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from fee_collector_calls import FEE_COLLECTOR, nonce, rpc, send
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.variables import Variable
from prefect_runs import env_variant, form_of, paused_run, resume_and_wait, toml_table
from web3 import Web3

from flows.contracts import fee_review_flow, gas_strategy_flow
from flows.emergency import emergency_shutdown_flow
from runbook import settings as config
from runbook.procedures import gas
from sandbox import evm_setup
from tasks.emergency import pause_fee_collector

pytestmark = [pytest.mark.sandbox]

ADMIN, PAUSER, TREASURY, DEPLOYER, CREATOR, PAYER = evm_setup.ANVIL_DEV_ACCOUNTS
GWEI = 10**9
ETHER = 10**18
FACTORY = Web3().eth.contract(abi=evm_setup.load_artifact("TokenFactory")["abi"])
PRICES = {"ethereum": {"usd": 2500.5}, "binancecoin": {"usd": 601.25}}


@pytest.fixture
def sandbox(sandbox_session):
    """The session's sandbox without faults, CoinGecko's prices set here, no stored recommendations."""
    sandbox_session.clear_faults()
    sandbox_session.vendor("coingecko", "DELETE", "prices")
    sandbox_session.vendor("coingecko", "POST", "prices", PRICES)
    yield sandbox_session
    sandbox_session.clear_faults()
    sandbox_session.vendor("coingecko", "DELETE", "prices")


@pytest.fixture
async def no_stored_gas(prefect_api):
    async with get_client() as client:
        for chain in ("ethereum", "bsc"):
            with contextlib.suppress(ObjectNotFound):
                await client.delete_variable_by_name(gas.variable_name("sandbox", chain))
    yield


def env_file(sb, tmp_path: Path, gas_section: dict[str, Any] | None = None,
             fees_section: dict[str, Any] | None = None) -> Path:
    """The sandbox's environment file with [gas] and [fees] as given here."""
    gas_cfg = {"max_fee_gwei": 50.0, "blocks": 60, "reward_percentiles": [10.0, 50.0, 90.0],
               "priority_percentile": 50.0, "min_priority_fee_gwei": 0.1, "max_age_minutes": 60.0,
               "rpc_timeout_s": 5.0, **(gas_section or {})}
    (tmp_path / "fee_setter_key").write_text(ADMIN.private_key)
    fees_cfg = {"target_margin_usd": 5.0, "target_margin_ratio": 0.5, "fee_step": 0.0001,
                "price_ids": {"ethereum": "ethereum", "bsc": "binancecoin"},
                "fee_setter_key": {"file": str(tmp_path / "fee_setter_key")}, "fee_setter_address": ADMIN.address,
                "sample_blocks": 200, "sample_size": 4, "rpc_timeout_s": 5.0, "deadline_s": 20.0,
                "tx_timeout_s": 30.0, "replace_after_s": 10.0, "poll_s": 0.2, "approval_poll_s": 1,
                **(fees_section or {})}
    text = toml_table("[gas]", gas_cfg) + toml_table("[fees]", fees_cfg)
    text += "\n[fees.coingecko]\n" + f'base_url = "{sb.url("coingecko")}/api/v3"\n'
    text += f'api_key = {{ file = "{sb.dir}/secrets/coingecko_api_key" }}\n'
    path = env_variant(sb, tmp_path, text, replacing=("gas", "fees"))
    config.load(path)  # a broken file fails here, not inside a flow
    return path


def launch_tokens(sb, chain: str, tips_gwei: list[int]) -> list[str]:  # noqa: ANN001
    """One createToken per block, each paying its own tip, so the chain's fee history has something to say."""
    spec = sb.state["chains"][chain]
    fee = int(rpc(sb, chain, "eth_call", {"to": spec["token_factory"], "data": FACTORY.encode_abi("fee", [])},
                  "latest"), 16)
    hashes = []
    for i, tip in enumerate(tips_gwei):
        base = int(rpc(sb, chain, "eth_getBlockByNumber", "latest", False)["baseFeePerGas"], 16)
        tx = {"type": 2, "chainId": spec["chain_id"], "to": spec["token_factory"], "value": fee,
              "nonce": nonce(sb, chain, CREATOR.address, "pending"), "gas": 3_000_000,
              "data": FACTORY.encode_abi("createToken", ["Gas Test", f"GT{i}", 10**24]),
              "maxFeePerGas": 2 * base + tip * GWEI, "maxPriorityFeePerGas": tip * GWEI}
        signed = Account.sign_transaction(tx, CREATOR.private_key)
        hashes.append(rpc(sb, chain, "eth_sendRawTransaction", "0x" + bytes(signed.raw_transaction).hex()))
        rpc(sb, chain, "evm_mine")
    for h in hashes:
        assert rpc(sb, chain, "eth_getTransactionReceipt", h)["status"] == "0x1"
    return hashes


def expected_recommendation(sb, chain: str, stored: dict[str, Any], floor_wei: int, cap_wei: int) -> tuple[int, int]:  # noqa: ANN001
    """(maxFeePerGas, maxPriorityFeePerGas) recomputed from the chain's own fee history of the stored blocks."""
    count = stored["to_block"] - stored["from_block"] + 1
    history = rpc(sb, chain, "eth_feeHistory", hex(count), hex(stored["to_block"]), [10.0, 50.0, 90.0])
    assert int(history["oldestBlock"], 16) == stored["from_block"]
    busy = [i for i, r in enumerate(history["gasUsedRatio"]) if r > 0]
    tip = max(statistics.median_low(int(history["reward"][i][1], 16) for i in busy), floor_wei)
    bases = [int(b, 16) for b in history["baseFeePerGas"]]
    # The next block's base fee is the one block to_block + 1 was mined with: asked for an older
    # range, anvil answers the pending block's instead of the one after the range.
    for _ in range(50):  # anvil mines a block a second
        following = rpc(sb, chain, "eth_getBlockByNumber", hex(stored["to_block"] + 1), False)
        if following:
            break
        time.sleep(0.1)
    bases[-1] = int(following["baseFeePerGas"], 16)
    per_block = math.pow(bases[-1] / bases[0], 1 / count)
    multiplier = Decimal(str(round(max(1.25, min(max(per_block, 1.0), 1.125) ** 6), 6)))
    max_fee = int((Decimal(bases[-1]) * multiplier).to_integral_value(ROUND_CEILING)) + tip
    return min(max_fee, cap_wei), min(tip, min(max_fee, cap_wei))


async def stored_value(chain: str) -> Any:
    return await Variable.aget(gas.variable_name("sandbox", chain), default=None)


async def test_gas_strategy_stores_what_the_fee_history_says_and_nothing_for_an_unreadable_chain(
        prefect_api, sandbox, tmp_path, no_stored_gas):
    launch_tokens(sandbox, "ethereum", [1, 2, 3, 4, 5])
    sandbox.fault("bsc-rpc-1", "down")
    sandbox.fault("bsc-rpc-2", "status:503")
    env = env_file(sandbox, tmp_path)
    state = await gas_strategy_flow(env_file=str(env), alert=False, return_state=True)
    assert state.is_completed(), state
    report = await state.result()
    chains = {c["chain"]: c for c in report["chains"]}
    assert chains["ethereum"]["status"] == "ok"
    assert chains["ethereum"]["stored"] == "stored in tfops-gas-sandbox-ethereum"
    assert chains["bsc"]["status"] == "unknown" and chains["bsc"]["stored"] == "nothing stored"
    assert "bsc-rpc-1" in chains["bsc"]["detail"] and "HTTP 503" in chains["bsc"]["detail"]
    assert await stored_value("bsc") is None

    stored = await stored_value("ethereum")
    assert stored == chains["ethereum"]["recommendation"]
    assert stored["busy_blocks"] >= 5 and int(stored["tips"]["50"]) >= GWEI  # the launches' tips, not the floor
    max_fee, tip = expected_recommendation(sandbox, "ethereum", stored, GWEI // 10, 50 * GWEI)
    assert (int(stored["maxFeePerGas"]), int(stored["maxPriorityFeePerGas"])) == (max_fee, tip)
    assert stored["capped"] is False and abs(time.time() - gas.Recommendation.from_variable(stored).computed_at) < 60
    assert "| bsc | UNKNOWN |" in report["markdown"] and "| ethereum | OK |" in report["markdown"]


async def test_the_cap_bounds_the_recommendation(prefect_api, sandbox, tmp_path, no_stored_gas):
    launch_tokens(sandbox, "ethereum", [3, 3, 3])
    env = env_file(sandbox, tmp_path, gas_section={"chain_max_fee_gwei": {"ethereum": 2.0}})
    report = await gas_strategy_flow(env_file=str(env), chains=["ethereum"], alert=False)
    [eth] = report["chains"]
    assert eth["status"] == "warn" and "CAPPED at 2 gwei" in eth["detail"]
    stored = await stored_value("ethereum")
    assert (stored["maxFeePerGas"], stored["maxPriorityFeePerGas"], stored["capped"]) == (
        str(2 * GWEI), str(2 * GWEI), True)


async def test_emergency_transactions_use_a_fresh_stored_recommendation_and_only_then(
        prefect_api, sandbox, tmp_path, no_stored_gas):
    launch_tokens(sandbox, "ethereum", [2, 4, 6])
    env = env_file(sandbox, tmp_path)
    await gas_strategy_flow(env_file=str(env), chains=["ethereum"], alert=False)
    rec = gas.Recommendation.from_variable(await stored_value("ethereum"))

    drill = await emergency_shutdown_flow(env_file=str(env), reason="drill", dry_run=True)
    eth = next(c for c in drill["chains"] if c["chain"] == "ethereum")
    assert f"with {rec.fees.describe()} (from the stored gas recommendation)" in eth["detail"]
    bsc = next(c for c in drill["chains"] if c["chain"] == "bsc")
    assert "(from live fee history)" in bsc["detail"]  # nothing stored for bsc

    settings = config.load(env)
    try:
        outcome = await pause_fee_collector(settings, "ethereum")
        assert outcome.outcome == "paused" and outcome.verified, outcome.detail
        tx = rpc(sandbox, "ethereum", "eth_getTransactionByHash", outcome.tx_hash)
        assert (int(tx["maxFeePerGas"], 16), int(tx["maxPriorityFeePerGas"], 16)) == (rec.max_fee_wei,
                                                                                       rec.priority_wei)
    finally:
        send(sandbox, "ethereum", ADMIN, "unpause")

    stale = {**rec.to_variable(), "computed_at": "2020-01-01T00:00:00+00:00"}
    await Variable.aset(gas.variable_name("sandbox", "ethereum"), stale, overwrite=True)
    again = await emergency_shutdown_flow(env_file=str(env), reason="drill", dry_run=True)
    assert "(from live fee history)" in next(c for c in again["chains"] if c["chain"] == "ethereum")["detail"]


def read_uint(sb, chain: str, to: str, data: str) -> int:  # noqa: ANN001
    return int(rpc(sb, chain, "eth_call", {"to": to, "data": data}, "latest"), 16)


async def test_fee_review_numbers_follow_from_the_chain_and_the_prices(prefect_api, sandbox, tmp_path, no_stored_gas):
    chain = "ethereum"
    spec = sandbox.state["chains"][chain]
    hashes = launch_tokens(sandbox, chain, [1, 1, 2, 2])
    env = env_file(sandbox, tmp_path, fees_section={"target_margin_usd": 7.5, "target_margin_ratio": 0.4})
    await gas_strategy_flow(env_file=str(env), chains=[chain], alert=False)
    stored = await stored_value(chain)
    state = await fee_review_flow(env_file=str(env), chains=[chain], alert=False, return_state=True)
    assert state.is_completed(), state
    report = await state.result()
    [got] = report["chains"]

    # the raw inputs, read here
    minimum = read_uint(sandbox, chain, spec["token_factory"], FACTORY.encode_abi("fee", []))
    quoted = read_uint(sandbox, chain, spec["fee_collector"], FEE_COLLECTOR.encode_abi("platformFee", []))
    used = statistics.median_low(int(rpc(sandbox, chain, "eth_getTransactionReceipt", h)["gasUsed"], 16)
                                 for h in hashes)
    max_fee, price = int(stored["maxFeePerGas"]), Decimal("2500.5")
    fee = max(minimum, quoted)
    cost = used * max_fee
    margin = fee - cost
    need = max(Decimal(cost) + Decimal("7.5") / price * ETHER, Decimal(cost) / Decimal("0.6"))
    step = 10**14
    suggested = max(int((need / step).to_integral_value(ROUND_CEILING)) * step, minimum)

    assert got["reading"]["gas_used"] == used and got["reading"]["gas_source"].startswith("measured: median of 4")
    assert (got["fee_wei"], got["gas_price_wei"], got["gas_cost_wei"], got["margin_wei"]) == (
        str(fee), str(max_fee), str(cost), str(margin))
    assert got["price_usd"] == 2500.5
    assert got["margin_usd"] == pytest.approx(float(Decimal(margin) / ETHER * price), rel=1e-12)
    assert got["margin_ratio"] == pytest.approx(margin / fee, rel=1e-12)
    assert got["suggested_fee_wei"] == str(suggested)
    assert got["gas_price_source"].startswith("stored gas recommendation of ")
    assert report["approval"] == "not asked: report only" and report["changes"] == []
    assert "### Margin per token created" in report["markdown"]


@pytest.fixture
def restore_fee(sandbox):
    chain = "ethereum"
    contract = sandbox.state["chains"][chain]["fee_collector"]
    before = read_uint(sandbox, chain, contract, FEE_COLLECTOR.encode_abi("platformFee", []))
    yield before
    if read_uint(sandbox, chain, contract, FEE_COLLECTOR.encode_abi("platformFee", [])) != before:
        send(sandbox, chain, ADMIN, "setFee", before)


async def test_the_quoted_fee_changes_only_after_approval_and_only_once(prefect_api, sandbox, tmp_path, restore_fee):
    chain = "ethereum"
    contract = sandbox.state["chains"][chain]["fee_collector"]
    new = 12_300_000_000_000_000  # 0.0123 ETH
    assert restore_fee != new
    env = env_file(sandbox, tmp_path)

    def platform_fee() -> int:
        return read_uint(sandbox, chain, contract, FEE_COLLECTOR.encode_abi("platformFee", []))

    async def run_and_answer(answer: dict[str, Any]) -> dict[str, Any]:
        run = asyncio.create_task(fee_review_flow(env_file=str(env), change_fee=True, new_fees={chain: "0.0123"},
                                                  chains=[chain], alert=False, return_state=True))
        flow_run = await paused_run("fee-review", 60)
        assert platform_fee() == restore_fee  # nothing changes before the answer
        form = await form_of(flow_run)
        assert f"| {chain} | `{contract}` | 0.01 ETH | **0.0123 ETH** |" in form
        state = await resume_and_wait(flow_run, answer, run, 60)
        assert state.is_completed(), state
        return await state.result()

    sent_before = nonce(sandbox, chain, ADMIN.address, "pending")
    refused = await run_and_answer({"approve": True, "approver": "on-call", "fee_ethereum": "0.123"})
    assert refused["approval"].startswith("refused: ethereum: typed '0.123', the new fee is 0.0123")
    assert refused["outcomes"] == [] and platform_fee() == restore_fee
    assert nonce(sandbox, chain, ADMIN.address, "pending") == sent_before

    approved = await run_and_answer({"approve": True, "approver": "on-call", "fee_ethereum": "0.0123"})
    [outcome] = approved["outcomes"]
    assert (approved["approval"], approved["approved_by"]) == ("approved", "on-call")
    assert (outcome["outcome"], outcome["verified"]) == ("set", True), outcome
    assert outcome["verification"] == f"platformFee() is 0.0123 ETH in block {outcome['block']}"
    assert platform_fee() == new and nonce(sandbox, chain, ADMIN.address, "pending") == sent_before + 1
    tx = rpc(sandbox, chain, "eth_getTransactionByHash", outcome["tx_hash"])
    assert tx["from"].lower() == ADMIN.address.lower() and tx["input"] == FEE_COLLECTOR.encode_abi("setFee", [new])
    assert outcome["tx_hash"] in approved["markdown"]

    again = await fee_review_flow(env_file=str(env), change_fee=True, new_fees={chain: "0.0123"}, chains=[chain],
                                  alert=False)
    assert again["approval"] == "not asked: nothing to change" and again["outcomes"] == []
    assert nonce(sandbox, chain, ADMIN.address, "pending") == sent_before + 1 and platform_fee() == new
