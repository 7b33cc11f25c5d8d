"""Incident Response: the severity model, the escalation matrix, and an incident's timeline.

From the runbook's "Incident Response" (Severity Levels; P0: acknowledge, notify the on-call team,
create an incident channel, status page update, internal updates every 30 min) and "Contact
Information / Escalation Matrix" (L1 On-call Dev by Slack/Phone in 15 min, L2 Tech Lead by Phone in
30 min, L3 CTO by Phone in 1 hour). Phone here is a PagerDuty page to that level's service.

An incident is declared with a severity, a summary and the affected component. L1 is notified and
given its window to acknowledge; no acknowledgement escalates to L2, then L3, each with its own
window. An acknowledgement stops the escalation and records who and when. The record (id,
timeline) is plain data, kept where every flow run sees it, and small enough for a Prefect Variable.
Time to acknowledge is measured against the severity's response time; time to resolve against its
resolution target, where the team sets one (the runbook names none).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from runbook.clients.evm import RpcTransportError
from runbook.clients.http_probe import describe_error
from runbook.config_types import HttpUrl, SecretRef, Severity, Strict
from runbook.procedures.emergency import Effect, StatusPageTarget, unresolved_incidents

# Prefect Variables hold at most 5000 characters of JSON; the record keeps below that with room.
RECORD_LIMIT = 4500
DETAIL_LIMIT = 240
SUMMARY_LIMIT = 200
NOTE_LIMIT = 300


class AffectedComponent(StrEnum):
    """What an incident is about, as the runbook's Common Incidents and System Health name it."""

    frontend = "frontend"
    backend = "backend"
    api = "api"
    blockchain = "blockchain"
    payments = "payments"
    other = "other"


Impact = Literal["none", "minor", "major", "critical"]
COMPONENT_STATUS: dict[str, str] = {"critical": "major_outage", "major": "partial_outage",
                                    "minor": "degraded_performance", "none": "operational"}


class SeverityPolicy(Strict):
    """One row of the runbook's Severity Levels table, and what it sets in motion."""

    title: str = Field(min_length=1, max_length=40)
    respond_within_s: Annotated[float, Field(gt=0)] = Field(description="Response Time: the acknowledgement target")
    resolve_within_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="the team's resolution target; the runbook gives none")
    examples: list[str] = Field(default_factory=list)
    escalate: bool = Field(description="walk the escalation matrix when a level does not acknowledge in its window; "
                                       "otherwise L1 alone is given the whole response time")
    status_page: Impact | None = Field(description="the public status page's impact, or none to leave it alone")
    status_updates: bool = Field(description="remind the team every status_update_every_s until resolved")


SEVERITY_DEFAULTS: dict[Severity, dict[str, Any]] = {
    Severity.P0: {"title": "Critical", "respond_within_s": 15 * 60, "examples": ["Site down", "Data breach"],
                  "escalate": True, "status_page": "critical", "status_updates": True},
    Severity.P1: {"title": "High", "respond_within_s": 60 * 60, "examples": ["Payment failure", "Major bug"],
                  "escalate": True, "status_page": "major", "status_updates": False},
    Severity.P2: {"title": "Medium", "respond_within_s": 4 * 3600,
                  "examples": ["Feature broken", "Slow performance"], "escalate": False, "status_page": None,
                  "status_updates": False},
    Severity.P3: {"title": "Low", "respond_within_s": 24 * 3600, "examples": ["Minor bug", "UI issue"],
                  "escalate": False, "status_page": None, "status_updates": False},
}

Method = Literal["slack", "pagerduty"]


class EscalationLevel(Strict):
    """One row of the Escalation Matrix."""

    level: str = Field(pattern=r"^L[1-9]$")
    contact: str = Field(min_length=1, max_length=80, description="who, as the matrix names them")
    methods: Annotated[list[Method], Field(min_length=1)] = Field(
        description="slack: the team's webhook, mentioning `mention`; pagerduty: a page (the phone call)")
    window_s: Annotated[float, Field(gt=0)] = Field(description="Response Time: escalate when not acknowledged within")
    mention: str | None = Field(default=None, max_length=80,
                                description="how Slack reaches them, e.g. <!subteam^S0123ONCALL> or <@U0123>")
    pagerduty_routing_key: SecretRef | None = Field(
        default=None, description="this level's PagerDuty service; default: [notifications.pagerduty]")


