"""Atlassian Statuspage double: the manage API's incidents and the page's public status JSON.

Shapes from shared/vendors/statuspage.md:
- `POST /v1/pages/{page_id}/incidents` with `Authorization: OAuth <api key>` and the body
  `{"incident": {name, status, impact_override, body, component_ids, components,
  deliver_notifications}}` (the form-encoded `incident[name]=...` variant is accepted too); the
  answer is the incident object of the note (id, page_id, name, status, impact, impact_override,
  shortlink, created_at, updated_at, started_at, monitoring_at, resolved_at, postmortem_body,
  incident_updates[], components[]).
- `PATCH` (or `PUT`) `/v1/pages/{page_id}/incidents/{incident_id}`: a new `status` and/or `body`
  adds an incident update; `resolved` closes the incident.
- Public Status API, no auth: `GET /api/v2/status.json` (indicator = the worst impact among
  unresolved incidents) and `GET /api/v2/incidents/unresolved.json` (`{"page", "incidents"}`).

Where the note marks a shape unconfirmed, this double assumes: 201 for a created incident;
`{"error": "..."}` bodies for 401, 404 and 422; an over-limit answer of HTTP 420 (or 429, by knob)
with `Retry-After: 60`.

Knobs, on the hub's control port:
- `GET /vendors/statuspage/incidents` lists what was received (each create/update request's
  incident body, with the incident id it produced); `DELETE` clears incidents and records.
- `POST /vendors/statuspage/config` `{"throttle": 420 | 429 | null}` answers every manage-API call
  with that rate-limit status; `GET` shows it; `DELETE` restores the default (no throttle).
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response

SANDBOX_PAGE_ID = "tfsandboxpage"
SANDBOX_API_KEY = "statuspage-sandbox-api-key"  # noqa: S105 - the double's fixed key, not a credential
# The page's components, by id: the ones an emergency marks as down.
SANDBOX_COMPONENTS = {"tfapi0000001": "API", "tfweb0000001": "Website", "tfchain00001": "Smart contracts"}

REALTIME_STATUSES = ("investigating", "identified", "monitoring", "resolved")
IMPACTS = ("none", "minor", "major", "critical")
COMPONENT_STATUSES = ("operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance")
RETRY_AFTER_S = 60


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _error(message: str, status: int) -> Response:
    return Response.json({"error": message}, status)


def _form_incident(body: bytes) -> dict[str, Any]:
    """`incident[name]=x&incident[component_ids][]=c&incident[components][c]=major_outage` as a dict."""
    incident: dict[str, Any] = {}
    for key, value in parse_qsl(body.decode("utf-8"), keep_blank_values=True):
        if not key.startswith("incident[") or not key.endswith("]"):
            raise ValueError(f"form field {key!r} is not incident[...]")
        parts = key.removeprefix("incident[").removesuffix("]").split("][")
        if parts[0] == "component_ids":
            incident.setdefault("component_ids", []).append(value)
        elif parts[0] == "components" and len(parts) == 2:
            incident.setdefault("components", {})[parts[1]] = value
        elif parts[0] == "deliver_notifications":
            incident["deliver_notifications"] = value.lower() in ("true", "1")
        elif len(parts) == 1:
            incident[parts[0]] = value
        else:
            raise ValueError(f"form field {key!r} is not understood")
    return incident


def _problems(incident: dict[str, Any], components: dict[str, str], creating: bool) -> list[str]:
    problems = []
    if creating and not str(incident.get("name") or "").strip():
        problems.append("name can't be blank")
    status = incident.get("status")
    if status is not None and status not in REALTIME_STATUSES:
        problems.append(f"status must be one of {', '.join(REALTIME_STATUSES)}")
    impact = incident.get("impact_override")
    if impact is not None and impact not in IMPACTS:
        problems.append(f"impact_override must be one of {', '.join(IMPACTS)}")
    ids = incident.get("component_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        problems.append("component_ids must be a list of component ids")
        ids = []
    states = incident.get("components", {})
    if not isinstance(states, dict):
        problems.append("components must map component ids to statuses")
        states = {}
    for cid in [*ids, *states]:
        if cid not in components:
            problems.append(f"component {cid} not found on this page")
    for cid, state in states.items():
        if state not in COMPONENT_STATUSES:
            problems.append(f"components.{cid} must be one of {', '.join(COMPONENT_STATUSES)}")
    return problems


class Statuspage:
    """One page with a fixed set of components."""

    def __init__(self, api_key: str = SANDBOX_API_KEY, page_id: str = SANDBOX_PAGE_ID,
                 components: dict[str, str] | None = None) -> None:
        self.api_key = api_key
        self.page_id = page_id
        self.components = dict(components or SANDBOX_COMPONENTS)
        self.component_status = dict.fromkeys(self.components, "operational")
        self.incidents: dict[str, dict[str, Any]] = {}
        self.received: list[dict[str, Any]] = []
        self.throttle: int | None = None

    # -- the manage API ------------------------------------------------------------------------

    async def __call__(self, request: Request, fault: Fault) -> Response:
        parts = request.path.strip("/").split("/")
        if request.method == "GET" and parts[:2] == ["api", "v2"]:
            return self._public(parts[2:])
        if parts[:2] != ["v1", "pages"] or len(parts) < 4 or parts[3] != "incidents":
            return _error("Not found", 404)
        if request.headers.get("authorization") != f"OAuth {self.api_key}":
            return _error("Could not authenticate", 401)
        if self.throttle is not None:
            response = _error("Rate limit exceeded", self.throttle)
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        if parts[2] != self.page_id:
            return _error("Page not found", 404)
        try:
            incident = self._incident_body(request)
        except ValueError as exc:
            return _error(f"invalid incident: {exc}", 400)
        if len(parts) == 4 and request.method == "POST":
            return self._create(incident)
        if len(parts) == 5 and request.method in ("PATCH", "PUT"):
            return self._update(parts[4], incident)
        return _error("Not found", 404)

    def _incident_body(self, request: Request) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return _form_incident(request.body)
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("incident"), dict):
            raise ValueError('the body must be {"incident": {...}}')
        return dict(body["incident"])

    def _create(self, incident: dict[str, Any]) -> Response:
        problems = _problems(incident, self.components, creating=True)
        if problems:
            return _error("; ".join(problems), 422)
        now = _now()
        incident_id = secrets.token_hex(6)
        status = incident.get("status", "investigating")
        impact = incident.get("impact_override") or "none"
        states = dict(incident.get("components", {}))
        for cid in incident.get("component_ids", []):
            states.setdefault(cid, "major_outage")
        self.component_status.update(states)
        stored = {
            "id": incident_id, "page_id": self.page_id, "name": incident["name"], "status": status,
            "impact": impact, "impact_override": incident.get("impact_override"),
            "shortlink": f"https://stspg.io/{incident_id[:6]}", "created_at": now, "updated_at": now,
            "started_at": now, "monitoring_at": None, "resolved_at": None, "postmortem_body": None,
            "incident_updates": [self._update_entry(status, incident.get("body", ""), now,
                                                    incident.get("deliver_notifications", True), states)],
            "component_ids": list(states),
        }
        self.incidents[incident_id] = stored
        self.received.append({"received_at": time.time(), "action": "create", "incident_id": incident_id,
                              "incident": incident})
        return Response.json(self._shape(stored), 201)

    def _update(self, incident_id: str, incident: dict[str, Any]) -> Response:
        stored = self.incidents.get(incident_id)
        if stored is None:
            return _error("Incident not found", 404)
        problems = _problems(incident, self.components, creating=False)
        if problems:
            return _error("; ".join(problems), 422)
        now = _now()
        status = incident.get("status", stored["status"])
        states = dict(incident.get("components", {}))
        self.component_status.update(states)
        stored["status"], stored["updated_at"] = status, now
        if status == "monitoring" and stored["monitoring_at"] is None:
            stored["monitoring_at"] = now
        if status == "resolved":
            stored["resolved_at"] = now
        if "name" in incident:
            stored["name"] = incident["name"]
        stored["incident_updates"].insert(0, self._update_entry(status, incident.get("body", ""), now,
                                                                incident.get("deliver_notifications", True), states))
        self.received.append({"received_at": time.time(), "action": "update", "incident_id": incident_id,
                              "incident": incident})
        return Response.json(self._shape(stored))

    @staticmethod
    def _update_entry(status: str, body: str, now: str, notify: bool, states: dict[str, str]) -> dict[str, Any]:
        return {"id": secrets.token_hex(6), "status": status, "body": body, "created_at": now, "display_at": now,
                "affected_components": [{"code": c, "new_status": s} for c, s in states.items()] or None,
                "deliver_notifications": bool(notify)}

    def _shape(self, stored: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in stored.items() if k != "component_ids"}
        out["components"] = [{"id": c, "name": self.components[c], "status": self.component_status[c]}
                             for c in stored["component_ids"]]
        return out

    # -- the public Status API -----------------------------------------------------------------

    def _page(self) -> dict[str, Any]:
        return {"id": self.page_id, "name": "TokenForge", "url": "https://status.tokenforge.example",
                "time_zone": "Etc/UTC", "updated_at": _now()}

    def _public(self, parts: list[str]) -> Response:
        unresolved = [self._shape(i) for i in self.incidents.values() if i["status"] != "resolved"]
        if parts == ["status.json"]:
            worst = max((IMPACTS.index(i["impact"]) for i in unresolved), default=0)
            indicator = IMPACTS[worst]
            description = "All Systems Operational" if indicator == "none" else f"{indicator.title()} outage"
            return Response.json({"page": self._page(), "status": {"indicator": indicator,
                                                                   "description": description}})
        if parts == ["incidents", "unresolved.json"]:
            return Response.json({"page": self._page(), "incidents": unresolved})
        return _error("Not found", 404)

    # -- knobs ---------------------------------------------------------------------------------

    async def control(self, request: Request) -> Response | None:
        what = request.path.strip("/").split("/")[2:]  # after "vendors/statuspage"
        if what == ["incidents"]:
            if request.method == "DELETE":
                cleared = len(self.received)
                self.incidents.clear()
                self.received.clear()
                self.component_status = dict.fromkeys(self.components, "operational")
                return Response.json({"cleared": cleared})
            return Response.json(self.received)
        if what == ["config"]:
            if request.method == "DELETE":
                self.throttle = None
            elif request.method == "POST":
                try:
                    throttle = request.json().get("throttle")
                    if throttle not in (None, 420, 429):
                        raise ValueError("throttle takes 420, 429 or null")
                except (ValueError, AttributeError) as exc:
                    return Response.json({"error": f"statuspage config: {exc}"}, 400)
                self.throttle = throttle
            return Response.json({"throttle": self.throttle})
        return None


def build(plan: dict[str, Any]) -> Statuspage:
    return Statuspage(plan.get("vendor_keys", {}).get("statuspage") or SANDBOX_API_KEY)
