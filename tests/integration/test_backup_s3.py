"""Full System Backup and Backup Verification against real parts: the sandbox's moto S3 server (its
server mode, through boto3 over HTTP) and the Convex export endpoints of sandbox/convex_export.py
served by the sandbox's own HTTP server, requested and downloaded as `npx convex export` does."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from runbook.checks import Status
from runbook.clients.s3 import MiB, S3Store, make_boto3_client
from runbook.config_types import SecretRef
from runbook.procedures import backup as b
from sandbox.convex_export import SnapshotExports, build_snapshot_zip, sample_tables
from sandbox.httpserver import Listener
from sandbox.stack import HOST, free_port

pytestmark = pytest.mark.sandbox

DEPLOY_KEY = "prod:tokenforge-sandbox|backup-test-key"
PASS = SecretStr("backup passphrase for tests")
TABLES = sample_tables(users=30, tokens=8, trades=120)


class ExportServer:
    """The export endpoints on a port of their own, on a loop in a thread, so blocking boto3 calls in
    the test do not stall the server."""

    def __init__(self) -> None:
        self.tables: dict[str, list[dict]] = {k: list(v) for k, v in TABLES.items()}
        self.exports = SnapshotExports(DEPLOY_KEY, lambda: self.tables, build_s=0.06)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _handle(self, request: Any) -> Any:
        from sandbox.faults import OK
        from sandbox.httpserver import Response

        return await self.exports.handle(request, OK) or Response.text("not found", 404)

    def start(self) -> None:
        self.thread.start()
        self.listener = Listener(HOST, self.port, self._handle)
        asyncio.run_coroutine_threadsafe(self.listener.start(), self.loop).result(5)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


@pytest.fixture(scope="module")
def export_server() -> Iterator[ExportServer]:
    server = ExportServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def exports(export_server: ExportServer) -> ExportServer:
    async def reset() -> None:  # on the server's loop: its export tasks live there
        export_server.exports.reset()
        export_server.exports.build_s = 0.06

    asyncio.run_coroutine_threadsafe(reset(), export_server.loop).result(5)
    export_server.tables = {k: list(v) for k, v in TABLES.items()}
    return export_server


def s3_client(sandbox) -> Any:
    return make_boto3_client(region="us-east-1", endpoint_url=sandbox.state["s3"]["endpoint_url"],
                             access_key_id=SecretStr("testing"), secret_access_key=SecretStr("testing"), timeout_s=10)


def new_store(sandbox, versioning: bool = True, part_mb: int = 5) -> S3Store:
    client = s3_client(sandbox)
    bucket = f"tfops-backup-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    if versioning:
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return S3Store(client, bucket, part_size=part_mb * MiB)


@pytest.fixture
def sandbox(sandbox_session):
    """The session's sandbox as it is: these tests use only its S3 server and turn no fault or vendor
    knob, so the shared fixture's reset of all of them (about a second a test) is not needed."""
    return sandbox_session


@pytest.fixture
def store(sandbox) -> S3Store:
    return new_store(sandbox)


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "slack").write_text("https://hooks.slack.test/T/B/secret-path\n")
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<html>TokenForge</html>")
    (dist / "assets" / "app.js").write_text("console.log('launch')" * 200)
    path = tmp_path / "production.toml"
    path.write_text('environment = "production"\n')
    return path


def config(exports: ExportServer | None, **over: Any) -> b.Backup:
    return b.Backup.model_validate({
        "convex_url": exports.url if exports else "http://127.0.0.1:9", "convex_deploy_key": {"env": "CONVEX_KEY"},
        "encryption_passphrase": {"env": "BACKUP_PASSPHRASE"}, "artifacts_dir": "dist", "part_size_mb": 5,
        "timeout_s": 5, "export_poll_s": 0.02, "export_deadline_s": 10, **over,
    })


def resolve(ref: SecretRef) -> SecretStr:
    return SecretStr({"file:secrets/slack": "https://hooks.slack.test/T/B/secret-path"}[ref.describe()])


def take(cfg: b.Backup, store: S3Store, env_file: Path, now: datetime | None = None,
         deploy_key: str = DEPLOY_KEY, source: b.ExportSource | None = None, **kw: Any) -> b.BackupReport:
    source = source or b.convex_source(cfg, SecretStr(deploy_key))
    return b.run_backup(cfg, store, source, env_file, now or datetime.now(UTC), environment="production",
                        passphrase=PASS, secret_refs=[SecretRef(file="secrets/slack")], resolve=resolve, **kw)


def by_name(results) -> dict[str, Any]:
    return {r.name: r for r in results}


