"""The staging engine's small interface: a request in, a result out.

An engine reads one landed file, types it, enforces its contract and writes two Parquet files:
the rows that passed (staging) and the rows that did not, with why (quarantine). It knows
nothing of Dagster, of environments or of the catalog; it reads and writes the URIs it is given
through a :class:`FileIO`. The Arrow engine (``engine.arrow``) is the default; a Spark engine
implements the same interface for files one machine cannot take.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Protocol

from checks.contract import CompiledContract, HeaderMatch
from core.errors import FileRejected, IntegrityError
from core.zones import CsvOptions


class FileIO(Protocol):
    """Opens URIs for the engine (the lake storage implements it)."""

    def open_input(self, uri: str) -> BinaryIO: ...

    def open_output(self, uri: str) -> BinaryIO: ...

    def delete(self, uri: str) -> None: ...


@dataclass(frozen=True)
class StagingRequest:
    source_uri: str  # the landed file
    source_name: str  # the delivered file's name, written to every row's _source_file
    contract: CompiledContract
    csv: CsvOptions
    staging_uri: str  # where to write the rows that passed (a temporary name: the caller publishes)
    quarantine_uri: str  # where to write the rows that did not
    expected_sha256: str | None = None  # a prefix of the source's sha256: refused if the bytes differ
    event_time: str | None = None  # a timestamp column whose newest staged value the result reports

    @property
    def dataset(self) -> str:
        return self.contract.dataset


@dataclass
class StagingResult:
    rows_read: int = 0
    rows_staged: int = 0
    rows_quarantined: int = 0
    violations: Counter = field(default_factory=Counter)  # "column: rule" → rows
    examples: list[str] = field(default_factory=list)  # a few quarantine reasons, PII masked, for people
    header: HeaderMatch | None = None
    read_path: str = "fast"  # "fast", "line_by_line" for text that is really broken, or "spark"
    sha256: str | None = None  # of the source bytes as read
    duplicates: int = 0  # rows quarantined for the unique key
    staging_uri: str | None = None  # the outputs: where the staged rows were written
    quarantine_uri: str | None = None  # and the quarantined ones
    newest_event_time: datetime | None = None  # of the staged rows, when the request names an event_time

    @property
    def quarantine_ratio(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0

    @property
    def slow_path(self) -> bool:
        return self.read_path != "fast"


def check_landed_bytes(request: StagingRequest, sha256: str | None) -> None:
    """Every engine refuses a landed object whose bytes no longer match its partition's hash."""
    if request.expected_sha256 and not (sha256 or "").startswith(request.expected_sha256):
        raise IntegrityError(
            f"{request.source_uri} no longer matches its partition's hash: the partition was landed with "
            f"sha256 {request.expected_sha256}…, the bytes read now hash to {(sha256 or '')[:16]}…. "
            "Landed objects are immutable: nothing was staged. Re-deliver the file to land it again.")


def check_not_empty(request: StagingRequest, result: StagingResult, header: list[str]) -> None:
    """A file with a header and no data rows is refused unless its contract accepts that."""
    if result.rows_read == 0 and request.contract.spec.empty_file == "reject":
        raise FileRejected(request.source_name, request.dataset, "the file has a header but no data rows",
                           header=header)


class StagingEngine(Protocol):
    name: str

    def stage(self, request: StagingRequest, io: FileIO) -> StagingResult:
        """Stage one file. Raises ``FileRejected`` for whole-file problems before anything is
        written, ``IntegrityError`` if the bytes do not match ``expected_sha256``."""
        ...
