"""Sentry double: a project's issue list as shared/vendors/sentry.md documents it.

`GET /api/0/projects/{org}/{project}/issues/` with `Authorization: Bearer <token>`, a JSON array
of issues (`count` a string, `userCount` an int), Link-header cursor pagination with both
`previous` and `next` and their `results`/`cursor` attributes, and the `X-Sentry-Rate-Limit-*`
headers on every response.

Assumptions, where the doc marks a shape unconfirmed:
- error bodies follow the DRF convention the doc suggests (`{"detail": "..."}`, section 4);
- the page size is 100 unless the `per_page` knob says otherwise (section 2);
- issues come most recently seen first (the list's order is not in the doc);
- `substatus` ("new" | "ongoing" | "regressed") is taken from Sentry's source, not the endpoint
  page, which names no regression marker.

Knobs, on the hub's control port:
- `POST /vendors/sentry/issues` `{project, title, level?, count?, firstSeen?, lastSeen?, regressed?,
  culprit?, userCount?, status?}` adds an issue (or a list of them); times are ISO-8601 or a number
  of seconds ago; `firstSeen` defaults to now (10 days ago when `regressed`), `lastSeen` to now.
  `GET` lists; `DELETE` clears.
- `POST /vendors/sentry/config` `{per_page?}`; `GET` shows it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response

SANDBOX_TOKEN = "sntrys_tokenforge_sandbox_token_not_a_secret"  # noqa: S105 - the double's fixed test token
SANDBOX_ORG = "tokenforge"
SANDBOX_PROJECTS = ("tokenforge-web", "tokenforge-backend")
DEFAULT_PER_PAGE = 100
RATE_LIMIT = 40  # requests per one-second window, reported only
UNAUTHENTICATED = {"detail": "Authentication credentials were not provided."}  # doc's suggestion
NOT_FOUND = {"detail": "The requested resource does not exist"}  # doc's suggestion
NEW_FOR = timedelta(days=7)  # Sentry calls an issue "new" for its first week (substatus; unconfirmed)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, default: datetime) -> datetime:
    if value is None:
        return default
    if isinstance(value, int | float):  # seconds ago, a convenience for drills
        return datetime.now(UTC) - timedelta(seconds=float(value))
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class SentryApi:
    """The issues endpoint of one organization with a fixed set of projects."""

    def __init__(self, token: str = SANDBOX_TOKEN, org: str = SANDBOX_ORG,
                 projects: tuple[str, ...] = SANDBOX_PROJECTS) -> None:
        self.token = token
        self.org = org
        self.projects = {slug: str(i + 1) for i, slug in enumerate(projects)}
        self.issues: list[dict[str, Any]] = []
        self.per_page = DEFAULT_PER_PAGE
        self._next_id = 1
        self._short_ids: dict[str, int] = {}
        self._window = (0, 0)  # (window start second, requests in it)

    @classmethod
    def from_plan(cls, plan: dict[str, Any]) -> SentryApi:
        return cls(plan.get("vendor_keys", {}).get("sentry") or SANDBOX_TOKEN)

    # -- the documented endpoint ---------------------------------------------------------------

    def _rate_headers(self) -> dict[str, str]:
        second = int(time.time())
        start, used = self._window
        used = used + 1 if start == second else 1
        self._window = (second, used)
        return {
            "X-Sentry-Rate-Limit-Limit": str(RATE_LIMIT),
            "X-Sentry-Rate-Limit-Remaining": str(max(RATE_LIMIT - used, 0)),
            "X-Sentry-Rate-Limit-Reset": str(second + 1),
            "X-Sentry-Rate-Limit-ConcurrentLimit": "25",
            "X-Sentry-Rate-Limit-ConcurrentRemaining": "24",
        }

    async def __call__(self, request: Request, fault: Fault) -> Response:
        headers = self._rate_headers()
        parts = request.path.strip("/").split("/")
        if request.method != "GET" or len(parts) != 6 or parts[:3] != ["api", "0", "projects"] or parts[5] != "issues":
            return Response.json(NOT_FOUND, 404, headers)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Response.json(UNAUTHENTICATED, 401, headers)
        org, project = parts[3], parts[4]
        if org != self.org or project not in self.projects:
            return Response.json(NOT_FOUND, 404, headers)
        query = request.query.get("query", ["is:unresolved"])[0]
        stats_period = request.query.get("statsPeriod", ["24h"])[0]
        cursor = request.query.get("cursor", ["0:0:0"])[0]
        try:
            offset = int(cursor.split(":")[1])
        except (IndexError, ValueError):
            return Response.json({"detail": "Invalid cursor parameter."}, 400, headers)
        chosen = [i for i in self.issues if i["project"]["slug"] == project]
        if "is:unresolved" in query.split():
            chosen = [i for i in chosen if i["status"] == "unresolved"]
        chosen.sort(key=lambda i: (i["lastSeen"], i["id"]), reverse=True)
        page = chosen[offset : offset + self.per_page]
        body = [self._shape(i, stats_period, request) for i in page]
        headers["Link"] = self._link(request, project, offset, len(chosen))
        return Response.json(body, 200, headers)

    def _link(self, request: Request, project: str, offset: int, total: int) -> str:
        host = request.headers.get("host", "127.0.0.1")
        base = f"http://{host}/api/0/projects/{self.org}/{project}/issues/"
        params = {k: v[0] for k, v in request.query.items() if k != "cursor"}
        prev_offset = max(offset - self.per_page, 0)
        next_offset = offset + self.per_page
        links = []
        for rel, cursor, results in (
            ("previous", f"0:{prev_offset}:1", offset > 0),
            ("next", f"0:{next_offset}:0", next_offset < total),
        ):
            url = base + "?" + urlencode({**params, "cursor": cursor})
            links.append(f'<{url}>; rel="{rel}"; results="{"true" if results else "false"}"; cursor="{cursor}"')
        return ", ".join(links)

    def _shape(self, issue: dict[str, Any], stats_period: str, request: Request) -> dict[str, Any]:
        host = request.headers.get("host", "127.0.0.1")
        out = {k: v for k, v in issue.items() if not k.startswith("_")}
        slug = issue["project"]["slug"]
        out["permalink"] = f"http://{host}/{self.org}/{slug}/issues/{issue['id']}/"  # the doc example's form
        if stats_period:
            out["stats"] = {stats_period: self._stats(issue, stats_period)}
        return out

    @staticmethod
    def _stats(issue: dict[str, Any], period: str) -> list[list[float]]:
        """Hourly points for 24h (daily for 14d), `[unix_seconds, count]`, the events spread evenly
        over the points since the issue was first seen."""
        step, points = (3600, 24) if period == "24h" else (86400, 14)
        now = int(time.time()) // step * step
        first = datetime.fromisoformat(issue["firstSeen"]).timestamp()
        slots = [now - step * (points - 1 - k) for k in range(points)]
        live = [t for t in slots if t + step > first] or slots[-1:]
        total = int(issue["count"])
        counts = {t: total // len(live) + (1 if k < total % len(live) else 0) for k, t in enumerate(live)}
        return [[float(t), counts.get(t, 0)] for t in slots]

    # -- knobs -------------------------------------------------------------------------------

    def add(self, spec: dict[str, Any]) -> dict[str, Any]:
        project = spec.get("project")
        if project not in self.projects:
            raise ValueError(f"unknown project {project!r}; projects: {', '.join(self.projects)}")
        if not spec.get("title"):
            raise ValueError("an issue needs a title")
        now = datetime.now(UTC)
        regressed = bool(spec.get("regressed", False))
        first_seen = _parse_time(spec.get("firstSeen"), now - timedelta(days=10) if regressed else now)
        last_seen = _parse_time(spec.get("lastSeen"), now)
        count = int(spec.get("count", 1))
        if count < 1:
            raise ValueError("count must be at least 1")
        number = self._short_ids.get(project, 0) + 1
        self._short_ids[project] = number
        issue_id = str(self._next_id)
        self._next_id += 1
        substatus = "regressed" if regressed else ("new" if now - first_seen < NEW_FOR else "ongoing")
        issue = {
            "id": issue_id,
            "shortId": f"{project.upper()}-{number}",
            "title": str(spec["title"]),
            "culprit": str(spec.get("culprit", "")),
            "permalink": None,
            "level": str(spec.get("level", "error")),
            "status": str(spec.get("status", "unresolved")),
            "statusDetails": {},
            "substatus": substatus,
            "firstSeen": _iso(first_seen),
            "lastSeen": _iso(max(last_seen, first_seen)),
            "count": str(count),
            "userCount": int(spec.get("userCount", 0)),
            "project": {"id": self.projects[project], "name": project, "slug": project, "platform": "javascript"},
            "metadata": {"title": str(spec["title"])},
            "type": "error",
            "logger": None,
            "isBookmarked": False,
            "isPublic": False,
            "isSubscribed": True,
            "hasSeen": False,
            "numComments": 0,
            "shareId": None,
            "assignedTo": None,
            "annotations": [],
        }
        self.issues.append(issue)
        return issue

    async def control(self, request: Request) -> Response | None:
        what = request.path.strip("/").split("/")[2:]  # after "vendors/sentry"
        if what == ["issues"]:
            if request.method == "GET":
                return Response.json(self.issues)
            if request.method == "DELETE":
                cleared, self.issues = len(self.issues), []
                self._short_ids.clear()
                return Response.json({"cleared": cleared})
            if request.method == "POST":
                try:
                    body = request.json()
                    specs = body if isinstance(body, list) else [body]
                    added = [self.add(dict(spec)) for spec in specs]
                except (ValueError, TypeError) as exc:
                    return Response.json({"error": f"sentry issues: {exc}"}, 400)
                return Response.json({"added": [i["shortId"] for i in added], "total": len(self.issues)})
        if what == ["config"]:
            if request.method == "DELETE":
                self.per_page = DEFAULT_PER_PAGE
                return Response.json({"per_page": self.per_page})
            if request.method == "POST":
                try:
                    per_page = int(request.json().get("per_page", self.per_page))
                    if not 1 <= per_page <= 100:
                        raise ValueError("per_page takes 1 to 100")
                except (ValueError, TypeError, AttributeError) as exc:
                    return Response.json({"error": f"sentry config: {exc}"}, 400)
                self.per_page = per_page
            if request.method in ("GET", "POST"):
                return Response.json({"per_page": self.per_page, "org": self.org, "projects": list(self.projects)})
        return None
