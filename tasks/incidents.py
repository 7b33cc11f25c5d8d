"""Incident tasks: the record in a Prefect Variable, each level's notification, the incident
channel, the status page. Each resolves only the secret it needs, at the edge, and reports a
failure as an outcome rather than raising, so that one broken channel never stops the paging."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable

from runbook.clients import pagerduty, slack
from runbook.clients.http_probe import make_client
from runbook.clients.slack_api import SlackApi, SlackApiError
from runbook.procedures import incidents as inc
from runbook.procedures.emergency import Effect, StatusPageTarget, post_status_incident
from runbook.procedures.incidents import EscalationLevel, Incident, Incidents
from runbook.secrets import SecretError
from runbook.settings import Settings
from tasks.common import post_to_team, resolver_for


def incidents_config(settings: Settings) -> Incidents:
    """The `[incidents]` section, or the runbook's defaults when the file has none."""
    return getattr(settings, "incidents", None) or Incidents()


@dataclass(frozen=True)
class Delivery:
    channel: str
    ok: bool
    detail: str


# ---- the record ---------------------------------------------------------------------------------------------------


@task(name="read-incident", cache_policy=NO_CACHE, tags=["incident"])
async def read_incident(environment: str, incident_id: str) -> Incident | None:
    """The stored record, or None when there is none. A damaged record is an error, not a new incident."""
    value: Any = await Variable.aget(inc.variable_name(environment, incident_id))
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"incident {incident_id}: the stored record is not an object")
    return Incident.from_dict(value)


@task(name="save-incident", cache_policy=NO_CACHE, tags=["incident"])
async def save_incident(incident: Incident) -> Incident:
    """Store the record, joined first with what another run may have stored meanwhile; returns the
    joined record, which the caller goes on with."""
    name = inc.variable_name(incident.environment, incident.id)
    stored: Any = await Variable.aget(name)
    if isinstance(stored, dict):
        try:
            incident = incident.merge(Incident.from_dict(stored))
        except ValueError as exc:
            get_run_logger().warning("incident %s: the stored record was not readable (%s); overwriting it",
                                     incident.id, exc)
    await Variable.aset(name, incident.stored(), overwrite=True)  # type: ignore[arg-type]
    return incident


# ---- notifying a level --------------------------------------------------------------------------------------------


@task(name="notify-level", cache_policy=NO_CACHE, tags=["incident", "alerts"])
async def notify_level(settings: Settings, incident: Incident, level: EscalationLevel,
                       escalated_from: str | None) -> list[Delivery]:
    """Tell one level of the matrix, by its methods: the team's Slack webhook naming them, and a
    PagerDuty page to their service (for severities that page, per [notifications] page_at)."""
    cfg = incidents_config(settings)
    policy = cfg.policy(incident.severity)
    n = settings.notifications
    resolver = resolver_for(settings)
    async with make_client(4) as client:

        async def by_slack() -> Delivery:
            return _team_delivery(await post_to_team(settings, inc.notice_text(incident, policy, level,
                                                                               escalated_from)))

        async def by_page() -> Delivery:
            if not inc.pages(incident.severity, n.page_at):
                return Delivery("pagerduty", True, f"not paged: {incident.severity.value} is below page_at "
                                                   f"{n.page_at.value}")
            if n.pagerduty is None:
                return Delivery("pagerduty", False, "not paged: no [notifications.pagerduty]")
            try:
                key = resolver.resolve(level.pagerduty_routing_key or n.pagerduty.routing_key)
            except SecretError as exc:
                return Delivery("pagerduty", False, f"not paged ({exc})")
            sent = await pagerduty.enqueue(
                client, n.pagerduty.events_url, key, action="trigger", dedup_key=inc.dedup_key(incident, level),
                summary=inc.page_summary(incident, level), source=n.source, severity=incident.severity.value,
                component=incident.component.value,
                custom_details={"incident": incident.id, "level": level.level, "contact": level.contact,
                                "escalated_from": escalated_from or "", "environment": incident.environment},
                timeout_s=n.pagerduty.timeout_s)
            return Delivery("pagerduty", sent.ok, sent.detail.removeprefix("pagerduty: "))

        jobs = [by_slack() if method == "slack" else by_page() for method in level.methods]
        return list(await asyncio.gather(*jobs))


@task(name="update-pages", cache_policy=NO_CACHE, tags=["incident", "alerts"])
async def update_pages(settings: Settings, incident: Incident, action: str) -> list[Delivery]:
    """`acknowledge` or `resolve` the page of every level that was paged, so PagerDuty stops ringing."""
    n = settings.notifications
    cfg = incidents_config(settings)
    paged = [lv for lv in cfg.levels if lv.level in incident.levels_notified and "pagerduty" in lv.methods]
    if n.pagerduty is None or not paged or not inc.pages(incident.severity, n.page_at):
        return []
    pd = n.pagerduty
    resolver = resolver_for(settings)
    async with make_client(4) as client:

        async def one(level: EscalationLevel) -> Delivery:
            try:
                key = resolver.resolve(level.pagerduty_routing_key or pd.routing_key)
            except SecretError as exc:
                return Delivery(f"pagerduty {level.level}", False, f"not sent ({exc})")
            sent = await pagerduty.enqueue(client, pd.events_url, key, action=action,
                                           dedup_key=inc.dedup_key(incident, level), timeout_s=pd.timeout_s)
            return Delivery(f"pagerduty {level.level}", sent.ok, f"{action}: {sent.detail.removeprefix('pagerduty: ')}")

        return list(await asyncio.gather(*(one(lv) for lv in paged)))