DEFAULT_LEVELS: list[dict[str, Any]] = [
    {"level": "L1", "contact": "On-call Dev", "methods": ["slack", "pagerduty"], "window_s": 15 * 60},
    {"level": "L2", "contact": "Tech Lead", "methods": ["pagerduty"], "window_s": 30 * 60},
    {"level": "L3", "contact": "CTO", "methods": ["pagerduty"], "window_s": 60 * 60},
]


class SlackApiTarget(Strict):
    """The bot that creates incident channels and posts in them (Slack's Web API)."""

    api_url: HttpUrl = "https://slack.com/api"
    bot_token: SecretRef = Field(description="xoxb- token with channels:manage and chat:write")
    channel_prefix: str = Field(default="inc", pattern=r"^[a-z0-9][a-z0-9_-]{0,19}$")
    is_private: bool = False
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10
    max_retry_wait_s: Annotated[float, Field(ge=0, le=300)] = Field(
        default=30, description="wait out a 429's Retry-After once when it is at most this long")


class Incidents(Strict):
    """The `[incidents]` section. Everything has the runbook's default."""

    severities: dict[Severity, SeverityPolicy] = Field(
        default_factory=lambda: {s: SeverityPolicy(**d) for s, d in SEVERITY_DEFAULTS.items()})
    levels: Annotated[list[EscalationLevel], Field(min_length=1)] = Field(
        default_factory=lambda: [EscalationLevel(**d) for d in DEFAULT_LEVELS])
    slack: SlackApiTarget | None = None
    statuspage: StatusPageTarget | None = Field(default=None, description="default: [emergency.statuspage]")
    statuspage_components: dict[AffectedComponent, list[str]] = Field(
        default_factory=dict, description="status page component ids per affected component; default: all the "
                                          "status page's component_ids")
    status_update_every_s: Annotated[float, Field(gt=0)] = Field(default=30 * 60,
                                                                 description="P0: internal updates every 30 min")
    follow_for_s: Annotated[float, Field(gt=0)] = Field(
        default=24 * 3600, description="how long declare-incident waits for the resolution after the acknowledgement; "
                                       "after that the incident stays open until resolve-incident closes it")
    poll_s: Annotated[int, Field(ge=1, le=60)] = Field(default=5, description="how often a paused run looks for "
                                                                              "an answer")

    @field_validator("severities", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        """A file may set only what differs: `[incidents.severities.P0] respond_within_s = 600`."""
        if not isinstance(value, Mapping):
            return value
        merged: dict[Any, Any] = {s.value: dict(d) for s, d in SEVERITY_DEFAULTS.items()}
        for key, given in value.items():
            name = key.value if isinstance(key, Severity) else key
            if isinstance(given, SeverityPolicy):
                given = given.model_dump()
            if name in merged and isinstance(given, Mapping):
                merged[name] = {**merged[name], **given}
            else:
                merged[name] = given
        return merged

    @field_validator("levels")
    @classmethod
    def _levels_in_order(cls, levels: list[EscalationLevel]) -> list[EscalationLevel]:
        names = [lv.level for lv in levels]
        if names != [f"L{i + 1}" for i in range(len(names))]:
            raise ValueError(f"must be L1, L2, ... in order, got {', '.join(names)}")
        return levels

    def policy(self, severity: Severity) -> SeverityPolicy:
        return self.severities[severity]

    def secret_refs(self) -> list[SecretRef]:
        refs = [lv.pagerduty_routing_key for lv in self.levels if lv.pagerduty_routing_key]
        if self.slack:
            refs.append(self.slack.bot_token)
        if self.statuspage:
            refs.append(self.statuspage.api_key)
        return refs


# ---- the escalation plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """Notify `level`, then wait `wait_s` for an acknowledgement before the next step."""

    level: EscalationLevel
    wait_s: float


def escalation_plan(cfg: Incidents, severity: Severity) -> list[Step]:
    """Who is told, in order, and how long each is given. A severity that does not escalate gives
    L1 the whole response time; one that does walks the matrix, each level with its window."""
    if not cfg.policy(severity).escalate:
        return [Step(cfg.levels[0], cfg.policy(severity).respond_within_s)]
    return [Step(lv, lv.window_s) for lv in cfg.levels]


def pages(severity: Severity, page_at: Severity) -> bool:
    """Whether this severity pages, per [notifications] page_at (at or above pages)."""
    return severity.rank <= page_at.rank


# ---- the record ---------------------------------------------------------------------------------------------------

EventKind = Literal["declared", "notified", "channel", "status-page", "escalated", "acknowledged", "unacknowledged",
                    "reminder", "mitigated", "resolved"]


@dataclass
class Event:
    at: float
    kind: EventKind
    detail: str
    ok: bool = True
    level: str | None = None

    def to_list(self) -> list[Any]:
        return [round(self.at, 3), self.kind, self.detail[:DETAIL_LIMIT], self.ok, self.level]

    @classmethod
    def from_list(cls, item: Sequence[Any]) -> Event:
        at, kind, detail, ok, level = item
        return cls(float(at), kind, str(detail), bool(ok), level)


@dataclass
class Incident:
    id: str
    environment: str
    severity: Severity
    summary: str
    component: AffectedComponent
    declared_at: float
    declared_by: str | None = None
    channel: str | None = None  # the Slack channel's id, or its name when only the name is known
    channel_name: str | None = None
    status_page_name: str | None = None
    levels_notified: list[str] = field(default_factory=list)
    acknowledged_at: float | None = None
    acknowledged_by: str | None = None
    acknowledged_level: str | None = None
    mitigated_at: float | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None
    reminders: int = 0
    drill: bool = False  # a rehearsal: every message says so and the public status page is left alone
    events: list[Event] = field(default_factory=list)

    # -- state ---------------------------------------------------------------------------------

    @property
    def state(self) -> Literal["open", "acknowledged", "mitigated", "resolved"]:
        if self.resolved_at is not None:
            return "resolved"
        if self.mitigated_at is not None:
            return "mitigated"
        return "acknowledged" if self.acknowledged_at is not None else "open"

    @property
    def time_to_acknowledge_s(self) -> float | None:
        return None if self.acknowledged_at is None else self.acknowledged_at - self.declared_at

    @property
    def time_to_resolve_s(self) -> float | None:
        return None if self.resolved_at is None else self.resolved_at - self.declared_at

    def add(self, at: float, kind: EventKind, detail: str, ok: bool = True, level: str | None = None) -> Event:
        event = Event(at, kind, detail, ok, level)
        self.events.append(event)
        return event

    def has(self, kind: EventKind, level: str | None = None) -> bool:
        return any(e.kind == kind and (level is None or e.level == level) for e in self.events)

    def acknowledge(self, at: float, by: str, level: str, note: str = "") -> bool:
        """Record the first acknowledgement; False when it was acknowledged already."""
        if self.acknowledged_at is not None:
            return False
        self.acknowledged_at, self.acknowledged_by, self.acknowledged_level = at, by, level
        self.add(at, "acknowledged", f"by {by} at {level}" + (f": {note}" if note else ""), level=level)
        return True

    def mitigate(self, at: float, by: str, note: str = "") -> None:
        if self.mitigated_at is None:
            self.mitigated_at = at
        self.add(at, "mitigated", f"by {by}" + (f": {note}" if note else ""))

    def resolve(self, at: float, by: str, note: str = "") -> bool:
        """Record the resolution; False when it was resolved already (by another run)."""
        if self.resolved_at is not None:
            return False
        self.resolved_at, self.resolved_by = at, by
        self.add(at, "resolved", f"by {by}" + (f": {note}" if note else ""))
        return True

    def merge(self, stored: Incident) -> Incident:
        """This run's view joined with the stored record, which another run (resolve-incident) may
        have moved on: every event of either, in time order; the first of each milestone."""
        if stored.id != self.id:
            raise ValueError(f"cannot merge incident {stored.id} into {self.id}")
        seen = {(round(e.at, 3), e.kind, e.level) for e in self.events}
        events = [*self.events, *(e for e in stored.events if (round(e.at, 3), e.kind, e.level) not in seen)]
        events.sort(key=lambda e: e.at)

        def first(a: float | None, b: float | None) -> float | None:
            return min(x for x in (a, b) if x is not None) if a is not None or b is not None else None

        never = float("inf")
        ack_from = self if (self.acknowledged_at or never) <= (stored.acknowledged_at or never) else stored
        res_from = self if (self.resolved_at or never) <= (stored.resolved_at or never) else stored
        return Incident(
            id=self.id, environment=self.environment, severity=self.severity, summary=self.summary,
            component=self.component, declared_at=min(self.declared_at, stored.declared_at),
            declared_by=self.declared_by or stored.declared_by, channel=self.channel or stored.channel,
            channel_name=self.channel_name or stored.channel_name,
            status_page_name=self.status_page_name or stored.status_page_name,
            levels_notified=[*self.levels_notified, *(lv for lv in stored.levels_notified
                                                       if lv not in self.levels_notified)],
            acknowledged_at=ack_from.acknowledged_at, acknowledged_by=ack_from.acknowledged_by,
            acknowledged_level=ack_from.acknowledged_level,
            mitigated_at=first(self.mitigated_at, stored.mitigated_at),
            resolved_at=res_from.resolved_at, resolved_by=res_from.resolved_by,
            reminders=max(self.reminders, stored.reminders), drill=self.drill or stored.drill, events=events)

    # -- measured against the targets ------------------------------------------------------------

    def acknowledge_verdict(self, policy: SeverityPolicy, now: float) -> tuple[bool | None, str]:
        """(within target?, what to say). None: still open and still within the target."""
        target = policy.respond_within_s
        took = self.time_to_acknowledge_s
        if took is None:
            waited = now - self.declared_at
            if waited <= target:
                return None, f"not yet acknowledged ({duration(waited)} of the {duration(target)} target)"
            return False, f"NOT acknowledged after {duration(waited)}: the {duration(target)} target is MISSED"
        if took <= target:
            return True, f"acknowledged in {duration(took)}, within the {duration(target)} target"
        return False, f"acknowledged in {duration(took)}: the {duration(target)} target was MISSED"

    def resolve_verdict(self, policy: SeverityPolicy) -> tuple[bool | None, str]:
        took = self.time_to_resolve_s
        target = policy.resolve_within_s
        if took is None:
            return None, "not yet resolved"
        if target is None:
            return None, f"resolved in {duration(took)} (no resolution target set)"
        if took <= target:
            return True, f"resolved in {duration(took)}, within the {duration(target)} target"
        return False, f"resolved in {duration(took)}: the {duration(target)} target was MISSED"

    # -- storage -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "environment": self.environment, "severity": self.severity.value,
                "summary": self.summary, "component": self.component.value, "declared_at": self.declared_at,
                "declared_by": self.declared_by, "channel": self.channel, "channel_name": self.channel_name,
                "status_page_name": self.status_page_name, "levels_notified": self.levels_notified,
                "acknowledged_at": self.acknowledged_at, "acknowledged_by": self.acknowledged_by,
                "acknowledged_level": self.acknowledged_level, "mitigated_at": self.mitigated_at,
                "resolved_at": self.resolved_at, "resolved_by": self.resolved_by, "reminders": self.reminders,
                "drill": self.drill, "events": [e.to_list() for e in self.events]}

    def stored(self, limit: int = RECORD_LIMIT) -> dict[str, Any]:
        """The record as stored: every event kept, the longest details shortened until it fits."""
        data = self.to_dict()
        cut = DETAIL_LIMIT
        while len(json.dumps(data)) > limit and cut > 16:
            cut //= 2
            for item in data["events"]:
                if len(item[2]) > cut:
                    item[2] = item[2][: cut - 1] + "…"
        return data

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Incident:
        try:
            return cls(
                id=str(d["id"]), environment=str(d["environment"]), severity=Severity(d["severity"]),
                summary=str(d["summary"]), component=AffectedComponent(d["component"]),
                declared_at=float(d["declared_at"]), declared_by=d.get("declared_by"), channel=d.get("channel"),
                channel_name=d.get("channel_name"), status_page_name=d.get("status_page_name"),
                levels_notified=list(d.get("levels_notified") or []), acknowledged_at=d.get("acknowledged_at"),
                acknowledged_by=d.get("acknowledged_by"), acknowledged_level=d.get("acknowledged_level"),
                mitigated_at=d.get("mitigated_at"), resolved_at=d.get("resolved_at"), resolved_by=d.get("resolved_by"),
                reminders=int(d.get("reminders") or 0), drill=bool(d.get("drill")),
                events=[Event.from_list(e) for e in d.get("events") or []])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an incident record ({type(exc).__name__}: {exc})") from None

    # -- the report ----------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        return [{"time": utc(e.at), "after": duration(e.at - self.declared_at), "event": e.kind,
                 "level": e.level or "", "detail": e.detail, "ok": e.ok} for e in self.events]

    def markdown(self, policy: SeverityPolicy, now: float) -> str:
        _, ack = self.acknowledge_verdict(policy, now)
        _, res = self.resolve_verdict(policy)
        lines = [f"## Incident {self.id}: {self.severity.value} {policy.title}, {self.state.upper()}", "",
                 f"- Summary: {self.summary}", f"- Affected component: {self.component.value}",
                 f"- Environment: {self.environment}",
                 f"- Declared: {utc(self.declared_at)}" + (f" by {self.declared_by}" if self.declared_by else ""),
                 f"- Response time target ({self.severity.value}): {duration(policy.respond_within_s)}; {ack}",
                 f"- Resolution: {res}"]
        if self.channel_name:
            lines.append(f"- Incident channel: #{self.channel_name}")
        if self.status_page_name:
            lines.append(f"- Status page incident: {self.status_page_name!r}")
        if self.reminders:
            lines.append(f"- Status update reminders sent: {self.reminders}")
        lines += ["", "### Timeline", "", "| Time (UTC) | After | Event | Level | Detail |", "|---|---|---|---|---|"]
        for e in self.events:
            mark = "" if e.ok else "**FAILED** "
            lines.append(f"| {utc(e.at)} | {duration(e.at - self.declared_at)} | {e.kind} | {e.level or ''} | "
                         f"{mark}{_cell(e.detail)} |")
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float) -> str:
    """A span as people say it: 45 s, 4 min 12 s, 15 min, 1 h, 2 h 05 min, 24 h."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m} min" + (f" {r} s" if r else "")
    h, r = divmod(s, 3600)
    m = r // 60
    return f"{h} h" + (f" {m:02d} min" if m else "")


def incident_id(declared_at: float, seed: str) -> str:
    """`INC-20240601-0930-1a2b3c`: readable, sortable, and fixed by `seed` (the declaring run), so
    a retried run finds its own record instead of declaring the incident a second time."""
    stamp = datetime.fromtimestamp(declared_at, UTC).strftime("%Y%m%d-%H%M")
    tail = re.sub(r"[^a-z0-9]", "", seed.lower())[:6] or "000000"
    return f"INC-{stamp}-{tail}"


def channel_name(prefix: str, incident: Incident) -> str:
    """Slack's rules: lowercase letters, digits, - and _, at most 80 characters."""
    words = re.sub(r"[^a-z0-9]+", "-", incident.summary.lower()).strip("-")[:30].strip("-")
    name = f"{prefix}-{incident.id.lower().removeprefix('inc-')}-{incident.severity.value.lower()}"
    return (f"{name}-{words}" if words else name)[:80].strip("-")


