"""Emergency Procedures 1 (Security Breach: emergency shutdown) and 3 (Financial Emergency) as flows."""

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
from runbook.procedures import emergency
from runbook.procedures.emergency import ChainOutcome, Emergency, IncidentReport, ShutdownReport, WithdrawalPlan
from runbook.settings import Settings
from tasks.emergency import (
    broadcast_emergency,
    disable_public_api,
    emergency_config,
    pause_fee_collector,
    plan_withdrawal,
    report_to_team,
    withdraw_to_secure_wallet,
)


class EmergencyIncomplete(Exception):
    """An emergency procedure ended with an effect not done or not verified; the message lists them."""


def _backstop_s(cfg: Emergency) -> float:
    # The client's deadlines bound every step; the task timeout only catches what slips past them.
    return cfg.tx_timeout_s + 6 * cfg.rpc_timeout_s + 60


async def _pause(settings: Settings, cfg: Emergency, chains: Sequence[str], dry_run: bool) -> list[ChainOutcome]:
    task = pause_fee_collector.with_options(timeout_seconds=_backstop_s(cfg))
    return list(await asyncio.gather(*(task(settings, c, dry_run) for c in chains)))


@flow(name="emergency-shutdown",
      description="Runbook: Emergency Procedures 1, Security Breach: pause all contracts, disable the API, notify.")
async def emergency_shutdown_flow(env_file: str | None = None, reason: str = "security breach",
                                  dry_run: bool = False) -> dict[str, Any]:
    """Pause every FeeCollector on every EVM chain at once, switch the backend to maintenance and
    broadcast the emergency message, then read every effect back. Fails unless all are verified.

    Pausing is pre-authorized: there is no approval step. Re-running is safe: paused contracts are
    reported and left alone, and a pause sent by an interrupted run is waited for, not repeated.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        reason: why, for the team's channels and the report (not shown on the public status page).
        dry_run: for drills: simulate each pause and show the fees, change nothing, notify nobody.
    """
    settings = load_settings(env_file)
    cfg = emergency_config(settings)
    started = time.time()
    chains = emergency.fee_collector_chains(settings.chains)
    pauses, maintenance, broadcasts = await asyncio.gather(
        _pause(settings, cfg, chains, dry_run),
        disable_public_api(settings, reason, dry_run),
        broadcast_emergency(settings, reason, dry_run),
    )
    report = ShutdownReport(settings.environment, reason, started, time.time(), pauses, [maintenance, *broadcasts],
                            dry_run)
    await publish("emergency-shutdown", report.markdown(), report.rows(),
                  f"Emergency Shutdown ({settings.environment})")
    logger = get_run_logger()
    (logger.info if report.passed else logger.error)("%s", report.summary())
    if not dry_run:
        await report_to_team(settings, report.summary())
    if not report.passed:
        raise EmergencyIncomplete(report.summary())
    return report.to_dict()


def approval_form(plans: Sequence[WithdrawalPlan], pauses: Sequence[ChainOutcome], reason: str) -> type[RunInput]:
    """The form the approver fills in the Prefect UI: a tick, a name, and each amount retyped."""
    fields: dict[str, Any] = {
        "approve": (bool, Field(default=False, description="Tick to move the funds listed above")),
        "approver": (str, Field(default="", description="Your name, for the incident report")),
    }
    for p in plans:
        fields[_field(p.chain)] = (str, Field(default="", title=f"{p.chain}: retype the amount",
                                              description=f"Type {emergency.amount_text(p.amount_wei)} to move "
                                                          f"{p.amount} to {p.destination}"))
    form = create_model("ApproveFundsMove", __base__=RunInput, **fields)
    lines = [f"## Move funds to the secure wallets? ({reason})", "",
             "| Chain | FeeCollector | Amount | To (from configuration) | Contract paused |", "|---|---|---|---|---|"]
    paused = {p.chain: p.verification for p in pauses}
    lines += [f"| {p.chain} | `{p.contract}` | **{p.amount}** | `{p.destination}` | {paused.get(p.chain, '-')} |"
              for p in plans]
    lines += ["", "Each amount is the collector's whole balance; the withdrawal was simulated from the treasury "
                  "address and succeeds. Retype each amount exactly to approve."]
    return form.with_initial_data(description="\n".join(lines))


