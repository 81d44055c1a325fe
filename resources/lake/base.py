"""The lake's storage interface: one root of files per lake zone, and the ingress area.

A :class:`FileStore` is one root (a local folder, or an S3 prefix in AWS) addressed by relative
parts (``"mobility", "yellow_trips", "x.csv"``); its URIs keep their scheme end to end, so the
catalog and the engines are always handed something they can open. :class:`Lake` holds the zones'
stores and opens URIs for the staging engine (it is the engine's ``FileIO``).

Promises every backend keeps:

- ``write_once`` never replaces an existing object: landing is immutable;
- ``publish`` moves a complete temporary object into place in one step, so a reader never sees a
  partial object and a failed write leaves the previous version intact;
- ``move_aside`` never overwrites: a second file of the same name gets a numbered name.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

from core.errors import InvalidName, TerminalError

TMP_DIR = "_tmp"  # in-progress writes, under each zone's root; never read by anyone
CHUNK = 1 << 20


@dataclass(frozen=True)
class FileInfo:
    parts: tuple[str, ...]  # relative to the store's root
    size: int
    mtime_ns: int
    # The store's own content signal where it has one (S3's ETag): with size and mtime it tells a
    # changed object from an unchanged one without reading it.
    etag: str | None = None

    @property
    def name(self) -> str:
        return self.parts[-1]


class ContentMismatch(TerminalError):
    """The bytes copied are not the ones expected (the source changed after it was picked up)."""

    def __init__(self, uri: str, actual_sha256: str, expected_prefix: str):
        super().__init__(f"{uri} hashes to {actual_sha256[:16]}, expected {expected_prefix}")
        self.actual_sha256 = actual_sha256


class FileStore(ABC):
    """One root of files."""

    @abstractmethod
    def uri(self, *parts: str) -> str: ...

    @abstractmethod
    def info(self, *parts: str) -> FileInfo | None:
        """The file's size and modification time; None if there is no file there."""

    @abstractmethod
    def list(self, *parts: str) -> list[FileInfo]:
        """The files directly in a folder (not in its subfolders); an absent folder is empty."""

    @abstractmethod
    def walk(self, *parts: str, limit: int) -> Iterator[FileInfo]:
        """Files at any depth below a folder, at most ``limit``, in no particular order."""

    @abstractmethod
    def folders(self, *parts: str) -> list[str]:
        """Names of the folders directly in a folder."""

    @abstractmethod
    def open_input(self, *parts: str) -> BinaryIO:
        """A seekable reader."""

    @abstractmethod
    def open_output(self, *parts: str) -> BinaryIO: ...

    @abstractmethod
    def delete(self, *parts: str) -> None:
        """Remove a file; no error if it is not there."""

    @abstractmethod
    def publish(self, tmp: tuple[str, ...], final: tuple[str, ...], *, read_only: bool = False) -> None:
        """Move a complete temporary file into place in one step (replacing what was there)."""

    @abstractmethod
    def write_once(self, final: tuple[str, ...], delivered_at_ns: int) -> AbstractContextManager[BinaryIO]:
        """A writer whose bytes appear at ``final`` on success, only if nothing is there yet
        (FileExistsError otherwise); the object is immutable and carries ``delivered_at_ns``."""

    @abstractmethod
    def delivered_at_ns(self, *parts: str) -> int:
        """When the file written by ``write_once`` was delivered."""

    @abstractmethod
    def move_aside(self, src: tuple[str, ...], folder: tuple[str, ...]) -> tuple[str, ...]:
        """Move a file into ``folder`` under its own name, or a numbered one if that is taken;
        returns where it went. Never overwrites."""

    def land_from(self, source: FileStore, src: tuple[str, ...], final: tuple[str, ...], delivered_at_ns: int,
                  expected_sha256_prefix: str) -> str:
        """Copy ``source``'s file ``src`` to ``final`` once (``write_once``), hashing it on the way;
        returns its sha256. Raises :class:`ContentMismatch` (and writes nothing) if the hash does not
        start with ``expected_sha256_prefix``, FileExistsError if ``final`` exists. Backends that
        can copy inside the store (S3's CopyObject) override this so no byte leaves the service."""
        h = hashlib.sha256()
        with self.write_once(final, delivered_at_ns) as out, source.open_input(*src) as fin:
            while chunk := fin.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
            if not h.hexdigest().startswith(expected_sha256_prefix):
                raise ContentMismatch(source.uri(*src), h.hexdigest(), expected_sha256_prefix)
        return h.hexdigest()

    def sha256(self, *parts: str) -> str:
        h = hashlib.sha256()
        with self.open_input(*parts) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def exists(self, *parts: str) -> bool:
        return self.info(*parts) is not None


class Lake:
    """The lake zones' stores; opens URIs for the staging engine (``engine.base.FileIO``)."""

    def __init__(self, zones: dict[str, FileStore]):
        self.zones = zones

    def zone(self, name: str) -> FileStore:
        return self.zones[name]

    def _locate(self, uri: str) -> tuple[FileStore, tuple[str, ...]]:
        for store in self.zones.values():
            root = store.uri()
            if uri == root or uri.startswith(root.rstrip("/") + "/"):
                rest = uri[len(root.rstrip("/")) + 1:]
                return store, tuple(p for p in rest.split("/") if p)
        raise InvalidName(f"{uri} is in no lake zone ({', '.join(s.uri() for s in self.zones.values())})")

    def open_input(self, uri: str) -> BinaryIO:
        store, parts = self._locate(uri)
        return store.open_input(*parts)

    def list(self, uri: str) -> list[str]:
        """The URIs of the objects directly under ``uri`` (a cluster's part files)."""
        store, parts = self._locate(uri)
        return [store.uri(*f.parts) for f in store.list(*parts)]

    def open_output(self, uri: str) -> BinaryIO:
        store, parts = self._locate(uri)
        return store.open_output(*parts)

    def delete(self, uri: str) -> None:
        store, parts = self._locate(uri)
        store.delete(*parts)

    def exists(self, uri: str) -> bool:
        store, parts = self._locate(uri)
        return store.exists(*parts)

    def parts_of(self, uri: str) -> tuple[str, ...]:
        return self._locate(uri)[1]
