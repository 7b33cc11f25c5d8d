"""Transactions signed with a locally held key, sent so that each one lands exactly once.

- Fees are EIP-1559: the tip is a percentile of recent blocks' priority fees (`eth_feeHistory`),
  never below a floor; the fee cap is twice the next block's base fee plus the tip, never above the
  configured cap.
- A transaction is simulated with `eth_call` before it is signed, so a missing role is reported
  with the contract's own error instead of as a reverted, fee-paying transaction.
- A transaction not mined within `replace_after_s` is re-signed at the SAME nonce with both fees
  raised by at least 12.5% (what nodes require of a replacement); a second nonce is never used,
  so at most one of the versions can ever be mined.
- Before each signed version is broadcast it is written to a journal; a run killed after the
  broadcast finds it there (or finds the sender's pending nonce ahead of its mined one) and waits
  for that transaction instead of sending another.

The key arrives as a SecretStr and is only unwrapped to sign; no message here contains it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

import httpx
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from pydantic import SecretStr

from runbook.clients.evm import EndpointUnusable, RpcTransportError
from runbook.clients.evm_logs import RpcError, call, call_batch, first_usable, fresh_head
from runbook.clients.http_probe import describe_error

GWEI = 10**9
BUMP_NUMERATOR, BUMP_DENOMINATOR = 9, 8  # +12.5%: geth's default replacement bump is 10%, some nodes ask more


class TxError(Exception):
    """A transaction could not be brought on chain; the message says why (never a key)."""


class Reverted(TxError):
    """The simulation reverted: the transaction would fail on chain."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} would revert: {reason}")
        self.reason = reason


class FeeCapTooLow(TxError):
    """The next block's base fee is above the configured cap: no transaction within it can be mined."""


class NotMined(TxError):
    """No version of the transaction was mined in time; it may still be pending."""


class NonceTaken(TxError):
    """The nonce chosen was used by another transaction before ours reached the node."""


def selector(signature: str) -> bytes:
    return bytes(keccak(text=signature))[:4]


def encode_call(signature: str, types: Sequence[str] = (), args: Sequence[Any] = ()) -> str:
    return "0x" + (selector(signature) + abi_encode(list(types), list(args))).hex()


ROLE_NAMES = {
    b"\x00" * 32: "DEFAULT_ADMIN_ROLE",
    bytes(keccak(text="PAUSER_ROLE")): "PAUSER_ROLE",
    bytes(keccak(text="TREASURY_ROLE")): "TREASURY_ROLE",
}

# The errors FeeCollector and OpenZeppelin's AccessControl / Pausable revert with.
_ERRORS: dict[bytes, tuple[str, list[str]]] = {
    selector(f"{name}({','.join(types)})"): (name, types)
    for name, types in [
        ("AccessControlUnauthorizedAccount", ["address", "bytes32"]),
        ("EnforcedPause", []),
        ("ExpectedPause", []),
        ("ZeroAddress", []),
        ("InsufficientBalance", ["uint256", "uint256"]),
        ("TransferFailed", ["address", "uint256"]),
        ("Error", ["string"]),
        ("Panic", ["uint256"]),
    ]
}


def decode_revert(data: Any) -> str:
    """A revert's data in words: `AccessControlUnauthorizedAccount: 0x... lacks PAUSER_ROLE`, ..."""
    if not isinstance(data, str) or not data.startswith("0x") or len(data) < 10:
        return "no revert data"
    raw = bytes.fromhex(data[2:])
    known = _ERRORS.get(raw[:4])
    if known is None:
        return f"custom error 0x{raw[:4].hex()}"
    name, types = known
    try:
        values = abi_decode(types, raw[4:]) if types else ()
    except Exception:  # noqa: BLE001 - undecodable arguments: the name alone still helps
        return name
    if name == "AccessControlUnauthorizedAccount":
        account, role = values
        return f"{name}: {to_checksum_address(account)} lacks {ROLE_NAMES.get(role, '0x' + role.hex())}"
    if name == "InsufficientBalance":
        return f"{name}: requested {values[0]} wei, available {values[1]} wei"
    if name == "Error":
        return f"reverted: {values[0]}"
    return f"{name}{tuple(values) if values else ''}"


