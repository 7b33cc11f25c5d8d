"""Monthly Maintenance 1, "Full System Backup", and its check, "Backup Verification".

A backup is one folder `s3://<bucket>/<prefix>/<backup id>/` (the id is the UTC start time,
`YYYYMMDDTHHMMSSZ`) holding:

- `convex/snapshot_<ns>.zip`: the Convex snapshot export (runbook: "Export Convex data"), as
  `npx convex export` downloads it (runbook.clients.convex_export);
- `config/environment.tar.gz.enc`: the environment configuration (runbook: "Backup environment
  configs"): the environment file and the value of every secret it references (`secrets.json`,
  keyed by reference), as a tar.gz encrypted here before it leaves the machine (format below);
- `artifacts/<folder>.tar.gz`: the configured deployment artifacts folder (runbook: "Archive
  deployment artifacts"), when one is configured;
- `manifest.json`, written LAST: what the backup holds, so a folder without one is an incomplete
  backup by definition (the upload did not finish) and is never taken for a good one.

Every object is uploaded multipart from disk with a SHA-256 checksum per part and server-side
encryption requested (`sse`); the whole object's SHA-256 is computed here as well and recorded in
the manifest and the object's metadata, because S3 keeps only a checksum of the part checksums
for a multipart upload, and some S3-compatible stores do not check checksums at all.

Manifest (JSON, `version` 1):
    {"format": "tokenforge-ops-backup", "version": 1, "backup_id": "20250101T030000Z",
     "environment": "production", "started_at": ISO-8601, "created_at": ISO-8601 (manifest written),
     "export": {"source": "<deployment url or path>", "snapshot_ts": ns | null,
                "snapshot_at": ISO-8601 | null, "tables": {"<table>": <documents at export>, ...}},
     "objects": [{"name": "convex/snapshot_1.zip", "key": "<full S3 key>", "kind":
                  "convex-export" | "environment-config" | "deployment-artifacts",
                  "size": bytes, "sha256": hex, "source": "<where it came from>",
                  "source_mtime": ISO-8601 | null, "version_id": str | null, "encrypted": bool,
                  "sse": "AES256" | "aws:kms" | null}, ...]}

Encrypted object format (`scrypt-aes256gcm-v1`), for the environment configuration:
    bytes 0-7    b"TFOPSENC"          magic
    byte  8      1                    format version
    bytes 9-11   log2(N), r, p        scrypt cost parameters (N = 2**15, r = 8, p = 1 by default)
    bytes 12-27  salt                 16 random bytes
    bytes 28-39  nonce                12 random bytes
    bytes 40-    AES-256-GCM ciphertext followed by its 16-byte tag; the key is scrypt(passphrase,
                 salt, N, r, p) -> 32 bytes; bytes 0-39 are the associated data, so a changed
                 header fails authentication like changed ciphertext.
To decrypt by hand: `decrypt(blob, passphrase)` below, or any scrypt + AES-GCM implementation.

Backup Verification takes the newest complete backup, checks each object's size and SHA-256
against the manifest (streamed, never whole in memory), opens the export and counts the documents
of each table (`<table>/documents.jsonl` lines; `_tables/documents.jsonl` lists the tables), and
reports the backup's age as the current RPO against the runbook's 15 minutes ("RPO: 15 minutes
max"). Retention deletes backups older than `retention_days`, never the newest complete one.

No Prefect here: progress is a plain callable `progress(done_bytes, total_bytes)`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from runbook.checks import CheckResult, Status, worst
from runbook.clients import convex_export
from runbook.clients.s3 import MiB, S3Store, StorageError, file_sha256
from runbook.config_types import HttpUrl, SecretRef, Severity, Strict
from runbook.secrets import SecretError

ITEM_BACKUP = "Full System Backup"
ITEM_VERIFY = "Backup Verification"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "tokenforge-ops-backup"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 16 * MiB
MAX_CONFIG_BYTES = 64 * MiB
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z$")
ID_FORMAT = "%Y%m%dT%H%M%SZ"

Progress = Callable[[int, int], None]


# ---- configuration ------------------------------------------------------------------------------

class Backup(Strict):
    """The `[backup]` section. Storage (bucket, region, endpoint, keys) is the `[storage]` section."""

    prefix: str = Field(default="backups", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,200}$",
                        description="folder in the bucket under which each backup gets its own folder")
    convex_url: HttpUrl = Field(description="the Convex deployment whose data is exported")
    convex_deploy_key: SecretRef = Field(description="deploy (admin) key: exports need admin access")
    include_file_storage: bool = Field(default=False, description="export file storage too (--include-file-storage)")
    include_env_file: bool = Field(default=True, description="put the environment file itself in the config backup")
    artifacts_dir: str | None = Field(
        default=None, description="deployment artifacts folder to archive, relative to the environment file's folder")
    encryption_passphrase: SecretRef = Field(
        description="encrypts the environment configuration and secrets before upload (scrypt + AES-256-GCM)")
    sse: Literal["AES256", "aws:kms"] = Field(default="AES256", description="S3 server-side encryption asked for")
    kms_key_id: str | None = Field(default=None, description="KMS key for sse = 'aws:kms' (default: the AWS key)")
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 90
    max_rpo_minutes: Annotated[float, Field(gt=0, le=525_600)] = Field(
        default=15, description="the runbook's RPO: the newest backup's data may be at most this old")
    rpo_status: Literal["warn", "fail"] = "fail"
    part_size_mb: Annotated[int, Field(ge=5, le=5120)] = Field(default=64, description="multipart part size (MiB)")
    max_concurrency: Annotated[int, Field(ge=1, le=16)] = 4
    timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(default=30, description="deadline of each request")
    export_deadline_s: Annotated[float, Field(gt=0, le=6 * 3600)] = Field(
        default=1800, description="request + wait + download of the Convex export, in all")
    export_poll_s: Annotated[float, Field(gt=0, le=60)] = 2
    severity: Severity = Field(default=Severity.P1, description="a failed or unverifiable backup puts data at risk")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value.endswith("/") or "//" in value or any(part in (".", "..") for part in value.split("/")):
            raise ValueError("a folder path without '.', '..', empty parts or a trailing '/'")
        return value

    @field_validator("artifacts_dir")
    @classmethod
    def _artifacts(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("an empty path; leave artifacts_dir out to archive no artifacts")
        return value

    @model_validator(mode="after")
    def _kms(self) -> Backup:
        if self.kms_key_id is not None and self.sse != "aws:kms":
            raise ValueError("kms_key_id: only with sse = 'aws:kms'")
        return self

    def secret_refs(self) -> list[SecretRef]:
        return [self.convex_deploy_key, self.encryption_passphrase]

    @property
    def part_size(self) -> int:
        return self.part_size_mb * MiB


# ---- encryption ---------------------------------------------------------------------------------

MAGIC = b"TFOPSENC"
ENC_VERSION = 1
HEADER_LEN = 40
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 15, 8, 1


class DecryptionError(Exception):
    pass


def _key(passphrase: SecretStr, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    secret = passphrase.get_secret_value().encode("utf-8")
    if not secret:
        raise ValueError("the encryption passphrase is empty")
    return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(secret)


def encrypt(data: bytes, passphrase: SecretStr) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    salt, nonce = os.urandom(16), os.urandom(12)
    header = MAGIC + bytes([ENC_VERSION, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P]) + salt + nonce
    key = _key(passphrase, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    return header + AESGCM(key).encrypt(nonce, data, header)


def decrypt(blob: bytes, passphrase: SecretStr) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(blob) < HEADER_LEN + 16 or not blob.startswith(MAGIC):
        raise DecryptionError("not a tokenforge-ops encrypted object (no TFOPSENC header)")
    if blob[8] != ENC_VERSION:
        raise DecryptionError(f"encrypted with format version {blob[8]}, this code reads version {ENC_VERSION}")
    log2_n, r, p = blob[9], blob[10], blob[11]
    if not (10 <= log2_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16):
        raise DecryptionError("the header's scrypt parameters are out of range (damaged header)")
    header, salt, nonce = blob[:HEADER_LEN], blob[12:28], blob[28:40]
    try:
        return AESGCM(_key(passphrase, salt, log2_n, r, p)).decrypt(nonce, blob[HEADER_LEN:], header)
    except InvalidTag:
        raise DecryptionError("wrong passphrase, or the encrypted object was changed") from None


# ---- the export zip -----------------------------------------------------------------------------

class ExportError(Exception):
    """The export zip cannot be read as a Convex snapshot export; the message names the entry."""


def _count_lines(stream: io.BufferedIOBase | Any) -> int:
    lines, last = 0, b"\n"
    while block := stream.read(MiB):
        lines += block.count(b"\n")
        last = block[-1:]
    return lines + (0 if last == b"\n" else 1)


def count_tables(zip_path: Path) -> dict[str, int]:
    """Documents per table, for every table `_tables/documents.jsonl` lists; streamed per entry."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = set(zf.namelist())
            if "_tables/documents.jsonl" not in names:
                raise ExportError(f"{zip_path.name}: no _tables/documents.jsonl (not a Convex snapshot export)")
            tables: list[str] = []
            with zf.open("_tables/documents.jsonl") as f:
                for n, raw in enumerate(io.TextIOWrapper(f, encoding="utf-8"), 1):
                    if not raw.strip():
                        continue
                    try:
                        name = json.loads(raw)["name"]
                    except (ValueError, KeyError, TypeError):
                        raise ExportError(f"{zip_path.name}: _tables/documents.jsonl line {n} has no table name") \
                            from None
                    if not isinstance(name, str) or not name or "/" in name:
                        raise ExportError(f"{zip_path.name}: _tables/documents.jsonl line {n}: bad table name")
                    tables.append(name)
            counts: dict[str, int] = {}
            for table in tables:
                entry = f"{table}/documents.jsonl"
                if entry not in names:
                    raise ExportError(f"{zip_path.name}: table {table!r} is listed but {entry} is missing")
                with zf.open(entry) as f:
                    counts[table] = _count_lines(f)
            return counts
    except zipfile.BadZipFile as exc:
        raise ExportError(f"{zip_path.name}: not a readable zip ({exc})") from None
    except (OSError, UnicodeDecodeError, zipfile.LargeZipFile) as exc:
        raise ExportError(f"{zip_path.name}: cannot be read ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class Snapshot:
    """An export on local disk, as an export source leaves it."""

    path: Path
    source: str
    snapshot_ts: int | None = None  # ns

    @property
    def snapshot_at(self) -> datetime | None:
        return None if self.snapshot_ts is None else convex_export.ns_to_datetime(self.snapshot_ts)


ExportSource = Callable[[Path], Snapshot]  # given a scratch folder, returns the export it left there


def convex_source(cfg: Backup, deploy_key: SecretStr, transport: Any = None) -> ExportSource:
    """The deployment's own snapshot export, requested and downloaded as the CLI does."""

    def export(scratch: Path) -> Snapshot:
        exporter = convex_export.ConvexExporter(
            cfg.convex_url, deploy_key, timeout_s=cfg.timeout_s, deadline_s=cfg.export_deadline_s,
            poll_interval_s=cfg.export_poll_s, include_storage=cfg.include_file_storage, transport=transport,
        )
        got = exporter.export(scratch)
        return Snapshot(got.path, cfg.convex_url, got.start_ts)

    return export


def local_source(path: Path, snapshot_ts: int | None = None) -> ExportSource:
    """A zip already on disk (a `npx convex export` taken by hand, or a drill's); its snapshot time
    comes from the CLI's file name `snapshot_<ns>.zip` unless given."""

    def export(scratch: Path) -> Snapshot:
        if not path.is_file():
            raise convex_export.ExportFailed(f"{path}: no such export file")
        ts = snapshot_ts if snapshot_ts is not None else convex_export.snapshot_ts_from_name(path.name)
        return Snapshot(path, str(path), ts)

    return export


# ---- manifest -----------------------------------------------------------------------------------

class ManifestError(Exception):
    pass


@dataclass(frozen=True)
class ManifestObject:
    name: str  # path inside the backup folder
    key: str
    kind: str
    size: int
    sha256: str
    source: str
    source_mtime: str | None
    version_id: str | None = None
    encrypted: bool = False
    sse: str | None = None


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    environment: str
    started_at: str
    created_at: str
    export_source: str
    snapshot_ts: int | None
    tables: dict[str, int]
    objects: list[ManifestObject]

    @property
    def snapshot_at(self) -> datetime | None:
        return None if self.snapshot_ts is None else convex_export.ns_to_datetime(self.snapshot_ts)

    def to_dict(self) -> dict[str, Any]:
        snapshot_at = self.snapshot_at
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "backup_id": self.backup_id,
            "environment": self.environment,
            "started_at": self.started_at,
            "created_at": self.created_at,
            "export": {
                "source": self.export_source,
                "snapshot_ts": self.snapshot_ts,
                "snapshot_at": snapshot_at.isoformat() if snapshot_at else None,
                "tables": dict(self.tables),
            },
            "objects": [asdict(o) for o in self.objects],
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, where: str = "manifest") -> Manifest:
        def need(d: Any, name: str, kind: type | tuple[type, ...], path: str) -> Any:
            if not isinstance(d, dict) or name not in d:
                raise ManifestError(f"{where}: {path}{name} is missing")
            value = d[name]
            if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
                raise ManifestError(f"{where}: {path}{name} is {type(value).__name__}, not the expected type")
            return value

        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{where}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: not a JSON object")
        if data.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{where}: format is {data.get('format')!r}, not {MANIFEST_FORMAT!r}")
        if data.get("version") != MANIFEST_VERSION:
            raise ManifestError(f"{where}: version {data.get('version')!r}; this code reads version {MANIFEST_VERSION}")
        export = need(data, "export", dict, "")
        tables = need(export, "tables", dict, "export.")
        for table, count in tables.items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ManifestError(f"{where}: export.tables.{table} is not a document count")
        snapshot_ts = export.get("snapshot_ts")
        if snapshot_ts is not None and (not isinstance(snapshot_ts, int) or isinstance(snapshot_ts, bool)):
            raise ManifestError(f"{where}: export.snapshot_ts is not an integer (ns)")
        objects = []
        for i, o in enumerate(need(data, "objects", list, "")):
            p = f"objects[{i}]."
            sha = need(o, "sha256", str, p)
            if not re.fullmatch(r"[0-9a-f]{64}", sha):
                raise ManifestError(f"{where}: {p}sha256 is not 64 hex digits")
            size = need(o, "size", int, p)
            if size < 0:
                raise ManifestError(f"{where}: {p}size is negative")
            objects.append(ManifestObject(
                name=need(o, "name", str, p), key=need(o, "key", str, p), kind=need(o, "kind", str, p),
                size=size, sha256=sha, source=need(o, "source", str, p), source_mtime=o.get("source_mtime"),
                version_id=o.get("version_id"), encrypted=bool(o.get("encrypted", False)), sse=o.get("sse"),
            ))
        return cls(
            backup_id=need(data, "backup_id", str, ""), environment=need(data, "environment", str, ""),
            started_at=need(data, "started_at", str, ""), created_at=need(data, "created_at", str, ""),
            export_source=need(export, "source", str, "export."), snapshot_ts=snapshot_ts,
            tables=dict(tables), objects=objects,
        )


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


