"""declare-incident and resolve-incident on a real Prefect server against the sandbox, with windows
of seconds: the escalation path in order, an acknowledgement typed into the run's form stopping it,
the status page and the incident channel, and a broken Slack bot reported while paging goes on."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import aresume_flow_run
from prefect_runs import artifacts_of, env_variant, form_of, paused_run, toml_table

from flows.incidents import declare_incident_flow, resolve_incident_flow
from runbook.procedures import incidents as inc
from sandbox.vendors import slack_api

pytestmark = [pytest.mark.sandbox]

WINDOW_S = 3


def env_file(sb, tmp_path: Path, bot_token: str = slack_api.SANDBOX_BOT_TOKEN) -> tuple[Path, dict[str, str]]:
    """The sandbox's environment with windows of seconds; L2 and L3 page their own PagerDuty services.
    The status page is the sandbox's [emergency.statuspage] (the fallback when [incidents] has none)."""
    keys = {level: secrets.token_hex(16) for level in ("L2", "L3")}
    for level, key in keys.items():
        (tmp_path / f"pd_{level}").write_text(key)
    (tmp_path / "bot_token").write_text(bot_token)
    text = toml_table("[incidents]", {"poll_s": 1, "status_update_every_s": WINDOW_S, "follow_for_s": 120})
    text += toml_table("[[incidents.levels]]", {"level": "L1", "contact": "On-call Dev",
                                                "methods": ["slack", "pagerduty"], "window_s": WINDOW_S,
                                                "mention": "<!subteam^S0ONCALL>"})
    for level, contact in (("L2", "Tech Lead"), ("L3", "CTO")):
        text += toml_table("[[incidents.levels]]", {"level": level, "contact": contact, "methods": ["pagerduty"],
                                                    "window_s": WINDOW_S,
                                                    "pagerduty_routing_key": {"file": str(tmp_path / f"pd_{level}")}})
    text += toml_table("[incidents.slack]", {"api_url": sb.url("slack-api") + "/api",
                                             "bot_token": {"file": str(tmp_path / "bot_token")}, "timeout_s": 5.0})
    return env_variant(sb, tmp_path, text, replacing=("incidents",)), keys


def triggers(sandbox) -> list[dict[str, Any]]:
    return [r["event"] for r in sandbox.received("pagerduty") if r["event"]["event_action"] == "trigger"]


async def incident_paused(summary: str, key: str) -> Any:
    """The declare-incident run with this summary, once it is paused with the form `key`."""
    return await paused_run("declare-incident", 30, lambda run: summary in str(run.parameters.get("summary"))
                            and run.state.state_details.pause_key == key, f" at {key!r}")


async def record_of(summary: str) -> dict[str, Any]:
    async with get_client() as client:
        found = [v.value for v in await client.read_variables() if v.name.startswith("tfops-incident-sandbox-")
                 and isinstance(v.value, dict) and summary in v.value.get("summary", "")]
    assert len(found) == 1, found
    return found[0]


