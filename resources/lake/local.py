"""The local backend of the lake storage: a folder on this machine (the embedded default).

Atomic steps are the file system's own: ``rename(2)`` to publish, ``link(2)`` to create a file
only if none is there (landing, setting files aside). Landed files are read-only (0440) and
synced to disk before they appear; their modification time records when they were delivered.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from core.errors import InvalidName, TerminalError
from resources.lake.base import TMP_DIR, FileInfo, FileStore


class LocalStore(FileStore):
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, *parts: str) -> Path:
        for p in parts:
            if not p or p in (".", "..") or "/" in p or "\0" in p:
                raise InvalidName(f"invalid path part {p!r}")
        return self.root.joinpath(*parts)

    def uri(self, *parts: str) -> str:
        return str(self._path(*parts))

    def info(self, *parts: str) -> FileInfo | None:
        try:
            st = os.stat(self._path(*parts))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileInfo(tuple(parts), st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None

    def list(self, *parts: str) -> list[FileInfo]:
        try:
            entries = list(os.scandir(self._path(*parts)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for e in entries:
            with contextlib.suppress(FileNotFoundError):  # gone between listing and stat
                if e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    out.append(FileInfo((*parts, e.name), st.st_size, st.st_mtime_ns))
        return out

    def walk(self, *parts: str, limit: int) -> Iterator[FileInfo]:
        base = self._path(*parts)
        count = 0
        if limit <= 0:
            return
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(base).parts
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(os.path.join(dirpath, name), follow_symlinks=False)
                    yield FileInfo((*parts, *rel, name), st.st_size, st.st_mtime_ns)
                    count += 1
                    if count >= limit:
                        return

    def folders(self, *parts: str) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self._path(*parts)) if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def open_input(self, *parts: str) -> BinaryIO:
        return open(self._path(*parts), "rb")  # noqa: SIM115 - the caller closes it

    def open_output(self, *parts: str) -> BinaryIO:
        path = self._path(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")  # noqa: SIM115

    def delete(self, *parts: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._path(*parts))

    def publish(self, tmp: tuple[str, ...], final: tuple[str, ...], *, read_only: bool = False) -> None:
        src, dst = self._path(*tmp), self._path(*final)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if read_only:
            os.chmod(src, 0o440)  # immutable; readable by the platform's user and group, not by everyone
        os.replace(src, dst)  # rename(2): atomic, replaces the previous version

    @contextlib.contextmanager
    def write_once(self, final: tuple[str, ...], delivered_at_ns: int) -> Iterator[BinaryIO]:
        dst = self._path(*final)
        tmp = self._path(TMP_DIR, f"{uuid.uuid4().hex}.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())  # landing is the source of truth: on disk before it appears
            os.utime(tmp, ns=(delivered_at_ns, delivered_at_ns))
            os.chmod(tmp, 0o440)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(tmp, dst)  # fails if something is there: a landed object is never replaced
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)

    def delivered_at_ns(self, *parts: str) -> int:
        return os.stat(self._path(*parts)).st_mtime_ns

    def move_aside(self, src: tuple[str, ...], folder: tuple[str, ...]) -> tuple[str, ...]:
        source = self._path(*src)
        target_dir = self._path(*folder)
        target_dir.mkdir(parents=True, exist_ok=True)
        stem, dot, suffix = src[-1].partition(".")
        for i in range(10_000):
            name = src[-1] if i == 0 else f"{stem}.{i}{dot}{suffix}"
            try:
                os.link(source, target_dir / name)  # never overwrites
            except FileExistsError:
                continue
            os.remove(source)
            return (*folder, name)
        raise TerminalError(f"no free name for {src[-1]} in {target_dir}: clear out {target_dir}")
