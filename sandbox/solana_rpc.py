"""Solana JSON-RPC logic for the sandbox, backed by an in-process Solana VM (LiteSVM).

Two pieces, neither of which does any networking:

* :class:`SolanaLedger` owns a :class:`solders.litesvm.LiteSVM` and turns it into a
  "cluster" whose slot advances with wall-clock time (one slot per 400 ms by default).
  Advancement is lazy (on each call), so no thread is needed.  ``freeze()`` stops the
  chain for fault injection.
* :class:`SolanaRpcHandler` answers JSON-RPC 2.0 request bodies (``handle(bytes) ->
  bytes``), single or batched, with the wire shapes of ``shared/vendors/solana-rpc.md``
  (which match what Agave nodes emit and what solders / solana-py parse).

The sandbox's HTTP layer owns the sockets and calls :meth:`SolanaRpcHandler.handle`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from solders.account import Account
from solders.clock import Clock
from solders.epoch_schedule import EpochSchedule
from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.rpc.responses import RpcSimulateTransactionResult
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata
from solders.transaction_status import (
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
    TransactionStatus,
)

__all__ = [
    "DEFAULT_GENESIS_HASH",
    "DEFAULT_START_SLOT",
    "MAX_MULTIPLE_ACCOUNTS",
    "MAX_PROCESSING_AGE",
    "SolanaLedger",
    "SolanaRpcHandler",
    "TransactionRejected",
]

U64_MAX = 2**64 - 1
#: Default first slot of the sandbox chain (mainnet-beta was around here in 2025).
DEFAULT_START_SLOT = 345_000_000
#: base58(sha256(b"tokenforge-sandbox")): the sandbox cluster's identity.
DEFAULT_GENESIS_HASH = str(Hash(hashlib.sha256(b"tokenforge-sandbox").digest()))
DEFAULT_SOLANA_CORE_VERSION = "2.3.13"
#: A blockhash is usable for this many blocks after the block that produced it.
MAX_PROCESSING_AGE = 150
#: Agave's cap on getMultipleAccounts keys.
MAX_MULTIPLE_ACCOUNTS = 100
#: Agave's cap on getSignatureStatuses signatures.
MAX_SIGNATURE_STATUSES = 256
#: Account data larger than this cannot be returned base58-encoded (Agave limit).
MAX_BASE58_BYTES = 128
_ZSTD_MAX_BLOCK = 128 * 1024
_MAX_TX_WIRE_BYTES = 1232
_MAX_KEPT_STATUSES = 200_000
_MAX_SLOT_HASHES = 512
_FAUCET_LAMPORTS = 10**18
_COMMITMENTS = ("processed", "confirmed", "finalized")
_ADVANCE_NONCE_IX = (4).to_bytes(4, "little")
_SYSTEM_PROGRAM = Pubkey.default()

# --------------------------------------------------------------------------------------
# small codecs
# --------------------------------------------------------------------------------------
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {ch: i for i, ch in enumerate(_B58_ALPHABET)}


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (the one Solana uses)."""
    n = int.from_bytes(data, "big")
    out: list[str] = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        idx = _B58_INDEX.get(ch)
        if idx is None:
            raise ValueError(f"invalid base58 character {ch!r}")
        n = n * 58 + idx
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def zstd_raw_frame(data: bytes) -> bytes:
    """A valid Zstandard frame that stores ``data`` uncompressed (raw blocks).

    Python 3.11 has no zstd compressor; raw blocks let ``base64+zstd`` answers still be
    decodable by every zstd implementation (RFC 8878 section 3.1.1).
    """
    out = bytearray(b"\x28\xb5\x2f\xfd")  # magic number
    out.append(0xE0)  # FCS field 8 bytes, single segment, no checksum, no dictionary
    out += len(data).to_bytes(8, "little")
    chunks = [data[i : i + _ZSTD_MAX_BLOCK] for i in range(0, len(data), _ZSTD_MAX_BLOCK)] or [b""]
    for i, chunk in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        header = last | (0 << 1) | (len(chunk) << 3)  # block type 0 = Raw
        out += header.to_bytes(3, "little")
        out += chunk
    return bytes(out)


# --------------------------------------------------------------------------------------
# transaction errors
# --------------------------------------------------------------------------------------
_TX_ERROR_TEXT = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "CallChainTooDeep": "Loader call chain is too deep",
    "MissingSignatureForFee": "Transaction requires a fee but has no signature present",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
    "SignatureFailure": "Transaction did not pass signature verification",
    "InvalidProgramForExecution": "This program may not be used for executing instructions",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "ClusterMaintenance": "Transactions are currently disabled due to cluster maintenance",
    "AccountBorrowOutstanding": (
        "Transaction processing left an account with an outstanding borrowed reference"
    ),
    "WouldExceedMaxBlockCostLimit": "Transaction would exceed max Block Cost Limit",
    "UnsupportedVersion": "Transaction version is unsupported",
    "InvalidWritableAccount": "Transaction loads a writable account that cannot be written",
    "WouldExceedMaxAccountCostLimit": "Transaction would exceed max account limit within the block",
    "WouldExceedAccountDataBlockLimit": "Transaction would exceed account data limit within the block",
    "TooManyAccountLocks": "Transaction locked too many accounts",
    "InvalidRentPayingAccount": "Transaction leaves an account with a lower balance than rent-exempt minimum",
}


