"""The Arrow engine: streaming landing → staging in bounded memory (8 MiB batches).

Fast path: pyarrow's streaming CSV reader (every column read as text, RFC 4180 quoting with line
breaks inside quoted fields) fed through :class:`~engine.arrow.records.RecordScanner`, which gives
every record its physical start line and proves the reading exact → the batch stager
(``engine.arrow.stager``) → two Parquet writers.

Line-by-line path, only for text the fast path cannot prove (a stray quote, a row with the wrong
number of fields, bytes invalid in the declared encoding, a bare carriage return): every record
that can be read is copied to a clean temporary file with its line number and staged through the
same fast path; only the broken records' first lines are quarantined, with their text. Nothing of
the first attempt is kept.

Unique keys are checked after the pass, over the staged rows (polars, one vectorised pass over the
key columns): a row whose key was staged before from an earlier line moves to quarantine with the
line of the first occurrence. The raw text of those rows is read again from the source only when
there are some.

Whole-file problems raise :class:`~core.errors.FileRejected` before anything is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from checks.contract import CompiledContract, HeaderMatch
from core.errors import IntegrityError
from core.names import SOURCE_LINE
from core.zones import CsvOptions
from engine.arrow.records import (
    HEADER_LIMIT,
    NeedsLineByLine,
    ReadAhead,
    RecordScanner,
    WholeCRLF,
    line_by_line,
    read_ahead_for,
    read_header,
)
from engine.arrow.stager import BackgroundWriter, Stager, check_header, quarantine_schema, staging_schema
from engine.base import FileIO, StagingRequest, StagingResult, check_landed_bytes, check_not_empty

__all__ = ["BLOCK_SIZE", "ArrowEngine"]

BLOCK_SIZE = 8 << 20  # bytes of CSV per batch (~90k TLC rows)


def _reader_pool() -> pa.MemoryPool:
    """The CSV reader's own memory pool: jemalloc returning freed pages after a second. The
    default pool (mimalloc) keeps what the reader's threads freed, and the engine's peak grew with
    the file's length (459 MiB at 10M rows, 579 MiB at 30M); with this one it stays flat (decay 0
    was as flat and 4% slower). Nothing else in the process uses the jemalloc pool, so its decay
    setting changes nothing else."""
    global _POOL
    if _POOL is None:
        try:
            _POOL = pa.jemalloc_memory_pool()
            pa.jemalloc_set_decay_ms(1000)
        except NotImplementedError:  # a pyarrow built without jemalloc
            _POOL = pa.default_memory_pool()
    return _POOL


_POOL: pa.MemoryPool | None = None


class _Hashing(io.RawIOBase):
    """Passes a stream through, hashing what is read (the line-by-line path's source)."""

    def __init__(self, raw: BinaryIO, hasher):
        self._raw, self._hasher = raw, hasher

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self._raw.read(len(b))
        if self._hasher is not None:
            self._hasher.update(data)
        b[: len(data)] = data
        return len(data)


def _read_options(names: list[str], opts: CsvOptions, encoding: str, invalid: list) -> tuple:
    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(row)  # raising here would be swallowed by pyarrow: flag it instead
        return "skip"

    read = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=BLOCK_SIZE, encoding=encoding)
    parse = pacsv.ParseOptions(delimiter=opts.delimiter, quote_char=opts.quote_char, ignore_empty_lines=True,
                               newlines_in_values=True, invalid_row_handler=on_invalid)
    convert = pacsv.ConvertOptions(column_types={n: pa.large_string() for n in names},
                                   null_values=opts.null_values, strings_can_be_null=True,
                                   quoted_strings_can_be_null=True)
    return read, parse, convert