async def test_without_an_acknowledgement_it_escalates_l1_then_l2_then_l3(prefect_api, sandbox, tmp_path):
    env, keys = env_file(sandbox, tmp_path)
    summary = f"Payment failure on BSC {secrets.token_hex(3)}"
    state = await declare_incident_flow(severity="P1", summary=summary, component="payments",
                                        env_file=str(env), return_state=True)
    assert state.is_failed()  # nobody acknowledged: the run says so
    assert "not acknowledged by any level (L1, L2, L3)" in str(state.message)

    pages = triggers(sandbox)
    assert [p["payload"]["custom_details"]["level"] for p in pages] == ["L1", "L2", "L3"]
    assert [p["dedup_key"][-2:] for p in pages] == ["l1", "l2", "l3"]
    assert pages[1]["routing_key"] == keys["L2"] and pages[2]["routing_key"] == keys["L3"]
    assert pages[0]["routing_key"] not in keys.values()  # L1: the [notifications.pagerduty] service
    assert pages[0]["payload"]["severity"] == "error"
    assert pages[2]["payload"]["custom_details"]["escalated_from"] == "L2 Tech Lead"
    times = [r["received_at"] for r in sandbox.received("pagerduty") if r["event"]["event_action"] == "trigger"]
    assert all(later - earlier >= WINDOW_S - 0.5 for earlier, later in zip(times, times[1:], strict=False)), times

    [notice] = sandbox.received("slack")  # only L1 is reached by Slack (the matrix: L2/L3 by phone)
    assert "<!subteam^S0ONCALL>: L1 On-call Dev, please acknowledge" in notice["text"] and summary in notice["text"]
    [channel] = sandbox.vendor("slack-api", "GET", "channels")
    said = [m["text"] for m in channel["messages"]]
    assert said[0].startswith("*P1 High* incident INC-") and "Escalated to L2 Tech Lead" in said[1]
    assert "Escalated to L3 CTO: L2 Tech Lead did not acknowledge in time" in said[2] and len(said) == 3

    record = await record_of(summary)
    assert record["levels_notified"] == ["L1", "L2", "L3"] and record["acknowledged_at"] is None
    kinds = [(e[1], e[4]) for e in record["events"]]
    assert kinds == [("declared", None), ("notified", "L1"), ("channel", None), ("status-page", None),
                     ("escalated", "L2"), ("notified", "L2"), ("escalated", "L3"), ("notified", "L3"),
                     ("unacknowledged", None)]
    markdown = (await artifacts_of(state.state_details.flow_run_id))["markdown"]
    assert f"## Incident {record['id']}: P1 High, OPEN" in markdown
    assert "| escalated | L3 | L2 Tech Lead did not acknowledge within 3 s; escalated to L3 CTO |" in markdown
    assert "| unacknowledged |  | **FAILED** no acknowledgement from L1, L2, L3 within their windows |" in markdown


async def test_an_acknowledgement_at_l2_stops_the_escalation_and_the_form_resolves_it(prefect_api, sandbox,
                                                                                      tmp_path):
    env, keys = env_file(sandbox, tmp_path)
    summary = f"Site down {secrets.token_hex(3)}"
    run = asyncio.create_task(declare_incident_flow(severity="P0", summary=summary, component="frontend",
                                                    declared_by="monitoring", env_file=str(env), return_state=True))
    flow_run = await incident_paused(summary, "ack-l2")
    form = await form_of(flow_run)
    assert "Waiting for L2 Tech Lead; escalates in 3 s" in form and summary in form
    # P0: the status page incident and the incident channel are open by now
    [opened] = sandbox.vendor("statuspage", "GET", "incidents")
    assert opened["action"] == "create" and opened["incident"]["impact_override"] == "critical"
    assert opened["incident"]["name"].startswith(summary) and "frontend" in opened["incident"]["body"]
    [channel] = sandbox.vendor("slack-api", "GET", "channels")
    assert channel["name"].startswith("inc-") and "-p0-site-down" in channel["name"]

    await aresume_flow_run(flow_run.id, run_input={"acknowledged_by": "tech lead", "note": "rolling back"})
    resolution = await incident_paused(summary, "resolution-1")  # resolution-0 passed unanswered: a reminder went out
    await asyncio.sleep(WINDOW_S + 1)  # L3's window would have run out by now
    assert [p["payload"]["custom_details"]["level"] for p in triggers(sandbox)] == ["L1", "L2"]
    await aresume_flow_run(resolution.id, run_input={"outcome": "resolved", "by": "tech lead",
                                                     "note": "rolled back to the previous deployment"})
    state = await asyncio.wait_for(run, 60)
    assert state.is_completed(), state
    report = await state.result()

    record = report["incident"]
    assert (record["acknowledged_by"], record["acknowledged_level"], record["resolved_by"]) == (
        "tech lead", "L2", "tech lead")
    assert WINDOW_S <= report["time_to_acknowledge_s"] < 900 and report["acknowledged_within_target"] is True
    assert report["resolution"].startswith("resolved in") and report["problems"] == []
    assert record["reminders"] >= 1 and record["levels_notified"] == ["L1", "L2"]

    events = sandbox.received("pagerduty")
    acted = [(e["event"]["event_action"], e["event"]["dedup_key"][-2:]) for e in events]
    assert acted[:2] == [("trigger", "l1"), ("trigger", "l2")]
    assert sorted(acted[2:4]) == [("acknowledge", "l1"), ("acknowledge", "l2")]
    assert sorted(acted[4:]) == [("resolve", "l1"), ("resolve", "l2")]
    trigger_keys = {e["event"]["dedup_key"]: e["event"]["routing_key"] for e in events[:2]}
    assert trigger_keys[events[0]["event"]["dedup_key"]] not in keys.values()
    assert trigger_keys[events[1]["event"]["dedup_key"]] == keys["L2"]
    # PagerDuty drops an acknowledge or resolve sent with another routing key than its alert's
    assert all(e["event"]["routing_key"] == trigger_keys[e["event"]["dedup_key"]] for e in events[2:])

    updates = sandbox.vendor("statuspage", "GET", "incidents")
    assert [u["action"] for u in updates] == ["create", "update"] and updates[1]["incident"]["status"] == "resolved"
    said = [m["text"] for m in sandbox.vendor("slack-api", "GET", "channels")[0]["messages"]]
    assert any("time for the status update" in t for t in said)
    assert any("acknowledged by tech lead (L2)" in t for t in said) and "resolved by tech lead" in said[-1]
    markdown = (await artifacts_of(state.state_details.flow_run_id))["markdown"]
    assert f"## Incident {record['id']}: P0 Critical, RESOLVED" in markdown
    assert "| acknowledged | L2 | by tech lead at L2: rolling back |" in markdown
    assert "- Declared: " in markdown and "by monitoring" in markdown


