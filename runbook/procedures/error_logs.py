"""Morning Checklist step 4, "Error Log Review": Sentry's new and regressed issues and Convex's
failed function executions of the last `window_hours`, judged against a threshold.

One result per Sentry project and one for the Convex deployment, all read concurrently:
- nothing new -> ok;
- new errors, at most `new_error_threshold` -> warn, at `severity`;
- more than the threshold -> fail, at `raised_severity`;
- a source that could not be read (secret missing, refused, timed out, HTTP error, a body not in
  the documented shape) -> unknown with the reason: an unread log is not an empty one. A reading
  cut short by its page bound is unknown too, unless what was read already exceeds the threshold.

"New errors" are, for Sentry, unresolved issues first seen in the window plus those Sentry marks
regressed that were seen in the window; for Convex, executions that failed in the window (Convex
has no notion of a new error, so `convex_error_threshold` counts failed executions).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated

import httpx
from pydantic import Field, model_validator

from runbook.checks import CheckResult, Status
from runbook.clients import convex_logs, sentry
from runbook.config_types import HttpUrl, SecretRef, Severity, Strict
from runbook.secrets import SecretError, SecretResolver

ITEM = "Error Log Review"
SHOWN = 5  # issues or functions named in a result's observed line

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")]


class ErrorLogs(Strict):
    """The `[error_logs]` section of an environment file."""

    sentry_url: HttpUrl = Field(default="https://sentry.io", description="Sentry's base URL (self-hosted or region)")
    sentry_org: Slug = Field(description="organization slug")
    sentry_projects: Annotated[list[Slug], Field(min_length=1)] = Field(description="project slugs to review")
    sentry_token: SecretRef = Field(description="auth token sent as 'Authorization: Bearer <token>'")
    sentry_query: str = Field(
        default="is:unresolved",
        description="Sentry search syntax for the issue list; the window is then applied here to firstSeen/lastSeen",
    )
    convex_url: HttpUrl = Field(description="the deployment URL, https://<name>.convex.cloud")
    convex_deploy_key: SecretRef = Field(description="deploy key sent as 'Authorization: Convex <key>'")
    window_hours: Annotated[int, Field(ge=1, le=168)] = 24
    new_error_threshold: Annotated[int, Field(ge=0)] = Field(
        default=5, description="more new or regressed Sentry issues than this (per project) raise the severity"
    )
    convex_error_threshold: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="more failed Convex executions than this raise the severity; default new_error_threshold",
    )
    severity: Severity = Field(default=Severity.P3, description="severity of new errors at or under the threshold")
    raised_severity: Severity = Field(default=Severity.P2, description="severity above the threshold")
    timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=20, description="total deadline of each source (all pages of one project, or the Convex reading)"
    )
    max_pages: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=10, description="page bound per Sentry project and for the Convex cursor"
    )
    convex_settle_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=2.0, description="a Convex log request held this long is its long poll: caught up"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ErrorLogs:
        if self.raised_severity.rank > self.severity.rank:
            raise ValueError("raised_severity must be at least as severe as severity (P0 is the most severe)")
        if len(set(self.sentry_projects)) != len(self.sentry_projects):
            raise ValueError("sentry_projects: a project is listed twice")
        if self.convex_settle_s >= self.timeout_s:
            raise ValueError("convex_settle_s must be shorter than timeout_s, or a quiet deployment reads as a timeout")
        return self

    @property
    def convex_threshold(self) -> int:
        return self.new_error_threshold if self.convex_error_threshold is None else self.convex_error_threshold

    def secret_refs(self) -> list[SecretRef]:
        return [self.sentry_token, self.convex_deploy_key]


def _window(cfg: ErrorLogs) -> str:
    return f"{cfg.window_hours} h"


def sentry_expected(cfg: ErrorLogs) -> str:
    return (
        f"no new or regressed issues in {_window(cfg)}; "
        f"more than {cfg.new_error_threshold} is {cfg.raised_severity.value}"
    )


def convex_expected(cfg: ErrorLogs) -> str:
    return f"no failed executions in {_window(cfg)}; more than {cfg.convex_threshold} is {cfg.raised_severity.value}"


def _grade(count: int, threshold: int, complete: bool, cfg: ErrorLogs) -> tuple[Status, Severity] | None:
    """(status, severity) by the count, or None when an incomplete reading cannot tell."""
    if count > threshold:
        return Status.fail, cfg.raised_severity
    if not complete:
        return None
    return (Status.ok if count == 0 else Status.warn), cfg.severity


def split_issues(
    issues: list[sentry.Issue], since: datetime
) -> tuple[list[sentry.Issue], list[sentry.Issue]]:
    """(new, regressed): first seen at or after `since`; or marked regressed and seen since then."""
    new = [i for i in issues if i.first_seen >= since]
    regressed = [
        i for i in issues if i.first_seen < since and i.regressed and (i.last_seen or i.first_seen) >= since
    ]
    return new, regressed


def judge_sentry(cfg: ErrorLogs, listing: sentry.IssueList, now: datetime) -> CheckResult:
    target = f"Sentry {cfg.sentry_org}/{listing.project}"

    def result(status: Status, observed: str, detail: str = "", severity: Severity = cfg.severity) -> CheckResult:
        return CheckResult(
            f"sentry:{listing.project}", ITEM, status, observed, sentry_expected(cfg), detail,
            listing.latency_s, severity.value, target, "sentry",
        )

    new, regressed = split_issues(listing.issues, now - timedelta(hours=cfg.window_hours))
    counted = len(new) + len(regressed)
    if listing.error is not None and counted <= cfg.new_error_threshold:
        return result(Status.unknown, f"unknown (Sentry not read: {listing.error})", listing.error)
    at_least = "" if listing.complete else "at least "
    summary = f"{at_least}{len(new)} new, {len(regressed)} regressed in {_window(cfg)}"
    flagged = sorted(
        [*((i, False) for i in new), *((i, True) for i in regressed)], key=lambda p: (-p[0].count, p[0].id)
    )
    named = [f"{i.label()} ({i.count} events{', regressed' if r else ''})" for i, r in flagged[:SHOWN]]
    if len(flagged) > SHOWN:
        named.append(f"+{len(flagged) - SHOWN} more")
    observed = summary + (": " + ", ".join(named) if named else "")
    detail = "; ".join(f"{i.short_id or i.id} {i.level or 'error'}: {i.permalink or i.title}" for i, _ in flagged)
    truncated = listing.error or f"stopped after {listing.pages} pages (max_pages) while Sentry had more issues"
    graded = _grade(counted, cfg.new_error_threshold, listing.complete, cfg)
    if graded is None:
        return result(Status.unknown, f"unknown ({summary}; {truncated})", truncated)
    status, severity = graded
    if not listing.complete:
        detail = f"{truncated}; {detail}"
    return result(status, observed, detail, severity)


def _clip(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def judge_convex(cfg: ErrorLogs, read: convex_logs.LogRead, now: datetime) -> CheckResult:
    target = f"Convex {cfg.convex_url}"

    def result(status: Status, observed: str, detail: str = "", severity: Severity = cfg.severity) -> CheckResult:
        return CheckResult(
            "convex:logs", ITEM, status, observed, convex_expected(cfg), detail,
            read.latency_s, severity.value, target, "convex",
        )

    since = (now - timedelta(hours=cfg.window_hours)).timestamp()
    by_function = convex_logs.errors_by_function(read.entries, since, now.timestamp())
    total = sum(f.count for f in by_function.values())
    if read.error is not None and total <= cfg.convex_threshold:
        return result(Status.unknown, f"unknown (Convex logs not read: {read.error})", read.error)
    functions = list(by_function.values())
    plural = "s" if len(functions) != 1 else ""
    summary = (
        f"{'at least ' if not read.complete else ''}{total} failed execution{'s' if total != 1 else ''} "
        f"in {_window(cfg)}" + (f" in {len(functions)} function{plural}" if functions else "")
    )
    named = [f"{f.identifier} {f.count}" for f in functions[:SHOWN]]
    if len(functions) > SHOWN:
        named.append(f"+{len(functions) - SHOWN} more")
    observed = summary + (": " + ", ".join(named) if named else f" ({len(read.entries)} log entries read)")
    detail = "; ".join(f"{f.identifier} ({f.udf_type}) last error: {_clip(f.last_error)}" for f in functions)
    truncated = read.error or f"stopped after {read.pages} pages (max_pages) before catching up"
    graded = _grade(total, cfg.convex_threshold, read.complete, cfg)
    if graded is None:
        return result(Status.unknown, f"unknown ({summary}; {truncated})", truncated)
    status, severity = graded
    if not read.complete:
        detail = f"{truncated}; {detail}"
    return result(status, observed, detail, severity)


def _not_read(cfg: ErrorLogs, name: str, target: str, group: str, expected: str, exc: SecretError) -> CheckResult:
    return CheckResult(
        name, ITEM, Status.unknown, f"unknown (not read: {exc})", expected, str(exc),
        None, cfg.severity.value, target, group,
    )


async def review(
    cfg: ErrorLogs, client: httpx.AsyncClient, resolver: SecretResolver, now: datetime
) -> list[CheckResult]:
    """Read every Sentry project and the Convex logs concurrently; one result each, in config order."""
    since = now - timedelta(hours=cfg.window_hours)

    async def one_project(project: str) -> CheckResult:
        try:
            token = resolver.resolve(cfg.sentry_token)
        except SecretError as exc:
            return _not_read(
                cfg, f"sentry:{project}", f"Sentry {cfg.sentry_org}/{project}", "sentry", sentry_expected(cfg), exc
            )
        listing = await sentry.list_issues(
            client, cfg.sentry_url, cfg.sentry_org, project, token,
            deadline_s=cfg.timeout_s, max_pages=cfg.max_pages, query=cfg.sentry_query,
        )
        return judge_sentry(cfg, listing, now)

    async def convex() -> CheckResult:
        try:
            key = resolver.resolve(cfg.convex_deploy_key)
        except SecretError as exc:
            return _not_read(cfg, "convex:logs", f"Convex {cfg.convex_url}", "convex", convex_expected(cfg), exc)
        read = await convex_logs.read_function_logs(
            client, cfg.convex_url, key,
            since_ms=since.timestamp() * 1000, until_ms=now.timestamp() * 1000,
            deadline_s=cfg.timeout_s, max_pages=cfg.max_pages, settle_s=cfg.convex_settle_s,
        )
        return judge_convex(cfg, read, now)

    return list(await asyncio.gather(*(one_project(p) for p in cfg.sentry_projects), convex()))
