"""The platform's one error vocabulary.

Every error the platform raises is a :class:`PlatformError`, in one of two families:

- :class:`TerminalError`: the input or a declaration is wrong (a file that does not fit its
  contract, a bad YAML key, a landed object whose bytes changed). Retrying cannot help, so it is
  never retried; someone has to act.
- :class:`TransientError`: the infrastructure hiccupped (a lock held by another process, a server
  that went away, a full disk). It is retried with backoff and jitter through Dagster's
  ``RetryPolicy`` (see ``assets.policies``), then fails with the same message.

Resources translate their libraries' exceptions into these at the edge, so nothing above them
sees a ``duckdb.IOException`` or a ``psycopg2.OperationalError``. The Dagster layer turns them into
``dg.Failure`` with ``allow_retries`` set from the family and ``error_kind`` in the metadata,
which is what alerting routes on. Messages are written for people: they name the file, dataset,
column or resource involved and say what to do; they never carry a secret.
"""

from __future__ import annotations

import errno
from typing import ClassVar


class PlatformError(Exception):
    """Base of every error the platform raises."""

    kind: ClassVar[str] = "terminal"

    @property
    def retryable(self) -> bool:
        return isinstance(self, TransientError)


class TerminalError(PlatformError):
    """The input or a declaration is wrong: never retried."""

    kind = "terminal"


class TransientError(PlatformError):
    """Infrastructure: retried with backoff and jitter."""

    kind = "transient"


# -- terminal ---------------------------------------------------------------------------------


class ConfigError(TerminalError, ValueError):
    """A declaration file is missing, unreadable or invalid. The message names file, line and field."""


class InvalidName(TerminalError, ValueError):
    """A name, key or path part that does not match its pattern (it would end up in SQL or a path)."""


class FileRejected(TerminalError):
    """The delivered file as a whole does not fit its dataset; it stays in landing, unstaged."""

    def __init__(self, source_file: str, dataset: str, reason: str, **details: object):
        self.source_file, self.dataset, self.reason, self.details = source_file, dataset, reason, details
        super().__init__(f"{source_file} rejected for dataset {dataset}: {reason}")


class IntegrityError(TerminalError):
    """Bytes or rows do not add up: a landed object changed, or the row accounting failed."""


class ContractError(TerminalError):
    """The compiled contract contradicts itself (a platform bug, reported, never guessed around)."""


class SecretMissing(TerminalError):
    """A secret the environment needs is not set; the message names it, never its value."""


class NotAvailable(TerminalError):
    """The environment declares a backend this build cannot reach (e.g. an AWS one offline)."""


# -- transient --------------------------------------------------------------------------------


class ResourceBusy(TransientError):
    """Another process holds a lock the platform needs (a DuckDB file, a table)."""


class ResourceUnavailable(TransientError):
    """A server is down or a connection was lost."""


class StorageFull(TransientError):
    """No space left where the platform writes; the previous version is intact."""


def from_os_error(e: OSError, doing: str) -> PlatformError:
    """An ``OSError`` met while ``doing`` something (e.g. "writing staging of x.csv"), classified."""
    reason = e.strerror or str(e)
    where = f" ({e.filename})" if e.filename else ""
    # pyarrow's writers raise OSError without an errno, naming it in the text only.
    if e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e):
        return StorageFull(f"{doing}: no space left on the device{where}. Nothing partial is visible and the "
                           "previous version is intact; free some space and the run is retried.")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return TerminalError(f"{doing}: permission denied{where}: {reason}")
    return TransientError(f"{doing}: {reason}{where}")