def variable_name(environment: str, incident_id: str) -> str:
    """The Prefect Variable holding the record (names take lowercase, digits, _ and -)."""
    return re.sub(r"[^a-z0-9_-]+", "-", f"tfops-incident-{environment}-{incident_id}".lower())[:255]


def status_page_name(incident: Incident) -> str:
    # The id makes the name unique: the status page client finds "its" incident by name.
    return f"{incident.summary} ({incident.id})"[:200]


# ---- messages -----------------------------------------------------------------------------------------------------


def notice_text(incident: Incident, policy: SeverityPolicy, level: EscalationLevel, escalated_from: str | None) -> str:
    who = level.mention or level.contact
    head = (f":rotating_light: {incident.severity.value} incident {incident.id} ({incident.environment}): "
            f"{incident.summary}")
    why = (f"Escalated to {level.level} {level.contact}: {escalated_from} did not acknowledge in time."
           if escalated_from else f"{level.level} {level.contact}, please acknowledge.")
    channel = f" Channel: #{incident.channel_name}." if incident.channel_name else ""
    return (f"{head}\n{who}: {why} Affected: {incident.component.value}. Respond within "
            f"{duration(policy.respond_within_s)}; acknowledge in the Prefect UI (the declare-incident run)."
            f"{channel}")


