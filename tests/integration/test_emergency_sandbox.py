"""Emergency shutdown and financial emergency against the sandbox's anvil chains and vendor doubles.

The chains are shared by the whole session: every test that pauses a FeeCollector or holds a
chain's mining gives both back (`restore`), unpausing with the admin key.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from eth_account import Account
from fee_collector_calls import balance, is_paused, nonce, rpc, send
from pydantic import SecretStr

from runbook import settings as config
from runbook.clients import evm_tx
from runbook.clients.http_probe import make_client
from runbook.procedures import emergency as em
from sandbox import evm_setup
from sandbox.httpserver import Listener
from sandbox.services import ConvexDeployment, PlatformApi
from sandbox.stack import free_port
from sandbox.vendors import statuspage

pytestmark = pytest.mark.sandbox

ADMIN, PAUSER, TREASURY, DEPLOYER, OUTSIDER, PAYER = evm_setup.ANVIL_DEV_ACCOUNTS
PAUSER_KEY = SecretStr(PAUSER.private_key)
ENV = "sandbox-emergency-test"
CHAINS = ("ethereum", "bsc")


def cfg(**over: Any) -> em.Emergency:
    base: dict[str, Any] = {"pauser_key": {"env": "TFOPS_TEST_PAUSER_KEY"}, "max_fee_gwei": 50, "tx_timeout_s": 20,
                            "replace_after_s": 10, "poll_s": 0.1, "rpc_timeout_s": 5}
    return em.Emergency.model_validate({**base, **over})


def hold_mining(sb, chain: str) -> None:
    rpc(sb, chain, "evm_setIntervalMining", 0)


def resume_mining(sb, chain: str) -> None:
    rpc(sb, chain, "evm_mine")
    rpc(sb, chain, "evm_setIntervalMining", 1)  # the sandbox's one block per second


@pytest.fixture
def sandbox(sandbox_session):
    """The session's sandbox with no fault left on. Unlike the shared `sandbox` fixture, the vendor
    knobs are not reset (about 1.5 s a test): these tests turn none but their own."""
    sandbox_session.clear_faults()
    return sandbox_session


@pytest.fixture
def chains(sandbox) -> dict[str, config.Chain]:
    return dict(config.load(sandbox.env_file).chains)


@pytest.fixture
def restore(sandbox) -> Iterator[None]:
    """Mining back on and every FeeCollector unpaused (by the admin), whatever the test did."""
    yield

    def give_back(chain: str) -> bool:
        resume_mining(sandbox, chain)
        if is_paused(sandbox, chain):
            send(sandbox, chain, ADMIN, "unpause")
        return is_paused(sandbox, chain)

    with ThreadPoolExecutor(len(CHAINS)) as pool:
        assert not any(pool.map(give_back, CHAINS)), "a FeeCollector stayed paused"


class RecordingJournal(evm_tx.MemoryJournal):
    """Keeps every version written, to compare the first with the replacement."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[evm_tx.JournalEntry] = []

    async def put(self, key: str, entry: evm_tx.JournalEntry) -> None:
        self.history.append(entry)
        await super().put(key, entry)


async def test_shutdown_pauses_every_collector_at_once_and_a_second_run_changes_nothing(sandbox, chains, restore):
    before = {c: nonce(sandbox, c, PAUSER.address) for c in CHAINS}
    journal = evm_tx.MemoryJournal()
    async with make_client(8) as client:
        drill = await em.pause_chain(cfg(), "ethereum", chains["ethereum"], client, PAUSER_KEY, journal,
                                     environment=ENV, dry_run=True)
        assert drill.outcome == "would-pause" and "simulated pause() from " + PAUSER.address in drill.detail
        assert not is_paused(sandbox, "ethereum") and nonce(sandbox, "ethereum", PAUSER.address) == before["ethereum"]

        first = await em.pause_all(cfg(), chains, client, PAUSER_KEY, journal, environment=ENV)
        assert [(o.chain, o.outcome, o.verified) for o in first] == [("ethereum", "paused", True),
                                                                     ("bsc", "paused", True)]
        for o in first:
            assert o.detail == f"paused by tx {o.tx_hash} in block {o.block}"
            assert o.verification == "paused() is true" and o.endpoint.endswith("-rpc-1")
        assert all(is_paused(sandbox, c) for c in CHAINS)
        assert {c: nonce(sandbox, c, PAUSER.address) for c in CHAINS} == {c: n + 1 for c, n in before.items()}

        second = await em.pause_all(cfg(), chains, client, PAUSER_KEY, evm_tx.MemoryJournal(), environment=ENV)
    assert [(o.outcome, o.verified, o.tx_hash) for o in second] == [("already-paused", True, None)] * 2
    assert all(o.detail == "already paused; nothing sent" for o in second)
    assert {c: nonce(sandbox, c, PAUSER.address) for c in CHAINS} == {c: n + 1 for c, n in before.items()}