class _Pass:
    """One reading of a CSV stream as batches of the contract's raw text with each record's line:
    either proven by a RecordScanner over the original bytes, or with the line numbers the
    line-by-line path recorded for its clean copy."""

    def __init__(self, contract: CompiledContract, opts: CsvOptions, header: list[str], match: HeaderMatch):
        self.contract, self.opts, self.header, self.match = contract, opts, header, match

    def batches(self, stream: BinaryIO, *, scanner: RecordScanner | None = None,
                numbers: np.ndarray | None = None, encoding: str | None = None
                ) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        positional = [f"c{i}" for i in range(len(self.header))]
        rename = {p: self.match.mapping[h] for p, h in zip(positional, self.header, strict=True)
                  if h in self.match.mapping}
        invalid: list = []
        read, parse, convert = _read_options(positional, self.opts, encoding or "utf8", invalid)
        columns = self.contract.columns
        seen = 0
        ahead = ReadAhead(WholeCRLF(scanner if scanner is not None else stream), BLOCK_SIZE,
                          read_ahead_for(BLOCK_SIZE))
        try:
            reader = pacsv.open_csv(ahead, read_options=read, parse_options=parse, convert_options=convert,
                                    memory_pool=_reader_pool())
            with contextlib.closing(ahead.batches(reader)) as batches:
                for batch in batches:
                    if invalid or (scanner is not None and scanner.anomaly):
                        raise NeedsLineByLine
                    n = batch.num_rows
                    by_target = {t: batch.column(p) for p, t in rename.items()}
                    raw = pa.record_batch(
                        [by_target[c] if c in by_target else pa.nulls(n, pa.large_string()) for c in columns],
                        names=columns,
                    )
                    lines = scanner.take(n) if scanner is not None else numbers[seen: seen + n]  # type: ignore[index]
                    seen += n
                    yield raw, lines
        except pa.ArrowInvalid as e:
            if scanner is not None:
                raise NeedsLineByLine from None  # invalid bytes, or a record pyarrow cannot read
            raise IntegrityError(f"{self.contract.dataset}: the line-by-line copy could not be read: {e}") from None
        if scanner is not None:
            if invalid or not scanner.proven(seen):
                raise NeedsLineByLine
        elif invalid or numbers is None or seen != len(numbers):
            raise IntegrityError(f"{self.contract.dataset}: line accounting failed after the line-by-line pass "
                                 f"({seen} records for {0 if numbers is None else len(numbers)} lines); "
                                 "nothing was published")


def _duplicates(io_: FileIO, staged_uri: str, keys: list[str]) -> pl.DataFrame:
    """Staged rows whose key was staged before from an earlier line: (line, first line, key text).

    Memory stays small whatever the file: one pass over the staged key columns, a row group at a
    time, keeps a 64-bit hash of each key (8 bytes a row); only the rows whose hash repeats are
    read again and compared by their values, so a hash collision never quarantines a row."""
    key_hash = pl.struct(keys).hash(seed=0x5EED)
    complete = pl.all_horizontal(pl.col(keys).is_not_null())  # an incomplete key is no key
    with io_.open_input(staged_uri) as f:
        source = pq.ParquetFile(f)
        rows = source.metadata.num_rows
        hashes = np.empty(rows, dtype=np.uint64)
        keyed = np.empty(rows, dtype=bool)
        offset = 0
        for i in range(source.num_row_groups):
            part = pl.from_arrow(source.read_row_group(i, columns=keys))
            assert isinstance(part, pl.DataFrame)
            got = part.select(key_hash.alias("h"), complete.alias("k"))
            hashes[offset: offset + part.height] = got["h"].to_numpy()
            keyed[offset: offset + part.height] = got["k"].to_numpy()
            offset += part.height
        # Sorting the hashes finds the repeated ones: 16 bytes a row, no hash table.
        ordered = np.sort(hashes[keyed])
        twice = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        del ordered
        if not len(twice):
            return pl.DataFrame(schema={"line": pl.Int64, "first_line": pl.Int64, "key": pl.String})
        repeated = keyed & np.isin(hashes, twice)
        candidates, offset = [], 0
        for i in range(source.num_row_groups):
            group = source.read_row_group(i, columns=[*keys, SOURCE_LINE])
            mask = repeated[offset: offset + group.num_rows]
            offset += group.num_rows
            if mask.any():
                part = pl.from_arrow(group.filter(pa.array(mask)))
                assert isinstance(part, pl.DataFrame)
                candidates.append(part)
    flagged = pl.concat(candidates).with_columns(pl.struct(keys).is_first_distinct().alias("_first"))
    firsts = flagged.filter("_first").select(*keys, pl.col(SOURCE_LINE).alias("first_line"))
    dups = flagged.filter(~pl.col("_first")).join(firsts, on=keys, how="left")
    key_text = pl.concat_str([pl.col(k).cast(pl.String) for k in keys], separator="|")
    return dups.select(pl.col(SOURCE_LINE).alias("line"), "first_line", key_text.alias("key")).sort("line")