def failing(results) -> list[Any]:
    return [r for r in results if r.status is Status.fail]


def test_back_up_then_verify_round_trip(exports, store, env_file):
    cfg = config(exports)
    seen: list[tuple[int, int]] = []
    report = take(cfg, store, env_file, progress=lambda done, total: seen.append((done, total)))
    assert report.complete, [r.to_dict() for r in report.results]
    assert {r.status for r in report.results} == {Status.ok}
    assert report.tables == {"users": 30, "tokens": 8, "trades": 120}
    assert [o.kind for o in report.objects] == ["convex-export", "environment-config", "deployment-artifacts"]
    assert seen and seen[-1] == (report.bytes_uploaded, report.bytes_uploaded)

    # The manifest went up last, and every object was stored encrypted at rest with checksums.
    heads = {o.key: store.client.head_object(Bucket=store.bucket, Key=o.key, ChecksumMode="ENABLED")
             for o in report.objects}
    manifest_head = store.client.head_object(Bucket=store.bucket, Key=report.manifest_key)
    assert all(h["LastModified"] <= manifest_head["LastModified"] for h in heads.values())
    assert {h["ServerSideEncryption"] for h in heads.values()} == {"AES256"}
    assert all(h.get("ChecksumSHA256") for h in heads.values())
    assert all(h["Metadata"]["sha256"] == o.sha256 for o, h in zip(report.objects, heads.values(), strict=True))

    # The environment configuration is unreadable without the passphrase: no secret in clear.
    config_key = report.objects[1].key
    sealed = store.get_bytes(config_key, 10 * MiB)
    assert b"secret-path" not in sealed and sealed.startswith(b"TFOPSENC")

    results = b.verify_backup(cfg, store, datetime.now(UTC), passphrase=PASS)
    assert failing(results) == [], [r.to_dict() for r in results]
    named = by_name(results)
    assert named["export-tables"].observed.startswith("3 tables, 158 documents")
    assert named["rpo"].status is Status.ok
    assert named["decrypt:config/environment.tar.gz.enc"].status is Status.ok


def test_a_changed_object_fails_verification_naming_it(exports, store, env_file):
    cfg = config(exports)
    report = take(cfg, store, env_file)
    export_obj = report.objects[0]
    # Another version of the export, with a table emptied: what a bad overwrite would leave.
    tampered = build_snapshot_zip(env_file.parent, {**TABLES, "trades": []}, snapshot_ts=1)
    store.client.put_object(Bucket=store.bucket, Key=export_obj.key, Body=tampered.read_bytes())

    results = b.verify_backup(cfg, store, datetime.now(UTC), passphrase=PASS)
    bad = {r.name: r for r in failing(results)}
    assert set(bad) == {f"object:{export_obj.name}", "export-tables"}
    obj = bad[f"object:{export_obj.name}"]
    assert export_obj.key in obj.observed and ("checksum mismatch" in obj.observed or "size mismatch" in obj.observed)
    assert "overwritten after the backup" in obj.detail and "is still stored" in obj.detail
    assert "table trades is empty (120 documents at export)" in bad["export-tables"].observed


def test_a_missing_object_and_a_missing_manifest(exports, store, env_file):
    cfg = config(exports)
    first = take(cfg, store, env_file, now=datetime.now(UTC) - timedelta(minutes=5))
    second = take(cfg, store, env_file)
    store.delete_key(second.objects[2].key)  # the artifacts archive of the newest backup
    results = b.verify_backup(cfg, store, datetime.now(UTC))
    (bad,) = failing(results)
    assert bad.name == f"object:{second.objects[2].name}"
    assert bad.observed == f"missing: {store.url(second.objects[2].key)}"
    assert by_name(results)["decrypt:config/environment.tar.gz.enc"].status is Status.unknown  # no passphrase given

    # Without its manifest the newest backup is incomplete; the one before it is verified instead.
    assert second.manifest_key is not None
    store.delete_key(second.manifest_key)
    results = b.verify_backup(cfg, store, datetime.now(UTC), passphrase=PASS)
    named = by_name(results)
    assert named["newest-backup"].status is Status.fail
    assert named["newest-backup"].observed == (
        f"{second.backup_id} is incomplete: no manifest.json (the backup did not finish)")
    assert named["manifest"].observed.startswith(f"backup {first.backup_id}:")
    assert [r.name for r in failing(results)] == ["newest-backup"]

    assert first.manifest_key is not None
    store.delete_key(first.manifest_key)
    named = by_name(b.verify_backup(cfg, store, datetime.now(UTC)))
    assert named["backups"].status is Status.fail and "no complete backup" in named["backups"].observed


