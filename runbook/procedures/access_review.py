"""Monthly Maintenance 3, Security Audit: "Review access logs".

The login records come from a Convex query function of the platform (`login_events_function`),
paginated the way Convex paginates (docs.convex.dev/database/pagination: the argument
`paginationOpts: {numItems, cursor}` and the answer `{page, isDone, continueCursor}`); each record is
`{"user": id, "source": ip | null, "admin": bool, "ok": bool, "at": ms}`.

Two findings, each over the review window (the last `window_days`):
- a login from a new place: a successful login by a user from a source that user did not log in
  from in the `baseline_days` before the window. Admins' new places fail the check; everyone's are
  listed (or fail too, with `new_place_scope = "everyone"`).
- failed admin logins: more than `failed_admin_threshold` fail the check.
A log that cannot be read (or is cut off) makes both checks `unknown` with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import httpx
from pydantic import Field, SecretStr

from runbook.checks import CheckResult, Status
from runbook.clients import convex_query
from runbook.config_types import HttpUrl, SecretRef, Severity, Strict

ITEM = "Security Audit"
GROUP = "security-audit"
MAX_ROWS = 50


class AccessReview(Strict):
    convex_url: HttpUrl
    convex_deploy_key: SecretRef | None = None
    login_events_function: str = Field(default="security:loginEvents",
                                       pattern=r"^[A-Za-z0-9_/.-]+:[A-Za-z0-9_]+$")
    window_days: Annotated[int, Field(ge=1, le=366)] = 30
    baseline_days: Annotated[int, Field(ge=1, le=730)] = 90
    new_place_scope: Literal["admins", "everyone"] = "admins"
    failed_admin_threshold: Annotated[int, Field(ge=0)] = 0
    severity: Severity = Severity.P2
    page_size: Annotated[int, Field(ge=1, le=8192)] = 1000
    max_events: Annotated[int, Field(ge=1, le=10_000_000)] = 1_000_000
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10


@dataclass(frozen=True)
class LoginEvent:
    user: str
    source: str | None
    admin: bool
    ok: bool
    at_ms: int


def parse_event(value: Any) -> LoginEvent:
    if not isinstance(value, dict):
        raise ValueError("a login record is not an object")
    user, source, at = value.get("user"), value.get("source"), value.get("at")
    if not isinstance(user, str) or not user:
        raise ValueError("a login record has no 'user'")
    if source is not None and not isinstance(source, str):
        raise ValueError("a login record's 'source' is not a string or null")
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise ValueError("a login record's 'at' is not milliseconds")
    if not isinstance(value.get("ok"), bool) or not isinstance(value.get("admin", False), bool):
        raise ValueError("a login record's 'ok' / 'admin' is not true or false")
    return LoginEvent(user, source or None, bool(value.get("admin", False)), value["ok"], int(at))


def parse_page(value: Any) -> tuple[list[LoginEvent], bool, str]:
    if not isinstance(value, dict) or not isinstance(value.get("page"), list) \
            or not isinstance(value.get("isDone"), bool) or not isinstance(value.get("continueCursor"), str):
        raise ValueError("expected {'page': [...], 'isDone': bool, 'continueCursor': str}")
    return [parse_event(e) for e in value["page"]], value["isDone"], value["continueCursor"]


@dataclass(frozen=True)
class NewPlace:
    user: str
    source: str
    admin: bool
    first_ms: int
    logins: int


@dataclass(frozen=True)
class FailedAdmin:
    user: str
    source: str
    attempts: int
    last_ms: int


@dataclass
class AccessFindings:
    window_start_ms: int
    until_ms: int
    events: int = 0
    no_source: int = 0
    new_places: list[NewPlace] = field(default_factory=list)
    failed_admin: list[FailedAdmin] = field(default_factory=list)


def review(events: Sequence[LoginEvent], window_start_ms: int, until_ms: int) -> AccessFindings:
    """Pure: what the records of [baseline start, until) say about the window [window_start, until)."""
    found = AccessFindings(window_start_ms, until_ms, events=len(events))
    known = {(e.user, e.source) for e in events if e.ok and e.source and e.at_ms < window_start_ms}
    places: dict[tuple[str, str], NewPlace] = {}
    failures: dict[tuple[str, str], FailedAdmin] = {}
    for e in sorted(events, key=lambda e: e.at_ms):
        if not window_start_ms <= e.at_ms < until_ms:
            continue
        if e.source is None:
            found.no_source += 1
        if e.ok and e.source and (e.user, e.source) not in known:
            got = places.get((e.user, e.source))
            places[(e.user, e.source)] = NewPlace(e.user, e.source, e.admin or bool(got and got.admin),
                                                  got.first_ms if got else e.at_ms, (got.logins if got else 0) + 1)
        if not e.ok and e.admin:
            key = (e.user, e.source or "unknown")
            had = failures.get(key)
            failures[key] = FailedAdmin(key[0], key[1], (had.attempts if had else 0) + 1, e.at_ms)
    found.new_places = sorted(places.values(), key=lambda p: (not p.admin, p.first_ms))
    found.failed_admin = sorted(failures.values(), key=lambda f: (-f.attempts, f.user, f.source))
    return found


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def judge(got: AccessFindings | str, cfg: AccessReview) -> list[CheckResult]:
    places_name, failed_name = "security:access:new-places", "security:access:failed-admin-logins"
    places_expected = ("no admin login from a place not seen in the previous "
                       f"{cfg.baseline_days} days" if cfg.new_place_scope == "admins"
                       else f"no login from a place not seen in the previous {cfg.baseline_days} days")
    failed_expected = f"<= {cfg.failed_admin_threshold} failed admin logins in {cfg.window_days} days"
    sev = cfg.severity.value
    if isinstance(got, str):
        return [CheckResult(n, ITEM, Status.unknown, f"unknown: access log not read ({got})", x, detail=got,
                            severity=sev, target=t, group=GROUP)
                for n, x, t in ((places_name, places_expected, "logins from new places"),
                                (failed_name, failed_expected, "failed admin logins"))]
    flagged = [p for p in got.new_places if p.admin or cfg.new_place_scope == "everyone"]
    span = f"{got.events} login records read"
    if flagged:
        observed = f"{len(flagged)} login(s) from new places: " + "; ".join(
            f"{'admin ' if p.admin else ''}{p.user} from {p.source} (first {_when(p.first_ms)})" for p in flagged[:10])
        places = CheckResult(places_name, ITEM, Status.fail, observed, places_expected, detail=span, severity=sev,
                             target="logins from new places", group=GROUP)
    else:
        others = len(got.new_places)
        observed = "no admin login from a new place" if cfg.new_place_scope == "admins" else "no login from a new place"
        observed += f"; {others} user login(s) from new places listed" if others else ""
        places = CheckResult(places_name, ITEM, Status.ok, f"{observed} ({span})", places_expected, severity=sev,
                             target="logins from new places", group=GROUP)
    total = sum(f.attempts for f in got.failed_admin)
    if total > cfg.failed_admin_threshold:
        observed = f"{total} failed admin login(s): " + "; ".join(
            f"{f.user} from {f.source} x{f.attempts} (last {_when(f.last_ms)})" for f in got.failed_admin[:10])
        failed = CheckResult(failed_name, ITEM, Status.fail, observed, failed_expected, detail=observed, severity=sev,
                             target="failed admin logins", group=GROUP)
    else:
        failed = CheckResult(failed_name, ITEM, Status.ok, f"{total} failed admin login(s)", failed_expected,
                             severity=sev, target="failed admin logins", group=GROUP)
    return [places, failed]


def markdown_tables(got: AccessFindings | str) -> str:
    if isinstance(got, str):
        return f"Access log not read: {got}\n"
    lines = [f"Window {_when(got.window_start_ms)} to {_when(got.until_ms)}; {got.events} login records read"
             + (f", {got.no_source} without a source" if got.no_source else "") + ".", ""]
    lines += ["#### Logins from new places", ""]
    if got.new_places:
        lines += ["| User | Admin | Source | First seen | Logins |", "|---|---|---|---|---|"]
        lines += [f"| {p.user} | {'yes' if p.admin else 'no'} | {p.source} | {_when(p.first_ms)} | {p.logins} |"
                  for p in got.new_places[:MAX_ROWS]]
        if len(got.new_places) > MAX_ROWS:
            lines.append(f"\n{len(got.new_places) - MAX_ROWS} more not shown.")
    else:
        lines.append("None.")
    lines += ["", "#### Failed admin logins", ""]
    if got.failed_admin:
        lines += ["| User | Source | Attempts | Last |", "|---|---|---|---|"]
        lines += [f"| {f.user} | {f.source} | {f.attempts} | {_when(f.last_ms)} |" for f in got.failed_admin[:MAX_ROWS]]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def table_rows(got: AccessFindings | str) -> list[dict[str, Any]]:
    if isinstance(got, str):
        return []
    rows = [{"finding": "new place", "user": p.user, "admin": p.admin, "source": p.source,
             "when": _when(p.first_ms), "count": p.logins} for p in got.new_places[:MAX_ROWS]]
    rows += [{"finding": "failed admin login", "user": f.user, "admin": True, "source": f.source,
              "when": _when(f.last_ms), "count": f.attempts} for f in got.failed_admin[:MAX_ROWS]]
    return rows


async def read_events(cfg: AccessReview, client: httpx.AsyncClient, since_ms: int, until_ms: int,
                      deploy_key: SecretStr | None = None) -> list[LoginEvent] | str:
    """Every login record of [since, until), page by page; or why they could not all be read."""
    events: list[LoginEvent] = []
    cursor: str | None = None
    previous: str | None = None
    fn = cfg.login_events_function
    while True:
        args = {"sinceMs": since_ms, "untilMs": until_ms,
                "paginationOpts": {"numItems": cfg.page_size, "cursor": cursor}}
        try:
            value = await convex_query.query(client, cfg.convex_url, fn, args, cfg.timeout_s, deploy_key)
        except convex_query.QueryFailed as exc:
            return str(exc)
        try:
            page, done, cursor = parse_page(value)
        except ValueError as exc:
            return f"{fn} answered an unexpected shape: {exc}"
        events += page
        if len(events) > cfg.max_events:
            return f"more than {cfg.max_events} login records; raise max_events to review them all"
        if done:
            return events
        if cursor == previous:
            return f"{fn} answered the same cursor twice; the log cannot be read to its end"
        previous = cursor


async def review_access(cfg: AccessReview, client: httpx.AsyncClient, now: datetime,
                        deploy_key: SecretStr | None = None) -> AccessFindings | str:
    until_ms = int(now.timestamp() * 1000)
    window_start = now - timedelta(days=cfg.window_days)
    since_ms = int((window_start - timedelta(days=cfg.baseline_days)).timestamp() * 1000)
    events = await read_events(cfg, client, since_ms, until_ms, deploy_key)
    if isinstance(events, str):
        return events
    return review(events, int(window_start.timestamp() * 1000), until_ms)
