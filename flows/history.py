"""Run history kept as Prefect table artifacts under a stable key, read back for trends.

Each run publishes its readings as a new version of one keyed table artifact; Prefect keeps
every version, so the history lives wherever the Prefect backend does (the embedded SQLite or a
shared PostgreSQL server) with nothing else to run or back up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort


async def read_rows(key: str, limit: int = 200) -> list[tuple[datetime, list[dict[str, Any]]]]:
    """Every earlier version of a keyed table artifact, newest first, as (created, rows)."""
    import json

    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=limit,
        )
    out = []
    for artifact in artifacts:
        data = artifact.data
        rows = json.loads(data) if isinstance(data, str) else data
        if isinstance(rows, list) and artifact.created is not None:
            out.append((artifact.created, rows))
    return out