def gwei(wei: int) -> str:
    return f"{Decimal(wei) / GWEI:,.9f}".rstrip("0").rstrip(".") + " gwei"


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fees of one transaction version, in wei."""

    max_fee: int
    priority: int

    def describe(self) -> str:
        return f"max fee {gwei(self.max_fee)}, tip {gwei(self.priority)}"


def _quantity(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcTransportError(f"eth_feeHistory: {what} is not a hex quantity: {value!r}")
    return int(value, 16)


def fees_from_history(history: Any, *, min_priority_wei: int, cap_wei: int) -> Fees:
    """Fees from an `eth_feeHistory(n, "latest", [percentile])` answer.

    `baseFeePerGas` has one entry more than the blocks asked for: the last is the next block's
    base fee. `reward[i][0]` is block i's priority fee at the percentile. The tip is the median of
    those (an empty block reports 0 and must not drag a busy chain's tip to nothing, hence the
    floor); the fee cap is 2 x the next base fee + the tip, so the transaction stays includable
    through six full blocks of base-fee rise.
    """
    if not isinstance(history, Mapping):
        raise RpcTransportError("eth_feeHistory: the answer is not an object")
    bases = history.get("baseFeePerGas")
    if not isinstance(bases, list) or not bases:
        raise RpcTransportError("eth_feeHistory: no baseFeePerGas (does the chain support EIP-1559?)")
    next_base = _quantity(bases[-1], "baseFeePerGas[-1]")
    rewards = history.get("reward") or []
    if not isinstance(rewards, list):
        raise RpcTransportError("eth_feeHistory: reward is not a list")
    tips = sorted(_quantity(r[0], "reward") for r in rewards if isinstance(r, list) and r)
    median = tips[len(tips) // 2] if tips else 0
    priority = max(median, min_priority_wei)
    if next_base >= cap_wei:
        raise FeeCapTooLow(f"the next block's base fee is {gwei(next_base)}, at or above the configured cap of "
                           f"{gwei(cap_wei)} (max_fee_gwei): no transaction within the cap can be mined")
    max_fee = min(2 * next_base + priority, cap_wei)
    return Fees(max_fee=max_fee, priority=min(priority, max_fee))


def bumped(value: int) -> int:
    """At least +12.5%, and at least +1 wei so that a zero tip also rises."""
    return max(value + 1, -(-value * BUMP_NUMERATOR // BUMP_DENOMINATOR))


def bump(previous: Fees, fresh: Fees, cap_wei: int) -> Fees | None:
    """The fees of a replacement: both fields at least 12.5% above `previous`, and no lower than what
    the chain asks now (`fresh`). None when that would exceed the cap: a replacement the node must
    refuse as underpriced is not worth signing."""
    max_fee = max(bumped(previous.max_fee), fresh.max_fee)
    priority = max(bumped(previous.priority), fresh.priority)
    if max_fee > cap_wei:
        return None
    return Fees(max_fee=max_fee, priority=min(priority, max_fee))


# ---- the chain, through its endpoints in order -------------------------------------------------------------------


class ChainRpc:
    """A chain's RPC endpoints in order. `connect` picks the first on the right chain with a fresh
    head; a call that fails in transport (connection, timeout, HTTP error) moves on to the next one.
    A JSON-RPC error object is the node's answer and is raised as `RpcError`, not failed over."""

    def __init__(self, chain: str, chain_id: int, endpoints: Sequence[tuple[str, str]], client: httpx.AsyncClient,
                 *, timeout_s: float, max_head_age_s: float) -> None:
        if not endpoints:
            raise ValueError(f"{chain}: no RPC endpoints")
        self.chain = chain
        self.chain_id = chain_id
        self.endpoints = list(endpoints)
        self.client = client
        self.timeout_s = timeout_s
        self.max_head_age_s = max_head_age_s
        self._at: int | None = None

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._at or 0][0]

    async def connect(self, start: int = 0) -> str:
        """Use the first usable endpoint from `start` on (wrapping round); its name."""
        n = len(self.endpoints)
        order = [self.endpoints[i % n] for i in range(start, start + n)]
        got = await first_usable(order, lambda url: fresh_head(
            self.client, url, chain_id=self.chain_id, max_head_age_s=self.max_head_age_s, timeout_s=self.timeout_s),
            self.timeout_s)
        if isinstance(got, list):
            raise EndpointUnusable(f"{self.chain}: no usable RPC endpoint ({'; '.join(got)})")
        name = got[0]
        self._at = [endpoint_name for endpoint_name, _ in self.endpoints].index(name)
        return name

    async def _with_failover(self, send: Callable[[str], Awaitable[Any]]) -> Any:
        if self._at is None:
            await self.connect()
        failures = []
        for _ in range(len(self.endpoints)):
            assert self._at is not None
            name, url = self.endpoints[self._at]
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await send(url)
            except RpcError:
                raise
            except (RpcTransportError, httpx.HTTPError, TimeoutError, OSError) as exc:
                failures.append(f"{name}: {describe_error(exc) if not isinstance(exc, RpcTransportError) else exc}")
                try:
                    await self.connect(self._at + 1)
                except EndpointUnusable as unusable:
                    failures.append(str(unusable))
                    break
        raise EndpointUnusable(f"{self.chain}: {'; '.join(failures)}")

    async def call(self, method: str, params: list[Any]) -> Any:
        return await self._with_failover(lambda url: call(self.client, url, method, params, self.timeout_s))

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        return list(await self._with_failover(lambda url: call_batch(self.client, url, calls, self.timeout_s)))