# ---- helpers ------------------------------------------------------------------------------------

def backup_id_of(when: datetime) -> str:
    return when.astimezone(UTC).strftime(ID_FORMAT)


def time_of(backup_id: str) -> datetime:
    return datetime.strptime(backup_id, ID_FORMAT).replace(tzinfo=UTC)


def folder(cfg: Backup, backup_id: str) -> str:
    return f"{cfg.prefix}/{backup_id}/"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


def _age(delta: timedelta) -> str:
    s = max(delta.total_seconds(), 0)
    if s < 3600:
        return f"{s / 60:.1f} min"
    if s < 86400 * 2:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


class _ProgressTotal:
    """Adds up boto3's per-chunk reports across objects and threads; tells the caller about every
    half percent (and the end), so a multi-GB upload does not make tens of thousands of calls."""

    def __init__(self, total: int, sink: Progress | None) -> None:
        self.total = total
        self.done = 0
        self._sink = sink
        self._step = max(total // 200, 1)
        self._told = -1
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self._lock:
            self.done += n
            done = self.done
            tell = self._sink is not None and (done - self._told >= self._step or done >= self.total)
            if tell:
                self._told = done
        if tell and self._sink is not None:
            self._sink(min(done, self.total), self.total)


def versioning_result(store: S3Store, item: str, severity: str) -> CheckResult:
    target = f"s3://{store.bucket}"
    try:
        status = store.versioning()
    except StorageError as exc:
        return CheckResult("bucket-versioning", item, Status.unknown, f"unknown ({exc})", "versioning Enabled",
                           detail=str(exc), severity=severity, target=f"{target} versioning")
    if status == "Enabled":
        return CheckResult("bucket-versioning", item, Status.ok, "Enabled", "versioning Enabled",
                           severity=severity, target=f"{target} versioning")
    why = (f"versioning is {status} on {target}: an overwrite or a delete would lose backup data "
           "for good; enable it (aws s3api put-bucket-versioning)")
    return CheckResult("bucket-versioning", item, Status.warn, status, "versioning Enabled", detail=why,
                       severity=severity, target=f"{target} versioning")


# ---- taking a backup ----------------------------------------------------------------------------

@dataclass
class BackupReport:
    backup_id: str
    location: str
    results: list[CheckResult] = field(default_factory=list)
    objects: list[ManifestObject] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    manifest_key: str | None = None
    bytes_uploaded: int = 0
    upload_s: float = 0.0
    retention: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.manifest_key is not None

    @property
    def status(self) -> Status:
        return worst(r.status for r in self.results) if self.results else Status.unknown

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "location": self.location,
            "complete": self.complete,
            "manifest": self.manifest_key,
            "bytes_uploaded": self.bytes_uploaded,
            "upload_s": round(self.upload_s, 3),
            "tables": dict(self.tables),
            "objects": [asdict(o) for o in self.objects],
            "checks": [r.to_dict() for r in self.results],
            "retention_deleted": list(self.retention),
        }


