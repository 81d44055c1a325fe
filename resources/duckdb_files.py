"""Opening the local DuckDB files (catalog, warehouse) briefly, with a bounded wait for a lock.

DuckDB lets one process write a file, or several read it, never both (see GOTCHAS): a user's
DuckDB shell or notebook holding the catalog open for writing blocks every platform write. The
platform waits a bounded time, then raises ``ResourceBusy`` (transient: the run is retried) with
a message naming the file and the process that holds it, and what to close.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import duckdb

from core.errors import ResourceBusy, TransientError

_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


def is_lock_error(text: str) -> bool:
    return "Could not set lock on file" in text or "Conflicting lock" in text


def lock_message(path: Path, what: str, error: str, waited_s: float | None = None) -> str:
    holder = _HOLDER.search(error)
    who = f"process {holder['pid']} ({holder['program']})" if holder else "another process"
    waited = f"; waited {waited_s:.0f} s" if waited_s is not None else ""
    return (f"the {what} {path} is locked by {who}{waited}. Close that DuckDB session "
            "(a DuckDB shell, notebook or script that opened the file without read_only), or open it "
            "read-only, and the run is retried.")


def connect(path: str | Path, *, read_only: bool, timeout_s: float, what: str) -> duckdb.DuckDBPyConnection:
    """A connection to ``path``, waiting up to ``timeout_s`` (with backoff and jitter) for a lock."""
    path = Path(path)
    started = time.monotonic()
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as e:
            text = str(e)
            waited = time.monotonic() - started
            if not is_lock_error(text):
                failure: TransientError = TransientError(f"cannot open the {what} {path}: {text}")
            elif waited >= timeout_s:
                failure = ResourceBusy(lock_message(path, what, text, waited))
            else:
                time.sleep(min(delay, max(timeout_s - waited, 0.01)) * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 1.0)
                continue
        raise failure