async def test_a_key_without_the_pauser_role_is_refused_before_anything_is_sent(sandbox, chains):
    sent_before = nonce(sandbox, "bsc", OUTSIDER.address, "pending")
    async with make_client(4) as client:
        out = await em.pause_chain(cfg(), "bsc", chains["bsc"], client, SecretStr(OUTSIDER.private_key),
                                   evm_tx.MemoryJournal(), environment=ENV)
    assert out.outcome == "failed" and not out.ok
    assert f"{OUTSIDER.address} lacks PAUSER_ROLE" in out.detail
    assert f"the pauser key (emergency.pauser_key) belongs to {OUTSIDER.address}" in out.detail
    assert nonce(sandbox, "bsc", OUTSIDER.address, "pending") == sent_before and not is_paused(sandbox, "bsc")


async def test_a_run_killed_right_after_sending_its_pause_is_not_repeated(sandbox, chains, restore):
    """Ethereum's re-run finds the transaction in the journal; BSC's lost the journal and finds it by
    the pauser's pending nonce. Either way the chain sees one pause transaction, not two."""
    journals = {"ethereum": evm_tx.MemoryJournal(), "bsc": evm_tx.MemoryJournal()}
    before = {c: nonce(sandbox, c, PAUSER.address) for c in CHAINS}
    sent: dict[str, str] = {}
    for chain in CHAINS:
        hold_mining(sandbox, chain)  # the killed run's transaction stays in the pool

    def on_event(message: str) -> None:
        if " sent pause() " in message:
            chain, hash_ = message.split(":")[0], message.split()[3]
            sent[chain] = hash_

    async with make_client(8) as client:
        killed = [asyncio.create_task(em.pause_chain(cfg(), c, chains[c], client, PAUSER_KEY, journals[c],
                                                     environment=ENV, on_event=on_event)) for c in CHAINS]
        async with asyncio.timeout(10):
            while len(sent) < len(CHAINS):
                await asyncio.sleep(0.01)
        for task in killed:
            task.cancel()
        await asyncio.gather(*killed, return_exceptions=True)
        for c in CHAINS:
            assert (nonce(sandbox, c, PAUSER.address), nonce(sandbox, c, PAUSER.address, "pending")) == (
                before[c], before[c] + 1)
        waiting: set[str] = set()

        def on_rerun_event(message: str) -> None:
            if "from an earlier attempt" in message:
                waiting.add(message.split(":")[0])

        reruns = [asyncio.create_task(em.pause_chain(cfg(), c, chains[c], client, PAUSER_KEY, journal,
                                                     environment=ENV, on_event=on_rerun_event))
                  for c, journal in (("ethereum", journals["ethereum"]), ("bsc", evm_tx.MemoryJournal()))]
        async with asyncio.timeout(10):  # both re-runs found the pending pause and wait for it
            while len(waiting) < len(CHAINS):
                await asyncio.sleep(0.01)
        for c in CHAINS:
            resume_mining(sandbox, c)
        eth, bsc = await asyncio.gather(*reruns)
    for out in (eth, bsc):
        assert (out.outcome, out.verified, out.tx_hash, out.nonce) == (
            "paused", True, sent[out.chain], before[out.chain]), f"{out.chain}: {out.detail}; {out.notes}"
        assert nonce(sandbox, out.chain, PAUSER.address) == before[out.chain] + 1  # one pause transaction
    assert "from an earlier attempt is pending" in " ".join(eth.notes)
    assert f"found pending transaction {sent['bsc']} at nonce {before['bsc']} from an earlier attempt" in (
        " ".join(bsc.notes))


