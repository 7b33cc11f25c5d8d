"""The severity model, the escalation plan and the incident's timeline: pure, no network."""

from __future__ import annotations

import json
import re

import pytest

from runbook import settings as config
from runbook.config_types import Severity
from runbook.procedures import incidents as inc
from runbook.procedures.emergency import StatusPageTarget
from runbook.procedures.incidents import AffectedComponent, Incident, Incidents

T0 = 1_717_234_200.0  # 2024-06-01 09:30:00 UTC


def incident(severity: Severity = Severity.P0, summary: str = "Site down: frontend answers 502") -> Incident:
    i = Incident(inc.incident_id(T0, "0f3c9a1b-aaaa"), "production", severity, summary, AffectedComponent.frontend, T0)
    i.add(T0, "declared", f"{severity.value}: {summary}")
    return i


def test_the_severity_model_has_the_runbooks_targets_and_examples():
    cfg = Incidents()
    got = {s.value: (p.title, p.respond_within_s, p.examples) for s, p in cfg.severities.items()}
    assert got == {"P0": ("Critical", 900, ["Site down", "Data breach"]),
                   "P1": ("High", 3600, ["Payment failure", "Major bug"]),
                   "P2": ("Medium", 14400, ["Feature broken", "Slow performance"]),
                   "P3": ("Low", 86400, ["Minor bug", "UI issue"])}
    assert [p.status_page for p in cfg.severities.values()] == ["critical", "major", None, None]
    assert [p.status_updates for p in cfg.severities.values()] == [True, False, False, False]


def test_the_escalation_matrix_defaults_to_the_runbooks():
    levels = [(lv.level, lv.contact, lv.methods, lv.window_s) for lv in Incidents().levels]
    assert levels == [("L1", "On-call Dev", ["slack", "pagerduty"], 900), ("L2", "Tech Lead", ["pagerduty"], 1800),
                      ("L3", "CTO", ["pagerduty"], 3600)]


def test_a_file_sets_only_what_differs_and_the_rest_keeps_the_runbooks_value():
    cfg = config.parse({"environment": "t", "incidents": {"severities": {"P0": {"respond_within_s": 60}},
                                                            "levels": [{"level": "L1", "contact": "ops",
                                                                        "methods": ["slack"], "window_s": 2}]}})
    assert cfg.incidents is not None
    p0 = cfg.incidents.policy(Severity.P0)
    assert (p0.respond_within_s, p0.title, p0.examples) == (60, "Critical", ["Site down", "Data breach"])
    assert cfg.incidents.policy(Severity.P3).respond_within_s == 86400
    assert [lv.level for lv in cfg.incidents.levels] == ["L1"]


@pytest.mark.parametrize(("section", "field"), [
    ({"levels": [{"level": "L2", "contact": "x", "methods": ["slack"], "window_s": 1}]},
     "incidents.levels: must be L1, L2"),
    ({"levels": [{"level": "L1", "contact": "x", "methods": ["fax"], "window_s": 1}]}, "incidents.levels[0].methods"),
    ({"levels": [{"level": "L1", "contact": "x", "methods": ["slack"], "window_s": 0}]},
     "incidents.levels[0].window_s"),
    ({"severities": {"P5": {"respond_within_s": 1}}}, "incidents.severities.P5"),
    ({"severities": {"P1": {"respond_within_s": -1}}}, "incidents.severities.P1.respond_within_s"),
    ({"slack": {"bot_token": {"env": "T"}, "channel_prefix": "Inc Channel"}}, "incidents.slack.channel_prefix"),
    ({"status_update_every_s": 0}, "incidents.status_update_every_s"),
])
def test_bad_incident_settings_name_the_field(section, field):
    with pytest.raises(config.ConfigError) as err:
        config.parse({"environment": "t", "incidents": section})
    assert any(field in p for p in err.value.problems), err.value.problems


def test_the_bot_token_and_level_keys_are_secrets_of_the_environment():
    cfg = config.parse({"environment": "t", "incidents": {
        "slack": {"bot_token": {"env": "SLACK_BOT"}},
        "levels": [{"level": "L1", "contact": "a", "methods": ["pagerduty"], "window_s": 1,
                    "pagerduty_routing_key": {"env": "PD_L1"}}]}})
    assert {r.describe() for r in cfg.secret_refs()} >= {"env:SLACK_BOT", "env:PD_L1"}


def test_p0_and_p1_walk_the_matrix_each_level_with_its_window():
    cfg = Incidents()
    for severity in (Severity.P0, Severity.P1):
        plan = inc.escalation_plan(cfg, severity)
        assert [(s.level.level, s.wait_s) for s in plan] == [("L1", 900), ("L2", 1800), ("L3", 3600)]


