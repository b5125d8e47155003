"""Objects in S3 (AWS, or any S3 API: SeaweedFS, MinIO, Ceph), for artifacts, datasets and checkpoints.

Keys are content addresses or ids the server made, never user input. A write is atomic: an object appears whole when
its PUT, or its multipart upload's completion, succeeds, and never half. Content-addressed writes are conditional
(If-None-Match: *), so a key, once written, never changes. Reads are ranged GETs into a temporary file, hashed as they
arrive and checked against the sha256 the writer recorded before the file is renamed into place: memory holds one
chunk, whatever the object's size.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from services.errors import KilnError, Unavailable

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_T = TypeVar("_T")
CHUNK_BYTES = 8 << 20  # one ranged GET


class StoreUnavailable(Unavailable):
    """The object store cannot be reached, or answers that it is failing: not the caller's fault, worth retrying."""

    code = "store_unavailable"
    retry_after_s = 2


class ArtifactCorrupt(KilnError):
    """What the store returned does not hash to what its writer recorded."""

    code = "artifact_corrupt"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ending in "/"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://bucket` or `s3://bucket/some/prefix`."""
        if not url.startswith("s3://"):
            raise ValueError(f"KILN_ARTIFACT_URL must look like s3://bucket/prefix, got {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not _BUCKET.match(bucket):
            raise ValueError(f"KILN_ARTIFACT_URL: {bucket!r} is not an S3 bucket name")
        prefix = prefix.strip("/")
        return cls(bucket, f"{prefix}/" if prefix else "")


_clients: dict[tuple[int, str], Any] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint_url: str) -> Any:
    """One boto3 client per process (boto3 clients are thread-safe; a forked child makes its own, never its parent's
    connection pool). Credentials and region come from the standard AWS variables; the region defaults to us-east-1."""
    import boto3  # only a process configured for S3 pays for importing it
    from botocore.config import Config

    key = (os.getpid(), endpoint_url)
    with _clients_lock:
        if key not in _clients:
            config = Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30,
                max_pool_connections=32, s3={"addressing_style": "path" if endpoint_url else "auto"},
            )  # fmt: skip
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            _clients[key] = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region, config=config)
        return _clients[key]


def store_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, StoreUnavailable)


def _unavailable(exc: Exception) -> bool:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ConnectionError | HTTPClientError | S3UploadFailedError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or exc.response.get("Error", {}).get("Code") in {"SlowDown", "RequestTimeout"}
    return False


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class S3Objects:
    """The few operations Kiln needs, under one bucket and prefix; failures to reach the store raise StoreUnavailable."""

    def __init__(self, client: Any, location: S3Location, *, part_bytes: int = 16 << 20, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.client = client
        self.location = location
        self.part_bytes = max(part_bytes, 5 << 20)  # S3's smallest part
        self.chunk_bytes = chunk_bytes

    def key(self, *parts: str) -> str:
        return self.location.prefix + "/".join(parts)

    def _call(self, what: str, fn: Callable[..., _T], **kwargs: Any) -> _T:
        try:
            return fn(Bucket=self.location.bucket, **kwargs)
        except Exception as exc:
            if _unavailable(exc):
                raise StoreUnavailable(f"the artifact store could not {what}: {type(exc).__name__}: {exc}") from exc
            raise

    def head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self._call("read an object's metadata", self.client.head_object, Key=key)
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise

    def put_file(self, path: Path, key: str, *, sha256: str, once: bool = True) -> None:
        """Upload `path` under `key`. `once`: the key is content-addressed, so an object already there is the same file
        and is kept (a conditional write loses the race harmlessly); otherwise the object is replaced whole."""
        size = path.stat().st_size
        if once and (found := self.head(key)) is not None and found.get("ContentLength") == size:
            return
        condition = {"IfNoneMatch": "*"} if once else {}
        try:
            if size <= self.part_bytes:
                with open(path, "rb") as body:
                    self._call("store an object", self.client.put_object, Key=key, Body=body, Metadata={"sha256": sha256},
                               **condition)  # fmt: skip
            else:
                self._multipart(path, key, sha256, condition)
        except Exception as exc:
            if _precondition_failed(exc):
                return  # written meanwhile by another process, with the same bytes
            raise

    def _multipart(self, path: Path, key: str, sha256: str, condition: dict[str, str]) -> None:
        """Parts in turn, then one completion that makes the object appear whole; aborted (if the store still answers)
        when anything fails, so no parts are left behind."""
        started = self._call("start an upload", self.client.create_multipart_upload, Key=key, Metadata={"sha256": sha256})
        upload_id = started["UploadId"]
        try:
            parts = []
            with open(path, "rb") as fh:
                for number, chunk in enumerate(iter(lambda: fh.read(self.part_bytes), b""), start=1):
                    sent = self._call("upload a part", self.client.upload_part, Key=key, UploadId=upload_id,
                                      PartNumber=number, Body=chunk)  # fmt: skip
                    parts.append({"PartNumber": number, "ETag": sent["ETag"]})
            self._call("complete an upload", self.client.complete_multipart_upload, Key=key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts}, **condition)  # fmt: skip
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.location.bucket, Key=key, UploadId=upload_id)
            except Exception:  # the store is away: a lifecycle rule (AbortIncompleteMultipartUpload) clears the parts
                pass
            raise

    def fetch(self, key: str, target: Path, *, sha256: str | None = None) -> bool:
        """Download `key` to `target` with ranged GETs, checked against `sha256` (or the sha256 its writer recorded)
        before it is renamed into place. False when there is no such object."""
        found = self.head(key)
        if found is None:
            return False
        size = int(found["ContentLength"])
        expected = sha256 or found.get("Metadata", {}).get("sha256")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self._ranges(key, size, found.get("ETag")):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected and digest.hexdigest() != expected:
                raise ArtifactCorrupt(f"{key}: the store returned bytes hashing to {digest.hexdigest()}, not {expected}")
            os.replace(name, target)
        finally:
            Path(name).unlink(missing_ok=True)
        return True

    def _ranges(self, key: str, size: int, etag: str | None) -> Iterator[bytes]:
        condition = {"IfMatch": etag} if etag else {}  # a replaced object fails the read instead of mixing two
        for start in range(0, size, self.chunk_bytes):
            end = min(start + self.chunk_bytes, size) - 1
            answer = self._call("read an object", self.client.get_object, Key=key, Range=f"bytes={start}-{end}", **condition)
            try:
                yield answer["Body"].read()
            except Exception as exc:
                if _unavailable(exc) or "Connection" in type(exc).__name__:
                    raise StoreUnavailable(f"the artifact store stopped sending {key}: {exc}") from exc
                raise

    def delete(self, key: str) -> None:
        self._call("delete an object", self.client.delete_object, Key=key)

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._call("list objects", self.client.list_objects_v2, Prefix=prefix, **token)
            found.extend(item["Key"] for item in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete_prefix(self, prefix: str) -> None:
        for key in self.keys(prefix):
            self.delete(key)


def _precondition_failed(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
    return isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}
