"""Incident Response, Common Incidents 1-3 as flows: frontend rollback, Convex redeploy, RPC failover
and the deliberate switch back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows.environment import load_settings
from flows.publish import publish
from runbook.procedures import remediation
from runbook.procedures.remediation import RedeployReport
from runbook.settings import ConfigError, Settings
from tasks.remediation import (
    check_backend_health,
    choose_rpc,
    find_convex_errors,
    read_active_rpc,
    record_active_rpc,
    roll_back_frontend,
    tell_team,
)


class RemediationFailed(Exception):
    """A remediation that did not reach a verified good state; the message says what is left."""


@flow(name="frontend-rollback",
      description="Runbook: Common Incidents 1, Frontend Down: promote the last good Vercel production deployment.")
async def frontend_rollback_flow(env_file: str | None = None, deployment_id: str | None = None,
                                 dry_run: bool = False, only_if_down: bool = True) -> dict[str, Any]:
    """`vercel rollback` through Vercel's API: promote the newest READY production deployment
    before the current one (or `deployment_id`), then read back which deployment production serves
    and wait until the frontend answers. Safe to re-run: a deployment already serving is left alone,
    and a re-run after a crash promotes the same deployment, never an older one.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        deployment_id: the dpl_... deployment to return to; default: the last good one.
        dry_run: for drills: say what would be promoted, change nothing, tell nobody.
        only_if_down: without deployment_id, do nothing while the frontend answers.
    """
    settings = load_settings(env_file)
    if settings.vercel is None:
        raise ConfigError(f"environment {settings.environment}", ["vercel: no [vercel] section"])
    if deployment_id is not None and not deployment_id.startswith("dpl_"):
        raise ValueError(f"deployment_id: {deployment_id!r} is not a Vercel deployment id (dpl_...)")
    task = roll_back_frontend.with_options(
        timeout_seconds=settings.vercel.verify_deadline_s + 6 * settings.vercel.timeout_s + 60)
    report = await task(settings, deployment_id, dry_run, only_if_down)
    await publish("frontend-rollback", report.markdown(), [{"step": s} for s in report.steps],
                  f"Frontend rollback ({settings.environment})")
    logger = get_run_logger()
    (logger.warning if report.passed else logger.error)("%s", report.summary())
    if not dry_run and (report.action == "promoted" or report.problem):
        await tell_team(settings, report.summary())
    if not report.passed:
        raise RemediationFailed(report.summary())
    return report.to_dict()


class RedeployDone(RunInput):
    """What the person answers once the previous version is deployed."""

    done: bool = Field(default=False, description="Tick when the previous version is deployed")
    operator: str = Field(default="", description="Your name, for the incident record")
    note: str = Field(default="", description="The commit you deployed, or why it could not be done")


@flow(name="convex-redeploy",
      description="Runbook: Common Incidents 2, Convex Backend Error: find the errors, have the previous version "
                  "redeployed, verify.")
async def convex_redeploy_flow(env_file: str | None = None, window_minutes: float = 60, wait_s: int = 3600,
                               watch_s: float = 60, poll_s: int = 5, even_without_errors: bool = False
                               ) -> dict[str, Any]:
    """Find the failing Convex functions, then pause with the exact redeploy steps for a person
    (Convex deploys only through `npx convex deploy` from a checkout), and after they answer
    "done", watch the log for `watch_s` seconds: no new failed execution and a passing backend
    health check verify the fix.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        window_minutes: how far back to look for the errors.
        wait_s: how long to wait for the person's answer.
        watch_s: how long to watch for new errors after the redeploy.
        poll_s: how often the paused run checks for the answer.
        even_without_errors: ask for the redeploy even when no errors are found.
    """
    for name, value, low, high in (("window_minutes", window_minutes, 0, 24 * 60), ("wait_s", wait_s, 1, 86400),
                                   ("watch_s", watch_s, 0, 3600), ("poll_s", poll_s, 1, 600)):
        if not low <= value <= high:
            raise ValueError(f"{name}: {value} is not between {low} and {high}")
    settings = load_settings(env_file)
    logger = get_run_logger()
    now = time.time()
    errors, (healthy, health) = await asyncio.gather(
        find_convex_errors(settings, now - window_minutes * 60, now), check_backend_health(settings))
    report = RedeployReport(settings.environment, errors.line() + f"; backend health: {health}")
    if errors.total == 0 and errors.known and healthy and not even_without_errors:
        report.verified = True
        report.outcome = (f"No failed Convex executions in the last {window_minutes:g} min and the backend is "
                          "healthy: nothing to redeploy.")
        return await _finish_redeploy(settings, report)
    assert settings.error_logs is not None  # find_convex_errors refused without it
    steps = remediation.redeploy_steps(settings.error_logs.convex_url,
                                       settings.error_logs.convex_deploy_key.describe(), errors)
    report.asked = True
    logger.warning("Convex redeploy needs a person: see the flow run's form")
    try:
        answer = await apause_flow_run(wait_for_input=RedeployDone.with_initial_data(description=steps),
                                       timeout=wait_s, poll_interval=poll_s, key="convex-redeploy-done")
    except FlowPauseTimeout:
        report.answer = f"no answer within {wait_s} s"
        report.outcome = "Nobody confirmed the redeploy; the errors were not verified as fixed."
        return await _finish_redeploy(settings, report)
    report.answer, report.operator, report.note = ("done" if answer.done else "not done"), answer.operator, answer.note
    if not answer.done:
        report.outcome = "The redeploy was not done" + (f": {answer.note}" if answer.note else "") + "."
        return await _finish_redeploy(settings, report)
    done_at = time.time()
    await asyncio.sleep(watch_s)
    after, (healthy_after, health_after) = await asyncio.gather(
        find_convex_errors(settings, done_at, time.time()), check_backend_health(settings))
    report.errors_after, report.health_after = after.line(), health_after
    report.verified = after.known and after.complete and after.total == 0 and healthy_after
    report.outcome = (f"Verified: no failed executions in the {watch_s:g} s after the redeploy, backend healthy."
                      if report.verified else
                      f"Not verified after the redeploy: errors {after.line()}; backend health {health_after}.")
    return await _finish_redeploy(settings, report)


async def _finish_redeploy(settings: Settings, report: RedeployReport) -> dict[str, Any]:
    report.finished_at = time.time()
    await publish("convex-redeploy", report.markdown(), [{"item": k, "value": str(v)} for k, v in
                                                         report.to_dict().items()],
                  f"Convex redeploy ({settings.environment})")
    summary = f"Convex redeploy ({settings.environment}): {report.outcome}"
    if report.asked:
        await tell_team(settings, summary)
    if not report.passed:
        raise RemediationFailed(summary)
    return report.to_dict()


def _chain(settings: Settings, chain: str) -> None:
    if chain not in settings.chains:
        raise ValueError(f"chain: {chain!r} is not a configured chain; name one of {', '.join(settings.chains)}")


async def _switch(settings: Settings, chain: str, direction: str, dry_run: bool, force: bool) -> dict[str, Any]:
    _chain(settings, chain)
    previous = await read_active_rpc(settings.environment, chain)
    report = await choose_rpc(settings, chain, previous, direction, dry_run, force)
    if report.action == "switched" and report.chosen is not None:
        if not await record_active_rpc(report.variable, report.chosen):
            report.problem = f"the Prefect Variable {report.variable} did not read back as written"
    if not dry_run and (report.action == "switched" or report.problem):
        report.alert = await tell_team(settings, report.summary())
    report.finished_at = time.time()
    key = "rpc-failover" if direction == "failover" else "rpc-switch-back"
    await publish(f"{key}-{chain}", report.markdown(), [{"check": c} for c in report.checks],
                  f"{report.summary()}")
    logger = get_run_logger()
    (logger.warning if report.passed else logger.error)("%s", report.summary())
    if not report.passed:
        raise RemediationFailed(report.summary())
    return report.to_dict()


@flow(name="rpc-failover",
      description="Runbook: Common Incidents 3, Blockchain Connection Lost: switch a chain to its first healthy "
                  "backup RPC.")
async def rpc_failover_flow(env_file: str | None = None, chain: str = "", dry_run: bool = False,
                            force: bool = False) -> dict[str, Any]:
    """Check the chain's primary RPC; if it is unusable, choose the first healthy backup (answers,
    right chain id or genesis, fresh head) and record it as the chain's active endpoint in the
    Prefect Variable `tfops-active-rpc-<environment>-<chain>`, which the platform reads to pick its
    RPC; then alert the team. Nothing is recorded when no backup is healthy. Re-running keeps a
    still-healthy active backup. Switching back is the separate flow rpc-switch-back.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        chain: the chain, as named in the environment file (e.g. ethereum); required.
        dry_run: for drills: say which backup would be chosen, record nothing, tell nobody.
        force: switch even though the primary looks healthy.
    """
    return await _switch(load_settings(env_file), chain, "failover", dry_run, force)


@flow(name="rpc-switch-back",
      description="Runbook: Common Incidents 3: make a chain's primary RPC active again once it is healthy.")
async def rpc_switch_back_flow(env_file: str | None = None, chain: str = "",
                               dry_run: bool = False) -> dict[str, Any]:
    """The deliberate step back after a failover: check the primary RPC (answers, right chain, fresh
    head) and only then record it as the active endpoint; an unhealthy primary changes nothing.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        chain: the chain, as named in the environment file (e.g. ethereum); required.
        dry_run: check the primary, record nothing, tell nobody.
    """
    return await _switch(load_settings(env_file), chain, "switch-back", dry_run, False)
