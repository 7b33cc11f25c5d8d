"""S3 (or an S3-compatible store such as moto's server) for backups, through boto3.

A thin layer: it builds a boto3 client with deadlines (connect and read timeouts on every request,
a bounded number of attempts) and answers in the project's terms, raising `StorageError` with the
bucket and key in the message (never a credential). boto3 is synchronous: callers on an event
loop run these methods in a thread.

Uploads go through boto3's managed transfer from a *file name*: s3transfer then reads each part
lazily from disk as it sends it, so memory holds at most `max_concurrency` parts in flight, not
the file. (Given a file object instead, it buffers whole parts itself.)
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

VersioningStatus = Literal["Enabled", "Suspended", "Disabled"]
Progress = Callable[[int], None]  # bytes moved since the last call, as boto3 reports them

READ_CHUNK = 1024 * 1024
MiB = 1024 * 1024


class StorageError(Exception):
    """A storage operation that did not happen; the message names the bucket/key and the reason."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    last_modified: datetime
    version_id: str | None = None
    etag: str = ""


@dataclass(frozen=True)
class ObjectVersion:
    key: str
    version_id: str
    is_latest: bool
    last_modified: datetime
    delete_marker: bool = False


@dataclass(frozen=True)
class Uploaded:
    key: str
    size: int
    sha256: str  # hex, computed here from the bytes sent: S3's own multipart checksum is per part
    version_id: str | None
    s3_checksum: str | None  # what S3 reported (base64; "...-N" for a multipart upload)
    sse: str | None


