"""Weekly maintenance with the real npm and git on a copy of tests/fixtures/npm-app, against the npm registry.

The fixture depends on `ms` ^2.0.0 with its lockfile at 2.0.0, so `npm update` always has 2.1.x to install.
Its test script fails when NPM_APP_TESTS_FAIL=1, standing in for an update that breaks the application.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runbook.checks import Status
from runbook.procedures.dependencies import Dependencies, dependency_updates, security_patches

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "npm-app"
NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
BRANCH = "deps/weekly-20261127"

pytestmark = pytest.mark.skipif(shutil.which("npm") is None or shutil.which("git") is None,
                                reason="needs npm and git")


def sh(cwd: Path, *argv: str) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True, timeout=120).stdout.strip()


def git(app: Path, *args: str) -> str:
    return sh(app, "git", *args)


@pytest.fixture(autouse=True)
def _prefer_cached_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    # Package documents already in npm's cache are not fetched again: the tests stay quick and the
    # versions they need (ms 1.0.0, 2.0.0, 2.1.x) do not change.
    monkeypatch.setenv("npm_config_prefer_offline", "true")


def installed_ms(app: Path) -> str:
    return json.loads((app / "node_modules" / "ms" / "package.json").read_text())["version"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture installed from its lockfile once; each test copies it (node_modules is small)."""
    template = tmp_path_factory.mktemp("npm-app") / "app"
    shutil.copytree(FIXTURE, template, ignore=shutil.ignore_patterns("node_modules"))
    sh(template, "npm", "ci", "--no-audit", "--no-fund")
    return template


@pytest.fixture
def app(installed: Path, tmp_path: Path) -> Path:
    """A fresh checkout of the installed fixture on branch main."""
    app = tmp_path / "app"
    shutil.copytree(installed, app, symlinks=True)
    git(app, "init", "--quiet", "-b", "main")
    git(app, "config", "user.name", "Maintenance Test")
    git(app, "config", "user.email", "maintenance-test@example.com")
    git(app, "add", "--all")
    git(app, "commit", "--quiet", "-m", "The application")
    assert installed_ms(app) == "2.0.0" and git(app, "status", "--porcelain") == ""
    return app


def state(app: Path) -> tuple[str, str, str, str]:
    return (git(app, "branch", "--show-current"), git(app, "rev-parse", "HEAD"), git(app, "status", "--porcelain"),
            installed_ms(app))


async def test_updates_that_pass_the_tests_are_committed_on_a_new_branch(app, tmp_path):
    before = state(app)
    cfg = Dependencies(app_dir="app")  # relative to the environment file's folder, here tmp_path
    results = await dependency_updates(cfg, tmp_path, NOW)
    summary, ms = results
    assert summary.item == "Dependency updates" and summary.target == "npm update"
    assert summary.status is Status.ok, summary
    assert f"committed on branch {BRANCH}" in summary.observed and "not pushed" in summary.observed
    assert "ok: 2 assertions with ms 2.1." in summary.detail  # the test output's tail
    assert (ms.target, ms.status, ms.observed) == ("ms", Status.ok, "current 2.0.0, wanted 2.1.3, latest 2.1.3")
    # The checkout is back where it was; the update waits on its branch for review.
    assert state(app) == before
    again, _ = await dependency_updates(cfg, tmp_path, NOW)
    assert f"committed on branch {BRANCH}-2" in again.observed  # a rerun the same day keeps the first branch
    assert git(app, "log", "--format=%s", "-1", BRANCH).startswith("Update dependencies within their ranges")
    assert git(app, "diff", "--name-only", "main", BRANCH) == "package-lock.json"
    locked = json.loads(git(app, "show", f"{BRANCH}:package-lock.json"))
    assert locked["packages"]["node_modules/ms"]["version"].startswith("2.1.")