def test_p2_and_p3_give_l1_the_whole_response_time_and_do_not_escalate():
    cfg = Incidents()
    assert [(s.level.level, s.wait_s) for s in inc.escalation_plan(cfg, Severity.P2)] == [("L1", 14400)]
    assert [(s.level.level, s.wait_s) for s in inc.escalation_plan(cfg, Severity.P3)] == [("L1", 86400)]


def test_paging_follows_page_at():
    assert inc.pages(Severity.P0, Severity.P1) and inc.pages(Severity.P1, Severity.P1)
    assert not inc.pages(Severity.P2, Severity.P1)
    assert inc.pages(Severity.P2, Severity.P2)


def test_time_to_acknowledge_is_measured_against_the_response_time():
    policy = Incidents().policy(Severity.P0)
    i = incident()
    assert i.acknowledge_verdict(policy, T0 + 300) == (None, "not yet acknowledged (5 min of the 15 min target)")
    ok, text = i.acknowledge_verdict(policy, T0 + 1000)
    assert ok is False and "NOT acknowledged after 16 min 40 s" in text and "MISSED" in text
    assert i.acknowledge(T0 + 252, "alice", "L1", "looking at Vercel")
    assert not i.acknowledge(T0 + 400, "bob", "L2")  # the first acknowledgement stands
    assert (i.acknowledged_by, i.acknowledged_level, i.time_to_acknowledge_s) == ("alice", "L1", 252)
    assert i.acknowledge_verdict(policy, T0 + 5000) == (True, "acknowledged in 4 min 12 s, within the 15 min target")
    late = incident()
    late.acknowledge(T0 + 1900, "carol", "L2")
    assert late.acknowledge_verdict(policy, T0 + 2000) == (False, "acknowledged in 31 min 40 s: the 15 min target "
                                                                  "was MISSED")


def test_time_to_resolve_needs_a_target_to_be_judged():
    i = incident()
    no_target = Incidents().policy(Severity.P0)
    assert i.resolve_verdict(no_target) == (None, "not yet resolved")
    assert i.resolve(T0 + 5400, "alice", "rolled back")
    assert not i.resolve(T0 + 6000, "bob")
    assert i.resolve_verdict(no_target) == (None, "resolved in 1 h 30 min (no resolution target set)")
    target = no_target.model_copy(update={"resolve_within_s": 3600})
    assert i.resolve_verdict(target) == (False, "resolved in 1 h 30 min: the 1 h target was MISSED")
    assert i.state == "resolved" and i.events[-1].detail == "by alice: rolled back"


def test_the_states_follow_the_milestones():
    i = incident()
    assert i.state == "open"
    i.acknowledge(T0 + 60, "a", "L1")
    assert i.state == "acknowledged"
    i.mitigate(T0 + 120, "a", "traffic shifted")
    assert i.state == "mitigated"
    i.resolve(T0 + 180, "a")
    assert i.state == "resolved"
    assert [e.kind for e in i.events] == ["declared", "acknowledged", "mitigated", "resolved"]


def test_the_record_round_trips_and_a_damaged_one_is_refused():
    i = incident()
    i.add(T0 + 1, "notified", "On-call Dev: slack: delivered; pagerduty: accepted", level="L1")
    i.levels_notified.append("L1")
    i.channel, i.channel_name = "C0123", "inc-20240601-0930-0f3c9a-p0-site-down"
    back = Incident.from_dict(json.loads(json.dumps(i.stored())))
    assert back.to_dict() == i.to_dict()
    with pytest.raises(ValueError, match="not an incident record"):
        Incident.from_dict({"id": "INC-1", "severity": "P9"})


def test_the_stored_record_fits_a_prefect_variable_however_long_the_timeline():
    i = incident()
    for n in range(60):
        i.add(T0 + n, "reminder", "x" * 400, level="L1")
    data = i.stored()
    assert len(json.dumps(data)) <= inc.RECORD_LIMIT < 5000
    assert len(data["events"]) == 61  # every event kept; only details shortened
    assert data["events"][0][2].startswith("P0: Site down")


def test_merging_keeps_a_resolution_made_by_another_run():
    mine = incident()
    mine.acknowledge(T0 + 60, "alice", "L1")
    stored = Incident.from_dict(mine.stored())
    stored.resolve(T0 + 600, "bob", "fixed")  # resolve-incident, from another run
    mine.reminders = 2
    mine.add(T0 + 700, "reminder", "status update reminder 2")
    merged = mine.merge(stored)
    assert (merged.resolved_by, merged.resolved_at, merged.acknowledged_by) == ("bob", T0 + 600, "alice")
    assert [e.kind for e in merged.events] == ["declared", "acknowledged", "resolved", "reminder"]
    assert merged.reminders == 2
    with pytest.raises(ValueError):
        mine.merge(Incident("INC-other", "production", Severity.P1, "other", AffectedComponent.api, T0))