def describe(exc: BaseException) -> str:
    """An exception from boto3/botocore as a short reason fit for a report (no request signatures)."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = err.get("Code", "error")
        message = str(err.get("Message") or "").strip()
        return f"{code} (HTTP {status})" + (f": {message[:200]}" if message and message != code else "")
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, EndpointConnectionError):
        return "cannot connect to the storage endpoint"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def make_boto3_client(
    *,
    region: str,
    endpoint_url: str | None,
    access_key_id: SecretStr | None,
    secret_access_key: SecretStr | None,
    timeout_s: float,
    max_attempts: int = 3,
    max_pool_connections: int = 10,
) -> Any:
    """A boto3 S3 client whose every request has a deadline. Without keys, boto3's own chain
    (instance role, environment) supplies credentials."""
    import boto3
    from botocore.config import Config

    if (access_key_id is None) != (secret_access_key is None):
        raise StorageError("storage: access_key_id and secret_access_key go together (one is missing)")
    config = Config(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        # moto's server and most S3-compatible stores do not resolve bucket subdomains of 127.0.0.1
        s3={"addressing_style": "path"} if endpoint_url else {},
        max_pool_connections=max_pool_connections,
    )
    kwargs: dict[str, Any] = {"region_name": region, "config": config}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if access_key_id is not None and secret_access_key is not None:
        kwargs["aws_access_key_id"] = access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = secret_access_key.get_secret_value()
    return boto3.session.Session().client("s3", **kwargs)


class _Counter:
    """boto3 calls progress callbacks from its worker threads, one per chunk read."""

    def __init__(self, sink: Progress | None) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self.total = 0

    def __call__(self, n: int) -> None:
        with self._lock:
            self.total += n
        if self._sink is not None:
            self._sink(n)


def file_sha256(path: Path, chunk: int = READ_CHUNK) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class S3Store:
    """One bucket. `client` is a boto3 S3 client (injected, or built by `make_boto3_client`)."""

    def __init__(self, client: Any, bucket: str, *, part_size: int = 64 * MiB, max_concurrency: int = 4) -> None:
        if part_size < 5 * MiB:
            raise StorageError(f"part size {part_size} bytes: S3 takes parts of at least 5 MiB")
        self.client = client
        self.bucket = bucket
        self.part_size = part_size
        self.max_concurrency = max_concurrency

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # ---- bucket ---------------------------------------------------------------------------------

    def versioning(self) -> VersioningStatus:
        """'Enabled', 'Suspended', or 'Disabled' (never enabled: S3 answers no Status at all)."""
        try:
            answer = self.client.get_bucket_versioning(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001 - every boto3 failure becomes a named StorageError
            raise StorageError(f"s3://{self.bucket}: versioning status not read: {describe(exc)}") from None
        status = answer.get("Status")
        return status if status in ("Enabled", "Suspended") else "Disabled"

    # ---- writing --------------------------------------------------------------------------------

    def _extra_args(self, sse: str | None, kms_key_id: str | None, metadata: dict[str, str]) -> dict[str, Any]:
        extra: dict[str, Any] = {"ChecksumAlgorithm": "SHA256", "Metadata": metadata}
        if sse:
            extra["ServerSideEncryption"] = sse
            if sse == "aws:kms" and kms_key_id:
                extra["SSEKMSKeyId"] = kms_key_id
        return extra

    def upload_file(
        self,
        path: Path,
        key: str,
        *,
        sha256: str | None = None,
        sse: str | None = "AES256",
        kms_key_id: str | None = None,
        metadata: dict[str, str] | None = None,
        progress: Progress | None = None,
    ) -> Uploaded:
        """Upload one file, multipart above the part size, streamed from disk.

        Each part carries a SHA-256 checksum S3 checks on arrival. The whole file's SHA-256 is
        computed before the upload (or passed in) because it goes into the object's metadata,
        which S3 takes only when the upload starts; some S3-compatible stores (moto among them)
        do not check part checksums, so the manifest records this one.
        """
        from boto3.s3.transfer import TransferConfig

        try:
            size = path.stat().st_size
            digest = sha256 or file_sha256(path)
        except OSError as exc:
            raise StorageError(f"{path}: cannot read the file to upload: {exc.strerror or exc}") from None
        config = TransferConfig(
            multipart_threshold=self.part_size, multipart_chunksize=self.part_size,
            max_concurrency=self.max_concurrency, use_threads=True,
        )
        counter = _Counter(progress)
        extra = self._extra_args(sse, kms_key_id, {"sha256": digest, **(metadata or {})})
        try:
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=config, Callback=counter)
            head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"{self.url(key)}: upload failed: {describe(exc)}") from None
        if head.get("ContentLength") != size:
            raise StorageError(f"{self.url(key)}: stored {head.get('ContentLength')} bytes, sent {size}")
        return Uploaded(key, size, digest, head.get("VersionId"), head.get("ChecksumSHA256"),
                        head.get("ServerSideEncryption"))

    def put_bytes(
        self, key: str, data: bytes, *, sse: str | None = "AES256", kms_key_id: str | None = None,
        content_type: str = "application/octet-stream", metadata: dict[str, str] | None = None,
    ) -> Uploaded:
        """A small object in one request (the manifest)."""
        import base64

        digest = hashlib.sha256(data)
        extra = self._extra_args(sse, kms_key_id, {"sha256": digest.hexdigest(), **(metadata or {})})
        extra["ChecksumSHA256"] = base64.b64encode(digest.digest()).decode()
        extra.pop("ChecksumAlgorithm")
        try:
            answer = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **extra)
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"{self.url(key)}: upload failed: {describe(exc)}") from None
        return Uploaded(key, len(data), digest.hexdigest(), answer.get("VersionId"), answer.get("ChecksumSHA256"),
                        answer.get("ServerSideEncryption"))

    # ---- reading --------------------------------------------------------------------------------

    def head(self, key: str, version_id: str | None = None) -> dict[str, Any] | None:
        """The object's metadata, or None when it does not exist."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            args["VersionId"] = version_id
        try:
            return dict(self.client.head_object(**args))
        except Exception as exc:  # noqa: BLE001
            status = _status(exc)
            # S3 answers an unknown version id with 400 on some stores, 404 on others
            if status == 404 or (status == 400 and version_id):
                return None
            raise StorageError(f"{self.url(key)}: not read: {describe(exc)}") from None

    def get_bytes(self, key: str, max_bytes: int, version_id: str | None = None) -> bytes:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            args["VersionId"] = version_id
        try:
            answer = self.client.get_object(**args)
            size = int(answer.get("ContentLength") or 0)
            if size > max_bytes:
                answer["Body"].close()
                raise StorageError(f"{self.url(key)}: {size} bytes, more than the {max_bytes} expected")
            return bytes(answer["Body"].read())
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"{self.url(key)}: not read: {describe(exc)}") from None

    def stream(self, key: str, version_id: str | None = None, chunk: int = READ_CHUNK) -> Iterator[bytes]:
        """The object's bytes, a chunk at a time (each read bounded by the read timeout)."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            args["VersionId"] = version_id
        try:
            body = self.client.get_object(**args)["Body"]
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"{self.url(key)}: not read: {describe(exc)}") from None
        try:
            while True:
                try:
                    block = body.read(chunk)
                except Exception as exc:  # noqa: BLE001
                    raise StorageError(f"{self.url(key)}: read failed: {describe(exc)}") from None
                if not block:
                    return
                yield block
        finally:
            body.close()

    def download_file(self, key: str, dest: Path, version_id: str | None = None,
                      progress: Progress | None = None) -> int:
        """Download to a file, in ranged parts on threads (flat memory); returns the size."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=self.part_size, multipart_chunksize=self.part_size,
                                max_concurrency=self.max_concurrency, use_threads=True)
        extra = {"VersionId": version_id} if version_id else None
        try:
            self.client.download_file(self.bucket, key, str(dest), ExtraArgs=extra, Config=config,
                                      Callback=_Counter(progress))
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"{self.url(key)}: download failed: {describe(exc)}") from None
        return dest.stat().st_size

    def list_objects(self, prefix: str) -> list[StoredObject]:
        out: list[StoredObject] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for o in page.get("Contents", []):
                    out.append(StoredObject(o["Key"], int(o["Size"]), o["LastModified"], None, o.get("ETag", "")))
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"s3://{self.bucket}/{prefix}: not listed: {describe(exc)}") from None
        return out

    def list_folders(self, prefix: str) -> list[str]:
        """The immediate 'folders' under prefix (which should end with '/'), as full prefixes."""
        out: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                out.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"s3://{self.bucket}/{prefix}: not listed: {describe(exc)}") from None
        return out

    def list_versions(self, prefix: str) -> list[ObjectVersion]:
        """Every version and delete marker under prefix (on an unversioned bucket: version 'null')."""
        out: list[ObjectVersion] = []
        try:
            for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix):
                for v in page.get("Versions", []):
                    out.append(ObjectVersion(v["Key"], v["VersionId"], v["IsLatest"], v["LastModified"]))
                for m in page.get("DeleteMarkers", []):
                    out.append(ObjectVersion(m["Key"], m["VersionId"], m["IsLatest"], m["LastModified"], True))
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"s3://{self.bucket}/{prefix}: versions not listed: {describe(exc)}") from None
        return out

    # ---- deleting -------------------------------------------------------------------------------

    def delete_versions(self, versions: list[ObjectVersion]) -> int:
        """Delete these versions for good (1000 per request, S3's limit). Returns how many went."""
        deleted = 0
        for i in range(0, len(versions), 1000):
            batch = [{"Key": v.key, "VersionId": v.version_id} for v in versions[i: i + 1000]]
            try:
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": False})
            except Exception as exc:  # noqa: BLE001
                raise StorageError(f"s3://{self.bucket}: delete failed: {describe(exc)}") from None
            errors = answer.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageError(f"{self.url(first.get('Key', '?'))}: not deleted: {first.get('Code')} "
                                   f"{first.get('Message', '')}".strip())
            deleted += len(answer.get("Deleted", []))
        return deleted

    def delete_key(self, key: str) -> None:
        """Delete the current version (on a versioned bucket: add a delete marker)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"{self.url(key)}: not deleted: {describe(exc)}") from None


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None