def _humanize(name: str) -> str:
    words: list[str] = []
    for ch in name:
        if ch.isupper() and words:
            words.append(" ")
        words.append(ch.lower())
    text = "".join(words)
    return text[:1].upper() + text[1:]


def tx_error_json(err: Any) -> Any:
    """The wire JSON of a solders ``TransactionErrorType`` (e.g. ``"BlockhashNotFound"``)."""
    return json.loads(RpcSimulateTransactionResult(err=err).to_json())["err"]


def describe_tx_error(err_json: Any, logs: list[str] | None = None) -> str:
    """Agave's ``Display`` text for a transaction error (best effort, from its JSON form)."""
    if isinstance(err_json, str):
        return _TX_ERROR_TEXT.get(err_json, _humanize(err_json))
    if isinstance(err_json, dict) and len(err_json) == 1:
        ((name, value),) = err_json.items()
        if name == "InstructionError" and isinstance(value, list) and len(value) == 2:
            index, ix_err = value
            if isinstance(ix_err, dict) and "Custom" in ix_err:
                detail = f"custom program error: {int(ix_err['Custom']):#x}"
            else:
                detail = ""
                for line in reversed(logs or []):
                    if line.startswith("Program ") and " failed: " in line:
                        detail = line.split(" failed: ", 1)[1]
                        break
                if not detail:
                    detail = _humanize(ix_err if isinstance(ix_err, str) else next(iter(ix_err)))
            return f"Error processing Instruction {index}: {detail}"
        if name == "InsufficientFundsForRent":
            index = value.get("account_index") if isinstance(value, dict) else value
            return f"Transaction results in an account ({index}) with insufficient funds for rent"
        if name == "DuplicateInstruction":
            return f"Transaction contains a duplicate instruction ({value}) that is not allowed"
        return _humanize(name)
    return str(err_json)


class TransactionRejected(Exception):  # noqa: N818 - mirrors the RPC wording
    """A transaction was refused before landing (preflight failure / bad signature)."""

    def __init__(
        self,
        err: Any,
        *,
        logs: list[str] | None = None,
        units_consumed: int | None = None,
        signature_failure: bool = False,
        message: str | None = None,
    ) -> None:
        self.err = err
        self.err_json = tx_error_json(err)
        self.logs = list(logs or [])
        self.units_consumed = units_consumed
        self.signature_failure = signature_failure
        self.message = message or describe_tx_error(self.err_json, self.logs)
        super().__init__(self.message)


# --------------------------------------------------------------------------------------
# the ledger
# --------------------------------------------------------------------------------------
def _reraise_if_fatal(exc: BaseException) -> None:
    if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit | asyncio.CancelledError):
        raise exc


def _to_pubkey(value: str | Pubkey) -> Pubkey:
    return value if isinstance(value, Pubkey) else Pubkey.from_string(value)


