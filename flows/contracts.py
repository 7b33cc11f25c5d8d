"""Contract Maintenance 1 (Gas Price Optimization) and 2 (Fee Adjustment) as flows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import flow, get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from pydantic import Field, create_model

from flows.environment import load_settings
from flows.publish import publish
from runbook.checks import Status
from runbook.procedures import fees, gas
from runbook.procedures.emergency import amount_text, parse_amount
from runbook.procedures.fees import ChainFees, FeeChange, FeeReport, FeeReview
from tasks.alerts import notify
from tasks.contracts import (
    fees_config,
    gas_config,
    plan_fee_change,
    read_prices,
    recommend_gas,
    review_chain,
    set_quoted_fee,
)


class FeeChangeIncomplete(Exception):
    """An approved fee change was not made or not verified; the message says which."""


def _chosen(chains: Sequence[str] | None, every: Sequence[str], what: str) -> list[str]:
    unknown = [c for c in chains or [] if c not in every]
    if unknown:
        raise ValueError(f"chains: {', '.join(unknown)} not among the {what} ({', '.join(every) or 'none'})")
    return list(chains or every)


@flow(name="gas-strategy", description="Runbook: Contract Maintenance 1, Gas Price Optimization.")
async def gas_strategy_flow(env_file: str | None = None, chains: list[str] | None = None,
                            alert: bool = True) -> dict[str, Any]:
    """Recommended maxFeePerGas / maxPriorityFeePerGas per EVM chain from its recent fee history
    (reward percentiles and the base fee's trend), capped by configuration, stored in the Prefect
    Variable `tfops-gas-<environment>-<chain>` for the platform and the emergency transactions.
    A chain that cannot be read is unknown and stores nothing.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        chains: the chains to do (default: every EVM chain).
        alert: send the alert when a chain has no fresh recommendation.
    """
    settings = load_settings(env_file)
    cfg = gas_config(settings)
    names = _chosen(chains, gas.evm_chains(settings.chains), "EVM chains")
    started = time.time()
    task = recommend_gas.with_options(timeout_seconds=8 * cfg.rpc_timeout_s + 30)
    results = list(await asyncio.gather(*(task(settings, c) for c in names)))
    report = gas.GasReport(settings.environment, started, time.time(), results,
                           [float(p) for p in cfg.reward_percentiles])
    await publish("gas-strategy", report.markdown(), report.rows(), f"Gas Price Optimization ({settings.environment})")
    summary = {c.chain: (c.status.value, c.stored) for c in results}
    (get_run_logger().info if report.passed else get_run_logger().warning)("gas strategy: %s", summary)
    out = report.to_dict()
    out["alerts"] = await notify(settings, "gas-strategy", gas.check_results(report)) if alert else []
    return out


# ---- fee review -----------------------------------------------------------------------------------------------------


def _field(chain: str) -> str:
    return "fee_" + chain.replace("-", "_")


def approval_form(changes: Sequence[FeeChange], reviewed: Mapping[str, ChainFees]) -> type[RunInput]:
    """The form the approver fills in the Prefect UI: a tick, a name, and each new fee retyped."""
    fields: dict[str, Any] = {
        "approve": (bool, Field(default=False, description="Tick to send the fee changes listed above")),
        "approver": (str, Field(default="", description="Your name, for the report")),
    }
    for c in changes:
        fields[_field(c.chain)] = (str, Field(default="", title=f"{c.chain}: retype the new fee",
                                              description=f"Type {amount_text(c.new_wei)} to set the quoted fee "
                                                          f"to {c.new}"))
    form = create_model("ApproveFeeChange", __base__=RunInput, **fields)
    lines = ["## Change the quoted launch fee?", "",
             "| Chain | FeeCollector | Quoted now | New fee | Margin now | Gas per token | Price |",
             "|---|---|---|---|---|---|---|"]
    for c in changes:
        r = reviewed.get(c.chain)
        margin = (f"${r.margin_usd:,.2f}" if r and r.margin_usd is not None else "?")
        price = f"${r.price_usd:,.2f}" if r and r.price_usd is not None else "?"
        current = f"{amount_text(c.current_wei)} {c.symbol}" if c.current_wei is not None else "?"
        lines.append(f"| {c.chain} | `{c.contract}` | {current} | **{c.new}** | {margin} | "
                     f"{r.reading.gas_used if r else '?'} | {price} |")
    lines += ["", "Each change is `FeeCollector.setFee(new)`, simulated from the fee setter's address: it succeeds. "
                  "Retype each new fee exactly to approve."]
    return form.with_initial_data(description="\n".join(lines))


async def ask_approval(cfg: FeeReview, changes: Sequence[FeeChange],
                       reviewed: Mapping[str, ChainFees]) -> tuple[bool, Mapping[str, str], str | None]:
    """Pause the flow run until a person answers the form (or `approval_timeout_s` passes)."""
    answer = await apause_flow_run(wait_for_input=approval_form(changes, reviewed), timeout=cfg.approval_timeout_s,
                                   poll_interval=cfg.approval_poll_s, key="approve-fee-change")
    typed = {c.chain: str(getattr(answer, _field(c.chain), "")) for c in changes}
    return bool(getattr(answer, "approve", False)), typed, str(getattr(answer, "approver", "")) or None


def _targets(reviewed: Sequence[ChainFees], new_fees: Mapping[str, str] | None
             ) -> dict[str, tuple[int | None, int | None]]:
    """Per chain: (new fee in wei or None when there is none to set, the factory's minimum)."""
    out: dict[str, tuple[int | None, int | None]] = {}
    for r in reviewed:
        minimum = r.reading.factory_fee_wei
        if new_fees and r.chain in new_fees:
            wei = parse_amount(new_fees[r.chain], r.symbol)
            if wei is None:
                raise ValueError(f"new_fees.{r.chain}: {new_fees[r.chain]!r} is not an amount of {r.symbol}")
            out[r.chain] = (wei, minimum)
        elif new_fees is None:
            out[r.chain] = (r.suggested_fee_wei, minimum)
    return out


@flow(name="fee-review", description="Runbook: Contract Maintenance 2, Fee Adjustment.")
async def fee_review_flow(env_file: str | None = None, change_fee: bool = False,
                          new_fees: dict[str, str] | None = None, chains: list[str] | None = None,
                          alert: bool = True) -> dict[str, Any]:
    """The margin per token created on each chain (the launch fee on chain, the gas a creation
    uses times the recommended max fee, CoinGecko prices) and a suggested fee. Report only, unless
    `change_fee`: then the quoted fee (FeeCollector.setFee) is changed after approval in the Prefect
    UI, where the approver retypes each new fee; then it is read back.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        change_fee: ask for approval to set each chain's quoted fee (default: report only).
        new_fees: the new fee per chain in its native unit, e.g. {"ethereum": "0.012"}, instead of the
            suggestion; only these chains are changed.
        chains: the chains to review (default: every EVM chain with a TokenFactory).
        alert: send the alert when a chain loses money per token or cannot be reviewed.
    """
    settings = load_settings(env_file)
    cfg = fees_config(settings)
    names = _chosen(chains, fees.review_chains(settings.chains), "chains with a TokenFactory")
    if new_fees is not None:
        _chosen(list(new_fees), names, "chains reviewed")
    logger = get_run_logger()
    started = time.time()
    prices, notes = await read_prices(settings, names)
    task = review_chain.with_options(timeout_seconds=2 * cfg.deadline_s + 60)
    reviewed = list(await asyncio.gather(*(task(settings, c, prices.get(c), notes.get(c, "")) for c in names)))
    report = FeeReport(settings.environment, started, started, reviewed, fees.targets_text(cfg),
                       change_requested=change_fee)
    if change_fee:
        targets = {c: t for c, t in _targets(reviewed, new_fees).items() if t[0] is not None}
        for r in reviewed:
            if r.chain not in targets and (new_fees is None or r.chain in new_fees):
                report.changes.append(FeeChange(r.chain, r.symbol, r.collector or "", r.reading.quoted_fee_wei, 0,
                                                problem=f"no suggested fee: {r.detail}"))
        report.changes += await asyncio.gather(*(plan_fee_change(settings, c, w, m)
                                                 for c, (w, m) in targets.items() if w is not None))
        needed = [c for c in report.changes if c.needed]
        if not needed:
            report.approval = "not asked: nothing to change"
        else:
            try:
                approved, typed, report.approved_by = await ask_approval(cfg, needed, {r.chain: r for r in reviewed})
            except FlowPauseTimeout:
                approved, typed = False, {}
                report.approval = f"no answer within {cfg.approval_timeout_s} s; nothing sent"
            else:
                problems = fees.approval_problems(needed, typed, approved)
                report.approval = ("refused: " + "; ".join(problems) + "; nothing sent") if problems else "approved"
                if not problems:
                    send = set_quoted_fee.with_options(timeout_seconds=cfg.tx_timeout_s + 6 * cfg.rpc_timeout_s + 60)
                    report.outcomes = list(await asyncio.gather(*(send(settings, c) for c in needed)))
    report.finished_at = time.time()
    await publish("fee-review", report.markdown(), report.rows(), f"Fee Adjustment review ({settings.environment})")
    (logger.info if report.status in (Status.ok, Status.warn) else logger.warning)(
        "fee review: %s; approval: %s", {c.chain: c.status.value for c in reviewed}, report.approval)
    out = report.to_dict()
    out["alerts"] = await notify(settings, "fee-review", fees.check_results(report)) if alert else []
    if not report.changed_ok:
        failed = [f"{o.chain}: {o.detail} ({o.verification})" for o in report.outcomes if not o.ok]
        raise FeeChangeIncomplete("approved fee change not done or not verified: " + "; ".join(failed))
    return out
