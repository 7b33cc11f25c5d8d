"""Test helpers for flow runs on the test Prefect server: wait for a run to pause, read the form it
shows, answer it through the API as an approver would, read the artifacts it published; and write a
variant of the sandbox's environment file for one test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.flow_runs import aresume_flow_run
from prefect.input.actions import aread_flow_run_input
from prefect.input.run_input import keyset_from_paused_state


async def paused_run(name: str, timeout_s: float, where: Callable[[FlowRun], bool] = lambda _: True,
                     what: str = "") -> FlowRun:
    """The first paused run of flow `name` that `where` accepts (`what` says which, for the failure)."""
    async with get_client() as client:
        for _ in range(int(timeout_s / 0.2)):
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[name])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
            for run in runs:
                if where(run):
                    return run
            await asyncio.sleep(0.2)
    raise AssertionError(f"no {name} flow run paused{what} within {timeout_s} s")


async def form_of(flow_run: FlowRun, part: str = "description") -> Any:
    """What the paused run shows its approver: the form's markdown `description`, or its `schema`."""
    assert flow_run.state is not None
    keyset = keyset_from_paused_state(flow_run.state)
    return await aread_flow_run_input(keyset[part], flow_run_id=flow_run.id)


async def resume_and_wait(flow_run: FlowRun, run_input: dict[str, Any], run: asyncio.Task[State],
                          timeout_s: float) -> State:
    """Resume the paused run with `run_input`, as submitting its form in the UI does, and wait for
    the run (started in this test as `run`) to end."""
    await aresume_flow_run(flow_run.id, run_input=run_input)
    return await asyncio.wait_for(run, timeout_s)


async def artifacts_of(flow_run_id: Any) -> dict[str, Any]:
    """The newest artifact of each type (markdown, table) the run published, by type."""
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.type: a.data for a in sorted(found, key=lambda a: a.created or 0)}


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def toml_table(header: str, values: dict[str, Any]) -> str:
    """`header` is written as given: "[fees]", "[[incidents.levels]]"."""
    return f"\n{header}\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


def without_tables(text: str, *names: str) -> str:
    """The environment file without the tables `names` and their sub-tables, should the sandbox write some."""
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.lstrip("[").startswith(tuple(f"{n}{end}" for n in names for end in ("]", ".")))
        if not skipping:
            kept.append(line)
    return "".join(kept)


def env_variant(sb: Any, tmp_path: Path, added: str = "", *, replacing: tuple[str, ...] = ()) -> Path:
    """The sandbox's environment file in `tmp_path`, its secrets found from there, with the tables
    `replacing` taken out and `added` appended."""
    text = without_tables(sb.env_file.read_text(), *replacing).replace('file = "secrets/', f'file = "{sb.dir}/secrets/')
    path = tmp_path / "environment.toml"
    path.write_text(text + added)
    return path
