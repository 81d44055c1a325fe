"""Lake storage over one file-system interface (``pyarrow.fs``): local paths now, S3 next.

Each zone (landing, staging, quarantine) is a root URI. Writes go to ``<zone root>/_tmp/`` and
are published with one move, so readers never see a partial object and a failed write leaves
the previous version in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs

TMP_DIR = "_tmp"
CHUNK = 1 << 20


@dataclass(frozen=True)
class FileEntry:
    path: str  # path within its file system
    name: str
    size: int
    mtime_ns: int


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return the file system and the path inside it for a local path or an s3:// URI."""
    if "://" not in uri:
        fs = pafs.LocalFileSystem()
        return fs, pafs.LocalFileSystem().normalize_path(uri)
    return pafs.FileSystem.from_uri(uri)


def sha256_of(fs: pafs.FileSystem, path: str) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def list_files(fs: pafs.FileSystem, directory: str) -> list[FileEntry]:
    """Files directly in ``directory`` (not recursive); an absent directory is empty."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    except FileNotFoundError:
        return []
    return [
        FileEntry(i.path, i.base_name, i.size or 0, i.mtime_ns or 0)
        for i in infos
        if i.type == pafs.FileType.File
    ]


class LakeStorage:
    def __init__(self, zones: dict[str, str]):
        self._zones = {z: filesystem_for(u) for z, u in zones.items()}
        self._uris = dict(zones)

    def fs(self, zone: str) -> pafs.FileSystem:
        return self._zones[zone][0]

    def path(self, zone: str, *parts: str) -> str:
        root = self._zones[zone][1].rstrip("/")
        return "/".join([root, *parts])

    def uri(self, zone: str, *parts: str) -> str:
        return "/".join([self._uris[zone].rstrip("/"), *parts])

    def exists(self, zone: str, *parts: str) -> bool:
        return self.fs(zone).get_file_info(self.path(zone, *parts)).type == pafs.FileType.File

    def delete(self, zone: str, *parts: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs(zone).delete_file(self.path(zone, *parts))

    @contextlib.contextmanager
    def staged_write(self, zone: str, *parts: str, read_only: bool = False) -> Iterator[str]:
        """Yield a temporary path to write; on success it is moved onto ``parts`` in one step.

        On any exception the temporary object is removed and the published one is untouched.
        """
        fs = self.fs(zone)
        tmp = self.path(zone, TMP_DIR, f"{uuid.uuid4().hex}.tmp")
        fs.create_dir(self.path(zone, TMP_DIR), recursive=True)
        try:
            yield tmp
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                fs.delete_file(tmp)
            raise
        self.publish(zone, tmp, *parts, read_only=read_only)

    def publish(self, zone: str, tmp: str, *parts: str, read_only: bool = False) -> None:
        fs = self.fs(zone)
        final = self.path(zone, *parts)
        fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        if read_only and isinstance(fs, pafs.LocalFileSystem):
            # Immutable, and readable only by the platform's user and group, not by everyone.
            os.chmod(tmp, 0o440)
        fs.move(tmp, final)  # rename(2) locally: atomic, replaces the previous version
