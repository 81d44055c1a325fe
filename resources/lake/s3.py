"""The S3 backend of the lake storage: one prefix of one bucket per zone (``s3://bucket/prefix``).

Every object this module writes (put, copy, multipart upload) is encrypted with the environment's
KMS key (``ServerSideEncryption="aws:kms"``, ``SSEKMSKeyId``), whatever the bucket's default.

Atomic steps are S3's own. A PUT (and a CompleteMultipartUpload) makes an object appear whole or
not at all, never partially. ``write_once`` and ``land_from`` create an object only if none is
there (``If-None-Match: *``: 412 → FileExistsError), so a landed object is never replaced.

**Publishing without rename.** S3 has no rename: ``publish`` copies the temporary object to its
final name server-side, then deletes the temporary one. This is still safe for readers because
the platform's catalog is the pointer: a reader only opens objects the catalog points at, final
names are versioned and unique (a new staging of a partition writes a new name, it never
rewrites one that is in view), and the catalog is switched only after ``publish`` returned. The
copy itself is one atomic PUT of the final object, so no reader sees a partial object, and a
failure before the catalog switch leaves the previous version in view.

**Reading.** ``open_input`` is a seekable reader over ranged GETs with a read-ahead buffer
(8 MiB), pinned to the object's ETag (``If-Match``): a reader never mixes two versions. pyarrow's
own ``S3FileSystem`` was not used: it does not honour ``AWS_ENDPOINT_URL`` (pyarrow 26 tried
``<bucket>.s3.<region>.amazonaws.com`` with the variable set) and would bypass the session's role.

**Landing inside S3.** ``land_from`` an S3 source is a server-side copy (CopyObject, or
UploadPartCopy above 5 GiB) with ``If-None-Match: *``; the sha256 comes from the copy's own SHA256
checksum (single-part copies) or from one streaming read of the source while the parts copy
server-side (multipart, source pinned by ETag): no byte is uploaded from this machine. Some S3
stand-ins (moto 5.2) ignore ``If-None-Match`` on CopyObject, so a HeadObject check comes first;
against those only, two concurrent landings of the same key in the window between the check and
the copy could both succeed (with identical bytes: the key holds the content hash).
A copy whose hash does not match is deleted again; until then it sits at its final key, which no
catalog entry points at. The copy runs with this store's credentials: they must be able to read
the source bucket (and decrypt with its key).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from core.errors import InvalidName, PlatformError, ResourceBusy, TerminalError, TransientError
from resources.aws import AwsSession, error_code, status_code, translate
from resources.environment import split_s3_uri
from resources.lake.base import CHUNK, ContentMismatch, FileInfo, FileStore

MiB, GiB = 1 << 20, 1 << 30
READ_AHEAD = 8 * MiB
UPLOAD_THRESHOLD = 64 * MiB  # above it, uploads are multipart (parts of UPLOAD_PART_SIZE)
UPLOAD_PART_SIZE = 64 * MiB
MULTIPART_COPY_THRESHOLD = 5 * GiB  # CopyObject's limit; above it, UploadPartCopy
COPY_PART_SIZE = 512 * MiB
COPY_WORKERS = 8
SPOOL_IN_MEMORY = 8 * MiB  # writes up to this size never touch the local disk
META_DELIVERED = "delivered-at-ns"  # x-amz-meta-delivered-at-ns
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ObjectExists(TerminalError, FileExistsError):
    """An object is already at a key that is written only once."""


class ObjectMissing(TerminalError, FileNotFoundError):
    """No object at the key read."""


class ObjectChanged(TransientError):
    """The object was replaced while it was being read or copied; reading again sees one version."""


class BadSeek(TerminalError, ValueError):
    """A seek before the start of an object."""


def _ns(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def _is_client_error(e: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(e, ClientError)


def _aws_errors() -> tuple[type[BaseException], ...]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return ClientError, BotoCoreError, Boto3Error


class S3Store(FileStore):
    def __init__(self, uri: str, session: AwsSession, kms_key_id: str, *,
                 multipart_copy_threshold: int = MULTIPART_COPY_THRESHOLD, copy_part_size: int = COPY_PART_SIZE,
                 upload_threshold: int = UPLOAD_THRESHOLD, upload_part_size: int = UPLOAD_PART_SIZE,
                 read_ahead: int = READ_AHEAD, page_size: int = 1000):
        self.bucket, self.prefix = split_s3_uri(uri)
        if not kms_key_id:
            raise TerminalError(f"{uri}: no KMS key id: every object of the lake is written with SSE-KMS")
        self.session, self.kms_key_id = session, kms_key_id
        self.multipart_copy_threshold, self.copy_part_size = multipart_copy_threshold, copy_part_size
        self.upload_threshold, self.upload_part_size = upload_threshold, upload_part_size
        self.read_ahead, self.page_size = read_ahead, page_size

    def __repr__(self) -> str:
        return f"S3Store({self.uri()!r})"

    @property
    def client(self) -> Any:
        return self.session.client("s3")  # created on first use: nothing touches AWS at construction

    @property
    def sse(self) -> dict[str, str]:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}

    # -- names ------------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        for p in parts:
            if not p or p in (".", "..") or "/" in p or "\0" in p:
                raise InvalidName(f"invalid path part {p!r} under {self.uri()}")
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _folder_key(self, *parts: str) -> str:
        key = self._key(*parts)
        return f"{key}/" if key else ""

    def uri(self, *parts: str) -> str:
        key = self._key(*parts)
        return f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"

    def _info_of(self, parts: tuple[str, ...], size: int, modified: datetime, etag: str | None) -> FileInfo:
        return FileInfo(parts, int(size), _ns(modified), etag.strip('"') if etag else None)

    # -- reading metadata -------------------------------------------------------------------------

    def _head(self, key: str, doing: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except _aws_errors() as e:
            if _is_client_error(e) and status_code(e) == 404:
                return None
            raise translate(e, doing) from e

    def info(self, *parts: str) -> FileInfo | None:
        head = self._head(self._key(*parts), f"reading {self.uri(*parts)}")
        if head is None:
            return None
        return self._info_of(tuple(parts), head["ContentLength"], head["LastModified"], head.get("ETag"))

    def _pages(self, doing: str, **kwargs: Any) -> Iterator[dict]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, PaginationConfig={"PageSize": self.page_size}, **kwargs)
            yield from pages
        except _aws_errors() as e:
            raise translate(e, doing) from e

    def list(self, *parts: str) -> list[FileInfo]:
        prefix = self._folder_key(*parts)
        out = []
        for page in self._pages(f"listing {self.uri(*parts)}", Prefix=prefix, Delimiter="/"):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix):]
                if name:  # "folder/" marker objects are not files
                    out.append(self._info_of((*parts, name), obj["Size"], obj["LastModified"], obj.get("ETag")))
        return out

    def walk(self, *parts: str, limit: int) -> Iterator[FileInfo]:
        if limit <= 0:
            return
        prefix = self._folder_key(*parts)
        count = 0
        for page in self._pages(f"listing {self.uri(*parts)}", Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):].split("/")
                if not all(rel):  # folder markers, "a//b": no parts address them
                    continue
                yield self._info_of((*parts, *rel), obj["Size"], obj["LastModified"], obj.get("ETag"))
                count += 1
                if count >= limit:
                    return

    def folders(self, *parts: str) -> list[str]:
        prefix = self._folder_key(*parts)
        names = set()
        for page in self._pages(f"listing {self.uri(*parts)}", Prefix=prefix, Delimiter="/"):
            for cp in page.get("CommonPrefixes", []):
                name = cp["Prefix"][len(prefix):].rstrip("/")
                if name:
                    names.add(name)
        return sorted(names)

    def delivered_at_ns(self, *parts: str) -> int:
        head = self._head(self._key(*parts), f"reading {self.uri(*parts)}")
        if head is None:
            raise ObjectMissing(f"{self.uri(*parts)} does not exist")
        value = head.get("Metadata", {}).get(META_DELIVERED)
        return int(value) if value and value.isdigit() else _ns(head["LastModified"])

    # -- reading and writing bytes ------------------------------------------------------------------

    def open_input(self, *parts: str) -> BinaryIO:
        key = self._key(*parts)
        head = self._head(key, f"opening {self.uri(*parts)}")
        if head is None:
            raise ObjectMissing(f"{self.uri(*parts)} does not exist")
        return _Reader(self, key, self.uri(*parts), int(head["ContentLength"]), head.get("ETag"))  # type: ignore[return-value]

    def open_output(self, *parts: str) -> BinaryIO:
        return _Writer(self, self._key(*parts), self.uri(*parts))  # type: ignore[return-value]

    def sha256(self, *parts: str) -> str:
        """The object's sha256: from the full-object SHA256 checksum S3 keeps when the uploader sent
        one (``aws s3 cp --checksum-algorithm SHA256``, SDK defaults), so the sensor reads nothing;
        otherwise by reading the object once."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(*parts), ChecksumMode="ENABLED")
        except _aws_errors() as e:
            if _is_client_error(e) and status_code(e) == 404:
                raise ObjectMissing(f"{self.uri(*parts)} does not exist") from None
            raise translate(e, f"reading {self.uri(*parts)}") from e
        known = _full_object_sha256(head)
        if known is not None:
            return known
        h = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(*parts))["Body"]
            for chunk in body.iter_chunks(CHUNK):
                h.update(chunk)
        except _aws_errors() as e:
            if _is_client_error(e) and status_code(e) == 404:
                raise ObjectMissing(f"{self.uri(*parts)} does not exist") from None
            raise translate(e, f"reading {self.uri(*parts)}") from e
        return h.hexdigest()

    def delete(self, *parts: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(*parts))  # absent: 204 all the same
        except _aws_errors() as e:
            raise translate(e, f"deleting {self.uri(*parts)}") from e

    def _created_only_once(self, e: BaseException, uri: str, doing: str) -> PlatformError:
        """The platform's error for a failed conditional write."""
        if _is_client_error(e) and status_code(e) == 412:
            return ObjectExists(f"{uri} already exists: it is written once and never replaced")
        if _is_client_error(e) and (status_code(e) == 409 or error_code(e) == "ConditionalRequestConflict"):
            return ResourceBusy(f"{doing}: another write of {uri} is in progress; retry")
        return translate(e, doing)

    def _failed(self, e: BaseException, uri: str, doing: str, once: bool) -> PlatformError:
        return self._created_only_once(e, uri, doing) if once else translate(e, doing)

    def _put_once(self, key: str, uri: str, f: Any, size: int, metadata: dict[str, str]) -> None:
        """Upload ``f`` to ``key`` only if nothing is there. boto3's ``upload_fileobj`` cannot pass
        IfNoneMatch (s3transfer does not allow it), so small objects are one PutObject and large ones
        a multipart upload completed with ``IfNoneMatch="*"``."""
        doing = f"writing {uri}"
        f.seek(0)
        if size <= self.upload_threshold:
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=f, IfNoneMatch="*",
                                       Metadata=metadata, **self.sse)
            except _aws_errors() as e:
                raise self._created_only_once(e, uri, doing) from e
            return
        try:
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=metadata,
                                                            **self.sse)["UploadId"]
        except _aws_errors() as e:
            raise translate(e, doing) from e
        try:
            done = []
            number = 1
            while chunk := f.read(self.upload_part_size):
                r = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                            Body=chunk)
                done.append({"PartNumber": number, "ETag": r["ETag"]})
                number += 1
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id, IfNoneMatch="*",
                                                  MultipartUpload={"Parts": done})
        except BaseException as e:
            with contextlib.suppress(*_aws_errors()):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            if isinstance(e, _aws_errors()):
                raise self._created_only_once(e, uri, doing) from e
            raise

    @contextlib.contextmanager
    def write_once(self, final: tuple[str, ...], delivered_at_ns: int) -> Iterator[BinaryIO]:
        key, uri = self._key(*final), self.uri(*final)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            yield spool  # type: ignore[misc]  # an exception here leaves with nothing uploaded
            size = spool.tell()
            self._put_once(key, uri, spool, size, {META_DELIVERED: str(int(delivered_at_ns))})

    # -- server-side copies -------------------------------------------------------------------------

    def _copy(self, src_bucket: str, src_key: str, src_uri: str, size: int, etag: str | None, key: str, uri: str, *,
              once: bool, metadata: dict[str, str] | None = None, hash_source: bool = False) -> str | None:
        """Copy an object server-side to ``key`` (SSE-KMS), only if nothing is there when ``once``;
        ``metadata`` replaces the source's. Returns the copy's sha256 when it is known without a
        download (single-part copies) or ``hash_source`` asks for one (multipart: the source is
        read once, streaming, while the parts are copied)."""
        doing = f"copying {src_uri} to {uri}"
        source = {"Bucket": src_bucket, "Key": src_key}
        extra: dict[str, Any] = {**self.sse}
        if metadata is not None:
            extra |= {"MetadataDirective": "REPLACE", "Metadata": metadata}
        if size <= self.multipart_copy_threshold:
            try:
                r = self.client.copy_object(Bucket=self.bucket, Key=key, CopySource=source, ChecksumAlgorithm="SHA256",
                                            **({"IfNoneMatch": "*"} if once else {}), **extra)
            except _aws_errors() as e:
                raise self._failed(e, uri, doing, once) from e
            return _full_object_sha256(r.get("CopyObjectResult", {}))
        try:
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=metadata or {},
                                                            **self.sse)["UploadId"]
        except _aws_errors() as e:
            raise translate(e, doing) from e
        pin = {"CopySourceIfMatch": etag} if etag else {}  # every part from the same version of the source

        def part(number: int, start: int) -> dict:
            end = min(start + self.copy_part_size, size) - 1
            r = self.client.upload_part_copy(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                             CopySource=source, CopySourceRange=f"bytes={start}-{end}", **pin)
            return {"PartNumber": number, "ETag": r["CopyPartResult"]["ETag"]}

        try:
            with ThreadPoolExecutor(COPY_WORKERS, thread_name_prefix="s3-part-copy") as pool:
                futures = [pool.submit(part, i + 1, start)
                           for i, start in enumerate(range(0, size, self.copy_part_size))]
                digest = None
                if hash_source:
                    h = hashlib.sha256()
                    body = self.client.get_object(Bucket=src_bucket, Key=src_key,
                                                  **({"IfMatch": etag} if etag else {}))["Body"]
                    for chunk in body.iter_chunks(CHUNK):
                        h.update(chunk)
                    digest = h.hexdigest()
                parts = [f.result() for f in futures]
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                  MultipartUpload={"Parts": parts},
                                                  **({"IfNoneMatch": "*"} if once else {}))
        except BaseException as e:
            with contextlib.suppress(*_aws_errors()):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            if isinstance(e, _aws_errors()):
                if _is_client_error(e) and status_code(e) == 412 and self._head(key, doing) is None:
                    raise ObjectChanged(f"{src_uri} changed while it was copied to {uri}") from e
                raise self._failed(e, uri, doing, once) from e
            raise
        return digest

    def publish(self, tmp: tuple[str, ...], final: tuple[str, ...], *, read_only: bool = False) -> None:
        # read_only: S3 objects are not modified in place; immutability of landing is write_once's.
        src_key, src_uri = self._key(*tmp), self.uri(*tmp)
        head = self._head(src_key, f"publishing {src_uri}")
        if head is None:
            raise ObjectMissing(f"{src_uri} does not exist: nothing to publish to {self.uri(*final)}")
        self._copy(self.bucket, src_key, src_uri, int(head["ContentLength"]), head.get("ETag"), self._key(*final),
                   self.uri(*final), once=False)
        self.delete(*tmp)

    def move_aside(self, src: tuple[str, ...], folder: tuple[str, ...]) -> tuple[str, ...]:
        src_key, src_uri = self._key(*src), self.uri(*src)
        head = self._head(src_key, f"setting {src_uri} aside")
        if head is None:
            raise ObjectMissing(f"{src_uri} does not exist: nothing to set aside")
        stem, dot, suffix = src[-1].partition(".")
        for i in range(10_000):
            name = src[-1] if i == 0 else f"{stem}.{i}{dot}{suffix}"
            key = self._key(*folder, name)
            if self._head(key, f"setting {src_uri} aside") is not None:
                continue  # the header check is for stores that ignore If-None-Match on copies
            try:
                self._copy(self.bucket, src_key, src_uri, int(head["ContentLength"]), head.get("ETag"), key,
                           self.uri(*folder, name), once=True)
            except ObjectExists:
                continue
            self.delete(*src)
            return (*folder, name)
        raise TerminalError(f"no free name for {src[-1]} in {self.uri(*folder)}: clear out {self.uri(*folder)}")

    def land_from(self, source: FileStore, src: tuple[str, ...], final: tuple[str, ...], delivered_at_ns: int,
                  expected_sha256_prefix: str) -> str:
        if not isinstance(source, S3Store):
            return super().land_from(source, src, final, delivered_at_ns, expected_sha256_prefix)
        key, uri = self._key(*final), self.uri(*final)
        src_key, src_uri = source._key(*src), source.uri(*src)
        if self._head(key, f"landing {src_uri}") is not None:
            raise ObjectExists(f"{uri} already exists: it is written once and never replaced")
        head = source._head(src_key, f"landing {src_uri}")
        if head is None:
            raise ObjectMissing(f"{src_uri} does not exist: nothing to land")
        size = int(head["ContentLength"])
        digest = self._copy(source.bucket, src_key, src_uri, size, head.get("ETag"), key, uri, once=True,
                            metadata={META_DELIVERED: str(int(delivered_at_ns))}, hash_source=True)
        try:
            if digest is None:  # the store gave no full-object checksum: read the copy once
                digest = self.sha256(*final)
            if not digest.startswith(expected_sha256_prefix):
                raise ContentMismatch(src_uri, digest, expected_sha256_prefix)
        except BaseException:
            self.delete(*final)  # what was written is not the delivery that was picked up
            raise
        return digest


