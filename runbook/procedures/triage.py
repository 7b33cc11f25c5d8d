"""Incident triage: the runbook's decision tree "Is the site down?" over gathered evidence.

```
Is the site down?
├─ Yes → Check Vercel status
│   ├─ Vercel down → Wait/Contact support
│   └─ Vercel up → Check DNS/SSL            (then, both fine: the deployment → `vercel rollback`)
└─ No → Check specific feature
    ├─ Frontend issue → Check console
    ├─ Backend issue → Check Convex logs
    └─ Blockchain issue → Check RPC status
```

Every branch reads one or more facts. A fact that could not be observed is `unknown`, and a branch
that needs it ends in a "cannot tell" leaf naming what is missing, never in a guess. A definite
fault further down the same branch (a name that does not resolve) still wins over an unknown one
above it, because it does not depend on it. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runbook.checks import Status

FRONTEND = "frontend"
VERCEL_STATUS = "vercel_status"
VERCEL_DEPLOYMENT = "vercel_deployment"
DNS = "dns"
TLS = "tls"
CONVEX_ERRORS = "convex_errors"
BACKEND_HEALTH = "backend_health"
RPC_PREFIX = "rpc:"

TITLES = {
    FRONTEND: "Frontend answers",
    VERCEL_STATUS: "Vercel status page",
    VERCEL_DEPLOYMENT: "Current production deployment",
    DNS: "DNS resolution of the frontend host",
    TLS: "TLS certificate of the frontend",
    CONVEX_ERRORS: "Convex function errors",
    BACKEND_HEALTH: "Convex backend health check",
}


@dataclass(frozen=True)
class Fact:
    """One piece of evidence. For the frontend, `fail` means down (no answer, or a 5xx) and `warn`
    means it answers but not as expected; for a chain, `warn` means only a backup RPC is healthy."""

    key: str
    status: Status
    observed: str
    detail: str = ""

    @property
    def title(self) -> str:
        if self.key.startswith(RPC_PREFIX):
            return f"RPC status: {self.key.removeprefix(RPC_PREFIX)}"
        return TITLES.get(self.key, self.key)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "status": self.status.value, "observed": self.observed,
                "detail": self.detail}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Fact:
        return cls(d["key"], Status(d["status"]), d["observed"], d.get("detail", ""))


def not_gathered(key: str, why: str = "not gathered") -> Fact:
    return Fact(key, Status.unknown, f"unknown ({why})")


@dataclass(frozen=True)
class Diagnosis:
    leaf: str
    title: str
    path: tuple[str, ...]
    action: str
    flow: str | None = None
    certain: bool = True
    also: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"leaf": self.leaf, "title": self.title, "path": list(self.path), "action": self.action,
                "flow": self.flow, "certain": self.certain, "also": list(self.also)}


# The leaves of the tree, by name. Tests reach each one.
LEAVES = (
    "frontend-unknown", "vercel-outage", "dns-failure", "tls-failure", "bad-deployment", "site-down-cannot-tell",
    "frontend-issue", "backend-issue", "rpc-failover", "chain-down", "cannot-tell", "healthy",
)


@dataclass
class Evidence:
    facts: dict[str, Fact] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Fact:
        return self.facts.get(key) or not_gathered(key)

    def add(self, *facts: Fact) -> None:
        for f in facts:
            self.facts[f.key] = f

    def chains(self) -> list[Fact]:
        return [f for k, f in self.facts.items() if k.startswith(RPC_PREFIX)]

    def ordered(self) -> list[Fact]:
        order = [FRONTEND, VERCEL_STATUS, VERCEL_DEPLOYMENT, DNS, TLS, BACKEND_HEALTH, CONVEX_ERRORS]
        known = [self[k] for k in order]
        return known + sorted(self.chains(), key=lambda f: f.key)


def _step(fact: Fact, question: str) -> str:
    return f"{question} {fact.status.value.upper()}: {fact.observed}"


def _problems(evidence: Evidence, skip: set[str]) -> tuple[str, ...]:
    return tuple(f"{f.title}: {f.observed}" for f in evidence.ordered()
                 if f.key not in skip and f.status in (Status.fail, Status.warn))


def diagnose(evidence: Evidence) -> Diagnosis:
    """Walk the tree; the leaf reached, the path taken, and the runbook's action for it."""
    frontend = evidence[FRONTEND]
    path = [_step(frontend, "Is the site down?")]
    if frontend.status is Status.unknown:
        return Diagnosis("frontend-unknown", "Cannot tell: the frontend's status is unknown", tuple(path),
                         "Probe the site by hand (`curl -I https://<domain>`) and fix the frontend endpoint in "
                         "the environment file.", certain=False, also=_problems(evidence, {FRONTEND}))
    if frontend.status is Status.fail:
        return _site_down(evidence, path)
    return _site_up(evidence, path)