# ---- reading ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountState:
    latest_nonce: int  # transactions of the sender that are mined
    pending_nonce: int  # ... plus those the node holds in its pool
    balance: int


async def account_state(rpc: ChainRpc, address: str) -> AccountState:
    latest, pending, balance = await rpc.batch([
        ("eth_getTransactionCount", [address, "latest"]),
        ("eth_getTransactionCount", [address, "pending"]),
        ("eth_getBalance", [address, "latest"]),
    ])
    return AccountState(int(latest, 16), int(pending, 16), int(balance, 16))


async def eth_call(rpc: ChainRpc, to: str, data: str, *, sender: str | None = None, value: int = 0,
                   block: str = "latest") -> str:
    """The call's return data; a revert raises Reverted with the contract's error decoded."""
    request: dict[str, Any] = {"to": to, "data": data}
    if sender:
        request["from"] = sender
    if value:
        request["value"] = hex(value)
    try:
        result = await rpc.call("eth_call", [request, block])
    except RpcError as exc:
        if exc.code == 3 or "revert" in exc.message.lower():
            raise Reverted(f"call to {to}", _revert_reason(exc)) from None
        raise
    if not isinstance(result, str):
        raise RpcTransportError("eth_call: the result is not hex data")
    return result


def _revert_reason(exc: RpcError) -> str:
    data = exc.data
    if isinstance(data, dict):  # some nodes nest it: {"data": {"data": "0x..."}}
        data = data.get("data")
    reason = decode_revert(data)
    return reason if reason != "no revert data" else exc.message


async def read_bool(rpc: ChainRpc, to: str, signature: str, block: str = "latest") -> bool:
    data = await eth_call(rpc, to, encode_call(signature), block=block)
    raw = bytes.fromhex(data.removeprefix("0x"))
    if len(raw) != 32 or int.from_bytes(raw, "big") > 1:
        raise RpcTransportError(f"{signature} on {to}: not a bool answer ({data[:20]}...); is it the right contract?")
    return raw[-1] == 1


