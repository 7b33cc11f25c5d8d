"""Metrics Review: Convex answers in the documented envelope (and every way they fail), the
TokenCreated count over eth_getLogs, baselines from history, the band, and the threshold rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_utils import keccak
from pydantic import ValidationError

from runbook.checks import Status
from runbook.clients.http_probe import make_client
from runbook.procedures import metrics as m
from runbook.procedures.noise import RUNBOOK_ERROR_RATE_RULE, apply_rules
from runbook.settings import Chain

NOW = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]
CONVEX = "https://happy-otter-123.convex.cloud"
FACTORY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def cfg(**over: Any) -> m.MetricsReview:
    return m.MetricsReview.model_validate({"convex_url": CONVEX, **over})


def test_the_event_topic_is_the_one_the_compiled_token_factory_emits():
    abi = json.loads((REPO / "contracts" / "build" / "TokenFactory.json").read_text())["abi"]
    [event] = [e for e in abi if e.get("type") == "event" and e["name"] == "TokenCreated"]
    signature = f"TokenCreated({','.join(i['type'] for i in event['inputs'])})"
    assert m.TOKEN_CREATED_TOPIC == "0x" + keccak(text=signature).hex()


# --- Convex query functions ------------------------------------------------------------------------

def convex(handler) -> httpx.AsyncClient:  # noqa: ANN001
    return make_client(8, transport=httpx.MockTransport(handler))


async def read(metric: str, handler) -> m.Reading:  # noqa: ANN001
    async with convex(handler) as client:
        return await m.read_convex_metric(metric, f"metrics:{metric}", cfg(), client, NOW - timedelta(hours=24),
                                          NOW, None)


async def test_a_metric_is_the_value_of_a_success_answer_and_the_window_is_sent_in_ms():
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append({"url": str(request.url), **json.loads(request.content)})
        return httpx.Response(200, json={"status": "success", "value": 1234, "logLines": []})

    reading = await read("daily_active_users", handler)
    assert reading.value == 1234.0 and reading.error is None
    assert seen == [{"url": f"{CONVEX}/api/query", "path": "metrics:daily_active_users", "format": "json",
                     "args": {"sinceMs": int((NOW - timedelta(hours=24)).timestamp() * 1000),
                              "untilMs": int(NOW.timestamp() * 1000)}}]


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(400, json={"status": "error", "errorMessage": "Could not find public function"}),
         "HTTP 400: Could not find public function"),
        (httpx.Response(560, json={"status": "error", "errorMessage": "Uncaught Error: boom", "logLines": []}),
         "HTTP 560: Uncaught Error: boom"),
        (httpx.Response(500, text="Internal Server Error"), "HTTP 500, body is not JSON"),
        (httpx.Response(429, text="Too Many Requests"), "HTTP 429, body is not JSON"),
        (httpx.Response(200, text="{not json"), "HTTP 200, body is not JSON"),
        (httpx.Response(200, json=[1, 2]), "body is not a Convex answer"),
        (httpx.Response(200, json={"status": "success", "value": "many"}), "answered str 'many', not a number"),
        (httpx.Response(200, json={"status": "success", "value": True}), "not a number"),
        (httpx.Response(200, json={"status": "success", "value": -3}), "a negative"),
        (httpx.Response(200, json={"status": "success"}), "success without a value"),
    ],
)
async def test_every_failed_answer_is_unknown_with_the_reason(response: httpx.Response, reason: str):
    reading = await read("daily_active_users", lambda request: response)
    assert reading.value is None and reason in (reading.error or "")
    result = m.judge(reading, None, cfg(), 24)
    assert result.status is Status.unknown and reason in result.observed


async def test_an_unreachable_deployment_is_unknown_not_zero():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    reading = await read("transaction_volume", handler)
    assert reading.value is None and "connection failed" in (reading.error or "")


async def test_error_rate_is_a_fraction_and_null_means_nothing_ran():
    ok = await read("error_rate", lambda r: httpx.Response(200, json={"status": "success", "value": 0.06}))
    assert ok.value == pytest.approx(0.06)
    empty = await read("error_rate", lambda r: httpx.Response(200, json={"status": "success", "value": None}))
    assert empty.value is None and "no function ran" in (empty.error or "")
    too_big = await read("error_rate", lambda r: httpx.Response(200, json={"status": "success", "value": 6}))
    assert too_big.value is None and "fraction from 0 to 1" in (too_big.error or "")


# --- tokens created from the chain ----------------------------------------------------------------

def chain(**over: Any) -> Chain:
    return Chain.model_validate({"kind": "evm", "symbol": "ETH", "chain_id": 1, "rpc_urls": ["http://rpc-1.test",
                                 "http://rpc-2.test"], "max_head_age_s": 60, "token_factory": FACTORY, **over})


def node(head: int, logs_per_block: int, *, chain_id: int = 1):  # noqa: ANN201
    """A JSON-RPC node: blocks one second apart ending now, `logs_per_block` TokenCreated logs each."""
    head_ts = int(datetime.now(UTC).timestamp())
    asked: list[dict[str, Any]] = []

    def answer(call: dict[str, Any]) -> dict[str, Any]:
        method, params = call["method"], call["params"]
        if method == "eth_chainId":
            result: Any = hex(chain_id)
        elif method == "eth_getBlockByNumber":
            n = head if params[0] == "latest" else int(params[0], 16)
            result = {"number": hex(n), "timestamp": hex(head_ts - (head - n))}
        elif method == "eth_getLogs":
            q = params[0]
            asked.append(q)
            assert q["topics"] == [m.TOKEN_CREATED_TOPIC] and q["address"] == FACTORY
            result = [{"address": FACTORY.lower(), "topics": [m.TOKEN_CREATED_TOPIC], "data": "0x",
                       "blockNumber": hex(b), "transactionHash": "0x" + f"{b:064x}", "logIndex": hex(i)}
                      for b in range(int(q["fromBlock"], 16), int(q["toBlock"], 16) + 1)
                      for i in range(logs_per_block)]
        else:
            raise AssertionError(method)
        return {"jsonrpc": "2.0", "id": call["id"], "result": result}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "rpc-1.test":
            return httpx.Response(503, text="down")
        body = json.loads(request.content)
        return httpx.Response(200, json=[answer(c) for c in body] if isinstance(body, list) else answer(body))

    return handler, asked, head_ts


async def test_tokens_created_counts_the_factorys_events_of_the_window_through_a_working_endpoint():
    handler, asked, head_ts = node(head=200_000, logs_per_block=1)
    async with make_client(8, transport=httpx.MockTransport(handler)) as client:
        reading = await m.read_tokens_created({"ethereum": chain()}, cfg(max_block_range=1000), client,
                                              datetime.fromtimestamp(head_ts - 3600, UTC))
    # blocks of the last hour, one per second: 3601 blocks (inclusive), asked in ranges of 1000
    assert reading.value == 3601 and reading.error is None
    assert len(asked) == 4 and "via ethereum-rpc-2" in reading.source


async def test_a_chain_that_cannot_be_read_makes_the_total_unknown_with_every_reason():
    handler, _, _ = node(head=100, logs_per_block=1, chain_id=5)
    async with make_client(8, transport=httpx.MockTransport(handler)) as client:
        reading = await m.read_tokens_created({"ethereum": chain()}, cfg(), client, NOW)
    assert reading.value is None
    assert "ethereum-rpc-1: HTTP 503" in (reading.error or "") and "chain id 5, expected 1" in (reading.error or "")


async def test_no_token_factory_configured_is_unknown_and_says_so():
    async with make_client(8) as client:
        reading = await m.read_tokens_created({"ethereum": chain(token_factory=None)}, cfg(), client, NOW)
    assert reading.value is None and "token_factory" in (reading.error or "")


def test_a_token_factory_must_be_an_evm_address_on_an_evm_chain():
    with pytest.raises(ValidationError, match="token_factory: not an EVM address"):
        chain(token_factory="0x1234")
    with pytest.raises(ValidationError, match="token_factory"):
        Chain.model_validate({"kind": "solana", "symbol": "SOL", "genesis_hash": "1" * 43,
                              "rpc_urls": ["http://sol.test"], "token_factory": FACTORY})


# --- baselines and the band ---------------------------------------------------------------------------

def test_the_baseline_is_the_median_of_each_days_latest_run_within_the_trailing_days():
    day = timedelta(days=1)
    history = [
        (NOW - 1 * day, 100.0), (NOW - 1 * day + timedelta(hours=1), 110.0),  # a later run the same day wins
        (NOW - 2 * day, 90.0), (NOW - 3 * day, 1000.0),  # one odd day does not move a median
        (NOW - 8 * day, 5.0),  # outside 7 days
        (NOW + timedelta(minutes=1), 7.0),  # not earlier than now
    ]
    base = m.baseline(history, NOW, 7)
    assert base == m.Baseline(110.0, 3)
    assert m.baseline([], NOW, 7) is None
    assert m.baseline([(NOW - 8 * day, 5.0)], NOW, 7) is None


@pytest.mark.parametrize(
    ("value", "base", "status", "shown"),
    [
        (120.0, 100.0, Status.ok, "+20%"),
        (150.0, 100.0, Status.ok, "+50%"),  # the band's edge is inside
        (151.0, 100.0, Status.warn, "+51%"),
        (40.0, 100.0, Status.warn, "-60%"),
        (3.0, 0.0, Status.warn, "new activity from zero"),
        (0.0, 0.0, Status.ok, "+0%"),
    ],
)
def test_a_change_beyond_the_band_is_flagged(value: float, base: float, status: Status, shown: str):
    result = m.judge(m.Reading("daily_active_users", value, "Convex"), m.Baseline(base, 7), cfg(), 24)
    assert result.status is status and shown in result.observed
    assert result.expected == "within +/-50% of the 7-day baseline"


def test_flagging_can_fail_instead_of_warn_and_the_first_run_has_no_baseline():
    r = m.Reading("error_rate", 0.2, "Convex")
    assert m.judge(r, m.Baseline(0.01, 7), cfg(flag_status="fail"), 24).status is Status.fail
    first = m.judge(r, None, cfg(), 24)
    assert first.status is Status.ok and "20.00%" in first.observed and "no baseline yet" in first.observed


def test_values_read_as_their_unit():
    assert m.fmt("error_rate", 0.0612) == "6.12%"
    assert m.fmt("transaction_volume", 1234567.891) == "$1,234,567.89"
    assert m.fmt("daily_active_users", 1200.0) == "1,200"


def test_history_keeps_a_failed_reading_as_null_and_reads_back_only_numbers():
    readings = [m.Reading("daily_active_users", 10.0, "Convex"), m.Reading("error_rate", None, "Convex", "down")]
    rows = m.history_rows(readings)
    assert rows[1]["value"] is None and rows[1]["error"] == "down"
    back = m.history_from_rows([(NOW, rows), (NOW - timedelta(days=1), [{"metric": "x", "value": "NaN"}])])
    assert back == {"daily_active_users": [(NOW, 10.0)]}


def test_the_runbooks_error_rate_rule_fires_at_6_percent_and_not_at_4():
    [high] = apply_rules([RUNBOOK_ERROR_RATE_RULE], m.values([m.Reading("error_rate", 0.06, "Convex")]))
    assert (high.status, high.severity, high.name) == (Status.fail, "P1", "Error rate exceeded 5%")
    [low] = apply_rules([RUNBOOK_ERROR_RATE_RULE], {"error_rate": 0.04})
    assert low.status is Status.ok
    [blind] = apply_rules([RUNBOOK_ERROR_RATE_RULE], m.values([m.Reading("error_rate", None, "Convex", "down")]))
    assert blind.status is Status.unknown
