"""For the end-to-end tests: `tfops up` as the on-call team runs it (a real Prefect server with its
services, every deployment of prefect.yaml, the automations, a real process worker), pointed at the
test session's sandbox, and runs started through the API exactly as the UI's Run button starts them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import stack

REPO = Path(__file__).resolve().parents[2]
UP_TIMEOUT_S = 600  # server start, sandbox reuse, `prefect deploy --all`: minutes on a small machine
RUN_TIMEOUT_S = 420


@dataclass
class Served:
    """A running `tfops up`."""

    api: str
    ui: str
    home: Path
    env_file: Path
    proc: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def client(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api)

    def run_deployment(self, name: str, parameters: dict[str, Any], timeout_s: float = RUN_TIMEOUT_S) -> Any:
        """What the UI's Run button does (POST /deployments/{id}/create_flow_run with the form's
        parameters), then wait for the worker to run it to a final state."""
        with self.client() as client:
            deployment = client.read_deployment_by_name(name)
            run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
            deadline = time.monotonic() + timeout_s
            while True:
                run = client.read_flow_run(run.id)
                if run.state is not None and run.state.is_final():
                    return run
                if self.proc.poll() is not None:
                    raise AssertionError("tfops up exited during the run:\n" + "\n".join(self.output[-20:]))
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} run {run.name} still {run.state and run.state.name} after "
                                         f"{timeout_s:.0f} s; worker log:\n{_tail(self.home / 'logs' / 'worker.log')}")
                time.sleep(1)

    def artifacts(self, flow_run_id: Any) -> dict[str, Any]:
        from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, FlowRunFilterId

        with self.client() as client:
            # the checklist's own artifacts and its step subflows'
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            found = client.read_artifacts(artifact_filter=ArtifactFilter(), flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[r.id for r in runs])))
        return {a.key: a for a in found if a.key}


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.contextmanager
def tfops_up(env_file: Path, home: Path, extra_env: dict[str, str] | None = None) -> Iterator[Served]:
    port = stack.free_port()
    env = {**os.environ, **(extra_env or {})}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "tfops"), "up", "--env", str(env_file), "--home", str(home),
         "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    served = Served(f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}", home, env_file, proc)
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            served.output.append(line.rstrip("\n"))
            if line.startswith("Prefect UI: "):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(UP_TIMEOUT_S) or proc.poll() is not None:
            raise AssertionError("tfops up did not come up:\n" + "\n".join(served.output[-30:]))
        assert f"Prefect UI: {served.ui}" in served.output
        yield served
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # what systemd or a terminal's Ctrl-C sends
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        time.sleep(0.5)  # the reader thread takes the last lines
        served.output.append(f"(exit {code})")


def assert_stopped_cleanly(served: Served) -> None:
    assert served.output[-1] == "(exit 0)", "\n".join(served.output[-15:])
    assert "stopped: nothing left running" in served.output, "\n".join(served.output[-15:])
