"""The fee review's arithmetic, the approval rule, CoinGecko's simple-price answer in its documented
shape (shared/vendors/coingecko.md section 2), and the [fees] section's errors."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import pytest
from settings_cases import assert_section_problem

from runbook.checks import Status
from runbook.clients import coingecko
from runbook.clients.ratelimits import ParseError
from runbook.config_types import Chain, ChainKind
from runbook.procedures import fees
from runbook.procedures.gas import Recommendation

GWEI = 10**9
ETHER = 10**18
CHAIN = Chain(kind=ChainKind.evm, symbol="ETH", chain_id=1, rpc_urls=["https://eth.example"],
              fee_collector="0x" + "11" * 20, token_factory="0x" + "22" * 20)


def rec(max_fee_wei: int) -> Recommendation:
    return Recommendation("ethereum", 1, max_fee_wei, GWEI, max_fee_wei // 2, 1.0, 1.25, 10, 29, {"50": GWEI}, 20,
                          50 * GWEI, False, 0.0)


def review(**kw) -> fees.FeeReview:  # noqa: ANN003
    return fees.FeeReview.model_validate({"price_ids": {"ethereum": "ethereum"}, **kw})


def reading(quoted: int | None, minimum: int, gas_used: int | None = 1_000_000) -> fees.ChainReading:
    return fees.ChainReading("ethereum", "eth-1", 100, minimum, quoted, gas_used, "measured: test")


def test_margin_and_suggested_fee_from_the_inputs():
    cfg = review(target_margin_usd=5.0, target_margin_ratio=0.5, fee_step=0.0001)
    out = fees.judge(cfg, "ethereum", CHAIN, reading(ETHER // 100, ETHER // 1000, 800_000), rec(3 * GWEI),
                     "stored", 3000.0)
    cost = 800_000 * 3 * GWEI  # 0.0024 ETH
    assert (out.fee_wei, out.gas_cost_wei, out.margin_wei) == (ETHER // 100, cost, ETHER // 100 - cost)
    assert out.margin_usd == pytest.approx(0.0076 * 3000)
    assert out.margin_ratio == pytest.approx(0.76)
    # $5 at $3000 is 0.0016667 ETH over the cost -> 0.0040667, rounded up to 0.0041; 50%: 0.0048
    assert out.suggested_fee_wei == 48 * 10**14
    assert out.status is Status.ok and "suggested fee 0.0048 ETH" in out.detail


def test_a_cached_price_is_used_and_said_to_be_cached():
    cfg = review(target_margin_usd=5.0, target_margin_ratio=0.5, fee_step=0.0001)
    note = "cached price (CoinGecko: circuit open (cache-only mode); stale, 40 s old)"
    out = fees.judge(cfg, "ethereum", CHAIN, reading(ETHER // 100, ETHER // 1000, 800_000), rec(3 * GWEI),
                     "stored", 3000.0, note)
    assert out.margin_usd == pytest.approx(0.0076 * 3000)
    assert f"ETH price: {note}" in out.notes


def test_a_fee_below_the_gas_cost_fails_and_the_usd_target_can_dominate():
    cfg = review(target_margin_usd=20.0, target_margin_ratio=0.1, fee_step=0.001)
    out = fees.judge(cfg, "ethereum", CHAIN, reading(ETHER // 1000, 0, 2_000_000), rec(5 * GWEI), "live", 2000.0)
    cost = 2_000_000 * 5 * GWEI  # 0.01 ETH, the fee is 0.001
    assert out.margin_wei == ETHER // 1000 - cost and out.status is Status.fail
    need = Decimal(cost) + Decimal(20) / Decimal(2000) * ETHER  # 0.02 ETH
    assert out.suggested_fee_wei == int((need / 10**15).to_integral_value(ROUND_CEILING)) * 10**15
    assert "LOSES money" in out.detail and out.detail.startswith("margin -0.009 ETH ($-18.00)")


def test_the_factory_minimum_bounds_the_fee_and_the_suggestion():
    cfg = review(target_margin_usd=0.0, target_margin_ratio=0.0)
    out = fees.judge(cfg, "ethereum", CHAIN, reading(ETHER // 1000, ETHER // 100), rec(GWEI), "live", 3000.0)
    assert out.fee_wei == ETHER // 100  # a launch pays at least the factory's fee
    assert out.suggested_fee_wei == ETHER // 100
    assert any("only a new factory could charge less" in n for n in out.notes)
    assert any("launches paying the quote revert (FeeTooLow)" in n for n in out.notes)


def test_missing_inputs_are_unknown_with_every_reason():
    out = fees.judge(review(), "ethereum", CHAIN, reading(None, ETHER // 100, None), None, "no stored one", None,
                     "CoinGecko: HTTP 429")
    assert out.status is Status.unknown and out.suggested_fee_wei is None and out.margin_wei is None
    assert out.detail == ("gas per creation unknown: measured: test; no gas price: no stored one; no ETH price: "
                          "CoinGecko: HTTP 429")


def test_an_approval_counts_only_ticked_and_with_each_fee_retyped():
    changes = [fees.FeeChange("ethereum", "ETH", "0xc", ETHER // 100, 12 * 10**15),
               fees.FeeChange("bsc", "BNB", "0xd", ETHER // 100, 5 * 10**15)]
    assert fees.approval_problems(changes, {"ethereum": "0.012", "bsc": "0.005 BNB"}, True) == []
    assert fees.approval_problems(changes, {"ethereum": "0.012", "bsc": "0.005"}, False) == [
        "the approver did not tick 'approve'"]
    assert fees.approval_problems(changes, {"ethereum": "0.12", "bsc": "0.005"}, True) == [
        "ethereum: typed '0.12', the new fee is 0.012"]


def test_a_fee_change_round_trips_through_its_dict():
    change = fees.FeeChange("ethereum", "ETH", "0xc", None, 12 * 10**15, problem=None)
    assert fees.FeeChange.from_dict(change.to_dict()) == change and change.to_dict()["new"] == "0.012 ETH"
    assert change.needed and not fees.FeeChange("e", "ETH", "0xc", 5, 5).needed


def test_simple_price_in_the_documented_shape():
    payload = {"ethereum": {"usd": 3012.45}, "binancecoin": {"usd": 585.1},
               "solana": {"usd": 142.7, "usd_24h_change": -1.2, "last_updated_at": 1717000000}}
    prices, missing = coingecko.parse_simple_price(payload, ["ethereum", "binancecoin", "no-such-coin"], "usd")
    assert prices == {"ethereum": 3012.45, "binancecoin": 585.1} and missing == ("no-such-coin",)
    with pytest.raises(ParseError, match="ethereum.usd is not a positive number"):
        coingecko.parse_simple_price({"ethereum": {"eur": 1.0}}, ["ethereum"], "usd")
    with pytest.raises(ParseError, match="not a JSON object"):
        coingecko.parse_simple_price([], ["ethereum"], "usd")


@pytest.mark.parametrize("section, problem", [
    ({"fee_setter_address": "0x" + "11" * 20}, "fees: fee_setter_key and fee_setter_address go together"),
    ({"price_ids": {"solana": "solana"}}, "fees.price_ids.solana: not an EVM chain"),
    ({"price_ids": {"base": "ethereum"}}, "fees.price_ids.base: unknown chain"),
    ({"target_margin_ratio": 1.0}, "fees.target_margin_ratio: Input should be less than or equal to 0.95"),
    ({"fee_setter_key": {"env": "K"}, "fee_setter_address": "0x12"}, "fees.fee_setter_address: not an EVM address"),
])
def test_bad_fees_sections_name_the_field(section, problem):
    assert_section_problem("fees", section, problem)
