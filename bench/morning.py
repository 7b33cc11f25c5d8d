"""Benchmark: the Morning Checklist's wall time against its slowest probe.

Run:  .venv/bin/python bench/morning.py [--slow 1.5]

Starts a local Prefect server and the sandbox, makes the API endpoint answer after `--slow`
seconds (so the slowest probe is known), runs the checklist once untimed (warm-up), then times:
  morning      the morning-checklist flow (its four steps as concurrent subflows);
  one by one   the same four step flows awaited one after another (the baseline).
It prints both wall times, the slowest single probe, and the ratios. Every number is from this run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.prefect_server import local_server, quiet_env  # noqa: E402
from sandbox import stack  # noqa: E402


def slowest_probe(report: dict) -> float:
    return max((c.get("latency_s") or 0.0) for c in report["checks"])


async def run_all(env_file: str) -> tuple[float, dict, float]:
    from flows.morning import morning_checklist_flow
    from flows.reviews import api_usage_flow, error_logs_flow
    from flows.system_health import system_health_flow
    from flows.wallets import wallet_balances_flow

    await morning_checklist_flow(env_file=env_file)  # warm-up: imports, first API round trips
    started = time.perf_counter()
    report = await morning_checklist_flow(env_file=env_file)
    morning = time.perf_counter() - started
    started = time.perf_counter()
    for step in (system_health_flow, wallet_balances_flow, api_usage_flow, error_logs_flow):
        await step(env_file=env_file, alert=False)
    one_by_one = time.perf_counter() - started
    return morning, report, one_by_one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slow", type=float, default=1.5, help="seconds the API endpoint takes to answer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tfops-bench-morning-") as tmp:
        home = Path(tmp) / "prefect"
        print("starting a Prefect server and the sandbox (not timed) ...", flush=True)
        with local_server(home) as api:
            os.environ.update({**quiet_env(home), "PREFECT_API_URL": api})
            sb = stack.up(Path(tmp) / "sandbox")
            try:
                sb.fault("api", f"slow:{args.slow}")
                morning, report, one_by_one = asyncio.run(run_all(str(sb.env_file)))
            finally:
                stack.down(Path(tmp) / "sandbox")
    slowest = slowest_probe(report)
    print(f"morning checklist: {morning:.2f} s wall, status {report['status']}")
    print(f"slowest probe:     {slowest:.2f} s (the API endpoint, made to answer after {args.slow:g} s)")
    print(f"steps one by one:  {one_by_one:.2f} s")
    print(f"ratios: morning / slowest probe = {morning / slowest:.2f}; "
          f"one by one / morning = {one_by_one / morning:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