def channel_intro(incident: Incident, policy: SeverityPolicy, every_s: float) -> str:
    updates = f" Status updates here every {duration(every_s)} until resolved." if policy.status_updates else ""
    return (f"*{incident.severity.value} {policy.title}* incident {incident.id} declared at "
            f"{utc(incident.declared_at)} UTC: {incident.summary}\nAffected component: {incident.component.value}. "
            f"Response time target: {duration(policy.respond_within_s)}.{updates}")


def reminder_text(incident: Incident, now: float, every_s: float) -> str:
    return (f":hourglass: {incident.id} ({incident.severity.value}, {incident.state}) open for "
            f"{duration(now - incident.declared_at)}: time for the status update (every {duration(every_s)}). "
            f"{incident.summary}")


def page_summary(incident: Incident, level: EscalationLevel) -> str:
    return f"[{incident.severity.value}] {incident.id} {level.level} {level.contact}: {incident.summary}"


def dedup_key(incident: Incident, level: EscalationLevel) -> str:
    """One PagerDuty alert per level, so each escalation pages its own people."""
    return f"tfops-{incident.environment}-{incident.id}-{level.level}".lower()


# ---- the status page ------------------------------------------------------------------------------------------------


def status_page_for(cfg: Incidents, emergency_statuspage: StatusPageTarget | None, incident: Incident,
                    policy: SeverityPolicy) -> StatusPageTarget | None:
    """The page, set up for this incident: its own name, the severity's impact and the affected
    component's ids. None when this severity leaves the status page alone or none is configured."""
    base = cfg.statuspage or emergency_statuspage
    if base is None or policy.status_page is None:
        return None
    ids = cfg.statuspage_components.get(incident.component, base.component_ids)
    component_status = COMPONENT_STATUS[policy.status_page]
    update: dict[str, Any] = {"incident_name": status_page_name(incident), "impact": policy.status_page,
                              "component_ids": list(ids)}
    if component_status != "operational":
        update["component_status"] = component_status
    return base.model_copy(update=update)


