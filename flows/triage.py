"""Incident Response: triage, the runbook's decision tree "Is the site down?", as a flow."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger

from flows.environment import load_settings
from flows.publish import publish
from runbook.procedures import triage
from tasks.triage import check_rpcs, probe_frontend, read_convex, read_vercel, resolve_frontend_host


@flow(name="triage", description="Runbook: Incident Response, decision tree 'Is the site down?': evidence, "
                                 "diagnosis, recommended action.")
async def triage_flow(env_file: str | None = None, convex_window_minutes: float = 15) -> dict[str, Any]:
    """Gather the evidence at once (frontend, Vercel status and current deployment, DNS, TLS, Convex
    errors, RPC status per chain), walk the decision tree, and publish the diagnosis with its
    evidence and the runbook's action. Evidence that could not be read is shown as unknown, and a
    branch that needs it ends in "cannot tell" rather than a guess.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        convex_window_minutes: how far back failed Convex executions count as "now".
    """
    if not 0 < convex_window_minutes <= 24 * 60:
        raise ValueError(f"convex_window_minutes: {convex_window_minutes} is not between 0 and 1440")
    settings = load_settings(env_file)
    frontend, dns, vercel, convex, rpcs = await asyncio.gather(
        probe_frontend(settings), resolve_frontend_host(settings), read_vercel(settings),
        read_convex(settings, convex_window_minutes * 60), check_rpcs(settings))
    evidence = triage.Evidence()
    evidence.add(*frontend, dns, *vercel, *convex, *rpcs)
    diagnosis = triage.diagnose(evidence)
    markdown = triage.render_markdown(settings.environment, evidence, diagnosis)
    await publish("triage", markdown, triage.table_rows(evidence), f"Triage ({settings.environment})")
    get_run_logger().warning("Triage (%s): %s -> %s", settings.environment, diagnosis.leaf, diagnosis.action)
    return {"environment": settings.environment, "diagnosis": diagnosis.to_dict(),
            "evidence": [f.to_dict() for f in evidence.ordered()], "markdown": markdown}
