"""The gas strategy's arithmetic on eth_feeHistory answers in the documented shape
(shared/vendors/ethereum-rpc.md), its configuration errors, and when a stored value is usable."""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal

import pytest
from settings_cases import assert_section_problem

from runbook.checks import Status
from runbook.procedures import gas

GWEI = 10**9

# The spec's example answer for eth_feeHistory(5, latest, [25, 75]).
SPEC_ANSWER = {
    "oldestBlock": "0x10b52f",
    "baseFeePerGas": ["0x3fa63a3f", "0x37f999ee", "0x3e36f20a", "0x4099f79a", "0x430d532d", "0x46fcd4a4"],
    "gasUsedRatio": [0.0177, 0.9459, 0.6535, 0.6517, 0.7348],
    "reward": [["0x3b9aca00", "0x59682f00"], ["0x3a13012", "0x3a13012"], ["0x3a13012", "0x3a13012"],
               ["0xf4240", "0xf4240"], ["0xf4240", "0xf4240"]],
}


def strategy(**kw) -> gas.GasStrategy:  # noqa: ANN003
    base = {"max_fee_gwei": 50.0, "reward_percentiles": [25.0, 75.0], "priority_percentile": 75.0,
            "min_priority_fee_gwei": 0.001}
    return gas.GasStrategy.model_validate({**base, **kw})


def test_recommendation_from_the_spec_example():
    cfg = strategy()
    history = gas.parse_fee_history(SPEC_ANSWER, [25.0, 75.0])
    rec = gas.recommend("ethereum", 1, history, cfg, now=1_700_000_000.0, endpoint="eth-1")
    # p75 of the five busy blocks: 0x59682f00, 0x3a13012 x2, 0xf4240 x2 -> median_low = 0x3a13012
    assert rec.tips_wei == {"25": 0x3a13012, "75": 0x3a13012} and rec.busy_blocks == 5
    assert rec.priority_wei == 0x3a13012
    first, nxt = 0x3fa63a3f, 0x46fcd4a4
    per_block = math.pow(nxt / first, 1 / 5)
    multiplier = Decimal(str(round(max(1.25, min(per_block, 1.125) ** 6), 6)))
    assert rec.multiplier == float(multiplier) and rec.base_fee_trend == round(per_block, 6)
    expected = int((Decimal(nxt) * multiplier).to_integral_value(ROUND_CEILING)) + 0x3a13012
    assert rec.max_fee_wei == expected and not rec.capped
    assert (rec.from_block, rec.to_block, rec.next_base_fee_wei) == (0x10b52f, 0x10b52f + 4, nxt)


def test_empty_blocks_do_not_drag_the_tip_to_zero_and_the_floor_holds():
    answer = {"oldestBlock": "0x1", "baseFeePerGas": ["0x64"] * 4, "gasUsedRatio": [0, 0, 0.5],
              "reward": [["0x0"], ["0x0"], ["0x77359400"]]}
    cfg = strategy(reward_percentiles=[50.0], priority_percentile=50.0, min_priority_fee_gwei=0.1)
    rec = gas.recommend("bsc", 56, gas.parse_fee_history(answer, [50.0]), cfg, now=0)
    assert rec.priority_wei == 2 * GWEI and rec.busy_blocks == 1
    idle = {**answer, "gasUsedRatio": [0, 0, 0], "reward": [["0x0"]] * 3}
    rec = gas.recommend("bsc", 56, gas.parse_fee_history(idle, [50.0]), cfg, now=0)
    assert rec.priority_wei == GWEI // 10  # nothing paid anything: the floor
    # flat base fee: the minimum multiplier, 1.25 x 100 wei
    assert rec.max_fee_wei == 125 + GWEI // 10 and rec.multiplier == 1.25


def test_cap_applies_and_a_base_fee_above_the_cap_gives_no_recommendation():
    answer = {"oldestBlock": "0x1", "baseFeePerGas": [hex(30 * GWEI)] * 3, "gasUsedRatio": [0.5, 0.5],
              "reward": [[hex(2 * GWEI)], [hex(2 * GWEI)]]}
    cfg = strategy(reward_percentiles=[50.0], priority_percentile=50.0, max_fee_gwei=100.0,
                   chain_max_fee_gwei={"bsc": 35.0})
    history = gas.parse_fee_history(answer, [50.0])
    eth = gas.recommend("ethereum", 1, history, cfg, now=0)
    assert eth.max_fee_wei == int(30 * GWEI * 1.25) + 2 * GWEI and not eth.capped
    bsc = gas.recommend("bsc", 56, history, cfg, now=0)
    assert (bsc.max_fee_wei, bsc.capped, bsc.cap_wei) == (35 * GWEI, True, 35 * GWEI)
    with pytest.raises(gas.AboveCap, match="at or above the cap of 25 gwei"):
        gas.recommend("bsc", 56, history, strategy(reward_percentiles=[50.0], priority_percentile=50.0,
                                                   chain_max_fee_gwei={"bsc": 25.0}), now=0)