async def balance_at(rpc: ChainRpc, address: str, block: int | str = "latest") -> int:
    tag = hex(block) if isinstance(block, int) else block
    return int(await rpc.call("eth_getBalance", [address, tag]), 16)


async def estimate_gas(rpc: ChainRpc, sender: str, to: str, data: str, value: int = 0) -> int:
    request = {"from": sender, "to": to, "data": data, **({"value": hex(value)} if value else {})}
    try:
        # At "latest": some nodes (anvil) default to "pending", where our own pending pause has
        # already paused the contract and the estimate would revert.
        estimate = int(await rpc.call("eth_estimateGas", [request, "latest"]), 16)
    except RpcError as exc:
        if exc.code == 3 or "revert" in exc.message.lower():
            raise Reverted(f"call to {to}", _revert_reason(exc)) from None
        raise
    return estimate + estimate // 5  # headroom: state may change between the estimate and the block


async def fetch_fees(rpc: ChainRpc, *, blocks: int, percentile: float, min_priority_wei: int, cap_wei: int) -> Fees:
    history = await rpc.call("eth_feeHistory", [hex(blocks), "latest", [percentile]])
    return fees_from_history(history, min_priority_wei=min_priority_wei, cap_wei=cap_wei)


async def find_by_nonce(rpc: ChainRpc, sender: str, nonce: int) -> dict[str, Any] | None:
    """The sender's transaction at `nonce`, pending or mined, where the node offers
    `eth_getTransactionBySenderAndNonce` (anvil, reth, erigon); None where it does not."""
    try:
        tx = await rpc.call("eth_getTransactionBySenderAndNonce", [sender, hex(nonce)])
    except RpcError:
        return None
    return tx if isinstance(tx, dict) and tx.get("hash") else None


# ---- signing and sending ---------------------------------------------------------------------------------------


def address_of(key: SecretStr) -> str:
    try:
        return str(Account.from_key(key.get_secret_value()).address)
    except Exception:  # noqa: BLE001 - the library's message may quote the value
        raise TxError("the key is not a valid secp256k1 private key (32 bytes, hex)") from None


@dataclass(frozen=True)
class Signed:
    raw: str
    hash: str


def sign(key: SecretStr, *, chain_id: int, nonce: int, to: str, data: str, value: int, gas: int,
         fees: Fees) -> Signed:
    tx = {"type": 2, "chainId": chain_id, "nonce": nonce, "to": to_checksum_address(to), "value": value,
          "data": data, "gas": gas, "maxFeePerGas": fees.max_fee, "maxPriorityFeePerGas": fees.priority}
    try:
        signed = Account.sign_transaction(tx, key.get_secret_value())
    except Exception as exc:  # noqa: BLE001 - the library's message may quote the value
        raise TxError(f"cannot sign the transaction ({type(exc).__name__})") from None
    return Signed("0x" + bytes(signed.raw_transaction).hex(), "0x" + bytes(signed.hash).hex())


_KNOWN = ("already known", "already imported", "known transaction", "alreadyknown")
_UNDERPRICED = ("underpriced", "replacement", "fee too low", "max fee per gas less than")
_NONCE_LOW = ("nonce too low", "nonce is too low", "already been used")


async def broadcast(rpc: ChainRpc, signed: Signed) -> str:
    """Send a signed transaction; a node that already has it counts as sent."""
    try:
        result = await rpc.call("eth_sendRawTransaction", [signed.raw])
    except RpcError as exc:
        if any(hint in exc.message.lower() for hint in _KNOWN):
            return signed.hash
        raise
    if isinstance(result, str) and result.lower() != signed.hash.lower():
        raise TxError(f"the node answered hash {result} for transaction {signed.hash}")
    return signed.hash


