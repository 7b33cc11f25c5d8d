"""`tfops up`: the project on one machine, unattended and by hand from the UI.

In order: a Prefect server on loopback (the embedded SQLite database under --home, or the database
PREFECT_API_DATABASE_CONNECTION_URL names), the sandbox unless an environment file is given (it
starts while the server does), the process work pool, every deployment of prefect.yaml
(`prefect deploy --all`), the automations (deployments/automations.py), and one process worker.
Then it prints the UI's URL and waits. Ctrl-C or SIGTERM stops everything it started, the worker
first so no run starts while the rest goes down; a part that dies on its own stops the rest too.

Every child runs in its own process group and is stopped by group: flow runs the worker started
(each in its own session) are stopped with it. Telemetry is off; everything binds to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
POOL = "tokenforge-ops"
DEFAULT_PORT = 4200
DEFAULT_HOME = Path.home() / ".tokenforge-ops"
SERVER_START_S = 180
DEPLOY_S = 600
HEARTBEAT_S = "60"  # deployments/automations.py: three missed heartbeats make a zombie


class UpError(Exception):
    """Something `up` could not do; `code` is the CLI's exit code (1 failed, 2 bad input)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Options:
    port: int = DEFAULT_PORT
    home: Path = DEFAULT_HOME
    env_file: Path | None = None
    sandbox: bool = True
    activity: str = "normal"
    out: Callable[[str], None] = field(default=lambda line: print(line, flush=True))


