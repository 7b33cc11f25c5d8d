"""Contract Maintenance 1, "Gas Price Optimization": recommended EIP-1559 fees per EVM chain.

The runbook fixes `maxFeePerGas` at 50 gwei and `maxPriorityFeePerGas` at 2 gwei. Instead, each
chain's own fee market decides, from one `eth_feeHistory(blocks, "latest", percentiles)` answer
(shape: shared/vendors/ethereum-rpc.md, eth_feeHistory):

- the tip (`maxPriorityFeePerGas`) is the median, over the window's non-empty blocks, of the
  priority fee paid at `priority_percentile`; never below `min_priority_fee_gwei` (an empty block
  reports a zero tip, which says nothing about what a busy block asks);
- the fee cap (`maxFeePerGas`) is the next block's base fee times a headroom multiplier, plus the
  tip. The multiplier follows the base fee's trend over the window: at the observed per-block rise
  (no faster than EIP-1559's 12.5% per block) for `headroom_blocks` blocks, and never less than
  `min_base_fee_multiplier` even when the base fee is flat or falling;
- the cap from configuration bounds the fee cap. A chain whose next base fee is already at or
  above its cap gets no recommendation: nothing within the cap would be mined.

A chain that cannot be read is `unknown` with the reason, and nothing is stored for it. What is
stored (a Prefect Variable `tfops-gas-<environment>-<chain>`, written by the task layer) is
`Recommendation.to_variable()`: the values in wei as decimal strings (and in gwei for people), when
they were computed, and the block range they come from. The platform reads the same variable;
the emergency transactions use it while it is fresh (`max_age_minutes`) and within their own cap.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Any

import httpx
from pydantic import Field, model_validator

from runbook.checks import CheckResult, Status
from runbook.clients import evm_logs
from runbook.clients.evm_tx import GWEI, Fees, gwei
from runbook.config_types import Chain, ChainKind, Name, Strict

MAX_RISE_PER_BLOCK = 1.125  # EIP-1559: a full block raises the next base fee by at most 1/8

Gwei = Annotated[float, Field(gt=0)]


class GasStrategy(Strict):
    """The `[gas]` section."""

    max_fee_gwei: Gwei = Field(description="cap on the recommended maxFeePerGas, every chain")
    chain_max_fee_gwei: dict[Name, Gwei] = Field(
        default_factory=dict, description="cap on maxFeePerGas per chain, instead of max_fee_gwei")
    blocks: Annotated[int, Field(ge=1, le=1024)] = Field(default=20, description="recent blocks of fee history")
    reward_percentiles: Annotated[list[Annotated[float, Field(ge=0, le=100)]], Field(min_length=1, max_length=10)] = (
        Field(default_factory=lambda: [10.0, 50.0, 90.0], description="priority-fee percentiles asked for, increasing"))
    priority_percentile: Annotated[float, Field(ge=0, le=100)] = Field(
        default=50, description="which of reward_percentiles sets the recommended tip")
    min_priority_fee_gwei: Annotated[float, Field(ge=0)] = 0.1
    headroom_blocks: Annotated[int, Field(ge=0, le=50)] = Field(
        default=6, description="blocks of base-fee rise, at the observed trend, the max fee must survive")
    min_base_fee_multiplier: Annotated[float, Field(ge=1, le=10)] = Field(
        default=1.25, description="the max fee covers at least this multiple of the next base fee")
    max_age_minutes: Annotated[float, Field(gt=0, le=10_080)] = Field(
        default=1500, description="a stored recommendation older than this is not used by transactions")
    rpc_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10

    @model_validator(mode="after")
    def _consistent(self) -> GasStrategy:
        p = self.reward_percentiles
        if any(b <= a for a, b in zip(p, p[1:], strict=False)):
            raise ValueError("reward_percentiles must be strictly increasing")
        if self.priority_percentile not in p:
            raise ValueError(f"priority_percentile {self.priority_percentile:g} is not one of reward_percentiles "
                             f"{[float(x) for x in p]}")
        for chain, cap in {"(every chain)": self.max_fee_gwei, **self.chain_max_fee_gwei}.items():
            if self.min_priority_fee_gwei >= cap:
                raise ValueError(f"min_priority_fee_gwei ({self.min_priority_fee_gwei:g}) must be below the fee cap "
                                 f"of {chain} ({cap:g} gwei)")
        return self

    def problems_with(self, chains: Mapping[str, Chain]) -> list[str]:
        problems = []
        for name in self.chain_max_fee_gwei:
            chain = chains.get(name)
            if chain is None:
                problems.append(f"gas.chain_max_fee_gwei.{name}: unknown chain")
            elif chain.kind is not ChainKind.evm:
                problems.append(f"gas.chain_max_fee_gwei.{name}: not an EVM chain")
        return problems

    def cap_wei(self, chain: str) -> int:
        return to_wei_gwei(self.chain_max_fee_gwei.get(chain, self.max_fee_gwei))

    @property
    def min_priority_wei(self) -> int:
        return to_wei_gwei(self.min_priority_fee_gwei)

    @property
    def max_age_s(self) -> float:
        return self.max_age_minutes * 60


def to_wei_gwei(value: float) -> int:
    return int(Decimal(str(value)) * GWEI)


def evm_chains(chains: Mapping[str, Chain]) -> list[str]:
    """Every EVM chain, in the environment file's order."""
    return [name for name, c in chains.items() if c.kind is ChainKind.evm]


