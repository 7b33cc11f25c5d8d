"""The triage flow on a real Prefect server against the sandbox: each leaf of the decision tree,
reached by breaking the sandbox the way production breaks."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.triage import triage_flow
from sandbox.httpserver import Listener, Response
from sandbox.stack import free_port

pytestmark = pytest.mark.sandbox


def env_variant(sb, tmp_path: Path, changes: dict[str, str] | None = None) -> Path:
    """The sandbox's environment file with `changes` (old text -> new text, first occurrence)."""
    text = sb.env_file.read_text().replace('file = "secrets/', f'file = "{sb.dir}/secrets/')
    for old, new in (changes or {}).items():
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "environment.toml"
    path.write_text(text)
    return path


async def run_triage(env: Path) -> tuple[dict[str, Any], Any]:
    state = await triage_flow(env_file=str(env), convex_window_minutes=10, return_state=True)
    assert state.is_completed(), state
    return await state.result(), state


def facts(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {f["key"]: (f["status"], f["observed"]) for f in report["evidence"]}


async def test_a_healthy_sandbox_is_diagnosed_healthy_with_every_fact_known(prefect_api, sandbox, tmp_path):
    report, state = await run_triage(env_variant(sandbox, tmp_path))
    assert report["diagnosis"]["leaf"] == "healthy", report["markdown"]
    assert {s for s, _ in facts(report).values()} == {"ok"}
    assert set(facts(report)) >= {"frontend", "vercel_status", "vercel_deployment", "dns", "tls", "convex_errors",
                                  "backend_health", "rpc:ethereum", "rpc:bsc", "rpc:solana"}
    async with get_client() as client:
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    markdown = next(a.data for a in artifacts if a.type == "markdown")
    assert markdown.startswith("## Triage (sandbox): No fault found")


async def test_a_bad_deploy_is_diagnosed_and_the_rollback_recommended(prefect_api, sandbox, tmp_path):
    added = sandbox.vendor("vercel", "POST", "deployments", {"bad": True, "promote": True})["added"]
    report, _ = await run_triage(env_variant(sandbox, tmp_path))
    d = report["diagnosis"]
    assert (d["leaf"], d["flow"], d["certain"]) == ("bad-deployment", "frontend-rollback", True)
    assert facts(report)["frontend"] == ("fail", facts(report)["frontend"][1])
    assert "HTTP 500" in facts(report)["frontend"][1] and added in facts(report)["vercel_deployment"][1]
    assert "**Recommended action:** Roll back" in report["markdown"]


async def test_vercel_down_while_the_site_is_down(prefect_api, sandbox, tmp_path):
    sandbox.fault("frontend", "down")
    sandbox.vendor("vercel", "POST", "status", {"indicator": "major", "description": "Partial outage"})
    report, _ = await run_triage(env_variant(sandbox, tmp_path))
    assert report["diagnosis"]["leaf"] == "vercel-outage"
    assert facts(report)["vercel_status"] == ("fail", "Vercel is down: major, Partial outage")


async def test_an_unreadable_vercel_leaves_a_down_site_undiagnosed_not_guessed(prefect_api, sandbox, tmp_path):
    sandbox.fault("frontend", "down")
    sandbox.fault("vercel", "down")
    report, _ = await run_triage(env_variant(sandbox, tmp_path))
    d = report["diagnosis"]
    assert (d["leaf"], d["certain"]) == ("site-down-cannot-tell", False)
    assert "Vercel status page unknown" in d["title"]
    assert facts(report)["vercel_status"][0] == "unknown" and "unreachable" in facts(report)["vercel_status"][1]


async def test_a_host_that_does_not_resolve(prefect_api, sandbox, tmp_path):
    port = sandbox.state["endpoints"]["frontend"]["port"]
    env = env_variant(sandbox, tmp_path, {f"http://127.0.0.1:{port}/": f"http://tokenforge-frontend.invalid:{port}/"})
    report, _ = await run_triage(env)
    assert report["diagnosis"]["leaf"] == "dns-failure"
    assert facts(report)["dns"][0] == "fail" and "does not resolve" in facts(report)["dns"][1]


def self_signed(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


async def test_a_certificate_nobody_trusts(prefect_api, sandbox, tmp_path):
    async def page(request):  # noqa: ANN001, ANN202
        return Response.text("TokenForge")

    port = free_port()
    listener = Listener("127.0.0.1", port, page, ssl_context=self_signed(tmp_path))
    await listener.start()
    try:
        frontend = sandbox.state["endpoints"]["frontend"]["port"]
        report, _ = await run_triage(env_variant(sandbox, tmp_path, {
            f"http://127.0.0.1:{frontend}/": f"https://127.0.0.1:{port}/"}))
    finally:
        await listener.stop()
    assert report["diagnosis"]["leaf"] == "tls-failure"
    assert facts(report)["tls"][0] == "fail" and "CERTIFICATE_VERIFY_FAILED" in facts(report)["tls"][1]


async def test_an_unprobeable_frontend_is_unknown(prefect_api, sandbox, tmp_path):
    env = env_variant(sandbox, tmp_path, {'name = "frontend"\n': 'name = "frontend"\n'
                                          'auth_header = { file = "no-such-folder/frontend_auth" }\n'})
    report, _ = await run_triage(env)
    assert (report["diagnosis"]["leaf"], report["diagnosis"]["certain"]) == ("frontend-unknown", False)
    assert facts(report)["frontend"][0] == "unknown"


async def test_a_slow_frontend_is_a_frontend_issue(prefect_api, sandbox, tmp_path):
    sandbox.fault("frontend", "slow:1.8")
    report, _ = await run_triage(env_variant(sandbox, tmp_path))
    assert report["diagnosis"]["leaf"] == "frontend-issue"
    assert facts(report)["frontend"][0] == "warn"


async def test_failing_convex_functions_are_a_backend_issue(prefect_api, sandbox, tmp_path):
    sandbox.vendor("convex", "POST", "logs", {"function": "tokens:create", "udfType": "Mutation",
                                              "error": "Uncaught Error: factory reverted", "count": 4, "ago_s": 60})
    report, _ = await run_triage(env_variant(sandbox, tmp_path))
    d = report["diagnosis"]
    assert (d["leaf"], d["flow"]) == ("backend-issue", "convex-redeploy")
    assert facts(report)["convex_errors"] == ("fail", "4 failed executions: tokens:create 4 in the last 10 min")


async def test_a_dead_primary_rpc_recommends_the_failover(prefect_api, sandbox, tmp_path):
    sandbox.fault("eth-rpc-1", "down")
    report, _ = await run_triage(env_variant(sandbox, tmp_path))
    assert (report["diagnosis"]["leaf"], report["diagnosis"]["flow"]) == ("rpc-failover", "rpc-failover")
    status, observed = facts(report)["rpc:ethereum"]
    assert status == "warn" and "primary eth-rpc-1 unusable" in observed and "backup eth-rpc-2 healthy" in observed


async def test_a_chain_with_no_healthy_rpc_is_down(prefect_api, sandbox, tmp_path):
    sandbox.fault("sol-rpc-1", "down")
    sandbox.fault("sol-rpc-2", "wrong-chain")
    report, _ = await run_triage(env_variant(sandbox, tmp_path))
    assert report["diagnosis"]["leaf"] == "chain-down"
    assert facts(report)["rpc:solana"][0] == "fail"


async def test_unreadable_convex_logs_are_unknown_not_quiet(prefect_api, sandbox, tmp_path):
    (tmp_path / "revoked_key").write_text("prod:tokenforge-sandbox|revoked\n")
    env = env_variant(sandbox, tmp_path, {f'convex_deploy_key = {{ file = "{sandbox.dir}/secrets/convex_deploy_key" }}':
                                          f'convex_deploy_key = {{ file = "{tmp_path}/revoked_key" }}'})
    report, _ = await run_triage(env)
    d = report["diagnosis"]
    assert (d["leaf"], d["certain"]) == ("cannot-tell", False)
    assert "Convex function errors unknown" in d["title"]
    assert facts(report)["backend_health"][0] == "ok"


LEAF_TESTS: dict[str, Callable[..., Any]] = {
    "healthy": test_a_healthy_sandbox_is_diagnosed_healthy_with_every_fact_known,
    "bad-deployment": test_a_bad_deploy_is_diagnosed_and_the_rollback_recommended,
    "vercel-outage": test_vercel_down_while_the_site_is_down,
    "site-down-cannot-tell": test_an_unreadable_vercel_leaves_a_down_site_undiagnosed_not_guessed,
    "dns-failure": test_a_host_that_does_not_resolve,
    "tls-failure": test_a_certificate_nobody_trusts,
    "frontend-unknown": test_an_unprobeable_frontend_is_unknown,
    "frontend-issue": test_a_slow_frontend_is_a_frontend_issue,
    "backend-issue": test_failing_convex_functions_are_a_backend_issue,
    "rpc-failover": test_a_dead_primary_rpc_recommends_the_failover,
    "chain-down": test_a_chain_with_no_healthy_rpc_is_down,
    "cannot-tell": test_unreadable_convex_logs_are_unknown_not_quiet,
}


def test_every_leaf_has_a_sandbox_test():
    from runbook.procedures.triage import LEAVES

    assert set(LEAF_TESTS) == set(LEAVES)