def _site_down(evidence: Evidence, path: list[str]) -> Diagnosis:
    vercel, dns, tls, deployment = (evidence[VERCEL_STATUS], evidence[DNS], evidence[TLS],
                                    evidence[VERCEL_DEPLOYMENT])
    path.append(_step(vercel, "Vercel status?"))
    also = _problems(evidence, {FRONTEND, VERCEL_STATUS, DNS, TLS, VERCEL_DEPLOYMENT})
    if vercel.status is Status.fail:
        return Diagnosis("vercel-outage", "Site down: Vercel is having an outage", tuple(path),
                         "Wait for Vercel and contact Vercel support; post a status page update (P0). "
                         "A rollback does not help while Vercel itself is down.", also=also)
    path += [_step(dns, "DNS?"), _step(tls, "SSL?")]
    if dns.status is Status.fail:
        return Diagnosis("dns-failure", "Site down: the frontend's host name does not resolve", tuple(path),
                         "Check the DNS configuration: the domain's records must point at Vercel "
                         "(Vercel dashboard → Domains) and the registration must be current.", also=also)
    if tls.status is Status.fail:
        return Diagnosis("tls-failure", "Site down: the TLS certificate is invalid or expired", tuple(path),
                         "Check the SSL certificate in Vercel (Domains): renew it or fix the domain's "
                         "verification so Vercel can issue it.", also=also)
    unknown = [f for f in (vercel, dns, tls) if f.status is Status.unknown]
    if unknown:
        names = ", ".join(f.title for f in unknown)
        return Diagnosis("site-down-cannot-tell", f"Site down; cannot tell why: {names} unknown", tuple(path),
                         f"Check by hand what could not be read ({names}): the Vercel status page, "
                         "`dig <domain>`, the certificate. If they are fine, the quick fix is `vercel rollback` "
                         "(flow frontend-rollback).", flow=None, certain=False, also=also)
    path.append(_step(deployment, "Current production deployment?"))
    if deployment.status is Status.unknown:
        return Diagnosis("site-down-cannot-tell",
                         "Site down with Vercel, DNS and SSL fine; the current deployment is unknown", tuple(path),
                         "Read the deployment in the Vercel dashboard; the runbook's quick fix is `vercel "
                         "rollback` (flow frontend-rollback reads the deployments itself).",
                         flow="frontend-rollback", certain=False, also=also)
    return Diagnosis("bad-deployment", "Site down: the current production deployment is failing", tuple(path),
                     "Roll back: promote the last good production deployment (runbook quick fix `vercel "
                     "rollback`; flow frontend-rollback), then verify the frontend answers.",
                     flow="frontend-rollback", also=also)


