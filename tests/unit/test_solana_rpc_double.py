"""The sandbox Solana JSON-RPC double: shapes parsed by solders' own response types,
and one round trip through solana-py's AsyncClient over a throwaway HTTP server."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.errors import (
    InvalidParamsMessage,
    NodeUnhealthyMessage,
    SendTransactionPreflightFailureMessage,
)
from solders.rpc.responses import (
    GetAccountInfoResp,
    GetBalanceResp,
    GetBlockHeightResp,
    GetBlockTimeResp,
    GetEpochInfoResp,
    GetGenesisHashResp,
    GetHealthResp,
    GetLatestBlockhashResp,
    GetMinimumBalanceForRentExemptionResp,
    GetMultipleAccountsResp,
    GetSignatureStatusesResp,
    GetSlotResp,
    GetVersionResp,
    RequestAirdropResp,
    SendTransactionResp,
)
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction
from solders.transaction_status import TransactionConfirmationStatus

from sandbox.solana_rpc import (
    DEFAULT_GENESIS_HASH,
    DEFAULT_START_SLOT,
    SolanaLedger,
    SolanaRpcHandler,
)

T0 = 1_750_000_000.25
U64_MAX = 2**64 - 1
LAMPORTS_PER_SOL = 1_000_000_000


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(clock: FakeClock) -> SolanaLedger:
    return SolanaLedger(clock=clock)


@pytest.fixture
def rpc(ledger: SolanaLedger) -> SolanaRpcHandler:
    return SolanaRpcHandler(ledger)


def raw_call(rpc: SolanaRpcHandler, method: str, params: list[Any] | None = None, id_: Any = 1) -> str:
    req: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        req["params"] = params
    return rpc.handle(json.dumps(req).encode()).decode()


def call(rpc: SolanaRpcHandler, method: str, params: list[Any] | None = None) -> dict[str, Any]:
    return json.loads(raw_call(rpc, method, params))


def transfer_tx(payer: Keypair, to: Pubkey, lamports: int, blockhash: str) -> Transaction:
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=lamports))
    return Transaction([payer], Message([ix], payer.pubkey()), Hash.from_string(blockhash))


def b64(tx: Transaction) -> str:
    return base64.b64encode(bytes(tx)).decode()


def latest_blockhash(rpc: SolanaRpcHandler) -> str:
    resp = GetLatestBlockhashResp.from_json(raw_call(rpc, "getLatestBlockhash"))
    return str(resp.value.blockhash)


# ---------------------------------------------------------------------------- time


def test_slot_follows_the_clock_and_block_time_matches(
    rpc: SolanaRpcHandler, ledger: SolanaLedger, clock: FakeClock
) -> None:
    start = GetSlotResp.from_json(raw_call(rpc, "getSlot")).value
    assert start == DEFAULT_START_SLOT
    clock.advance(1.2)  # 3 slots; 1.2 / 0.4 is 2.999... in floating point
    assert GetSlotResp.from_json(raw_call(rpc, "getSlot", [{"commitment": "finalized"}])).value == start + 3
    clock.advance(10)
    head = GetSlotResp.from_json(raw_call(rpc, "getSlot")).value
    assert head == start + 28

    # slot s has block time start_time + (s - start_slot) * 0.4, in whole seconds
    assert GetBlockTimeResp.from_json(raw_call(rpc, "getBlockTime", [start])).value == int(T0)
    assert GetBlockTimeResp.from_json(raw_call(rpc, "getBlockTime", [head])).value == int(T0 + 28 * 0.4)
    # slots the ledger never produced: null
    assert GetBlockTimeResp.from_json(raw_call(rpc, "getBlockTime", [head + 1])).value is None
    assert GetBlockTimeResp.from_json(raw_call(rpc, "getBlockTime", [start - 1])).value is None

    # the VM's Clock sysvar agrees with the RPC view
    vm_clock = ledger.svm.get_clock()
    assert vm_clock.slot == head
    assert vm_clock.unix_timestamp == int(T0 + 28 * 0.4)
    assert vm_clock.epoch == head // 432_000

    height = GetBlockHeightResp.from_json(raw_call(rpc, "getBlockHeight")).value
    assert height == ledger.block_height(head)
    info = GetEpochInfoResp.from_json(raw_call(rpc, "getEpochInfo")).value
    assert info.absolute_slot == head
    assert info.epoch == head // 432_000
    assert info.slot_index == head % 432_000
    assert info.slots_in_epoch == 432_000
    assert info.block_height == height


def test_freeze_stops_the_chain_and_unfreeze_catches_up(
    rpc: SolanaRpcHandler, ledger: SolanaLedger, clock: FakeClock
) -> None:
    clock.advance(4)
    frozen_slot = ledger.slot
    ledger.freeze()
    assert ledger.frozen
    frozen_time = GetBlockTimeResp.from_json(raw_call(rpc, "getBlockTime", [frozen_slot])).value
    clock.advance(120)
    assert GetSlotResp.from_json(raw_call(rpc, "getSlot")).value == frozen_slot
    assert GetBlockTimeResp.from_json(raw_call(rpc, "getBlockTime", [frozen_slot])).value == frozen_time
    assert GetBlockTimeResp.from_json(raw_call(rpc, "getBlockTime", [frozen_slot + 1])).value is None
    assert ledger.svm.get_clock().slot == frozen_slot
    # the head is now 120 s stale, which is what a freshness check must notice
    assert clock() - frozen_time >= 120

    ledger.unfreeze()
    assert GetSlotResp.from_json(raw_call(rpc, "getSlot")).value == frozen_slot + 300


# ---------------------------------------------------------------------------- accounts


def test_funded_balances_read_back_exactly(rpc: SolanaRpcHandler, ledger: SolanaLedger) -> None:
    whale, small, nobody = Pubkey.new_unique(), Pubkey.new_unique(), Pubkey.new_unique()
    ledger.fund(str(whale), U64_MAX - 7)  # would lose precision as a double
    ledger.fund(small, 1)
    resp = GetBalanceResp.from_json(raw_call(rpc, "getBalance", [str(whale), {"commitment": "confirmed"}]))
    assert resp.value == U64_MAX - 7
    assert resp.context.slot == ledger.slot
    assert GetBalanceResp.from_json(raw_call(rpc, "getBalance", [str(small)])).value == 1
    assert GetBalanceResp.from_json(raw_call(rpc, "getBalance", [str(nobody)])).value == 0
    ledger.fund(small, 2 * LAMPORTS_PER_SOL)  # fund() sets, it does not add
    assert GetBalanceResp.from_json(raw_call(rpc, "getBalance", [str(small)])).value == 2 * LAMPORTS_PER_SOL


def test_get_multiple_accounts_100_keys_aligned_with_nulls(
    rpc: SolanaRpcHandler, ledger: SolanaLedger
) -> None:
    keys = [Pubkey.new_unique() for _ in range(100)]
    funded = {i: 1_000_000 + i for i in (0, 7, 99)}
    for i, lamports in funded.items():
        ledger.fund(keys[i], lamports)
    raw = raw_call(rpc, "getMultipleAccounts", [[str(k) for k in keys], {"encoding": "base64"}])
    # rentEpoch is emitted as the exact u64 (not 1.8446744073709552e19)
    assert '"rentEpoch":18446744073709551615' in raw
    envelope = json.loads(raw)["result"]
    assert envelope["context"]["slot"] == ledger.slot
    assert envelope["context"]["apiVersion"] == rpc.solana_core_version
    assert envelope["value"][0] == {
        "data": ["", "base64"],
        "executable": False,
        "lamports": 1_000_000,
        "owner": "11111111111111111111111111111111",
        "rentEpoch": U64_MAX,
        "space": 0,
    }
    resp = GetMultipleAccountsResp.from_json(raw)
    assert len(resp.value) == 100
    for i, account in enumerate(resp.value):
        if i in funded:
            assert account is not None and account.lamports == funded[i]
            assert account.owner == Pubkey.default() and account.rent_epoch == U64_MAX
        else:
            assert account is None


def test_get_multiple_accounts_101_keys_is_invalid_params(rpc: SolanaRpcHandler) -> None:
    keys = [str(Pubkey.new_unique()) for _ in range(101)]
    raw = raw_call(rpc, "getMultipleAccounts", [keys])
    error = json.loads(raw)["error"]
    assert error["code"] == -32602
    assert "pubkeys" in error["message"] and "max 100" in error["message"]
    assert isinstance(GetMultipleAccountsResp.from_json(raw), InvalidParamsMessage)


def test_account_data_encodings_and_data_slice(rpc: SolanaRpcHandler, ledger: SolanaLedger) -> None:
    key, owner = Pubkey.new_unique(), Pubkey.new_unique()
    data = bytes(range(200))
    ledger.svm.set_account(key, Account(3_000_000, data, owner, False, 0))

    for encoding in ("base64", "base64+zstd"):
        raw = raw_call(rpc, "getMultipleAccounts", [[str(key)], {"encoding": encoding}])
        (account,) = GetMultipleAccountsResp.from_json(raw).value
        assert account is not None and bytes(account.data) == data and account.owner == owner
    # getMultipleAccounts defaults to base64
    raw = raw_call(rpc, "getMultipleAccounts", [[str(key)]])
    assert json.loads(raw)["result"]["value"][0]["data"][1] == "base64"

    sliced = raw_call(
        rpc,
        "getMultipleAccounts",
        [[str(key)], {"encoding": "base58", "dataSlice": {"offset": 10, "length": 32}}],
    )
    value = json.loads(sliced)["result"]["value"][0]
    assert value["data"][1] == "base58" and value["space"] == 200
    assert bytes(GetMultipleAccountsResp.from_json(sliced).value[0].data) == data[10:42]

    # base58 of more than 128 bytes is refused, as on Agave
    too_big = json.loads(raw_call(rpc, "getAccountInfo", [str(key), {"encoding": "base58"}]))
    assert too_big["error"]["code"] == -32600 and "Base64" in too_big["error"]["message"]

    info = GetAccountInfoResp.from_json(raw_call(rpc, "getAccountInfo", [str(key), {"encoding": "base64"}]))
    assert info.value is not None and bytes(info.value.data) == data and info.value.lamports == 3_000_000
    missing = GetAccountInfoResp.from_json(raw_call(rpc, "getAccountInfo", [str(Pubkey.new_unique())]))
    assert missing.value is None

    rent = GetMinimumBalanceForRentExemptionResp.from_json(
        raw_call(rpc, "getMinimumBalanceForRentExemption", [0])
    )
    assert rent.value == 890_880


# ---------------------------------------------------------------------------- identity and health


def test_genesis_hash_and_wrong_genesis(rpc: SolanaRpcHandler, ledger: SolanaLedger) -> None:
    good = GetGenesisHashResp.from_json(raw_call(rpc, "getGenesisHash")).value
    assert str(good) == ledger.genesis_hash == DEFAULT_GENESIS_HASH
    rpc.wrong_genesis = True
    bad = GetGenesisHashResp.from_json(raw_call(rpc, "getGenesisHash")).value
    assert isinstance(bad, Hash) and bad != good and str(bad) == rpc.wrong_genesis_hash
    rpc.wrong_genesis = False
    assert GetGenesisHashResp.from_json(raw_call(rpc, "getGenesisHash")).value == good

    custom = SolanaRpcHandler(SolanaLedger(genesis_hash="5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"))
    assert (
        json.loads(raw_call(custom, "getGenesisHash"))["result"]
        == "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"
    )
    with pytest.raises(ValueError):
        SolanaLedger(genesis_hash="not-a-hash")


def test_version_and_health(rpc: SolanaRpcHandler) -> None:
    raw = raw_call(rpc, "getVersion")
    assert set(json.loads(raw)["result"]) == {"solana-core", "feature-set"}
    version = GetVersionResp.from_json(raw).value
    assert version.solana_core == rpc.solana_core_version
    assert version.feature_set == rpc.feature_set and 0 <= rpc.feature_set < 2**32

    assert GetHealthResp.from_json(raw_call(rpc, "getHealth")).value == "ok"
    rpc.slots_behind = 42
    raw = raw_call(rpc, "getHealth")
    assert json.loads(raw)["error"] == {
        "code": -32005,
        "message": "Node is behind by 42 slots",
        "data": {"numSlotsBehind": 42},
    }
    unhealthy = GetHealthResp.from_json(raw)
    assert isinstance(unhealthy, NodeUnhealthyMessage) and unhealthy.data.num_slots_behind == 42


# ---------------------------------------------------------------------------- JSON-RPC envelope


def test_batch_mixed_success_and_errors_matched_by_id(rpc: SolanaRpcHandler, ledger: SolanaLedger) -> None:
    key = Pubkey.new_unique()
    ledger.fund(key, 42)
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "getBalance", "params": [str(key)]},
        {"jsonrpc": "2.0", "id": 2, "method": "getNope"},
        {"jsonrpc": "2.0", "id": 3, "method": "getBalance", "params": ["not-a-key"]},
        {"jsonrpc": "2.0", "id": 4, "method": "getSlot"},
        {"jsonrpc": "2.0", "method": "getSlot"},  # notification: no answer
        "garbage",
    ]
    answers = json.loads(rpc.handle(json.dumps(batch).encode()))
    assert isinstance(answers, list) and len(answers) == 5
    by_id = {a["id"]: a for a in answers if a["id"] is not None}
    assert GetBalanceResp.from_json(json.dumps(by_id["a"])).value == 42
    assert by_id[2]["error"]["code"] == -32601
    assert by_id[3]["error"]["code"] == -32602 and "pubkey" in by_id[3]["error"]["message"]
    assert by_id[4]["result"] == ledger.slot
    (invalid,) = [a for a in answers if a["id"] is None]
    assert invalid["error"]["code"] == -32600


def test_envelope_errors(rpc: SolanaRpcHandler) -> None:
    for body in (b"{not json", b"\xff\xfe", b""):
        answer = json.loads(rpc.handle(body))
        assert answer == {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None}
    assert json.loads(rpc.handle(b"[]"))["error"]["code"] == -32600
    assert json.loads(rpc.handle(b'{"id": 1, "method": "getSlot"}'))["error"]["code"] == -32600
    assert json.loads(rpc.handle(b'{"jsonrpc": "2.0", "id": 1, "method": 5}'))["error"]["code"] == -32600

    unknown = json.loads(raw_call(rpc, "eth_blockNumber", [], id_=9))
    assert unknown == {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 9}

    bad_slot = json.loads(raw_call(rpc, "getBlockTime", [-1]))["error"]
    assert bad_slot["code"] == -32602 and "slot" in bad_slot["message"]
    bad_commitment = json.loads(raw_call(rpc, "getSlot", [{"commitment": "max"}]))["error"]
    assert bad_commitment["code"] == -32602 and "commitment" in bad_commitment["message"]
    missing = json.loads(raw_call(rpc, "getBalance", []))["error"]
    assert missing["code"] == -32602 and "pubkey" in missing["message"]
    not_array = json.loads(rpc.handle(b'{"jsonrpc":"2.0","id":1,"method":"getSlot","params":{"a":1}}'))
    assert not_array["error"]["code"] == -32602

    future = json.loads(raw_call(rpc, "getBalance", [str(Pubkey.new_unique()), {"minContextSlot": 10**12}]))
    assert future["error"]["code"] == -32016

    assert rpc.handle(b'{"jsonrpc":"2.0","method":"getSlot"}') == b""  # lone notification


def test_solders_panic_becomes_internal_error(rpc: SolanaRpcHandler, ledger: SolanaLedger) -> None:
    # Obtain pyo3's PanicException (a BaseException, not an Exception) from solders itself.
    payer, other = Keypair(), Keypair()
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=other.pubkey(), lamports=1))
    with pytest.raises(BaseException) as caught:  # noqa: B017
        Transaction([other], Message([ix], payer.pubkey()), Hash.default())
    panic_type = type(caught.value)
    assert not issubclass(panic_type, Exception)

    def panicking_get_account(_key: Pubkey) -> None:
        raise panic_type("boom inside the VM")

    ledger.svm.get_account = panicking_get_account  # type: ignore[method-assign]
    answer = json.loads(raw_call(rpc, "getBalance", [str(Pubkey.new_unique())]))
    assert answer["error"]["code"] == -32603
    assert answer["error"]["data"]["exception"] == panic_type.__name__
    assert json.loads(raw_call(rpc, "getSlot"))["result"] == ledger.slot  # still serving

    def interrupted(_key: Pubkey) -> None:
        raise KeyboardInterrupt

    ledger.svm.get_account = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        raw_call(rpc, "getBalance", [str(Pubkey.new_unique())])


# ---------------------------------------------------------------------------- transactions


def test_sol_transfer_through_send_transaction(
    rpc: SolanaRpcHandler, ledger: SolanaLedger, clock: FakeClock
) -> None:
    payer, recipient = Keypair(), Keypair()
    ledger.fund(payer.pubkey(), 5 * LAMPORTS_PER_SOL)
    clock.advance(0.8)
    tx = transfer_tx(payer, recipient.pubkey(), LAMPORTS_PER_SOL, latest_blockhash(rpc))
    clock.advance(2)  # a few slots later the blockhash is still valid

    raw = raw_call(
        rpc, "sendTransaction", [b64(tx), {"encoding": "base64", "preflightCommitment": "confirmed"}]
    )
    sig = SendTransactionResp.from_json(raw).value
    assert sig == tx.signatures[0]

    assert (
        GetBalanceResp.from_json(raw_call(rpc, "getBalance", [str(recipient.pubkey())])).value
        == LAMPORTS_PER_SOL
    )
    payer_after = GetBalanceResp.from_json(raw_call(rpc, "getBalance", [str(payer.pubkey())])).value
    assert payer_after == 4 * LAMPORTS_PER_SOL - 5000  # one signature fee

    unknown = str(Keypair().sign_message(b"x"))
    statuses = GetSignatureStatusesResp.from_json(
        raw_call(rpc, "getSignatureStatuses", [[str(sig), unknown]])
    )
    landed, missing = statuses.value
    assert missing is None
    assert landed is not None and landed.slot == ledger.slot and landed.err is None
    assert landed.confirmation_status == TransactionConfirmationStatus.Processed
    clock.advance(1)
    (landed,) = GetSignatureStatusesResp.from_json(raw_call(rpc, "getSignatureStatuses", [[str(sig)]])).value
    assert landed.confirmation_status == TransactionConfirmationStatus.Confirmed
    assert landed.confirmations == ledger.slot - landed.slot == 2
    clock.advance(32 * 0.4)
    (landed,) = GetSignatureStatusesResp.from_json(raw_call(rpc, "getSignatureStatuses", [[str(sig)]])).value
    assert (
        landed.confirmation_status == TransactionConfirmationStatus.Finalized and landed.confirmations is None
    )

    # base58 is the default wire encoding of sendTransaction
    tx2 = transfer_tx(payer, recipient.pubkey(), 7, latest_blockhash(rpc))
    from sandbox.solana_rpc import b58encode

    assert json.loads(raw_call(rpc, "sendTransaction", [b58encode(bytes(tx2))]))["result"] == str(
        tx2.signatures[0]
    )
    assert ledger.get_balance(recipient.pubkey()) == LAMPORTS_PER_SOL + 7


def test_send_transaction_failures(rpc: SolanaRpcHandler, ledger: SolanaLedger, clock: FakeClock) -> None:
    payer, recipient = Keypair(), Keypair()
    ledger.fund(payer.pubkey(), LAMPORTS_PER_SOL)
    blockhash = latest_blockhash(rpc)
    opts = {"encoding": "base64"}

    # the VM's own error, in Agave's preflight-failure shape; nothing lands
    raw = raw_call(
        rpc,
        "sendTransaction",
        [b64(transfer_tx(payer, recipient.pubkey(), 10 * LAMPORTS_PER_SOL, blockhash)), opts],
    )
    error = json.loads(raw)["error"]
    assert error["code"] == -32002
    assert (
        error["message"]
        == "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    )
    assert error["data"]["err"] == {"InstructionError": [0, {"Custom": 1}]}
    assert any("insufficient lamports" in line for line in error["data"]["logs"])
    assert isinstance(SendTransactionResp.from_json(raw), SendTransactionPreflightFailureMessage)
    assert ledger.get_balance(payer.pubkey()) == LAMPORTS_PER_SOL

    # duplicate
    ok = transfer_tx(payer, recipient.pubkey(), LAMPORTS_PER_SOL // 2, blockhash)
    assert "result" in json.loads(raw_call(rpc, "sendTransaction", [b64(ok), opts]))
    dup = json.loads(raw_call(rpc, "sendTransaction", [b64(ok), opts]))["error"]
    assert dup["code"] == -32002 and dup["data"]["err"] == "AlreadyProcessed"

    # tampered signature
    tampered = bytearray(bytes(transfer_tx(payer, recipient.pubkey(), 1_000_000, blockhash)))
    tampered[10] ^= 0xFF
    bad_sig = json.loads(raw_call(rpc, "sendTransaction", [base64.b64encode(bytes(tampered)).decode(), opts]))
    assert bad_sig["error"]["code"] == -32003

    # expired blockhash (older than 150 blocks)
    clock.advance(151 * 0.4)
    stale = json.loads(
        raw_call(
            rpc, "sendTransaction", [b64(transfer_tx(payer, recipient.pubkey(), 999_999, blockhash)), opts]
        )
    )
    assert stale["error"]["code"] == -32002 and stale["error"]["data"]["err"] == "BlockhashNotFound"

    # garbage
    garbage = json.loads(raw_call(rpc, "sendTransaction", ["AAAA", opts]))["error"]
    assert garbage["code"] == -32602 and "transaction" in garbage["message"]

    # skipPreflight: a failing transaction lands, pays its fee, and shows its error in the status
    before = ledger.get_balance(payer.pubkey())
    doomed = transfer_tx(payer, recipient.pubkey(), 10 * LAMPORTS_PER_SOL, latest_blockhash(rpc))
    sig = json.loads(raw_call(rpc, "sendTransaction", [b64(doomed), {**opts, "skipPreflight": True}]))[
        "result"
    ]
    (status,) = GetSignatureStatusesResp.from_json(raw_call(rpc, "getSignatureStatuses", [[sig]])).value
    assert status is not None and status.err is not None
    assert ledger.get_balance(payer.pubkey()) == before - 5000


def test_frozen_chain_lands_nothing(rpc: SolanaRpcHandler, ledger: SolanaLedger, clock: FakeClock) -> None:
    payer, recipient = Keypair(), Keypair()
    ledger.fund(payer.pubkey(), LAMPORTS_PER_SOL)
    ledger.freeze()
    tx = transfer_tx(payer, recipient.pubkey(), 1_000_000, latest_blockhash(rpc))
    sig = SendTransactionResp.from_json(
        raw_call(rpc, "sendTransaction", [b64(tx), {"encoding": "base64"}])
    ).value
    clock.advance(30)
    (status,) = GetSignatureStatusesResp.from_json(raw_call(rpc, "getSignatureStatuses", [[str(sig)]])).value
    assert status is None
    assert ledger.get_balance(recipient.pubkey()) == 0


def test_request_airdrop_lands_every_time(rpc: SolanaRpcHandler, ledger: SolanaLedger) -> None:
    key = Pubkey.new_unique()
    first = RequestAirdropResp.from_json(raw_call(rpc, "requestAirdrop", [str(key), LAMPORTS_PER_SOL])).value
    second = RequestAirdropResp.from_json(raw_call(rpc, "requestAirdrop", [str(key), LAMPORTS_PER_SOL])).value
    assert first != second
    assert ledger.get_balance(key) == 2 * LAMPORTS_PER_SOL
    statuses = GetSignatureStatusesResp.from_json(
        raw_call(rpc, "getSignatureStatuses", [[str(first), str(second)]])
    )
    assert all(s is not None and s.err is None for s in statuses.value)


# ---------------------------------------------------------------------------- the real client


async def test_solana_py_async_client_reads_the_double() -> None:
    ledger = SolanaLedger()  # real wall clock
    rpc = SolanaRpcHandler(ledger)
    payer, recipient = Keypair(), Keypair()
    ledger.fund(payer.pubkey(), 3 * LAMPORTS_PER_SOL)
    keys = [payer.pubkey(), recipient.pubkey(), Pubkey.new_unique()]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                out = rpc.handle(body)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(out) + out
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with AsyncClient(f"http://127.0.0.1:{port}", timeout=10) as client:
            assert await client.is_connected()
            slot = (await client.get_slot()).value
            assert slot >= DEFAULT_START_SLOT
            assert (await client.get_balance(payer.pubkey())).value == 3 * LAMPORTS_PER_SOL
            accounts = (await client.get_multiple_accounts(keys)).value
            assert accounts[0] is not None and accounts[0].lamports == 3 * LAMPORTS_PER_SOL
            assert accounts[1] is None and accounts[2] is None
            assert str((await client.get_genesis_hash()).value) == ledger.genesis_hash

            blockhash = (await client.get_latest_blockhash()).value.blockhash
            tx = transfer_tx(payer, recipient.pubkey(), LAMPORTS_PER_SOL, str(blockhash))
            # solana-py polls getSignatureStatuses until "confirmed" (one real 400 ms slot later)
            opts = TxOpts(skip_confirmation=False, preflight_commitment=Confirmed)
            sig = (await client.send_transaction(tx, opts=opts)).value
            statuses = (await client.get_signature_statuses([sig])).value
            assert statuses[0] is not None and statuses[0].err is None
            assert (await client.get_balance(recipient.pubkey())).value == LAMPORTS_PER_SOL
            later = (await client.get_slot()).value
            assert later >= slot
    finally:
        server.close()
        await server.wait_closed()


def test_slot_hashes_follow_the_head_so_lookup_tables_can_be_created(
    rpc: SolanaRpcHandler, ledger: SolanaLedger, clock: FakeClock
) -> None:
    import struct

    from solders.address_lookup_table_account import ID as ALT_PROGRAM
    from solders.address_lookup_table_account import derive_lookup_table_address
    from solders.instruction import AccountMeta, Instruction

    payer = Keypair()
    ledger.fund(payer.pubkey(), LAMPORTS_PER_SOL)
    clock.advance(2)  # five slots in one lazy step: all of them must be "recent"
    head = GetSlotResp.from_json(raw_call(rpc, "getSlot")).value
    assert [slot for slot, _ in ledger.svm.get_slot_hashes()][:6] == list(range(head, head - 6, -1))
    table, bump = derive_lookup_table_address(payer.pubkey(), head - 2)
    ix = Instruction(
        ALT_PROGRAM,
        struct.pack("<IQB", 0, head - 2, bump),  # CreateLookupTable
        [
            AccountMeta(table, False, True),
            AccountMeta(payer.pubkey(), True, False),
            AccountMeta(payer.pubkey(), True, True),
            AccountMeta(Pubkey.default(), False, False),
        ],
    )
    tx = Transaction([payer], Message([ix], payer.pubkey()), Hash.from_string(latest_blockhash(rpc)))
    assert "result" in json.loads(raw_call(rpc, "sendTransaction", [b64(tx), {"encoding": "base64"}]))
    info = GetAccountInfoResp.from_json(raw_call(rpc, "getAccountInfo", [str(table), {"encoding": "base64"}]))
    assert info.value is not None and info.value.owner == ALT_PROGRAM