async def test_updates_that_fail_the_tests_leave_no_branch_and_the_checkout_as_it_was(app, tmp_path, monkeypatch):
    before = state(app)
    monkeypatch.setenv("NPM_APP_TESTS_FAIL", "1")
    summary, ms = await dependency_updates(Dependencies(app_dir=str(app)), Path("/nonexistent"), NOW)
    assert summary.status is Status.fail, summary
    assert "tests failed (`npm run test:all` exited 1" in summary.observed
    assert f"branch {BRANCH} deleted, checkout restored to main" in summary.observed
    assert "FAIL: duration formatting changed" in summary.detail
    assert ms.status is Status.warn
    assert state(app) == before
    assert git(app, "branch", "--list", "deps/*") == ""


async def test_a_checkout_with_uncommitted_changes_is_not_touched(app, tmp_path):
    (app / "notes.txt").write_text("work in progress\n")
    before = state(app)
    [summary] = await dependency_updates(Dependencies(app_dir="app"), tmp_path, NOW)
    assert summary.status is Status.unknown
    assert "uncommitted changes (notes.txt)" in summary.observed
    assert state(app) == before


async def test_a_missing_checkout_and_a_missing_test_tool_are_named(app, tmp_path):
    [missing] = await dependency_updates(Dependencies(app_dir="no-such-app"), tmp_path, NOW)
    assert missing.status is Status.unknown and "no-such-app" in missing.observed
    cfg = Dependencies(app_dir="app", test_command=["no-such-test-runner", "--all"])
    before = state(app)
    [summary] = await dependency_updates(cfg, tmp_path, NOW)
    assert summary.status is Status.unknown
    assert "'no-such-test-runner' was not found" in summary.observed
    assert state(app) == before and git(app, "branch", "--list", "deps/*") == ""


async def test_security_patches_never_report_an_unreachable_audit_as_clean(app, tmp_path):
    before = state(app)
    results = await security_patches(Dependencies(app_dir="app"), tmp_path, NOW)
    head = results[0]
    assert head.item == "Security patches" and head.target == "npm audit"
    if head.status is Status.unknown:
        # This machine's registry answers the bulk advisory endpoint with 405.
        assert "the advisories are unknown (not absent)" in head.observed
        assert "the audit service could not be used" in head.observed
        assert len(results) == 1
    else:
        # A registry with a working audit service: ms 2.0.0 has no advisory.
        assert (head.status, head.observed) == (Status.ok, "no known vulnerabilities in 1 dependencies")
    assert state(app) == before


# ------------------------------------------------------------------- an audit service for the real npm

UPSTREAM = "https://registry.npmjs.org"
MS_ADVISORY = {
    "id": 1094419, "url": "https://github.com/advisories/GHSA-tfops-test-0001",
    "title": "ms: inefficient regular expression on long duration strings", "severity": "high",
    "vulnerable_versions": "<2.1.0", "cwe": ["CWE-1333"],
    "cvss": {"score": 7.5, "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"},
}


