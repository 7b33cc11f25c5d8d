"""Performance Review from the history the checklists really publish: run them, then read it back."""

from __future__ import annotations

import base64
import re

import pytest

from flows.performance import performance_review_flow

pytestmark = [pytest.mark.sandbox]


def check(report, name):
    return next(c for c in report["checks"] if c["name"] == name)


async def latest_markdown(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async with get_client() as client:
        [artifact] = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                                 sort=ArtifactSort.CREATED_DESC, limit=1)
    return str(artifact.data)


async def test_trends_come_from_the_checklists_runs(prefect_api, sandbox):
    from flows.metrics import metrics_review_flow
    from flows.morning import morning_checklist_flow

    env = str(sandbox.env_file)
    for _ in range(2):
        await morning_checklist_flow(env_file=env)
    sandbox.vendor("convex", "DELETE", "logs")
    sandbox.vendor("convex", "POST", "logs", [{"function": "tokens:create", "count": 49, "ago_s": 600},
                                              {"function": "tokens:create", "count": 1, "ago_s": 300, "error": "boom"}])
    await metrics_review_flow(env_file=env, alert=False)

    report = await performance_review_flow(env_file=env, alert=False)

    assert report["history_runs"]["system_health"] >= 2 and report["history_runs"]["wallets"] >= 2
    trends = {(t["measure"], t["subject"], t["stat"]): t for t in report["trends"]}
    for endpoint in ("frontend", "convex", "api"):
        p95 = trends[("Probe latency", endpoint, "p95")]
        assert p95["this_month"] > 0 and p95["samples_this_month"] >= 2
        assert p95["last_month"] is None and p95["change"] == "no data last month"  # never 0
    for chain in ("ethereum", "bsc", "solana"):
        rpc = trends[("RPC latency", chain, "p95")]
        assert rpc["this_month"] > 0 and rpc["samples_this_month"] >= 4  # two RPC URLs a chain, two runs
    # other tests of a session publish to the same server (with faults): only this run's part is certain
    assert trends[("Probe error rate", "frontend", "mean")]["this_month"] is not None
    assert trends[("Backend error rate", "convex functions", "mean")]["this_month"] > 0
    assert any(key[0] == "Wallet burn" for key in trends)

    latency = check(report, "perf:latency")
    assert latency["status"] == "ok" and latency["observed"].startswith("no history for the 30 days before")
    md = report["markdown"]
    assert md.startswith("## Performance Review: OK")
    assert "| Probe latency | frontend | p95 |" in md and "| no data | no data last month |" in md

    artifact = await latest_markdown("performance-review")
    found = re.search(r"!\[Performance Review chart \(sandbox\)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", artifact)
    assert found, artifact[:500]
    assert base64.b64decode(found.group(1)).startswith(b"\x89PNG\r\n\x1a\n")
    assert "embedded" in report["chart"]


async def test_an_environment_without_history_says_so(prefect_api, sandbox):
    text = sandbox.env_file.read_text().replace('environment = "sandbox"', 'environment = "perf-empty"', 1)
    env = sandbox.dir / "perf-empty.toml"
    env.write_text(text)

    report = await performance_review_flow(env_file=str(env), alert=False)

    assert report["history_runs"] == {"system_health": 0, "metrics": 0, "wallets": 0}
    assert [c["status"] for c in report["checks"]] == ["unknown"] * 3
    assert check(report, "perf:latency")["observed"] == (
        "unknown: no history in the last 30 days (0 System Health Check runs (system-health-table))")
    assert report["trends"] == []
    assert report["markdown"].startswith("## Performance Review: UNKNOWN")
