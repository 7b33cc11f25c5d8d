"""The Prefect automations that watch the runs themselves, created from an environment file.

- A flow run Failed or Crashed: the on-call Slack channel gets its name, state, message and a link.
- A zombie run (its process died: no heartbeat for three heartbeat periods while Running): marked
  Crashed, as Prefect documents under "Detect zombie flows"; that Crashed state is then notified.
- A run past its expected duration (a checklist over 30 minutes, maintenance over 2 hours): marked
  Crashed, so a hung run neither blocks the next one (concurrency limit 1) nor stays unnoticed.
- A scheduled checklist that has not started 15 minutes after its time (its run went Late and
  nothing picked it up: no worker, a full pool): paged through PagerDuty and posted to Slack.

Notifications go through Prefect's Custom Webhook notification blocks, because the Slack
incoming-webhook and PagerDuty Events v2 shapes are plain JSON POSTs (the same ones runbook/clients
send) and a custom webhook can point at any URL, the sandbox's receivers included. The Slack URL and
the PagerDuty routing key are secrets: they live in the blocks' secret values, never in an
automation. Applying twice changes nothing: blocks are overwritten and automations updated by name.
The links in the messages use the server's PREFECT_UI_URL, which the server must have set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from runbook.settings import Settings
from tasks.common import resolver_for

PREFIX = "tfops: "
SLACK_BLOCK = "tfops-oncall-slack"
PAGERDUTY_BLOCK = "tfops-oncall-pagerduty"
# Prefect emits a heartbeat per running flow run every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds
# (prefect.yaml sets 60 for every deployment); three missed heartbeats make a zombie.
HEARTBEAT_S = 60
ZOMBIE_AFTER = timedelta(seconds=3 * HEARTBEAT_S)
# How long a run of a deployment with this tag may stay Running before it counts as hung.
EXPECTED_DURATION = {"checklist": timedelta(minutes=30), "maintenance": timedelta(hours=2)}
START_GRACE = timedelta(minutes=15)

TERMINAL = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}
STARTED = {f"prefect.flow-run.{s}" for s in ("Pending", "Running", "Cancelling")} | TERMINAL
ALL_FLOW_RUNS = ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"})

FAILURE_SUBJECT = "{{ flow.name }} run {{ flow_run.name }}: {{ flow_run.state.name }}"
FAILURE_BODY = """\
{{ flow.name }}{% if deployment %}/{{ deployment.name }}{% endif %} run {{ flow_run.name }} \
is {{ flow_run.state.name }}.
{% if flow_run.state.message %}{{ flow_run.state.message[:500] }}
{% endif %}Run: {{ flow_run|ui_url }}"""
LATE_SUBJECT = "Checklist not started: {{ flow.name }}{% if deployment %}/{{ deployment.name }}{% endif %}"
LATE_BODY = """\
The scheduled {{ flow.name }} run {{ flow_run.name }} (due {{ flow_run.expected_start_time }}) has not \
started within 15 minutes: no worker picked it up. Check the worker(s) of the work pool.
Run: {{ flow_run|ui_url }}"""


@dataclass(frozen=True)
class Channels:
    """The notification blocks the automations send through (None: not configured)."""

    slack: UUID | None
    pagerduty: UUID | None


def _tag(tag: str) -> ResourceSpecification:
    return ResourceSpecification({"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{tag}"})


def build(channels: Channels) -> list[AutomationCore]:
    """Every automation, given where notifications go. Pure: no server needed."""
    automations = [
        AutomationCore(
            name=PREFIX + "crash zombie runs",
            description="A running flow run that stopped sending heartbeats (its process or machine died) "
                        "is marked Crashed (Prefect's documented zombie detection).",
            trigger=EventTrigger(
                match=ALL_FLOW_RUNS, after={"prefect.flow-run.heartbeat"},
                expect={"prefect.flow-run.heartbeat", *TERMINAL}, for_each={"prefect.resource.id"},
                posture=Posture.Proactive, threshold=1, within=ZOMBIE_AFTER,
            ),
            actions=[ChangeFlowRunState(
                name=None, force=False, state=StateType.CRASHED,
                message=f"Marked Crashed: no heartbeat for {ZOMBIE_AFTER.total_seconds():.0f} s (the run's "
                        "process or machine stopped).",
            )],
        ),
    ]
    for tag, limit in EXPECTED_DURATION.items():
        minutes = limit.total_seconds() / 60
        automations.append(AutomationCore(
            name=PREFIX + f"crash {tag} runs past {minutes:.0f} min",
            description=f"A {tag} run still Running {minutes:.0f} minutes after it started is hung: it is "
                        "marked Crashed, so the next scheduled run is not cancelled behind it.",
            trigger=EventTrigger(
                match=ALL_FLOW_RUNS, match_related=_tag(tag), after={"prefect.flow-run.Running"},
                expect=TERMINAL, for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                within=limit,
            ),
            actions=[ChangeFlowRunState(
                name=None, force=False, state=StateType.CRASHED,
                message=f"Marked Crashed: still running after {minutes:.0f} min, past the expected duration "
                        f"of a {tag} run.",
            )],
        ))
    if channels.slack is not None:
        automations.append(AutomationCore(
            name=PREFIX + "notify on-call of failed or crashed runs",
            description="Every deployment's flow run that ends Failed or Crashed is posted to the on-call "
                        "Slack channel with a link to the run.",
            trigger=EventTrigger(
                # runs of deployments only: a failing step of a checklist is reported once, by its checklist
                match=ALL_FLOW_RUNS, match_related=ResourceSpecification({"prefect.resource.role": "deployment"}),
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
                for_each={"prefect.resource.id"}, posture=Posture.Reactive, threshold=1, within=timedelta(0),
            ),
            actions=[SendNotification(block_document_id=channels.slack, subject=FAILURE_SUBJECT,
                                      body=FAILURE_BODY)],
        ))
    late_actions: list[Any] = [SendNotification(block_document_id=block, subject=LATE_SUBJECT, body=LATE_BODY)
                               for block in (channels.pagerduty, channels.slack) if block is not None]
    if late_actions:
        automations.append(AutomationCore(
            name=PREFIX + "page when a scheduled checklist has not started within 15 min",
            description="A Morning or Evening Checklist run that went Late (its time passed) and did not "
                        "start within 15 minutes pages on-call: nothing is running the checklists.",
            trigger=EventTrigger(
                match=ALL_FLOW_RUNS, match_related=[_tag("checklist"), _tag("daily")],
                after={"prefect.flow-run.Late"}, expect=STARTED, for_each={"prefect.resource.id"},
                posture=Posture.Proactive, threshold=1, within=START_GRACE,
            ),
            actions=late_actions,
        ))
    return automations


def slack_block(webhook_url: str, timeout_s: float) -> CustomWebhookNotificationBlock:
    # Slack incoming webhook: POST {"text": ...} (runbook/clients/slack.py sends the same shape).
    return CustomWebhookNotificationBlock(
        name="on-call Slack", url="{{webhook_url}}", method="POST", json_data={"text": "*{{subject}}*\n{{body}}"},
        timeout=timeout_s, headers=None, cookies=None, secrets={"webhook_url": webhook_url},  # type: ignore[arg-type]
    )


def pagerduty_block(events_url: str, routing_key: str, source: str, timeout_s: float) -> CustomWebhookNotificationBlock:
    # PagerDuty Events API v2 trigger (runbook/clients/pagerduty.py sends the same shape).
    return CustomWebhookNotificationBlock(
        name="on-call PagerDuty", url=events_url, method="POST", timeout=timeout_s, headers=None, cookies=None,
        json_data={"routing_key": "{{routing_key}}", "event_action": "trigger",
                   "payload": {"summary": "{{subject}}", "source": source, "severity": "critical",
                               "custom_details": {"details": "{{body}}"}}},
        secrets={"routing_key": routing_key},  # type: ignore[arg-type]
    )


async def _save(block: CustomWebhookNotificationBlock, name: str) -> UUID:
    block_id = await block.save(name, overwrite=True, _sync=False)  # type: ignore[call-arg]
    return UUID(str(block_id))


async def apply(settings: Settings) -> list[str]:
    """Create or update the blocks and automations on the current Prefect API; a line per result.

    Raises runbook.secrets.SecretError when a configured secret cannot be read.
    """
    resolver = resolver_for(settings)
    n = settings.notifications
    lines: list[str] = []
    slack_id = pagerduty_id = None
    if n.slack is not None:
        url = resolver.resolve(n.slack.webhook_url).get_secret_value()
        slack_id = await _save(slack_block(url, n.slack.timeout_s), SLACK_BLOCK)
        lines.append(f"notification block {SLACK_BLOCK}: the on-call Slack webhook")
    else:
        lines.append("no [notifications.slack]: failed runs are not posted anywhere")
    if n.pagerduty is not None:
        key = resolver.resolve(n.pagerduty.routing_key).get_secret_value()
        pagerduty_id = await _save(pagerduty_block(n.pagerduty.events_url, key, n.source, n.pagerduty.timeout_s),
                                   PAGERDUTY_BLOCK)
        lines.append(f"notification block {PAGERDUTY_BLOCK}: PagerDuty events at {n.pagerduty.events_url}")
    else:
        lines.append("no [notifications.pagerduty]: a checklist that did not start is posted, not paged")
    async with get_client() as client:
        for automation in build(Channels(slack_id, pagerduty_id)):
            existing = await client.read_automations_by_name(automation.name)
            if existing:
                await client.update_automation(existing[0].id, automation)
                for extra in existing[1:]:
                    await client.delete_automation(extra.id)
                lines.append(f"automation updated: {automation.name}")
            else:
                await client.create_automation(automation)
                lines.append(f"automation created: {automation.name}")
    return lines