def _drop_lines(io_: FileIO, src_uri: str, dst_uri: str, lines: np.ndarray) -> None:
    """Copy a staged Parquet file without the rows of ``lines`` (sorted), one row group at a time."""
    with io_.open_input(src_uri) as f:
        source = pq.ParquetFile(f)
        with io_.open_output(dst_uri) as out, pq.ParquetWriter(out, source.schema_arrow) as w:
            for i in range(source.num_row_groups):
                group = source.read_row_group(i)
                at = group.column(SOURCE_LINE).to_numpy()
                hit = np.searchsorted(lines, at)
                drop = (hit < len(lines)) & (lines[np.minimum(hit, len(lines) - 1)] == at)
                w.write_table(group.filter(pa.array(~drop)) if drop.any() else group)


class ArrowEngine:
    name = "arrow"

    def stage(self, request: StagingRequest, io_: FileIO) -> StagingResult:
        contract, opts = request.contract, request.csv
        with io_.open_input(request.source_uri) as f:
            head = f.read(HEADER_LIMIT)
        header = read_header(head, opts, request.source_name, contract.dataset)
        match = check_header(contract, header, request.source_name)
        header_only = b"\n" not in head.rstrip(b"\r\n") and len(head) < HEADER_LIMIT
        extra: list[str] = []
        try:
            try:
                result = self._attempt(request, io_, header, match, header_only, slow=False, extra=extra)
            except NeedsLineByLine:
                result = self._attempt(request, io_, header, match, header_only, slow=True, extra=extra)
            result.header = match
            check_landed_bytes(request, result.sha256)
            check_not_empty(request, result, header)
        except BaseException:
            for uri in extra:
                with contextlib.suppress(FileNotFoundError, OSError):
                    io_.delete(uri)
            raise
        return result

    def _attempt(self, req: StagingRequest, io_: FileIO, header: list[str], match: HeaderMatch, header_only: bool,
                 *, slow: bool, extra: list[str]) -> StagingResult:
        contract, opts = req.contract, req.csv
        result = StagingResult(read_path="line_by_line" if slow else "fast", staging_uri=req.staging_uri,
                               quarantine_uri=req.quarantine_uri)
        hasher = hashlib.sha256() if req.expected_sha256 else None
        reading = _Pass(contract, opts, header, match)
        with contextlib.ExitStack() as stack:
            clean: BinaryIO | None = None
            numbers: np.ndarray | None = None
            q_sink = stack.enter_context(io_.open_output(req.quarantine_uri))
            quarantine = stack.enter_context(pq.ParquetWriter(q_sink, quarantine_schema(contract)))
            writer = BackgroundWriter()
            with io_.open_output(req.staging_uri) as s_sink, \
                    pq.ParquetWriter(s_sink, staging_schema(contract)) as staging:
                stager = Stager(contract, opts, req.source_name, staging, quarantine, writer, result,
                                event_time=req.event_time)
                try:
                    if header_only:
                        if hasher is not None:
                            with io_.open_input(req.source_uri) as f:
                                hasher.update(f.read())
                    elif not slow:
                        with io_.open_input(req.source_uri) as f:
                            scanner = RecordScanner(f, opts, hasher)
                            for raw, lines in reading.batches(f, scanner=scanner, encoding=opts.encoding):
                                stager.process(raw, lines)
                    else:
                        clean = stack.enter_context(tempfile.TemporaryFile())
                        numbers = self._line_by_line(req, io_, stager, len(header), clean, hasher)
                        for raw, lines in reading.batches(clean, numbers=numbers):
                            stager.process(raw, lines)
                    stager.flush()
                finally:
                    writer.close()  # before the writers close: drain what is queued
            result.sha256 = hasher.hexdigest() if hasher is not None else None
            keys = list(contract.spec.unique_key)
            if keys and result.rows_staged:
                dups = _duplicates(io_, req.staging_uri, keys)
                if dups.height:
                    result.staging_uri = req.staging_uri + ".unique"
                    extra.append(result.staging_uri)
                    lines_ = dups["line"].to_numpy()
                    _drop_lines(io_, req.staging_uri, result.staging_uri, lines_)
                    io_.delete(req.staging_uri)
                    result.rows_staged -= dups.height
                    raw_rows = self._records_at(reading, io_, req, lines_, clean, numbers)
                    fails = pl.DataFrame({
                        "idx": pl.Series(np.arange(dups.height), dtype=pl.UInt32),
                        "column": ", ".join(keys), "rule": "unique_key",
                        "value": dups.select(
                            pl.col("key") + "; first on line " + pl.col("first_line").cast(pl.String)).to_series(),
                    })
                    writer = BackgroundWriter()
                    stager.writer = writer
                    try:
                        stager.write_failures(raw_rows, lines_, fails)
                    finally:
                        writer.close()
                    result.duplicates = dups.height
        return result

    @staticmethod
    def _line_by_line(req: StagingRequest, io_: FileIO, stager: Stager, n_fields: int, clean: BinaryIO,
                      hasher) -> np.ndarray:
        """Copy the readable records to ``clean`` and quarantine the broken lines, in groups."""
        bad: dict[str, tuple[list, list, list]] = {}

        def quarantine_line(line: int, rule: str, error: str, text: str) -> None:
            lines_, errors_, texts_ = bad.setdefault(rule, ([], [], []))
            lines_.append(line)
            errors_.append(error)
            texts_.append(text)
            if len(lines_) >= 10_000:
                del bad[rule]
                stager.quarantine_raw(lines_, rule, errors_, texts_)

        with io_.open_input(req.source_uri) as f:
            numbers = line_by_line(_Hashing(f, hasher), req.csv, n_fields, clean, quarantine_line)  # type: ignore[arg-type]
        for rule, (lines_, errors_, texts_) in sorted(bad.items()):
            stager.quarantine_raw(lines_, rule, errors_, texts_)
        clean.seek(0)
        return numbers

    def _records_at(self, reading: _Pass, io_: FileIO, req: StagingRequest, wanted: np.ndarray,
                    clean: BinaryIO | None, numbers: np.ndarray | None) -> pl.DataFrame:
        """The raw text of the records starting on ``wanted`` lines (sorted), read again."""
        found: list[pl.DataFrame] = []
        want = pa.array(wanted, type=pa.int64())

        def collect(batches: Iterator[tuple[pa.RecordBatch, np.ndarray]]) -> None:
            for raw, lines in batches:
                hit = np.flatnonzero(pc.is_in(pa.array(lines), value_set=want).to_numpy(zero_copy_only=False))
                if len(hit):
                    part = pl.from_arrow(raw.take(pa.array(hit)))
                    assert isinstance(part, pl.DataFrame)
                    found.append(part.with_columns(pl.Series("__line", lines[hit])))

        if clean is not None:
            clean.seek(0)
            collect(reading.batches(clean, numbers=numbers))
        else:
            with io_.open_input(req.source_uri) as f:
                collect(reading.batches(f, scanner=RecordScanner(f, req.csv), encoding=req.csv.encoding))
        rows = pl.concat(found).sort("__line")
        if rows.height != len(wanted) or rows["__line"].to_numpy().tolist() != wanted.tolist():
            raise IntegrityError(f"{req.dataset}: could not read back the records on lines {wanted[:5].tolist()}…")
        return rows.drop("__line")
