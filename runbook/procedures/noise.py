"""Alert noise control and the runbook's "Custom Alerts" threshold rules. Pure: no I/O.

One checklist run yields one `Notice`: what started failing (a new alert, which may page), what is
still failing (a reminder, never a new page, and only once `remind_after` has passed since that
item was last mentioned), and what recovered (a recovery note). What a run leaves behind for the
next one is an `AlertState`, small and JSON-safe so that a flow can keep it in a Prefect Variable.

For noise purposes `unknown` counts as failing: a check we could not make is not a check that
passed. `warn` counts as passing, as everywhere else in the runbook.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from runbook.checks import CheckResult, Status
from runbook.config_types import Name, Severity, Strict

ITEM = "Custom alerts"


# --- what one run leaves for the next ------------------------------------------------------------


@dataclass(frozen=True)
class ItemState:
    """One failing item as the previous runs left it.

    `severity` is the most severe level this failure has been announced at, so that only a real
    escalation pages again and a wobble P1 -> P2 -> P1 does not.
    """

    first_failed: datetime
    last_notified: datetime
    severity: Severity
    seen: int

    def to_list(self) -> list[Any]:
        # terse (a list, Unix seconds) because a Prefect Variable holds at most 5000 characters of
        # JSON: about 80 failing items with 25-character names
        return [int(self.first_failed.timestamp()), int(self.last_notified.timestamp()), self.severity.value, self.seen]

    @classmethod
    def from_list(cls, v: Sequence[Any]) -> ItemState:
        first_failed, last_notified, severity, seen = v
        return cls(
            datetime.fromtimestamp(int(first_failed), UTC),
            datetime.fromtimestamp(int(last_notified), UTC),
            Severity(severity),
            int(seen),
        )


@dataclass(frozen=True)
class AlertState:
    """The failing items of one checklist in one environment, keyed by `CheckResult.name`."""

    failing: Mapping[str, ItemState] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "failing": {name: s.to_list() for name, s in sorted(self.failing.items())}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> AlertState:
        """`None` (a Variable never set) is the empty state. A malformed one raises ValueError;
        the caller should then start from empty, which re-announces every failure: noisy, not blind."""
        if not d:
            return cls()
        try:
            if d["v"] != 1:
                raise ValueError(f"alert state version {d['v']!r} is not 1")
            return cls({str(name): ItemState.from_list(s) for name, s in d["failing"].items()})
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an alert state: {exc!r}") from exc

    @property
    def worst(self) -> Severity | None:
        return _most_severe(s.severity for s in self.failing.values())


# --- what one run says ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tracked:
    """A check result together with when its failure began."""

    result: CheckResult
    since: datetime


@dataclass(frozen=True)
class Notice:
    checklist: str
    environment: str
    now: datetime
    new: tuple[Tracked, ...] = ()
    reminders: tuple[Tracked, ...] = ()
    recovered: tuple[Tracked, ...] = ()
    # the most severe level failing before and after this run (silent repeats included)
    open_before: Severity | None = None
    open_after: Severity | None = None

    @property
    def severity(self) -> Severity | None:
        """The most severe NEW item: reminders and recoveries never raise the level."""
        return _most_severe(Severity(t.result.severity) for t in self.new)

    @property
    def is_empty(self) -> bool:
        return not (self.new or self.reminders or self.recovered)

    @property
    def dedup_key(self) -> str:
        """One key per checklist and environment, so a resolve closes the page a trigger opened."""
        return f"tokenforge-ops/{self.environment}/{self.checklist}"

    def should_page(self, page_at: Severity) -> bool:
        return self.severity is not None and self.severity.rank <= page_at.rank

    def should_resolve(self, page_at: Severity) -> bool:
        """True when something at paging level was failing and nothing at that level still is."""

        def pages(s: Severity | None) -> bool:
            return s is not None and s.rank <= page_at.rank

        return pages(self.open_before) and not pages(self.open_after)

    @property
    def title(self) -> str:
        parts = [
            f"{len(self.new)} new" if self.new else "",
            f"{len(self.reminders)} still failing" if self.reminders else "",
            f"{len(self.recovered)} recovered" if self.recovered else "",
        ]
        level = f"[{self.severity.value}] " if self.severity else ""
        return f"{level}{self.checklist} on {self.environment}: " + ", ".join(p for p in parts if p)

    def lines(self) -> list[str]:
        out = []
        for t in _by_severity(self.new):
            line = f"NEW {_describe(t.result)}"
            if t.since < self.now:  # an escalation of an older failure, not a fresh one
                line += f" - escalated to {t.result.severity}, failing since {_when(t.since)}"
            out.append(line)
        out += [f"{_describe(t.result)} - still failing since {_when(t.since)}" for t in _by_severity(self.reminders)]
        out += [
            f"{t.result.status.value.upper()} {_who(t.result)}: {t.result.observed} - recovered "
            f"(failing since {_when(t.since)})"
            for t in sorted(self.recovered, key=lambda t: t.result.name)
        ]
        return out

    def slack_text(self) -> str:
        """One grouped message: new failures first, then reminders, then recoveries. Empty if silent."""
        if self.is_empty:
            return ""
        return "\n".join([self.title, *(f"- {line}" for line in self.lines())])


def plan(
    checklist: str,
    environment: str,
    results: Sequence[CheckResult],
    previous: AlertState,
    now: datetime,
    remind_after: timedelta,
) -> tuple[Notice, AlertState]:
    """Compare this run with what the previous runs left; say what to announce and what to keep.

    An item missing from `results` (a check not run this time) is neither failing nor recovered:
    what we knew about it is kept unchanged.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware: the state is compared across runs and hosts")
    now = now.replace(microsecond=0)  # the state keeps whole seconds; so do the times it is compared with
    current: dict[str, CheckResult] = {}
    for r in results:
        # names are unique within a checklist; should one repeat, a failure must not be hidden
        if r.name not in current or (current[r.name].status.passed and not r.status.passed):
            current[r.name] = r

    new: list[Tracked] = []
    reminders: list[Tracked] = []
    recovered: list[Tracked] = []
    failing: dict[str, ItemState] = {n: s for n, s in previous.failing.items() if n not in current}
    for name, r in current.items():
        before = previous.failing.get(name)
        if r.status.passed:
            if before is not None:
                recovered.append(Tracked(r, before.first_failed))  # and it is forgotten
            continue
        level = Severity(r.severity)
        if before is None:
            new.append(Tracked(r, now))
            failing[name] = ItemState(now, now, level, 1)
        elif level.rank < before.severity.rank:
            # worse than anything announced for it so far: announce it as new, at its new level
            new.append(Tracked(r, before.first_failed))
            failing[name] = replace(before, last_notified=now, severity=level, seen=before.seen + 1)
        elif now - before.last_notified >= remind_after:
            reminders.append(Tracked(r, before.first_failed))
            failing[name] = replace(before, last_notified=now, seen=before.seen + 1)
        else:
            failing[name] = replace(before, seen=before.seen + 1)  # silent: reminded recently

    after = AlertState(failing)
    notice = Notice(
        checklist, environment, now, tuple(new), tuple(reminders), tuple(recovered), previous.worst, after.worst
    )
    return notice, after