class SolanaLedger:
    """A LiteSVM-backed chain whose head follows wall-clock time.

    Slot ``s`` has block time ``floor(start_time + (s - start_slot) * slot_duration)``.
    Every public method first advances the VM to the slot implied by ``clock()``
    (``warp_to_slot`` + a Clock sysvar whose ``unix_timestamp``/``epoch`` match), and
    rotates the blockhash once per advance.  While frozen the head stays put; after
    ``unfreeze()`` it catches up with the clock again (the formula above never changes).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        start_slot: int = DEFAULT_START_SLOT,
        start_block_height: int | None = None,
        genesis_hash: str = DEFAULT_GENESIS_HASH,
        slot_duration: float = 0.4,
        finality_depth: int = 32,
        svm: LiteSVM | None = None,
    ) -> None:
        if not 0 <= start_slot < U64_MAX // 2:
            raise ValueError("start_slot out of range")
        if slot_duration <= 0:
            raise ValueError("slot_duration must be > 0")
        if finality_depth < 1:
            raise ValueError("finality_depth must be >= 1")
        try:
            Hash.from_string(genesis_hash)
        except Exception as exc:  # solders.ParseHashError is not a ValueError
            raise ValueError(f"genesis_hash must be a base58 32-byte value: {exc}") from None
        self.lock = threading.RLock()
        self.clock = clock
        self.genesis_hash = genesis_hash
        self.slot_duration = float(slot_duration)
        self.finality_depth = int(finality_depth)
        self.start_slot = int(start_slot)
        self.start_block_height = (
            int(start_block_height) if start_block_height is not None else self.start_slot * 15 // 16
        )
        self.start_time = float(clock())
        # Integer microseconds: float noise at ~1.7e9 s (ulp ~2e-7) must not move slot edges.
        self._start_us = round(self.start_time * 1_000_000)
        self._slot_us = round(self.slot_duration * 1_000_000)
        self.transaction_count = 0
        self._frozen = False
        self._slot = self.start_slot
        self.epoch_schedule = EpochSchedule.without_warmup()
        # Blockhashes are checked here (the VM only knows its single latest one), so a
        # client that fetched a blockhash a few slots ago can still land its transaction.
        if svm is None:
            svm = LiteSVM().with_lamports(_FAUCET_LAMPORTS)  # requestAirdrop's source
        self.svm = svm.with_blockhash_check(False)
        self.svm.set_epoch_schedule(self.epoch_schedule)
        self._blockhashes: OrderedDict[str, int] = OrderedDict()
        self._slot_hashes: deque[tuple[int, Hash]] = deque(maxlen=_MAX_SLOT_HASHES)
        self._statuses: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._apply_slot(self.start_slot, rotate=False)
        self._remember_blockhash()

    # ---- time -----------------------------------------------------------------------
    def block_time(self, slot: int) -> int:
        """Unix time (integer seconds) of ``slot`` by the chain's slot/time formula."""
        return (self._start_us + (slot - self.start_slot) * self._slot_us) // 1_000_000

    def _target_slot(self) -> int:
        elapsed_us = round(float(self.clock()) * 1_000_000) - self._start_us
        if elapsed_us <= 0:
            return self.start_slot
        return self.start_slot + elapsed_us // self._slot_us

    def _apply_slot(self, slot: int, *, rotate: bool) -> None:
        self.svm.warp_to_slot(slot)
        epoch = self.epoch_schedule.get_epoch(slot)
        first = self.epoch_schedule.get_first_slot_in_epoch(epoch)
        self.svm.set_clock(
            Clock(
                slot=slot,
                epoch_start_timestamp=self.block_time(first),
                epoch=epoch,
                leader_schedule_epoch=self.epoch_schedule.get_leader_schedule_epoch(slot),
                unix_timestamp=self.block_time(slot),
            )
        )
        self._slot = slot
        if rotate:
            self._rotate_blockhash()

    def _remember_blockhash(self) -> None:
        latest = self.svm.latest_blockhash()
        self._blockhashes[str(latest)] = self._slot
        # LiteSVM's warp_to_slot leaves the SlotHashes sysvar alone (it even starts with a
        # slot far ahead of ours). Keep it in step, one entry per slot up to the head, so
        # e.g. CreateLookupTable with a recent slot from getSlot works. Slots skipped over
        # by a lazy advance get synthetic hashes.
        if self._slot_hashes and self._slot_hashes[0][0] == self._slot:
            self._slot_hashes.popleft()
        if self._slot_hashes:
            first_missing = max(self._slot_hashes[0][0] + 1, self._slot - _MAX_SLOT_HASHES + 1)
            for slot in range(first_missing, self._slot):
                filler = hashlib.sha256(b"tokenforge-sandbox/slot:%d:" % slot + bytes(latest)).digest()
                self._slot_hashes.appendleft((slot, Hash(filler)))
        self._slot_hashes.appendleft((self._slot, latest))
        self.svm.set_slot_hashes(list(self._slot_hashes))

    def _rotate_blockhash(self) -> None:
        self.svm.expire_blockhash()
        self._remember_blockhash()
        horizon = self._slot - MAX_PROCESSING_AGE
        while len(self._blockhashes) > 1:
            oldest_hash, oldest_slot = next(iter(self._blockhashes.items()))
            if oldest_slot >= horizon and len(self._blockhashes) <= 4 * MAX_PROCESSING_AGE:
                break
            del self._blockhashes[oldest_hash]

    def advance(self) -> int:
        """Bring the VM up to the wall-clock slot (no-op while frozen); returns the head slot."""
        with self.lock:
            if not self._frozen:
                target = self._target_slot()
                if target > self._slot:
                    self._apply_slot(target, rotate=True)
            return self._slot

    @property
    def slot(self) -> int:
        return self.advance()

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        """Stop the chain: the head slot (and its block time) stop moving, nothing lands."""
        with self.lock:
            self.advance()
            self._frozen = True

    def unfreeze(self) -> None:
        """Restart the chain; the head catches up with wall-clock time on the next call."""
        with self.lock:
            self._frozen = False
            self.advance()

    def block_height(self, slot: int | None = None) -> int:
        slot = self.slot if slot is None else slot
        return self.start_block_height + (slot - self.start_slot)

    def has_block(self, slot: int) -> bool:
        return self.start_slot <= slot <= self.slot

    def epoch_info(self) -> dict[str, int]:
        slot = self.slot
        epoch, index = self.epoch_schedule.get_epoch_and_slot_index(slot)
        return {
            "absoluteSlot": slot,
            "blockHeight": self.block_height(slot),
            "epoch": epoch,
            "slotIndex": index,
            "slotsInEpoch": self.epoch_schedule.get_slots_in_epoch(epoch),
            "transactionCount": self.transaction_count,
        }

    # ---- blockhashes ------------------------------------------------------------------
    def latest_blockhash(self) -> tuple[str, int]:
        """``(blockhash, lastValidBlockHeight)`` of the head."""
        with self.lock:
            self.advance()
            blockhash = next(reversed(self._blockhashes))
            return blockhash, self.block_height(self._blockhashes[blockhash]) + MAX_PROCESSING_AGE

    def is_blockhash_valid(self, blockhash: str) -> bool:
        with self.lock:
            slot = self.advance()
            issued = self._blockhashes.get(blockhash)
            return issued is not None and issued >= slot - MAX_PROCESSING_AGE

    # ---- accounts ---------------------------------------------------------------------
    def get_account(self, pubkey: str | Pubkey) -> Account | None:
        """The account, or None when it does not exist (zero lamports counts as missing)."""
        with self.lock:
            self.advance()
            account = self.svm.get_account(_to_pubkey(pubkey))
            if account is None or account.lamports == 0:
                return None
            return account

    def get_balance(self, pubkey: str | Pubkey) -> int:
        account = self.get_account(pubkey)
        return 0 if account is None else account.lamports

    def fund(self, pubkey: str | Pubkey, lamports: int) -> None:
        """Set the balance of ``pubkey`` to exactly ``lamports`` (other fields kept)."""
        if isinstance(lamports, bool) or not isinstance(lamports, int) or not 0 <= lamports <= U64_MAX:
            raise ValueError("lamports must be an integer in [0, 2**64)")
        key = _to_pubkey(pubkey)
        with self.lock:
            self.advance()
            current = self.svm.get_account(key)
            if current is None:
                account = Account(lamports, b"", _SYSTEM_PROGRAM, False, U64_MAX)
            else:
                account = Account(
                    lamports, current.data, current.owner, current.executable, current.rent_epoch
                )
            self.svm.set_account(key, account)

    def minimum_balance_for_rent_exemption(self, data_len: int) -> int:
        with self.lock:
            return int(self.svm.minimum_balance_for_rent_exemption(data_len))

    # ---- transactions -----------------------------------------------------------------
    def _record(self, signature: str, err: Any) -> None:
        self._statuses[signature] = (self._slot, err)
        self.transaction_count += 1
        while len(self._statuses) > _MAX_KEPT_STATUSES:
            self._statuses.popitem(last=False)

    def airdrop(self, pubkey: str | Pubkey, lamports: int) -> str:
        """Faucet transfer through the VM; returns its signature (not landed while frozen)."""
        key = _to_pubkey(pubkey)
        with self.lock:
            self.advance()
            if self._frozen:
                seed = f"{key}:{lamports}:{self._slot}:{len(self._statuses)}:{time.monotonic_ns()}"
                return str(Signature(hashlib.sha512(seed.encode()).digest()))
            result = self.svm.airdrop(key, lamports)
            if isinstance(result, FailedTransactionMetadata) and _is_already_processed(result.err()):
                # Same recipient/amount within one blockhash: use a fresh one, as a faucet would.
                self._rotate_blockhash()
                result = self.svm.airdrop(key, lamports)
            if isinstance(result, FailedTransactionMetadata):
                meta = result.meta()
                raise TransactionRejected(
                    result.err(), logs=list(meta.logs()), units_consumed=meta.compute_units_consumed()
                )
            signature = str(result.signature())
            self._record(signature, None)
            return signature

    def _check_recent_blockhash(self, tx: VersionedTransaction) -> bool:
        message = tx.message
        recent = str(message.recent_blockhash)
        if self.is_blockhash_valid(recent):
            return True
        if tx.uses_durable_nonce():
            ix = message.instructions[0]
            nonce_key = message.account_keys[ix.accounts[0]]
            nonce = self.svm.get_account(nonce_key)
            if nonce is not None and nonce.owner == _SYSTEM_PROGRAM and len(nonce.data) >= 72:
                return b58encode(bytes(nonce.data[40:72])) == recent
        return False

    def send_transaction(self, tx: VersionedTransaction, *, skip_preflight: bool = False) -> str:
        """Submit ``tx``; returns its signature or raises :class:`TransactionRejected`.

        Mirrors an Agave RPC node: with preflight, a bad signature or a failing simulation
        is refused and nothing lands; without it the signature is returned and the
        transaction lands only if the VM accepts it (failed executions land with their
        error and pay the fee).  While frozen, nothing lands.
        """
        with self.lock:
            self.advance()
            signature = str(tx.signatures[0])
            if not skip_preflight:
                if not all(tx.verify_with_results()):
                    raise TransactionRejected(
                        TransactionErrorFieldless.SignatureFailure,
                        signature_failure=True,
                        message="Transaction signature verification failure",
                    )
                if not self._check_recent_blockhash(tx):
                    raise TransactionRejected(TransactionErrorFieldless.BlockhashNotFound, units_consumed=0)
                sim = self.svm.simulate_transaction(tx)
                if isinstance(sim, FailedTransactionMetadata):
                    meta = sim.meta()
                    raise TransactionRejected(
                        sim.err(), logs=list(meta.logs()), units_consumed=meta.compute_units_consumed()
                    )
            if self._frozen:
                return signature
            if skip_preflight and not self._check_recent_blockhash(tx):
                return signature  # dropped by the leader, never lands
            result = self.svm.send_transaction(tx)
            if not isinstance(result, FailedTransactionMetadata):
                self._record(signature, None)
                return signature
            err = result.err()
            if _is_already_processed(err):
                if skip_preflight:
                    return signature  # a duplicate is silently dropped
                raise TransactionRejected(err, units_consumed=0)
            if self.svm.get_transaction(tx.signatures[0]) is not None:
                self._record(signature, err)  # landed as a failed transaction (fee paid)
                return signature
            if skip_preflight:
                return signature  # rejected by the leader, never lands
            meta = result.meta()
            raise TransactionRejected(
                err, logs=list(meta.logs()), units_consumed=meta.compute_units_consumed()
            )

    def signature_status(self, signature: str) -> TransactionStatus | None:
        with self.lock:
            head = self.advance()
            entry = self._statuses.get(signature)
            if entry is None:
                return None
            landed, err = entry
            age = head - landed
            if age >= self.finality_depth:
                confirmations, level = None, TransactionConfirmationStatus.Finalized
            elif age >= 1:
                confirmations, level = age, TransactionConfirmationStatus.Confirmed
            else:
                confirmations, level = 0, TransactionConfirmationStatus.Processed
            return TransactionStatus(
                slot=landed, confirmations=confirmations, status=err, err=err, confirmation_status=level
            )