# ---- the journal -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalEntry:
    """The versions of one transaction, written before each is broadcast. Nothing secret: a signed
    transaction is public once sent."""

    sender: str
    to: str
    data: str
    value: int
    nonce: int
    gas: int
    fees: Fees
    hashes: tuple[str, ...]
    raw: str  # the newest version
    sent_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"sender": self.sender, "to": self.to, "data": self.data, "value": str(self.value),
                "nonce": self.nonce, "gas": self.gas, "max_fee": str(self.fees.max_fee),
                "priority": str(self.fees.priority), "hashes": list(self.hashes), "raw": self.raw,
                "sent_at": self.sent_at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JournalEntry:
        return cls(str(d["sender"]), str(d["to"]), str(d["data"]), int(d["value"]), int(d["nonce"]), int(d["gas"]),
                   Fees(int(d["max_fee"]), int(d["priority"])), tuple(d["hashes"]), str(d["raw"]),
                   float(d["sent_at"]))


class Journal(Protocol):
    async def get(self, key: str) -> JournalEntry | None: ...

    async def put(self, key: str, entry: JournalEntry) -> None: ...


class MemoryJournal:
    """A journal that lives as long as the process: for one run, tests and benches."""

    def __init__(self) -> None:
        self.entries: dict[str, JournalEntry] = {}

    async def get(self, key: str) -> JournalEntry | None:
        return self.entries.get(key)

    async def put(self, key: str, entry: JournalEntry) -> None:
        self.entries[key] = entry


# ---- which nonce, and what to do with it ------------------------------------------------------------------------


@dataclass(frozen=True)
class NoncePlan:
    """What to do at which nonce. `send`: sign a new transaction; `rebroadcast`: the journal's newest
    version never reached the pool, send it again (same hash); `wait`: a transaction at this nonce is
    pending, wait for it (and replace it at this nonce if it stalls)."""

    action: Literal["send", "rebroadcast", "wait"]
    nonce: int
    entry: JournalEntry | None = None
    note: str = ""


def plan_nonce(latest: int, pending: int, entry: JournalEntry | None, *, to: str, data: str) -> NoncePlan:
    """Choose the nonce so that a re-run never adds a second transaction next to one already out.

    A journal entry counts only while its nonce is not yet mined (`entry.nonce >= latest`) and it is
    the same call; once its nonce is mined the entry is history (the caller judges the effect).
    Without a usable entry, a pending nonce ahead of the mined one means a transaction of ours from a
    run we no longer know about is in the pool: wait for it rather than queue another behind it.
    """
    same_call = entry is not None and entry.to.lower() == to.lower() and entry.data == data
    if entry is not None and same_call and entry.nonce >= latest:
        if pending > entry.nonce:
            return NoncePlan("wait", entry.nonce, entry,
                             f"transaction {entry.hashes[-1]} (nonce {entry.nonce}) from an earlier attempt is pending")
        return NoncePlan("rebroadcast", entry.nonce, entry,
                         f"transaction {entry.hashes[-1]} (nonce {entry.nonce}) from an earlier attempt is not in "
                         "the pool; sending it again")
    if pending > latest:
        return NoncePlan("wait", latest, None,
                         f"{pending - latest} transaction(s) of the sender pending from nonce {latest}")
    return NoncePlan("send", latest)


# ---- landing a transaction --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TxPolicy:
    cap_wei: int
    min_priority_wei: int
    percentile: float = 50
    history_blocks: int = 10
    replace_after_s: float = 30
    max_replacements: int = 5
    timeout_s: float = 300
    poll_s: float = 1.0
    preset: Fees | None = None  # a stored gas recommendation, already judged fresh; see initial_fees