def test_a_rising_base_fee_widens_the_headroom_up_to_the_protocol_limit():
    rising = {"oldestBlock": "0x1", "baseFeePerGas": [hex(100 * 2**i) for i in range(5)],
              "gasUsedRatio": [1.0] * 4, "reward": [["0x1"]] * 4}
    rec = gas.recommend("ethereum", 1, gas.parse_fee_history(rising, [50.0]),
                        strategy(reward_percentiles=[50.0], priority_percentile=50.0), now=0)
    assert rec.multiplier == round(1.125 ** 6, 6)  # doubling per block is clamped to EIP-1559's 12.5%


@pytest.mark.parametrize("answer, message", [
    ({**SPEC_ANSWER, "baseFeePerGas": SPEC_ANSWER["baseFeePerGas"][:-1]}, "6 base fees|5 base fees"),
    ({k: v for k, v in SPEC_ANSWER.items() if k != "reward"}, "reward has no entries"),
    ({**SPEC_ANSWER, "reward": [["0x1"]] * 5}, r"reward\[0\] does not have one value per percentile"),
    ({**SPEC_ANSWER, "gasUsedRatio": [2, 0, 0, 0, 0]}, r"gasUsedRatio\[0\]"),
    ({**SPEC_ANSWER, "oldestBlock": 7}, "oldestBlock is not a hex quantity"),
    ("nope", "not an object"),
])
def test_answers_not_in_the_documented_shape_are_refused_by_name(answer, message):
    with pytest.raises(gas.GasDataError, match=message):
        gas.parse_fee_history(answer, [25.0, 75.0])


def test_the_spec_examples_lowercase_oldestblock_is_read():
    answer = {**{k: v for k, v in SPEC_ANSWER.items() if k != "oldestBlock"}, "oldestblock": "0x10"}
    assert gas.parse_fee_history(answer, [25.0, 75.0]).oldest_block == 16


def test_a_stored_recommendation_is_used_only_fresh_and_for_its_chain():
    cfg = strategy()
    rec = gas.recommend("ethereum", 1, gas.parse_fee_history(SPEC_ANSWER, [25.0, 75.0]), cfg, now=1_700_000_000.0)
    value = rec.to_variable()
    assert isinstance(value["maxFeePerGas"], str) and value["computed_at"].startswith("2023-11-14T22:13:20")
    got, why = gas.usable(value, chain_id=1, now=1_700_000_000.0 + 600, max_age_s=3600)
    assert got == rec and "blocks 1094959-1094963" in why
    assert gas.usable(value, chain_id=1, now=1_700_000_000.0 + 7200, max_age_s=3600) == (
        None, "the stored gas recommendation is 120 min old (limit 60 min)")
    assert gas.usable(value, chain_id=56, now=1_700_000_000.0, max_age_s=3600)[1] == (
        "the stored gas recommendation is for chain id 1, not 56")
    assert gas.usable(None, chain_id=1, now=0, max_age_s=1)[0] is None
    assert "unreadable (KeyError" in gas.usable({"chain": "x"}, chain_id=1, now=0, max_age_s=1)[1]


def test_a_capped_recommendation_is_a_warning_in_the_report():
    cfg = strategy(reward_percentiles=[50.0], priority_percentile=50.0, max_fee_gwei=1.0)
    answer = {"oldestBlock": "0x1", "baseFeePerGas": [hex(GWEI // 2)] * 3, "gasUsedRatio": [0.5, 0.5],
              "reward": [[hex(GWEI)], [hex(GWEI)]]}
    rec = gas.recommend("ethereum", 1, gas.parse_fee_history(answer, [50.0]), cfg, now=0)
    report = gas.GasReport("prod", 0, 0, [gas.ChainGas("ethereum", Status.warn, gas.describe(rec), rec, "stored in x"),
                                          gas.ChainGas("bsc", Status.unknown, "fee history not read: bsc-1: HTTP 503",
                                                       stored="nothing stored")], [50.0])
    assert report.status is Status.unknown and not report.passed
    md = report.markdown()
    assert "| ethereum | WARN | 1 gwei (capped at 1 gwei) |" in md
    assert "| bsc | UNKNOWN | - | - | - | - | - | nothing stored: fee history not read: bsc-1: HTTP 503 |" in md


@pytest.mark.parametrize("section, problem", [
    ({"max_fee_gwei": 50, "reward_percentiles": [50, 10]}, "gas: reward_percentiles must be strictly increasing"),
    ({"max_fee_gwei": 50, "priority_percentile": 60}, "gas: priority_percentile 60 is not one of reward_percentiles"),
    ({"max_fee_gwei": 0.05}, "gas: min_priority_fee_gwei (0.1) must be below the fee cap"),
    ({"max_fee_gwei": 50, "chain_max_fee_gwei": {"solana": 5}}, "gas.chain_max_fee_gwei.solana: not an EVM chain"),
    ({"max_fee_gwei": 50, "blocks": 0}, "gas.blocks: Input should be greater than or equal to 1"),
])
def test_bad_gas_sections_name_the_field(section, problem):
    assert_section_problem("gas", section, problem)
