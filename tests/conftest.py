"""Shared fixtures. The environment is scrubbed at import, before anything imports Prefect, so no
test reads the developer's own proxies, cloud credentials, RPC URLs or Prefect profile."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_SCRUB_PREFIXES = ("PREFECT_", "AWS_", "TFOPS_")
_SCRUB_NAMES = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "ETH_RPC_URL", "SOLANA_RPC_URL"}
for _name in list(os.environ):
    if _name.upper().startswith(_SCRUB_PREFIXES) or _name.upper() in _SCRUB_NAMES:
        del os.environ[_name]
PREFECT_HOME = Path(tempfile.mkdtemp(prefix="tfops-tests-prefect-"))
os.environ.update(
    {
        "PREFECT_HOME": str(PREFECT_HOME),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
)

import pytest  # noqa: E402

from deployments.prefect_server import LocalServer  # noqa: E402
from sandbox import stack  # noqa: E402

_SERVER: LocalServer | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the session's Prefect server as soon as tests that need it are known, so its start-up
    (15-35 s here) overlaps the tests that run before the first one needing it."""
    global _SERVER
    if _SERVER is None and any("prefect_api" in getattr(item, "fixturenames", ()) for item in session.items):
        _SERVER = LocalServer(PREFECT_HOME, services=False)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One real Prefect server for the whole session."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    global _SERVER
    server = _SERVER or LocalServer(PREFECT_HOME, services=False)
    _SERVER = server
    try:
        api = server.wait()
        os.environ["PREFECT_API_URL"] = api  # for subprocesses such as `tfops run`
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield api
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)  # send the last logs while the server still listens
        os.environ.pop("PREFECT_API_URL", None)
    finally:
        server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SERVER is not None and _SERVER.proc.poll() is None:
        _SERVER.stop()  # started for tests that were then deselected or skipped


@pytest.fixture(autouse=True)
def fresh_alert_state(request: pytest.FixtureRequest) -> None:
    """Each test that runs flows starts with no alert history, as on a new deployment; otherwise a
    failure left by an earlier test would make this test's alert a reminder instead of news."""
    if "prefect_api" not in request.fixturenames:
        return
    request.getfixturevalue("prefect_api")
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for variable in client.read_variables():
            if variable.name.startswith("tfops-alert-state-"):
                client.delete_variable_by_name(variable.name)


@pytest.fixture(scope="session")
def sandbox_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Sandbox]:
    directory = tmp_path_factory.mktemp("sandbox")
    sb = stack.up(directory, activity="off")
    try:
        yield sb
    finally:
        stack.down(directory)


@pytest.fixture
def sandbox(sandbox_session: stack.Sandbox) -> Iterator[stack.Sandbox]:
    """The session's sandbox with faults cleared, vendor knobs reset and receivers emptied."""
    sandbox_session.clear_faults()
    sandbox_session.reset_vendors()
    sandbox_session.clear_received()
    yield sandbox_session
    sandbox_session.clear_faults()
    sandbox_session.reset_vendors()


def cli_env() -> dict[str, str]:
    return dict(os.environ)