class _Registry(BaseHTTPRequestHandler):
    """The npm registry as seen through a mirror whose audit endpoint reports one advisory for ms.

    Package documents and tarballs come from the real registry, so `npm audit fix` installs real packages.
    """

    def do_GET(self) -> None:
        accept = self.headers.get("Accept", "application/json")
        # Always the fixed https upstream: the path is the only part taken from the request.
        request = urllib.request.Request(UPSTREAM + self.path, headers={"Accept": accept})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as upstream:  # noqa: S310
                body, status, kind = upstream.read(), upstream.status, upstream.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            body, status, kind = exc.read(), exc.code, "application/json"
        self._send(status, body, kind)

    advisory = MS_ADVISORY

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.startswith("/-/npm/v1/security/advisories/bulk"):
            self._send(200, json.dumps({"ms": [self.advisory]}).encode(), "application/json")
        else:
            self._send(404, b"{}", "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def _registry_server() -> Iterator[tuple[str, type[_Registry]]]:
    # One address for the module, so npm's cache of package documents fetched through it stays valid.
    handler = type("Registry", (_Registry,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def audit_registry(_registry_server, monkeypatch: pytest.MonkeyPatch) -> type[_Registry]:
    """npm pointed at the audit-capable mirror; a test may change the advisory it reports."""
    url, handler = _registry_server
    monkeypatch.setenv("npm_config_registry", url)
    monkeypatch.setattr(handler, "advisory", MS_ADVISORY)
    return handler


async def test_an_advisory_at_the_threshold_fails_and_its_fix_is_committed_on_a_branch(app, tmp_path, audit_registry):
    before = state(app)
    results = await security_patches(Dependencies(app_dir="app"), tmp_path, NOW)
    by_target = {r.target: r for r in results}
    assert by_target["npm audit"].status is Status.fail, results
    assert by_target["npm audit"].observed == "1 package(s) at or above high (0 critical, 1 high, 0 moderate, 0 low, " \
        "0 info)"
    ms = by_target["ms"]
    assert ms.status is Status.fail
    assert ms.observed == "high: ms: inefficient regular expression on long duration strings (<2.1.0)"
    assert ms.detail.startswith("fix: npm audit fix")
    fix = by_target["npm audit fix"]
    assert fix.status is Status.ok, fix
    assert "committed on branch deps/audit-fix-20261127" in fix.observed
    assert state(app) == before
    locked = json.loads(git(app, "show", "deps/audit-fix-20261127:package-lock.json"))
    assert locked["packages"]["node_modules/ms"]["version"].startswith("2.1.")


async def test_an_advisory_below_the_threshold_warns_and_a_failing_fix_is_rolled_back(
    app, tmp_path, audit_registry, monkeypatch
):
    monkeypatch.setenv("NPM_APP_TESTS_FAIL", "1")
    before = state(app)
    results = await security_patches(Dependencies(app_dir="app", audit_fail_at="critical"), tmp_path, NOW)
    by_target = {r.target: r for r in results}
    assert by_target["npm audit"].status is Status.warn
    assert by_target["ms"].status is Status.warn
    assert by_target["npm audit fix"].status is Status.fail
    assert "tests failed" in by_target["npm audit fix"].observed
    assert state(app) == before and git(app, "branch", "--list", "deps/*") == ""


async def test_a_semver_major_fix_waits_for_approval_then_runs_with_force(app, tmp_path, audit_registry):
    # Move the checkout back to ms 1.0.0 under ^1.0.0, so the only fix is ms 2 (a semver-major change).
    package = json.loads((app / "package.json").read_text())
    package["dependencies"]["ms"] = "1.0.0"
    (app / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    sh(app, "npm", "install", "--no-audit", "--no-fund")
    for name in ("package.json", "package-lock.json"):
        (app / name).write_text((app / name).read_text().replace('"ms": "1.0.0"', '"ms": "^1.0.0"'))
    git(app, "commit", "--quiet", "--all", "-m", "ms 1")
    audit_registry.advisory = dict(MS_ADVISORY, vulnerable_versions="<2.0.0")
    before = state(app)

    waiting = {r.target: r for r in await security_patches(Dependencies(app_dir="app"), tmp_path, NOW)}
    assert waiting["ms"].detail.startswith("fix: npm audit fix --force (installs ms@2.")
    gate = waiting["npm audit fix --force"]
    assert gate.status is Status.warn and gate.observed.startswith("approval needed: the fix for ms is a semver-major")
    assert "npm audit fix" not in waiting  # nothing to fix without --force
    assert state(app) == before and git(app, "branch", "--list", "deps/*") == ""

    approved = {r.target: r for r in await security_patches(Dependencies(app_dir="app"), tmp_path, NOW,
                                                             force_approved=True)}
    assert "npm audit fix --force" not in approved
    assert approved["npm audit fix"].status is Status.ok, approved["npm audit fix"]
    assert "committed on branch deps/audit-fix-20261127" in approved["npm audit fix"].observed
    fixed = json.loads(git(app, "show", "deps/audit-fix-20261127:package.json"))
    assert fixed["dependencies"]["ms"].startswith("^2.")
    assert state(app) == before