def _site_up(evidence: Evidence, path: list[str]) -> Diagnosis:
    frontend = evidence[FRONTEND]
    backend = [evidence[BACKEND_HEALTH], evidence[CONVEX_ERRORS]]
    chains = sorted(evidence.chains(), key=lambda f: f.key)
    path.append("Check specific feature: frontend, backend, blockchain")
    found: list[Diagnosis] = []
    if frontend.status is Status.warn:
        found.append(Diagnosis("frontend-issue", "Frontend issue: the site answers, but not as expected",
                               (*path, _step(frontend, "Frontend issue?")),
                               "Check the browser console and the Vercel deployment's logs for the page "
                               "that misbehaves."))
    failing_backend = [f for f in backend if f.status is Status.fail]
    if failing_backend:
        found.append(Diagnosis("backend-issue", "Backend issue: Convex functions are failing",
                               (*path, *(_step(f, "Backend issue?") for f in backend)),
                               "Check the Convex logs (`npx convex logs --error`); if a deploy caused it, "
                               "redeploy the previous version (flow convex-redeploy).", flow="convex-redeploy"))
    down = [f for f in chains if f.status is Status.fail]
    degraded = [f for f in chains if f.status is Status.warn]
    if down:
        found.append(Diagnosis("chain-down", "Blockchain issue: no RPC endpoint of "
                               + ", ".join(f.key.removeprefix(RPC_PREFIX) for f in down) + " is healthy",
                               (*path, *(_step(f, "Blockchain issue?") for f in down)),
                               "Check the RPC providers' status pages and add a working RPC URL to the chain's "
                               "rpc_urls; token launches on that chain fail until then."))
    if degraded:
        found.append(Diagnosis("rpc-failover", "Blockchain issue: the primary RPC of "
                               + ", ".join(f.key.removeprefix(RPC_PREFIX) for f in degraded) + " is failing",
                               (*path, *(_step(f, "Blockchain issue?") for f in degraded)),
                               "Switch to the first healthy backup RPC (flow rpc-failover, per chain); switch "
                               "back deliberately when the primary recovers (flow rpc-switch-back).",
                               flow="rpc-failover"))
    if found:
        first = found[0]
        others = tuple(f"{d.title} ({d.leaf})" for d in found[1:])
        return Diagnosis(first.leaf, first.title, first.path, first.action, first.flow, first.certain, others)
    unknown = [f for f in [*backend, *chains] if f.status is Status.unknown]
    if unknown:
        names = ", ".join(f.title for f in unknown)
        return Diagnosis("cannot-tell", f"Site up; cannot tell about the rest: {names} unknown",
                         (*path, *(_step(f, "Unknown:") for f in unknown)),
                         f"Check by hand what could not be read: {names}.", certain=False)
    return Diagnosis("healthy", "No fault found: the site, the backend and every chain are healthy",
                     (*path, "frontend, backend and every chain OK"),
                     "Nothing to fix from here; if users still report a problem, check the specific feature "
                     "they use (browser console, Convex logs).")


_MARK = {Status.ok: "[x]", Status.warn: "[!]", Status.fail: "[ ]", Status.unknown: "[?]"}


def render_markdown(environment: str, evidence: Evidence, diagnosis: Diagnosis) -> str:
    lines = [f"## Triage ({environment}): {diagnosis.title}", "",
             f"**Diagnosis:** `{diagnosis.leaf}`" + ("" if diagnosis.certain else " (not certain)"), "",
             f"**Recommended action:** {diagnosis.action}"]
    if diagnosis.flow:
        lines.append(f"Flow: `{diagnosis.flow}`")
    lines += ["", "### Path through the decision tree", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(diagnosis.path, 1)]
    if diagnosis.also:
        lines += ["", "### Also found", ""] + [f"- {a}" for a in diagnosis.also]
    lines += ["", "### Evidence", ""]
    for f in evidence.ordered():
        lines.append(f"- {_MARK[f.status]} {f.title}: {f.status.value.upper()}, {f.observed}")
    return "\n".join(lines) + "\n"


def table_rows(evidence: Evidence) -> list[dict[str, str]]:
    return [{"evidence": f.title, "status": f.status.value, "observed": f.observed, "detail": f.detail}
            for f in evidence.ordered()]