def _field(chain: str) -> str:
    return "amount_" + chain.replace("-", "_")


async def ask_approval(cfg: Emergency, plans: Sequence[WithdrawalPlan], pauses: Sequence[ChainOutcome],
                       reason: str) -> tuple[bool, Mapping[str, str], str | None]:
    """Pause the flow run until a person answers the form (or `approval_timeout_s` passes)."""
    answer = await apause_flow_run(wait_for_input=approval_form(plans, pauses, reason),
                                   timeout=cfg.approval_timeout_s, poll_interval=cfg.approval_poll_s,
                                   key="approve-funds-move")
    typed = {p.chain: str(getattr(answer, _field(p.chain), "")) for p in plans}
    return bool(getattr(answer, "approve", False)), typed, str(getattr(answer, "approver", "")) or None


@flow(name="financial-emergency",
      description="Runbook: Emergency Procedures 3, Financial Emergency: pause, then move funds to the secure wallet.")
async def financial_emergency_flow(env_file: str | None = None, reason: str = "funds at risk",
                                   chains: list[str] | None = None) -> dict[str, Any]:
    """Pause the affected FeeCollectors, then, after approval in the Prefect UI, move each one's
    whole balance to the secure wallet configured for its chain, check both balances, and file the
    incident report as an artifact.

    Destinations come only from the environment file (`emergency.secure_wallets`). The treasury
    key is read only after approval, by the withdrawal step.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        reason: why, for the approval form and the incident report.
        chains: the affected chains (default: every EVM chain with a FeeCollector).
    """
    settings = load_settings(env_file)
    cfg = emergency_config(settings)
    logger = get_run_logger()
    started = time.time()
    every = emergency.fee_collector_chains(settings.chains)
    unknown = [c for c in chains or [] if c not in every]
    if unknown:
        raise ValueError(f"chains: {', '.join(unknown)} not among the chains with a FeeCollector ({', '.join(every)})")
    names = chains or every
    pauses = await _pause(settings, cfg, names, False)
    plans = list(await asyncio.gather(*(plan_withdrawal(settings, c) for c in names)))
    movable = [p for p in plans if not p.problem and p.amount_wei > 0]
    withdrawals: list[ChainOutcome] = []
    approved_by = None
    if not movable:
        approval = "not asked: nothing to move"
    else:
        try:
            approved, typed, approved_by = await ask_approval(cfg, movable, pauses, reason)
        except FlowPauseTimeout:
            approved, typed = False, {}
            approval = f"no answer within {cfg.approval_timeout_s} s; nothing moved"
        else:
            problems = emergency.approval_problems(movable, typed, approved)
            approval = "refused: " + "; ".join(problems) + "; nothing moved" if problems else "approved"
            if not problems:
                task = withdraw_to_secure_wallet.with_options(timeout_seconds=_backstop_s(cfg))
                withdrawals = list(await asyncio.gather(*(task(settings, p) for p in movable)))
    report = IncidentReport(settings.environment, reason, started, time.time(), pauses, plans, approval,
                            approved_by, withdrawals)
    await publish("financial-emergency-incident", report.markdown(), report.rows(),
                  f"Financial Emergency incident report ({settings.environment})")
    summary = f"Financial emergency ({settings.environment}): " + ("funds secured" if report.passed else "INCOMPLETE")
    (logger.info if report.passed else logger.error)("%s; approval: %s", summary, approval)
    await report_to_team(settings, f"{summary}; approval: {approval}")
    if not report.passed:
        raise EmergencyIncomplete(f"{summary}; approval: {approval}")
    return report.to_dict()