def test_the_id_is_readable_and_fixed_by_the_declaring_run():
    a = inc.incident_id(T0, "0f3c9a1b-aaaa-bbbb")
    assert a == "INC-20240601-0930-0f3c9a" == inc.incident_id(T0, "0f3c9a1b-aaaa-bbbb")
    assert inc.incident_id(T0, "ffffff00") != a


def test_channel_names_follow_slacks_rules():
    i = incident(summary="Site DOWN!! Frontend answers 502 after the 14:00 deploy, users can't launch tokens")
    name = inc.channel_name("inc", i)
    assert re.fullmatch(r"[a-z0-9_-]{1,80}", name), name
    assert name.startswith("inc-20240601-0930-0f3c9a-p0-site-down-frontend")
    assert inc.channel_name("inc", incident(summary="!!!")) == "inc-20240601-0930-0f3c9a-p0"


def test_variable_names_take_only_what_prefect_allows():
    name = inc.variable_name("Production", "INC-20240601-0930-0f3c9a")
    assert name == "tfops-incident-production-inc-20240601-0930-0f3c9a"


def test_the_status_page_gets_p0_and_p1_with_the_severitys_impact_and_the_components():
    sp = StatusPageTarget(page_id="page1", api_key={"env": "SP"}, status_url="https://status.example",
                          component_ids=["api1", "web1"])
    cfg = Incidents(statuspage_components={AffectedComponent.frontend: ["web1"]})
    i = incident()
    p0 = inc.status_page_for(cfg, sp, i, cfg.policy(Severity.P0))
    assert p0 is not None
    assert (p0.incident_name, p0.impact, p0.component_ids, p0.component_status) == (
        "Site down: frontend answers 502 (INC-20240601-0930-0f3c9a)", "critical", ["web1"], "major_outage")
    p1 = inc.status_page_for(Incidents(), sp, incident(Severity.P1), cfg.policy(Severity.P1))
    assert p1 is not None and (p1.impact, p1.component_ids, p1.component_status) == (
        "major", ["api1", "web1"], "partial_outage")
    assert inc.status_page_for(cfg, sp, incident(Severity.P2), cfg.policy(Severity.P2)) is None
    assert inc.status_page_for(cfg, None, i, cfg.policy(Severity.P0)) is None


def test_notices_name_the_level_and_why():
    cfg = Incidents()
    i = incident()
    l1, l2 = cfg.levels[0], cfg.levels[1]
    first = inc.notice_text(i, cfg.policy(Severity.P0), l1, None)
    assert "P0 incident INC-20240601-0930-0f3c9a (production): Site down" in first
    assert "L1 On-call Dev, please acknowledge" in first and "Respond within 15 min" in first
    later = inc.notice_text(i, cfg.policy(Severity.P0), l2, "L1 On-call Dev")
    assert "Escalated to L2 Tech Lead: L1 On-call Dev did not acknowledge in time" in later
    assert inc.dedup_key(i, l1) != inc.dedup_key(i, l2)


def test_the_timeline_reads_like_the_runbook():
    cfg = Incidents()
    policy = cfg.policy(Severity.P0)
    i = incident()
    i.add(T0 + 2, "notified", "On-call Dev: slack: delivered", level="L1")
    i.add(T0 + 3, "channel", "slack conversations.create: invalid_auth", ok=False)
    i.add(T0 + 900, "escalated", "L1 On-call Dev did not acknowledge within 15 min; escalated to L2", level="L2")
    i.acknowledge(T0 + 1000, "bob", "L2")
    md = i.markdown(policy, T0 + 1200)
    assert md.startswith("## Incident INC-20240601-0930-0f3c9a: P0 Critical, ACKNOWLEDGED")
    assert "acknowledged in 16 min 40 s: the 15 min target was MISSED" in md
    assert "| 2024-06-01 09:30:03 | 3 s | channel |  | **FAILED** slack conversations.create: invalid_auth |" in md
    assert "| 2024-06-01 09:45:00 | 15 min | escalated | L2 |" in md
    assert [r["event"] for r in i.rows()] == ["declared", "notified", "channel", "escalated", "acknowledged"]


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (59.6, "1 min"), (252, "4 min 12 s"), (900, "15 min"),
                                               (3600, "1 h"), (7500, "2 h 05 min"), (86400, "24 h")])
def test_durations_read_as_people_say_them(seconds, text):
    assert inc.duration(seconds) == text
