"""Weekly Maintenance 1 and 2, "Dependency Updates" and "Security Patches", on a checkout of the application.

Dependency updates: `npm outdated --json` gives current/wanted/latest per package; `npm update` runs on a
new branch (`branch_prefix` + the date), then the configured test command. The branch keeps a commit
only if the tests pass; otherwise the branch is deleted and the checkout is put back as it was. Either
way the checkout ends on its original branch with `node_modules` matching the lockfile again, so the
next run starts from the same place. Nothing is pushed.

Security patches: `npm audit --json` (report format 2, npm 7+) becomes one row per vulnerable package;
any advisory at or above `audit_fail_at` fails the step. When the audit service cannot be reached
(npm answers with an error instead of a report) the step is `unknown` with the reason, never "no
vulnerabilities". Fixable advisories get `npm audit fix` on a branch of their own, gated by the same
tests; `npm audit fix --force` (semver-major changes) only runs with an explicit approval.

Only one maintenance run works on a checkout at a time: an advisory lock in its `.git` folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from runbook.checks import CheckResult, Status
from runbook.clients import commands
from runbook.clients.commands import CommandError, CommandResult
from runbook.config_types import Severity, Strict

ITEM_UPDATES = "Dependency updates"
ITEM_PATCHES = "Security patches"
GROUP = "maintenance"

AUDIT_SEVERITIES = ("info", "low", "moderate", "high", "critical")
AuditSeverity = Literal["info", "low", "moderate", "high", "critical"]

GIT_TIMEOUT_S = 120.0
# Whole JSON reports must be parsed; a truncated one is reported as unreadable, not half-read.
JSON_KEEP_BYTES = 32 * 1024 * 1024
TEST_TAIL_LINES = 20
NOT_PUSHED = "not pushed: pushing is not configured"
_BRANCH_PREFIX = r"^[A-Za-z0-9][A-Za-z0-9._/-]*$"


class Dependencies(Strict):
    """The application checkout that weekly maintenance updates, and how its tests are run."""

    app_dir: str = Field(
        min_length=1,
        description="the application's git checkout (its package.json folder), relative to the environment file's "
        "folder unless absolute",
    )
    test_command: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: ["npm", "run", "test:all"],
        description="the test command as an argument list, run in app_dir; no shell",
    )
    branch_prefix: str = Field(default="deps/weekly-", pattern=_BRANCH_PREFIX)
    audit_branch_prefix: str = Field(default="deps/audit-fix-", pattern=_BRANCH_PREFIX)
    timeout_s: Annotated[float, Field(gt=0, le=6 * 3600)] = Field(default=600, description="per command")
    audit_fail_at: AuditSeverity = Field(
        default="high", description="fail when any advisory is at or above this npm severity"
    )
    push: bool = Field(default=False, description="push the branch; not supported: branches stay local")
    severity: Severity = Field(default=Severity.P2, description="severity of a failing step in alerts")

    @field_validator("test_command")
    @classmethod
    def _no_empty_arguments(cls, argv: list[str]) -> list[str]:
        if not argv[0].strip():
            raise ValueError("the first element must name the executable")
        return argv

    @field_validator("branch_prefix", "audit_branch_prefix")
    @classmethod
    def _ref_safe(cls, prefix: str) -> str:
        if ".." in prefix or "//" in prefix or prefix.endswith(".") or ".lock/" in prefix:
            raise ValueError(f"{prefix!r} cannot start a git branch name")
        return prefix

    @field_validator("push")
    @classmethod
    def _push_unsupported(cls, push: bool) -> bool:
        if push:
            raise ValueError("pushing is not supported: the branch stays in the checkout; push it by hand")
        return push

    def app_path(self, base_dir: Path) -> Path:
        path = Path(self.app_dir).expanduser()
        return path if path.is_absolute() else base_dir / path


class OutputError(ValueError):
    """npm's output is not the report it should be; the message says what is wrong."""


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Outdated:
    name: str
    current: str | None  # None: in package.json but not installed
    wanted: str
    latest: str
    location: str = ""

    @property
    def behind_wanted(self) -> bool:
        return self.current != self.wanted

    @property
    def major_available(self) -> bool:
        return self.latest != self.wanted

    def describe(self) -> str:
        return f"current {self.current or 'not installed'}, wanted {self.wanted}, latest {self.latest}"


