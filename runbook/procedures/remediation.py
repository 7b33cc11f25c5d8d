"""Incident Response, Common Incidents 1-3: frontend rollback, Convex redeploy, RPC failover.

1. Frontend down: promote the last good production deployment through Vercel's API (what `vercel
   rollback` does), then read it back and wait until the frontend answers. A journal entry written
   before the promote makes a re-run after a crash promote the same deployment, never an older one.
2. Convex backend error: Convex documents deploys only through its CLI (`npx convex deploy`, which
   pushes code from a checkout), so redeploying the previous version is a person's step; the flow
   shows the errors and the exact steps, waits, then checks that the errors stopped.
3. Blockchain connection lost: choose the first healthy backup RPC (answers, right chain id or
   genesis, fresh head) and record it where the platform reads its active endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from runbook.checks import Observation, Status
from runbook.clients import convex_logs, evm_logs, http_probe, solana
from runbook.clients.evm import EndpointUnusable
from runbook.clients.vercel import Deployment, VercelClient, VercelError, previous_good
from runbook.config_types import Chain, ChainKind
from runbook.procedures import system_health
from runbook.secrets import SecretError, SecretResolver
from runbook.settings import Component, ConfigError, Endpoint, Settings

# --- what "the frontend answers" means -------------------------------------------------------


def endpoint_of(settings: Settings, component: Component) -> Endpoint | None:
    return next((e for e in settings.endpoints if e.component is component), None)


async def check_endpoint(settings: Settings, endpoint: Endpoint, client: httpx.AsyncClient,
                         resolver: SecretResolver) -> tuple[bool, str, Observation | None]:
    """(passes, one line, the raw observation) for a configured endpoint, judged as System Health does."""
    try:
        headers = system_health.endpoint_headers(endpoint, resolver)
    except SecretError as exc:
        return False, f"not probed: {exc}", None
    observation = await http_probe.probe(
        client, endpoint.name, endpoint.url, deadline_s=settings.probe_timeout(endpoint), method=endpoint.method,
        body=endpoint.body, headers=headers, json_field=endpoint.expect.json_field)
    result = system_health.judge_endpoint(endpoint, observation)
    line = result.observed if result.status.passed else f"{result.observed} (expected {result.expected})"
    return result.status.passed, line, observation


# --- 1. frontend rollback --------------------------------------------------------------------


def vercel_client(settings: Settings, client: httpx.AsyncClient, resolver: SecretResolver) -> VercelClient:
    """The `[vercel]` section's client; ConfigError without the section, SecretError without the token."""
    if settings.vercel is None:
        raise ConfigError(f"environment {settings.environment}", ["vercel: no [vercel] section"])
    return VercelClient(client, settings.vercel, resolver.resolve(settings.vercel.token))


