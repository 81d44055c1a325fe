"""Streaming landing → staging: read a delivered CSV in batches, type it, validate it against the
compiled contract, and write clean rows to staging and failing rows to quarantine, in one pass
with bounded memory.

Fast path: pyarrow's streaming CSV reader (every column read as text) → polars parse → pandera
validation per batch → two Parquet writers. When every record is one physical line, a record's
line number is its index + 2 (the header is line 1).

Slow path, only for files the fast path cannot read exactly (rows with the wrong number of fields,
unbalanced quotes, blank lines, bytes that are not valid in the declared encoding): one
line-by-line pass quarantines those lines with their exact line numbers and hands the remaining
lines, with their numbers, to the same fast path. One bad line never costs the rest of the file.

Whole-file problems (empty file, missing or duplicated columns, unexpected columns when the
contract rejects them) raise :class:`FileRejected`; nothing is written.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import queue
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
import pandera.polars as pa
import polars as pl
import pyarrow as pa_arrow
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from assets.zones import CsvOptions
from checks.contract import CompiledContract, HeaderMatch

BLOCK_SIZE = 8 << 20  # bytes of CSV per batch (~90k TLC rows): peak memory ~0.8 GiB whatever the file size
HEADER_LIMIT = 1 << 20
SOURCE_FILE, SOURCE_LINE = "_source_file", "_source_line"
RAW = "__raw__"  # prefix of the raw text columns next to the typed ones
ARROW_TYPES = {"int16": pa_arrow.int16(), "int32": pa_arrow.int32(), "int64": pa_arrow.int64(),
               "float64": pa_arrow.float64()}
FLAGGED_CHUNK = 50_000  # bad rows gathered before pandera explains them: bounds memory and pandera calls
Q_COLUMNS, Q_RULES, Q_ERRORS, Q_RAW = "_failed_columns", "_failed_rules", "_errors", "_raw_record"


class FileRejected(Exception):
    """The delivered file as a whole does not fit its dataset; it stays in landing, unstaged."""

    def __init__(self, source_file: str, dataset: str, reason: str, **details: object):
        self.source_file, self.dataset, self.reason, self.details = source_file, dataset, reason, details
        super().__init__(f"{source_file} rejected for dataset {dataset}: {reason}")


@dataclass
class StagingResult:
    rows_read: int = 0
    rows_staged: int = 0
    rows_quarantined: int = 0
    violations: Counter = field(default_factory=Counter)  # "column: rule" → rows
    examples: list[str] = field(default_factory=list)  # a few quarantine reasons, for people
    header: HeaderMatch | None = None
    slow_path: bool = False

    @property
    def quarantine_ratio(self) -> float:
        return self.rows_quarantined / self.rows_read if self.rows_read else 0.0


class _NeedsSlowPath(Exception):
    pass


class _LineCounter:
    """Hands the source to pyarrow and counts the physical lines that pass, so the fast path can
    prove that every record was exactly one line (and so its line numbers are exact)."""

    TAIL = 4096

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.newlines = 0
        self.size = 0
        self.tail = b""
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        b = self._raw.read(n)
        if b:
            self.newlines += b.count(b"\n")
            self.size += len(b)
            self.tail = (self.tail + b[-self.TAIL:])[-self.TAIL:]
        return b

    def close(self) -> None:  # the owner of the raw stream closes it
        self.closed = True

    def records_expected(self) -> int:
        """Data lines in the file, not counting the header and blank lines at the very end."""
        if not self.size:
            return 0
        lines = self.newlines + (0 if self.tail.endswith(b"\n") else 1)
        body = self.tail.rstrip(b"\r\n")
        trailing_blank = max(self.tail[len(body):].count(b"\n") - 1, 0) if body else 0
        return lines - 1 - trailing_blank


class _BackgroundWriter:
    """Encodes and writes Parquet on one background thread, so that encoding a batch overlaps
    with parsing and validating the next (pyarrow releases the GIL). At most ``depth`` batches
    wait in the queue, which keeps memory bounded. Errors surface on the next call or on close."""

    def __init__(self, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="parquet-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            writer, table = item
            if self._error is None:
                try:
                    writer.write_table(table)
                except BaseException as e:  # re-raised in the caller's thread
                    self._error = e

    def write(self, writer: pq.ParquetWriter, table: pa_arrow.Table) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((writer, table))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


# --------------------------------------------------------------------------------------------
# Header


def read_header(head: bytes, opts: CsvOptions, source_file: str, dataset: str) -> list[str]:
    if not head:
        raise FileRejected(source_file, dataset, "the file is empty (0 bytes)")
    encoding = "utf-8-sig" if codecs.lookup(opts.encoding).name == "utf-8" else opts.encoding
    end = head.find(b"\n")
    if end < 0 and len(head) >= HEADER_LIMIT:
        raise FileRejected(source_file, dataset, f"no end of header line in the first {HEADER_LIMIT} bytes")
    line = head if end < 0 else head[:end]
    try:
        text = line.decode(encoding).rstrip("\r")
    except UnicodeDecodeError as e:
        raise FileRejected(
            source_file, dataset, f"line 1 (header): bytes not valid {opts.encoding} at byte {e.start}"
        ) from None
    if not text.strip():
        raise FileRejected(source_file, dataset, "line 1 (header) is blank")
    return next(csv.reader([text], delimiter=opts.delimiter, quotechar=opts.quote_char))


def check_header(contract: CompiledContract, header: list[str], source_file: str) -> HeaderMatch:
    match = contract.match_header(header)
    unexpected = match.unexpected if contract.spec.unexpected_columns == "reject" else []
    if match.missing or match.duplicated or unexpected:
        parts = []
        if match.missing:
            parts.append(f"missing columns: {', '.join(match.missing)}")
        if unexpected:
            parts.append(f"unexpected columns: {', '.join(unexpected)}")
        if match.duplicated:
            parts.append(f"duplicated columns: {', '.join(match.duplicated)}")
        raise FileRejected(
            source_file,
            contract.dataset,
            "the header does not match the contract (" + "; ".join(parts) + ")",
            missing_columns=match.missing,
            unexpected_columns=unexpected,
            duplicated_columns=match.duplicated,
        )
    return match


# --------------------------------------------------------------------------------------------
# Output schemas


def staging_schema(contract: CompiledContract) -> pa_arrow.Schema:
    empty = pl.DataFrame(schema={**contract.polars_schema(), SOURCE_FILE: pl.String, SOURCE_LINE: pl.Int64})
    return empty.to_arrow().schema


def quarantine_schema(contract: CompiledContract) -> pa_arrow.Schema:
    cols = {SOURCE_FILE: pl.String, SOURCE_LINE: pl.Int64, Q_COLUMNS: pl.List(pl.String),
            Q_RULES: pl.List(pl.String), Q_ERRORS: pl.String}
    cols.update({c: pl.String for c in contract.columns})
    cols[Q_RAW] = pl.String
    return pl.DataFrame(schema=cols).to_arrow().schema


# --------------------------------------------------------------------------------------------
# The engine


def _compact(df: pl.DataFrame) -> pl.DataFrame:
    """A copy with its own buffers. A gathered string column shares the text buffers of the whole
    batch it came from, so keeping a few bad rows would otherwise keep every batch in memory."""
    return pl.from_arrow(df.to_arrow(compat_level=pl.CompatLevel.oldest()))  # type: ignore[return-value]


class _Stager:
    def __init__(self, contract: CompiledContract, opts: CsvOptions, source_file: str,
                 staging: pq.ParquetWriter, quarantine: pq.ParquetWriter):
        self.contract, self.opts, self.source_file = contract, opts, source_file
        self.staging, self.quarantine = staging, quarantine
        self.writer = _BackgroundWriter()
        self.q_schema = quarantine.schema
        self.s_schema = staging.schema
        self.result = StagingResult()
        self.seen_keys: set[int] = set()
        spec = contract.spec.columns
        self.typed_columns = [c for c in contract.columns if spec[c].type != "string"]
        self.arrow_casts = {c: ARROW_TYPES[spec[c].type] for c in contract.columns if spec[c].type in ARROW_TYPES}
        self.row_rules = [r for r in contract.rules if r.name in {x.name for x in contract.spec.rules}]
        # Does a row fail any rule? One expression, evaluated in one parallel pass per batch.
        self.rule_failed = pl.any_horizontal([~r.ok for r in contract.rules]).alias("bad")
        self.flagged: list[tuple[pl.DataFrame, pl.DataFrame, np.ndarray, np.ndarray]] = []
        self.flagged_rows = 0
        self.pii_columns = [c for c, col in spec.items() if col.pii]
        # A rule over PII columns must not print their values either.
        self.pii_columns += [r.label for r in self.row_rules if set(r.columns) & set(self.pii_columns)]

    # -- batches ------------------------------------------------------------------------------
    def process(self, raw_batch: pa_arrow.RecordBatch, lines: np.ndarray) -> None:
        """``raw_batch``: the text of each contract column (Arrow); ``lines``: each row's line number.

        One parallel polars pass decides which rows are clean, from the same expressions that back
        the pandera checks; pandera then explains the flagged rows (failure cases)."""
        n = raw_batch.num_rows
        self.result.rows_read += n
        typed, unparsed, raw_text = self._parse(raw_batch)
        bad = typed.select(self.rule_failed).to_series() if self.contract.rules else pl.Series([False] * n)
        for col in unparsed:
            bad = bad | (raw_text[col].is_not_null() & typed[col].is_null())
        duplicates = self._duplicate_keys(typed) if self.contract.spec.unique_key else None
        if duplicates is not None:
            bad = bad | pl.Series(duplicates)
        line_col = pl.Series(SOURCE_LINE, lines, dtype=pl.Int64)
        if not bad.any():
            self._write_staging(typed, line_col)
            return
        self._write_staging(typed.filter(~bad), line_col.filter(~bad))
        idx = bad.arg_true()
        take = idx.to_numpy()
        dup = duplicates[take] if duplicates is not None else np.zeros(idx.len(), dtype=bool)
        raw_bad = pl.from_arrow(raw_batch.take(pa_arrow.array(take)))  # a copy: its own small buffers
        assert isinstance(raw_bad, pl.DataFrame)
        self.flagged.append((raw_bad, _compact(typed[idx]), lines[take], dup))
        self.flagged_rows += idx.len()
        if self.flagged_rows >= FLAGGED_CHUNK:
            self.flush()

    def flush(self) -> None:
        """Explain the flagged rows gathered so far and write them to quarantine. Gathering them
        first means pandera runs once per chunk of bad rows, not once per batch."""
        if not self.flagged:
            return
        raw_bad = pl.concat([f[0] for f in self.flagged])
        typed_bad = pl.concat([f[1] for f in self.flagged])
        lines_bad = np.concatenate([f[2] for f in self.flagged])
        dup = np.concatenate([f[3] for f in self.flagged])
        self.flagged.clear()
        self.flagged_rows = 0
        n_bad = raw_bad.height
        parts = [self._type_failures(raw_bad, typed_bad), self._rule_failures(raw_bad, typed_bad)]
        if dup.any():
            parts.append(self._duplicate_failures(raw_bad, dup))
        fails = pl.concat([p for p in parts if p is not None and p.height])
        # A value that failed to parse is reported as such, not again as a null.
        fails = fails.join(
            fails.filter(pl.col("rule").str.starts_with("type(")).select(
                "idx", "column", pl.lit("not_nullable").alias("rule")),
            on=["idx", "column", "rule"], how="anti",
        )
        explained = fails["idx"].n_unique()
        if explained != n_bad:
            raise RuntimeError(f"contract {self.contract.dataset}: {n_bad - explained} flagged rows have no "
                               "failing check; the compiled contract is inconsistent")
        for col, rule, cnt in fails.group_by("column", "rule").agg(pl.col("idx").n_unique()).iter_rows():
            self.result.violations[f"{col}: {rule}"] += cnt
        # Quarantine keeps original values (it is a restricted zone); messages that leave it, as
        # examples in Dagster metadata, show PII columns masked.
        value = pl.col("value").fill_null("null")
        masked = pl.when(pl.col("column").is_in(self.pii_columns)).then(pl.lit("<pii>")).otherwise(value)
        per_row = (
            fails.with_columns(
                (pl.col("column") + ": " + pl.col("rule") + " (value " + value + ")").alias("msg"),
                (pl.col("column") + ": " + pl.col("rule") + " (value " + masked + ")").alias("public"),
            )
            .group_by("idx", maintain_order=True)
            .agg(pl.col("column").alias(Q_COLUMNS), pl.col("rule").alias(Q_RULES),
                 pl.col("msg").str.join("; ").alias(Q_ERRORS), pl.col("public").str.join("; "))
            .sort("idx")
        )
        q = raw_bad.with_row_index("idx").join(per_row, on="idx", how="inner").sort("idx")
        q = q.with_columns(
            pl.lit(self.source_file).alias(SOURCE_FILE),
            pl.Series(SOURCE_LINE, lines_bad[q["idx"].to_numpy()], dtype=pl.Int64),
            pl.lit(None, dtype=pl.String).alias(Q_RAW),
        )
        self._write_quarantine(q)
        if len(self.result.examples) < 5:
            for line, err in zip(q[SOURCE_LINE].to_list(), q["public"].to_list(), strict=True):
                if len(self.result.examples) < 5:
                    self.result.examples.append(f"line {line}: {err}")

    def _parse(self, raw_batch: pa_arrow.RecordBatch) -> tuple[pl.DataFrame, list[str], pl.DataFrame]:
        """Typed columns; the columns that still hold values no accepted format could parse; and
        the text of the columns parsed by polars.

        A numeric column is first cast by Arrow (C++, and zero-copy into polars); only when that
        fails for a batch (a bad value, surrounding spaces) does the column go through the polars
        parse chain, which decides value by value. Either way the result is the same."""
        arrow_typed: dict[str, pa_arrow.Array] = {}
        for c, arrow_type in self.arrow_casts.items():
            with contextlib.suppress(pa_arrow.ArrowInvalid, pa_arrow.ArrowNotImplementedError):
                arrow_typed[c] = pc.cast(raw_batch.column(c), arrow_type)
        by_polars = [c for c in self.contract.columns if c not in arrow_typed]
        raw = pl.from_arrow(raw_batch.select(by_polars)) if by_polars else pl.DataFrame()
        assert isinstance(raw, pl.DataFrame)
        typed = raw.select([self.contract.parse[c][0] for c in by_polars])
        if arrow_typed:
            from_arrow = pl.from_arrow(pa_arrow.record_batch(list(arrow_typed.values()), names=list(arrow_typed)))
            assert isinstance(from_arrow, pl.DataFrame)
            typed = typed.hstack(from_arrow) if by_polars else from_arrow
        typed = typed.select(self.contract.columns)
        check = [c for c in self.typed_columns if c in by_polars]
        if not check:
            return typed, [], raw
        # One parallel pass tells which columns have values the first parse missed (usually none).
        missed_counts = typed.select(check).hstack(
            raw.select(pl.col(check).name.prefix(RAW))
        ).select([(pl.col(RAW + c).is_not_null() & pl.col(c).is_null()).sum() for c in check]).row(0)
        unparsed = []
        for col, count in zip(check, missed_counts, strict=True):
            if not count:
                continue
            parsed = typed[col]
            missed = (raw[col].is_not_null() & parsed.is_null()).arg_true()
            for expr in self.contract.parse[col][1:]:
                retry = raw.select(pl.col(col).gather(missed)).select(expr).to_series()
                parsed = parsed.scatter(missed, retry)
                missed = (raw[col].is_not_null() & parsed.is_null()).arg_true()
                if not missed.len():
                    break
            typed = typed.with_columns(parsed.alias(col))
            if missed.len():
                unparsed.append(col)
        return typed, unparsed, raw

    def _type_failures(self, raw: pl.DataFrame, typed: pl.DataFrame) -> pl.DataFrame | None:
        spec = self.contract.spec.columns
        rows = []
        for c in self.typed_columns:
            idx = (raw[c].is_not_null() & typed[c].is_null()).arg_true()
            if idx.len():
                formats = spec[c].formats
                rule = f"type({spec[c].type})" if not formats else f"type({spec[c].type} as {' or '.join(formats)})"
                rows.append(pl.DataFrame({"idx": idx.cast(pl.UInt32), "column": c, "rule": rule,
                                          "value": raw[c].gather(idx)}))
        return pl.concat(rows) if rows else None

    def _rule_failures(self, raw: pl.DataFrame, typed: pl.DataFrame) -> pl.DataFrame | None:
        """pandera's verdict on the flagged rows, with the original text of the values involved."""
        try:
            self.contract.schema.validate(typed, lazy=True)
            return None
        except pa.errors.SchemaErrors as e:
            fc = e.failure_cases
        if fc["index"].null_count():
            # A failure without a row (e.g. a dtype mismatch) is a bug in the compiled contract.
            raise RuntimeError(f"contract {self.contract.dataset} failed on the whole batch: {fc}")
        fc = fc.select(
            pl.col("index").cast(pl.UInt32).alias("idx"),
            pl.col("schema_context").alias("context"),
            pl.col("column"),
            pl.col("check").alias("rule"),
        )
        with_idx = raw.with_row_index("idx")
        long = with_idx.unpivot(index="idx", variable_name="column", value_name="value")
        out = [fc.filter(pl.col("context") == "Column").join(long, on=["idx", "column"], how="left")
               .select("idx", "column", "rule", "value")]
        for rule in self.row_rules:  # a row rule's value: the values it reads, ``a=1, b=2``
            hit = fc.filter(pl.col("context") == "DataFrameSchema", pl.col("rule") == rule.name)
            if hit.height:
                vals = with_idx.select("idx", pl.concat_str(
                    [pl.lit(f"{c}=") + pl.col(c).fill_null("null") for c in rule.columns], separator=", ",
                ).alias("value"))
                out.append(hit.join(vals, on="idx", how="left").select(
                    "idx", pl.lit(rule.label).alias("column"), "rule", "value"))
        return pl.concat(out)

    def _duplicate_failures(self, raw: pl.DataFrame, dup: np.ndarray) -> pl.DataFrame | None:
        keys = self.contract.spec.unique_key
        idx = pl.Series(np.flatnonzero(dup), dtype=pl.UInt32)
        if not idx.len():
            return None
        value = raw.select(pl.concat_str([pl.col(k).fill_null("null") for k in keys], separator="|"))
        return pl.DataFrame({"idx": idx, "column": ", ".join(keys), "rule": "unique_key",
                             "value": value.to_series().gather(idx)})

    def _duplicate_keys(self, typed: pl.DataFrame) -> np.ndarray:
        """Rows whose key was already seen earlier in the file (the first occurrence is kept)."""
        keys = self.contract.spec.unique_key
        complete = typed.select(pl.all_horizontal(pl.col(keys).is_not_null())).to_series().to_list()
        hashes = typed.select(pl.struct(keys).hash(seed=0)).to_series().to_list()
        dup = np.zeros(typed.height, dtype=bool)
        seen = self.seen_keys
        for i, (h, ok) in enumerate(zip(hashes, complete, strict=True)):
            if not ok:
                continue
            if h in seen:
                dup[i] = True
            else:
                seen.add(h)
        return dup

    def quarantine_raw(self, lines: list[int], rule: str, errors: list[str], records: list[str]) -> None:
        """Records the fast path cannot read at all (structure, encoding), with their text."""
        if not lines:
            return
        n = len(lines)
        self.result.rows_read += n
        self.result.violations[f"*: {rule}"] += n
        cols: dict[str, object] = {
            SOURCE_FILE: [self.source_file] * n, SOURCE_LINE: lines, Q_COLUMNS: [["*"]] * n,
            Q_RULES: [[rule]] * n, Q_ERRORS: errors,
        }
        cols.update({c: [None] * n for c in self.contract.columns})
        cols[Q_RAW] = records
        self.result.rows_quarantined += n
        self.writer.write(self.quarantine, pa_arrow.table(cols, schema=self.q_schema))
        for line, err in zip(lines, errors, strict=True):
            if len(self.result.examples) < 5:
                self.result.examples.append(f"line {line}: {err}")

    def _write_staging(self, typed: pl.DataFrame, lines: pl.Series) -> None:
        if not typed.height:
            return
        out = typed.with_columns(pl.lit(self.source_file).alias(SOURCE_FILE), lines)
        self.writer.write(self.staging, out.to_arrow().cast(self.s_schema))
        self.result.rows_staged += out.height

    def _write_quarantine(self, q: pl.DataFrame) -> None:
        table = q.select(self.q_schema.names).to_arrow().cast(self.q_schema)
        self.writer.write(self.quarantine, table)
        self.result.rows_quarantined += table.num_rows