def _load_json(text: str, what: str) -> Any:
    if not text.strip():
        raise OutputError(f"{what} printed nothing")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutputError(f"{what} did not print JSON ({exc.msg} at line {exc.lineno})") from None


def _npm_error(data: Any) -> str | None:
    """npm's own error object (`{"error": {"code", "summary", "detail"}}`), or an HTTP failure it passed on."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        code = error.get("code") or (f"HTTP {data['statusCode']}" if "statusCode" in data else "error")
        text = error.get("summary") or data.get("message") or error.get("detail") or "no details"
        return f"{code}: {str(text).strip()}"
    if "statusCode" in data and "message" in data:
        return f"HTTP {data['statusCode']}: {data['message']}"
    return None


def parse_outdated(text: str) -> list[Outdated]:
    """`npm outdated --json`: `{name: {current, wanted, latest, location, ...}}`, a list per name in workspaces."""
    data = _load_json(text, "npm outdated")
    if (error := _npm_error(data)) is not None:
        raise OutputError(f"npm outdated failed: {error}")
    if not isinstance(data, dict):
        raise OutputError(f"npm outdated: expected an object by package name, got {type(data).__name__}")
    out = []
    for name, entries in sorted(data.items()):
        for entry in entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, dict) or not isinstance(entry.get("wanted"), str):
                raise OutputError(f"npm outdated: package {name!r} has no 'wanted' version")
            out.append(Outdated(name, entry.get("current"), entry["wanted"], str(entry.get("latest", entry["wanted"])),
                                str(entry.get("location", ""))))
    return out


@dataclass(frozen=True)
class Advisory:
    """One vulnerable package of an audit report (npm groups advisories by package)."""

    package: str
    severity: str
    titles: tuple[str, ...]
    range: str
    direct: bool
    fix: str
    fixable: bool
    needs_force: bool
    via: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()

    @property
    def rank(self) -> int:
        return AUDIT_SEVERITIES.index(self.severity)

    def describe(self) -> str:
        what = "; ".join(self.titles) if self.titles else "via " + ", ".join(self.via)
        return f"{self.severity}: {what} ({self.range or 'any version'})"


@dataclass(frozen=True)
class AuditReport:
    advisories: list[Advisory]
    counts: dict[str, int] = field(default_factory=dict)
    dependencies: int | None = None

    def at_or_above(self, severity: str) -> list[Advisory]:
        return [a for a in self.advisories if a.rank >= AUDIT_SEVERITIES.index(severity)]


class AuditUnavailable(Exception):
    """No audit report: the reason is why the advisories are unknown, which is not the same as none."""


def _fix_of(fix: Any) -> tuple[str, bool, bool]:
    if fix is True:
        return "npm audit fix", True, False
    if isinstance(fix, dict) and fix.get("name"):
        target = f"{fix['name']}@{fix.get('version', '?')}"
        if fix.get("isSemVerMajor"):
            return f"npm audit fix --force (installs {target}, a semver-major change)", False, True
        return f"npm audit fix (installs {target})", True, False
    return "no fix available", False, False


def parse_audit(stdout: str, returncode: int | None = None) -> AuditReport:
    """`npm audit --json` in report format 2 (npm 7+). Raises AuditUnavailable when there is no report.

    npm exits 1 both when it found vulnerabilities and when it could not ask the registry, so the exit
    code alone says nothing; the JSON does.
    """
    exit_note = f" (exit {returncode})" if returncode is not None else ""
    try:
        data = _load_json(stdout, "npm audit")
    except OutputError as exc:
        raise AuditUnavailable(f"{exc}{exit_note}") from None
    if (error := _npm_error(data)) is not None:
        raise AuditUnavailable(f"the audit service could not be used: {error}")
    if not isinstance(data, dict) or data.get("auditReportVersion") != 2:
        version = data.get("auditReportVersion") if isinstance(data, dict) else None
        raise AuditUnavailable(f"unsupported npm audit report (auditReportVersion {version!r}); npm 7+ writes 2")
    vulns = data.get("vulnerabilities")
    if not isinstance(vulns, dict):
        raise AuditUnavailable("npm audit report has no 'vulnerabilities' object")
    advisories = []
    for key, v in sorted(vulns.items()):
        if not isinstance(v, dict) or v.get("severity") not in AUDIT_SEVERITIES:
            severity = v.get("severity") if isinstance(v, dict) else None
            raise AuditUnavailable(f"npm audit report: package {key!r} has an unknown severity {severity!r}")
        via = v.get("via") or []
        titles = tuple(dict.fromkeys(str(x.get("title", "")) for x in via if isinstance(x, dict) and x.get("title")))
        urls = tuple(dict.fromkeys(str(x["url"]) for x in via if isinstance(x, dict) and x.get("url")))
        through = tuple(str(x) for x in via if isinstance(x, str))
        fix, fixable, needs_force = _fix_of(v.get("fixAvailable"))
        advisories.append(Advisory(str(v.get("name", key)), v["severity"], titles, str(v.get("range", "")),
                                   bool(v.get("isDirect", False)), fix, fixable, needs_force, through, urls))
    advisories.sort(key=lambda a: (-a.rank, a.package))
    meta_raw = data.get("metadata")
    meta: dict[str, Any] = meta_raw if isinstance(meta_raw, dict) else {}
    counts_any = meta.get("vulnerabilities")
    counts_raw: dict[str, Any] = counts_any if isinstance(counts_any, dict) else {}
    counts = {k: int(counts_raw[k]) for k in (*AUDIT_SEVERITIES, "total") if isinstance(counts_raw.get(k), int)}
    deps = meta.get("dependencies")
    total_deps = deps.get("total") if isinstance(deps, dict) else deps if isinstance(deps, int) else None
    return AuditReport(advisories, counts, total_deps if isinstance(total_deps, int) else None)


# ---------------------------------------------------------------------------------------------- running


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Unattended: git must never wait for a password, npm must not print upgrade nags into reports.
    env.update({"GIT_TERMINAL_PROMPT": "0", "npm_config_update_notifier": "false", "npm_config_fund": "false"})
    return env


async def _run(argv: Sequence[str], cwd: Path, timeout_s: float, keep_bytes: int = commands.DEFAULT_KEEP_BYTES
               ) -> CommandResult:
    return await commands.run(argv, cwd=cwd, timeout_s=timeout_s, env=_env(), keep_bytes=keep_bytes)


class StepError(Exception):
    """A step that cannot go on; `status` says whether that is a failure or an unknown."""

    def __init__(self, message: str, status: Status = Status.unknown):
        self.status = status
        super().__init__(message)


async def _git(top: Path, *args: str) -> str:
    result = await _run(["git", *args], top, GIT_TIMEOUT_S)
    if not result.ok:
        raise StepError(f"{result.describe()}: {result.tail(5) or 'no output'}", Status.fail)
    return result.stdout.strip()


def _check_tools(cfg: Dependencies) -> None:
    """Every executable the step needs, found before anything changes in the checkout."""
    path = _env().get("PATH")
    for executable in ("git", "npm", cfg.test_command[0]):
        commands.resolve(executable, path)


@dataclass
class Checkout:
    app: Path
    top: Path
    git_dir: Path
    branch: str
    commit: str
    had_node_modules: bool


async def open_checkout(app: Path) -> Checkout:
    """The checkout as found; refuses anything that a rollback could not restore exactly."""
    if not app.is_dir():
        raise StepError(f"app_dir {str(app)!r} does not exist or is not a folder")
    if not (app / "package.json").is_file():
        raise StepError(f"app_dir {str(app)!r} has no package.json")
    probe = await _run(["git", "rev-parse", "--show-toplevel", "--absolute-git-dir"], app, GIT_TIMEOUT_S)
    if not probe.ok:
        raise StepError(f"app_dir {str(app)!r} is not a git checkout: {probe.tail(2)}")
    top, git_dir = probe.stdout.splitlines()[:2]
    branch_probe = await _run(["git", "symbolic-ref", "--quiet", "--short", "HEAD"], app, GIT_TIMEOUT_S)
    if not branch_probe.ok:
        raise StepError(f"the checkout at {str(app)!r} has a detached HEAD; check out a branch first")
    dirty = await _git(Path(top), "status", "--porcelain")
    if dirty:
        shown = ", ".join(line[3:] for line in dirty.splitlines()[:5])
        raise StepError(f"the checkout at {str(app)!r} has uncommitted changes ({shown}); commit or stash them first")
    commit = await _git(Path(top), "rev-parse", "HEAD")
    return Checkout(app, Path(top), Path(git_dir), branch_probe.stdout.strip(), commit,
                    (app / "node_modules").is_dir())


@contextlib.contextmanager
def _locked(checkout: Checkout) -> Iterator[None]:
    # flock, not a marker file: the kernel releases it when a killed run dies, so it never goes stale.
    path = checkout.git_dir / "tokenforge-maintenance.lock"
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StepError(f"another maintenance run is working on {checkout.app} ({path} is locked)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def _free_branch_name(checkout: Checkout, prefix: str, now: datetime) -> str:
    base = f"{prefix}{now:%Y%m%d}"
    for n in range(1, 100):
        name = base if n == 1 else f"{base}-{n}"
        exists = await _run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{name}"], checkout.top,
                            GIT_TIMEOUT_S)
        if not exists.ok:
            return name
    raise StepError(f"branches {base} to {base}-99 all exist; delete old ones", Status.fail)


async def _restore_node_modules(checkout: Checkout, timeout_s: float) -> str:
    """Put node_modules back in line with the lockfile of the branch the checkout is on again."""
    if not checkout.had_node_modules or not (checkout.app / "package-lock.json").is_file():
        return ""
    result = await _run(["npm", "ci", "--no-audit", "--no-fund"], checkout.app, timeout_s)
    return "" if result.ok else f"node_modules not restored, {result.describe()}: {result.tail(5)}"


async def _return_to_original(checkout: Checkout, delete: str | None, timeout_s: float) -> list[str]:
    """Back to the original branch and commit with a clean tree; the problems, if any, to report."""
    problems = []
    for args in (("reset", "--hard", "--quiet"), ("clean", "-fd", "--quiet"), ("checkout", "--quiet", checkout.branch)):
        try:
            await _git(checkout.top, *args)
        except (StepError, CommandError) as exc:
            problems.append(str(exc))
    if delete is not None:
        try:
            await _git(checkout.top, "branch", "-D", delete)
        except (StepError, CommandError) as exc:
            problems.append(str(exc))
    try:
        head = await _git(checkout.top, "rev-parse", "HEAD")
        status = await _git(checkout.top, "status", "--porcelain")
        if head != checkout.commit or status:
            problems.append(f"the checkout is at {head[:12]} with changes {status!r}, not at {checkout.commit[:12]}")
    except (StepError, CommandError) as exc:
        problems.append(str(exc))
    if note := await _restore_node_modules(checkout, timeout_s):
        problems.append(note)
    return problems


async def _commit(checkout: Checkout, message: str) -> None:
    identity: list[str] = []
    configured = await _run(["git", "config", "user.email"], checkout.top, GIT_TIMEOUT_S)
    if not configured.stdout.strip():
        # A worker account often has no git identity; the commit still says who made it.
        identity = ["-c", "user.name=tokenforge-ops", "-c", "user.email=tokenforge-ops@localhost"]
    await _git(checkout.top, "add", "--all")
    await _git(checkout.top, *identity, "commit", "--quiet", "--no-verify", "-m", message)


@dataclass(frozen=True)
class BranchOutcome:
    status: Status
    observed: str
    detail: str
    branch: str
    committed: bool


async def change_on_branch(
    cfg: Dependencies, checkout: Checkout, prefix: str, change: Sequence[str], message: str, now: datetime
) -> BranchOutcome:
    """Run `change` on a new branch, then the tests; commit if they pass, else leave no trace."""
    branch = await _free_branch_name(checkout, prefix, now)
    change_text = " ".join(change)
    await _git(checkout.top, "checkout", "--quiet", "-b", branch)
    committed = False
    problems: list[str] = []
    try:
        changed = await _run(change, checkout.app, cfg.timeout_s)
        if not changed.ok:
            outcome = BranchOutcome(Status.fail, f"{changed.describe()}; branch {branch} deleted",
                                    changed.tail(TEST_TAIL_LINES), branch, False)
        elif not await _git(checkout.top, "status", "--porcelain"):
            outcome = BranchOutcome(Status.ok, f"`{change_text}` changed nothing; no branch kept", "", branch, False)
        else:
            tests = await _run(cfg.test_command, checkout.app, cfg.timeout_s)
            tail = f"test output (last lines):\n{tests.tail(TEST_TAIL_LINES)}"
            if tests.ok:
                await _commit(checkout, message)
                committed = True
                outcome = BranchOutcome(Status.ok, f"tests passed; committed on branch {branch}; {NOT_PUSHED}",
                                        tail, branch, True)
            else:
                outcome = BranchOutcome(Status.fail, f"tests failed ({tests.describe()}); branch {branch} deleted, "
                                        f"checkout restored to {checkout.branch}", tail, branch, False)
    except (StepError, CommandError) as exc:
        outcome = BranchOutcome(Status.fail, f"{exc}; branch {branch} deleted", "", branch, False)
    finally:
        # Also on cancellation: the checkout must not be left on a half-updated branch.
        problems = await _return_to_original(checkout, None if committed else branch, cfg.timeout_s)
    if problems:
        return BranchOutcome(Status.fail, f"{outcome.observed}; RESTORING THE CHECKOUT FAILED: {'; '.join(problems)}",
                             outcome.detail, branch, committed)
    return outcome


def _result(cfg: Dependencies, item: str, target: str, status: Status, observed: str, expected: str,
            detail: str = "", name: str = "") -> CheckResult:
    return CheckResult(name or target, item, status, observed, expected, detail,
                       severity=cfg.severity.value, target=target, group=GROUP)


async def dependency_updates(cfg: Dependencies, base_dir: Path, now: datetime) -> list[CheckResult]:
    """Outdated packages, then `npm update` on a branch kept only if the tests pass."""
    app = cfg.app_path(base_dir)
    summary_expected = "packages at their wanted versions, updated on a branch whose tests pass"
    try:
        _check_tools(cfg)
        checkout = await open_checkout(app)
        with _locked(checkout):
            listed = await _run(["npm", "outdated", "--json"], app, cfg.timeout_s, JSON_KEEP_BYTES)
            if listed.timed_out:
                raise StepError(listed.describe())
            # npm outdated exits 1 when something is outdated; the JSON is the answer either way.
            try:
                outdated = parse_outdated(listed.stdout)
            except OutputError as exc:
                raise StepError(f"{exc} ({listed.describe()}): {listed.tail(3)}") from None
            behind = [o for o in outdated if o.behind_wanted]
            outcome = None
            if behind:
                names = ", ".join(o.name for o in behind)
                outcome = await change_on_branch(
                    cfg, checkout, cfg.branch_prefix, ["npm", "update", "--no-audit", "--no-fund"],
                    f"Update dependencies within their ranges ({now:%Y-%m-%d})\n\nnpm update: {names}", now)
    except (StepError, CommandError) as exc:
        status = exc.status if isinstance(exc, StepError) else Status.unknown
        return [_result(cfg, ITEM_UPDATES, "npm update", status, str(exc), summary_expected)]
    rows = []
    for o in outdated:
        updated = not o.behind_wanted or (outcome is not None and outcome.committed)
        note = f"latest {o.latest} is outside the range in package.json: a breaking update to review by hand" \
            if o.major_available else ""
        rows.append(_result(cfg, ITEM_UPDATES, o.name, Status.ok if updated else Status.warn, o.describe(),
                            "current = wanted", note, name="npm outdated"))
    if outcome is None:
        observed = f"all {len(outdated)} listed packages at their wanted version" if outdated \
            else "no outdated packages"
        summary = _result(cfg, ITEM_UPDATES, "npm update", Status.ok, f"{observed}; nothing to update",
                          summary_expected)
    else:
        summary = _result(cfg, ITEM_UPDATES, "npm update", outcome.status,
                          f"{len(behind)} package(s) behind their wanted version: {outcome.observed}",
                          summary_expected, outcome.detail)
    return [summary, *rows]


async def security_patches(
    cfg: Dependencies, base_dir: Path, now: datetime, force_approved: bool = False
) -> list[CheckResult]:
    """The audit report by severity, then `npm audit fix` on a branch kept only if the tests pass."""
    app = cfg.app_path(base_dir)
    expected = f"no advisory at or above {cfg.audit_fail_at}"
    try:
        _check_tools(cfg)
        checkout = await open_checkout(app)
        with _locked(checkout):
            audited = await _run(["npm", "audit", "--json"], app, cfg.timeout_s, JSON_KEEP_BYTES)
            if audited.timed_out:
                raise StepError(f"{audited.describe()}; the advisories are unknown")
            try:
                report = parse_audit(audited.stdout, audited.returncode)
            except AuditUnavailable as exc:
                raise StepError(f"no audit report, so the advisories are unknown (not absent): {exc}") from None
            fixable = [a for a in report.advisories if a.fixable]
            forced = [a for a in report.advisories if a.needs_force]
            outcome = None
            if fixable or (forced and force_approved):
                change = ["npm", "audit", "fix", "--no-fund"] + (["--force"] if forced and force_approved else [])
                names = ", ".join(a.package for a in (*fixable, *(forced if force_approved else [])))
                outcome = await change_on_branch(
                    cfg, checkout, cfg.audit_branch_prefix, change,
                    f"Fix security advisories ({now:%Y-%m-%d})\n\n{' '.join(change)}: {names}", now)
    except (StepError, CommandError) as exc:
        status = exc.status if isinstance(exc, StepError) else Status.unknown
        return [_result(cfg, ITEM_PATCHES, "npm audit", status, str(exc), expected)]
    failing = report.at_or_above(cfg.audit_fail_at)
    counts = ", ".join(f"{report.counts.get(s, 0)} {s}" for s in reversed(AUDIT_SEVERITIES))
    if failing:
        status, observed = Status.fail, f"{len(failing)} package(s) at or above {cfg.audit_fail_at} ({counts})"
    elif report.advisories:
        status, observed = Status.warn, f"{len(report.advisories)} package(s) below {cfg.audit_fail_at} ({counts})"
    else:
        audited_n = f" in {report.dependencies} dependencies" if report.dependencies is not None else ""
        status, observed = Status.ok, f"no known vulnerabilities{audited_n}"
    results = [_result(cfg, ITEM_PATCHES, "npm audit", status, observed, expected)]
    if outcome is not None:
        results.append(_result(cfg, ITEM_PATCHES, "npm audit fix", outcome.status, outcome.observed,
                               "fixes committed on a branch whose tests pass", outcome.detail))
    if forced and not force_approved:
        names = ", ".join(a.package for a in forced)
        results.append(_result(cfg, ITEM_PATCHES, "npm audit fix --force", Status.warn,
                               f"approval needed: the fix for {names} is a semver-major change; not run",
                               "run with force_approved after reviewing the breaking changes"))
    for a in report.advisories:
        row_status = Status.fail if a in failing else Status.warn
        results.append(_result(cfg, ITEM_PATCHES, a.package, row_status, a.describe(), "no advisory",
                               f"fix: {a.fix}" + (f"; {', '.join(a.urls)}" if a.urls else ""), name="npm audit"))
    return results
