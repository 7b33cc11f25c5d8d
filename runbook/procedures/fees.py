"""Contract Maintenance 2, "Fee Adjustment": the margin per token created, a suggested fee, and the
approved change of the quoted fee on chain.

Which fee is on chain, and who may change it (contracts/TokenFactory.sol, contracts/FeeCollector.sol):
- `TokenFactory.fee()` is the least a launch must pay (`createToken` reverts with FeeTooLow below
  it). It is fixed when the factory is deployed: the factory has no setter.
- `FeeCollector.platformFee()` is the fee the launch platform quotes and launches pay. Only the
  holder of DEFAULT_ADMIN_ROLE may change it, with `setFee(uint256)`: that is the fee-setter key
  here (never the treasury key: TREASURY_ROLE cannot call setFee).
A launch pays the quoted fee, but never less than the factory's minimum, so the fee per token is
the larger of the two, and a suggestion is never below the factory's minimum.

Per EVM chain with a TokenFactory:
- gas per token created: the median gas used by the most recent `createToken` transactions (the
  receipts of the factory's TokenCreated events), or, when there are none, `eth_estimateGas` of a
  `createToken` call from the launching wallet;
- gas cost per token: that gas times the gas strategy's recommended maxFeePerGas (the most a
  creation costs under the strategy);
- margin per token: fee - gas cost, in the native unit and in USD (CoinGecko simple price);
- suggested fee: the least fee that keeps both targets, `target_margin_usd` per token and
  `target_margin_ratio` of the fee, rounded up to `fee_step`, never below the factory's minimum.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Any, Literal

import httpx
from pydantic import Field, SecretStr, model_validator

from runbook.checks import CheckResult, Status
from runbook.clients import coingecko, evm_logs, evm_tx
from runbook.clients.evm import EndpointUnusable, RpcTransportError
from runbook.clients.evm_logs import RpcError
from runbook.clients.http_probe import describe_error
from runbook.config_types import Chain, ChainKind, HttpUrl, Name, SecretRef, Strict
from runbook.procedures.emergency import EvmAddress, amount_text, retyped_problems
from runbook.procedures.gas import GasStrategy, Recommendation
from runbook.procedures.metrics import TOKEN_CREATED_TOPIC

WEI = Decimal(10**18)
FACTORY_FEE = evm_tx.encode_call("fee()")
PLATFORM_FEE = evm_tx.encode_call("platformFee()")
# What an estimate launches: a token like the platform's, with a typical supply.
SAMPLE_LAUNCH = evm_tx.encode_call("createToken(string,string,uint256)", ["string", "string", "uint256"],
                                   ["Fee Review Token", "FEERV", 1_000_000 * 10**18])


def set_fee_data(new_fee_wei: int) -> str:
    return evm_tx.encode_call("setFee(uint256)", ["uint256"], [new_fee_wei])


class CoinGeckoPrices(Strict):
    base_url: HttpUrl = coingecko.PRO_ROOT
    api_key: SecretRef = Field(description="the Pro API key (sent as x-cg-pro-api-key)")
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10


class FeeReview(Strict):
    """The `[fees]` section."""

    target_margin_usd: Annotated[float, Field(ge=0)] = Field(
        default=5.0, description="the margin each token created should leave, in USD")
    target_margin_ratio: Annotated[float, Field(ge=0, le=0.95)] = Field(
        default=0.5, description="the share of the fee the margin should be (0.5: the fee is twice the gas cost)")
    fee_step: Annotated[float, Field(gt=0)] = Field(
        default=0.0001, description="suggested fees are rounded up to a multiple of this, in the native unit")
    price_ids: dict[Name, Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,80}$")]] = Field(
        default_factory=dict, description="CoinGecko coin id of each chain's native token (ethereum, binancecoin)")
    coingecko: CoinGeckoPrices | None = Field(
        default=None, description="where prices come from; default: the key in [api_usage.coingecko]")
    fee_setter_key: SecretRef | None = Field(
        default=None, description="private key of the FeeCollector's DEFAULT_ADMIN_ROLE holder (setFee); read only "
                                  "after approval")
    fee_setter_address: EvmAddress | None = Field(
        default=None, description="the fee-setter key's address, for the simulation before approval")
    estimate_from: dict[Name, EvmAddress] = Field(
        default_factory=dict, description="who eth_estimateGas launches a token as, per chain; default: the chain's "
                                          "first wallet in [[wallets]]")
    sample_blocks: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=50_000, description="how far back to look for recent createToken transactions")
    sample_size: Annotated[int, Field(ge=1, le=200)] = 20
    max_block_range: Annotated[int, Field(ge=1, le=100_000)] = 2000
    rpc_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10
    deadline_s: Annotated[float, Field(gt=0, le=600)] = 60
    tx_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 300
    replace_after_s: Annotated[float, Field(gt=0, le=600)] = 30
    max_replacements: Annotated[int, Field(ge=0, le=20)] = 5
    poll_s: Annotated[float, Field(gt=0, le=30)] = 1
    approval_timeout_s: Annotated[int, Field(ge=60, le=86_400)] = 3600
    approval_poll_s: Annotated[int, Field(ge=1, le=60)] = 5

    @model_validator(mode="after")
    def _consistent(self) -> FeeReview:
        if (self.fee_setter_key is None) != (self.fee_setter_address is None):
            raise ValueError("fee_setter_key and fee_setter_address go together")
        if self.replace_after_s >= self.tx_timeout_s:
            raise ValueError("replace_after_s must be shorter than tx_timeout_s, or nothing is ever replaced")
        return self

    def problems_with(self, chains: Mapping[str, Chain]) -> list[str]:
        problems = []
        for section in ("price_ids", "estimate_from"):
            for name in getattr(self, section):
                chain = chains.get(name)
                if chain is None:
                    problems.append(f"fees.{section}.{name}: unknown chain")
                elif chain.kind is not ChainKind.evm:
                    problems.append(f"fees.{section}.{name}: not an EVM chain")
        return problems

    @property
    def fee_step_wei(self) -> int:
        return max(1, int(Decimal(str(self.fee_step)) * WEI))

    def tx_policy(self, gas: GasStrategy, chain: str, preset: evm_tx.Fees | None) -> evm_tx.TxPolicy:
        return evm_tx.TxPolicy(
            cap_wei=gas.cap_wei(chain), min_priority_wei=gas.min_priority_wei, percentile=gas.priority_percentile,
            history_blocks=gas.blocks, replace_after_s=self.replace_after_s, max_replacements=self.max_replacements,
            timeout_s=self.tx_timeout_s, poll_s=self.poll_s, preset=preset,
        )


def review_chains(chains: Mapping[str, Chain]) -> list[str]:
    """Every EVM chain with a TokenFactory, in the environment file's order."""
    return [n for n, c in chains.items() if c.kind is ChainKind.evm and c.token_factory]