def _read_options(names: list[str], opts: CsvOptions, encoding: str | None) -> tuple:
    read = pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=BLOCK_SIZE,
                             encoding=encoding or "utf8")
    parse = pacsv.ParseOptions(delimiter=opts.delimiter, quote_char=opts.quote_char,
                               ignore_empty_lines=True, newlines_in_values=False)
    convert = pacsv.ConvertOptions(column_types={n: pa_arrow.large_string() for n in names},
                                   null_values=opts.null_values, strings_can_be_null=True,
                                   quoted_strings_can_be_null=True)
    return read, parse, convert


def _fast_pass(stager: _Stager, stream: BinaryIO, header: list[str], match: HeaderMatch,
               line_numbers: np.ndarray | None, encoding: str | None) -> None:
    positional = [f"c{i}" for i in range(len(header))]
    rename = {p: match.mapping[h] for p, h in zip(positional, header, strict=True) if h in match.mapping}
    read, parse, convert = _read_options(positional, stager.opts, encoding)

    invalid: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(row)  # raising here would be swallowed by pyarrow: flag it instead
        return "skip"

    parse.invalid_row_handler = on_invalid
    counter = _LineCounter(stream)
    seen = 0
    try:
        reader = pacsv.open_csv(counter, read_options=read, parse_options=parse, convert_options=convert)
        for batch in reader:
            if invalid:
                break
            n = batch.num_rows
            by_target = {t: batch.column(p) for p, t in rename.items()}
            raw = pa_arrow.record_batch(
                [by_target[c] if c in by_target else pa_arrow.nulls(n, pa_arrow.large_string())
                 for c in stager.contract.columns],
                names=stager.contract.columns,
            )
            if line_numbers is None:
                lines = np.arange(seen + 2, seen + 2 + n, dtype=np.int64)
            else:
                lines = line_numbers[seen: seen + n]
            stager.process(raw, lines)
            seen += n
        stager.flush()
    except pa_arrow.ArrowInvalid as e:
        if line_numbers is None:
            raise _NeedsSlowPath from None  # invalid bytes, or a parse error: read it line by line
        raise FileRejected(stager.source_file, stager.contract.dataset, f"unreadable CSV: {e}") from None
    if line_numbers is None:
        # Ragged rows, blank lines inside the file, or a quote that swallowed line ends: the
        # records did not map one-to-one onto lines, so start again line by line.
        if invalid or seen != counter.records_expected():
            raise _NeedsSlowPath
    elif invalid or seen != len(line_numbers):
        raise RuntimeError(f"{stager.source_file}: line accounting failed after the line-by-line pass "
                           f"({seen} records for {len(line_numbers)} lines); nothing was published")


