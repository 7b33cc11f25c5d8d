"""The emergency procedures' pure parts: fees, fee bumps, nonce choice, configuration, amounts, reports."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from hexbytes import HexBytes
from pydantic import SecretStr, ValidationError

from runbook import settings as config
from runbook.clients import evm_tx
from runbook.clients.evm import RpcTransportError
from runbook.procedures import emergency as em

GWEI = 10**9
PAUSER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil's public dev account 1
COLLECTOR = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
WALLET = "0x000000000000000000000000000000000000dEaD"

# shared/vendors/ethereum-rpc.md, eth_feeHistory: 5 blocks, percentiles [p, q] (we read the first).
FEE_HISTORY: dict[str, Any] = {
    "oldestBlock": "0x10b52f",
    "baseFeePerGas": ["0x3fa63a3f", "0x37f999ee", "0x3e36f20a", "0x4099f79a", "0x430d532d", "0x46fcd4a4"],
    "gasUsedRatio": [0.0177, 0.9459, 0.6535, 0.6517, 0.7348],
    "reward": [["0x3b9aca00", "0x59682f00"], ["0x3a13012", "0x3a13012"], ["0x3a13012", "0x3a13012"],
               ["0xf4240", "0xf4240"], ["0xf4240", "0xf4240"]],
}
NEXT_BASE = 0x46FCD4A4


def test_fees_take_the_median_tip_and_twice_the_next_base_fee():
    fees = evm_tx.fees_from_history(FEE_HISTORY, min_priority_wei=0, cap_wei=100 * GWEI)
    assert fees.priority == 0x3A13012  # median of 1 gwei, 2x 60.9 Mwei, 2x 1 Mwei
    assert fees.max_fee == 2 * NEXT_BASE + 0x3A13012


def test_an_empty_chain_tip_is_raised_to_the_floor():
    quiet = {**FEE_HISTORY, "reward": [["0x0"]] * 5}
    fees = evm_tx.fees_from_history(quiet, min_priority_wei=GWEI // 10, cap_wei=100 * GWEI)
    assert fees.priority == GWEI // 10 and fees.max_fee == 2 * NEXT_BASE + GWEI // 10
    no_rewards = {k: v for k, v in FEE_HISTORY.items() if k != "reward"}
    assert evm_tx.fees_from_history(no_rewards, min_priority_wei=7, cap_wei=100 * GWEI).priority == 7


def test_the_cap_limits_the_max_fee_and_a_base_fee_above_it_is_refused_naming_the_setting():
    capped = evm_tx.fees_from_history(FEE_HISTORY, min_priority_wei=0, cap_wei=2 * GWEI)
    assert capped.max_fee == 2 * GWEI and capped.priority <= capped.max_fee
    with pytest.raises(evm_tx.FeeCapTooLow, match=r"max_fee_gwei") as err:
        evm_tx.fees_from_history(FEE_HISTORY, min_priority_wei=0, cap_wei=GWEI)
    assert "1.190974628 gwei" in str(err.value)


def test_a_fee_history_without_base_fees_is_a_clear_error():
    with pytest.raises(RpcTransportError, match="EIP-1559"):
        evm_tx.fees_from_history({"oldestBlock": "0x1", "gasUsedRatio": []}, min_priority_wei=0, cap_wei=GWEI)
    with pytest.raises(RpcTransportError, match="hex quantity"):
        evm_tx.fees_from_history({"baseFeePerGas": [7]}, min_priority_wei=0, cap_wei=GWEI)


def test_a_replacement_raises_both_fees_by_at_least_an_eighth():
    previous = evm_tx.Fees(max_fee=20 * GWEI, priority=GWEI)
    low = evm_tx.Fees(max_fee=GWEI, priority=1)
    new = evm_tx.bump(previous, low, cap_wei=100 * GWEI)
    assert new == evm_tx.Fees(max_fee=22_500_000_000, priority=1_125_000_000)
    assert new.max_fee * 8 >= previous.max_fee * 9 and new.priority * 8 >= previous.priority * 9
    # what the chain asks now wins when it is higher than the bump
    assert evm_tx.bump(previous, evm_tx.Fees(40 * GWEI, 3 * GWEI), 100 * GWEI) == evm_tx.Fees(40 * GWEI, 3 * GWEI)
    # odd amounts round up, and a zero tip still rises
    assert evm_tx.bump(evm_tx.Fees(9, 0), evm_tx.Fees(1, 0), 100) == evm_tx.Fees(11, 1)


def test_no_replacement_is_signed_above_the_cap():
    assert evm_tx.bump(evm_tx.Fees(90 * GWEI, GWEI), evm_tx.Fees(GWEI, 1), cap_wei=100 * GWEI) is None


def entry(nonce: int, data: str = em.PAUSE, to: str = COLLECTOR) -> evm_tx.JournalEntry:
    return evm_tx.JournalEntry("0xpauser", to, data, 0, nonce, 50_000, evm_tx.Fees(2 * GWEI, GWEI),
                               ("0xaaa", "0xbbb"), "0xraw", 1.0)


@pytest.mark.parametrize(
    ("latest", "pending", "journal", "action", "nonce", "uses_entry"),
    [
        (4, 4, None, "send", 4, False),  # nothing out: a new transaction at the next nonce
        (4, 5, entry(4), "wait", 4, True),  # ours is in the pool: wait for it, never nonce 5
        (4, 4, entry(4), "rebroadcast", 4, True),  # ours never reached the pool: the same bytes again
        (5, 5, entry(4), "send", 5, False),  # ours was mined; the entry is history
        (4, 5, None, "wait", 4, False),  # journal lost: a pending transaction is still waited for
        (4, 4, entry(4, data="0xdifferent"), "send", 4, False),  # an entry for another call does not count
        (4, 5, entry(4, to=WALLET), "wait", 4, False),
    ],
)
def test_the_nonce_plan_never_puts_a_second_transaction_next_to_a_pending_one(latest, pending, journal, action,
                                                                            nonce, uses_entry):
    plan = evm_tx.plan_nonce(latest, pending, journal, to=COLLECTOR.lower(), data=em.PAUSE)
    assert (plan.action, plan.nonce, plan.entry is not None) == (action, nonce, uses_entry)
    if uses_entry:
        assert "0xbbb" in plan.note


def test_journal_entries_survive_json():
    e = entry(7)
    assert evm_tx.JournalEntry.from_dict(e.to_dict()) == e


def test_signing_sets_the_nonce_and_fees_and_a_bad_key_is_named_without_its_value():
    fees = evm_tx.Fees(3 * GWEI, GWEI)
    signed = evm_tx.sign(SecretStr(PAUSER_KEY), chain_id=56, nonce=9, to=COLLECTOR, data=em.PAUSE, value=0,
                         gas=60_000, fees=fees)
    tx = TypedTransaction.from_bytes(HexBytes(signed.raw)).as_dict()
    assert (tx["nonce"], tx["maxFeePerGas"], tx["maxPriorityFeePerGas"], tx["chainId"]) == (9, 3 * GWEI, GWEI, 56)
    assert Account.recover_transaction(signed.raw) == evm_tx.address_of(SecretStr(PAUSER_KEY))
    with pytest.raises(evm_tx.TxError) as err:
        evm_tx.address_of(SecretStr("0x1234-not-a-key"))
    assert "1234" not in str(err.value)


def test_a_missing_role_is_decoded_with_the_account_and_the_role():
    data = "0xe2517d3f00000000000000000000000090f79bf6eb2c4f870365e785982e1f101e93b906" + (
        "65d7a28e3265b37a6474929f336521b332c1681b933f6cb9f3376673440d862a")
    assert evm_tx.decode_revert(data) == (
        "AccessControlUnauthorizedAccount: 0x90F79bf6EB2c4f870365E785982E1f101E93b906 lacks PAUSER_ROLE")
    assert evm_tx.decode_revert("0xd93c0665") == "EnforcedPause"
    assert evm_tx.decode_revert(None) == "no revert data"


BASE: dict[str, Any] = {"pauser_key": {"env": "PAUSER_KEY"}, "max_fee_gwei": 100}


def problems(**over: Any) -> list[str]:
    with pytest.raises(ValidationError) as err:
        em.Emergency.model_validate({**BASE, **over})
    return config.problems_of(err.value)


def test_configuration_errors_name_the_field():
    assert any(p.startswith("max_fee_gwei:") for p in problems(max_fee_gwei=0))
    assert any(p.startswith("secure_wallets.ethereum:") for p in problems(secure_wallets={"ethereum": "0x12"}))
    assert any("treasury_key and treasury_address go together" in p
               for p in problems(treasury_key={"file": "secrets/treasury"}))
    assert any("replace_after_s" in p for p in problems(replace_after_s=60, tx_timeout_s=30))
    assert any("min_priority_fee_gwei" in p and "ethereum" in p
               for p in problems(chain_max_fee_gwei={"ethereum": 0.05}))
    assert any("must be different secrets" in p for p in problems(
        treasury_key={"env": "PAUSER_KEY"}, treasury_address=WALLET))
    assert any(p.startswith("statuspage.status_url:") for p in problems(statuspage={
        "page_id": "abcd1234", "api_key": {"env": "SP"}}))
    assert any(p.startswith("maintenance.probe_urls:") for p in problems(maintenance={
        "convex_url": "https://x.convex.cloud", "deploy_key": {"env": "CK"}, "probe_urls": []}))


def test_in_the_environment_file_the_path_starts_at_emergency():
    class WithEmergency(config.Settings):
        emergency: em.Emergency | None = None

    with pytest.raises(ValidationError) as err:
        WithEmergency.model_validate({"environment": "prod", "emergency": {**BASE, "tx_timeout_s": -1}})
    assert config.problems_of(err.value) == ["emergency.tx_timeout_s: Input should be greater than 0"]


def test_chain_references_are_checked_against_the_environment():
    chains = {
        "ethereum": config.Chain(kind="evm", symbol="ETH", chain_id=1, rpc_urls=["https://rpc.example"],
                                 fee_collector=COLLECTOR),
        "solana": config.Chain(kind="solana", symbol="SOL", genesis_hash="5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d",
                               rpc_urls=["https://sol.example"]),
    }
    cfg = em.Emergency.model_validate({**BASE, "secure_wallets": {"ethereum": COLLECTOR, "bsc": WALLET,
                                                                  "solana": WALLET}})
    assert cfg.problems_with(chains) == [
        "emergency.secure_wallets.bsc: unknown chain",
        "emergency.secure_wallets.solana: not an EVM chain",
        "emergency.secure_wallets.ethereum: is the FeeCollector itself",
    ]
    assert em.fee_collector_chains(chains) == ["ethereum"]


def test_the_treasury_key_is_never_among_the_secrets_other_flows_read():
    cfg = em.Emergency.model_validate({**BASE, "treasury_key": {"env": "TREASURY_KEY"}, "treasury_address": WALLET})
    assert cfg.treasury_key not in cfg.secret_refs()
    assert cfg.pauser_key in cfg.secret_refs()


def test_the_fee_cap_is_per_chain_where_configured():
    cfg = em.Emergency.model_validate({**BASE, "chain_max_fee_gwei": {"bsc": 5.5}, "min_priority_fee_gwei": 0.5})
    assert cfg.tx_policy("bsc").cap_wei == 5_500_000_000
    assert cfg.tx_policy("ethereum").cap_wei == 100 * GWEI
    assert cfg.tx_policy("ethereum").min_priority_wei == GWEI // 2


def test_amounts_are_shown_exactly_and_must_be_retyped_exactly():
    assert em.amount_text(30_000_000_000_000_000) == "0.03"
    assert em.amount_text(3 * 10**18) == "3"
    assert em.amount_text(1) == "0.000000000000000001"
    assert em.parse_amount(" 0.03 ETH", "ETH") == 30_000_000_000_000_000
    assert em.parse_amount("0.0300", "ETH") == 30_000_000_000_000_000
    assert em.parse_amount("abc", "ETH") is None
    assert em.parse_amount("0.0000000000000000001", "ETH") is None  # below one wei
    plan = em.WithdrawalPlan("ethereum", "ETH", COLLECTOR, WALLET, 30_000_000_000_000_000)
    assert em.approval_problems([plan], {"ethereum": "0.03"}, True) == []
    assert em.approval_problems([plan], {"ethereum": "0.3"}, True) == [
        "ethereum: typed '0.3', the amount to move is 0.03"]
    assert em.approval_problems([plan], {"ethereum": "0.03"}, False) == ["the approver did not tick 'approve'"]


def test_the_shutdown_report_lists_each_chain_and_fails_on_anything_unverified():
    paused = em.ChainOutcome("ethereum", COLLECTOR, "pause", "paused", "paused by tx 0xabc in block 12",
                             verified=True, verification="paused() is true", tx_hash="0xabc", block=12)
    already = em.ChainOutcome("bsc", COLLECTOR, "pause", "already-paused", "already paused; nothing sent",
                              verified=True, verification="paused() is true")
    slack = em.Effect("slack", "done", "slack: delivered", verified=True)
    absent = em.Effect("API maintenance", "not-configured", "no [emergency.maintenance]")
    good = em.ShutdownReport("prod", "breach", 0.0, 2.5, [paused, already], [slack, absent])
    assert good.passed and good.failures == []
    text = good.markdown()
    assert "## Emergency Shutdown: COMPLETE" in text
    assert "| ethereum | `0x5FbDB2315678afecb367f032d93F642f64180aa3` | paused by tx 0xabc in block 12 | yes" in text
    assert "| bsc |" in text and "already paused; nothing sent" in text
    failed = em.ChainOutcome("bsc", COLLECTOR, "pause", "failed", "pause() from 0x1 would revert: EnforcedPause",
                             verification="not verified")
    bad = em.ShutdownReport("prod", "breach", 0.0, 2.5, [paused, failed], [slack])
    assert not bad.passed and bad.failures == ["bsc: pause() from 0x1 would revert: EnforcedPause (not verified)"]
    assert "## Emergency Shutdown: INCOMPLETE" in bad.markdown() and "**NO**" in bad.markdown()
    assert not em.ShutdownReport("prod", "breach", 0.0, 1.0, [], [slack]).passed  # nothing paused is no success
