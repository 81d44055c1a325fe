"""Policies applied once, to every platform asset: retries, the warehouse pool, and how the
platform's errors become Dagster failures.

- A :class:`~core.errors.TransientError` (a lock held by another process, a server that went away,
  a full disk) is retried by :data:`RETRY` with exponential backoff and jitter, then fails with
  its message.
- A :class:`~core.errors.TerminalError` (the input or a declaration is wrong) fails at once:
  ``dg.Failure(allow_retries=False)``.
- Both carry ``error`` (the class) and ``error_kind`` (terminal or transient) in the failure's
  metadata: alerting routes on them.
- Everything that writes or reads the DuckDB warehouse runs in the :data:`WAREHOUSE_POOL`
  concurrency pool, so two runs never collide on it (``make run``'s instance limits it to one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg

from core.errors import PlatformError, from_os_error

RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
WAREHOUSE_POOL = "warehouse"


def failure(e: PlatformError, note: str = "", **metadata: object) -> dg.Failure:
    return dg.Failure(
        description=f"{e} {note}".strip(),
        metadata={"error": type(e).__name__, "error_kind": e.kind, **metadata},
        allow_retries=e.retryable,
    )


@contextlib.contextmanager
def platform_errors(doing: str, **metadata: object) -> Iterator[None]:
    """Turn the platform's errors raised inside into Dagster failures (see the module doc);
    an ``OSError`` is classified first (``doing`` says what was being done, for the message)."""
    try:
        yield
    except PlatformError as e:
        raise failure(e, **metadata) from None
    except OSError as e:
        raise failure(from_os_error(e, doing), **metadata) from None
