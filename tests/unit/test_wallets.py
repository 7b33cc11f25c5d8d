from datetime import UTC, datetime, timedelta
from decimal import Decimal

from eth_abi import encode

from runbook import settings as config
from runbook.checks import Status
from runbook.clients import evm
from runbook.procedures import wallets

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
SETTINGS = config.parse({
    "environment": "t",
    "chains": {"ethereum": {"kind": "evm", "symbol": "ETH", "chain_id": 1, "rpc_urls": ["http://a"]}},
    "wallet_floors": {"ethereum": 0.5},
    "wallets": [{"chain": "ethereum", "address": "0x" + "ab" * 20, "label": "deployer"}],
})
WALLET = SETTINGS.wallets[0]


def test_multicall_calldata_and_answers_round_trip():
    data = evm.encode_get_eth_balances(["0x" + "11" * 20, "0x" + "22" * 20])
    assert data.startswith("0x82ad56cb")  # aggregate3((address,bool,bytes)[])
    answer = "0x" + encode(["(bool,bytes)[]"], [[(True, encode(["uint256"], [7])), (False, b"")]]).hex()
    assert evm.decode_get_eth_balances(answer, 2) == [7, None]


def test_runway_from_the_oldest_reading_this_week():
    history = [(NOW - timedelta(days=2), Decimal("1.5")), (NOW - timedelta(days=9), Decimal("9"))]
    way = wallets.runway(history, Decimal("1.1"), Decimal("0.5"), NOW)
    assert way.burn_per_day == Decimal("0.2")
    assert way.days_left == 3.0
    assert wallets.runway([], Decimal(1), Decimal(0), NOW).note == "no earlier reading this week"
    assert wallets.runway(history[:1], Decimal("2"), Decimal("0.5"), NOW).note == "not burning"


def test_an_unread_balance_is_unknown_and_says_which_endpoints_failed():
    read = wallets.ChainRead("ethereum", tried=["eth-rpc-1: timed out"])
    result, row = wallets.judge_wallet(SETTINGS, WALLET, read, [], NOW)
    assert result.status is Status.unknown
    assert "eth-rpc-1: timed out" in result.observed
    assert row["balance"] is None and row["shortfall"] is None


def test_a_short_runway_warns_before_the_floor_is_reached():
    read = wallets.ChainRead("ethereum", endpoint="eth-rpc-1", block=10, balances={WALLET.address: 10**18})
    history = [(NOW - timedelta(days=1), Decimal("1.2"))]
    result, row = wallets.judge_wallet(SETTINGS, WALLET, read, history, NOW)
    assert result.status is Status.warn  # 0.5 ETH above the floor at 0.2/day: 2.5 days < 7
    assert row["runway_days"] == 2.5
    assert "2.5 days to floor" in result.observed
