"""Performance Review tasks: read a checklist's history back from its versioned table artifacts, and
draw the chart (matplotlib, off the event loop)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from runbook.procedures import performance

PAGE = 200  # the API's own default page limit


@task(name="read-history", cache_policy=NO_CACHE, tags=["performance"], retries=2, retry_delay_seconds=2)
async def read_history(
    key: str, since: datetime, limit: int, description: str | None = None
) -> list[tuple[datetime, list[dict[str, Any]]]]:
    """Every version of a keyed table artifact created since `since`, newest first, as (created, rows).

    Versions are read a page at a time, newest first, until one is older than `since` or `limit`
    versions were read. `description` keeps only the versions published with it (the System Health
    Check's key is shared by environments; its description names the environment).
    """
    out: list[tuple[datetime, list[dict[str, Any]]]] = []
    offset = 0
    async with get_client() as client:
        while offset < limit:
            page = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC, limit=min(PAGE, limit - offset), offset=offset,
            )
            for artifact in page:
                if artifact.created is None:
                    continue
                if artifact.created < since:
                    return out
                if description is not None and artifact.description != description:
                    continue
                rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
                if isinstance(rows, list):  # a plain UTC datetime: Prefect hands out pendulum's subclass
                    created = datetime.fromtimestamp(artifact.created.timestamp(), UTC)
                    out.append((created, [r for r in rows if isinstance(r, dict)]))
            if len(page) < PAGE:
                break
            offset += len(page)
    return out


@task(name="draw-performance-chart", cache_policy=NO_CACHE, tags=["performance"])
async def draw_chart(
    series: Mapping[performance.Measure, Sequence[performance.Sample]],
    found: Sequence[performance.Trend], now: datetime, days: int, title: str,
) -> bytes:
    return await asyncio.to_thread(performance.chart_png, series, found, now, days, title)