async def test_a_pause_stuck_in_the_pool_is_replaced_at_the_same_nonce_with_higher_fees(sandbox, chains, restore):
    chain = "bsc"
    before = nonce(sandbox, chain, PAUSER.address)
    hold_mining(sandbox, chain)
    journal = RecordingJournal()
    replaced = asyncio.Event()
    async with make_client(8) as client:
        run = asyncio.create_task(em.pause_chain(
            cfg(replace_after_s=0.3), chain, chains[chain], client, PAUSER_KEY, journal, environment=ENV,
            on_event=lambda m: replaced.set() if " replaced " in m else None))
        await asyncio.wait_for(replaced.wait(), 10)
        resume_mining(sandbox, chain)
        out = await run
    assert out.outcome == "paused" and out.verified and out.replacements >= 1
    assert "same nonce" in out.detail
    versions = journal.history
    assert len(versions) >= 2 and {v.nonce for v in versions} == {before}
    mined = rpc(sandbox, chain, "eth_getTransactionByHash", out.tx_hash)
    assert int(mined["nonce"], 16) == before and out.tx_hash != versions[0].hashes[0]
    first = versions[0].fees
    assert int(mined["maxFeePerGas"], 16) * 8 >= first.max_fee * 9
    assert int(mined["maxPriorityFeePerGas"], 16) * 8 >= first.priority * 9
    assert nonce(sandbox, chain, PAUSER.address) == before + 1


async def test_the_status_page_incident_is_opened_once_and_read_back(sandbox):
    sandbox.vendor("statuspage", "DELETE", "incidents")
    sp = em.StatusPageTarget(base_url=sandbox.url("statuspage") + "/v1", page_id=statuspage.SANDBOX_PAGE_ID,
                             api_key={"env": "SP"}, status_url=sandbox.url("statuspage"),
                             component_ids=["tfapi0000001"])
    key = SecretStr(statuspage.SANDBOX_API_KEY)
    try:
        async with make_client(4) as client:
            first = await em.post_status_incident(sp, client, key, "We are investigating.")
            second = await em.post_status_incident(sp, client, key, "We are investigating.")
            wrong = await em.post_status_incident(sp.model_copy(update={"incident_name": "Other"}), client,
                                                  SecretStr("wrong-key"), "x")
            sandbox.vendor("statuspage", "POST", "config", {"throttle": 420})
            limited = await em.post_status_incident(sp.model_copy(update={"incident_name": "Other"}), client, key,
                                                    "x")
    finally:
        sandbox.vendor("statuspage", "DELETE", "config")
    assert first.status == "done" and first.verified and "listed on the public page" in first.detail
    assert second.status == "already" and second.verified
    received = sandbox.vendor("statuspage", "GET", "incidents")
    assert len(received) == 1
    incident = received[0]["incident"]
    assert incident["name"] == "Emergency maintenance" and incident["body"] == "We are investigating."
    assert incident["components"] == {"tfapi0000001": "major_outage"} and incident["impact_override"] == "critical"
    assert wrong.status == "failed" and wrong.detail == "create incident: HTTP 401 Could not authenticate"
    assert "wrong-key" not in wrong.detail
    assert limited.status == "failed" and limited.detail == "rate limited (HTTP 420, Retry-After 60 s)"
    sandbox.vendor("statuspage", "DELETE", "incidents")


# What sandbox/services.py is asked to add (see the emergency module's notes): a maintenance
# switch on the Convex double, and a platform API that refuses everyone while it is on.
@pytest.fixture
async def backend() -> AsyncIterator[tuple[ConvexDeployment, str, str]]:
    convex = ConvexDeployment()
    api = PlatformApi("api-token", convex)
    listeners = [Listener("127.0.0.1", free_port(), lambda r, s=s: s(r, None)) for s in (convex, api)]
    for listener in listeners:
        await listener.start()
    try:
        yield convex, *(f"http://127.0.0.1:{listener.port}" for listener in listeners)  # type: ignore[misc]
    finally:
        for listener in listeners:
            await listener.stop()