def _slow_prepass(stager: _Stager, stream: BinaryIO, n_fields: int, clean_out: BinaryIO) -> np.ndarray:
    """Copy readable lines to ``clean_out`` (UTF-8, header first) and quarantine the others.

    Returns the line number of every copied record."""
    opts = stager.opts
    decode = codecs.getdecoder("utf-8-sig" if codecs.lookup(opts.encoding).name == "utf-8" else opts.encoding)
    numbers: list[int] = []
    bad_lines: list[int] = []
    bad_errors: list[str] = []
    bad_text: list[str] = []
    rules: list[str] = []

    def flush() -> None:
        for rule in sorted(set(rules)):
            sel = [i for i, r in enumerate(rules) if r == rule]
            stager.quarantine_raw([bad_lines[i] for i in sel], rule, [bad_errors[i] for i in sel],
                                  [bad_text[i] for i in sel])
        bad_lines.clear(), bad_errors.clear(), bad_text.clear(), rules.clear()

    for lineno, raw in enumerate(io.BufferedReader(stream, buffer_size=1 << 20), start=1):  # type: ignore[arg-type]
        body = raw.rstrip(b"\r\n")
        try:
            text = decode(body)[0]
        except UnicodeDecodeError as e:
            if lineno == 1:
                raise
            bad_lines.append(lineno)
            rules.append("encoding")
            bad_errors.append(f"bytes {body[e.start:e.end]!r} at column {e.start + 1} are not valid "
                              f"{opts.encoding}")
            bad_text.append(body.decode(opts.encoding, errors="backslashreplace"))
            continue
        if lineno == 1:
            clean_out.write(text.encode("utf-8") + b"\n")
            continue
        if not text.strip():
            continue  # a blank line is no record
        try:
            fields = next(csv.reader([text], delimiter=opts.delimiter, quotechar=opts.quote_char, strict=True))
            problem = None if len(fields) == n_fields else f"expected {n_fields} fields, found {len(fields)}"
        except csv.Error as e:
            problem = f"malformed quoting ({e})"
        if problem:
            bad_lines.append(lineno)
            rules.append("structure")
            bad_errors.append(problem)
            bad_text.append(text)
        else:
            clean_out.write(text.encode("utf-8") + b"\n")
            numbers.append(lineno)
        if len(bad_lines) >= 10_000:
            flush()
    flush()
    return np.asarray(numbers, dtype=np.int64)