_EXPECTED = (evm_tx.TxError, EndpointUnusable, RpcTransportError, RpcError, httpx.HTTPError, TimeoutError, OSError)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, evm_tx.TxError | EndpointUnusable | RpcTransportError | RpcError):
        return str(exc)
    return describe_error(exc)


def _uint(data: Any, what: str) -> int:
    if not isinstance(data, str) or not data.startswith("0x") or len(data) != 66:
        raise RpcTransportError(f"{what}: not a uint256 answer ({str(data)[:20]}...); is it the right contract?")
    return int(data, 16)


# ---- reading a chain ---------------------------------------------------------------------------------------------


@dataclass
class ChainReading:
    """What one chain says: its fees, and the gas a token creation uses."""

    chain: str
    endpoint: str = ""
    block: int | None = None
    factory_fee_wei: int | None = None
    quoted_fee_wei: int | None = None
    gas_used: int | None = None
    gas_source: str = ""
    error: str | None = None


async def read_chain(cfg: FeeReview, name: str, chain: Chain, client: httpx.AsyncClient,
                     launcher: str | None) -> ChainReading:
    """The factory's minimum fee, the collector's quoted fee, and the gas per creation, all from
    one endpoint (the first on the right chain with a fresh head). Never raises for the chain's faults."""
    factory, collector = chain.token_factory, chain.fee_collector
    if chain.chain_id is None or factory is None:
        return ChainReading(name, error="no token_factory configured")
    chain_id, timeout = chain.chain_id, cfg.rpc_timeout_s

    async def attempt(url: str) -> ChainReading:
        head, _ = await evm_logs.fresh_head(client, url, chain_id=chain_id, max_head_age_s=chain.max_head_age_s,
                                            timeout_s=timeout)
        calls: list[tuple[str, list[Any]]] = [("eth_call", [{"to": factory, "data": FACTORY_FEE}, hex(head)])]
        if collector:
            calls.append(("eth_call", [{"to": collector, "data": PLATFORM_FEE}, hex(head)]))
        answers = await evm_logs.call_batch(client, url, calls, timeout)
        reading = ChainReading(name, block=head, factory_fee_wei=_uint(answers[0], f"TokenFactory {factory} fee()"),
                               quoted_fee_wei=_uint(answers[1], f"FeeCollector {collector} platformFee()")
                               if collector else None)
        start = max(0, head - cfg.sample_blocks + 1)
        logs = await evm_logs.get_logs(client, url, address=factory, topics=[TOKEN_CREATED_TOPIC], from_block=start,
                                       to_block=head, max_range=cfg.max_block_range, deadline_s=cfg.deadline_s)
        hashes: list[str] = []
        for log in reversed(logs):  # newest first
            if log["transactionHash"] not in hashes:
                hashes.append(log["transactionHash"])
            if len(hashes) == cfg.sample_size:
                break
        if hashes:
            receipts = await evm_logs.call_batch(client, url, [("eth_getTransactionReceipt", [h]) for h in hashes],
                                                 timeout)
            used = [(int(r["gasUsed"], 16), int(r["blockNumber"], 16)) for r in receipts
                    if isinstance(r, dict) and r.get("status") == "0x1" and r.get("gasUsed") and r.get("blockNumber")]
            if used:
                reading.gas_used = int(statistics.median_low(g for g, _ in used))
                blocks = [b for _, b in used]
                reading.gas_source = (f"measured: median of {len(used)} recent createToken transactions "
                                      f"(blocks {min(blocks)}-{max(blocks)})")
        if reading.gas_used is None:
            if launcher is None:
                reading.gas_source = (f"no createToken transaction in the last {cfg.sample_blocks} blocks, and no "
                                      f"wallet to estimate one from (fees.estimate_from.{name})")
            else:
                request = {"from": launcher, "to": factory, "data": SAMPLE_LAUNCH,
                           "value": hex(max(reading.factory_fee_wei or 0, reading.quoted_fee_wei or 0))}
                estimate = await evm_logs.call(client, url, "eth_estimateGas", [request, hex(head)], timeout)
                reading.gas_used = int(estimate, 16)
                reading.gas_source = (f"estimated: eth_estimateGas of createToken from {launcher} (no createToken "
                                      f"transaction in the last {cfg.sample_blocks} blocks)")
        return reading

    endpoints = list(zip(chain.endpoint_names(name), chain.rpc_urls, strict=True))
    got = await evm_logs.first_usable(endpoints, attempt, cfg.deadline_s)
    if isinstance(got, list):
        return ChainReading(name, error="not read: " + "; ".join(got))
    endpoint, reading = got
    reading.endpoint = endpoint
    return reading