def config_bundle(
    env_file: Path | None, secret_refs: Sequence[SecretRef], resolve: Callable[[SecretRef], SecretStr],
) -> tuple[bytes, list[str]]:
    """A tar.gz of the environment file and `secrets.json` (every referenced secret's value, keyed by
    reference). Returns it and the references that could not be read (named, never valued)."""
    values: dict[str, str] = {}
    missing: dict[str, str] = {}
    for ref in secret_refs:
        name = ref.describe()
        if name in values or name in missing:
            continue
        try:
            values[name] = resolve(ref).get_secret_value()
        except SecretError as exc:
            missing[name] = str(exc)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if env_file is not None:
            tar.add(env_file, arcname=f"environment/{env_file.name}", recursive=False)
        blob = json.dumps({"secrets": values, "missing": missing}, indent=2).encode("utf-8")
        info = tarfile.TarInfo("environment/secrets.json")
        info.size, info.mtime, info.mode = len(blob), int(time.time()), 0o600
        tar.addfile(info, io.BytesIO(blob))
    data = buffer.getvalue()
    values.clear()
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"the environment configuration is {_size(len(data))}, over the {_size(MAX_CONFIG_BYTES)} cap")
    return data, sorted(missing)


def archive_folder(source: Path, dest: Path) -> float | None:
    """tar.gz `source` into `dest` (streamed to disk); returns the newest file's mtime. Symlinks are
    stored as links, never followed out of the folder."""
    newest: float | None = None
    with tarfile.open(dest, mode="w:gz", compresslevel=6) as tar:
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                st = path.lstat()
                newest = st.st_mtime if newest is None else max(newest, st.st_mtime)
                tar.add(path, arcname=str(Path(source.name) / path.relative_to(source)), recursive=False)
    return newest


