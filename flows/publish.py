"""Publish a checklist's report as Prefect artifacts: markdown that reads like the runbook, and a table."""

from __future__ import annotations

import re
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext


def artifact_key(name: str) -> str:
    # Artifact keys take lowercase letters, digits and dashes only.
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")


async def publish(key: str, markdown: str, rows: list[dict[str, Any]], description: str) -> None:
    if FlowRunContext.get() is None:
        return
    await create_markdown_artifact(markdown=markdown, key=artifact_key(key), description=description, _sync=False)  # type: ignore[call-arg]
    await create_table_artifact(table=rows, key=artifact_key(f"{key}-table"), description=description, _sync=False)  # type: ignore[call-arg]
