"""A local Prefect server on loopback for one session of work (the demo, the tests, the benches).

One server, started once, serves many runs: Prefect's per-process ephemeral server costs tens of
seconds at every `tfops run` on a small machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def quiet_env(home: Path) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """`prefect server start` on a free loopback port, started at once and waited for on demand,
    so that its start-up (tens of seconds on a small machine) can overlap other work."""

    def __init__(self, home: Path, services: bool = True) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        port = _free_port()
        self.api = f"http://127.0.0.1:{port}/api"
        env = {**os.environ, **quiet_env(home), "PREFECT_SERVER_UI_API_URL": self.api}
        env.pop("PREFECT_API_URL", None)
        prefect = str(Path(sys.executable).parent / "prefect")
        with open(home / "server.log", "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argument list
                [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                 *([] if services else ["--no-services"])],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def wait(self, timeout_s: float = 120) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited early; see {self.home / 'server.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api}/health", timeout=1).status_code == 200:
                    return self.api
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not answer within {timeout_s:.0f} s")
            time.sleep(0.25)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@contextlib.contextmanager
def local_server(home: Path, timeout_s: float = 120, services: bool = True) -> Iterator[str]:
    """Start a local server; yield its API URL once it answers; stop it after.

    Without `services` the server only answers the API: no scheduler, no background loops, which
    is all flows run in-process need and leaves more of a small machine to the runs themselves.
    """
    server = LocalServer(home, services=services)
    try:
        yield server.wait(timeout_s)
    finally:
        server.stop()