def quiet_env(home: Path) -> dict[str, str]:
    """Nothing reaches outside: no analytics, no telemetry; Prefect's state lives under `home`."""
    return {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _database(env: dict[str, str], home: Path) -> str:
    url = env.get("PREFECT_API_DATABASE_CONNECTION_URL")
    if not url:
        return f"SQLite at {home / 'prefect' / 'prefect.db'}"
    return f"{url.split(':', 1)[0]} ({url.rsplit('@', 1)[-1]})"  # never the password


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`: the worker's flow runs run in sessions of their own."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout_s: float = 20) -> None:
        groups = {self.proc.pid, *(_pgid(p) for p in _descendants(self.proc.pid))} - {None, os.getpgrp()}
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (_alive(self.proc) or any(_group_alive(g) for g in groups)):
            time.sleep(0.1)
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)  # type: ignore[arg-type]
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _group_alive(group: int | None) -> bool:
    if group is None:
        return False
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Stack:
    """What `up` started, stopped in reverse order."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.home = options.home.resolve()
        self.logs = self.home / "logs"
        self.children: list[Child] = []
        self.sandbox_dir: Path | None = None
        self.api = f"http://{HOST}:{options.port}/api"
        self.ui = f"http://{HOST}:{options.port}"

    # -- processes -------------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        return {**env, **quiet_env(self.home), **extra}

    def client_env(self, env_file: Path) -> dict[str, str]:
        return self.env(PREFECT_API_URL=self.api, TFOPS_PROJECT_DIR=str(REPO), TFOPS_ENV_FILE=str(env_file),
                        PREFECT_FLOWS_HEARTBEAT_FREQUENCY=HEARTBEAT_S)

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = self.logs / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - fixed argument lists, no shell
                argv, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def check_children(self) -> None:
        for child in self.children:
            if not _alive(child.proc):
                raise UpError(f"the {child.name} exited (code {child.proc.returncode}); its log, "
                              f"{child.log}, ends with:\n{_tail(child.log)}")

    def stop(self) -> list[str]:
        """Stop every child (newest first) and the sandbox; returns what was left running."""
        left: list[str] = []
        for child in reversed(self.children):
            child.stop()
            if _alive(child.proc):
                left.append(child.name)
        self.children.clear()
        if self.sandbox_dir is not None:
            from sandbox import stack

            with contextlib.suppress(stack.SandboxError):
                left += stack.down(self.sandbox_dir)
            self.sandbox_dir = None
        return left

    # -- the steps -------------------------------------------------------------------------------

    def start_server(self) -> Child:
        if not port_free(self.options.port):
            raise UpError(f"port {self.options.port} on {HOST} is in use (another Prefect server?); "
                          "choose another with --port")
        prefect = str(Path(sys.executable).parent / "prefect")
        return self.spawn("prefect-server", [prefect, "server", "start", "--host", HOST, "--port",
                                             str(self.options.port)],
                          self.env(PREFECT_SERVER_UI_API_URL=self.api, PREFECT_UI_URL=self.ui))

    def wait_for_server(self, server: Child) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            self.check_children()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api}/health", timeout=2, trust_env=False).status_code == 200:
                    return
            time.sleep(0.25)
        raise UpError(f"the Prefect server did not answer within {SERVER_START_S} s; see {server.log}")

    def deploy(self, env_file: Path) -> None:
        prefect = str(Path(sys.executable).parent / "prefect")
        log_path = self.logs / "deploy.log"
        with open(log_path, "ab") as log:
            try:
                done = subprocess.run(  # noqa: S603 - a fixed argument list
                    [prefect, "--no-prompt", "deploy", "--all"], cwd=REPO, env=self.client_env(env_file),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=DEPLOY_S,
                    start_new_session=True,
                )
            except subprocess.TimeoutExpired:
                raise UpError(f"`prefect deploy --all` took over {DEPLOY_S} s; see {log_path}") from None
        if done.returncode != 0:
            raise UpError(f"`prefect deploy --all` failed (exit {done.returncode}); {log_path} ends with:\n"
                          f"{_tail(log_path)}")

    def start_worker(self, env_file: Path) -> Child:
        prefect = str(Path(sys.executable).parent / "prefect")
        return self.spawn("worker", [prefect, "worker", "start", "--pool", POOL, "--type", "process",
                                     "--name", f"tfops-up-{socket.gethostname()}"], self.client_env(env_file))


async def ensure_pool() -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(
                name=POOL, type="process", base_job_template=ProcessWorker.get_default_base_job_template(),
                description="tokenforge-ops: the runbook's flows, run from the project folder",
            ))
        except ObjectAlreadyExists:
            return f"work pool {POOL}: already there"
    return f"work pool {POOL}: created (process)"


async def _setup_api(settings: Any) -> list[str]:
    from deployments import automations
    from runbook.secrets import SecretError

    lines = [await ensure_pool()]
    try:
        lines += await automations.apply(settings)
    except SecretError as exc:
        raise UpError(f"the automations need the notification secrets: {exc}") from None
    return lines


def _with_api(api: str, fn: Callable[[], Any]) -> Any:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}):
        return fn()


def _load_env(path: Path) -> Any:
    from runbook import settings as config

    try:
        return config.load(path)
    except config.ConfigError as exc:
        raise UpError(f"--env {exc.source} is not a valid environment file:\n  " + "\n  ".join(exc.problems),
                      2) from None


def _start_sandbox(directory: Path, activity: str) -> Path:
    from sandbox import stack

    try:
        return stack.up(directory, activity=activity).env_file
    except stack.SandboxError as exc:
        raise UpError(f"the sandbox did not start: {exc}") from None


def run(options: Options, stopped: Callable[[], bool] | None = None) -> int:
    """Bring everything up, wait until interrupted (or `stopped()`), bring it down. Returns the exit code."""
    out = options.out
    if options.env_file is None and not options.sandbox:
        raise UpError("--no-sandbox needs --env FILE: the flows must check something", 2)
    env_settings = _load_env(options.env_file) if options.env_file is not None else None
    up = Stack(options)
    up.logs.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started in the background, where SIGINT is ignored
    pool = ThreadPoolExecutor(1)
    sandbox: Future[Path] | None = None
    code = 0
    try:
        server = up.start_server()
        out(f"Prefect server starting on {up.ui} (database: {_database(up.env(), up.home)}); logs in {up.logs}")
        if env_settings is None:
            up.sandbox_dir = up.home / "sandbox"
            out(f"sandbox starting in {up.sandbox_dir} (activity: {options.activity})")
            sandbox = pool.submit(_start_sandbox, up.sandbox_dir, options.activity)
        up.wait_for_server(server)
        out("Prefect server: answering")
        if sandbox is not None:
            env_file = sandbox.result()
            out(f"sandbox: up; environment file {env_file}")
            env_settings = _load_env(env_file)
        else:
            assert options.env_file is not None
            env_file = options.env_file.resolve()
        for line in _with_api(up.api, lambda: asyncio.run(_setup_api(env_settings))):
            out(line)
        out("deploying every deployment in prefect.yaml ...")
        up.deploy(env_file)
        out("deployments: created, schedules active")
        up.start_worker(env_file)
        out(f"worker: polling the {POOL} work pool")
        out("")
        out(f"Prefect UI: {up.ui}")
        out("Ctrl-C stops the worker, the server" + (" and the sandbox." if up.sandbox_dir else "."))
        while not (stopped and stopped()):
            up.check_children()
            time.sleep(1)
    except KeyboardInterrupt:
        out("stopping ...")
    except UpError as exc:
        out(f"tfops: {exc}")
        code = exc.code
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if sandbox is not None:
                with contextlib.suppress(Exception):
                    sandbox.result()  # let a sandbox that is still starting finish, so it can be stopped
            pool.shutdown()
            left = up.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
        if left:
            out("tfops: still running after the stop: " + ", ".join(left))
            code = code or 1
        else:
            out("stopped: nothing left running")
    return code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