async def test_the_maintenance_switch_is_turned_on_and_the_api_is_seen_refusing(backend):
    convex, convex_url, api_url = backend
    m = em.MaintenanceSwitch(convex_url=convex_url, deploy_key={"env": "CK"}, probe_urls=[api_url + "/health"],
                             probe_auth_header={"env": "API"}, settle_s=0.3, timeout_s=2)
    deploy_key, auth = SecretStr(ConvexDeployment.SANDBOX_DEPLOY_KEY), SecretStr("Bearer api-token")
    async with make_client(4) as client:
        assert (await client.get(api_url + "/health", headers={"Authorization": "Bearer api-token"})).status_code == 200
        done = await em.enable_maintenance(m, client, deploy_key, auth, "security breach")
        again = await em.enable_maintenance(m, client, deploy_key, auth, "security breach")
        refused = await em.enable_maintenance(m, client, SecretStr("prod:wrong|key"), auth, "security breach")
        convex.maintenance["enabled"] = False
        not_seen = await em.enable_maintenance(m.model_copy(update={"probe_urls": [convex_url + "/"]}), client,
                                               deploy_key, auth, "security breach")
    assert (done.status, done.verified) == ("done", True)
    assert done.detail == f"switch turned on; {api_url}/health refuses (HTTP 503)"
    assert convex.maintenance["reason"] == "security breach"
    assert (again.status, again.verified) == ("already", True) and again.detail.startswith("switch was already on")
    assert refused.status == "failed" and "HTTP 401: admin:setMaintenance needs the deploy key" in refused.detail
    assert "wrong" not in refused.detail
    assert not not_seen.ok and f"{convex_url}/ still answers HTTP 200 (expected HTTP 503)" in not_seen.detail


async def test_funds_move_only_to_the_configured_wallet_exactly_once(sandbox, chains, restore):
    chain = "ethereum"
    wallet = Account.create(secrets.token_hex(8)).address
    send(sandbox, chain, PAYER, "collectFee", value=5 * 10**16)
    send(sandbox, chain, PAUSER, "pause")  # withdrawing is allowed while paused: the point of pausing first
    c = cfg(treasury_key={"env": "TFOPS_TEST_TREASURY_KEY"}, treasury_address=TREASURY.address,
            secure_wallets={chain: wallet})
    contract = chains[chain].fee_collector
    held = balance(sandbox, chain, contract)
    treasury_nonce = nonce(sandbox, chain, TREASURY.address)
    journal = evm_tx.MemoryJournal()
    async with make_client(4) as client:
        plan = await em.plan_withdrawal(c, chain, chains[chain], client)
        assert (plan.problem, plan.amount_wei, plan.destination) == (None, held, wallet) and held >= 5 * 10**16
        assert (await em.plan_withdrawal(c, "bsc", chains["bsc"], client)).problem == (
            "no secure wallet configured for bsc (emergency.secure_wallets.bsc)")
        wrong_key = await em.withdraw_chain(c, plan, chains[chain], client, PAUSER_KEY, journal, environment=ENV)
        assert wrong_key.outcome == "failed" and wrong_key.detail == (
            f"the treasury key (emergency.treasury_key) belongs to {PAUSER.address}, not to "
            f"emergency.treasury_address {TREASURY.address}")
        out = await em.withdraw_chain(c, plan, chains[chain], client, SecretStr(TREASURY.private_key), journal,
                                      environment=ENV)
        again = await em.withdraw_chain(c, plan, chains[chain], client, SecretStr(TREASURY.private_key), journal,
                                        environment=ENV)
        after = await em.plan_withdrawal(c, chain, chains[chain], client)
    assert (out.outcome, out.verified) == ("withdrawn", True), out.detail
    assert out.detail == f"{plan.amount} to {wallet} by tx {out.tx_hash} in block {out.block}"
    assert f"collector {em.amount_text(held)} -> 0" in out.verification
    assert f"secure wallet 0 -> {em.amount_text(held)}" in out.verification
    assert (again.outcome, again.verified, again.tx_hash) == ("already-withdrawn", True, out.tx_hash)
    assert balance(sandbox, chain, wallet) == held and balance(sandbox, chain, contract) == 0
    assert nonce(sandbox, chain, TREASURY.address) == treasury_nonce + 1
    assert after.amount_wei == 0 and after.problem is None
