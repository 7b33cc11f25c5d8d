"""Security Scan: FeeCollector log decoding, judging rules, eth_getLogs range splitting, failed logins."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from pydantic import ValidationError

from runbook.checks import Status
from runbook.clients import evm_logs
from runbook.procedures import security_scan as sec
from runbook.settings import Chain

ADMIN = to_checksum_address("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266")
PAUSER = to_checksum_address("0x70997970c51812dc3a010c7d01b50e0d17dc79c8")
TREASURY = to_checksum_address("0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc")
OUTSIDER = to_checksum_address("0x15d34aaf54267db7d7c367839aaf71a00a2c6a65")
CONTRACT = to_checksum_address("0x5fbdb2315678afecb367f032d93f642f64180aa3")
PAUSER_ROLE = "0x" + keccak(text="PAUSER_ROLE").hex()
ADMIN_ROLE = "0x" + "00" * 32
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


def word(typ: str, value: Any) -> str:
    return "0x" + abi_encode([typ], [value]).hex()


def raw_log(signature: str, indexed: list[tuple[str, Any]], data: list[tuple[str, Any]], *, block: int = 100,
            tx: str = "0x" + "ab" * 32, index: int = 0) -> dict[str, Any]:
    """A log exactly as a node returns it: topic0 = keccak(signature), indexed words, ABI-encoded data."""
    return {
        "address": CONTRACT.lower(),
        "topics": [topic(signature), *(word(t, v) for t, v in indexed)],
        "data": "0x" + abi_encode([t for t, _ in data], [v for _, v in data]).hex(),
        "blockNumber": hex(block), "transactionHash": tx, "logIndex": hex(index),
        "blockHash": "0x" + "cd" * 32, "transactionIndex": "0x0", "removed": False,
    }


def cfg(**over: Any) -> sec.SecurityScan:
    base: dict[str, Any] = {"admin_allowlist": [ADMIN], "expected_pausers": [PAUSER],
                            "expected_role_holders": [TREASURY], "withdrawal_threshold": 1.0}
    return sec.SecurityScan.model_validate({**base, **over})


def event(name: str, args: dict[str, Any], *, tx_from: str | None = None, block: int = 7) -> sec.Event:
    return sec.Event(name, args, block, "0x" + "12" * 32, 0, CONTRACT, T0, tx_from)


# ---- decoding -----------------------------------------------------------------------------------

def test_embedded_events_match_the_compiled_abi():
    from sandbox.evm_setup import load_artifact

    abi_events = [e for e in load_artifact("FeeCollector")["abi"] if e["type"] == "event"]
    strip = [{"name": e["name"], "inputs": [(i["name"], i["type"], i["indexed"]) for i in e["inputs"]]}
             for e in abi_events]
    mine = [{"name": e["name"], "inputs": [(i["name"], i["type"], i["indexed"]) for i in e["inputs"]]}
            for e in sec.FEE_COLLECTOR_EVENTS]
    assert sorted(strip, key=lambda e: e["name"]) == sorted(mine, key=lambda e: e["name"])


def test_topics_are_the_keccak_of_the_event_signatures():
    specs = {s.name: s for s in sec.fee_collector_events().values()}
    assert specs["RoleGranted"].topic == topic("RoleGranted(bytes32,address,address)")
    assert specs["Withdrawn"].topic == topic("Withdrawn(address,uint256,address)")
    assert specs["Paused"].topic == topic("Paused(address)")
    watched = sec.watched_topics()
    assert topic("FeeCollected(address,uint256)") not in watched
    assert topic("OwnershipTransferred(address,address)") in watched and len(watched) == 8


def test_decodes_role_granted_with_three_indexed_topics():
    log = raw_log("RoleGranted(bytes32,address,address)",
                  [("bytes32", bytes.fromhex(PAUSER_ROLE[2:])), ("address", OUTSIDER), ("address", ADMIN)], [],
                  block=4242, index=3)
    e = sec.decode_log(log)
    assert e is not None and e.name == "RoleGranted"
    assert e.args == {"role": PAUSER_ROLE, "account": OUTSIDER, "sender": ADMIN}
    assert (e.block, e.log_index, e.address) == (4242, 3, CONTRACT)


def test_decodes_withdrawn_mixing_topics_and_data():
    log = raw_log("Withdrawn(address,uint256,address)", [("address", TREASURY), ("address", TREASURY)],
                  [("uint256", 3 * 10**18)])
    e = sec.decode_log(log)
    assert e is not None and e.args == {"to": TREASURY, "amount": 3 * 10**18, "by": TREASURY}


def test_decodes_paused_from_data_and_fee_changed():
    e = sec.decode_log(raw_log("Paused(address)", [], [("address", PAUSER)]))
    assert e is not None and e.args == {"account": PAUSER}
    f = sec.decode_log(raw_log("FeeChanged(uint256,uint256)", [], [("uint256", 10**16), ("uint256", 2 * 10**16)]))
    assert f is not None and f.args == {"oldFee": 10**16, "newFee": 2 * 10**16}


def test_unknown_events_are_skipped_and_malformed_ones_raise():
    assert sec.decode_log(raw_log("Transfer(address,address,uint256)", [], [])) is None
    bad = raw_log("RoleGranted(bytes32,address,address)", [("bytes32", b"\0" * 32)], [])
    with pytest.raises(ValueError, match="indexed topics"):
        sec.decode_log(bad)
    short = raw_log("Paused(address)", [], [])
    with pytest.raises(ValueError, match="cannot decode"):
        sec.decode_log(short)


# ---- configuration ------------------------------------------------------------------------------

def test_config_checksums_addresses_and_names_a_bad_one():
    c = cfg(admin_allowlist=[ADMIN.lower()])
    assert c.admin_allowlist == [ADMIN] and c.window_hours == 24 and c.max_block_range == 2000
    with pytest.raises(ValidationError, match="expected_pausers"):
        cfg(expected_pausers=["0x1234"])
    with pytest.raises(ValidationError, match="withdrawal_threshold"):
        sec.SecurityScan.model_validate({"admin_allowlist": [ADMIN]})
    with pytest.raises(ValidationError, match="max_block_range"):
        cfg(max_block_range=0)


# ---- judging ------------------------------------------------------------------------------------

def test_grant_to_an_outsider_is_suspicious_naming_both_principals():
    f = sec.assess(event("RoleGranted", {"role": PAUSER_ROLE, "account": OUTSIDER, "sender": ADMIN}), cfg(),
                   "ethereum", "ETH")
    assert f.suspicious and not f.unauthorized and f.principal == ADMIN
    text = f.evidence()
    assert OUTSIDER in text and ADMIN in text and "PAUSER_ROLE" in text and "0x" + "12" * 32 in text
    assert "block 7" in text and "2026-11-27T12:00:00Z" in text


def test_grant_by_a_principal_outside_the_allowlist_is_unauthorized():
    f = sec.assess(event("RoleGranted", {"role": ADMIN_ROLE, "account": OUTSIDER, "sender": OUTSIDER}), cfg(),
                   "bsc", "BNB")
    assert f.suspicious and f.unauthorized and f.principal == OUTSIDER
    assert "DEFAULT_ADMIN_ROLE" in f.summary and "not on the admin allow-list" in f.summary


def test_expected_admin_activity_is_listed_not_suspicious():
    c = cfg()
    listed = [
        event("RoleGranted", {"role": PAUSER_ROLE, "account": PAUSER, "sender": ADMIN}),
        event("RoleRevoked", {"role": PAUSER_ROLE, "account": OUTSIDER, "sender": ADMIN}),
        event("Paused", {"account": PAUSER}),
        event("Unpaused", {"account": ADMIN}),
        event("Withdrawn", {"to": TREASURY, "amount": 10**18, "by": TREASURY}),  # at the threshold
        event("FeeChanged", {"oldFee": 1, "newFee": 2}, tx_from=ADMIN),
        event("RoleRevoked", {"role": PAUSER_ROLE, "account": PAUSER, "sender": PAUSER}),  # renounce
    ]
    for e in listed:
        f = sec.assess(e, c, "ethereum", "ETH")
        assert not f.suspicious and not f.unauthorized, f.summary


def test_unexpected_pause_unpause_withdrawal_fee_change():
    c = cfg(expected_pausers=[])
    paused = sec.assess(event("Paused", {"account": PAUSER}), c, "ethereum", "ETH")
    assert paused.suspicious and paused.unauthorized and "not an expected pauser" in paused.summary
    unpaused = sec.assess(event("Unpaused", {"account": OUTSIDER}), c, "ethereum", "ETH")
    assert unpaused.suspicious and unpaused.unauthorized
    big = sec.assess(event("Withdrawn", {"to": OUTSIDER, "amount": 15 * 10**17, "by": TREASURY}), c,
                     "ethereum", "ETH")
    assert big.suspicious and "1.5 ETH" in big.summary and "above the 1 ETH threshold" in big.summary
    fee = sec.assess(event("FeeChanged", {"oldFee": 1, "newFee": 2}, tx_from=OUTSIDER), c, "ethereum", "ETH")
    assert fee.suspicious and fee.unauthorized and fee.principal == OUTSIDER
    renounce_admin = sec.assess(event("RoleRevoked", {"role": ADMIN_ROLE, "account": ADMIN, "sender": ADMIN}), c,
                                "ethereum", "ETH")
    assert renounce_admin.suspicious and "renounced" in renounce_admin.summary
    owner = sec.assess(event("OwnershipTransferred", {"previousOwner": ADMIN, "newOwner": OUTSIDER}), c,
                       "ethereum", "ETH")
    assert owner.suspicious
    admin_change = sec.assess(event("RoleAdminChanged", {"role": PAUSER_ROLE, "previousAdminRole": ADMIN_ROLE,
                                                         "newAdminRole": PAUSER_ROLE}), c, "ethereum", "ETH")
    assert admin_change.suspicious


def test_chain_results_ok_fail_unknown():
    c = cfg()
    quiet = sec.ChainActivity("ethereum", endpoint="eth-rpc-1", from_block=10, to_block=20)
    r, _ = sec.judge_chain(quiet, c, "ETH")
    assert r.status is Status.ok and "no admin activity in blocks 10-20 via eth-rpc-1" in r.observed
    listed = sec.ChainActivity("ethereum", endpoint="eth-rpc-1", from_block=10, to_block=20,
                               events=[event("Paused", {"account": PAUSER})])
    r, found = sec.judge_chain(listed, c, "ETH")
    assert r.status is Status.ok and "1 expected" in r.observed and PAUSER in r.observed and len(found) == 1
    bad = sec.ChainActivity("ethereum", endpoint="eth-rpc-2", from_block=10, to_block=20,
                            events=[event("Paused", {"account": PAUSER}),
                                    event("Withdrawn", {"to": OUTSIDER, "amount": 5 * 10**18, "by": TREASURY})])
    r, _ = sec.judge_chain(bad, c, "ETH")
    assert r.status is Status.fail and r.severity == "P1" and r.observed.startswith("1 suspicious")
    assert "withdrawal of 5 ETH" in r.observed and PAUSER in r.detail
    unread = sec.ChainActivity("bsc", tried=["bsc-rpc-1: timed out", "bsc-rpc-2: HTTP 503"])
    r, found = sec.judge_chain(unread, c, "BNB")
    assert r.status is Status.unknown and "bsc-rpc-1: timed out; bsc-rpc-2: HTTP 503" in r.observed and not found
    r = sec.judge_unauthorized([], [unread], c)
    assert r.status is Status.unknown


def test_unauthorized_access_names_the_principals():
    c = cfg()
    f = sec.assess(event("Unpaused", {"account": OUTSIDER}), c, "bsc", "BNB")
    ok = sec.assess(event("Unpaused", {"account": ADMIN}), c, "bsc", "BNB")
    r = sec.judge_unauthorized([f, ok], [], c)
    assert r.status is Status.fail and OUTSIDER in r.observed and r.target == OUTSIDER and "bsc:" in r.observed
    assert sec.judge_unauthorized([ok], [], c).status is Status.ok


def test_failed_logins_threshold_and_shape():
    c = cfg()
    got = sec.parse_failed_logins({"count": 30, "top_sources": [{"source": "203.0.113.9", "count": 28},
                                                                 {"source": "198.51.100.1", "count": 2}]})
    r = sec.judge_failed_logins(got, c)
    assert r.status is Status.fail and r.severity == "P2" and "203.0.113.9 (28)" in r.observed
    assert sec.judge_failed_logins(sec.FailedLogins(20, ()), c).status is Status.ok
    assert sec.judge_failed_logins("timed out", c).status is Status.unknown
    with pytest.raises(ValueError):
        sec.parse_failed_logins({"count": "many"})
    with pytest.raises(ValueError):
        sec.parse_failed_logins({"count": 1, "top_sources": [{"source": 1}]})


# ---- eth_getLogs in accepted ranges -------------------------------------------------------------

class RangeLimitedRpc:
    """An RPC that refuses eth_getLogs ranges wider than `limit` blocks and has a log every 10 blocks."""

    def __init__(self, limit: int, message: str = "query exceeds max block range", code: int = -32600,
                 http_status: int = 200) -> None:
        self.limit, self.message, self.code, self.http_status = limit, message, code, http_status
        self.ranges: list[tuple[int, int]] = []
        self.refused = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["method"] == "eth_getLogs"
        q = body["params"][0]
        start, end = int(q["fromBlock"], 16), int(q["toBlock"], 16)
        if end - start + 1 > self.limit:
            self.refused += 1
            return httpx.Response(self.http_status, json={"jsonrpc": "2.0", "id": body["id"],
                                                          "error": {"code": self.code, "message": self.message}})
        self.ranges.append((start, end))
        logs = [{"address": q["address"], "topics": [], "data": "0x", "blockNumber": hex(b),
                 "transactionHash": "0x" + f"{b:064x}", "logIndex": "0x0", "removed": False}
                for b in range(start, end + 1) if b % 10 == 0]
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": logs})


def fetch(rpc: Any, *, from_block: int = 0, to_block: int = 999, max_range: int = 2000) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(rpc)) as client:
            return await evm_logs.get_logs(client, "http://rpc.test/", address=CONTRACT, topics=[["0x01"]],
                                           from_block=from_block, to_block=to_block, max_range=max_range,
                                           deadline_s=5)

    return asyncio.run(go())


def test_ranges_are_halved_until_accepted_and_cover_every_block():
    rpc = RangeLimitedRpc(limit=300)
    logs = fetch(rpc)
    assert [int(log["blockNumber"], 16) for log in logs] == list(range(0, 1000, 10))
    assert all(end - start + 1 <= 300 for start, end in rpc.ranges)
    covered = [b for s, e in rpc.ranges for b in range(s, e + 1)]
    assert covered == list(range(1000))
    assert rpc.refused == 2  # 1000 (max_range capped by the window) -> 500 -> 250, kept for the rest
    assert rpc.ranges[:2] == [(0, 249), (250, 499)]


def test_max_range_is_respected_without_errors():
    rpc = RangeLimitedRpc(limit=10_000)
    fetch(rpc, from_block=5, to_block=104, max_range=25)
    assert rpc.ranges == [(5, 29), (30, 54), (55, 79), (80, 104)] and rpc.refused == 0


@pytest.mark.parametrize(("message", "code", "status"), [
    ("query returned more than 10000 results", -32005, 200),
    ("Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range", -32602, 400),
    ("limit exceeded", -32005, 200),
])
def test_provider_range_errors_are_recognised(message, code, status):
    rpc = RangeLimitedRpc(limit=64, message=message, code=code, http_status=status)
    assert len(fetch(rpc, to_block=199)) == 20


def test_a_range_refused_for_one_block_or_another_error_raises():
    with pytest.raises(evm_logs.RangeTooLarge, match="block 0"):
        fetch(RangeLimitedRpc(limit=0))
    with pytest.raises(evm_logs.RpcError, match="execution reverted"):
        fetch(RangeLimitedRpc(limit=0, message="execution reverted", code=3))


def test_http_errors_and_garbage_raise():
    with pytest.raises(evm_logs.RpcTransportError, match="HTTP 503"):
        fetch(lambda request: httpx.Response(503, text="busy"))
    with pytest.raises(evm_logs.RpcTransportError, match="not a JSON-RPC"):
        fetch(lambda request: httpx.Response(200, text="<html>"))
    with pytest.raises(evm_logs.RpcTransportError, match="not a list"):
        fetch(lambda request: httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": {}}))


def test_the_deadline_bounds_the_whole_scan():
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(200, json={})

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
            await evm_logs.get_logs(client, "http://rpc.test/", address=CONTRACT, topics=[], from_block=0,
                                    to_block=10, max_range=5, deadline_s=0.2)

    with pytest.raises((TimeoutError, httpx.TimeoutException)):
        asyncio.run(go())


# ---- block at a time ----------------------------------------------------------------------------

def block_chain(times: list[int]) -> tuple[Any, list[int]]:
    asked: list[int] = []

    def rpc(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        n = int(body["params"][0], 16)
        asked.append(n)
        result = {"number": hex(n), "timestamp": hex(times[n])} if n < len(times) else None
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    return rpc, asked


def find(times: list[int], ts: float, max_requests: int = 64) -> tuple[int, list[int]]:
    rpc, asked = block_chain(times)

    async def go() -> int:
        async with httpx.AsyncClient(transport=httpx.MockTransport(rpc)) as client:
            return await evm_logs.first_block_at_or_after(
                client, "http://rpc.test/", ts, head=len(times) - 1, head_timestamp=times[-1], deadline_s=5,
                max_requests=max_requests)

    return asyncio.run(go()), asked


def test_binary_search_finds_the_first_block_of_the_window():
    times = [1000 + 12 * i for i in range(10_000)]
    block, asked = find(times, 1000 + 12 * 4321 - 5)
    assert block == 4321 and len(asked) <= 14
    assert find(times, 0)[0] == 0
    assert find(times, times[-1] + 1)[0] == 10_000 and find(times, times[-1] + 1)[1] == []
    assert find(times, times[-1])[0] == 9_999


def test_binary_search_is_bounded():
    times = list(range(1 << 20))
    with pytest.raises(evm_logs.EndpointUnusable, match="more than 5 requests"):
        find(times, 3, max_requests=5)


# ---- scan over a fake chain ---------------------------------------------------------------------

def test_scan_reads_through_the_first_usable_endpoint_and_judges():
    now = datetime.now(UTC).replace(microsecond=0)
    head, head_ts = 500, int(now.timestamp())
    grant = raw_log("RoleGranted(bytes32,address,address)",
                    [("bytes32", bytes.fromhex(PAUSER_ROLE[2:])), ("address", OUTSIDER), ("address", ADMIN)], [],
                    block=450, tx="0x" + "77" * 32)

    def ts_of(n: int) -> int:
        return head_ts - (head - n) * 600  # a block every 10 minutes: 24 h = 144 blocks

    def good(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls = body if isinstance(body, list) else [body]
        out = []
        for c in calls:
            m, p = c["method"], c["params"]
            if m == "eth_chainId":
                r: Any = hex(1)
            elif m == "eth_getBlockByNumber":
                n = head if p[0] == "latest" else int(p[0], 16)
                r = {"number": hex(n), "timestamp": hex(ts_of(n))}
            elif m == "eth_getLogs":
                q = p[0]
                assert q["topics"] == [sec.watched_topics()]
                r = [grant] if int(q["fromBlock"], 16) <= 450 <= int(q["toBlock"], 16) else []
            else:
                raise AssertionError(m)
            out.append({"jsonrpc": "2.0", "id": c["id"], "result": r})
        return httpx.Response(200, json=out if isinstance(body, list) else out[0])

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down.test":
            raise httpx.ConnectError("refused")
        if request.url.host == "wrong.test":
            body = json.loads(request.content)
            return httpx.Response(200, json=[{"jsonrpc": "2.0", "id": c["id"], "result": "0x38"} if
                                             c["method"] == "eth_chainId" else
                                             {"jsonrpc": "2.0", "id": c["id"], "result": {
                                                 "number": "0x1", "timestamp": hex(head_ts)}} for c in body])
        if request.url.host == "convex.test":
            return httpx.Response(200, json={"status": "success", "value": {"count": 3, "top_sources": []}})
        return good(request)

    chains = {
        "ethereum": Chain.model_validate({"kind": "evm", "symbol": "ETH", "chain_id": 1, "fee_collector": CONTRACT,
                                          "rpc_urls": ["http://down.test/", "http://wrong.test/", "http://ok.test/"]}),
        "bsc": Chain.model_validate({"kind": "evm", "symbol": "BNB", "chain_id": 56,
                                     "rpc_urls": ["http://ok.test/"]}),
    }

    async def go() -> list[Any]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(route)) as client:
            return await sec.scan(cfg(), chains, "http://convex.test", client, now)

    results = {r.name: r for r in asyncio.run(go())}
    eth = results["security:onchain:ethereum"]
    assert eth.status is Status.fail and "0x" + "77" * 32 in eth.observed and OUTSIDER in eth.observed
    assert "blocks 356-500 via ethereum-rpc-3" in eth.detail
    assert f"at {(now - timedelta(seconds=50 * 600)).strftime('%Y-%m-%dT%H:%M:%SZ')}" in eth.observed
    bsc = results["security:onchain:bsc"]
    assert bsc.status is Status.unknown and "no fee_collector configured" in bsc.observed
    assert results["security:failed-logins"].status is Status.ok
    assert results["security:unauthorized-access"].status is Status.unknown