# ---- judging -----------------------------------------------------------------------------------------------------


@dataclass
class ChainFees:
    """One chain's review: the inputs as read, and what follows from them (None when unknown)."""

    chain: str
    symbol: str
    factory: str
    collector: str | None
    status: Status
    detail: str
    reading: ChainReading
    gas_price_wei: int | None = None
    gas_price_source: str = ""
    price_id: str | None = None
    price_usd: float | None = None
    fee_wei: int | None = None
    gas_cost_wei: int | None = None
    margin_wei: int | None = None
    margin_usd: float | None = None
    margin_ratio: float | None = None
    suggested_fee_wei: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        for k in ("gas_price_wei", "fee_wei", "gas_cost_wei", "margin_wei", "suggested_fee_wei"):
            d[k] = None if d[k] is None else str(d[k])
        for k in ("factory_fee_wei", "quoted_fee_wei"):
            d["reading"][k] = None if d["reading"][k] is None else str(d["reading"][k])
        return d


def round_up(wei: Decimal, step: int) -> int:
    return int((wei / step).to_integral_value(ROUND_CEILING)) * step


def judge(cfg: FeeReview, name: str, chain: Chain, reading: ChainReading, gas: Recommendation | None,
          gas_source: str, price_usd: float | None, price_note: str = "") -> ChainFees:
    """The margin per token and the suggested fee from what was read; pure."""
    out = ChainFees(name, chain.symbol, chain.token_factory or "", chain.fee_collector, Status.unknown, "", reading,
                    gas_price_wei=gas.max_fee_wei if gas else None, gas_price_source=gas_source,
                    price_id=cfg.price_ids.get(name), price_usd=price_usd)
    missing = []
    if reading.error:
        missing.append(reading.error)
    elif reading.gas_used is None:
        missing.append(f"gas per creation unknown: {reading.gas_source}")
    if gas is None:
        missing.append(f"no gas price: {gas_source}")
    if price_usd is None:
        missing.append(f"no {chain.symbol} price: {price_note or 'not asked'}")
    if missing:
        out.detail = "; ".join(missing)
        return out
    if price_note:  # a price that is there but not today's (a rate-limited API's cached answer)
        out.notes.append(f"{chain.symbol} price: {price_note}")
    assert gas is not None and price_usd is not None and reading.gas_used is not None
    assert reading.factory_fee_wei is not None
    minimum = reading.factory_fee_wei
    fee = max(reading.quoted_fee_wei if reading.quoted_fee_wei is not None else minimum, minimum)
    price = Decimal(str(price_usd))
    cost = reading.gas_used * gas.max_fee_wei
    margin = fee - cost
    out.fee_wei, out.gas_cost_wei, out.margin_wei = fee, cost, margin
    out.margin_usd = float(Decimal(margin) / WEI * price)
    out.margin_ratio = float(Decimal(margin) / Decimal(fee)) if fee > 0 else None
    by_usd = Decimal(cost) + Decimal(str(cfg.target_margin_usd)) / price * WEI
    by_ratio = Decimal(cost) / (1 - Decimal(str(cfg.target_margin_ratio)))
    suggested = round_up(max(by_usd, by_ratio), cfg.fee_step_wei)
    if suggested < minimum:
        out.notes.append(f"the TokenFactory's minimum of {amount_text(minimum)} {chain.symbol} is above the "
                         f"{amount_text(suggested)} the targets need; only a new factory could charge less")
        suggested = minimum
    out.suggested_fee_wei = suggested
    if reading.quoted_fee_wei is not None and reading.quoted_fee_wei < minimum:
        out.notes.append(f"the quoted fee {amount_text(reading.quoted_fee_wei)} is below the factory's minimum "
                         f"{amount_text(minimum)}: launches paying the quote revert (FeeTooLow)")
    below = (out.margin_usd < cfg.target_margin_usd
             or (out.margin_ratio is not None and out.margin_ratio < cfg.target_margin_ratio))
    out.status = Status.fail if margin < 0 else (Status.warn if below else Status.ok)
    verdict = {Status.fail: "LOSES money on every token", Status.warn: "below target",
               Status.ok: "meets the targets"}[out.status]
    out.detail = (f"margin {amount_text(margin) if margin >= 0 else '-' + amount_text(-margin)} {chain.symbol} "
                  f"(${out.margin_usd:,.2f}) per token: {verdict}; suggested fee {amount_text(suggested)} "
                  f"{chain.symbol}")
    return out