def _full_object_sha256(result: dict) -> str | None:
    """The sha256 hex of the whole object from a copy's checksum, or None where S3 gave a composite
    (per-part, ``…-N``) checksum or none at all."""
    value = result.get("ChecksumSHA256")
    if not value or "-" in value or result.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


class _Reader(io.RawIOBase):
    """A seekable reader of one object version: ranged GETs pinned by ETag, small reads served from
    a read-ahead buffer, large reads fetched exactly (one GET each)."""

    def __init__(self, store: S3Store, key: str, uri: str, size: int, etag: str | None):
        super().__init__()
        self._store, self._key, self.name, self.size, self._etag = store, key, uri, size, etag
        self._pos = 0
        self._buf, self._buf_start = b"", 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()  # type: ignore[attr-defined]
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()  # type: ignore[attr-defined]
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise BadSeek(f"seek to {base + offset} in {self.name}: before its start")
        self._pos = base + offset
        return self._pos

    def _get(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the pinned version."""
        kwargs = {"IfMatch": self._etag} if self._etag else {}
        try:
            r = self._store.client.get_object(Bucket=self._store.bucket, Key=self._key,
                                              Range=f"bytes={start}-{end - 1}", **kwargs)
            data = r["Body"].read()
        except _aws_errors() as e:
            if _is_client_error(e) and status_code(e) in (404, 412):
                raise ObjectChanged(f"{self.name} was replaced or removed while it was read; read it again") from e
            raise translate(e, f"reading {self.name}") from e
        if len(data) != end - start:
            raise ObjectChanged(f"{self.name}: asked for {end - start} bytes at {start}, got {len(data)}")
        return data

    def read(self, n: int | None = -1) -> bytes:
        self._checkClosed()  # type: ignore[attr-defined]
        if n is None or n < 0:
            return self.readall()
        n = min(n, self.size - self._pos)
        if n <= 0:
            return b""
        out = b""
        at = self._pos - self._buf_start
        if 0 <= at < len(self._buf):
            out = self._buf[at: at + n]
        need, start = n - len(out), self._pos + len(out)
        if need:
            if need >= self._store.read_ahead:
                out += self._get(start, start + need)
            else:
                self._buf, self._buf_start = self._get(start, min(start + self._store.read_ahead, self.size)), start
                out += self._buf[:need]
        self._pos += len(out)
        return out

    def readall(self) -> bytes:
        return self.read(max(self.size - self._pos, 0))

    def readinto(self, b: Any) -> int:
        data = self.read(len(memoryview(b).cast("B")))
        memoryview(b).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._buf = b""
        super().close()


class _Writer(io.RawIOBase):
    """Spools to a local temporary file and uploads it on close (SSE-KMS, multipart above the
    store's threshold). Leaving a ``with`` block by an exception, or dropping the writer unclosed,
    uploads nothing: a partial object never appears."""

    def __init__(self, store: S3Store, key: str, uri: str):
        super().__init__()
        self._store, self._key, self.name = store, key, uri
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed in close()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._checkClosed()  # type: ignore[attr-defined]
        return self._spool.write(b)

    def tell(self) -> int:
        self._checkClosed()  # type: ignore[attr-defined]
        return self._spool.tell()

    def abort(self) -> None:
        if not self.closed:
            self._spool.close()
            super().close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            from boto3.s3.transfer import TransferConfig

            self._spool.seek(0)
            config = TransferConfig(multipart_threshold=self._store.upload_threshold,
                                    multipart_chunksize=self._store.upload_part_size)
            self._store.client.upload_fileobj(self._spool, self._store.bucket, self._key,
                                              ExtraArgs=dict(self._store.sse), Config=config)
        except _aws_errors() as e:
            raise translate(e, f"writing {self.name}") from e
        finally:
            self._spool.close()
            super().close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        self.abort()  # never upload from the garbage collector: the writer may hold a partial file
