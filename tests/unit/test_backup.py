"""Full System Backup's pure parts: the config model, the manifest, the encryption, the export zip's
table counts, the Convex export state as the backend encodes it, progress reporting."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from runbook.clients import convex_export as cx
from runbook.config_types import SecretRef
from runbook.procedures import backup as b
from runbook.secrets import SecretError
from runbook.settings import problems_of
from sandbox.convex_export import build_snapshot_zip, encode_int64, sample_tables

PASS = SecretStr("correct horse battery staple")


def cfg(**over: Any) -> b.Backup:
    data = {"convex_url": "https://happy-otter-123.convex.cloud", "convex_deploy_key": {"env": "CONVEX_DEPLOY_KEY"},
            "encryption_passphrase": {"env": "BACKUP_PASSPHRASE"}, **over}
    return b.Backup.model_validate(data)


def problems(**over: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        cfg(**over)
    return problems_of(info.value)


# ---- configuration ------------------------------------------------------------------------------

def test_defaults_follow_the_runbook():
    c = cfg()
    assert (c.prefix, c.retention_days, c.max_rpo_minutes, c.part_size_mb, c.sse) == ("backups", 90, 15, 64, "AES256")
    assert c.part_size == 64 * 1024 * 1024
    assert c.include_env_file is True and c.artifacts_dir is None
    assert c.secret_refs() == [SecretRef(env="CONVEX_DEPLOY_KEY"), SecretRef(env="BACKUP_PASSPHRASE")]


@pytest.mark.parametrize(("over", "field"), [
    ({"part_size_mb": 4}, "part_size_mb"),
    ({"retention_days": 0}, "retention_days"),
    ({"max_rpo_minutes": 0}, "max_rpo_minutes"),
    ({"sse": "aws:kms2"}, "sse"),
    ({"prefix": "backups/"}, "prefix"),
    ({"prefix": "a/../b"}, "prefix"),
    ({"convex_url": "ftp://x"}, "convex_url"),
    ({"artifacts_dir": "  "}, "artifacts_dir"),
    ({"timeout_s": -1}, "timeout_s"),
    ({"retention": 30}, "retention"),
])
def test_config_errors_name_the_field(over, field):
    found = problems(**over)
    assert any(p.startswith(f"{field}:") for p in found), found


def test_missing_required_fields_are_named():
    with pytest.raises(ValidationError) as info:
        b.Backup.model_validate({})
    found = " ".join(problems_of(info.value))
    for name in ("convex_url", "convex_deploy_key", "encryption_passphrase"):
        assert f"{name}: " in found


def test_kms_key_only_with_kms():
    assert "kms_key_id: only with sse = 'aws:kms'" in " ".join(problems(kms_key_id="alias/backups"))
    assert cfg(sse="aws:kms", kms_key_id="alias/backups").kms_key_id == "alias/backups"


# ---- encryption ---------------------------------------------------------------------------------

def test_encryption_round_trip_and_format():
    data = b"environment = \"production\"\n" * 100
    blob = b.encrypt(data, PASS)
    assert blob.startswith(b"TFOPSENC\x01") and blob[9:12] == bytes([15, 8, 1])
    assert data not in blob
    assert len(blob) == b.HEADER_LEN + len(data) + 16
    assert b.decrypt(blob, PASS) == data
    assert b.encrypt(data, PASS) != blob  # a fresh salt and nonce every time


def test_wrong_passphrase_fails_clearly():
    blob = b.encrypt(b"secret", PASS)
    with pytest.raises(b.DecryptionError, match="wrong passphrase"):
        b.decrypt(blob, SecretStr("not it"))


def test_a_changed_header_or_body_fails_authentication():
    blob = bytearray(b.encrypt(b"secret", PASS))
    header_changed = bytes(blob[:20]) + bytes([blob[20] ^ 1]) + bytes(blob[21:])  # a salt byte
    with pytest.raises(b.DecryptionError):
        b.decrypt(header_changed, PASS)
    blob[-1] ^= 1
    with pytest.raises(b.DecryptionError, match="changed"):
        b.decrypt(bytes(blob), PASS)


def test_not_an_encrypted_object_is_said_so():
    with pytest.raises(b.DecryptionError, match="TFOPSENC"):
        b.decrypt(b"PK\x03\x04 a zip" + bytes(64), PASS)
    with pytest.raises(b.DecryptionError, match="version 9"):
        b.decrypt(b"TFOPSENC\x09" + bytes(64), PASS)


def test_an_empty_passphrase_is_refused():
    with pytest.raises(ValueError, match="empty"):
        b.encrypt(b"x", SecretStr(""))


# ---- the environment configuration bundle -------------------------------------------------------

def test_config_bundle_holds_the_file_and_secret_values_and_names_missing_ones(tmp_path):
    env = tmp_path / "production.toml"
    env.write_text('environment = "production"\n')
    values = {"env:SLACK_URL": "https://hooks.example/T/B/xyz", "file:secrets/key": "k-123"}

    def resolve(ref: SecretRef) -> SecretStr:
        if ref.describe() not in values:
            raise SecretError(f"secret {ref.describe()}: environment variable is not set")
        return SecretStr(values[ref.describe()])

    refs = [SecretRef(env="SLACK_URL"), SecretRef(file="secrets/key"), SecretRef(env="GONE"),
            SecretRef(env="SLACK_URL")]
    data, missing = b.config_bundle(env, refs, resolve)
    assert missing == ["env:GONE"]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = tar.getnames()
        secrets = json.load(tar.extractfile("environment/secrets.json"))  # type: ignore[arg-type]
        assert tar.extractfile("environment/production.toml").read() == env.read_bytes()  # type: ignore[union-attr]
    assert names == ["environment/production.toml", "environment/secrets.json"]
    assert secrets["secrets"] == values
    assert "GONE" in secrets["missing"]["env:GONE"]


# ---- manifest -----------------------------------------------------------------------------------

def manifest() -> b.Manifest:
    objects = [
        b.ManifestObject("convex/snapshot_1.zip", "backups/20261127T030000Z/convex/snapshot_1.zip", "convex-export",
                         1234, "a" * 64, "https://happy-otter-123.convex.cloud", "2026-11-27T03:00:00+00:00",
                         "v1", False, "AES256"),
        b.ManifestObject("config/environment.tar.gz.enc", "backups/20261127T030000Z/config/environment.tar.gz.enc",
                         "environment-config", 99, "b" * 64, "/etc/tfops/production.toml", None, None, True, None),
    ]
    return b.Manifest("20261127T030000Z", "production", "2026-11-27T03:00:00+00:00", "2026-11-27T03:02:00+00:00",
                      "https://happy-otter-123.convex.cloud", 1_795_748_400_000_000_000, {"users": 3, "trades": 0},
                      objects)


def test_manifest_round_trip():
    m = manifest()
    raw = m.to_json()
    doc = json.loads(raw)
    assert doc["format"] == "tokenforge-ops-backup" and doc["version"] == 1
    assert doc["export"]["snapshot_at"] == "2026-11-27T03:00:00+00:00"
    assert set(doc["objects"][0]) == {"name", "key", "kind", "size", "sha256", "source", "source_mtime",
                                      "version_id", "encrypted", "sse"}
    assert b.Manifest.from_json(raw) == m


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["objects"][1].update(sha256="xyz"), "objects[1].sha256 is not 64 hex digits"),
    (lambda d: d["objects"][0].pop("size"), "objects[0].size is missing"),
    (lambda d: d["objects"][0].update(size="12"), "objects[0].size is str"),
    (lambda d: d["objects"][0].update(size=True), "objects[0].size is bool"),
    (lambda d: d["export"]["tables"].update(users=-1), "export.tables.users"),
    (lambda d: d.update(version=2), "version 2"),
    (lambda d: d.update(format="other"), "format is 'other'"),
    (lambda d: d.pop("backup_id"), "backup_id is missing"),
])
def test_a_bad_manifest_is_named_field_by_field(change, message):
    doc = json.loads(manifest().to_json())
    change(doc)
    with pytest.raises(b.ManifestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        b.Manifest.from_json(json.dumps(doc).encode(), "s3://bucket/backups/x/manifest.json")
    with pytest.raises(b.ManifestError, match="not JSON"):
        b.Manifest.from_json(b"{", "m")


def test_backup_ids_are_utc_times():
    from datetime import UTC, datetime, timedelta, timezone

    when = datetime(2026, 11, 27, 4, 5, 6, tzinfo=timezone(timedelta(hours=1)))
    assert b.backup_id_of(when) == "20261127T030506Z"
    assert b.time_of("20261127T030506Z") == datetime(2026, 11, 27, 3, 5, 6, tzinfo=UTC)


# ---- the export zip -----------------------------------------------------------------------------

def test_counts_documents_per_table_in_a_snapshot_zip(tmp_path):
    tables = {**sample_tables(users=12, tokens=3, trades=40), "empty": []}
    path = build_snapshot_zip(tmp_path, tables, snapshot_ts=1_795_748_400_123_456_789)
    assert path.name == "snapshot_1795748400123456789.zip"
    assert b.count_tables(path) == {"users": 12, "tokens": 3, "trades": 40, "empty": 0}
    with zipfile.ZipFile(path) as zf:
        assert {"README.md", "_tables/documents.jsonl", "users/generated_schema.jsonl"} <= set(zf.namelist())
        first = json.loads(zf.read("users/documents.jsonl").splitlines()[0])
        assert {"_id", "_creationTime", "wallet"} <= set(first)
        assert json.loads(zf.read("_tables/documents.jsonl").splitlines()[0]) == {"name": "users", "id": 10001}


def test_a_last_line_without_newline_still_counts(tmp_path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("_tables/documents.jsonl", '{"name": "t", "id": 1}')
        zf.writestr("t/documents.jsonl", '{"_id": "a"}\n{"_id": "b"}')
    assert b.count_tables(path) == {"t": 2}


def test_export_problems_name_the_entry(tmp_path):
    listed_only = tmp_path / "listed.zip"
    with zipfile.ZipFile(listed_only, "w") as zf:
        zf.writestr("_tables/documents.jsonl", '{"name": "users", "id": 1}\n')
    with pytest.raises(b.ExportError, match="table 'users' is listed but users/documents.jsonl is missing"):
        b.count_tables(listed_only)
    no_listing = tmp_path / "nolist.zip"
    with zipfile.ZipFile(no_listing, "w") as zf:
        zf.writestr("users/documents.jsonl", "{}\n")
    with pytest.raises(b.ExportError, match="no _tables/documents.jsonl"):
        b.count_tables(no_listing)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(listed_only.read_bytes()[:40])
    with pytest.raises(b.ExportError, match="broken.zip: not a readable zip"):
        b.count_tables(broken)


def test_local_source_reads_the_snapshot_time_from_the_cli_name(tmp_path):
    path = build_snapshot_zip(tmp_path, {"t": [{}]}, snapshot_ts=1_700_000_000_000_000_000)
    snap = b.local_source(path)(tmp_path)
    assert snap.snapshot_ts == 1_700_000_000_000_000_000
    assert snap.snapshot_at is not None and snap.snapshot_at.year == 2023
    with pytest.raises(cx.ExportFailed, match="no such export file"):
        b.local_source(tmp_path / "gone.zip")(tmp_path)


# ---- Convex export state ------------------------------------------------------------------------

def test_int64_in_every_wire_form():
    n = 1_795_748_400_123_456_789
    assert cx.parse_int64(encode_int64(n), "start_ts") == n
    assert cx.parse_int64(n, "start_ts") == n
    assert cx.parse_int64(str(n), "start_ts") == n
    assert cx.parse_int64(None, "start_ts") is None
    with pytest.raises(cx.ExportFailed, match="start_ts"):
        cx.parse_int64({"$integer": "bm90IDg="}, "start_ts")
    with pytest.raises(cx.ExportFailed, match="start_ts: a boolean"):
        cx.parse_int64(True, "start_ts")


def test_export_state_documents():
    assert cx.parse_state(None) is None
    state = cx.parse_state({"_id": "abc", "state": "completed", "start_ts": encode_int64(5), "complete_ts": 7})
    assert state == cx.ExportState("abc", "completed", 5, 7)
    with pytest.raises(cx.ExportFailed, match="not an export document"):
        cx.parse_state({"status": "?"})


@pytest.mark.parametrize(("disposition", "name"), [
    ("attachment; filename=snapshot_5.zip", "snapshot_5.zip"),
    ('attachment; filename="snapshot_5.zip"', "snapshot_5.zip"),
    ("attachment; filename=../../etc/passwd", "snapshot_9.zip"),
    ("", "snapshot_9.zip"),
])
def test_download_names_are_plain_file_names(disposition, name):
    assert cx._filename(disposition, 9) == name


# ---- progress -----------------------------------------------------------------------------------

def test_progress_is_reported_in_steps_and_at_the_end():
    seen: list[tuple[int, int]] = []
    counter = b._ProgressTotal(1000, lambda done, total: seen.append((done, total)))
    for _ in range(1000):
        counter(1)
    assert seen[-1] == (1000, 1000)
    assert 100 <= len(seen) <= 201
    assert all(d2 > d1 for (d1, _), (d2, _) in zip(seen, seen[1:], strict=False))


def test_archive_folder_keeps_relative_paths_and_links(tmp_path: Path):
    src = tmp_path / "dist"
    (src / "assets").mkdir(parents=True)
    (src / "index.html").write_text("<html></html>")
    (src / "assets" / "app.js").write_text("console.log(1)")
    (src / "link").symlink_to("/etc/passwd")
    newest = b.archive_folder(src, tmp_path / "dist.tar.gz")
    assert newest is not None
    with tarfile.open(tmp_path / "dist.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"dist/assets/app.js", "dist/index.html", "dist/link"}
    assert members["dist/link"].issym()


# ---- the sandbox's export double ----------------------------------------------------------------

def test_export_double_knobs_name_what_is_wrong():
    from sandbox.convex_export import SnapshotExports, tables_of

    exports = SnapshotExports("key")
    assert exports.configure({"build_s": 1, "fail_next": True}) == {"build_s": 1.0, "fail_next": True,
                                                                   "corrupt_next": False}
    with pytest.raises(ValueError, match="unknown knob\\(s\\): speed"):
        exports.configure({"speed": 2})
    with pytest.raises(ValueError, match="build_s takes 0 to 600"):
        exports.configure({"build_s": -1})
    with pytest.raises(ValueError, match="corrupt_next takes true or false"):
        exports.configure({"corrupt_next": "yes"})
    exports.reset()
    assert exports.configure({}) == {"build_s": 0.3, "fail_next": False, "corrupt_next": False}

    class Double:
        trades = [{"user": "u1", "amount_usd": 12.5, "at": 1.0}]
        logins: list[dict] = []
        failed_logins = [{"source": "10.0.0.1", "at": 2.0}]

    tables = tables_of(Double())
    assert len(tables["trades"]) == len(sample_tables()["trades"]) + 1
    assert tables["failedLogins"] == [{"source": "10.0.0.1", "at": 2.0}] and tables["logins"] == []