# ---- changing the quoted fee ---------------------------------------------------------------------------------------


@dataclass
class FeeChange:
    """One chain's change, as shown for approval. `problem` set: it cannot be made."""

    chain: str
    symbol: str
    contract: str
    current_wei: int | None
    new_wei: int
    problem: str | None = None

    @property
    def new(self) -> str:
        return f"{amount_text(self.new_wei)} {self.symbol}"

    @property
    def needed(self) -> bool:
        return self.problem is None and self.current_wei != self.new_wei

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "current_wei": None if self.current_wei is None else str(self.current_wei),
                "new_wei": str(self.new_wei), "new": self.new}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeeChange:
        current = d.get("current_wei")
        return cls(d["chain"], d["symbol"], d["contract"], None if current is None else int(current),
                   int(d["new_wei"]), d.get("problem"))


def chain_rpc(cfg: FeeReview, name: str, chain: Chain, client: httpx.AsyncClient) -> evm_tx.ChainRpc:
    assert chain.chain_id is not None
    return evm_tx.ChainRpc(name, chain.chain_id, list(zip(chain.endpoint_names(name), chain.rpc_urls, strict=True)),
                           client, timeout_s=cfg.rpc_timeout_s, max_head_age_s=chain.max_head_age_s)


async def plan_change(cfg: FeeReview, name: str, chain: Chain, client: httpx.AsyncClient, new_wei: int,
                      minimum_wei: int | None) -> FeeChange:
    """The quoted fee now, and a simulation of `setFee(new)` from the fee-setter's address. No key is read."""
    contract = chain.fee_collector or ""
    change = FeeChange(name, chain.symbol, contract, None, new_wei)
    if not contract:
        change.problem = "no fee_collector configured: there is no quoted fee to change"
        return change
    if new_wei <= 0:
        change.problem = f"a fee of {amount_text(new_wei)} {chain.symbol} would give launches away"
        return change
    if minimum_wei is not None and new_wei < minimum_wei:
        change.problem = (f"{change.new} is below the TokenFactory's minimum of {amount_text(minimum_wei)} "
                          f"{chain.symbol}: launches paying it would revert")
        return change
    if cfg.fee_setter_address is None:
        change.problem = "no fee setter configured (fees.fee_setter_key and fees.fee_setter_address)"
        return change
    rpc = chain_rpc(cfg, name, chain, client)
    try:
        await rpc.connect()
        change.current_wei = _uint(await evm_tx.eth_call(rpc, contract, PLATFORM_FEE), "platformFee()")
        if change.current_wei != new_wei:
            await evm_tx.eth_call(rpc, contract, set_fee_data(new_wei), sender=cfg.fee_setter_address)
    except evm_tx.Reverted as exc:
        change.problem = f"setFee() from {cfg.fee_setter_address} would revert: {exc.reason}"
    except _EXPECTED as exc:
        change.problem = _failure(exc)
    return change