async def test_a_broken_slack_bot_is_reported_and_the_paging_goes_on(prefect_api, sandbox, tmp_path):
    env, _ = env_file(sandbox, tmp_path, bot_token="xoxb-revoked-token")
    summary = f"Major bug in launches {secrets.token_hex(3)}"
    run = asyncio.create_task(declare_incident_flow(severity="P1", summary=summary, component="backend",
                                                    env_file=str(env), return_state=True))
    flow_run = await incident_paused(summary, "ack-l1")
    assert [p["payload"]["custom_details"]["level"] for p in triggers(sandbox)] == ["L1"]  # paged despite the bot
    assert len(sandbox.received("slack")) == 1
    await aresume_flow_run(flow_run.id, run_input={"acknowledged_by": "on-call dev"})
    await incident_paused(summary, "resolution-0")

    record = await record_of(summary)  # resolve-incident, from another run, by the incident's id
    resolved = await resolve_incident_flow(incident_id=record["id"], resolved_by="on-call dev",
                                           note="hotfix deployed", env_file=str(env), return_state=True)
    assert resolved.is_completed(), resolved
    closed = await resolved.result()
    assert closed["state"] == "resolved" and closed["already_resolved"] is False
    again = await (await resolve_incident_flow(incident_id=record["id"], resolved_by="someone else",
                                               env_file=str(env), return_state=True)).result()
    assert again["already_resolved"] is True and again["incident"]["resolved_by"] == "on-call dev"
    updates = sandbox.vendor("statuspage", "GET", "incidents")
    assert [u["action"] for u in updates] == ["create", "update"]  # closed once

    state = await asyncio.wait_for(run, 30)  # it sees the resolution when its window ends
    assert state.is_failed()
    assert "incident channel: slack conversations.create: invalid_auth" in str(state.message)
    markdown = (await artifacts_of(state.state_details.flow_run_id))["markdown"]
    assert "| channel |  | **FAILED** slack conversations.create: invalid_auth |" in markdown
    assert ", RESOLVED" in markdown and "by on-call dev: hotfix deployed" in markdown
    assert sandbox.vendor("slack-api", "GET", "channels") == []
    assert "xoxb-revoked-token" not in markdown


async def test_bad_parameters_are_named(prefect_api, sandbox, tmp_path):
    env, _ = env_file(sandbox, tmp_path)
    state = await declare_incident_flow(severity="P2", summary="   ", env_file=str(env), return_state=True)
    assert state.is_failed() and "summary: must say what is wrong" in str(state.message)
    state = await resolve_incident_flow(incident_id="INC-20000101-0000-none00", resolved_by="x", env_file=str(env),
                                        return_state=True)
    assert state.is_failed() and "incident_id: no incident 'INC-20000101-0000-none00'" in str(state.message)
    assert sandbox.received("pagerduty") == [] and inc.SUMMARY_LIMIT == 200