def test_rpo_is_the_backups_age(exports, store, env_file):
    cfg = config(exports, max_rpo_minutes=15)
    report = take(cfg, store, env_file)
    later = datetime.now(UTC) + timedelta(minutes=20)
    rpo = by_name(b.verify_backup(cfg, store, later, passphrase=PASS))["rpo"]
    assert rpo.status is Status.fail and rpo.expected == "<= 15 min (RPO)"
    assert rpo.observed.startswith("newest backup's data is 20.") and "RPO exceeded" in rpo.detail
    assert rpo.target == f"RPO (backup {report.backup_id})"
    relaxed = config(exports, max_rpo_minutes=60 * 24 * 31, rpo_status="warn")
    assert by_name(b.verify_backup(relaxed, store, later))["rpo"].status is Status.ok


def test_an_export_that_fails_leaves_no_manifest(exports, store, env_file):
    cfg = config(exports)
    exports.exports.fail_next = True
    report = take(cfg, store, env_file)
    assert not report.complete
    export = by_name(report.results)["convex-export"]
    assert export.status is Status.fail and "the deployment reports the export failed" in export.observed
    assert store.list_objects(cfg.prefix + "/") == []

    report = take(cfg, store, env_file, deploy_key="prod:wrong")
    assert "HTTP 401" in by_name(report.results)["convex-export"].observed
    assert "prod:wrong" not in str([r.to_dict() for r in report.results])

    exports.exports.corrupt_next = True
    report = take(cfg, store, env_file)
    assert "not a readable zip" in by_name(report.results)["convex-export"].observed
    assert not report.complete


def test_unversioned_bucket_is_a_warning_not_a_silent_pass(sandbox, exports, env_file):
    store = new_store(sandbox, versioning=False)
    cfg = config(exports, artifacts_dir=None)
    report = take(cfg, store, env_file)
    assert report.complete
    versioning = by_name(report.results)["bucket-versioning"]
    assert versioning.status is Status.warn and "versioning is Disabled" in versioning.detail
    assert by_name(b.verify_backup(cfg, store, datetime.now(UTC)))["bucket-versioning"].status is Status.warn


def test_retention_deletes_old_backups_but_never_the_newest_complete(sandbox, store, env_file, tmp_path):
    zip_path = build_snapshot_zip(tmp_path, TABLES, snapshot_ts=1_700_000_000_000_000_000)
    cfg = config(None, retention_days=30, artifacts_dir=None)
    now = datetime.now(UTC)
    old = [take(cfg, store, env_file, now=now - timedelta(days=d), source=b.local_source(zip_path)) for d in (60, 45)]
    incomplete_old = take(cfg, store, env_file, now=now - timedelta(days=40), source=b.local_source(zip_path))
    assert incomplete_old.manifest_key is not None
    store.delete_key(incomplete_old.manifest_key)

    result, deleted = b.apply_retention(cfg, store, now)
    # The 45-day-old backup is the newest complete one: it stays, past retention, and says why.
    assert deleted == [old[0].backup_id, incomplete_old.backup_id]
    assert result.status is Status.ok and f"{old[1].backup_id} kept past retention" in result.observed
    remaining = {v.key.split("/")[1] for v in store.list_versions(cfg.prefix + "/")}
    assert remaining == {old[1].backup_id}  # every version of the deleted ones is gone, markers too

    fresh = take(cfg, store, env_file, now=now, source=b.local_source(zip_path))
    result, deleted = b.apply_retention(cfg, store, now)
    assert deleted == [old[1].backup_id]
    assert [x.backup_id for x in b.list_backups(cfg, store)] == [fresh.backup_id]


def test_a_large_upload_streams_from_disk_with_flat_memory(sandbox, tmp_path):
    store = new_store(sandbox, part_mb=8)
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(64 * MiB)  # sparse: the disk is not the point here, memory is
        f.seek(10 * MiB)
        f.write(b"not all zeros")
    tracemalloc.start()
    try:
        up = store.upload_file(big, "big/big.bin")
        peak_upload = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        digest, size = b._hash_stream(store, "big/big.bin")
        peak_read = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert up.size == size == 64 * MiB and digest == up.sha256
    assert up.s3_checksum  # S3 checked each part's SHA-256 (moto stores it without checking)
    assert peak_upload < 24 * MiB, f"upload peak {peak_upload / MiB:.1f} MiB"
    assert peak_read < 24 * MiB, f"verification read peak {peak_read / MiB:.1f} MiB"