def approval_problems(changes: Sequence[FeeChange], typed: Mapping[str, str], approved: bool) -> list[str]:
    """Why an approval does not count: not ticked, or a new fee not retyped exactly."""
    return retyped_problems(((c.chain, c.symbol, c.new_wei, "the new fee") for c in changes), typed, approved)


Outcome = Literal["set", "already-set", "failed"]


@dataclass
class FeeOutcome:
    chain: str
    contract: str
    outcome: Outcome
    detail: str
    new_wei: int
    verified: bool = False
    verification: str = "not verified"
    tx_hash: str | None = None
    block: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verified and self.outcome != "failed"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "new_wei": str(self.new_wei), "ok": self.ok}


def journal_key(environment: str, chain: str, contract: str) -> str:
    return f"{environment}:set-fee:{chain}:{contract.lower()}"


async def set_fee(
    cfg: FeeReview,
    gas: GasStrategy,
    change: FeeChange,
    chain: Chain,
    client: httpx.AsyncClient,
    key: SecretStr,
    journal: evm_tx.Journal,
    *,
    environment: str,
    preset: evm_tx.Fees | None = None,
    on_event: evm_tx.Event = lambda _: None,
) -> FeeOutcome:
    """Set the quoted fee to exactly the approved value, once: a quote already at it is left alone
    (a re-run sends nothing), a transaction from an interrupted run is waited for, never repeated;
    then `platformFee()` is read back at the block that mined it."""
    out = FeeOutcome(change.chain, change.contract, "failed", "", change.new_wei)
    try:
        if change.problem:
            raise evm_tx.TxError(change.problem)
        setter = evm_tx.address_of(key)
        if cfg.fee_setter_address is None or setter.lower() != cfg.fee_setter_address.lower():
            raise evm_tx.TxError(f"the fee-setter key (fees.fee_setter_key) belongs to {setter}, not to "
                                 f"fees.fee_setter_address {cfg.fee_setter_address}")
        rpc = chain_rpc(cfg, change.chain, chain, client)
        await rpc.connect()
        data = set_fee_data(change.new_wei)
        key_name = journal_key(environment, change.chain, change.contract)
        entry = await journal.get(key_name)
        state = await evm_tx.account_state(rpc, setter)
        plan = evm_tx.plan_nonce(state.latest_nonce, state.pending_nonce, entry, to=change.contract, data=data)
        current = _uint(await evm_tx.eth_call(rpc, change.contract, PLATFORM_FEE), "platformFee()")
        if current == change.new_wei and plan.entry is None:
            out.outcome, out.verified = "already-set", True
            out.detail = f"the quoted fee is already {change.new}; nothing sent"
            out.verification = f"platformFee() is {amount_text(current)}"
            return out
        limit = await evm_tx.estimate_gas(rpc, setter, change.contract, data) if plan.entry is None else None
        landed = await evm_tx.land(rpc, key, plan, sender=setter, to=change.contract, data=data, gas=limit,
                                   policy=cfg.tx_policy(gas, change.chain, preset), journal=journal,
                                   journal_key=key_name, what="setFee()", on_event=on_event)
        out.notes.extend(landed.notes)
        out.tx_hash, out.block = landed.hash, landed.block
        if landed.succeeded is not True or landed.block is None:
            raise evm_tx.TxError(f"setFee() transaction {landed.hash or '(unknown)'} did not succeed "
                                 f"(block {landed.block})")
        after = _uint(await evm_tx.eth_call(rpc, change.contract, PLATFORM_FEE, block=hex(landed.block)),
                      "platformFee()")
        out.outcome = "set"
        out.detail = (f"quoted fee {amount_text(change.current_wei) if change.current_wei is not None else '?'} -> "
                      f"{change.new} by tx {landed.hash} in block {landed.block}")
        out.verified = after == change.new_wei
        out.verification = (f"platformFee() is {amount_text(after)} {change.symbol} in block {landed.block}"
                            + ("" if out.verified else f" (NOT the approved {change.new})"))
    except evm_tx.Reverted as exc:
        out.detail = f"setFee() would revert: {exc.reason}"
    except _EXPECTED as exc:
        out.detail = _failure(exc)
    return out


