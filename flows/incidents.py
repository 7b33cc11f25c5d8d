"""Incident Response as flows: declare an incident and see it through, and resolve one by its id.

declare-incident follows the runbook's P0 "Immediate Actions" and the Escalation Matrix: open the
record, notify L1, create the incident channel, put P0/P1 on the status page, then wait for an
acknowledgement typed into the run's form in the Prefect UI. A level that does not acknowledge
within its window is escalated past; an acknowledgement stops the escalation. After it, the run
waits for the resolution (same form mechanism) and, for P0, reminds the team of the status update
every 30 minutes. The timeline is published as an artifact after every step.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any, Literal, TypeVar

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
from prefect.context import FlowRunContext
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from prefect.input.actions import aread_flow_run_input
from prefect.input.run_input import keyset_from_base_key
from prefect.states import Running, State
from pydantic import Field

from flows.environment import load_settings
from flows.publish import publish
from runbook.config_types import Severity
from runbook.procedures import incidents as inc
from runbook.procedures.emergency import Effect
from runbook.procedures.incidents import AffectedComponent, EscalationLevel, Incident, Incidents, SeverityPolicy
from runbook.settings import Settings
from tasks.incidents import (
    ChannelOutcome,
    Delivery,
    create_incident_channel,
    incidents_config,
    notify_level,
    open_status_incident,
    post_in_channel,
    read_incident,
    save_incident,
    tell_team,
    update_pages,
    update_status_incident,
)

# How long a pause outlives its window: the run takes itself back from the pause within this margin.
PAUSE_MARGIN_S = 60


class IncidentIncomplete(Exception):
    """The incident was not acknowledged, or a notification, the channel or the status page failed."""


class Acknowledgement(RunInput):
    """The acknowledgement form in the Prefect UI."""

    acknowledged_by: str = Field(min_length=1, max_length=80, description="Your name, for the timeline")
    note: str = Field(default="", max_length=inc.NOTE_LIMIT, description="Optional: what you are doing first")


class Resolution(RunInput):
    """The resolution form in the Prefect UI."""

    outcome: Literal["mitigated", "resolved"] = Field(
        description="mitigated: the impact is contained, still watching; resolved: over")
    by: str = Field(min_length=1, max_length=80, description="Your name, for the timeline")
    note: str = Field(default="", max_length=inc.NOTE_LIMIT, description="Optional: what fixed it")


Form = TypeVar("Form", bound=RunInput)


async def wait_for_answer(form: type[Form], *, key: str, window_s: float, poll_s: int) -> Form | None:
    """Pause the run with `form` for `window_s`; the answer, or None when nobody answered in time.

    Prefect fails a run whose pause times out, and an unanswered pause must lead to the next step
    instead (escalate, remind). So the pause is set to outlast the window, and when the window
    passes the run takes itself back (Paused -> Running, before the pause's own timeout). An answer
    that arrived just as the window closed is still read and used.
    """
    if window_s <= 0:
        return None
    pause = apause_flow_run(wait_for_input=form, timeout=math.ceil(window_s) + PAUSE_MARGIN_S, poll_interval=poll_s,
                            key=key)
    try:
        return await asyncio.wait_for(pause, window_s)
    except TimeoutError:
        pass
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    run_id = context.flow_run.id
    async with get_client() as client:
        run = await client.read_flow_run(run_id)
        if run.state is not None and run.state.is_paused():
            back: State[Any] = Running(message=f"no answer to {key!r} in time")
            result: OrchestrationResult[Any] = await client.set_flow_run_state(run_id, back)
            if result.status != SetStateStatus.ACCEPT:
                run = await client.read_flow_run(run_id)
                if run.state is None or not run.state.is_running():
                    raise RuntimeError(f"the run could not leave its pause {key!r}: {result.details}")
    answer = await aread_flow_run_input(keyset_from_base_key(f"paused-{key}")["response"], flow_run_id=run_id)
    return form.model_validate(answer) if answer else None


def _ack_form(incident: Incident, level: EscalationLevel, window_s: float,
              policy: SeverityPolicy) -> type[Acknowledgement]:
    lines = [f"## Acknowledge {incident.severity.value} incident {incident.id}?", "",
             f"**{incident.summary}** (affected: {incident.component.value}, environment: {incident.environment})", "",
             f"Waiting for {level.level} {level.contact}; escalates in {inc.duration(window_s)} without an "
             f"acknowledgement. Response time target: {inc.duration(policy.respond_within_s)}."]
    if incident.channel_name:
        lines.append(f"Incident channel: #{incident.channel_name}")
    return Acknowledgement.with_initial_data(description="\n".join(lines))


def _resolution_form(incident: Incident) -> type[Resolution]:
    lines = [f"## {incident.id} ({incident.severity.value}) is {incident.state}: mitigated or resolved?", "",
             f"**{incident.summary}**", "",
             f"Acknowledged by {incident.acknowledged_by} ({incident.acknowledged_level}). Answer when the impact "
             "is contained (mitigated) or over (resolved); resolved closes the status page incident and the pages."]
    return Resolution.with_initial_data(description="\n".join(lines))


def _key(incident: Incident) -> str:
    return f"incident-{incident.id}"


async def _publish(incident: Incident, policy: SeverityPolicy, problems: list[str]) -> str:
    markdown = incident.markdown(policy, time.time())
    if problems:
        markdown += "\n### Not done\n\n" + "\n".join(f"- {p}" for p in problems) + "\n"
    await publish(_key(incident), markdown, incident.rows(), f"Incident {incident.id} ({incident.severity.value}): "
                                                             f"{incident.summary}"[:200])
    return markdown


def _failed(deliveries: list[Delivery]) -> list[str]:
    return [f"{d.channel}: {d.detail}" for d in deliveries if not d.ok]


async def _announce(settings: Settings, incident: Incident, text: str) -> list[str]:
    """A milestone on the incident channel and the team's webhook; what failed, if anything."""
    channel, team = await asyncio.gather(post_in_channel(settings, incident, text), tell_team(settings, text))
    return _failed([channel, team])


async def _open(settings: Settings, cfg: Incidents, incident: Incident, problems: list[str]) -> Incident:
    """Immediate actions, side by side: notify L1, create the incident channel, the status page.
    Each is skipped when the record shows an earlier attempt of this run did it."""
    first = inc.escalation_plan(cfg, incident.severity)[0].level

    async def notify() -> list[Delivery] | None:
        return None if first.level in incident.levels_notified else await notify_level(settings, incident, first, None)

    async def channel() -> ChannelOutcome | None:
        return None if incident.has("channel") else await create_incident_channel(settings, incident)

    async def status_page() -> Effect | None:
        return None if incident.has("status-page") else await open_status_incident(settings, incident)

    deliveries, made, page = await asyncio.gather(notify(), channel(), status_page())
    now = time.time()
    if deliveries is not None:
        _notified(incident, first, deliveries, problems, now)
    if made is not None:
        incident.add(now, "channel", made.detail, ok=made.ok)
        if made.ok and made.configured:
            incident.channel, incident.channel_name = made.channel, made.name
        elif not made.ok:
            problems.append(f"incident channel: {made.detail}")
    if page is not None:
        incident.add(now, "status-page", page.detail, ok=page.ok)
        if page.status in ("done", "already"):
            incident.status_page_name = inc.status_page_name(incident)
        if not page.ok:
            problems.append(f"status page: {page.detail}")
    return incident


def _notified(incident: Incident, level: EscalationLevel, deliveries: list[Delivery], problems: list[str],
              at: float) -> None:
    """Record that `level` was notified, and how each of its channels took it."""
    incident.levels_notified.append(level.level)
    line = "; ".join(f"{d.channel}: {d.detail}" for d in deliveries)
    incident.add(at, "notified", f"{level.contact}: {line}", ok=all(d.ok for d in deliveries), level=level.level)
    problems += [f"notify {level.level}: {p}" for p in _failed(deliveries)]


def _notified_at(incident: Incident, level: str) -> float:
    return max((e.at for e in incident.events if e.kind == "notified" and e.level == level), default=time.time())


async def _escalate(settings: Settings, cfg: Incidents, incident: Incident, policy: SeverityPolicy,
                    problems: list[str]) -> Incident:
    """Give each level of the plan its window to acknowledge, notifying the next when it passes."""
    plan = inc.escalation_plan(cfg, incident.severity)
    for i, step in enumerate(plan):
        level = step.level
        if incident.acknowledged_at is not None or incident.resolved_at is not None:
            break
        if level.level not in incident.levels_notified:
            came_from: str | None = None
            if i > 0:
                before = plan[i - 1]
                came_from = f"{before.level.level} {before.level.contact}"
                incident.add(time.time(), "escalated", f"{came_from} did not acknowledge within "
                                                       f"{inc.duration(before.wait_s)}; escalated to {level.level} "
                                                       f"{level.contact}", level=level.level)
            deliveries = await notify_level(settings, incident, level, came_from)
            _notified(incident, level, deliveries, problems, time.time())
            text = inc.notice_text(incident, policy, level, came_from)
            problems += [f"escalation notice: {p}" for p in _failed([await post_in_channel(settings, incident, text)])]
            incident = await save_incident(incident)
            await _publish(incident, policy, problems)
        remaining = _notified_at(incident, level.level) + step.wait_s - time.time()
        answer = await wait_for_answer(_ack_form(incident, level, step.wait_s, policy),
                                       key=f"ack-{level.level.lower()}", window_s=remaining, poll_s=cfg.poll_s)
        if answer is not None:
            incident.acknowledge(time.time(), answer.acknowledged_by, level.level, answer.note)
        incident = await save_incident(incident)
    return incident


async def close_incident(settings: Settings, incident: Incident, by: str, note: str, problems: list[str]) -> Incident:
    """Resolved: the status page incident closed and read back, the pages resolved, the team told."""
    if not incident.resolve(time.time(), by, note):
        return incident
    _, took = incident.resolve_verdict(incidents_config(settings).policy(incident.severity))
    text = f":white_check_mark: {incident.id} resolved by {by}: {took}." + (f" {note}" if note else "")
    page, pages, told = await asyncio.gather(
        update_status_incident(settings, incident, "resolved", f"Resolved. {note}".strip()),
        update_pages(settings, incident, "resolve"), _announce(settings, incident, text))
    if page.status != "not-configured":
        incident.add(time.time(), "status-page", page.detail, ok=page.ok)
    problems += [f"status page: {page.detail}"] if not page.ok else []
    problems += [f"resolve pages: {p}" for p in _failed(pages)] + [f"resolution notice: {p}" for p in told]
    return incident


async def _mitigate(settings: Settings, incident: Incident, by: str, note: str, problems: list[str]) -> Incident:
    incident.mitigate(time.time(), by, note)
    text = f":large_yellow_circle: {incident.id} mitigated by {by}; monitoring." + (f" {note}" if note else "")
    page, told = await asyncio.gather(
        update_status_incident(settings, incident, "monitoring", f"A fix is in place; we are monitoring. {note}"
                               .strip()),
        _announce(settings, incident, text))
    if page.status != "not-configured":
        incident.add(time.time(), "status-page", page.detail, ok=page.ok)
    problems += [f"status page: {page.detail}"] if not page.ok else []
    problems += [f"mitigation notice: {p}" for p in told]
    return incident


async def _follow(settings: Settings, cfg: Incidents, incident: Incident, policy: SeverityPolicy,
                  problems: list[str]) -> Incident:
    """After the acknowledgement: wait for the resolution form, reminding the team of the status
    update (P0: every 30 min) each time the interval passes, until resolved or `follow_for_s`."""
    assert incident.acknowledged_at is not None
    until = incident.acknowledged_at + cfg.follow_for_s
    asked = 0
    while incident.resolved_at is None and time.time() < until:
        window = min(cfg.status_update_every_s, until - time.time())
        answer = await wait_for_answer(_resolution_form(incident), key=f"resolution-{asked}", window_s=window,
                                       poll_s=cfg.poll_s)
        asked += 1
        incident = await save_incident(incident)  # resolve-incident may have closed it meanwhile
        if answer is not None and answer.outcome == "resolved":
            incident = await close_incident(settings, incident, answer.by, answer.note, problems)
        elif answer is not None:
            incident = await _mitigate(settings, incident, answer.by, answer.note, problems)
        elif incident.resolved_at is None and policy.status_updates and time.time() < until:
            incident.reminders += 1
            text = inc.reminder_text(incident, time.time(), cfg.status_update_every_s)
            sent = await (post_in_channel(settings, incident, text) if incident.channel else tell_team(settings, text))
            incident.add(time.time(), "reminder", f"status update reminder {incident.reminders}: {sent.detail}",
                         ok=sent.ok)
            problems += [f"reminder: {p}" for p in _failed([sent])]
        incident = await save_incident(incident)
        await _publish(incident, policy, problems)
    return incident


def _report(incident: Incident, policy: SeverityPolicy, problems: list[str], markdown: str) -> dict[str, Any]:
    now = time.time()
    ack_ok, ack = incident.acknowledge_verdict(policy, now)
    res_ok, res = incident.resolve_verdict(policy)
    return {"incident": incident.to_dict(), "state": incident.state, "severity": incident.severity.value,
            "time_to_acknowledge_s": incident.time_to_acknowledge_s, "acknowledge_target_s": policy.respond_within_s,
            "acknowledged_within_target": ack_ok, "acknowledgement": ack,
            "time_to_resolve_s": incident.time_to_resolve_s, "resolve_target_s": policy.resolve_within_s,
            "resolved_within_target": res_ok, "resolution": res, "problems": problems, "markdown": markdown}


def _run_seed() -> tuple[str, float]:
    """What fixes the incident's id: the flow run, so a retry of the run finds its own record."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return uuid.uuid4().hex, time.time()
    created = context.flow_run.created
    return context.flow_run.id.hex, created.timestamp() if created else time.time()


@flow(name="declare-incident",
      description="Runbook: Incident Response: declare, notify per the escalation matrix, incident channel, status "
                  "page, wait for the acknowledgement (escalating), P0 status reminders, resolution.")
async def declare_incident_flow(severity: Severity = Severity.P1, summary: str = "",
                                component: AffectedComponent = AffectedComponent.other, declared_by: str = "",
                                drill: bool = False, env_file: str | None = None) -> dict[str, Any]:
    """Declare an incident and see it through: notify L1, create the incident channel, put P0/P1
    on the status page, then wait for an acknowledgement in this run's form. No acknowledgement
    within a level's window escalates to the next level (L1 on-call 15 min, L2 tech lead 30 min,
    L3 CTO 1 h by default). Then wait for mitigated/resolved in the form; P0 reminds the team of
    the status update every 30 min. The incident's record lives in a Prefect Variable, so
    `resolve-incident` can close it from another run.

    Args:
        severity: P0 critical (site down, data breach) ... P3 low (minor bug, UI issue).
        summary: one line on what is wrong (required); shown on the status page for P0/P1.
        component: what is affected.
        declared_by: who declares it, for the timeline.
        drill: a rehearsal: every message is marked [DRILL] and the public status page is left alone.
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
    """
    settings = load_settings(env_file)
    cfg = incidents_config(settings)
    severity, component = Severity(severity), AffectedComponent(component)
    policy = cfg.policy(severity)
    text = " ".join(summary.split())
    if not text:
        raise ValueError("summary: must say what is wrong")
    if drill:
        text = f"[DRILL] {text}"
    if len(text) > inc.SUMMARY_LIMIT:
        raise ValueError(f"summary: at most {inc.SUMMARY_LIMIT} characters (got {len(text)})")
    logger = get_run_logger()
    seed, created = _run_seed()
    incident_id = inc.incident_id(created, seed)
    incident = await read_incident(settings.environment, incident_id)
    if incident is None:
        incident = Incident(incident_id, settings.environment, severity, text, component, time.time(),
                            declared_by=declared_by.strip()[:80] or None, drill=drill)
        incident.add(incident.declared_at, "declared", f"{severity.value} {policy.title}: {text} (affected: "
                                                       f"{component.value})" + (" [drill]" if drill else ""))
    else:
        logger.warning("incident %s was declared by an earlier attempt of this run; going on from its record",
                       incident_id)
    incident = await save_incident(incident)
    problems: list[str] = []
    incident = await _open(settings, cfg, incident, problems)
    incident = await save_incident(incident)
    await _publish(incident, policy, problems)
    logger.info("incident %s declared (%s): %s", incident.id, severity.value, text)

    incident = await _escalate(settings, cfg, incident, policy, problems)
    if incident.acknowledged_at is None and incident.resolved_at is None:
        levels = ", ".join(incident.levels_notified)
        incident.add(time.time(), "unacknowledged", f"no acknowledgement from {levels} within their windows", ok=False)
        problems.append(f"not acknowledged by any level ({levels})")
    elif incident.acknowledged_at is not None:
        _, verdict = incident.acknowledge_verdict(policy, time.time())
        text_ack = (f":white_check_mark: {incident.id} acknowledged by {incident.acknowledged_by} "
                    f"({incident.acknowledged_level}): {verdict}.")
        acked, told = await asyncio.gather(update_pages(settings, incident, "acknowledge"),
                                           _announce(settings, incident, text_ack))
        problems += [f"acknowledge pages: {p}" for p in _failed(acked)] + [f"acknowledgement notice: {p}" for p in told]
        incident = await save_incident(incident)
        await _publish(incident, policy, problems)
        incident = await _follow(settings, cfg, incident, policy, problems)
    incident = await save_incident(incident)
    markdown = await _publish(incident, policy, problems)
    report = _report(incident, policy, problems, markdown)
    summary_line = f"Incident {incident.id} ({severity.value}): {incident.state}; {report['acknowledgement']}"
    if problems:
        logger.error("%s; not done: %s", summary_line, "; ".join(problems))
        raise IncidentIncomplete(f"{summary_line}; not done: " + "; ".join(problems))
    logger.info("%s", summary_line)
    return report


@flow(name="resolve-incident", description="Runbook: Incident Response: mark a declared incident resolved; close "
                                           "its status page incident and pages.")
async def resolve_incident_flow(incident_id: str = "", resolved_by: str = "", note: str = "",
                                env_file: str | None = None) -> dict[str, Any]:
    """Resolve the incident `incident_id` (as declare-incident named it, e.g. INC-20240601-0930-1a2b3c):
    record who and when, close its status page incident (read back), resolve its pages, tell the
    team. Resolving an incident that is already resolved changes nothing and says so.

    Args:
        incident_id: the incident's id (required).
        resolved_by: who resolved it, for the timeline (required).
        note: optional, what fixed it.
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
    """
    settings = load_settings(env_file)
    cfg = incidents_config(settings)
    if not incident_id.strip():
        raise ValueError("incident_id: which incident (e.g. INC-20240601-0930-1a2b3c)")
    if not resolved_by.strip():
        raise ValueError("resolved_by: who resolved it")
    incident = await read_incident(settings.environment, incident_id.strip())
    if incident is None:
        raise ValueError(f"incident_id: no incident {incident_id!r} in environment {settings.environment}")
    policy = cfg.policy(incident.severity)
    problems: list[str] = []
    already = incident.resolved_at is not None
    if already:
        get_run_logger().info("incident %s was already resolved by %s at %s UTC; nothing changed", incident.id,
                              incident.resolved_by, inc.utc(incident.resolved_at or 0))
    else:
        incident = await close_incident(settings, incident, resolved_by.strip()[:80], note.strip()[:inc.NOTE_LIMIT],
                                        problems)
        incident = await save_incident(incident)
    markdown = await _publish(incident, policy, problems)
    report = {**_report(incident, policy, problems, markdown), "already_resolved": already}
    if problems:
        raise IncidentIncomplete(f"Incident {incident.id} resolved; not done: " + "; ".join(problems))
    return report
