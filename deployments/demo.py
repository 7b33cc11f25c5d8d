"""`make demo`: the System Health Check against the sandbox, healthy and then with the frontend down,
then the whole Morning Checklist with a drained deployer wallet, then the Evening Checklist on the
sandbox's simulated activity, before and during an error spike, and a Full System Recovery drill
with its RTO table.

Prints each command before running it, so the demo doubles as a walk-through of `tfops`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from deployments.prefect_server import local_server, quiet_env

TFOPS = str(Path(sys.executable).parent / "tfops")


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def tfops(*args: str, env: dict[str, str], expect: set[int] | None = None) -> int:
    print("$ tfops " + " ".join(args), flush=True)
    code = subprocess.run([TFOPS, *args], env=env, check=False).returncode  # noqa: S603
    if expect is not None and code not in expect:
        raise SystemExit(f"demo: `tfops {' '.join(args)}` exited {code}, expected {sorted(expect)}")
    return code


@contextlib.contextmanager
def prefect_api(home: Path) -> Iterator[str]:
    """Use the Prefect server named by PREFECT_API_URL, or start one for the demo."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    step("Starting a local Prefect server (loopback, telemetry off)")
    with local_server(home / "prefect") as api:
        print(f"Prefect API at {api}", flush=True)
        yield api


def error_spike(sandbox_dir: Path, env: dict[str, str], timeout_s: float = 60) -> None:
    """Fail executions fast until more than 8% of the day's have failed, then back to normal, so the
    next run sees an error rate past the runbook's 5% whatever the demo's pace so far."""
    from sandbox import stack

    tfops("sandbox", "activity", "--dir", str(sandbox_dir), "error-spike", "--set", "error_share=0.5",
          "--set", "tick_s=0.25", env=env, expect={0})
    sandbox = stack.load(sandbox_dir)
    ends = time.monotonic() + timeout_s
    while True:
        totals = sandbox.activity()["totals"]
        if totals["executions"] and totals["errors"] / totals["executions"] > 0.08:
            break
        if time.monotonic() > ends:
            raise SystemExit(f"demo: the error spike did not take within {timeout_s:g} s: {totals}")
        time.sleep(0.5)
    print(f"{totals['errors']} of {totals['executions']} executions failed", flush=True)
    sandbox.activity({"preset": "normal"})


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tfops-demo-") as tmp:
        work = Path(tmp)
        sandbox_dir = work / "sandbox"
        with prefect_api(work) as api:
            env = {**os.environ, **quiet_env(work / "prefect"), "PREFECT_API_URL": api}
            step("Starting the sandbox: two anvil chains, a Solana RPC, S3, frontend, Convex, API, Slack, PagerDuty")
            tfops("sandbox", "up", "--dir", str(sandbox_dir), env=env, expect={0})
            env_file = str(sandbox_dir / "environment.toml")
            try:
                step("System Health Check, everything healthy")
                tfops("run", "system-health", "--env", env_file, env=env, expect={0})

                step("Fault: the frontend goes down")
                tfops("sandbox", "fault", "--dir", str(sandbox_dir), "frontend", "down", env=env, expect={0})

                step("System Health Check again: the frontend fails, one alert is sent")
                tfops("run", "system-health", "--env", env_file, env=env, expect={1})

                step("The alert the sandbox's Slack received")
                tfops("sandbox", "received", "--dir", str(sandbox_dir), "slack", env=env, expect={0})

                step("Fault: the BSC deployer wallet is drained below its floor; the frontend comes back")
                tfops("sandbox", "fault", "--dir", str(sandbox_dir), "bsc-deployer", "low", env=env, expect={0})
                tfops("sandbox", "fault", "--dir", str(sandbox_dir), "frontend", "ok", env=env, expect={0})

                step("Morning Checklist: system health, wallets, API usage, error logs; one report")
                tfops("run", "morning-checklist", "--env", env_file, env=env, expect={1})

                step("Evening Checklist: metrics from the backend and the chains, the security scan")
                tfops("run", "evening-checklist", "--env", env_file, env=env, expect={0})

                step("Anomaly: half of the backend's function executions start failing")
                error_spike(sandbox_dir, env)

                step("Evening Checklist again: the error rate is past 5%, a P1 pages once; changes against "
                     "the earlier run are flagged")
                tfops("run", "evening-checklist", "--env", env_file, env=env, expect={1})
                tfops("sandbox", "received", "--dir", str(sandbox_dir), "pagerduty", env=env, expect={0})

                step("Full System Recovery drill: the backend's functions fail and a bad frontend deployment goes "
                     "live; recovered in the runbook's order (backend, frontend, monitoring, verification), each "
                     "step timed against its budget; the RTO table")
                tfops("run", "full-system-recovery", "--env", env_file, "--param", "drill=true", env=env, expect={0})
            finally:
                step("Stopping the sandbox")
                tfops("sandbox", "down", "--dir", str(sandbox_dir), env=env)
    print("\ndemo: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