# ---- the report ----------------------------------------------------------------------------------------------------


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _native(wei: int | None, symbol: str) -> str:
    if wei is None:
        return "?"
    return f"{'-' if wei < 0 else ''}{amount_text(abs(wei))} {symbol}"


@dataclass
class FeeReport:
    environment: str
    started_at: float
    finished_at: float
    chains: list[ChainFees]
    cfg_targets: str
    change_requested: bool = False
    changes: list[FeeChange] = field(default_factory=list)
    approval: str = "not asked: report only"
    approved_by: str | None = None
    outcomes: list[FeeOutcome] = field(default_factory=list)

    @property
    def status(self) -> Status:
        order = [Status.ok, Status.warn, Status.unknown, Status.fail]
        return max((c.status for c in self.chains), key=order.index, default=Status.unknown)

    @property
    def changed_ok(self) -> bool:
        """Every change that was approved and made was verified."""
        return all(o.ok for o in self.outcomes)

    def rows(self) -> list[dict[str, Any]]:
        return [{
            "chain": c.chain, "status": c.status.value, "fee": _native(c.fee_wei, c.symbol),
            "gas per token": c.reading.gas_used, "gas price (gwei)": None if c.gas_price_wei is None
            else float(Decimal(c.gas_price_wei) / evm_tx.GWEI),
            "gas cost": _native(c.gas_cost_wei, c.symbol), "price (USD)": c.price_usd,
            "margin": _native(c.margin_wei, c.symbol),
            "margin (USD)": None if c.margin_usd is None else round(c.margin_usd, 2),
            "margin share": None if c.margin_ratio is None else round(c.margin_ratio, 4),
            "suggested fee": _native(c.suggested_fee_wei, c.symbol), "detail": c.detail,
        } for c in self.chains]

    def markdown(self) -> str:
        lines = [f"## Fee Adjustment review: {self.status.value.upper()}", "",
                 f"- Environment: {self.environment}", f"- Reviewed: {_utc(self.started_at)}",
                 f"- Targets: {self.cfg_targets}", "",
                 "### Margin per token created", "",
                 "| Chain | Fee per token | Gas per token | Gas price | Gas cost | Price | Margin | Margin share "
                 "| Suggested fee | Status |", "|---|---|---|---|---|---|---|---|---|---|"]
        for c in self.chains:
            price = f"${c.price_usd:,.2f}" if c.price_usd is not None else "?"
            gas_price = evm_tx.gwei(c.gas_price_wei) if c.gas_price_wei is not None else "?"
            margin_usd = f" (${c.margin_usd:,.2f})" if c.margin_usd is not None else ""
            share = f"{c.margin_ratio:.1%}" if c.margin_ratio is not None else "?"
            lines.append(f"| {c.chain} | {_native(c.fee_wei, c.symbol)} | {c.reading.gas_used or '?'} | {gas_price} "
                         f"| {_native(c.gas_cost_wei, c.symbol)} | {price} | {_native(c.margin_wei, c.symbol)}"
                         f"{margin_usd} | {share} | {_native(c.suggested_fee_wei, c.symbol)} | "
                         f"{c.status.value.upper()} |")
        lines += ["", "### Where the numbers come from", ""]
        for c in self.chains:
            r = c.reading
            lines.append(f"- {c.chain}: " + "; ".join(x for x in [
                f"TokenFactory `{c.factory}` minimum {_native(r.factory_fee_wei, c.symbol)}",
                f"FeeCollector `{c.collector}` quotes {_native(r.quoted_fee_wei, c.symbol)}" if c.collector else "",
                f"read at block {r.block} on {r.endpoint}" if r.block is not None else "",
                f"gas {r.gas_source}" if r.gas_source else "",
                f"gas price: {c.gas_price_source}" if c.gas_price_source else "",
                f"price: CoinGecko {c.price_id}" if c.price_id else "",
                *c.notes, c.detail if c.status is Status.unknown else "",
            ] if x))
        if self.change_requested:
            lines += ["", "### Change the quoted fee (FeeCollector.setFee)", "", f"- Approval: {self.approval}"
                      + (f" (by {self.approved_by})" if self.approved_by else ""), "",
                      "| Chain | FeeCollector | Quoted now | New | Outcome | Verified |", "|---|---|---|---|---|---|"]
            done = {o.chain: o for o in self.outcomes}
            for ch in self.changes:
                o = done.get(ch.chain)
                outcome = ch.problem or (o.detail if o else ("already at the new fee" if not ch.needed
                                                             else "not changed"))
                lines.append(f"| {ch.chain} | `{ch.contract}` | {_native(ch.current_wei, ch.symbol)} | {ch.new} | "
                             f"{outcome} | {o.verification if o else '-'} |")
            notes = [f"- {o.chain}: {n}" for o in self.outcomes for n in o.notes]
            if notes:
                lines += ["", "#### Transactions", "", *notes]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "status": self.status.value,
                "started_at": _utc(self.started_at), "finished_at": _utc(self.finished_at),
                "chains": [c.to_dict() for c in self.chains], "change_requested": self.change_requested,
                "changes": [c.to_dict() for c in self.changes], "approval": self.approval,
                "approved_by": self.approved_by, "outcomes": [o.to_dict() for o in self.outcomes],
                "markdown": self.markdown()}


def targets_text(cfg: FeeReview) -> str:
    return (f"margin at least ${cfg.target_margin_usd:,.2f} and {cfg.target_margin_ratio:.0%} of the fee per token; "
            f"suggestions rounded up to {cfg.fee_step:g}")


def now() -> float:
    return time.time()


def check_results(report: FeeReport) -> list[CheckResult]:
    """The review as checks, for the run's alert: a chain losing money per token, or unknown."""
    return [CheckResult(
        name=f"fees-{c.chain}", item="Fee Adjustment", status=c.status, observed=c.detail,
        expected="a margin per token at the targets", detail="; ".join(c.notes), severity="P2", target=c.chain,
    ) for c in report.chains]
