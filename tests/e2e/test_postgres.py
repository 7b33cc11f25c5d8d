"""`tfops up` once against a PostgreSQL-backed Prefect server (PREFECT_API_DATABASE_CONNECTION_URL),
as production runs it: the Morning Checklist from the UI completes, and its run is in PostgreSQL."""

from __future__ import annotations

import pytest
from local_postgres import Unavailable, running
from serving import assert_stopped_cleanly, tfops_up

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def postgres():
    try:
        with running() as pg:
            yield pg
    except Unavailable as exc:
        pytest.skip(f"PostgreSQL cannot be started on this machine: {exc}")


def test_the_morning_checklist_runs_on_a_postgresql_backed_server(postgres, sandbox, tmp_path):
    env = {"PREFECT_API_DATABASE_CONNECTION_URL": postgres.url}
    with tfops_up(sandbox.env_file, tmp_path / "home", env) as served:
        assert any("database: postgresql+asyncpg (127.0.0.1:" in line for line in served.output), served.output[:3]
        run = served.run_deployment("morning-checklist/daily", {"env_file": str(sandbox.env_file)})
        assert run.state.name == "Completed", run.state.message
        assert {"morning-checklist", "morning-checklist-table"} <= set(served.artifacts(run.id))
        stored = postgres.query(f"select state_name from flow_run where id = '{run.id}'")  # noqa: S608 - a UUID
        assert stored == "Completed"
        assert int(postgres.query("select count(*) from deployment")) >= 15
    assert_stopped_cleanly(served)
    assert not (tmp_path / "home" / "prefect" / "prefect.db").exists()  # nothing went to SQLite