async def initial_fees(rpc: ChainRpc, policy: TxPolicy) -> tuple[Fees, str]:
    """The first version's fees and where they come from: the policy's preset (the gas strategy's
    stored recommendation) while it is within the cap and the next block's base fee is below its
    max fee, so it can be mined; otherwise the live fee history."""
    preset = policy.preset
    if preset is not None and preset.max_fee <= policy.cap_wei:
        history = await rpc.call("eth_feeHistory", ["0x1", "latest", []])
        bases = history.get("baseFeePerGas") if isinstance(history, Mapping) else None
        if isinstance(bases, list) and bases and preset.max_fee > _quantity(bases[-1], "baseFeePerGas[-1]"):
            return preset, "the stored gas recommendation"
    fees = await fetch_fees(rpc, blocks=policy.history_blocks, percentile=policy.percentile,
                            min_priority_wei=policy.min_priority_wei, cap_wei=policy.cap_wei)
    return fees, "live fee history"


@dataclass(frozen=True)
class Landed:
    """How the nonce was used. `hash` is None when a transaction we never saw took the nonce."""

    nonce: int
    hash: str | None
    block: int | None
    succeeded: bool | None
    fees: Fees | None
    versions: tuple[str, ...] = ()
    replacements: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


Event = Callable[[str], None]


def _is(exc: RpcError, hints: Sequence[str]) -> bool:
    return any(h in exc.message.lower() for h in hints)


