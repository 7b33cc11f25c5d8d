"""`tfops`: the project's command line. Its commands, flags and exit codes are a public interface.

Exit codes: 0 every check passed; 1 a check failed or was unknown (or the sandbox could not do
what was asked); 2 bad input (a bad environment file, flow name, parameter, target or mode).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    pass


def _quiet_prefect_defaults() -> None:
    # Nothing reaches outside this machine, and a terminal run needs no server of its own.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Without a PREFECT_API_URL, each run starts its own server: slow on a small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def _err(message: str) -> None:
    print(f"tfops: {message}", file=sys.stderr)


# ---- check-config -------------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    from runbook import settings as config

    try:
        s = config.load(args.file)
    except config.ConfigError as exc:
        _err(f"{exc.source} is not a valid environment file:")
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    rpcs = sum(len(c.rpc_urls) for c in s.chains.values())
    print(
        f"{args.file}: valid ({s.environment}: {len(s.endpoints)} endpoints, {len(s.chains)} chains "
        f"with {rpcs} RPC URLs, {len(s.wallets)} wallets)"
    )
    return EXIT_OK


# ---- run ----------------------------------------------------------------------------------------


def _parse_params(pairs: list[str], fn: Any) -> dict[str, Any]:
    import inspect

    accepted = set(inspect.signature(fn.fn).parameters) - {"env_file"}
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise BadInput(f"--param {pair!r}: expected NAME=VALUE")
        if name not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            raise BadInput(f"--param {name}: the flow {fn.name!r} has no such parameter (parameters: {known})")
        try:
            params[name] = json.loads(raw)
        except ValueError:
            params[name] = raw
    return params


def cmd_run(args: argparse.Namespace) -> int:
    from runbook import settings as config

    _quiet_prefect_defaults()
    try:
        config.load(args.env)
    except config.ConfigError as exc:
        _err(f"--env {exc.source} is not a valid environment file:")
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from flows.registry import FLOWS

    fn = FLOWS.get(args.flow)
    if fn is None:
        _err(f"unknown flow {args.flow!r}; flows: {', '.join(sorted(FLOWS))}")
        return EXIT_BAD_INPUT
    try:
        params = _parse_params(args.param or [], fn)
    except BadInput as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    import asyncio

    from prefect.exceptions import ParameterTypeError

    try:
        report = asyncio.run(fn(env_file=str(Path(args.env).resolve()), **params))
    except ParameterTypeError as exc:
        _err(f"bad parameter: {exc}")
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - the run's own logs carry the traceback
        _err(f"the {args.flow} flow run failed: {type(exc).__name__}: {exc}")
        return EXIT_CHECK_FAILED
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_render(args.flow, report))
    return EXIT_OK if report.get("passed") else EXIT_CHECK_FAILED


def _render(flow: str, report: dict[str, Any]) -> str:
    from runbook.procedures.reports import render_text

    return render_text(report)


# ---- sandbox ------------------------------------------------------------------------------------


def cmd_sandbox(args: argparse.Namespace) -> int:
    from sandbox import stack
    from sandbox.faults import FaultError, check_applies
    from sandbox.faults import parse as parse_fault

    directory = Path(args.dir)
    try:
        if args.action == "up":
            if args.activity not in _activity_presets():
                _err(f"--activity {args.activity!r}: unknown preset; presets: {', '.join(_activity_presets())}")
                return EXIT_BAD_INPUT
            sb = stack.up(directory, activity=args.activity)
            print(f"sandbox up in {sb.dir}: {len(sb.state['endpoints'])} endpoints answering")
            print(f"environment file: {sb.env_file}")
            return EXIT_OK
        if args.action == "down":
            left = stack.down(directory)
            if left:
                _err("still running after down: " + ", ".join(left))
                return EXIT_CHECK_FAILED
            print(f"sandbox in {directory.resolve()} stopped; no process or port left")
            return EXIT_OK
        if args.action == "activity":
            try:
                change = _activity_change(args.preset, args.set or [])
            except BadInput as exc:
                _err(str(exc))
                return EXIT_BAD_INPUT
            sb = stack.load(directory.resolve())
            print(json.dumps(sb.activity(change or None), indent=2))
            return EXIT_OK
        sb = stack.load(directory.resolve())
        if args.action == "fault":
            if args.target not in sb.targets():
                _err(f"unknown target {args.target!r}; targets: {', '.join(sb.targets())}")
                return EXIT_BAD_INPUT
            check_applies(sb.target_kind(args.target), parse_fault(args.mode))
            mode = sb.fault(args.target, args.mode)
            print(f"{args.target}: {mode}")
            return EXIT_OK
        if args.action == "status":
            print(json.dumps({"dir": str(sb.dir), "pids": sb.state["pids"], "faults": sb.faults()}, indent=2))
            return EXIT_OK
        if args.action == "received":
            items = [_redact(item) for item in sb.received(args.receiver)]
            if args.json:
                print(json.dumps(items, indent=2))
            else:
                for item in items:
                    print(item.get("text") or json.dumps(item.get("event", item)))
            return EXIT_OK
    except FaultError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except stack.SandboxError as exc:
        _err(str(exc))
        return EXIT_CHECK_FAILED
    raise AssertionError(args.action)


def _activity_presets() -> list[str]:
    from sandbox.activity import PRESETS

    return list(PRESETS)


def _activity_change(preset: str | None, pairs: list[str]) -> dict[str, Any]:
    """The control request for `tfops sandbox activity [PRESET] [--set FIELD=VALUE ...]`, checked here
    the way the hub checks it, so a bad name or value is bad input (exit 2) and changes nothing."""
    from sandbox.activity import ActivityError, Settings, configure

    change: dict[str, Any] = {} if preset is None else {"preset": preset}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise BadInput(f"--set {pair!r}: expected FIELD=VALUE, e.g. tick_s=0.5")
        try:
            change[name] = json.loads(raw)
        except ValueError:
            change[name] = raw
    try:
        configure(Settings(), change)
    except ActivityError as exc:
        raise BadInput(str(exc)) from None
    return change


def _redact(item: dict[str, Any]) -> dict[str, Any]:
    """A PagerDuty event carries its routing key, which is a secret: never print it."""
    event = item.get("event")
    if isinstance(event, dict) and "routing_key" in event:
        item = {**item, "event": {**event, "routing_key": "***"}}
    return item


# ---- up, automations ----------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from deployments import up

    if not 1 <= args.port <= 65535:
        _err(f"--port {args.port}: not a TCP port")
        return EXIT_BAD_INPUT
    if args.activity not in _activity_presets():
        _err(f"--activity {args.activity!r}: unknown preset; presets: {', '.join(_activity_presets())}")
        return EXIT_BAD_INPUT
    options = up.Options(port=args.port, home=Path(args.home), env_file=Path(args.env) if args.env else None,
                         sandbox=not args.no_sandbox, activity=args.activity)
    try:
        return up.run(options)
    except up.UpError as exc:
        _err(str(exc))
        return exc.code


def cmd_automations(args: argparse.Namespace) -> int:
    """Create or update the automations on a Prefect server (production: the shared server)."""
    import asyncio

    from runbook import settings as config
    from runbook.secrets import SecretError

    _quiet_prefect_defaults()
    try:
        settings = config.load(args.env)
    except config.ConfigError as exc:
        _err(f"--env {exc.source} is not a valid environment file:")
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments import automations

    api = args.api or os.environ.get("PREFECT_API_URL")
    if not api:
        _err("no Prefect API: pass --api URL (e.g. https://prefect.internal/api) or set PREFECT_API_URL")
        return EXIT_BAD_INPUT
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):
            lines = asyncio.run(automations.apply(settings))
    except SecretError as exc:
        _err(str(exc))
        return EXIT_CHECK_FAILED
    except Exception as exc:  # noqa: BLE001 - an unreachable or refusing server
        _err(f"the Prefect API at {api} did not take the automations: {type(exc).__name__}: {exc}")
        return EXIT_CHECK_FAILED
    print("\n".join(lines))
    return EXIT_OK


# ---- parser -------------------------------------------------------------------------------------


# ---- coverage -----------------------------------------------------------------------------------


def cmd_coverage(args: argparse.Namespace) -> int:
    from deployments import coverage
    from flows.registry import FLOWS

    root = Path(__file__).resolve().parents[1]
    runbook_path = Path(args.runbook or root / "docs" / "RUNBOOK.md")
    map_path = Path(args.map or root / "docs" / "coverage.toml")
    try:
        items = coverage.parse(runbook_path.read_text())
        mapping = coverage.load_map(map_path)
    except (OSError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    result = coverage.cover(items, mapping, set(FLOWS))
    if args.json:
        print(json.dumps([{"id": i.id, "section": i.section, "item": i.text, "kind": e.kind, "by": e.by,
                           "step": e.step, "how": e.how} for i, e in result.rows], indent=2))
    elif args.ids:
        print("\n".join(f"{i.id}\t{coverage.describe(e)}" for i, e in result.rows))
    else:
        print(coverage.as_markdown(result) if args.markdown else coverage.as_text(result))
    complete = not (result.unexplained or result.stale or result.unknown_flows)
    return EXIT_OK if complete else EXIT_CHECK_FAILED


def build_parser() -> argparse.ArgumentParser:
    from sandbox.faults import MODES

    p = argparse.ArgumentParser(
        prog="tfops",
        description="TokenForge operations: the runbook as Prefect flows.",
        epilog="Exit codes: 0 all checks passed, 1 a check failed or was unknown, 2 bad input.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run one flow locally and print its report")
    run.add_argument("flow", metavar="FLOW", help="the flow's name, e.g. system-health")
    run.add_argument("--env", required=True, metavar="FILE", help="the environment file (TOML)")
    run.add_argument("--param", action="append", metavar="NAME=VALUE", help="a flow parameter (JSON or text)")
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate an environment file")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=cmd_check_config)

    cov = sub.add_parser(
        "coverage",
        help="every runbook item with the flow that automates it",
        description="Reads docs/RUNBOOK.md and docs/coverage.toml. Exit 1 when an item is not covered "
                    "without a reason, the map names a flow that does not exist, or an entry is stale.",
    )
    cov.add_argument("--runbook", metavar="FILE", help="the runbook (default docs/RUNBOOK.md)")
    cov.add_argument("--map", metavar="FILE", help="the coverage map (default docs/coverage.toml)")
    how = cov.add_mutually_exclusive_group()
    how.add_argument("--markdown", action="store_true", help="print a Markdown table (as in the README)")
    how.add_argument("--json", action="store_true", help="print the rows as JSON")
    how.add_argument("--ids", action="store_true", help="print each item's id, the key in the map")
    cov.set_defaults(func=cmd_coverage)

    from deployments.up import DEFAULT_HOME, DEFAULT_PORT

    upp = sub.add_parser(
        "up", help="run it all on this machine: Prefect server + UI, deployments, automations, a worker, the sandbox",
        description="Starts a Prefect server on 127.0.0.1 (SQLite under --home), deploys prefect.yaml, creates the "
                    "automations, starts a process worker and, unless --env is given, the sandbox; prints the UI's "
                    "URL and runs until Ctrl-C or SIGTERM, which stops all of it. Exit 1 when a part fails to start "
                    "or dies, 2 on bad input.",
    )
    upp.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the server's port (default {DEFAULT_PORT})")
    upp.add_argument("--env", metavar="FILE", help="the environment file the flows use (default: start the sandbox)")
    upp.add_argument("--home", default=str(DEFAULT_HOME), metavar="DIR",
                     help=f"Prefect's database, logs and the sandbox live here (default {DEFAULT_HOME})")
    upp.add_argument("--no-sandbox", action="store_true", help="never start the sandbox (needs --env)")
    upp.add_argument("--activity", default="normal", metavar="PRESET",
                     help="the sandbox's simulated activity (default normal)")
    upp.set_defaults(func=cmd_up)

    auto = sub.add_parser(
        "automations", help="create or update the automations on a Prefect server",
        description="Failed/Crashed runs -> the on-call Slack channel; zombie and overrunning runs -> Crashed; a "
                    "scheduled checklist not started within 15 minutes -> PagerDuty. Notification targets come "
                    "from the environment file's [notifications]. Idempotent.",
    )
    auto.add_argument("--api", metavar="URL", help="the Prefect API (default: PREFECT_API_URL)")
    auto.add_argument("--env", required=True, metavar="FILE", help="the environment file (TOML)")
    auto.set_defaults(func=cmd_automations)

    sb = sub.add_parser("sandbox", help="the local sandbox: up, down, fault, status, received, activity")
    sbs = sb.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in [("up", "start it and write DIR/environment.toml"), ("down", "stop every process it started"),
                         ("status", "show its processes and faults")]:
        a = sbs.add_parser(action, help=text)
        a.add_argument("--dir", required=True, metavar="DIR")
        if action == "up":
            a.add_argument("--activity", default="normal", metavar="PRESET",
                           help="the simulated activity it starts with (default normal; off for none)")
    activity = sbs.add_parser(
        "activity",
        help="show or change the simulated activity (users, trades, logins, executions, token launches)",
        description="Prints the activity generator's settings and totals as JSON; with PRESET and/or --set, "
                    "changes them first. Presets: off, normal, high, error-spike, login-spike, volume-drop.",
    )
    activity.add_argument("--dir", required=True, metavar="DIR")
    activity.add_argument("preset", nargs="?", metavar="PRESET", help="e.g. normal, high, error-spike, off")
    activity.add_argument("--set", action="append", metavar="FIELD=VALUE",
                          help="override one setting, e.g. tick_s=0.5 or error_share=0.2 (repeatable)")
    fault = sbs.add_parser(
        "fault",
        help="inject or clear a fault",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="modes:\n" + "\n".join(f"  {m:<14} {t}" for m, t in MODES.items()),
    )
    fault.add_argument("--dir", required=True, metavar="DIR")
    fault.add_argument("target", metavar="TARGET", help="an endpoint (frontend, eth-rpc-1, ...) or wallet")
    fault.add_argument("mode", metavar="MODE")
    received = sbs.add_parser("received", help="what the Slack or PagerDuty receiver got")
    received.add_argument("--dir", required=True, metavar="DIR")
    received.add_argument("receiver", choices=["slack", "pagerduty"])
    received.add_argument("--json", action="store_true")
    sb.set_defaults(func=cmd_sandbox)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, which is our bad-input code too
        return int(exc.code or 0)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