def status_page_message(incident: Incident) -> str:
    return f"We are investigating an issue affecting the {incident.component.value}: {incident.summary}"


_UNREADABLE = (httpx.HTTPError, TimeoutError, ValueError, OSError, RpcTransportError)


async def update_status_incident(sp: StatusPageTarget, client: httpx.AsyncClient, api_key: SecretStr,
                                 status: Literal["identified", "monitoring", "resolved"], message: str) -> Effect:
    """Move the page's incident named `sp.incident_name` to `status` (resolved: its components back
    to operational), then read the public page back: a resolved incident leaves the unresolved list."""
    name = "status page"
    try:
        found = [i for i in await unresolved_incidents(sp, client) if i.get("name") == sp.incident_name]
    except _UNREADABLE as exc:
        return Effect(name, "failed", f"cannot read the public page to find the incident: {describe_error(exc)}")
    if not found:
        return Effect(name, "already" if status == "resolved" else "failed",
                      f"no unresolved incident named {sp.incident_name!r} on the public page",
                      verified=status == "resolved")
    incident_id = str(found[0].get("id"))
    body: dict[str, Any] = {"status": status, "body": message}
    if status == "resolved":
        body["components"] = dict.fromkeys(sp.component_ids, "operational")
    url = f"{sp.base_url.rstrip('/')}/pages/{sp.page_id}/incidents/{incident_id}"
    try:
        async with asyncio.timeout(sp.timeout_s):
            response = await client.patch(url, json={"incident": body}, timeout=httpx.Timeout(sp.timeout_s),
                                          headers={"Authorization": f"OAuth {api_key.get_secret_value()}"})
    except Exception as exc:  # noqa: BLE001 - the request carries a secret: describe, never repr
        return Effect(name, "failed", f"update incident {incident_id}: {describe_error(exc).split(' (')[0]}")
    if response.status_code in (420, 429):
        return Effect(name, "failed", f"rate limited (HTTP {response.status_code}, Retry-After "
                                      f"{response.headers.get('Retry-After', '?')} s)")
    if response.status_code != 200:
        return Effect(name, "failed", f"update incident {incident_id}: HTTP {response.status_code}")
    try:
        still = any(i.get("id") == incident_id for i in await unresolved_incidents(sp, client))
    except _UNREADABLE as exc:
        return Effect(name, "done", f"incident {incident_id} set to {status}; cannot read it back: "
                                    f"{describe_error(exc)}")
    verified = not still if status == "resolved" else still
    seen = ("gone from" if not still else "still on") + " the public unresolved list"
    return Effect(name, "done", f"incident {incident_id} set to {status}; {seen}", verified=verified)