async def land(
    rpc: ChainRpc,
    key: SecretStr | None,
    plan: NoncePlan,
    *,
    sender: str,
    to: str,
    data: str,
    value: int = 0,
    gas: int | None,
    policy: TxPolicy,
    journal: Journal,
    journal_key: str,
    what: str,
    on_event: Event = lambda _: None,
) -> Landed:
    """Carry out `plan` until its nonce is mined: send or re-send, wait, replace stalled versions
    with bumped fees at the same nonce, give up after `policy.timeout_s` (NotMined).

    `key` may be None only to wait for an earlier transaction; replacing one needs the key.
    """
    started = time.monotonic()
    nonce = plan.nonce
    entry = plan.entry
    notes: list[str] = []
    replacements = 0
    versions: list[str] = list(entry.hashes) if entry else []
    fees = entry.fees if entry else None
    gas = entry.gas if entry else gas

    def say(message: str) -> None:
        notes.append(message)
        on_event(f"{rpc.chain}: {message}")

    async def record(signed: Signed, version_fees: Fees, version_gas: int) -> None:
        nonlocal entry
        entry = JournalEntry(sender, to, data, value, nonce, version_gas, version_fees, (*versions, signed.hash),
                             signed.raw, time.time())
        await journal.put(journal_key, entry)

    async def new_version(version_fees: Fees) -> Signed:
        assert key is not None and gas is not None
        signed = sign(key, chain_id=rpc.chain_id, nonce=nonce, to=to, data=data, value=value, gas=gas,
                      fees=version_fees)
        await record(signed, version_fees, gas)
        return signed

    if plan.note:
        say(plan.note)
    if plan.action == "send":
        if key is None or gas is None:
            raise TxError(f"{what}: sending needs the key and a gas limit")
        fees, source = await initial_fees(rpc, policy)
        signed = await new_version(fees)
        try:
            await broadcast(rpc, signed)
        except RpcError as exc:
            if _is(exc, _NONCE_LOW):
                raise NonceTaken(f"{what}: nonce {nonce} was used before our transaction arrived") from None
            raise TxError(f"{what}: the node refused the transaction: {exc.message}") from None
        versions.append(signed.hash)
        say(f"sent {what} {signed.hash} (nonce {nonce}, {fees.describe()}, from {source})")
    elif plan.action == "rebroadcast":
        assert entry is not None
        try:
            await broadcast(rpc, Signed(entry.raw, entry.hashes[-1]))
            say(f"re-sent {what} {entry.hashes[-1]} (nonce {nonce})")
        except RpcError as exc:  # mined meanwhile, or another version holds the nonce: the polling tells
            say(f"re-sending {entry.hashes[-1]} refused ({exc.message}); waiting on nonce {nonce}")
    elif entry is None:
        found = await find_by_nonce(rpc, sender, nonce)
        if found is not None:
            if found.get("maxFeePerGas") and found.get("maxPriorityFeePerGas"):
                fees = Fees(int(found["maxFeePerGas"], 16), int(found["maxPriorityFeePerGas"], 16))
            if str(found.get("to", "")).lower() == to.lower() and found.get("input") == data:
                versions.append(str(found["hash"]))
                gas = int(found["gas"], 16) if found.get("gas") else gas
                say(f"found pending transaction {found['hash']} at nonce {nonce} from an earlier attempt; "
                    "waiting for it")
            else:
                say(f"pending transaction {found['hash']} at nonce {nonce} is not {what}; it is replaced if it "
                    "stalls")
    last_sent = time.monotonic()

    while True:
        calls: list[tuple[str, list[Any]]] = [("eth_getTransactionReceipt", [h]) for h in versions]
        calls.append(("eth_getTransactionCount", [sender, "latest"]))
        answers = await rpc.batch(calls)
        for h, receipt in zip(versions, answers[:-1], strict=True):
            if isinstance(receipt, dict) and receipt.get("blockNumber"):
                block = int(receipt["blockNumber"], 16)
                ok = receipt.get("status") == "0x1"
                say(f"{what} {h} mined in block {block}" + ("" if ok else " but REVERTED"))
                return Landed(nonce, h, block, ok, fees, tuple(versions), replacements, tuple(notes))
        if int(answers[-1], 16) > nonce:
            found = await find_by_nonce(rpc, sender, nonce)
            other = str(found["hash"]) if found else None
            say(f"nonce {nonce} was used by " + (f"transaction {other}" if other else "a transaction not seen here"))
            mined_in = int(found["blockNumber"], 16) if found and found.get("blockNumber") else None
            return Landed(nonce, other, mined_in, None, fees, tuple(versions), replacements, tuple(notes))
        now = time.monotonic()
        if now - started >= policy.timeout_s:
            raise NotMined(f"{what}: no version mined within {policy.timeout_s:g} s (nonce {nonce}, "
                           f"last {versions[-1] if versions else 'unknown'}); re-run to keep waiting for it")
        if now - last_sent >= policy.replace_after_s and replacements < policy.max_replacements:
            last_sent = now
            if key is None or gas is None:
                say(f"nonce {nonce} still pending; cannot replace it here (no key or no gas limit)")
                replacements = policy.max_replacements
            else:
                fresh = await fetch_fees(rpc, blocks=policy.history_blocks, percentile=policy.percentile,
                                         min_priority_wei=policy.min_priority_wei, cap_wei=policy.cap_wei)
                new_fees = bump(fees, fresh, policy.cap_wei) if fees else fresh
                if new_fees is None:
                    say(f"{what} pending for {now - started:.0f} s, but a +12.5% replacement would exceed the cap "
                        f"of {gwei(policy.cap_wei)}; waiting")
                    replacements = policy.max_replacements
                else:
                    signed = await new_version(new_fees)
                    try:
                        await broadcast(rpc, signed)
                    except RpcError as exc:
                        if not (_is(exc, _UNDERPRICED) or _is(exc, _NONCE_LOW)):
                            raise TxError(f"{what}: the node refused the replacement: {exc.message}") from None
                        # underpriced: the next round bumps from these fees; nonce too low: mined meanwhile
                        say(f"replacement at nonce {nonce} refused ({exc.message}); will retry")
                        fees = new_fees
                    else:
                        previous = versions[-1] if versions else "unknown"
                        versions.append(signed.hash)
                        replacements += 1
                        say(f"replaced {previous} with {signed.hash} at nonce {nonce} "
                            f"({fees.describe() if fees else 'unknown fees'} -> {new_fees.describe()})")
                        fees = new_fees
        await asyncio.sleep(policy.poll_s)

