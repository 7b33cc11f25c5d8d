"""Morning Checklist step 1, "System Health Check": what to probe, how to judge it, how to report it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx

from runbook.checks import CheckResult, Condition, Observation, Status, evaluate, worst
from runbook.clients import evm, http_probe, solana
from runbook.secrets import SecretError, SecretResolver
from runbook.settings import (
    COMPONENT_TITLES,
    Chain,
    ChainKind,
    Component,
    Endpoint,
    Settings,
    Severity,
)

CHAINS_ITEM = COMPONENT_TITLES["chains"]


def _ms(value: float) -> str:
    return f"latency {value:.0f} ms"


def endpoint_conditions(endpoint: Endpoint) -> list[Condition]:
    exp = endpoint.expect
    conditions = [
        Condition(
            "status",
            "HTTP " + " or ".join(map(str, exp.status)),
            lambda s: s in exp.status,
            describe=lambda s: f"HTTP {s}",
        ),
        Condition(
            "latency_ms",
            f"latency <= {exp.max_latency_ms:.0f} ms",
            lambda v: v <= exp.max_latency_ms,
            describe=_ms,
        ),
    ]
    if exp.body_contains is not None:
        marker = exp.body_contains.encode()
        conditions.append(
            Condition(
                "body",
                f"body contains {exp.body_contains!r}",
                lambda b: marker in b,
                describe=lambda b: "body has the marker" if marker in b else "body lacks the marker",
            )
        )
    if exp.json_field is not None:
        conditions.append(
            Condition(
                "json",
                f"{exp.json_field} == {exp.json_value!r}",
                lambda v: v == exp.json_value,
                describe=lambda v: f"{exp.json_field} = {v!r}",
            )
        )
    if endpoint.url.startswith("https://"):
        conditions.append(
            Condition(
                "tls_days",
                f"TLS certificate valid >= {exp.min_tls_days} days",
                lambda d: d >= exp.min_tls_days,
                describe=lambda d: f"TLS certificate valid {d:.0f} more days",
            )
        )
    return conditions


def rpc_conditions(chain: Chain) -> list[Condition]:
    if chain.kind is ChainKind.evm:
        want = chain.chain_id
        identity = Condition(
            "chain_id", f"chain id {want}", lambda c: c == want, describe=lambda c: f"chain id {c}"
        )
    else:
        want_hash = chain.genesis_hash
        identity = Condition(
            "genesis_hash",
            f"genesis {want_hash}",
            lambda g: g == want_hash,
            describe=lambda g: f"genesis {g}",
        )
    return [
        identity,
        Condition(
            "head_age_s",
            f"head age <= {chain.max_head_age_s:g} s",
            lambda a: a <= chain.max_head_age_s,
            describe=lambda a: f"head age {a:.1f} s",
        ),
        Condition(
            "latency_ms",
            f"latency <= {chain.max_latency_ms:.0f} ms",
            lambda v: v <= chain.max_latency_ms,
            describe=_ms,
        ),
    ]


def judge_endpoint(endpoint: Endpoint, observation: Observation) -> CheckResult:
    return evaluate(
        endpoint.name,
        COMPONENT_TITLES[endpoint.component],
        observation,
        endpoint_conditions(endpoint),
        severity=endpoint.severity.value,
    )


def judge_rpc(
    chain_name: str, chain: Chain, rpc_name: str, observation: Observation, severity: Severity
) -> CheckResult:
    result = evaluate(rpc_name, CHAINS_ITEM, observation, rpc_conditions(chain), severity=severity.value)
    return replace(result, group=chain_name)


def chain_rollup(chain_name: str, chain: Chain, rpc_results: Sequence[CheckResult]) -> CheckResult:
    """A chain is up if its primary RPC passes, degraded if only a backup does, down if none does.

    Degraded is a warning: the platform still reaches the chain, through the failover.
    """
    healthy = [r for r in rpc_results if r.status.passed]
    primary = rpc_results[0]
    title = f"{chain_name} ({chain.symbol})"
    if primary.status.passed:
        status, observed = Status.ok, f"primary {primary.name} healthy"
        detail = ""
    elif healthy:
        status = Status.warn
        observed = f"degraded: primary {primary.name} {primary.status.value}, backup {healthy[0].name} answering"
        detail = f"{primary.name}: {primary.detail or primary.observed}"
    else:
        status = Status.fail
        observed = "down: no RPC endpoint healthy"
        detail = "; ".join(f"{r.name}: {r.detail or r.observed}" for r in rpc_results)
    return CheckResult(
        f"chain:{chain_name}",
        CHAINS_ITEM,
        status,
        observed=observed,
        expected="primary RPC healthy",
        detail=detail,
        latency_s=max((r.latency_s or 0.0) for r in rpc_results),
        severity=chain.severity.value,
        target=title,
        group=chain_name,
    )


def endpoint_headers(endpoint: Endpoint, resolver: SecretResolver) -> dict[str, str]:
    if endpoint.auth_header is None:
        return {}
    return {"Authorization": resolver.resolve(endpoint.auth_header).get_secret_value()}


async def probe_endpoints(
    settings: Settings, client: httpx.AsyncClient, resolver: SecretResolver
) -> list[CheckResult]:
    """Probe every configured HTTP endpoint at once; each probe carries its own total deadline."""

    async def one(endpoint: Endpoint) -> CheckResult:
        try:
            headers = endpoint_headers(endpoint, resolver)
        except SecretError as exc:
            # Not probed at all: nothing was observed, so the check can only be unknown.
            return CheckResult(
                endpoint.name,
                COMPONENT_TITLES[endpoint.component],
                Status.unknown,
                observed=f"not probed: {exc}",
                expected="answers",
                detail=str(exc),
                severity=endpoint.severity.value,
                target=endpoint.name,
            )
        observation = await http_probe.probe(
            client,
            endpoint.name,
            endpoint.url,
            deadline_s=settings.probe_timeout(endpoint),
            method=endpoint.method,
            body=endpoint.body,
            headers=headers,
            json_field=endpoint.expect.json_field,
        )
        return judge_endpoint(endpoint, observation)

    return list(await asyncio.gather(*(one(e) for e in settings.endpoints)))


async def probe_chains(
    settings: Settings,
    client: httpx.AsyncClient,
    solana_factory: solana.ClientFactory = solana.default_client,
) -> tuple[list[CheckResult], list[CheckResult]]:
    """Probe every RPC URL of every chain at once. Returns (per-endpoint results, per-chain rollups)."""
    deadline = settings.probes.timeout_s

    async def one(chain_name: str, chain: Chain, rpc_name: str, url: str) -> CheckResult:
        if chain.kind is ChainKind.evm:
            observation = await evm.probe_endpoint(client, rpc_name, url, deadline_s=deadline)
        else:
            observation = await solana.probe_endpoint(
                rpc_name, url, deadline_s=deadline, client_factory=solana_factory
            )
        # One endpoint failing leaves the chain reachable through the others: attention, not a
        # page. The chain's own rollup carries its severity when no endpoint is left.
        return judge_rpc(chain_name, chain, rpc_name, observation, Severity.P2)

    plan = [
        (chain_name, chain, rpc_name, url)
        for chain_name, chain in settings.chains.items()
        for rpc_name, url in zip(chain.endpoint_names(chain_name), chain.rpc_urls, strict=True)
    ]
    results = list(await asyncio.gather(*(one(*p) for p in plan)))
    rollups = []
    for chain_name, chain in settings.chains.items():
        names = set(chain.endpoint_names(chain_name))
        rollups.append(chain_rollup(chain_name, chain, [r for r in results if r.name in names]))
    return results, rollups


@dataclass
class HealthReport:
    environment: str
    started_at: datetime
    finished_at: datetime
    results: list[CheckResult]
    chains: list[CheckResult]
    deliveries: list[str] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return worst(r.status for r in [*self.results, *self.chains])

    @property
    def passed(self) -> bool:
        return all(r.status.passed for r in self.all_checks())

    def all_checks(self) -> list[CheckResult]:
        return [*self.results, *self.chains]

    def problems(self) -> list[CheckResult]:
        return [r for r in self.all_checks() if r.status in (Status.fail, Status.unknown)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "checklist": "system-health",
            "environment": self.environment,
            "status": self.status.value,
            "passed": self.passed,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_s": round((self.finished_at - self.started_at).total_seconds(), 3),
            "checks": [r.to_dict() for r in self.results],
            "chains": [r.to_dict() for r in self.chains],
            "alerts": list(self.deliveries),
        }


def report_from_dict(d: dict[str, Any]) -> HealthReport:
    return HealthReport(
        environment=d["environment"],
        started_at=datetime.fromisoformat(d["started_at"]),
        finished_at=datetime.fromisoformat(d["finished_at"]),
        results=[CheckResult.from_dict(c) for c in d["checks"]],
        chains=[CheckResult.from_dict(c) for c in d["chains"]],
        deliveries=list(d.get("alerts", [])),
    )


def now() -> datetime:
    return datetime.now(UTC)


_ITEM_ORDER = [
    COMPONENT_TITLES[Component.frontend],
    COMPONENT_TITLES[Component.backend],
    CHAINS_ITEM,
    COMPONENT_TITLES[Component.api],
]
_MARK = {Status.ok: "[x]", Status.warn: "[x]", Status.fail: "[ ]", Status.unknown: "[?]"}
_WORD = {Status.ok: "PASS", Status.warn: "WARN", Status.fail: "FAIL", Status.unknown: "UNKNOWN"}


def _line(r: CheckResult) -> str:
    latency = f" ({r.latency_s * 1000:.0f} ms)" if r.latency_s is not None else ""
    if r.status is Status.ok:
        return f"{_WORD[r.status]} {r.target or r.name}: {r.observed}{latency}"
    return f"{_WORD[r.status]} {r.target or r.name}: {r.observed}; expected {r.expected}{latency}"


def render_markdown(report: HealthReport) -> str:
    """The runbook's checklist, ticked: one line per item, then one per probe under it."""
    by_item: dict[str, list[CheckResult]] = {item: [] for item in _ITEM_ORDER}
    for r in report.results:
        if r.item != CHAINS_ITEM:
            by_item.setdefault(r.item, []).append(r)
    lines = [
        f"## System Health Check: {_WORD[report.status]} ({report.environment})",
        "",
        f"Run {report.started_at:%Y-%m-%d %H:%M:%S} UTC, "
        f"{(report.finished_at - report.started_at).total_seconds():.2f} s.",
        "",
    ]
    for item in _ITEM_ORDER:
        members = report.chains if item == CHAINS_ITEM else by_item[item]
        if not members:
            lines.append(f"- [?] {item}: UNKNOWN (nothing configured to check)")
            continue
        status = worst(m.status for m in members)
        lines.append(f"- {_MARK[status]} {item}: {_WORD[status]}")
        for m in members:
            lines.append(f"  - {_line(m)}")
            if item == CHAINS_ITEM:
                for r in report.results:
                    if r.item == CHAINS_ITEM and r.group == m.group:
                        lines.append(f"    - {_line(r)}")
    if report.deliveries:
        lines += ["", "Alerts: " + "; ".join(report.deliveries)]
    return "\n".join(lines) + "\n"


def table_rows(report: HealthReport) -> list[dict[str, Any]]:
    return [
        {
            "item": r.item,
            "check": r.target or r.name,
            "status": r.status.value,
            "observed": r.observed,
            "expected": r.expected,
            "latency_ms": None if r.latency_s is None else round(r.latency_s * 1000, 1),
            "severity": r.severity,
        }
        for r in report.all_checks()
    ]


def render_text(report: HealthReport) -> str:
    """The terminal form of the report: the markdown without its markup."""
    return render_markdown(report).replace("## ", "", 1)