@task(name="tell-team", cache_policy=NO_CACHE, tags=["incident", "alerts"])
async def tell_team(settings: Settings, text: str) -> Delivery:
    """One line on the team's Slack webhook (acknowledged, resolved, reminders without a channel)."""
    return _team_delivery(await post_to_team(settings, text))


def _team_delivery(sent: slack.Delivery | None) -> Delivery:
    if sent is None:
        return Delivery("slack", False, "not sent: no [notifications.slack]")
    return Delivery("slack", sent.ok, sent.detail.removeprefix("slack: "))


# ---- the incident channel -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelOutcome:
    ok: bool
    detail: str
    channel: str | None = None  # where to post: the id, or the name when the channel already existed
    name: str | None = None
    configured: bool = True


def _slack_api(cfg: Incidents, settings: Settings, client: Any) -> SlackApi:
    assert cfg.slack is not None
    token = resolver_for(settings).resolve(cfg.slack.bot_token)
    return SlackApi(client, token, cfg.slack.api_url, cfg.slack.timeout_s, cfg.slack.max_retry_wait_s)


@task(name="create-incident-channel", cache_policy=NO_CACHE, tags=["incident", "slack"])
async def create_incident_channel(settings: Settings, incident: Incident) -> ChannelOutcome:
    """The runbook's "Create incident channel": conversations.create, then the incident's summary
    posted there, whose answer (`ok` with a `ts`) shows the channel exists and takes messages."""
    cfg = incidents_config(settings)
    if cfg.slack is None:
        return ChannelOutcome(True, "not configured ([incidents.slack]): no incident channel", configured=False)
    name = inc.channel_name(cfg.slack.channel_prefix, incident)
    async with make_client(2) as client:
        try:
            api = _slack_api(cfg, settings, client)
            channel = await api.create_channel(name, is_private=cfg.slack.is_private)
            where = channel.id or f"#{channel.name}"
            posted = await api.post_message(where, inc.channel_intro(incident, cfg.policy(incident.severity),
                                                                     cfg.status_update_every_s))
        except (SlackApiError, SecretError) as exc:
            return ChannelOutcome(False, str(exc), name=name)
    made = "created" if channel.created else "already existed (an earlier attempt); reused"
    return ChannelOutcome(True, f"#{channel.name} {made}; summary posted (ts {posted.ts})", posted.channel,
                          channel.name)


@task(name="post-in-channel", cache_policy=NO_CACHE, tags=["incident", "slack"])
async def post_in_channel(settings: Settings, incident: Incident, text: str) -> Delivery:
    cfg = incidents_config(settings)
    if cfg.slack is None or incident.channel is None:
        return Delivery("incident channel", True, "no incident channel")
    async with make_client(2) as client:
        try:
            posted = await _slack_api(cfg, settings, client).post_message(incident.channel, text)
        except (SlackApiError, SecretError) as exc:
            return Delivery("incident channel", False, str(exc))
    return Delivery("incident channel", True, f"posted (ts {posted.ts})")


# ---- the status page ------------------------------------------------------------------------------------------------


def _status_page(settings: Settings, incident: Incident) -> StatusPageTarget | None:
    """The page set up for this incident ([incidents.statuspage], else the emergency broadcast's)."""
    cfg = incidents_config(settings)
    emergency = getattr(settings, "emergency", None)
    return inc.status_page_for(cfg, emergency.statuspage if emergency else None, incident,
                               cfg.policy(incident.severity))


@task(name="open-status-incident", cache_policy=NO_CACHE, tags=["incident", "statuspage"])
async def open_status_incident(settings: Settings, incident: Incident) -> Effect:
    """P0/P1: the incident on the public status page (the emergency broadcast's client; it finds an
    incident of the same name already open and leaves it, so a re-run does not post twice)."""
    policy = incidents_config(settings).policy(incident.severity)
    sp = _status_page(settings, incident)
    if policy.status_page is None:
        return Effect("status page", "not-configured", f"{incident.severity.value} does not go on the status page")
    if incident.drill:
        return Effect("status page", "not-configured", "drill: the public status page is left alone")
    if sp is None:
        return Effect("status page", "not-configured", "no [incidents.statuspage] or [emergency.statuspage]")
    try:
        key = resolver_for(settings).resolve(sp.api_key)
    except SecretError as exc:
        return Effect("status page", "failed", str(exc))
    async with make_client(2) as client:
        return await post_status_incident(sp, client, key, inc.status_page_message(incident))


@task(name="update-status-incident", cache_policy=NO_CACHE, tags=["incident", "statuspage"])
async def update_status_incident(settings: Settings, incident: Incident,
                                 status: Literal["identified", "monitoring", "resolved"], message: str) -> Effect:
    """Move the page's incident on (monitoring once mitigated, resolved), and read the page back."""
    sp = _status_page(settings, incident)
    if sp is None or incident.status_page_name is None:
        return Effect("status page", "not-configured", "the incident is not on the status page")
    try:
        key = resolver_for(settings).resolve(sp.api_key)
    except SecretError as exc:
        return Effect("status page", "failed", str(exc))
    async with make_client(2) as client:
        return await inc.update_status_incident(sp, client, key, status, message)
