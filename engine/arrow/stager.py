"""Batch by batch: type the raw text, split clean rows from the ones that break a rule, explain
the latter and write both to Parquet.

A batch arrives as the raw text of every contract column (Arrow) with each record's line. Numeric
columns are cast by Arrow (C++, zero-copy into polars); only when that fails for a batch (a bad
value, surrounding spaces), or an integer column's text holds an ``x`` (Arrow would read hex), does
the column go through the polars parse chain, which decides value by value. One parallel polars
pass then evaluates every rule; clean rows go to the staging writer (on a background thread),
flagged rows are gathered and explained by pandera in chunks (failure cases per rule) and written
to quarantine with their original text.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading

import numpy as np
import pandera.polars as pa
import polars as pl
import pyarrow as pa_arrow
import pyarrow.compute as pc
import pyarrow.parquet as pq

from checks.contract import CompiledContract, HeaderMatch
from core.contract_spec import snake_case
from core.errors import ContractError, FileRejected
from core.names import Q_COLUMNS, Q_ERRORS, Q_RAW, Q_RULES, SOURCE_FILE, SOURCE_LINE
from core.zones import CsvOptions
from engine.base import StagingResult

RAW = "__raw__"  # prefix of the raw text columns next to the typed ones
FLAGGED_CHUNK = 5_000  # bad rows gathered before pandera explains them (~3 KiB a row while it does)
ARROW_CASTS = ("int16", "int32", "int64", "float64")  # contract types Arrow's own cast reads exactly
MAX_EXAMPLES = 5


class BackgroundWriter:
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


def header_fixes(contract: CompiledContract, missing: list[str], unexpected: list[str]) -> dict[str, str]:
    """Target column → the unexpected header that most likely holds it (a renamed column: close
    names after snake_case; each header suggested once). A suggestion for a person, never applied."""
    import difflib

    by_source = {snake_case(c.source or n): n for n, c in contract.spec.columns.items()}
    headers = {snake_case(h): h for h in unexpected if h != "<unnamed>"}
    fixes: dict[str, str] = {}
    for source in missing:
        target = by_source[snake_case(source)]
        candidates = [k for k in headers if headers[k] not in fixes.values()]
        close = difflib.get_close_matches(snake_case(source), candidates, n=1, cutoff=0.75) or \
            difflib.get_close_matches(snake_case(target), candidates, n=1, cutoff=0.75)
        if close:
            fixes[target] = headers[close[0]]
    return fixes


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
        fixes = header_fixes(contract, match.missing, match.unexpected)
        hint = ""
        if fixes:
            zone_file = f"platform/zones/{contract.dataset.split('.')[0]}.yaml"
            hint = (f". If the file is right and the contract is not, in {zone_file} add "
                    + "; ".join(f"`source: {header}` to `{target}`" for target, header in fixes.items())
                    + ", then deliver the file again")
        raise FileRejected(
            source_file,
            contract.dataset,
            "the header does not match the contract (" + "; ".join(parts) + ")" + hint,
            missing_columns=match.missing,
            unexpected_columns=unexpected,
            duplicated_columns=match.duplicated,
            suggested_sources=fixes,
        )
    return match


def staging_schema(contract: CompiledContract) -> pa_arrow.Schema:
    empty = pl.DataFrame(schema={**contract.polars_schema(), SOURCE_FILE: pl.String, SOURCE_LINE: pl.Int64})
    return empty.to_arrow().schema


def quarantine_schema(contract: CompiledContract) -> pa_arrow.Schema:
    cols = {SOURCE_FILE: pl.String, SOURCE_LINE: pl.Int64, Q_COLUMNS: pl.List(pl.String),
            Q_RULES: pl.List(pl.String), Q_ERRORS: pl.String}
    cols.update({c: pl.String for c in contract.columns})
    cols[Q_RAW] = pl.String
    return pl.DataFrame(schema=cols).to_arrow().schema


def _may_hold_hex(column: pa_arrow.Array) -> bool:
    """Whether a text column's bytes hold an ``x`` or ``X``: Arrow's integer cast reads ``0x1F`` as 31,
    and ``0xFFFF`` into int16 as -1, where the contract sees no integer (two memchr passes, ~1% of
    the cast)."""
    data = column.buffers()[2]
    if data is None:
        return False
    text = data.to_pybytes()
    return b"x" in text or b"X" in text


def _compact(df: pl.DataFrame) -> pl.DataFrame:
    """A copy with its own buffers. A gathered string column shares the text buffers of the whole
    batch it came from, so keeping a few bad rows would otherwise keep every batch in memory."""
    return pl.from_arrow(df.to_arrow(compat_level=pl.CompatLevel.oldest()))  # type: ignore[return-value]


class Stager:
    def __init__(self, contract: CompiledContract, opts: CsvOptions, source_file: str,
                 staging: pq.ParquetWriter | None, quarantine: pq.ParquetWriter, writer: BackgroundWriter,
                 result: StagingResult, event_time: str | None = None):
        self.contract, self.opts, self.source_file = contract, opts, source_file
        self.event_time = event_time
        self.staging, self.quarantine = staging, quarantine
        self.writer = writer
        self.q_schema = quarantine.schema
        self.s_schema = staging.schema if staging is not None else None
        self.result = result
        spec = contract.spec.columns
        self.typed_columns = [c for c in contract.columns if spec[c].type != "string"]
        self.arrow_casts = {c: spec[c].contract_type.arrow() for c in contract.columns if spec[c].type in ARROW_CASTS}
        self.integers = {c for c in contract.columns if spec[c].contract_type.is_integer}
        # Does a row fail any rule? One expression, evaluated in one parallel pass per batch. The
        # `finite` rules are left out of it: a float column's sum is finite exactly when none of its
        # values is NaN or infinite, and one sum is far cheaper than a test per value.
        self.finite = [r for r in contract.rules if r.name == "finite"]
        others = [~r.ok for r in contract.rules if r.name != "finite"]
        self.rule_failed = pl.any_horizontal(others).alias("bad") if others else None
        self.flagged: list[tuple[pl.DataFrame, pl.DataFrame, np.ndarray]] = []
        self.flagged_rows = 0
        self.pii_columns = contract.pii_labels()

    # -- batches ------------------------------------------------------------------------------
    def process(self, raw_batch: pa_arrow.RecordBatch, lines: np.ndarray) -> None:
        """``raw_batch``: the text of each contract column (Arrow); ``lines``: each row's line number."""
        n = raw_batch.num_rows
        self.result.rows_read += n
        typed, unparsed, raw_text = self._parse(raw_batch)
        bad = typed.select(self.rule_failed).to_series() if self.rule_failed is not None \
            else pl.Series("bad", np.zeros(n, dtype=bool))
        if self.finite:
            sums = typed.select(pl.col(r.columns[0]).sum() for r in self.finite).row(0)
            for rule, total in zip(self.finite, sums, strict=True):
                if not math.isfinite(total):
                    bad = bad | ~typed.select(rule.ok).to_series()
        for col in unparsed:
            bad = bad | (raw_text[col].is_not_null() & typed[col].is_null())
        line_col = pl.Series(SOURCE_LINE, lines, dtype=pl.Int64)
        if not bad.any():
            self._write_staging(typed, line_col)
            return
        self._write_staging(typed.filter(~bad), line_col.filter(~bad))
        idx = bad.arg_true()
        take = idx.to_numpy()
        raw_bad = pl.from_arrow(raw_batch.take(pa_arrow.array(take)))  # a copy: its own small buffers
        assert isinstance(raw_bad, pl.DataFrame)
        self.flagged.append((raw_bad, _compact(typed[idx]), lines[take]))
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
        self.flagged.clear()
        self.flagged_rows = 0
        n_bad = raw_bad.height
        parts = [p for p in (self._type_failures(raw_bad, typed_bad), self._rule_failures(raw_bad, typed_bad))
                 if p is not None and p.height]
        if not parts:
            raise ContractError(f"contract {self.contract.dataset}: {n_bad} flagged rows have no failing check; "
                                "the compiled contract is inconsistent")
        fails = pl.concat(parts)
        # A value that failed to parse is reported as such, not again as a null.
        fails = fails.join(
            fails.filter(~pl.col("parsed")).select("idx", "column", pl.lit("not_nullable").alias("rule")),
            on=["idx", "column", "rule"], how="anti",
        ).drop("parsed")
        explained = fails["idx"].n_unique()
        if explained != n_bad:
            raise ContractError(f"contract {self.contract.dataset}: {n_bad - explained} flagged rows have no "
                                "failing check; the compiled contract is inconsistent")
        self.write_failures(raw_bad, lines_bad, fails)

    def write_failures(self, raw_bad: pl.DataFrame, lines_bad: np.ndarray, fails: pl.DataFrame) -> None:
        """Quarantine ``raw_bad`` (original text, row i at line ``lines_bad[i]``) with ``fails``
        (idx, column, rule, value): one row per record, every failed rule named."""
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
        table = q.select(self.q_schema.names).to_arrow().cast(self.q_schema)
        self.writer.write(self.quarantine, table)
        self.result.rows_quarantined += table.num_rows
        if len(self.result.examples) < MAX_EXAMPLES:
            for line, err in zip(q[SOURCE_LINE].to_list(), q["public"].to_list(), strict=True):
                if len(self.result.examples) < MAX_EXAMPLES:
                    self.result.examples.append(f"line {line}: {err}")

    def _parse(self, raw_batch: pa_arrow.RecordBatch) -> tuple[pl.DataFrame, list[str], pl.DataFrame]:
        """Typed columns; the columns that still hold values no accepted format could parse; and
        the text of the columns parsed by polars."""
        arrow_typed: dict[str, pa_arrow.Array] = {}
        for c, arrow_type in self.arrow_casts.items():
            column = raw_batch.column(c)
            if c in self.integers and _may_hold_hex(column):
                continue  # polars decides, value by value: 0x1F is no integer
            with contextlib.suppress(pa_arrow.ArrowInvalid, pa_arrow.ArrowNotImplementedError):
                arrow_typed[c] = pc.cast(column, arrow_type)
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
        """Values that did not become their type, each with the rule it broke (see checks.contract)."""
        rows = []
        for c in self.typed_columns:
            idx = (raw[c].is_not_null() & typed[c].is_null()).arg_true()
            if idx.len():
                text = raw.select(pl.col(c).gather(idx))
                rows.append(pl.DataFrame({"idx": idx.cast(pl.UInt32), "column": c,
                                          "rule": text.select(self.contract.unparsed_rule[c]).to_series(),
                                          "value": text.to_series(), "parsed": False}))
        return pl.concat(rows) if rows else None

    def _rule_failures(self, raw: pl.DataFrame, typed: pl.DataFrame) -> pl.DataFrame | None:
        """pandera's verdict on the flagged rows, with the original text of the values involved."""
        if not self.contract.rules:
            return None
        try:
            self.contract.schema.validate(typed, lazy=True)
            return None
        except pa.errors.SchemaErrors as e:
            fc = e.failure_cases
        if fc["index"].null_count():
            # A failure without a row (e.g. a dtype mismatch) is a bug in the compiled contract.
            raise ContractError(f"contract {self.contract.dataset} failed on the whole batch: {fc}")
        fc = fc.select(
            pl.col("index").cast(pl.UInt32).alias("idx"),
            pl.col("schema_context").alias("context"),
            pl.col("column"),
            pl.col("check").alias("rule"),
        )
        with_idx = raw.with_row_index("idx")
        long = with_idx.unpivot(index="idx", variable_name="column", value_name="value")
        out = [fc.filter(pl.col("context") == "Column").join(long, on=["idx", "column"], how="left")
               .select("idx", "column", "rule", "value", pl.lit(True).alias("parsed"))]
        for rule in self.contract.row_rules:  # a row rule's value: the values it reads, ``a=1, b=2``
            hit = fc.filter(pl.col("context") == "DataFrameSchema", pl.col("rule") == rule.name)
            if hit.height:
                vals = with_idx.select("idx", pl.concat_str(
                    [pl.lit(f"{c}=") + pl.col(c).fill_null("null") for c in rule.columns], separator=", ",
                ).alias("value"))
                out.append(hit.join(vals, on="idx", how="left").select(
                    "idx", pl.lit(rule.label).alias("column"), "rule", "value", pl.lit(True).alias("parsed")))
        return pl.concat(out)

    def quarantine_raw(self, lines: list[int], rule: str, errors: list[str], records: list[str]) -> None:
        """Records that cannot be read at all (structure, encoding), with their text."""
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
            if len(self.result.examples) < MAX_EXAMPLES:
                self.result.examples.append(f"line {line}: {err}")

    def _write_staging(self, typed: pl.DataFrame, lines: pl.Series) -> None:
        if not typed.height:
            return
        assert self.staging is not None and self.s_schema is not None
        out = typed.with_columns(pl.lit(self.source_file).alias(SOURCE_FILE), lines)
        self.writer.write(self.staging, out.to_arrow().cast(self.s_schema))
        self.result.rows_staged += out.height
        if self.event_time is not None:
            newest = typed[self.event_time].max()
            if newest is not None and (self.result.newest_event_time is None
                                       or newest > self.result.newest_event_time):
                self.result.newest_event_time = newest  # type: ignore[assignment]
