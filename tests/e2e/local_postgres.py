"""A private PostgreSQL cluster for one test session: Debian's server binaries, a fresh data folder
in a temporary directory, loopback only, a free port. It never touches a cluster of the machine's.

`make postgres` (and .ci/run) installs the server from Debian's packages when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sandbox.stack import free_port

DATABASE = "prefect"
ROLE = "prefect"


class Unavailable(Exception):
    """PostgreSQL cannot be started on this machine; the message says why."""


@dataclass(frozen=True)
class Postgres:
    port: int
    bindir: Path
    data: Path

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    def query(self, sql: str) -> str:
        done = subprocess.run(
            [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE, "-d", DATABASE,
             "-tA", "-c", sql],
            capture_output=True, text=True, timeout=30, check=True,
        )
        return done.stdout.strip()


def bindir() -> Path:
    """The newest installed server's binaries (Debian keeps them in /usr/lib/postgresql/<version>/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise Unavailable("no PostgreSQL server is installed (`make postgres` installs Debian's package postgresql)")


def _demote() -> tuple[int, int] | None:
    """The server refuses to run as root: run it as the `postgres` account the Debian package creates."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("running as root and there is no `postgres` account to run the server as") from None
    return entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def running(start_timeout_s: float = 60) -> Iterator[Postgres]:
    """A fresh cluster in a folder of its own under the system's temporary directory (pytest's own
    folders are private to root, which the server's account could not enter); removed after."""
    binaries = bindir()
    ids = _demote()
    tmp = Path(tempfile.mkdtemp(prefix="tfops-postgres-"))
    try:
        yield from _run(binaries, ids, tmp, start_timeout_s)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(binaries: Path, ids: tuple[int, int] | None, tmp: Path, start_timeout_s: float) -> Iterator[Postgres]:
    data = tmp / "data"
    sockets = tmp / "sockets"
    data.mkdir(parents=True)
    sockets.mkdir()
    if ids is not None:
        for path in (tmp, data, sockets):
            os.chown(path, *ids)

    def as_postgres() -> None:
        if ids is not None:
            os.setgid(ids[1])
            os.setuid(ids[0])

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    init = subprocess.run(
        [str(binaries / "initdb"), "-D", str(data), "-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync"],
        capture_output=True, text=True, timeout=120, preexec_fn=as_postgres, env=env, cwd=tmp,  # noqa: PLW1509
    )
    if init.returncode != 0:
        raise Unavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
    port = free_port()
    log = open(tmp / "postgres.log", "ab")  # noqa: SIM115 - the server keeps the handle
    server = subprocess.Popen(
        [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=as_postgres,  # noqa: PLW1509
        env=env, cwd=tmp, start_new_session=True,
    )
    log.close()
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if server.poll() is not None:
                raise Unavailable(f"the server exited: {(tmp / 'postgres.log').read_text()[-500:]}")
            ready = subprocess.run([str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                                   capture_output=True, timeout=10)
            if ready.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise Unavailable(f"the server did not accept connections within {start_timeout_s:.0f} s")
            time.sleep(0.2)
        subprocess.run([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", ROLE, DATABASE],
                       capture_output=True, timeout=30, check=True)
        yield Postgres(port, binaries, data)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGINT)  # "fast" shutdown
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
