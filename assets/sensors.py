"""File-arrival sensors: one per dataset, over ``ingress/<insight_zone>/<dataset>/``.

The decision of each tick is a pure function, :func:`plan_tick`, so it can be tested as a table
of cursor states. Rules:

- hidden and temporary names (``.x``, ``~x``, ``x~``, ``*.tmp``, ``*.part``, ...) are ignored;
- a file is picked up only once it has not changed for ``settle_seconds`` (still being written);
- one run per file, keyed by the content hash, for at most ``max_files_per_tick`` files a tick;
- bytes identical to an earlier delivery under another name are skipped, with a log line naming
  the earlier file;
- the cursor remembers only files still in the folder (landing removes a file from ingress once
  its bytes are safely in landing), capped at ``CURSOR_CAP`` entries, so it stays small.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from resources.lake import FileEntry

TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".filepart", ".swp", ".lock", "~")
CURSOR_CAP = 20_000
HASH_CHARS = 16  # 64 bits of sha256 in the partition key
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_temporary(name: str) -> bool:
    low = name.lower()
    return name.startswith((".", "~", "_")) or low.endswith(TEMP_SUFFIXES)


def partition_key(file_name: str, sha256: str) -> str:
    """``<file name>@<first 16 hex of sha256>``: readable, traceable, unique per content."""
    safe = _UNSAFE.sub("_", file_name).replace("..", "_")
    return f"{safe}@{sha256[:HASH_CHARS]}"


def split_partition_key(key: str) -> tuple[str, str]:
    name, _, digest = key.rpartition("@")
    if not name or len(digest) != HASH_CHARS:
        raise ValueError(f"{key!r} is not a landing partition key (<file>@<{HASH_CHARS} hex>)")
    return name, digest


@dataclass
class Cursor:
    # name → [size, mtime_ns] of each handled file still in the folder (its hash is not needed again)
    files: dict[str, list] = field(default_factory=dict)

    @classmethod
    def load(cls, raw: str | None) -> Cursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(files={k: list(v) for k, v in data.get("files", {}).items()})

    def dump(self) -> str:
        return json.dumps({"files": self.files}, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Request:
    file: FileEntry
    sha256: str
    partition_key: str


@dataclass
class TickPlan:
    requests: list[Request] = field(default_factory=list)
    duplicates: list[tuple[FileEntry, str]] = field(default_factory=list)  # (file, earlier key)
    ignored: list[tuple[FileEntry, str]] = field(default_factory=list)  # (file, why)
    waiting: list[FileEntry] = field(default_factory=list)  # not settled, or over the tick budget
    cursor: Cursor = field(default_factory=Cursor)

    def log_lines(self, where: str) -> list[str]:
        out = [f"{where}: new file {r.file.name} ({r.file.size} bytes) → partition {r.partition_key}"
               for r in self.requests]
        out += [f"{where}: skipping {f.name}: byte-identical to the earlier delivery {key.rsplit('@', 1)[0]} "
                f"(partition {key})" for f, key in self.duplicates]
        out += [f"{where}: ignoring {f.name}: {why}" for f, why in self.ignored]
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
) -> TickPlan:
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
        if is_temporary(f.name):
            continue  # silently: temporary files come and go all the time
        remembered = cursor.files.get(f.name)
        if remembered and remembered[0] == f.size and remembered[1] == f.mtime_ns:
            new_files[f.name] = remembered  # already handled, unchanged
            continue
        if not fnmatch.fnmatchcase(f.name, pattern):
            plan.ignored.append((f, f"name does not match the dataset's pattern {pattern!r}"))
            new_files[f.name] = [f.size, f.mtime_ns]
            continue
        if now_ns - f.mtime_ns < settle_ns:
            plan.waiting.append(f)  # may still be being written
            continue
        if budget <= 0:
            plan.waiting.append(f)
            continue
        budget -= 1
        digest = hash_file(f)
        key = partition_key(f.name, digest)
        earlier = by_digest.get(digest[:HASH_CHARS])
        if earlier is not None:
            # Files still pending are in the cursor, so a known digest here is a re-delivery.
            plan.duplicates.append((f, earlier))
        else:
            plan.requests.append(Request(f, digest, key))
            by_digest[digest[:HASH_CHARS]] = key
        new_files[f.name] = [f.size, f.mtime_ns]
    if len(new_files) > CURSOR_CAP:  # keep the newest; an evicted file is only re-hashed
        keep = sorted(new_files.items(), key=lambda kv: kv[1][1])[-CURSOR_CAP:]
        new_files = dict(keep)
    plan.cursor = Cursor(files=new_files)
    return plan