def stage_csv(
    contract: CompiledContract,
    opts: CsvOptions,
    open_source: Callable[[], BinaryIO],
    source_file: str,
    open_sinks: Callable[[], tuple[BinaryIO, BinaryIO]],
) -> StagingResult:
    """Stage one delivered CSV file.

    ``open_source`` opens the landed bytes and ``open_sinks`` opens (truncating) the staging and
    quarantine outputs; both may be called twice when the slow path is needed. Raises
    FileRejected for whole-file problems, before anything is written."""
    with open_source() as f:
        head = f.read(HEADER_LIMIT)
    header = read_header(head, opts, source_file, contract.dataset)
    match = check_header(contract, header, source_file)
    header_only = b"\n" not in head.rstrip(b"\r\n") and len(head) < HEADER_LIMIT

    def attempt(slow: bool) -> StagingResult:
        s_sink, q_sink = open_sinks()
        with s_sink, q_sink, \
                pq.ParquetWriter(s_sink, staging_schema(contract)) as staging, \
                pq.ParquetWriter(q_sink, quarantine_schema(contract)) as quarantine:
            stager = _Stager(contract, opts, source_file, staging, quarantine)
            stager.result.slow_path = slow
            try:
                if header_only:
                    pass  # nothing after the header: empty outputs
                elif not slow:
                    with open_source() as f:
                        _fast_pass(stager, f, header, match, None, opts.encoding)
                else:
                    with tempfile.TemporaryFile() as clean:
                        with open_source() as f:
                            numbers = _slow_prepass(stager, f, len(header), clean)  # type: ignore[arg-type]
                        clean.seek(0)
                        _fast_pass(stager, clean, header, match, numbers, None)  # type: ignore[arg-type]
            finally:
                stager.writer.close()  # before the writers close: drain what is queued
        return stager.result

    try:
        result = attempt(slow=False)
    except _NeedsSlowPath:
        result = attempt(slow=True)  # start again: nothing of the first attempt is kept
    result.header = match
    if result.rows_read == 0 and contract.spec.empty_file == "reject":
        raise FileRejected(source_file, contract.dataset, "the file has a header but no data rows",
                           header=header)
    return result


def stage_local_file(contract: CompiledContract, opts: CsvOptions, path: str | os.PathLike,
                     staging_path: str, quarantine_path: str) -> StagingResult:
    """Convenience for benchmarks and tools: local file in, two local Parquet files out."""
    return stage_csv(contract, opts, lambda: open(path, "rb"), os.path.basename(path),
                     lambda: (open(staging_path, "wb"), open(quarantine_path, "wb")))