def variable_name(environment: str, chain: str) -> str:
    """Where the recommendation of `chain` is stored (a Prefect Variable name)."""
    return f"tfops-gas-{environment}-{chain}"


class GasDataError(ValueError):
    """An eth_feeHistory answer without the documented shape; the message names the field."""


@dataclass(frozen=True)
class FeeHistory:
    oldest_block: int
    base_fees: list[int]  # one more than the blocks: the last is the next block's
    gas_used_ratio: list[float]
    rewards: list[list[int]]  # per block, one per percentile asked


def _hex(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise GasDataError(f"eth_feeHistory: {what} is not a hex quantity: {str(value)[:40]!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise GasDataError(f"eth_feeHistory: {what} is not a hex quantity: {value[:40]!r}") from None


def parse_fee_history(answer: Any, percentiles: Sequence[float]) -> FeeHistory:
    """The answer of `eth_feeHistory(n, "latest", percentiles)`; GasDataError when it is not the
    documented shape. `oldestblock` is accepted too: the spec's own example spells it so."""
    if not isinstance(answer, dict):
        raise GasDataError("eth_feeHistory: the answer is not an object")
    oldest = answer.get("oldestBlock", answer.get("oldestblock"))
    bases, ratios = answer.get("baseFeePerGas"), answer.get("gasUsedRatio")
    if not isinstance(bases, list) or not isinstance(ratios, list):
        raise GasDataError("eth_feeHistory: no baseFeePerGas / gasUsedRatio lists (does the chain support EIP-1559?)")
    if not ratios:
        raise GasDataError("eth_feeHistory: no blocks in the answer")
    if len(bases) != len(ratios) + 1:
        raise GasDataError(f"eth_feeHistory: {len(bases)} base fees for {len(ratios)} blocks (expected one more)")
    rewards = answer.get("reward")
    if not isinstance(rewards, list) or len(rewards) != len(ratios):
        raise GasDataError(f"eth_feeHistory: reward has {len(rewards) if isinstance(rewards, list) else 'no'} "
                           f"entries for {len(ratios)} blocks")
    parsed_rewards = []
    for i, row in enumerate(rewards):
        if not isinstance(row, list) or len(row) != len(percentiles):
            raise GasDataError(f"eth_feeHistory: reward[{i}] does not have one value per percentile")
        parsed_rewards.append([_hex(v, f"reward[{i}]") for v in row])
    for i, r in enumerate(ratios):
        if isinstance(r, bool) or not isinstance(r, int | float) or not 0 <= r <= 1:
            raise GasDataError(f"eth_feeHistory: gasUsedRatio[{i}] is not a number in [0, 1]: {r!r}")
    return FeeHistory(_hex(oldest, "oldestBlock"), [_hex(b, "baseFeePerGas") for b in bases],
                      [float(r) for r in ratios], parsed_rewards)


@dataclass(frozen=True)
class Recommendation:
    """The fees to use on one chain, how they were reached, and from which blocks."""

    chain: str
    chain_id: int
    max_fee_wei: int
    priority_wei: int
    next_base_fee_wei: int
    base_fee_trend: float  # per block, over the window: 1.02 = rising 2% a block
    multiplier: float
    from_block: int
    to_block: int
    tips_wei: dict[str, int]  # percentile -> median tip over the non-empty blocks
    busy_blocks: int
    cap_wei: int
    capped: bool
    computed_at: float
    endpoint: str = ""

    @property
    def fees(self) -> Fees:
        return Fees(max_fee=self.max_fee_wei, priority=self.priority_wei)

    def age_s(self, now: float) -> float:
        return now - self.computed_at

    def to_variable(self) -> dict[str, Any]:
        """The stored value. Wei are decimal strings: a JavaScript reader would round large JSON numbers."""
        return {
            "chain": self.chain, "chain_id": self.chain_id,
            "maxFeePerGas": str(self.max_fee_wei), "maxPriorityFeePerGas": str(self.priority_wei),
            "max_fee_gwei": float(Decimal(self.max_fee_wei) / GWEI),
            "priority_fee_gwei": float(Decimal(self.priority_wei) / GWEI),
            "next_base_fee": str(self.next_base_fee_wei), "base_fee_trend": self.base_fee_trend,
            "multiplier": self.multiplier, "from_block": self.from_block, "to_block": self.to_block,
            "tips": {p: str(v) for p, v in self.tips_wei.items()}, "busy_blocks": self.busy_blocks,
            "cap": str(self.cap_wei), "capped": self.capped,
            "computed_at": datetime.fromtimestamp(self.computed_at, UTC).isoformat(),
            "endpoint": self.endpoint,
        }

    @classmethod
    def from_variable(cls, value: Mapping[str, Any]) -> Recommendation:
        """Raises KeyError / TypeError / ValueError when the value is not what to_variable wrote."""
        return cls(
            chain=str(value["chain"]), chain_id=int(value["chain_id"]), max_fee_wei=int(value["maxFeePerGas"]),
            priority_wei=int(value["maxPriorityFeePerGas"]), next_base_fee_wei=int(value["next_base_fee"]),
            base_fee_trend=float(value["base_fee_trend"]), multiplier=float(value["multiplier"]),
            from_block=int(value["from_block"]), to_block=int(value["to_block"]),
            tips_wei={str(k): int(v) for k, v in dict(value["tips"]).items()}, busy_blocks=int(value["busy_blocks"]),
            cap_wei=int(value["cap"]), capped=bool(value["capped"]),
            computed_at=datetime.fromisoformat(str(value["computed_at"])).timestamp(),
            endpoint=str(value.get("endpoint", "")),
        )


def percentile_key(p: float) -> str:
    return f"{p:g}"


class AboveCap(ValueError):
    """The next base fee is at or above the cap: no transaction within the cap can be mined."""


def recommend(chain: str, chain_id: int, history: FeeHistory, cfg: GasStrategy, *, now: float,
              endpoint: str = "") -> Recommendation:
    """The recommendation from a parsed fee history (see the module's note for the rules)."""
    busy = [i for i, r in enumerate(history.gas_used_ratio) if r > 0]
    tips = {}
    for j, p in enumerate(cfg.reward_percentiles):
        values = [history.rewards[i][j] for i in busy]
        tips[percentile_key(p)] = int(statistics.median_low(values)) if values else 0
    priority = max(tips[percentile_key(cfg.priority_percentile)], cfg.min_priority_wei)
    first, next_base = history.base_fees[0], history.base_fees[-1]
    blocks = len(history.base_fees) - 1
    per_block = math.pow(next_base / first, 1 / blocks) if first > 0 and next_base > 0 else 1.0
    rise = min(max(per_block, 1.0), MAX_RISE_PER_BLOCK)
    # rounded, and used as rounded, so that anyone can recompute the max fee from the stored values
    multiplier = Decimal(str(round(max(cfg.min_base_fee_multiplier, rise ** cfg.headroom_blocks), 6)))
    cap = cfg.cap_wei(chain)
    if next_base >= cap:
        raise AboveCap(f"the next block's base fee is {gwei(next_base)}, at or above the cap of {gwei(cap)}: no "
                       f"recommendation within the cap would be mined")
    wanted = int((Decimal(next_base) * multiplier).to_integral_value(ROUND_CEILING)) + priority
    max_fee = min(wanted, cap)
    return Recommendation(
        chain=chain, chain_id=chain_id, max_fee_wei=max_fee, priority_wei=min(priority, max_fee),
        next_base_fee_wei=next_base, base_fee_trend=round(per_block, 6), multiplier=float(multiplier),
        from_block=history.oldest_block, to_block=history.oldest_block + len(history.gas_used_ratio) - 1,
        tips_wei=tips, busy_blocks=len(busy), cap_wei=cap, capped=wanted > cap, computed_at=now, endpoint=endpoint,
    )


def usable(value: Any, *, chain_id: int, now: float, max_age_s: float) -> tuple[Recommendation | None, str]:
    """A stored recommendation, if it can be used now: readable, for this chain, not older than
    `max_age_s`. Otherwise None and why not (the caller falls back to live fee history)."""
    if value is None:
        return None, "no stored gas recommendation"
    if not isinstance(value, Mapping):
        return None, "the stored gas recommendation is not an object"
    try:
        rec = Recommendation.from_variable(value)
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"the stored gas recommendation is unreadable ({type(exc).__name__}: {exc})"
    if rec.chain_id != chain_id:
        return None, f"the stored gas recommendation is for chain id {rec.chain_id}, not {chain_id}"
    age = rec.age_s(now)
    if age > max_age_s or age < -60:
        return None, f"the stored gas recommendation is {age / 60:.0f} min old (limit {max_age_s / 60:g} min)"
    return rec, f"stored gas recommendation of {_utc(rec.computed_at)} (blocks {rec.from_block}-{rec.to_block})"


# ---- reading the chains ------------------------------------------------------------------------------------------


@dataclass
class ChainGas:
    """One chain's outcome: a recommendation (ok, or warn when capped), fail (above the cap), or
    unknown (the chain could not be read)."""

    chain: str
    status: Status
    detail: str
    recommendation: Recommendation | None = None
    stored: str = ""  # what storing it showed (set by the task layer)
    tried: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "status": self.status.value, "detail": self.detail, "stored": self.stored,
                "recommendation": self.recommendation.to_variable() if self.recommendation else None}


async def read_chain(cfg: GasStrategy, name: str, chain: Chain, client: httpx.AsyncClient,
                     now: float | None = None) -> ChainGas:
    """Fee history from the first endpoint on the right chain with a fresh head, and the
    recommendation from it. Never raises for the chain's faults: they are the `unknown` reason."""
    if chain.kind is not ChainKind.evm or chain.chain_id is None:
        return ChainGas(name, Status.unknown, "not an EVM chain")
    chain_id = chain.chain_id
    percentiles = [float(p) for p in cfg.reward_percentiles]

    async def attempt(url: str) -> Any:
        await evm_logs.fresh_head(client, url, chain_id=chain_id, max_head_age_s=chain.max_head_age_s,
                                  timeout_s=cfg.rpc_timeout_s)
        answer = await evm_logs.call(client, url, "eth_feeHistory", [hex(cfg.blocks), "latest", percentiles],
                                     cfg.rpc_timeout_s)
        return parse_fee_history(answer, percentiles)

    endpoints = list(zip(chain.endpoint_names(name), chain.rpc_urls, strict=True))
    got = await evm_logs.first_usable(endpoints, attempt, 2 * cfg.rpc_timeout_s)
    if isinstance(got, list):
        return ChainGas(name, Status.unknown, "fee history not read: " + "; ".join(got), tried=got)
    endpoint, history = got
    try:
        rec = recommend(name, chain_id, history, cfg, now=time.time() if now is None else now, endpoint=endpoint)
    except AboveCap as exc:
        return ChainGas(name, Status.fail, str(exc))
    status = Status.warn if rec.capped else Status.ok
    return ChainGas(name, status, describe(rec), rec)


def describe(rec: Recommendation) -> str:
    trend = (rec.base_fee_trend - 1) * 100
    direction = "flat" if abs(trend) < 0.05 else (f"rising {trend:.1f}%" if trend > 0 else f"falling {-trend:.1f}%")
    text = (f"maxFeePerGas {gwei(rec.max_fee_wei)}, maxPriorityFeePerGas {gwei(rec.priority_wei)} "
            f"(next base fee {gwei(rec.next_base_fee_wei)}, {direction} a block, x{rec.multiplier:g}; "
            f"blocks {rec.from_block}-{rec.to_block}, {rec.busy_blocks} with transactions)")
    if rec.capped:
        text += f"; CAPPED at {gwei(rec.cap_wei)}"
    return text


# ---- the report ----------------------------------------------------------------------------------------------------


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class GasReport:
    environment: str
    started_at: float
    finished_at: float
    chains: list[ChainGas]
    percentiles: list[float]

    @property
    def status(self) -> Status:
        order = [Status.ok, Status.warn, Status.unknown, Status.fail]
        return max((c.status for c in self.chains), key=order.index, default=Status.unknown)

    @property
    def passed(self) -> bool:
        return bool(self.chains) and all(c.status.passed and c.stored.startswith("stored") for c in self.chains)

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for c in self.chains:
            r = c.recommendation
            rows.append({
                "chain": c.chain, "status": c.status.value,
                "maxFeePerGas (gwei)": _g(r.max_fee_wei) if r else None,
                "maxPriorityFeePerGas (gwei)": _g(r.priority_wei) if r else None,
                "next base fee (gwei)": _g(r.next_base_fee_wei) if r else None,
                "blocks": f"{r.from_block}-{r.to_block}" if r else None,
                "capped": r.capped if r else None, "stored": c.stored, "detail": c.detail,
            })
        return rows

    def markdown(self) -> str:
        lines = [f"## Gas Price Optimization: {self.status.value.upper()}", "",
                 f"- Environment: {self.environment}", f"- Computed: {_utc(self.started_at)}",
                 "- Tip: the median over recent non-empty blocks of the priority fee paid at the configured "
                 "percentile; max fee: the next base fee times the trend's headroom, plus the tip, capped.",
                 "",
                 "| Chain | Status | maxFeePerGas | maxPriorityFeePerGas | Next base fee | Trend | Blocks | Stored |",
                 "|---|---|---|---|---|---|---|---|"]
        for c in self.chains:
            r = c.recommendation
            if r is None:
                lines.append(f"| {c.chain} | {c.status.value.upper()} | - | - | - | - | - | {c.stored or 'nothing'}: "
                             f"{c.detail} |")
                continue
            cap = f" (capped at {gwei(r.cap_wei)})" if r.capped else ""
            lines.append(f"| {c.chain} | {c.status.value.upper()} | {gwei(r.max_fee_wei)}{cap} | {gwei(r.priority_wei)}"
                         f" | {gwei(r.next_base_fee_wei)} | x{r.base_fee_trend:g}/block | {r.from_block}-{r.to_block}"
                         f" | {c.stored} |")
        tips = [c for c in self.chains if c.recommendation]
        if tips:
            lines += ["", "### Priority fees paid, by percentile (median over non-empty blocks)", "",
                      "| Chain | " + " | ".join(f"p{percentile_key(p)}" for p in self.percentiles) + " |",
                      "|---|" + "---|" * len(self.percentiles)]
            for c in tips:
                assert c.recommendation is not None
                t = c.recommendation.tips_wei
                lines.append(f"| {c.chain} | " + " | ".join(gwei(t.get(percentile_key(p), 0))
                                                             for p in self.percentiles) + " |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "status": self.status.value, "passed": self.passed,
                "started_at": _utc(self.started_at), "finished_at": _utc(self.finished_at),
                "chains": [c.to_dict() for c in self.chains], "markdown": self.markdown()}


def _g(wei: int) -> float:
    return float(Decimal(wei) / GWEI)


def check_results(report: GasReport) -> list[CheckResult]:
    """The report as checks, for the run's alert: a chain without a stored recommendation is news."""
    return [CheckResult(
        name=f"gas-{c.chain}", item="Gas Price Optimization", status=c.status,
        observed=(describe(c.recommendation) if c.recommendation else c.detail) + f"; {c.stored}",
        expected="a fresh recommendation within the cap, stored", detail=c.detail, severity="P2", target=c.chain,
    ) for c in report.chains]