def run_backup(
    cfg: Backup,
    store: S3Store,
    export_source: ExportSource,
    env_file: Path | None,
    now: datetime,
    progress: Progress | None = None,
    *,
    environment: str,
    passphrase: SecretStr,
    secret_refs: Sequence[SecretRef] = (),
    resolve: Callable[[SecretRef], SecretStr] | None = None,
    scratch_dir: Path | None = None,
) -> BackupReport:
    """Export, package, upload, and write the manifest last. Stops at the first failure, leaving no
    manifest, so the partial folder reads as incomplete. Blocking (boto3): run it in a thread."""
    backup_id = backup_id_of(now)
    base = folder(cfg, backup_id)
    report = BackupReport(backup_id, store.url(base))
    sev = cfg.severity.value

    def add(name: str, status: Status, observed: str, expected: str, detail: str = "", target: str = "") -> None:
        report.results.append(CheckResult(name, ITEM_BACKUP, status, observed, expected, detail=detail,
                                          severity=sev, target=target or name))

    report.results.append(versioning_result(store, ITEM_BACKUP, sev))
    try:
        if store.head(base + MANIFEST) is not None:
            add("backup", Status.fail, f"{report.location} already has a manifest", "a new backup folder",
                detail="a backup with this id is complete already; not overwritten", target=report.location)
            return report
    except StorageError as exc:
        add("backup", Status.fail, f"storage not usable: {exc}", "bucket readable and writable", str(exc),
            target=report.location)
        return report

    with tempfile.TemporaryDirectory(prefix="tfops-backup-", dir=scratch_dir) as tmp:
        scratch = Path(tmp)
        files: list[tuple[Path, str, str, str, str | None, bool]] = []  # path, name, kind, source, mtime, encrypted

        # 1. Convex data
        export_dir = scratch / "export"
        export_dir.mkdir()
        started = time.monotonic()
        try:
            snap = export_source(export_dir)
            report.tables = count_tables(snap.path)
        except (convex_export.ExportFailed, ExportError, OSError) as exc:
            add("convex-export", Status.fail, f"no export: {exc}", "a snapshot export of the deployment",
                detail=str(exc), target=f"Convex export ({cfg.convex_url})")
            return report
        documents = sum(report.tables.values())
        when = snap.snapshot_at.isoformat() if snap.snapshot_at else "snapshot time unknown"
        add("convex-export", Status.ok,
            f"{_size(snap.path.stat().st_size)}, {len(report.tables)} tables, {documents:,} documents, "
            f"snapshot {when}, {time.monotonic() - started:.1f} s", "a snapshot export of the deployment",
            target=f"Convex export ({snap.source})")
        files.append((snap.path, f"convex/{snap.path.name}", "convex-export", snap.source,
                      snap.snapshot_at.isoformat() if snap.snapshot_at else _iso(snap.path.stat().st_mtime), False))

        # 2. environment configuration, encrypted here
        try:
            bundle, missing = config_bundle(env_file if cfg.include_env_file else None, secret_refs,
                                            resolve or _no_resolver)
            sealed = encrypt(bundle, passphrase)
        except (OSError, ValueError) as exc:
            add("environment-config", Status.fail, f"not packaged: {exc}", "environment file and secrets, encrypted",
                detail=str(exc), target="environment configuration")
            return report
        config_path = scratch / "environment.tar.gz.enc"
        config_path.write_bytes(sealed)
        del bundle
        shown = f"{env_file.name} + " if env_file is not None and cfg.include_env_file else ""
        read = len({r.describe() for r in secret_refs}) - len(missing)
        observed = f"{shown}{read} secrets, encrypted ({_size(len(sealed))})"
        if missing:
            add("environment-config", Status.warn, observed + f"; not readable: {', '.join(missing)}",
                "every referenced secret", detail=f"secrets not in the backup: {', '.join(missing)}",
                target="environment configuration")
        else:
            add("environment-config", Status.ok, observed, "environment file and secrets, encrypted",
                target="environment configuration")
        source = str(env_file) if env_file is not None else "resolved secrets"
        files.append((config_path, "config/environment.tar.gz.enc", "environment-config", source,
                      _iso(env_file.stat().st_mtime) if env_file is not None else None, True))

        # 3. deployment artifacts
        if cfg.artifacts_dir is not None:
            base_dir = env_file.parent if env_file is not None else Path.cwd()
            artifacts = Path(cfg.artifacts_dir)
            artifacts = artifacts if artifacts.is_absolute() else base_dir / artifacts
            if not artifacts.is_dir():
                add("deployment-artifacts", Status.fail, f"{artifacts}: not a folder",
                    "the artifacts folder (backup.artifacts_dir)",
                    detail=f"backup.artifacts_dir: {artifacts} not found", target="deployment artifacts")
                return report
            archive = scratch / f"{artifacts.resolve().name or 'artifacts'}.tar.gz"
            try:
                newest = archive_folder(artifacts, archive)
            except OSError as exc:
                add("deployment-artifacts", Status.fail, f"not archived: {exc}", "a tar.gz of the folder",
                    detail=str(exc), target="deployment artifacts")
                return report
            add("deployment-artifacts", Status.ok, f"{artifacts} archived ({_size(archive.stat().st_size)})",
                "a tar.gz of the folder", target="deployment artifacts")
            files.append((archive, f"artifacts/{archive.name}", "deployment-artifacts", str(artifacts),
                          _iso(newest), False))

        # 4. upload, each object whole before the next
        total = sum(p.stat().st_size for p, *_ in files)
        counter = _ProgressTotal(total, progress)
        upload_started = time.monotonic()
        for path, name, kind, src, mtime, encrypted in files:
            key = base + name
            t0 = time.monotonic()
            try:
                up = store.upload_file(path, key, sse=cfg.sse, kms_key_id=cfg.kms_key_id,
                                       metadata={"backup-id": backup_id, "kind": kind}, progress=counter)
            except StorageError as exc:
                add(f"upload:{name}", Status.fail, f"not uploaded: {exc}", "uploaded with checksums",
                    detail=str(exc), target=store.url(key))
                return report
            took = time.monotonic() - t0
            report.objects.append(ManifestObject(name, key, kind, up.size, up.sha256, src, mtime, up.version_id,
                                                 encrypted, up.sse))
            report.bytes_uploaded += up.size
            rate = up.size / MiB / took if took > 0 else 0.0
            sse_note = f", SSE {up.sse}" if up.sse else ", SSE not confirmed by the store"
            add(f"upload:{name}", Status.ok if up.sse or not cfg.sse else Status.warn,
                f"{_size(up.size)} in {took:.1f} s ({rate:,.1f} MiB/s), sha256 {up.sha256[:12]}...{sse_note}",
                "uploaded with checksums", target=store.url(key))
        report.upload_s = time.monotonic() - upload_started

        # 5. the manifest, last
        manifest = Manifest(backup_id, environment, now.astimezone(UTC).isoformat(), datetime.now(UTC).isoformat(),
                            snap.source, snap.snapshot_ts, report.tables, report.objects)
        try:
            store.put_bytes(base + MANIFEST, manifest.to_json(), sse=cfg.sse, kms_key_id=cfg.kms_key_id,
                            content_type="application/json", metadata={"backup-id": backup_id})
        except StorageError as exc:
            add("manifest", Status.fail, f"not written: {exc}", "manifest written last", detail=str(exc),
                target=store.url(base + MANIFEST))
            return report
        report.manifest_key = base + MANIFEST
        add("manifest", Status.ok, f"{len(report.objects)} objects, {_size(report.bytes_uploaded)}, written last",
            "manifest written last", target=store.url(base + MANIFEST))
    return report


