"""Checks as data: a probe yields an Observation, pure conditions turn it into a CheckResult.

A probe that could not observe a value leaves it as None; a condition on a missing value is
`unknown` with the reason, never judged against a default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    ok = "ok"
    warn = "warn"
    unknown = "unknown"
    fail = "fail"

    @property
    def weight(self) -> int:
        return _WEIGHT[self]

    @property
    def passed(self) -> bool:
        return self in (Status.ok, Status.warn)


_WEIGHT = {Status.ok: 0, Status.warn: 1, Status.unknown: 2, Status.fail: 3}


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, key=lambda s: s.weight, default=Status.ok)


@dataclass(frozen=True)
class Observation:
    """What one probe saw. `values` holds what was measured; `error` says why a probe got nothing."""

    target: str
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    latency_s: float | None = None

    def get(self, key: str) -> Any:
        return self.values.get(key)


@dataclass(frozen=True)
class Condition:
    """One expectation on one observed value. `test` is only called when the value was observed."""

    key: str
    expected: str
    test: Callable[[Any], bool]
    on_false: Status = Status.fail
    describe: Callable[[Any], str] = str


@dataclass(frozen=True)
class Verdict:
    condition: str
    status: Status
    observed: str
    expected: str


@dataclass(frozen=True)
class CheckResult:
    name: str
    item: str
    status: Status
    observed: str
    expected: str
    detail: str = ""
    latency_s: float | None = None
    severity: str = "P3"
    target: str = ""
    group: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckResult:
        return cls(
            d["name"], d["item"], Status(d["status"]), d["observed"], d["expected"], d.get("detail", ""),
            d.get("latency_s"), d.get("severity", "P3"), d.get("target", ""), d.get("group", ""),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "item": self.item,
            "status": self.status.value,
            "observed": self.observed,
            "expected": self.expected,
            "detail": self.detail,
            "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
            "severity": self.severity,
            "target": self.target,
            "group": self.group,
        }


def judge(observation: Observation, conditions: Iterable[Condition]) -> list[Verdict]:
    verdicts = []
    for c in conditions:
        value = observation.get(c.key)
        if value is None:
            reason = observation.error or f"{c.key} was not observed"
            verdicts.append(Verdict(c.key, Status.unknown, f"unknown ({reason})", c.expected))
            continue
        status = Status.ok if c.test(value) else c.on_false
        verdicts.append(Verdict(c.key, status, c.describe(value), c.expected))
    return verdicts


def evaluate(
    name: str,
    item: str,
    observation: Observation,
    conditions: Iterable[Condition],
    *,
    severity: str,
    reachable_is_required: bool = True,
) -> CheckResult:
    """Judge every condition and summarise them into one result.

    When reaching the target is itself the thing checked (a health probe), a probe that got no
    answer is a failure: "the frontend does not answer" is an observation, not a gap in one.
    """
    verdicts = judge(observation, conditions)
    if observation.error is not None and reachable_is_required:
        return CheckResult(
            name,
            item,
            Status.fail,
            observed=f"no answer: {observation.error}",
            expected="answers",
            detail=observation.error,
            latency_s=observation.latency_s,
            severity=severity,
            target=observation.target,
        )
    status = worst(v.status for v in verdicts)
    bad = [v for v in verdicts if v.status is not Status.ok]
    shown = bad or verdicts
    return CheckResult(
        name,
        item,
        status,
        observed="; ".join(v.observed for v in shown),
        expected="; ".join(v.expected for v in shown),
        detail="; ".join(f"{v.condition}: {v.observed}, expected {v.expected}" for v in bad),
        latency_s=observation.latency_s,
        severity=severity,
        target=observation.target,
    )
