"""The end-to-end tests' `tfops up`, on SQLite, shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serving import Served, assert_stopped_cleanly, tfops_up

from sandbox import stack


@pytest.fixture(scope="module")
def served(sandbox_session: stack.Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`tfops up --env <the session sandbox's environment file>` on SQLite, for one test module."""
    with tfops_up(sandbox_session.env_file, tmp_path_factory.mktemp("tfops-up")) as s:
        yield s
    assert_stopped_cleanly(s)