def _is_already_processed(err: Any) -> bool:
    return tx_error_json(err) == "AlreadyProcessed"


# --------------------------------------------------------------------------------------
# JSON-RPC
# --------------------------------------------------------------------------------------
class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = ..., *, request_id: Any = ...) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.request_id = request_id

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not ...:
            obj["data"] = self.data
        return obj


def _invalid_params(message: str) -> RpcError:
    return RpcError(-32602, f"Invalid params: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _u64(value: Any, name: str) -> int:
    if not _is_int(value) or not 0 <= value <= U64_MAX:
        raise _invalid_params(f"{name}: expected an unsigned 64-bit integer, got {json.dumps(value)}")
    return value


def _pubkey_param(value: Any, name: str) -> Pubkey:
    if not isinstance(value, str):
        raise _invalid_params(f"{name}: expected a base58 public key string, got {json.dumps(value)}")
    try:
        return Pubkey.from_string(value)
    except Exception as exc:
        raise _invalid_params(f"{name}: invalid public key {value!r} ({exc})") from None


_Method = Callable[[list[Any]], Any]


class SolanaRpcHandler:
    """JSON-RPC 2.0 front end of a :class:`SolanaLedger` (``handle(bytes) -> bytes``).

    Fault-injection attributes (flip them at any time):

    * ``wrong_genesis`` - getGenesisHash answers ``wrong_genesis_hash`` (wrong cluster).
    * ``slots_behind`` - int: getHealth answers -32005 "Node is behind by N slots"
      (and preflight refuses transactions, as Agave does); ``unhealthy`` - True with
      ``slots_behind`` None: -32005 "Node is unhealthy" without data.
    """

    def __init__(
        self,
        ledger: SolanaLedger,
        *,
        solana_core_version: str = DEFAULT_SOLANA_CORE_VERSION,
        feature_set: int | None = None,
    ) -> None:
        self.ledger = ledger
        self.solana_core_version = solana_core_version
        self.feature_set = (
            feature_set
            if feature_set is not None
            else int.from_bytes(hashlib.sha256(solana_core_version.encode()).digest()[:4], "little")
        )
        self.wrong_genesis = False
        self.slots_behind: int | None = None
        self.unhealthy = False
        self._methods: dict[str, _Method] = {
            "getHealth": self._get_health,
            "getSlot": self._get_slot,
            "getBlockHeight": self._get_block_height,
            "getBlockTime": self._get_block_time,
            "getBalance": self._get_balance,
            "getAccountInfo": self._get_account_info,
            "getMultipleAccounts": self._get_multiple_accounts,
            "getGenesisHash": self._get_genesis_hash,
            "getVersion": self._get_version,
            "getLatestBlockhash": self._get_latest_blockhash,
            "isBlockhashValid": self._is_blockhash_valid,
            "getEpochInfo": self._get_epoch_info,
            "getMinimumBalanceForRentExemption": self._get_minimum_balance_for_rent_exemption,
            "requestAirdrop": self._request_airdrop,
            "getSignatureStatuses": self._get_signature_statuses,
            "sendTransaction": self._send_transaction,
        }

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self._methods)

    @property
    def wrong_genesis_hash(self) -> str:
        """What getGenesisHash answers while ``wrong_genesis`` is set (a valid, different hash)."""
        real = bytes(Hash.from_string(self.ledger.genesis_hash))
        return str(Hash(hashlib.sha256(b"tokenforge-sandbox/wrong-cluster:" + real).digest()))

    # ---- envelope -----------------------------------------------------------------------
    def handle(self, body: bytes) -> bytes:
        """Answer one HTTP request body. Returns b"" when there is nothing to answer
        (notifications only). Never raises, except KeyboardInterrupt/SystemExit."""
        try:
            return self._handle(body)
        except BaseException as exc:  # last resort: keep the HTTP layer alive
            _reraise_if_fatal(exc)
            return self._dump(self._error_response(None, RpcError(-32603, "Internal error")))

    def _handle(self, body: bytes) -> bytes:
        try:
            payload = json.loads(body.decode("utf-8") if isinstance(body, bytes | bytearray) else body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return self._dump(self._error_response(None, RpcError(-32700, "Parse error")))
        if isinstance(payload, list):
            if not payload:
                return self._dump(self._error_response(None, RpcError(-32600, "Invalid request")))
            answers = [a for a in (self._handle_one(item) for item in payload) if a is not None]
            return self._dump(answers) if answers else b""
        answer = self._handle_one(payload)
        return b"" if answer is None else self._dump(answer)

    @staticmethod
    def _dump(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()

    @staticmethod
    def _error_response(request_id: Any, error: RpcError) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "error": error.to_obj(), "id": request_id}

    def _handle_one(self, request: Any) -> dict[str, Any] | None:
        if not isinstance(request, dict):
            return self._error_response(None, RpcError(-32600, "Invalid request"))
        has_id = "id" in request
        request_id = request.get("id")
        if request_id is not None and not (isinstance(request_id, str) or _is_int(request_id)):
            return self._error_response(
                None, RpcError(-32600, "Invalid request: id must be a string, integer or null")
            )
        if request.get("jsonrpc") != "2.0":
            return self._error_response(
                request_id, RpcError(-32600, 'Invalid request: jsonrpc must be "2.0"')
            )
        method = request.get("method")
        if not isinstance(method, str):
            return self._error_response(
                request_id, RpcError(-32600, "Invalid request: method must be a string")
            )
        try:
            result = self._call(method, request.get("params"))
        except RpcError as exc:
            answer = self._error_response(request_id, exc)
        else:
            answer = {"jsonrpc": "2.0", "result": result, "id": request_id}
        return answer if has_id else None

    def _call(self, method: str, params: Any) -> Any:
        fn = self._methods.get(method)
        if fn is None:
            raise RpcError(-32601, "Method not found")
        if params is None:
            params = []
        elif not isinstance(params, list):
            raise _invalid_params("params must be a JSON array (positional parameters)")
        try:
            with self.ledger.lock:
                return fn(params)
        except RpcError:
            raise
        except BaseException as exc:  # solders raises pyo3 PanicException, a BaseException
            _reraise_if_fatal(exc)
            raise RpcError(
                -32603, "Internal error", {"exception": type(exc).__name__, "detail": str(exc)}
            ) from None

    # ---- params helpers ---------------------------------------------------------------------
    @staticmethod
    def _arity(params: list[Any], required: int, optional: int, names: tuple[str, ...]) -> None:
        if len(params) < required:
            raise _invalid_params(
                f"missing required parameter {names[len(params)]!r} (position {len(params)})"
            )
        if len(params) > required + optional:
            raise _invalid_params(f"expected at most {required + optional} parameters, got {len(params)}")

    @staticmethod
    def _config(params: list[Any], index: int, name: str = "config") -> dict[str, Any]:
        if len(params) <= index or params[index] is None:
            return {}
        config = params[index]
        if not isinstance(config, dict):
            raise _invalid_params(f"{name}: expected a configuration object, got {json.dumps(config)}")
        commitment = config.get("commitment")
        if commitment is not None and commitment not in _COMMITMENTS:
            raise _invalid_params(
                f"commitment: unknown variant {json.dumps(commitment)}, expected one of "
                "`processed`, `confirmed`, `finalized`"
            )
        preflight = config.get("preflightCommitment")
        if preflight is not None and preflight not in _COMMITMENTS:
            raise _invalid_params(f"preflightCommitment: unknown variant {json.dumps(preflight)}")
        return config

    def _context(self, config: dict[str, Any]) -> dict[str, Any]:
        slot = self.ledger.slot
        min_slot = config.get("minContextSlot")
        if min_slot is not None:
            _u64(min_slot, "minContextSlot")
            if slot < min_slot:
                raise RpcError(-32016, "Minimum context slot has not been reached", {"contextSlot": slot})
        return {"slot": slot, "apiVersion": self.solana_core_version}

    # ---- methods ------------------------------------------------------------------------
    def _health_error(self) -> RpcError | None:
        if self.slots_behind is not None:
            n = int(self.slots_behind)
            return RpcError(-32005, f"Node is behind by {n} slots", {"numSlotsBehind": n})
        if self.unhealthy:
            return RpcError(-32005, "Node is unhealthy", {"numSlotsBehind": None})
        return None

    def _get_health(self, params: list[Any]) -> Any:
        self._arity(params, 0, 0, ())
        error = self._health_error()
        if error is not None:
            raise error
        return "ok"

    def _get_slot(self, params: list[Any]) -> Any:
        self._arity(params, 0, 1, ("config",))
        return self._context(self._config(params, 0))["slot"]

    def _get_block_height(self, params: list[Any]) -> Any:
        self._arity(params, 0, 1, ("config",))
        return self.ledger.block_height(self._context(self._config(params, 0))["slot"])

    def _get_block_time(self, params: list[Any]) -> Any:
        self._arity(params, 1, 0, ("slot",))
        slot = _u64(params[0], "slot")
        return self.ledger.block_time(slot) if self.ledger.has_block(slot) else None

    def _get_balance(self, params: list[Any]) -> Any:
        self._arity(params, 1, 1, ("pubkey", "config"))
        key = _pubkey_param(params[0], "pubkey")
        context = self._context(self._config(params, 1))
        return {"context": context, "value": self.ledger.get_balance(key)}

    def _encode_account(
        self, account: Account | None, encoding: str, data_slice: tuple[int, int] | None
    ) -> Any:
        if account is None:
            return None
        data = bytes(account.data)
        if data_slice is not None:
            offset, length = data_slice
            data = data[offset : offset + length]
        if encoding in ("binary", "base58") and len(data) > MAX_BASE58_BYTES:
            raise RpcError(
                -32600,
                f"Encoded binary (base 58) data should be less than {MAX_BASE58_BYTES} bytes, "
                "please use Base64 encoding.",
            )
        if encoding == "binary":
            encoded: Any = b58encode(data)
        elif encoding == "base58":
            encoded = [b58encode(data), "base58"]
        elif encoding == "base64+zstd":
            encoded = [base64.b64encode(zstd_raw_frame(data)).decode(), "base64+zstd"]
        else:  # base64, and jsonParsed's fallback for accounts without a parser
            encoded = [base64.b64encode(data).decode(), "base64"]
        return {
            "data": encoded,
            "executable": bool(account.executable),
            "lamports": int(account.lamports),
            "owner": str(account.owner),
            "rentEpoch": int(account.rent_epoch),
            "space": len(account.data),
        }

    @staticmethod
    def _account_encoding(config: dict[str, Any], default: str) -> tuple[str, tuple[int, int] | None]:
        encoding = config.get("encoding", default)
        if encoding is None:
            encoding = default
        if encoding not in ("binary", "base58", "base64", "base64+zstd", "jsonParsed"):
            raise _invalid_params(
                f"encoding: unknown variant {json.dumps(encoding)}, expected one of "
                "`binary`, `base58`, `base64`, `jsonParsed`, `base64+zstd`"
            )
        raw_slice = config.get("dataSlice")
        data_slice = None
        if raw_slice is not None:
            if not isinstance(raw_slice, dict) or "offset" not in raw_slice or "length" not in raw_slice:
                raise _invalid_params('dataSlice: expected {"offset": <usize>, "length": <usize>}')
            data_slice = (
                _u64(raw_slice["offset"], "dataSlice.offset"),
                _u64(raw_slice["length"], "dataSlice.length"),
            )
            if encoding == "jsonParsed":
                raise RpcError(
                    -32600,
                    "Sliced account data can only be encoded using binary (base 58) or base64 encoding.",
                )
        return encoding, data_slice

    def _get_account_info(self, params: list[Any]) -> Any:
        self._arity(params, 1, 1, ("pubkey", "config"))
        key = _pubkey_param(params[0], "pubkey")
        config = self._config(params, 1)
        encoding, data_slice = self._account_encoding(config, "binary")
        context = self._context(config)
        return {
            "context": context,
            "value": self._encode_account(self.ledger.get_account(key), encoding, data_slice),
        }

    def _get_multiple_accounts(self, params: list[Any]) -> Any:
        self._arity(params, 1, 1, ("pubkeys", "config"))
        raw_keys = params[0]
        if not isinstance(raw_keys, list):
            raise _invalid_params(
                f"pubkeys: expected an array of base58 public keys, got {json.dumps(raw_keys)}"
            )
        if len(raw_keys) > MAX_MULTIPLE_ACCOUNTS:
            raise _invalid_params(
                f"pubkeys: Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS} (got {len(raw_keys)})"
            )
        keys = [_pubkey_param(value, f"pubkeys[{i}]") for i, value in enumerate(raw_keys)]
        config = self._config(params, 1)
        encoding, data_slice = self._account_encoding(config, "base64")
        context = self._context(config)
        value = [self._encode_account(self.ledger.get_account(key), encoding, data_slice) for key in keys]
        return {"context": context, "value": value}

    def _get_genesis_hash(self, params: list[Any]) -> Any:
        self._arity(params, 0, 0, ())
        return self.wrong_genesis_hash if self.wrong_genesis else self.ledger.genesis_hash

    def _get_version(self, params: list[Any]) -> Any:
        self._arity(params, 0, 0, ())
        return {"solana-core": self.solana_core_version, "feature-set": self.feature_set}

    def _get_latest_blockhash(self, params: list[Any]) -> Any:
        self._arity(params, 0, 1, ("config",))
        context = self._context(self._config(params, 0))
        blockhash, last_valid = self.ledger.latest_blockhash()
        return {"context": context, "value": {"blockhash": blockhash, "lastValidBlockHeight": last_valid}}

    def _is_blockhash_valid(self, params: list[Any]) -> Any:
        self._arity(params, 1, 1, ("blockhash", "config"))
        blockhash = params[0]
        if not isinstance(blockhash, str):
            raise _invalid_params(f"blockhash: expected a base58 string, got {json.dumps(blockhash)}")
        try:
            Hash.from_string(blockhash)
        except Exception:
            raise _invalid_params(f"blockhash: invalid hash {blockhash!r}") from None
        context = self._context(self._config(params, 1))
        return {"context": context, "value": self.ledger.is_blockhash_valid(blockhash)}

    def _get_epoch_info(self, params: list[Any]) -> Any:
        self._arity(params, 0, 1, ("config",))
        self._context(self._config(params, 0))
        return self.ledger.epoch_info()

    def _get_minimum_balance_for_rent_exemption(self, params: list[Any]) -> Any:
        self._arity(params, 1, 1, ("dataLength", "config"))
        length = _u64(params[0], "dataLength")
        self._config(params, 1)
        return self.ledger.minimum_balance_for_rent_exemption(length)

    def _request_airdrop(self, params: list[Any]) -> Any:
        self._arity(params, 2, 1, ("pubkey", "lamports", "config"))
        key = _pubkey_param(params[0], "pubkey")
        lamports = _u64(params[1], "lamports")
        self._config(params, 2)
        try:
            return self.ledger.airdrop(key, lamports)
        except TransactionRejected as exc:
            raise RpcError(-32603, f"Internal error: airdrop failed: {exc.message}") from None

    def _get_signature_statuses(self, params: list[Any]) -> Any:
        self._arity(params, 1, 1, ("signatures", "config"))
        raw = params[0]
        if not isinstance(raw, list):
            raise _invalid_params(
                f"signatures: expected an array of base58 signatures, got {json.dumps(raw)}"
            )
        if len(raw) > MAX_SIGNATURE_STATUSES:
            raise _invalid_params(
                f"signatures: Too many inputs provided; max {MAX_SIGNATURE_STATUSES} (got {len(raw)})"
            )
        sigs: list[str] = []
        for i, value in enumerate(raw):
            try:
                sigs.append(str(Signature.from_string(value)))
            except Exception:
                raise _invalid_params(f"signatures[{i}]: invalid signature {json.dumps(value)}") from None
        config = self._config(params, 1)
        search = config.get("searchTransactionHistory")
        if search is not None and not isinstance(search, bool):
            raise _invalid_params("searchTransactionHistory: expected a boolean")
        context = self._context({})
        value = []
        for sig in sigs:
            status = self.ledger.signature_status(sig)
            value.append(None if status is None else json.loads(status.to_json()))
        return {"context": context, "value": value}

    def _send_transaction(self, params: list[Any]) -> Any:
        self._arity(params, 1, 1, ("transaction", "config"))
        wire = params[0]
        if not isinstance(wire, str):
            raise _invalid_params(
                f"transaction: expected an encoded transaction string, got {json.dumps(wire)}"
            )
        config = self._config(params, 1)
        encoding = config.get("encoding") or "base58"
        skip_preflight = config.get("skipPreflight", False)
        if not isinstance(skip_preflight, bool):
            raise _invalid_params("skipPreflight: expected a boolean")
        max_retries = config.get("maxRetries")
        if max_retries is not None:
            _u64(max_retries, "maxRetries")
        self._context(config)  # minContextSlot
        if encoding == "base58":
            try:
                raw = b58decode(wire)
            except ValueError as exc:
                raise _invalid_params(f"transaction: invalid base58 encoding: {exc}") from None
        elif encoding == "base64":
            try:
                raw = base64.b64decode(wire, validate=True)
            except ValueError as exc:
                raise _invalid_params(f"transaction: invalid base64 encoding: {exc}") from None
        else:
            raise _invalid_params(
                f"encoding: unsupported encoding: {encoding}. Supported encodings: base58, base64"
            )
        if len(raw) > _MAX_TX_WIRE_BYTES:
            raise _invalid_params(
                f"transaction: encoded solana_transaction::versioned::VersionedTransaction too large: "
                f"{len(raw)} bytes (max: {_MAX_TX_WIRE_BYTES} bytes)"
            )
        try:
            tx = VersionedTransaction.from_bytes(raw)
        except Exception as exc:
            raise _invalid_params(
                "transaction: failed to deserialize "
                f"solana_transaction::versioned::VersionedTransaction: {exc}"
            ) from None
        try:
            tx.sanitize()
        except Exception as exc:
            raise _invalid_params(f"transaction: invalid transaction: {exc}") from None
        if not tx.signatures:
            raise _invalid_params("transaction: invalid transaction: no signatures")
        if not skip_preflight:
            health = self._health_error()
            if health is not None:
                raise RpcError(
                    -32002,
                    f"Transaction simulation failed: {health.message}",
                    json.loads(RpcSimulateTransactionResult().to_json()),
                )
        try:
            return self.ledger.send_transaction(tx, skip_preflight=skip_preflight)
        except TransactionRejected as exc:
            if exc.signature_failure:
                raise RpcError(-32003, exc.message) from None
            data = json.loads(
                RpcSimulateTransactionResult(
                    err=exc.err, logs=exc.logs, accounts=None, units_consumed=exc.units_consumed
                ).to_json()
            )
            raise RpcError(-32002, f"Transaction simulation failed: {exc.message}", data) from None
