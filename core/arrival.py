"""What a file-arrival sensor does with what it finds in ``ingress/<insight_zone>/<dataset>/``.

The decision of each tick is a pure function, :func:`plan_tick`, so it can be tested as a table
of cursor states. Rules:

- a file is picked up only once it has not changed for ``settle_seconds`` (still being written);
- one run per new file, keyed by its content hash, for at most ``max_files`` files a tick;
- nothing is ignored silently. A file the platform will not process is *set aside* (moved to
  ``ingress/_set_aside/<insight_zone>/<dataset>/``, never deleted) by a run that says why:
  its name does not match the dataset's pattern, its bytes are identical to an earlier
  delivery, or it is a temporary file (``.x``, ``~x``, ``x~``, ``*.tmp``, ``*.part``, ...) left
  unchanged for a day. A young temporary file is left alone: uploaders write those and rename
  them when done;
- the cursor remembers only files still in the folder (landing removes a file from ingress once
  its bytes are safely in landing, setting aside moves it), capped at ``CURSOR_CAP`` entries.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from core.names import HASH_CHARS, partition_key, split_partition_key

__all__ = ["CURSOR_CAP", "STALE_TEMPORARY_S", "Cursor", "FileEntry", "Request", "SetAside", "TickPlan",
           "is_temporary", "partition_key", "plan_tick", "split_partition_key"]

TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".filepart", ".swp", ".lock", "~")
CURSOR_CAP = 20_000
STALE_TEMPORARY_S = 24 * 3600  # a temporary name unchanged this long is an abandoned upload
SET_ASIDE_DIR = "_set_aside"  # under the ingress root: files the platform will not process
Reason = Literal["name", "duplicate", "temporary", "location"]


def is_temporary(name: str) -> bool:
    low = name.lower()
    return name.startswith((".", "~", "_")) or low.endswith(TEMP_SUFFIXES)


@dataclass(frozen=True)
class FileEntry:
    path: str  # where the file is, for the sensor (relative to the folder it lists)
    name: str
    size: int
    mtime_ns: int
    # The store's content signal where it has one (S3's ETag): S3 times have one-second resolution,
    # so an object rewritten within the second with the same size differs only in its ETag.
    etag: str | None = None

    @property
    def signature(self) -> list:
        return [self.size, self.mtime_ns] if self.etag is None else [self.size, self.mtime_ns, self.etag]


@dataclass
class Cursor:
    # name → [size, mtime_ns(, etag)] of each handled file still in the folder (not hashed again)
    files: dict[str, list] = field(default_factory=dict)
    # When the folder was last listed, where ingress events announce files between listings.
    swept_at_ns: int = 0

    @classmethod
    def load(cls, raw: str | None) -> Cursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(files={k: list(v) for k, v in data.get("files", {}).items()},
                   swept_at_ns=int(data.get("swept_at_ns", 0)))

    def dump(self) -> str:
        data: dict = {"files": self.files}
        if self.swept_at_ns:
            data["swept_at_ns"] = self.swept_at_ns
        return json.dumps(data, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Request:
    file: FileEntry
    sha256: str
    partition_key: str


@dataclass(frozen=True)
class SetAside:
    file: FileEntry
    reason: Reason
    detail: str  # the pattern, the earlier partition, or how long the file sat unchanged

    def message(self, where: str) -> str:
        if self.reason == "name":
            return (f"{where}/{self.file.name} does not match the dataset's file pattern {self.detail!r}: "
                    "it was not landed. Rename it to match and deliver it again, or change the pattern.")
        if self.reason == "duplicate":
            return (f"{where}/{self.file.name} is byte-identical to the earlier delivery "
                    f"{self.detail.rsplit('@', 1)[0]} (partition {self.detail}): it was not landed again. To "
                    "stage those bytes again (e.g. after a contract change), materialize that partition.")
        if self.reason == "temporary":
            return (f"{where}/{self.file.name} has a temporary name and has not changed for {self.detail}: "
                    "an abandoned upload. Finish the upload under its final name.")
        return f"{where}/{self.file.name} was not landed: {self.detail}."


@dataclass
class TickPlan:
    requests: list[Request] = field(default_factory=list)
    set_aside: list[SetAside] = field(default_factory=list)
    waiting: list[FileEntry] = field(default_factory=list)  # not settled, or over the tick budget
    cursor: Cursor = field(default_factory=Cursor)

    @property
    def duplicates(self) -> list[tuple[FileEntry, str]]:
        return [(s.file, s.detail) for s in self.set_aside if s.reason == "duplicate"]

    @property
    def unmatched(self) -> list[FileEntry]:
        return [s.file for s in self.set_aside if s.reason == "name"]

    def log_lines(self, where: str) -> list[str]:
        out = [f"{where}: new file {r.file.name} ({r.file.size} bytes) → partition {r.partition_key}"
               for r in self.requests]
        out += [f"{where}: setting aside {s.file.name}: " + s.message(where) for s in self.set_aside]
        return out


def plan_tick(
    listing: Iterable[FileEntry],
    cursor: Cursor,
    *,
    now_ns: int,
    settle_seconds: float,
    max_files: int,
    pattern: str,
    known_keys: Iterable[str],
    hash_file: Callable[[FileEntry], str],
    landed: Callable[[str], bool] = lambda _key: True,
) -> TickPlan:
    """``known_keys``: partitions already requested; ``landed(key)``: whether one is in landing yet
    (a file whose own run has not landed it yet is left alone, even if its mtime changed)."""
    plan = TickPlan()
    by_digest: dict[str, str] = {}
    for key in known_keys:
        try:
            by_digest[split_partition_key(key)[1]] = key
        except ValueError:
            continue
    settle_ns = int(settle_seconds * 1e9)
    new_files: dict[str, list] = {}
    budget = max_files
    for f in sorted(listing, key=lambda e: (e.mtime_ns, e.name)):
        remembered = cursor.files.get(f.name)
        if remembered == f.signature:
            new_files[f.name] = remembered  # already handled, unchanged
            continue
        age_ns = now_ns - f.mtime_ns
        if is_temporary(f.name):
            if age_ns >= STALE_TEMPORARY_S * 10**9 and budget > 0:
                budget -= 1
                plan.set_aside.append(SetAside(f, "temporary", f"{age_ns / 3.6e12:.0f} hours"))
                new_files[f.name] = f.signature
            continue  # otherwise quietly: temporary files come and go all the time
        if age_ns < settle_ns or budget <= 0:
            plan.waiting.append(f)  # may still be being written, or the tick is full
            continue
        budget -= 1
        new_files[f.name] = f.signature
        if not fnmatch.fnmatchcase(f.name, pattern):
            plan.set_aside.append(SetAside(f, "name", pattern))
            continue
        digest = hash_file(f)
        key = partition_key(f.name, digest)
        earlier = by_digest.get(digest[:HASH_CHARS])
        if earlier is None:
            plan.requests.append(Request(f, digest, key))
            by_digest[digest[:HASH_CHARS]] = key
        elif earlier == key and not landed(key):
            pass  # this very file, touched while its run waits: the run lands it
        else:
            plan.set_aside.append(SetAside(f, "duplicate", earlier))
    if len(new_files) > CURSOR_CAP:  # keep the newest; an evicted file is only re-hashed
        keep = sorted(new_files.items(), key=lambda kv: kv[1][1])[-CURSOR_CAP:]
        new_files = dict(keep)
    plan.cursor = Cursor(files=new_files)
    return plan