# --- threshold rules ("Custom Alerts") ----------------------------------------------------------------

Op = Literal[">", ">=", "<", "<=", "==", "!="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}
# what "all is well" reads as, for the result's `expected`
_NEGATION = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}


class ThresholdRule(Strict):
    """Alert when `metric op threshold` holds, e.g. error_rate > 0.05."""

    metric: Name
    op: Op
    threshold: Annotated[float, Field(allow_inf_nan=False)]
    severity: Severity
    message: str | None = Field(default=None, min_length=1, max_length=200)

    @property
    def condition(self) -> str:
        return f"{self.metric} {self.op} {_num(self.threshold)}"

    @property
    def name(self) -> str:
        """The alert's name and its key across runs: the message if given, else the condition."""
        return self.message or self.condition


# The runbook's example: `if (errorRate > 0.05) sendAlert({severity: 'high', ...})`; 'high' is P1.
RUNBOOK_ERROR_RATE_RULE = ThresholdRule(
    metric="error_rate", op=">", threshold=0.05, severity=Severity.P1, message="Error rate exceeded 5%"
)


def apply_rules(rules: Iterable[ThresholdRule], metrics: Mapping[str, float | None]) -> list[CheckResult]:
    """One result per rule: fail when its alert condition holds, ok when not, unknown without a value."""
    results = []
    for rule in rules:
        value = metrics.get(rule.metric)
        expected = f"{rule.metric} {_NEGATION[rule.op]} {_num(rule.threshold)}"
        if value is None or math.isnan(value):
            reason = (
                f"{rule.metric} was not reported" if rule.metric not in metrics
                else f"{rule.metric} has no value" if value is None
                else f"{rule.metric} is not a number"
            )
            status, observed, detail = Status.unknown, f"unknown ({reason})", reason
        elif _OPS[rule.op](value, rule.threshold):
            status, observed, detail = Status.fail, f"{rule.metric} {_num(value)}", rule.message or rule.condition
        else:
            status, observed, detail = Status.ok, f"{rule.metric} {_num(value)}", ""
        results.append(
            CheckResult(rule.name, ITEM, status, observed, expected, detail=detail, severity=rule.severity.value)
        )
    return results


class AlertPolicy(Strict):
    remind_after_minutes: Annotated[int, Field(ge=1)] = Field(
        default=240, description="repeat a still-failing item at most this often"
    )
    rules: list[ThresholdRule] = Field(default_factory=list)
    send_recoveries: bool = True

    @property
    def remind_after(self) -> timedelta:
        return timedelta(minutes=self.remind_after_minutes)

    @model_validator(mode="after")
    def _unique_names(self) -> AlertPolicy:
        # a rule's name keys its alert state: two rules with one name would share (and garble) it
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rules share a name (give each a distinct message): {', '.join(dupes)}")
        return self


# --- helpers ---------------------------------------------------------------------------------------------


def _most_severe(levels: Iterable[Severity]) -> Severity | None:
    return min(levels, key=lambda s: s.rank, default=None)


def _by_severity(items: Iterable[Tracked]) -> list[Tracked]:
    return sorted(items, key=lambda t: (Severity(t.result.severity).rank, t.result.name))


def _who(r: CheckResult) -> str:
    return f"{r.target or r.name} ({r.item})"


def _describe(r: CheckResult) -> str:
    # FAIL or UNKNOWN: both count as failing, but the reader must know which one it is
    return f"{r.status.value.upper()} [{r.severity}] {_who(r)}: {r.observed}; expected {r.expected}"


def _when(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _num(x: float) -> str:
    return format(x, ".12g")  # 0.05 stays 0.05, 0.1 + 0.2 reads 0.3, 1234567 stays 1234567