def _no_resolver(ref: SecretRef) -> SecretStr:
    raise SecretError(f"secret {ref.describe()}: no resolver given")


# ---- listing backups ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupFolder:
    backup_id: str
    prefix: str
    complete: bool

    @property
    def taken_at(self) -> datetime:
        return time_of(self.backup_id)


def list_backups(cfg: Backup, store: S3Store) -> list[BackupFolder]:
    """Every backup folder under the prefix, oldest first, and whether its manifest is there.
    Folders whose name is not a backup id are not ours and are left alone."""
    out = []
    for prefix in store.list_folders(cfg.prefix + "/"):
        backup_id = prefix[len(cfg.prefix) + 1:].rstrip("/")
        if not BACKUP_ID.match(backup_id):
            continue
        out.append(BackupFolder(backup_id, prefix, store.head(prefix + MANIFEST) is not None))
    return sorted(out, key=lambda b: b.backup_id)


# ---- verification -------------------------------------------------------------------------------

def _hash_stream(store: S3Store, key: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    for block in store.stream(key):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def verify_backup(
    cfg: Backup,
    store: S3Store,
    now: datetime,
    *,
    passphrase: SecretStr | None = None,
    scratch_dir: Path | None = None,
) -> list[CheckResult]:
    """The newest complete backup against its manifest, its export's tables, and the RPO."""
    sev = cfg.severity.value
    results: list[CheckResult] = []
    where = store.url(cfg.prefix + "/")

    def add(name: str, status: Status, observed: str, expected: str, detail: str = "", target: str = "") -> None:
        results.append(CheckResult(name, ITEM_VERIFY, status, observed, expected, detail=detail, severity=sev,
                                   target=target or name))

    results.append(versioning_result(store, ITEM_VERIFY, sev))
    try:
        backups = list_backups(cfg, store)
    except StorageError as exc:
        add("backups", Status.unknown, f"unknown ({exc})", "a complete backup", detail=str(exc), target=where)
        return results
    if not backups:
        add("backups", Status.fail, f"no backup under {where}", "a complete backup", target=where)
        return results
    newest = backups[-1]
    complete = [b for b in backups if b.complete]
    if not newest.complete:
        add("newest-backup", Status.fail, f"{newest.backup_id} is incomplete: no {MANIFEST} (the backup did not "
            "finish)", "the newest backup complete",
            detail=f"{store.url(newest.prefix)} has no {MANIFEST}", target=store.url(newest.prefix))
    if not complete:
        add("backups", Status.fail, f"no complete backup under {where}", "a complete backup", target=where)
        return results
    chosen = complete[-1]
    manifest_key = chosen.prefix + MANIFEST
    try:
        manifest = Manifest.from_json(store.get_bytes(manifest_key, MAX_MANIFEST_BYTES), store.url(manifest_key))
    except (StorageError, ManifestError) as exc:
        add("manifest", Status.fail, f"unreadable: {exc}", "a readable manifest", detail=str(exc),
            target=store.url(manifest_key))
        return results
    add("manifest", Status.ok, f"backup {manifest.backup_id}: {len(manifest.objects)} objects, "
        f"{_size(sum(o.size for o in manifest.objects))}", "a readable manifest", target=store.url(manifest_key))

    with tempfile.TemporaryDirectory(prefix="tfops-verify-", dir=scratch_dir) as tmp:
        for obj in manifest.objects:
            results.extend(_verify_object(store, manifest, obj, Path(tmp), passphrase, sev))

    age_from = manifest.snapshot_at
    note = ""
    if age_from is None:
        age_from = datetime.fromisoformat(manifest.started_at)
        note = " (snapshot time unknown: from the backup's start)"
    age = now - age_from
    limit = timedelta(minutes=cfg.max_rpo_minutes)
    over = age > limit
    add("rpo", Status(cfg.rpo_status) if over else Status.ok,
        f"newest backup's data is {_age(age)} old{note} (snapshot {age_from.isoformat()})",
        f"<= {cfg.max_rpo_minutes:g} min (RPO)",
        detail=f"RPO exceeded: {_age(age)} since the last backed-up snapshot" if over else "",
        target=f"RPO (backup {manifest.backup_id})")
    return results


def _verify_object(
    store: S3Store, manifest: Manifest, obj: ManifestObject, scratch: Path, passphrase: SecretStr | None, sev: str,
) -> list[CheckResult]:
    out: list[CheckResult] = []
    target = store.url(obj.key)

    def add(name: str, status: Status, observed: str, expected: str, detail: str = "", tgt: str = "") -> None:
        out.append(CheckResult(name, ITEM_VERIFY, status, observed, expected, detail=detail, severity=sev,
                               target=tgt or target))

    expected = f"{obj.size} bytes, sha256 {obj.sha256[:12]}..."
    try:
        head = store.head(obj.key)
    except StorageError as exc:
        add(f"object:{obj.name}", Status.unknown, f"unknown ({exc})", expected, detail=str(exc))
        return out
    if head is None:
        add(f"object:{obj.name}", Status.fail, f"missing: {target}", expected,
            detail=f"{target} is in the manifest but not in the bucket")
        return out
    overwritten = ""
    if obj.version_id and head.get("VersionId") and head["VersionId"] != obj.version_id:
        overwritten = (f"; overwritten after the backup (current version {head['VersionId']}, the backup wrote "
                       f"{obj.version_id}, which " + ("is still stored" if store.head(obj.key, obj.version_id)
                                                      else "is gone") + ")")
    try:
        local: Path | None = None
        if obj.kind == "convex-export" or obj.encrypted:
            # These are opened after hashing, so they are fetched to disk once (ranged, flat memory).
            local = scratch / Path(obj.name).name
            store.download_file(obj.key, local)
            sha, size = file_sha256(local), local.stat().st_size
        else:
            sha, size = _hash_stream(store, obj.key)
    except (StorageError, OSError) as exc:
        add(f"object:{obj.name}", Status.unknown, f"unknown ({exc})", expected, detail=str(exc))
        return out
    if size != obj.size:
        add(f"object:{obj.name}", Status.fail, f"size mismatch: {target} is {size} bytes{overwritten}", expected,
            detail=f"{target}: {size} bytes, the manifest says {obj.size}{overwritten}")
    elif sha != obj.sha256:
        add(f"object:{obj.name}", Status.fail, f"checksum mismatch: {target} sha256 {sha[:12]}...{overwritten}",
            expected, detail=f"{target}: sha256 {sha}, the manifest says {obj.sha256}{overwritten}")
    else:
        add(f"object:{obj.name}", Status.ok, f"{_size(size)}, sha256 matches{overwritten}", expected)
    if local is not None and obj.kind == "convex-export":
        out.append(_verify_tables(manifest, local, target, sev))
    if local is not None and obj.encrypted:
        if passphrase is None:
            add(f"decrypt:{obj.name}", Status.unknown, "not tried: no passphrase", "decrypts with the passphrase")
        else:
            try:
                with tarfile.open(fileobj=io.BytesIO(decrypt(local.read_bytes(), passphrase)), mode="r:gz") as tar:
                    members = len(tar.getmembers())
                add(f"decrypt:{obj.name}", Status.ok, f"decrypts with the passphrase ({members} files)",
                    "decrypts with the passphrase")
            except (DecryptionError, tarfile.TarError, gzip.BadGzipFile, EOFError, ValueError) as exc:
                add(f"decrypt:{obj.name}", Status.fail, f"does not decrypt: {exc}", "decrypts with the passphrase",
                    detail=f"{target}: {exc}")
    return out


def _verify_tables(manifest: Manifest, local: Path, target: str, sev: str) -> CheckResult:
    expected = f"{len(manifest.tables)} tables, {sum(manifest.tables.values()):,} documents as at export"
    try:
        counts = count_tables(local)
    except ExportError as exc:
        return CheckResult("export-tables", ITEM_VERIFY, Status.fail, f"unreadable: {exc}", expected,
                           detail=f"{target}: {exc}", severity=sev, target=f"{target} tables")
    problems = []
    for table, at_export in sorted(manifest.tables.items()):
        now = counts.get(table)
        if now is None:
            problems.append(f"table {table} missing ({at_export:,} documents at export)")
        elif now == 0 and at_export > 0:
            problems.append(f"table {table} is empty ({at_export:,} documents at export)")
        elif now != at_export:
            problems.append(f"table {table} has {now:,} documents ({at_export:,} at export)")
    extra = sorted(set(counts) - set(manifest.tables))
    if extra:
        problems.append(f"tables not in the manifest: {', '.join(extra)}")
    if problems:
        return CheckResult("export-tables", ITEM_VERIFY, Status.fail, "; ".join(problems), expected,
                           detail="; ".join(problems), severity=sev, target=f"{target} tables")
    return CheckResult("export-tables", ITEM_VERIFY, Status.ok,
                       f"{len(counts)} tables, {sum(counts.values()):,} documents, as at export", expected,
                       severity=sev, target=f"{target} tables")


# ---- retention ----------------------------------------------------------------------------------

def apply_retention(cfg: Backup, store: S3Store, now: datetime) -> tuple[CheckResult, list[str]]:
    """Delete, for good (every version), the backups older than `retention_days`, never the newest
    complete one. Incomplete folders past retention go too. Returns the result and the ids deleted."""
    sev = cfg.severity.value
    target = f"retention ({cfg.retention_days} days)"
    try:
        backups = list_backups(cfg, store)
    except StorageError as exc:
        return CheckResult("retention", ITEM_BACKUP, Status.unknown, f"unknown ({exc})", "old backups deleted",
                           detail=str(exc), severity=sev, target=target), []
    cutoff = now - timedelta(days=cfg.retention_days)
    complete = [b for b in backups if b.complete]
    keep = complete[-1].backup_id if complete else None
    expired = [b for b in backups if b.taken_at < cutoff and b.backup_id != keep]
    deleted: list[str] = []
    try:
        for b in expired:
            store.delete_versions(store.list_versions(b.prefix))
            deleted.append(b.backup_id)
    except StorageError as exc:
        return CheckResult("retention", ITEM_BACKUP, Status.warn,
                           f"deleted {len(deleted)} of {len(expired)} expired backups; then: {exc}",
                           "old backups deleted", detail=str(exc), severity=sev, target=target), deleted
    kept = len(backups) - len(deleted)
    observed = (f"deleted {len(deleted)} backups older than {cfg.retention_days} days "
                f"({', '.join(deleted)}); {kept} kept" if deleted else f"nothing older than {cfg.retention_days} "
                f"days to delete; {kept} kept")
    if keep is not None and time_of(keep) < cutoff:
        observed += f"; {keep} kept past retention: it is the newest complete backup"
    return CheckResult("retention", ITEM_BACKUP, Status.ok, observed, "old backups deleted", severity=sev,
                       target=target), deleted
