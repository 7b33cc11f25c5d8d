"""`make demo`: the System Health Check against the sandbox, healthy and then with the frontend down,
then the whole Morning Checklist with a drained deployer wallet.

Prints each command before running it, so the demo doubles as a walk-through of `tfops`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
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
            finally:
                step("Stopping the sandbox")
                tfops("sandbox", "down", "--dir", str(sandbox_dir), env=env)
    print("\ndemo: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
