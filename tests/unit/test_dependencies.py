"""Weekly maintenance without the registry: the command runner's guarantees, npm's reports as parsed, the config."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from runbook import settings as config
from runbook.clients import commands
from runbook.clients.commands import CommandError, MissingExecutable
from runbook.procedures.dependencies import (
    AuditUnavailable,
    Dependencies,
    OutputError,
    parse_audit,
    parse_outdated,
)

# ------------------------------------------------------------------------------------------ commands


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # Killed but not yet reaped by init counts as gone.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def _wait_gone(pid: int, within_s: float = 5) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


async def test_a_timeout_kills_the_grandchild_too(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    # The shell starts a grandchild and waits for it: killing only the shell would leave it running.
    script = f"sleep 60 & echo $! > {pidfile}; wait"
    result = await commands.run(["sh", "-c", script], timeout_s=1, kill_grace_s=1)
    assert result.timed_out and not result.ok
    assert result.duration_s < 5
    grandchild = int(pidfile.read_text())
    assert _wait_gone(grandchild), f"grandchild {grandchild} still runs"
    assert "timed out" in result.describe()


async def test_a_grandchild_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    pidfile = tmp_path / "stubborn.pid"
    # An ignored signal stays ignored across exec, so the sleep survives SIGTERM.
    script = f"trap '' TERM; sleep 60 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    result = await commands.run(["sh", "-c", script], timeout_s=0.5, kill_grace_s=0.5)
    assert result.timed_out
    assert time.monotonic() - started < 5
    assert _wait_gone(int(pidfile.read_text()))


async def test_a_missing_executable_is_an_error_naming_it():
    with pytest.raises(MissingExecutable, match="'no-such-tool-tfops'"):
        await commands.run(["no-such-tool-tfops", "--version"], timeout_s=5)
    with pytest.raises(MissingExecutable, match="/nonexistent/npm"):
        await commands.run(["/nonexistent/npm"], timeout_s=5)


async def test_output_is_bounded_to_its_last_bytes():
    code = "import sys; sys.stdout.write('a' * 500_000 + 'END'); sys.stderr.write('e' * 10_000)"
    result = await commands.run([sys.executable, "-c", code], timeout_s=30, keep_bytes=1024)
    assert result.ok
    assert len(result.stdout) == 1024 and result.stdout.endswith("END")
    assert result.stdout_dropped == 500_003 - 1024
    assert len(result.stderr) == 1024 and result.stderr_dropped == 10_000 - 1024


async def test_the_executable_is_run_by_its_absolute_path_and_a_non_zero_exit_is_a_result():
    result = await commands.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout_s=10)
    assert Path(result.argv[0]).is_absolute()
    assert (result.returncode, result.ok, result.timed_out) == (3, False, False)
    assert result.tail() == "out\nerr"
    assert result.command == "sh -c echo out; echo err >&2; exit 3"


async def test_secrets_go_by_environment_and_never_on_the_command_line():
    token = "npm_s3cr3t-token-value"
    result = await commands.run([sys.executable, "-c", "import os; print(len(os.environ['NPM_TOKEN']))"],
                                timeout_s=10, secret_env={"NPM_TOKEN": token})
    assert result.stdout.strip() == str(len(token))
    with pytest.raises(CommandError, match="secret NPM_TOKEN appears in the command line"):
        await commands.run(["echo", f"--token={token}"], timeout_s=10, secret_env={"NPM_TOKEN": token})


async def test_a_shell_string_a_bad_folder_and_a_bad_timeout_are_refused(tmp_path):
    with pytest.raises(CommandError, match="list of arguments"):
        await commands.run("npm outdated", timeout_s=5)  # type: ignore[arg-type]
    with pytest.raises(CommandError, match="does not exist"):
        await commands.run(["true"], timeout_s=5, cwd=tmp_path / "missing")
    with pytest.raises(CommandError, match="timeout_s must be positive"):
        await commands.run(["true"], timeout_s=0)


# --------------------------------------------------------------------------------------- npm outdated

OUTDATED = {
    "ms": {"current": "2.0.0", "wanted": "2.1.3", "latest": "2.1.3", "dependent": "npm-app",
           "location": "/srv/app/node_modules/ms"},
    "ethers": {"current": "5.7.2", "wanted": "5.8.0", "latest": "6.13.4", "dependent": "npm-app",
               "location": "/srv/app/node_modules/ethers"},
    "zod": {"wanted": "3.23.8", "latest": "3.23.8", "dependent": "npm-app", "location": ""},
}


def test_outdated_packages_are_read_with_current_wanted_and_latest():
    rows = {o.name: o for o in parse_outdated(json.dumps(OUTDATED))}
    assert rows["ms"].describe() == "current 2.0.0, wanted 2.1.3, latest 2.1.3"
    assert rows["ms"].behind_wanted and not rows["ms"].major_available
    assert rows["ethers"].major_available  # 6.x is outside ^5: for a person to review
    assert rows["zod"].current is None and rows["zod"].behind_wanted
    assert parse_outdated("{}\n") == []


def test_workspaces_list_each_instance_of_a_package():
    text = json.dumps({"ms": [dict(OUTDATED["ms"], dependent="web"), dict(OUTDATED["ms"], dependent="api")]})
    assert len(parse_outdated(text)) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "printed nothing"),
        ("npm error code E404", "did not print JSON"),
        ('{"error": {"code": "ENOTFOUND", "summary": "request to https://registry.npmjs.org/ms failed"}}',
         "ENOTFOUND: request to"),
        ('{"ms": {"current": "2.0.0"}}', "'ms' has no 'wanted' version"),
        ("[1, 2]", "expected an object"),
    ],
)
def test_unreadable_outdated_output_is_an_error_saying_why(text, message):
    with pytest.raises(OutputError, match=message):
        parse_outdated(text)


# ------------------------------------------------------------------------------------------ npm audit


def _via(source, name, title, severity, vulnerable):
    return {"source": source, "name": name, "dependency": name, "title": title,
            "url": f"https://github.com/advisories/GHSA-{source}", "severity": severity, "cwe": ["CWE-1333"],
            "cvss": {"score": 7.5, "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"},
            "range": vulnerable}


# The shape npm 7+ writes (auditReportVersion 2), with the three forms fixAvailable takes.
AUDIT_V2 = {
    "auditReportVersion": 2,
    "vulnerabilities": {
        "semver": {
            "name": "semver", "severity": "high", "isDirect": False,
            "via": [_via(1101088, "semver", "semver vulnerable to Regular Expression Denial of Service", "moderate",
                         "<5.7.2"),
                    _via(1101090, "semver", "semver ReDoS in range parsing", "high", "<5.7.2")],
            "effects": ["make-dir"], "range": "<5.7.2", "nodes": ["node_modules/semver"],
            "fixAvailable": True,
        },
        "make-dir": {
            "name": "make-dir", "severity": "high", "isDirect": True, "via": ["semver"], "effects": [],
            "range": "2.0.0 - 3.1.0", "nodes": ["node_modules/make-dir"],
            "fixAvailable": {"name": "make-dir", "version": "4.0.0", "isSemVerMajor": True},
        },
        "debug": {
            "name": "debug", "severity": "low", "isDirect": True,
            "via": [_via(1096801, "debug", "Inefficient Regular Expression Complexity in debug", "low",
                         ">=4.0.0 <4.3.1")],
            "effects": [], "range": "4.0.0 - 4.3.0", "nodes": ["node_modules/debug"],
            "fixAvailable": {"name": "debug", "version": "4.3.7", "isSemVerMajor": False},
        },
        "tar": {
            "name": "tar", "severity": "critical", "isDirect": True,
            "via": [_via(1112100, "tar", "Arbitrary File Creation/Overwrite via insufficient symlink protection",
                         "critical", "<4.4.18")],
            "effects": [], "range": "<4.4.18", "nodes": ["node_modules/tar"], "fixAvailable": False,
        },
    },
    "metadata": {
        "vulnerabilities": {"info": 0, "low": 1, "moderate": 0, "high": 2, "critical": 1, "total": 4},
        "dependencies": {"prod": 41, "dev": 0, "optional": 2, "peer": 0, "peerOptional": 0, "total": 42},
    },
}

AUDIT_CLEAN = {
    "auditReportVersion": 2,
    "vulnerabilities": {},
    "metadata": {
        "vulnerabilities": {"info": 0, "low": 0, "moderate": 0, "high": 0, "critical": 0, "total": 0},
        "dependencies": {"prod": 2, "dev": 0, "optional": 0, "peer": 0, "peerOptional": 0, "total": 1},
    },
}

# `npm audit --json` on this project's CI machine, whose registry mirror refuses the bulk advisory
# endpoint (npm 11.19.1; the date header varies). npm exits 1, as it does when it finds vulnerabilities.
AUDIT_405 = """{
  "message": "405 Method Not Allowed - POST https://registry.npmjs.org/-/npm/v1/security/advisories/bulk",
  "method": "POST",
  "uri": "https://registry.npmjs.org/-/npm/v1/security/advisories/bulk",
  "headers": {
    "allow": [
      "GET,HEAD"
    ],
    "date": [
      "Fri, 27 Nov 2026 15:31:55 GMT"
    ],
    "content-length": [
      "0"
    ],
    "x-fetch-attempts": [
      "1"
    ]
  },
  "statusCode": 405,
  "body": "",
  "error": {
    "summary": "",
    "detail": ""
  }
}
"""

# `npm audit --json` in a project without package-lock.json (npm 11.19.1), exit 1.
AUDIT_ENOLOCK = (
    '{\n  "error": {\n    "code": "ENOLOCK",\n    "summary": "This command requires an existing lockfile.",\n'
    '    "detail": "Try creating one first with: npm i --package-lock-only\\nOriginal error: loadVirtual requires '
    'existing shrinkwrap file"\n  }\n}\n'
)


def test_an_audit_report_lists_each_vulnerable_package_most_severe_first():
    report = parse_audit(json.dumps(AUDIT_V2), 1)
    assert [(a.package, a.severity) for a in report.advisories] == [
        ("tar", "critical"), ("make-dir", "high"), ("semver", "high"), ("debug", "low")]
    assert report.counts == {"info": 0, "low": 1, "moderate": 0, "high": 2, "critical": 1, "total": 4}
    assert report.dependencies == 42
    semver = next(a for a in report.advisories if a.package == "semver")
    assert semver.titles == ("semver vulnerable to Regular Expression Denial of Service",
                             "semver ReDoS in range parsing")
    assert semver.describe().startswith("high: semver vulnerable to Regular Expression") and "(<5.7.2)" in \
        semver.describe()
    assert semver.urls == ("https://github.com/advisories/GHSA-1101088", "https://github.com/advisories/GHSA-1101090")


def test_fix_available_decides_between_audit_fix_force_and_nothing():
    by_name = {a.package: a for a in parse_audit(json.dumps(AUDIT_V2)).advisories}
    assert (by_name["semver"].fixable, by_name["semver"].needs_force) == (True, False)
    assert by_name["debug"].fix == "npm audit fix (installs debug@4.3.7)" and by_name["debug"].fixable
    make_dir = by_name["make-dir"]
    assert (make_dir.fixable, make_dir.needs_force) == (False, True)
    assert "--force" in make_dir.fix and "make-dir@4.0.0" in make_dir.fix
    assert make_dir.describe() == "high: via semver (2.0.0 - 3.1.0)"
    assert by_name["tar"].fix == "no fix available" and not by_name["tar"].fixable


@pytest.mark.parametrize(("fail_at", "failing"), [("critical", {"tar"}), ("high", {"tar", "make-dir", "semver"}),
                                                  ("info", {"tar", "make-dir", "semver", "debug"})])
def test_the_fail_threshold_counts_advisories_at_or_above_it(fail_at, failing):
    report = parse_audit(json.dumps(AUDIT_V2))
    assert {a.package for a in report.at_or_above(fail_at)} == failing


def test_a_clean_report_has_no_advisories():
    report = parse_audit(json.dumps(AUDIT_CLEAN), 0)
    assert report.advisories == [] and report.counts["total"] == 0


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [
        (AUDIT_405, "HTTP 405: 405 Method Not Allowed - POST https://registry.npmjs.org/-/npm/v1/security/advisories"),
        (AUDIT_ENOLOCK, "ENOLOCK: This command requires an existing lockfile."),
        ('{"error": {"code": "ENOAUDIT", "summary": "Your configured registry (https://npm.example) does not '
         'support audit requests."}}', "ENOAUDIT: Your configured registry"),
        ('{"error": {"code": "ECONNREFUSED", "summary": "request to https://registry.npmjs.org failed"}}',
         "ECONNREFUSED"),
        ("", "printed nothing"),
        ("npm error audit endpoint returned an error", "did not print JSON"),
        ('{"auditReportVersion": 1, "advisories": {}}', "auditReportVersion 1"),
        ('{"advisories": {}, "metadata": {}}', "auditReportVersion None"),
        ('{"auditReportVersion": 2, "vulnerabilities": {"x": {"severity": "severe"}}}', "unknown severity 'severe'"),
    ],
)
def test_no_report_is_unavailable_with_the_reason_never_no_vulnerabilities(stdout, reason):
    with pytest.raises(AuditUnavailable) as caught:
        parse_audit(stdout, 1)
    assert reason in str(caught.value)


# ---------------------------------------------------------------------------------------------- config


def test_the_section_defaults_to_the_runbooks_commands():
    cfg = Dependencies(app_dir="../app")
    assert cfg.test_command == ["npm", "run", "test:all"]
    assert (cfg.branch_prefix, cfg.timeout_s, cfg.audit_fail_at, cfg.push) == ("deps/weekly-", 600, "high", False)
    assert cfg.app_path(Path("/etc/tokenforge")) == Path("/etc/tokenforge/../app")
    assert Dependencies(app_dir="/srv/app").app_path(Path("/etc/tokenforge")) == Path("/srv/app")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"app_dir": "app", "push": True}, "pushing is not supported"),
        ({"app_dir": "app", "audit_fail_at": "severe"}, "audit_fail_at"),
        ({"app_dir": "app", "test_command": []}, "test_command"),
        ({"app_dir": "app", "test_command": "npm test"}, "test_command"),
        ({"app_dir": "app", "branch_prefix": "deps..weekly-"}, "cannot start a git branch name"),
        ({"app_dir": "app", "branch_prefix": "-x"}, "branch_prefix"),
        ({"app_dir": "app", "timeout_s": 0}, "timeout_s"),
        ({"app_dir": "app", "tets_command": ["npm", "test"]}, "tets_command"),
        ({}, "app_dir"),
    ],
)
def test_bad_settings_are_errors_naming_the_field(data, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        Dependencies.model_validate(data)
    problems = "; ".join(config.problems_of(caught.value))
    assert message in problems, problems
