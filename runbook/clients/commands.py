"""External commands (npm, git, a project's test command) run without a shell, under a deadline.

- An argument list, never a shell string: nothing in a package name or a path is interpreted.
- The executable is resolved to an absolute path first, so a missing tool is an error naming it
  rather than a bare `FileNotFoundError` from deep inside asyncio.
- Each command runs in its own session (process group). On its deadline the whole group gets
  SIGTERM, then SIGKILL after a grace period: `npm run` starts a shell that starts node, and killing
  only the direct child would leave the grandchildren running and holding the output pipes open.
- Secrets travel in the environment (`secret_env`), never in argv, where any local user could read
  them in the process list; a secret value found in argv is refused.
- Output is kept bounded: only the last `keep_bytes` of each stream, so a chatty test suite cannot
  exhaust the worker's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_KEEP_BYTES = 64 * 1024
KILL_GRACE_S = 5.0
_CHUNK = 64 * 1024


class CommandError(Exception):
    """A command that could not be started at all (as opposed to one that ran and failed)."""


class MissingExecutable(CommandError):
    def __init__(self, executable: str, search_path: str | None):
        self.executable = executable
        where = "the given PATH" if search_path is not None else "PATH"
        super().__init__(f"executable {executable!r} was not found on {where}; is it installed?")


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool
    stdout_dropped: int = 0
    stderr_dropped: int = 0

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.returncode == 0

    @property
    def command(self) -> str:
        """The command as a reader would type it, with the executable by its short name."""
        return " ".join([Path(self.argv[0]).name, *self.argv[1:]])

    def tail(self, lines: int = 20) -> str:
        """The last lines of stdout then stderr, for a report."""
        text = "\n".join(part.rstrip("\n") for part in (self.stdout, self.stderr) if part.strip())
        return "\n".join(text.splitlines()[-lines:])

    def describe(self) -> str:
        """How the command ended, in one phrase."""
        if self.timed_out:
            return f"`{self.command}` timed out after {self.duration_s:.0f} s and was killed"
        return f"`{self.command}` exited {self.returncode} after {self.duration_s:.1f} s"


def resolve(executable: str, search_path: str | None = None) -> str:
    """The absolute path of `executable`, looked up on PATH unless it already is a path."""
    if not executable:
        raise CommandError("empty command: the first argument must name an executable")
    if os.sep in executable:
        path = Path(executable)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MissingExecutable(executable, search_path)
        return str(path.resolve())
    found = shutil.which(executable, path=search_path)
    if found is None:
        raise MissingExecutable(executable, search_path)
    return os.path.abspath(found)


class _Tail:
    """The last `limit` bytes of a stream, and how many were dropped before them."""

    def __init__(self, limit: int):
        self.limit = limit
        self.buffer = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.buffer += chunk
        excess = len(self.buffer) - self.limit
        if excess > 0:
            del self.buffer[:excess]
            self.dropped += excess

    def text(self) -> str:
        return self.buffer.decode("utf-8", errors="replace")


async def _drain(stream: asyncio.StreamReader | None, tail: _Tail) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_CHUNK):
        tail.add(chunk)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _kill_group(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    # The child was started in a new session, so its pid is the group's id, even after it exits
    # while grandchildren of the group still run.
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace_s)
    except TimeoutError:
        pass
    # SIGKILL the group even if the leader exited on SIGTERM: a grandchild may ignore SIGTERM.
    _signal_group(proc.pid, signal.SIGKILL)
    await proc.wait()


async def run(
    argv: Sequence[str],
    *,
    timeout_s: float,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    secret_env: Mapping[str, str] | None = None,
    keep_bytes: int = DEFAULT_KEEP_BYTES,
    kill_grace_s: float = KILL_GRACE_S,
) -> CommandResult:
    """Run `argv` and return how it ended; a non-zero exit or a timeout is a result, not an error.

    `env` replaces the inherited environment when given (default: this process's environment);
    `secret_env` is added on top. Raises CommandError when the command cannot be started.
    """
    if isinstance(argv, str):
        raise CommandError(f"argv must be a list of arguments, not the string {argv!r}")
    if not argv:
        raise CommandError("empty command: argv needs at least the executable")
    if timeout_s <= 0:
        raise CommandError(f"timeout_s must be positive, got {timeout_s!r}")
    if keep_bytes <= 0:
        raise CommandError(f"keep_bytes must be positive, got {keep_bytes!r}")
    full_env = dict(os.environ if env is None else env)
    for name, value in (secret_env or {}).items():
        if value and any(value in arg for arg in argv):
            raise CommandError(f"the value of secret {name} appears in the command line; pass it only by environment")
        full_env[name] = value
    executable = resolve(argv[0], full_env.get("PATH"))
    if cwd is not None and not Path(cwd).is_dir():
        raise CommandError(f"working directory {str(cwd)!r} does not exist or is not a directory")
    args = (executable, *argv[1:])
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            cwd=None if cwd is None else str(cwd),
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandError(f"cannot start {argv[0]!r} ({executable}): {exc.strerror or exc}") from None
    out, err = _Tail(keep_bytes), _Tail(keep_bytes)
    # Waiting for the pipes to close as well as for the exit catches a grandchild that outlives
    # its parent while holding the output open: it counts against the same deadline.
    finished = asyncio.gather(proc.wait(), _drain(proc.stdout, out), _drain(proc.stderr, err))
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(finished), timeout_s)
    except TimeoutError:
        timed_out = True
        await _kill_group(proc, kill_grace_s)
        try:
            await asyncio.wait_for(finished, kill_grace_s)
        except TimeoutError:
            # Only a process that left the group (its own setsid) can still hold the pipes.
            finished.cancel()
    except asyncio.CancelledError:
        await _kill_group(proc, kill_grace_s)
        finished.cancel()
        raise
    return CommandResult(
        argv=tuple(args),
        returncode=proc.returncode,
        stdout=out.text(),
        stderr=err.text(),
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
    )