Journal = Callable[[], Awaitable[Mapping[str, Any] | None]]
JournalWrite = Callable[[Mapping[str, Any]], Awaitable[None]]
FrontendCheck = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass
class RollbackReport:
    environment: str
    dry_run: bool
    action: str = "failed"  # promoted | already-current | not-needed | dry-run | failed
    current_before: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    current_after: dict[str, Any] | None = None
    frontend: str = ""
    verified: bool = False
    steps: list[str] = field(default_factory=list)
    problem: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def passed(self) -> bool:
        return not self.problem and (self.verified or self.action in ("dry-run", "not-needed"))

    def summary(self) -> str:
        target = (self.target or {}).get("id", "?")
        before = (self.current_before or {}).get("id", "?")
        if self.problem:
            return f"Frontend rollback ({self.environment}) FAILED: {self.problem}"
        return {
            "promoted": f"Frontend rolled back ({self.environment}): {before} -> {target}; frontend {self.frontend}",
            "already-current": f"Frontend rollback ({self.environment}): already on {target}; nothing promoted; "
                               f"frontend {self.frontend}",
            "not-needed": f"Frontend rollback ({self.environment}): not needed, the frontend answers on {before} "
                          f"({self.frontend}); pass deployment_id to roll back anyway",
            "dry-run": f"Frontend rollback ({self.environment}) dry run: would promote {target} in place of {before}",
        }.get(self.action, self.action)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "summary": self.summary()}

    def markdown(self) -> str:
        lines = [f"## Incident 1, Frontend Down: rollback ({self.environment}): "
                 f"{'OK' if self.passed else 'FAILED'}", "", self.summary(), "",
                 "| | Deployment | URL | State |", "|---|---|---|---|"]
        for label, d in (("Serving before", self.current_before), ("Rollback target", self.target),
                         ("Serving after (read back)", self.current_after)):
            if d:
                lines.append(f"| {label} | `{d['id']}` | {d.get('url') or '-'} | {d.get('state')} |")
        lines += ["", "### Steps", ""] + [f"{i}. {s}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines) + "\n"


class RollbackRefused(Exception):
    """A rollback target that must not be promoted; the message says why."""


async def _choose_target(vc: VercelClient, current: Deployment, deployment_id: str | None,
                         journal: Mapping[str, Any] | None, report: RollbackReport) -> Deployment:
    """The deployment to promote; the current one when an earlier run already rolled back to it."""
    if deployment_id:
        target = await vc.get_deployment(deployment_id)
        if target.target != "production" or not target.ready:
            raise RollbackRefused(f"deployment_id {deployment_id}: not a READY production deployment "
                                  f"({target.state}, target {target.target})")
        report.steps.append(f"target given: {target.label()}")
        return target
    if journal and journal.get("to") == current.id:
        report.steps.append(f"an earlier run already rolled back from {journal.get('from')} to {current.id}; "
                            "not rolling back further (pass deployment_id to choose an older one)")
        return current
    if journal and journal.get("from") == current.id and journal.get("to"):
        # An earlier run's promote may still be landing: the same target, never the one before it.
        target = await vc.get_deployment(str(journal["to"]))
        report.steps.append(f"an earlier run was promoting {target.id}; continuing with it")
        return target
    deployments = await vc.list_production_deployments(state="READY", limit=20)
    good = previous_good(deployments, current)
    if good is None:
        raise RollbackRefused(f"no READY production deployment older than {current.id} in the last {len(deployments)}")
    report.steps.append(f"last good deployment: {good.label()} (newest READY before the current one)")
    return good


async def rollback(vc: VercelClient, environment: str, *, deployment_id: str | None, dry_run: bool,
                   only_if_down: bool, frontend_check: FrontendCheck, journal_get: Journal,
                   journal_put: JournalWrite) -> RollbackReport:
    """Promote the last good (or the given) production deployment and verify it serves."""
    report = RollbackReport(environment, dry_run)
    cfg = vc.config
    try:
        current = await vc.current_production()
        report.current_before = current.to_dict()
        report.steps.append(f"production ({cfg.production_domain}) serves {current.label()}")
        target = await _choose_target(vc, current, deployment_id, await journal_get(), report)
        report.target = target.to_dict()
        ok, line = await frontend_check()
        report.frontend = line
        report.steps.append(f"frontend before: {'answers' if ok else 'FAILING'}, {line}")
        if target.id == current.id:
            report.action, report.verified = "already-current", ok
            report.current_after = current.to_dict()
            if not ok:
                report.problem = (f"production already serves {current.id} and the frontend still fails ({line}); "
                                  "pass deployment_id to roll back to an older deployment")
            return report
        if only_if_down and ok and not deployment_id:
            report.action = "not-needed"
            return report
        if dry_run:
            report.action = "dry-run"
            report.steps.append(f"dry run: would promote {target.id}; nothing changed")
            return report
        await journal_put({"from": current.id, "to": target.id, "at": time.time(), "state": "promoting"})
        status = await vc.promote(target.id)
        report.action = "promoted"
        report.steps.append(f"POST promote {target.id}: HTTP {status}")
        report.verified, report.current_after, report.frontend = await _verify(vc, target, frontend_check, report)
        await journal_put({"from": current.id, "to": target.id, "at": time.time(),
                           "state": "verified" if report.verified else "unverified"})
        if not report.verified:
            report.problem = (f"promoted {target.id} but within {cfg.verify_deadline_s:g} s production did not "
                              f"serve it with the frontend answering (read back: "
                              f"{(report.current_after or {}).get('id', 'unknown')}; frontend {report.frontend})")
    except (VercelError, RollbackRefused) as exc:
        report.problem = str(exc)
    finally:
        report.finished_at = time.time()
    return report


async def _verify(vc: VercelClient, target: Deployment, frontend_check: FrontendCheck,
                  report: RollbackReport) -> tuple[bool, dict[str, Any] | None, str]:
    """Poll until production serves `target` and the frontend answers, or the deadline passes."""
    cfg = vc.config
    deadline = time.monotonic() + cfg.verify_deadline_s
    seen: dict[str, Any] | None = None
    line = "not checked"
    while True:
        try:
            now_serving = await vc.current_production()
            seen = now_serving.to_dict()
            if now_serving.id == target.id:
                ok, line = await frontend_check()
                if ok:
                    report.steps.append(f"read back: production serves {target.id}; frontend answers ({line})")
                    return True, seen, line
        except VercelError as exc:
            line = f"read back failed: {exc}"
        if time.monotonic() + cfg.verify_poll_s > deadline:
            report.steps.append(f"verification gave up after {cfg.verify_deadline_s:g} s: {line}")
            return False, seen, line
        await asyncio.sleep(cfg.verify_poll_s)


# --- 2. Convex redeploy ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvexErrors:
    """Failed executions per function in a window, or why they could not be read."""

    functions: list[dict[str, Any]]
    total: int
    first_at: float | None
    complete: bool
    error: str | None = None

    @property
    def known(self) -> bool:
        return self.error is None

    def line(self) -> str:
        if self.error is not None and not self.total:
            return f"unknown ({self.error})"
        if not self.total:
            return "no failed executions"
        names = ", ".join(f"{f['function']} {f['count']}" for f in self.functions[:5])
        return f"{'at least ' if not self.complete else ''}{self.total} failed executions: {names}"


async def convex_errors(client: httpx.AsyncClient, convex_url: str, deploy_key: Any, *, since_s: float,
                        until_s: float, deadline_s: float, settle_s: float, max_pages: int = 10) -> ConvexErrors:
    """The Convex function log (the endpoint `npx convex logs` reads) over [since_s, until_s]."""
    read = await convex_logs.read_function_logs(
        client, convex_url, deploy_key, since_ms=since_s * 1000, until_ms=until_s * 1000,
        deadline_s=deadline_s, max_pages=max_pages, settle_s=settle_s)
    by_function = convex_logs.errors_by_function(read.entries, since_s, until_s)
    functions: list[dict[str, Any]] = [
        {"function": f.identifier, "type": f.udf_type, "count": f.count, "last_error": f.last_error,
         "last_at": f.last_at_s} for f in by_function.values()]
    first = min((e.timestamp_s for e in read.entries if e.failed and since_s <= e.timestamp_s <= until_s),
                default=None)
    total = sum(f.count for f in by_function.values())
    return ConvexErrors(functions, total, first, read.complete, read.error)


def iso(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def redeploy_steps(convex_url: str, deploy_key_ref: str, errors: ConvexErrors) -> str:
    """The exact steps for a person: Convex deploys only from a checkout with its CLI."""
    before = iso(errors.first_at)
    lines = [
        "## Convex backend error: redeploy the previous version",
        "",
        f"Deployment: {convex_url}. Errors found: {errors.line()}. First error: {before}.",
        "",
        "Convex documents deploys only through its CLI (`npx convex deploy` pushes the functions of a "
        "checkout), so this step is yours:",
        "",
        f"1. Find the last commit deployed before {before} (your CI's deploy history, or the Convex "
        "dashboard → Deployment → History).",
        "2. In a clean checkout of the backend repository: `git switch --detach <that commit>`",
        "3. Install exactly what that commit locks: `npm ci`",
        f"4. Deploy it to production with the production deploy key (secret {deploy_key_ref}) in the "
        "environment, never on the command line: `CONVEX_DEPLOY_KEY=... npx convex deploy`",
        "5. Watch the errors stop: `npx convex logs --prod`",
        "",
        "Then tick **done** below (add a note with the commit you deployed). The flow then checks that "
        "no new errors arrive and that the backend health check passes.",
    ]
    if errors.functions:
        lines += ["", "| Function | Type | Failures | Last error |", "|---|---|---|---|"]
        lines += [f"| `{f['function']}` | {f['type']} | {f['count']} | {str(f['last_error'])[:120]} |"
                  for f in errors.functions[:10]]
    return "\n".join(lines)


@dataclass
class RedeployReport:
    environment: str
    errors_before: str
    asked: bool = False
    answer: str = ""
    operator: str = ""
    note: str = ""
    errors_after: str = ""
    health_after: str = ""
    verified: bool = False
    outcome: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def passed(self) -> bool:
        return self.verified

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def markdown(self) -> str:
        return "\n".join([
            f"## Incident 2, Convex Backend Error: redeploy ({self.environment}): "
            f"{'OK' if self.passed else 'NOT RESOLVED'}", "", self.outcome, "",
            f"- Errors found: {self.errors_before}",
            f"- Person asked to redeploy: {'yes' if self.asked else 'no'}"
            + (f"; answer: {self.answer}" + (f" by {self.operator}" if self.operator else "")
               + (f" ({self.note})" if self.note else "") if self.asked else ""),
            f"- Errors after: {self.errors_after or '-'}",
            f"- Backend health after: {self.health_after or '-'}",
        ]) + "\n"


# --- 3. RPC failover -------------------------------------------------------------------------


@dataclass(frozen=True)
class RpcCheck:
    name: str
    url: str
    healthy: bool
    reason: str

    def line(self) -> str:
        return f"{self.name}: {'healthy, ' if self.healthy else ''}{self.reason}"


async def _solana_usable(url: str, chain: Chain, timeout_s: float,
                         factory: solana.ClientFactory = solana.default_client) -> str:
    observation = await solana.probe_endpoint("solana", url, deadline_s=timeout_s, client_factory=factory)
    genesis, age = observation.get("genesis_hash"), observation.get("head_age_s")
    if observation.error is not None and genesis is None:
        raise EndpointUnusable(observation.error)
    if genesis != chain.genesis_hash:
        raise EndpointUnusable(f"genesis {genesis}, expected {chain.genesis_hash}")
    if age is None:
        raise EndpointUnusable(observation.error or "head age not observed")
    if age > chain.max_head_age_s:
        raise EndpointUnusable(f"head slot {observation.get('head')} is {age:.0f} s old "
                               f"(limit {chain.max_head_age_s:g} s)")
    return f"slot {observation.get('head')}, {age:.1f} s old"


def usable(client: httpx.AsyncClient, chain: Chain, timeout_s: float) -> Callable[[str], Awaitable[str]]:
    """The health test of one URL of `chain`: answers, right chain, fresh head; raises EndpointUnusable."""

    async def attempt(url: str) -> str:
        if chain.kind is ChainKind.solana:
            return await _solana_usable(url, chain, timeout_s)
        assert chain.chain_id is not None
        head, ts = await evm_logs.fresh_head(client, url, chain_id=chain.chain_id,
                                             max_head_age_s=chain.max_head_age_s, timeout_s=timeout_s)
        return f"chain id {chain.chain_id}, head {head}, {max(0.0, time.time() - ts):.1f} s old"

    return attempt


async def check_rpc(client: httpx.AsyncClient, chain_name: str, chain: Chain, index: int,
                    timeout_s: float) -> RpcCheck:
    name, url = chain.endpoint_names(chain_name)[index], chain.rpc_urls[index]
    got = await evm_logs.first_usable([(name, url)], usable(client, chain, timeout_s), timeout_s)
    if isinstance(got, list):
        return RpcCheck(name, url, False, got[0].split(": ", 1)[-1])
    return RpcCheck(name, url, True, got[1])


async def chain_health(client: httpx.AsyncClient, chain_name: str, chain: Chain, timeout_s: float) -> list[RpcCheck]:
    """Every RPC URL of the chain, checked at once, in configured order (the first is the primary)."""
    return list(await asyncio.gather(*(check_rpc(client, chain_name, chain, i, timeout_s)
                                       for i in range(len(chain.rpc_urls)))))


def active_rpc_variable(environment: str, chain: str) -> str:
    """The Prefect Variable the platform reads its active RPC endpoint of a chain from."""
    return f"tfops-active-rpc-{environment}-{chain}".lower()[:255]


@dataclass
class FailoverReport:
    environment: str
    chain: str
    direction: str  # "failover" | "switch-back"
    dry_run: bool
    variable: str
    checks: list[str] = field(default_factory=list)
    previous: dict[str, Any] | None = None
    chosen: dict[str, Any] | None = None
    action: str = ""  # switched | already-active | primary-healthy | primary-unhealthy | none-healthy | dry-run
    alert: str = ""
    problem: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def passed(self) -> bool:
        return not self.problem

    def summary(self) -> str:
        chosen = (self.chosen or {}).get("name", "-")
        text = {
            "switched": f"{self.chain}: active RPC is now {chosen}",
            "already-active": f"{self.chain}: {chosen} is already the active RPC; nothing changed",
            "primary-healthy": f"{self.chain}: the primary RPC is healthy; no failover (use force to switch anyway)",
            "dry-run": f"{self.chain}: dry run: would make {chosen} the active RPC",
        }.get(self.action, self.action)
        return f"{'RPC failover' if self.direction == 'failover' else 'RPC switch back'} ({self.environment}): " + (
            f"FAILED: {self.problem}" if self.problem else text)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "summary": self.summary()}

    def markdown(self) -> str:
        title = "Blockchain Connection Lost: " + ("failover" if self.direction == "failover" else "switch back")
        lines = [f"## Incident 3, {title} ({self.environment}, {self.chain}): {'OK' if self.passed else 'FAILED'}",
                 "", self.summary(), "", f"Recorded in the Prefect Variable `{self.variable}` (the platform reads "
                 "its active endpoint from it)." if self.action == "switched" else
                 f"Prefect Variable `{self.variable}` unchanged.", "", "### RPC endpoints checked", ""]
        lines += [f"- {c}" for c in self.checks]
        if self.previous:
            lines += ["", f"Active before: {self.previous.get('name')} ({self.previous.get('role')}, since "
                          f"{self.previous.get('since')})"]
        if self.alert:
            lines += ["", f"Alert: {self.alert}"]
        return "\n".join(lines) + "\n"


def active_record(chain: str, check: RpcCheck, role: str, reason: str, now: float) -> dict[str, Any]:
    """What the Variable holds: enough for the platform to connect, and for a person to see why."""
    return {"chain": chain, "name": check.name, "url": check.url, "role": role, "reason": reason,
            "since": iso(now), "since_epoch": now}


async def failover(client: httpx.AsyncClient, environment: str, chain_name: str, chain: Chain, *, timeout_s: float,
                   previous: Mapping[str, Any] | None, dry_run: bool, force: bool) -> FailoverReport:
    """Choose the active RPC after the primary failed: the active backup if still healthy, else the
    first healthy backup in configured order. Records nothing itself: the caller writes `chosen`."""
    report = FailoverReport(environment, chain_name, "failover", dry_run, active_rpc_variable(environment, chain_name),
                            previous=dict(previous) if previous else None)
    if len(chain.rpc_urls) < 2:
        report.problem = f"chains.{chain_name} has no backup RPC (rpc_urls lists one URL)"
        return report
    primary = await check_rpc(client, chain_name, chain, 0, timeout_s)
    report.checks.append(f"primary {primary.line()}")
    if primary.healthy and not force:
        report.action = "primary-healthy"
        return report
    backups = list(zip(chain.endpoint_names(chain_name)[1:], chain.rpc_urls[1:], strict=True))
    if previous and previous.get("role") == "backup" and (previous.get("name"), previous.get("url")) in backups:
        keep = await check_rpc(client, chain_name, chain, 1 + backups.index((previous["name"], previous["url"])),
                               timeout_s)
        report.checks.append(f"active backup {keep.line()}")
        if keep.healthy:
            report.chosen, report.action = active_record(chain_name, keep, "backup", "still healthy",
                                                         time.time()), "already-active"
            return report
    test = usable(client, chain, timeout_s)
    names = dict((url, n) for n, url in backups)

    async def attempt(url: str) -> str:
        try:
            return await test(url)
        except asyncio.CancelledError:
            report.checks.append(f"backup {names[url]}: timed out")
            raise
        except Exception as exc:  # noqa: BLE001 - noted here, judged by first_usable
            report.checks.append(f"backup {names[url]}: {exc or type(exc).__name__}")
            raise

    got = await evm_logs.first_usable(backups, attempt, timeout_s)
    if isinstance(got, list):
        report.action = "none-healthy"
        report.problem = f"no healthy backup RPC for {chain_name}: " + "; ".join(got) + "; nothing recorded"
        return report
    name, detail = got
    report.checks.append(f"backup {name}: healthy, {detail}")
    chosen = RpcCheck(name, dict(backups)[name], True, detail)
    report.chosen = active_record(chain_name, chosen, "backup", f"primary {primary.name}: {primary.reason}",
                                  time.time())
    report.action = "dry-run" if dry_run else "switched"
    return report


async def switch_back(client: httpx.AsyncClient, environment: str, chain_name: str, chain: Chain, *,
                      timeout_s: float, previous: Mapping[str, Any] | None, dry_run: bool) -> FailoverReport:
    """Make the primary active again, only if it is healthy now."""
    report = FailoverReport(environment, chain_name, "switch-back", dry_run,
                            active_rpc_variable(environment, chain_name), previous=dict(previous) if previous else None)
    primary = await check_rpc(client, chain_name, chain, 0, timeout_s)
    report.checks.append(f"primary {primary.line()}")
    if not primary.healthy:
        report.action = "primary-unhealthy"
        report.problem = f"the primary {primary.name} is not healthy ({primary.reason}); staying on the backup"
        return report
    report.chosen = active_record(chain_name, primary, "primary", "primary healthy again", time.time())
    if previous is None or (previous.get("role") == "primary" and previous.get("url") == primary.url):
        report.action = "already-active"
        return report
    report.action = "dry-run" if dry_run else "switched"
    return report


def faulty_chain_status(checks: list[RpcCheck]) -> tuple[Status, str, str]:
    """A chain's rollup as triage reads it: ok (primary healthy), warn (only a backup), fail (none)."""
    primary = checks[0]
    healthy = [c for c in checks if c.healthy]
    detail = "; ".join(c.line() for c in checks)
    if primary.healthy:
        return Status.ok, f"primary {primary.name} healthy", detail
    if healthy:
        return Status.warn, (f"degraded: primary {primary.name} unusable ({primary.reason}); backup "
                             f"{healthy[0].name} healthy"), detail
    return Status.fail, "down: no RPC endpoint healthy", detail
