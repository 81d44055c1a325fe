"""Benchmark of the landing → staging step on one large TLC-like CSV file, and on two variants of it.

What is measured
    The same delivered CSV (default 10,000,000 rows of ``cli.generate.trips`` output, seed 7,
    0.1 % planted faults) is turned into Parquet by three approaches:

    ``pyarrow``   the floor: ``pyarrow.csv.open_csv`` streaming (``engine.arrow.BLOCK_SIZE`` blocks)
                  → ``pyarrow.parquet.ParquetWriter``, explicit column types, no validation.
                  The two timestamp columns are read as text and parsed per batch with
                  ``pyarrow.compute.strptime(error_is_null=True)``: a plain typed conversion
                  would abort the whole file on the first planted unparseable timestamp.
    ``duckdb``    DuckDB's typed read: ``COPY (SELECT * FROM read_csv(…, types = the contract's declared
                  types, ignore_errors = true)) TO … (FORMAT parquet)`` with 2 threads; rows that do
                  not convert are dropped, no rules, no reasons, no line numbers.
    ``pandas``    the usual hand-written approach: ``pandas.read_csv`` (``parse_dates`` on the two
                  timestamp columns; a column that does not parse is coerced to ``NaT`` with
                  ``pandas.to_datetime(errors="coerce")``), a ``pandera.pandas`` schema with the
                  contract's rules (location ids 1–265, payment_type in 1..6, trip_distance >= 0,
                  passenger_count 0..9, timestamps not null, dropoff >= pickup) validated with
                  ``lazy=True``, failing rows split off, then ``DataFrame.to_parquet`` for the
                  staged and the quarantined rows. The whole file is in memory at once.
    ``platform``  the platform's engine: ``engine.stage_local_file`` with the real
                  ``mobility.yellow_trips`` contract (typing, every contract rule, line numbers,
                  staging + quarantine Parquet).

    Quoted line breaks (part ``quoted``): the same trips (same seed, same faults) with one more
    column, ``trip_note``, last: 1 % of the records hold a quoted note over two or three lines (LF
    or CRLF inside the quotes, some with a comma or doubled quotes), a tenth a plain word, the rest
    nothing (``trips(note_rate=0.01)``). The file has more lines than records.

    ``pyarrow_quoted``   the floor on that file: as ``pyarrow`` above, with
                         ``ParseOptions(newlines_in_values=True)`` and ``trip_note`` read as text.
    ``platform_quoted``  the engine with the yellow_trips contract plus ``trip_note: {type: string,
                         required: false}``. Its read path must be ``fast`` (RFC 4180 read by pyarrow,
                         every record's start line from ``RecordScanner``) and its rows read must be
                         the number of records, not of lines.

    Unique key (part ``unique``): the yellow_trips contract plus ``unique_key: [pickup_at,
    dropoff_at, pickup_location_id, dropoff_location_id, fare_amount]``, checked by the engine after
    the pass with polars over the staged rows. The key is unique in the generated trips (checked at
    10M rows, seed 7), so on the base file it finds nothing and the cost is the check alone:

    ``platform_key``       the base file, with the key; against ``platform`` (same file, no key).
    ``platform_dups``      a variant where 0.1 % of the rows are copies of an earlier row
                           (``trips(duplicate_rate=0.001)``), no key: the baseline for the next one.
    ``platform_dups_key``  that file with the key: the duplicates are found, dropped from the staged
                           Parquet (rewritten) and their raw text read again from the source for
                           quarantine (a second pass over the file).

    In the platform child of a keyed run the engine's key steps (``engine.arrow._duplicates``,
    ``_drop_lines``, ``ArrowEngine._records_at``) are wrapped with a timer, to show where the cost
    goes (``key_phases`` in the JSON: find, drop, read back); the contract variants are built in the
    child from the text of ``platform/zones/mobility.yaml`` (a temporary zone file loaded with
    ``core.zones.load_zone``), before the clock starts. The real declarations are not changed.

How
    The CSVs are generated once into ``bench/out/`` (``yellow_tripdata_bench_<rows>.csv``, shared
    with ``dbt_bench.py``, and ``..._notes.csv``, ``..._dups.csv``) and reused while their
    ``.meta.json`` sidecar matches (rows, seed, error rate, variant option, size); the sidecar also
    keeps what was planted (multi-line notes, duplicated rows). ``--csv`` uses an existing file as
    the base file instead; the runs on generated variants are then skipped. Each run is its own
    child process (this script re-invoked with ``--worker``), so its peak memory is its own: the
    child reports its ``VmHWM`` (``/proc/self/status``: the peak RSS of its own address space,
    interpreter and imports included; ``ru_maxrss`` where there is no ``/proc``) as JSON on its
    last stdout line. (On Linux a child's ``getrusage(RUSAGE_SELF).ru_maxrss`` starts from the
    driver's own peak, carried over the exec; it is kept in the JSON as ``ru_maxrss_bytes``.) The
    wall time is measured inside the child around the work only (imports, schema construction and
    contract compilation excluded, as they happen once per process); the child's whole lifetime,
    as seen from here, is kept in the JSON as ``process_seconds``. With ``--repeat N`` each run is
    made N times and the fastest is reported, with the largest peak seen. Before the runs every
    file is read once, so every run starts with its file in the page cache. Outputs go to
    ``bench/out/work_*`` (git-ignored) and are deleted after each run unless ``--keep-outputs``.

    rows/s counts data records of the CSV (for the quoted variant: records, not lines); MB/s is CSV
    bytes (10^6) per second; peak RSS is in MiB. Ratios are wall times of the same run. Targets
    reported (not asserted): platform ≤ 1.5× pyarrow wall time, ≤ 1.3× DuckDB's typed read, platform
    ≥ 3× faster than pandas + pandera, platform peak RSS ≤ 0.5 GiB. Checks reported (not asserted):
    the quoted variant is read on the fast path, all its records are read, and it stages and
    quarantines the same rows as the base file; the key finds nothing on the base file and exactly
    the planted copies of clean rows on the duplicates file.

Usage (from the repository root)::

    python bench/staging_bench.py                         # 10M rows, files generated once into bench/out/
    python bench/staging_bench.py --rows 200000           # quick run
    python bench/staging_bench.py --csv /tmp/bench/yellow_tripdata_10m.csv
    python bench/staging_bench.py --only platform         # one run (or several)
    python bench/staging_bench.py --only quoted unique    # parts: base, quoted, unique (with their baselines)

The Markdown tables are printed and, with everything else, written to ``bench/out/staging_bench.json``.
"""

from __future__ import annotations

import argparse
import csv as csv_module
import datetime as dt
import json
import os
import platform as pyplatform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.zones import Dataset

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"


@dataclass(frozen=True)
class Run:
    """One measurement: an approach on one of the files, with its options."""

    approach: str  # the worker: pyarrow, pandas or platform
    file: str  # a key of FILES
    label: str
    note_column: bool = False  # pyarrow: newlines_in_values, trip_note as text; platform: the contract + trip_note
    unique_key: bool = False  # platform: the contract + UNIQUE_KEY


RUNS = {  # in the order they run
    "pyarrow": Run("pyarrow", "base", "pyarrow CSV → Parquet (no validation)"),
    "pandas": Run("pandas", "base", "pandas read_csv + pandera + to_parquet"),
    "duckdb": Run("duckdb", "base", "DuckDB typed `read_csv` → Parquet (2 threads, bad rows skipped)"),
    "platform": Run("platform", "base", "platform `stage_local_file` (yellow_trips contract)"),
    "pyarrow_quoted": Run("pyarrow", "notes", "pyarrow CSV → Parquet, `newlines_in_values=True` (no validation)",
                          note_column=True),
    "platform_quoted": Run("platform", "notes", "platform `stage_local_file` (yellow_trips + `trip_note`)",
                           note_column=True),
    "platform_key": Run("platform", "base", "platform, yellow_trips + `unique_key`", unique_key=True),
    "platform_dups": Run("platform", "dups", "platform, yellow_trips (no key)"),
    "platform_dups_key": Run("platform", "dups", "platform, yellow_trips + `unique_key`", unique_key=True),
}
PARTS = {  # --only PART: the part's runs and the baselines its ratios need
    "base": ("pyarrow", "duckdb", "pandas", "platform"),
    "quoted": ("platform", "pyarrow_quoted", "platform_quoted"),
    "unique": ("platform", "platform_key", "platform_dups", "platform_dups_key"),
}
LABELS = {name: run.label for name, run in RUNS.items()}
DEFAULT_ROWS = 10_000_000
SEED, ERROR_RATE = 7, 0.001
NOTE_RATE, DUPLICATE_RATE = 0.01, 0.001
FILES = {  # generated file → its name's suffix and the trips() options that make it
    "base": ("", {}),  # shared with dbt_bench.py
    "notes": ("_notes", {"note_rate": NOTE_RATE}),
    "dups": ("_dups", {"duplicate_rate": DUPLICATE_RATE}),
}
FILE_LABELS = {"base": "base file", "notes": "1% quoted line breaks", "dups": "0.1% duplicated rows"}
NOTE_COLUMN = "trip_note"
UNIQUE_KEY = ("pickup_at", "dropoff_at", "pickup_location_id", "dropoff_location_id", "fare_amount")
TS_FORMAT = "%Y-%m-%d %H:%M:%S"
TS_COLUMNS = ("tpep_pickup_datetime", "tpep_dropoff_datetime")
INT_COLUMNS = ("VendorID", "passenger_count", "RatecodeID", "PULocationID", "DOLocationID", "payment_type")
STRING_COLUMNS = ("store_and_fwd_flag", NOTE_COLUMN)
GIB = 1 << 30
MIB = 1 << 20


# ----------------------------------------------------------------------------------------------
# Workers (run in a child process each)


def _ru_maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # kilobytes on Linux, bytes on macOS


def _peak_rss_bytes() -> int:
    """This process's own peak RSS. On Linux ``ru_maxrss`` is no good for a child: the kernel
    carries the parent's high-water mark over the exec (subprocess uses vfork), so every child
    would report at least what the driver ever held (while generating a file, say). ``VmHWM`` is
    the high-water mark of the process's own address space, interpreter and imports included."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return _ru_maxrss_bytes()


def _size(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


def work_pyarrow(csv: Path, work: Path, block_size: int, run: Run) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    with open(csv, encoding="utf-8", newline="") as f:
        header = next(csv_module.reader(f))
    types: dict[str, pa.DataType] = {}
    for name in header:
        if name in INT_COLUMNS:
            types[name] = pa.int16()
        elif name in STRING_COLUMNS or name in TS_COLUMNS:
            types[name] = pa.string()
        else:
            types[name] = pa.float64()
    out = work / "staging.parquet"
    t0 = time.perf_counter()
    reader = pacsv.open_csv(
        csv,
        read_options=pacsv.ReadOptions(block_size=block_size),
        parse_options=pacsv.ParseOptions(newlines_in_values=run.note_column),
        convert_options=pacsv.ConvertOptions(column_types=types),
    )
    schema = pa.schema([pa.field(f.name, pa.timestamp("us")) if f.name in TS_COLUMNS else f for f in reader.schema])
    ts_idx = [i for i, f in enumerate(reader.schema) if f.name in TS_COLUMNS]
    rows = 0
    with pq.ParquetWriter(out, schema) as writer:
        for batch in reader:
            cols = list(batch.columns)
            for i in ts_idx:
                cols[i] = pc.strptime(cols[i], format=TS_FORMAT, unit="us", error_is_null=True)
            writer.write_batch(pa.RecordBatch.from_arrays(cols, schema=schema))
            rows += batch.num_rows
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows_read": rows, "rows_staged": rows, "rows_quarantined": 0,
            "output_bytes": _size(out), "block_size": block_size, "newlines_in_values": run.note_column}


def work_duckdb(csv: Path, work: Path, block_size: int, run: Run) -> dict[str, Any]:
    """DuckDB's own typed read: the contract's declared types (core.types), 2 threads, rows that do
    not convert skipped (``ignore_errors``): no rules, no reasons, no line numbers."""
    import duckdb

    ds = bench_dataset(note_column=run.note_column)
    with open(csv, encoding="utf-8", newline="") as f:
        header = next(csv_module.reader(f))
    by_source = {(c.source or n): c.contract_type.duckdb() for n, c in ds.contract.spec.columns.items()}
    types = {h: by_source.get(h, "VARCHAR") for h in header}
    out = work / "staging.parquet"
    con = duckdb.connect()
    con.execute("SET threads = 2")
    t0 = time.perf_counter()
    con.execute("COPY (SELECT * FROM read_csv(?, header = true, types = ?, ignore_errors = true)) "
                f"TO '{out}' (FORMAT parquet)", [str(csv), types])
    seconds = time.perf_counter() - t0
    rows = con.execute("SELECT count(*) FROM read_parquet(?)", [str(out)]).fetchone()[0]  # type: ignore[index]
    return {"seconds": seconds, "rows_read": rows, "rows_staged": rows, "rows_quarantined": 0,
            "output_bytes": _size(out), "threads": 2}


def work_pandas(csv: Path, work: Path, block_size: int, run: Run) -> dict[str, Any]:
    import pandas as pd
    import pandera.pandas as pa

    schema = pa.DataFrameSchema(
        {
            "tpep_pickup_datetime": pa.Column(pa.DateTime, nullable=False),
            "tpep_dropoff_datetime": pa.Column(pa.DateTime, nullable=False),
            "passenger_count": pa.Column(checks=pa.Check.in_range(0, 9), nullable=True),
            "trip_distance": pa.Column(checks=pa.Check.ge(0), nullable=True),
            "PULocationID": pa.Column(checks=pa.Check.in_range(1, 265), nullable=False),
            "DOLocationID": pa.Column(checks=pa.Check.in_range(1, 265), nullable=False),
            "payment_type": pa.Column(checks=pa.Check.isin([1, 2, 3, 4, 5, 6]), nullable=True),
        },
        checks=[
            pa.Check(lambda df: df["tpep_dropoff_datetime"] >= df["tpep_pickup_datetime"],
                     name="dropoff_not_before_pickup"),
        ],
    )
    staging, quarantine = work / "staging.parquet", work / "quarantine.parquet"
    t0 = time.perf_counter()
    df = pd.read_csv(csv, parse_dates=list(TS_COLUMNS), date_format=TS_FORMAT)
    for col in TS_COLUMNS:  # a column with one unparseable value stays text: coerce it
        if not pd.api.types.is_datetime64_any_dtype(df[col]):
            df[col] = pd.to_datetime(df[col], format=TS_FORMAT, errors="coerce")
    t1 = time.perf_counter()
    try:
        schema.validate(df, lazy=True)
        bad = pd.Index([])
    except pa.errors.SchemaErrors as e:
        bad = pd.Index(e.failure_cases["index"].dropna().unique())
    t2 = time.perf_counter()
    df.drop(index=bad).to_parquet(staging, index=False)
    df.loc[bad].to_parquet(quarantine, index=False)
    t3 = time.perf_counter()
    return {"seconds": t3 - t0, "rows_read": len(df), "rows_staged": len(df) - len(bad),
            "rows_quarantined": len(bad), "output_bytes": _size(staging, quarantine),
            "phases": {"read_csv": t1 - t0, "validate": t2 - t1, "to_parquet": t3 - t2}}


def bench_dataset(note_column: bool = False, unique_key: tuple[str, ...] = ()) -> Dataset:
    """``mobility.yellow_trips`` as declared, or its contract plus the optional ``trip_note`` column
    and/or a unique key: the zone file's text changed and loaded from a temporary zones directory
    (the contract is compiled here, before any clock starts)."""
    from core.paths import ZONES_DIR
    from core.zones import all_datasets, load_zone

    if not note_column and not unique_key:
        ds = next(d for d in all_datasets() if d.insight_zone == "mobility" and d.name == "yellow_trips")
        ds.contract  # noqa: B018 - compiled once per process, as in Dagster
        return ds
    import yaml

    zone = yaml.safe_load((ZONES_DIR / "mobility.yaml").read_text(encoding="utf-8"))
    contract = zone["datasets"]["yellow_trips"]["contract"]
    if note_column:
        contract["columns"][NOTE_COLUMN] = {"type": "string", "required": False,
                                            "description": "free text, may hold line breaks (benchmark only)"}
    if unique_key:
        contract["unique_key"] = list(unique_key)
    with tempfile.TemporaryDirectory(prefix="staging_bench_zones_") as tmp:
        path = Path(tmp) / "mobility.yaml"
        path.write_text(yaml.safe_dump(zone, sort_keys=False, allow_unicode=True), encoding="utf-8")
        ds = next(d for d in load_zone(path).datasets if d.name == "yellow_trips")
        ds.contract  # noqa: B018
    return ds


def _time_key_steps(phases: dict[str, float]) -> None:
    """Wrap the engine's unique-key steps with a timer (seconds summed into ``phases``)."""
    import engine.arrow as arrow

    def timed(name: str, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    arrow._duplicates = timed("find_duplicates", arrow._duplicates)
    arrow._drop_lines = timed("drop_from_staging", arrow._drop_lines)
    arrow.ArrowEngine._records_at = timed("read_back_source", arrow.ArrowEngine._records_at)


def work_platform(csv: Path, work: Path, block_size: int, run: Run) -> dict[str, Any]:
    from engine import stage_local_file
    from engine.arrow import BLOCK_SIZE

    ds = bench_dataset(note_column=run.note_column, unique_key=UNIQUE_KEY if run.unique_key else ())
    phases: dict[str, float] = {}
    if run.unique_key:
        _time_key_steps(phases)
    staging, quarantine = work / "staging.parquet", work / "quarantine.parquet"
    t0 = time.perf_counter()
    result = stage_local_file(ds, csv, str(staging), str(quarantine))
    seconds = time.perf_counter() - t0
    figures = {"seconds": seconds, "rows_read": result.rows_read, "rows_staged": result.rows_staged,
               "rows_quarantined": result.rows_quarantined, "output_bytes": _size(staging, quarantine),
               "read_path": result.read_path, "slow_path": result.slow_path, "violations": dict(result.violations),
               "duplicates": result.duplicates, "block_size": BLOCK_SIZE}
    if run.unique_key:
        figures["unique_key"] = list(UNIQUE_KEY)
        figures["key_phases"] = phases
    return figures


WORKERS = {"pyarrow": work_pyarrow, "duckdb": work_duckdb, "pandas": work_pandas, "platform": work_platform}


def worker_main(name: str, csv: Path, work: Path, block_size: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    run = RUNS[name]
    figures = WORKERS[run.approach](csv, work, block_size, run)
    figures["peak_rss_bytes"] = _peak_rss_bytes()
    figures["ru_maxrss_bytes"] = _ru_maxrss_bytes()  # for comparison: floored by the driver's peak on Linux
    print(json.dumps(figures), flush=True)


# ----------------------------------------------------------------------------------------------
# Driver


def count_rows(path: Path) -> int:
    """Data lines (newlines after the header); reading the file also warms the page cache. A file
    with quoted line breaks has more lines than records."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(16 * MIB):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return max(lines - 1, 0)


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".meta.json")


def ensure_csv(rows: int, out_dir: Path, variant: str = "base") -> tuple[Path, bool]:
    """The generated file for ``rows`` rows (``variant``: a key of FILES), reused when its sidecar
    says it is complete. The sidecar also records what the generator planted."""
    suffix, options = FILES[variant]
    path = out_dir / f"yellow_tripdata_bench_{rows}{suffix}.csv"
    meta_path = _meta_path(path)
    want = {"rows": rows, "seed": SEED, "error_rate": ERROR_RATE, **options}
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in want} == want and meta.get("bytes") == path.stat().st_size:
            return path, True
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from cli.generate import trips

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.partial")
    print(f"generating {rows:,} rows into {path} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    planted: dict[str, int] = {}
    trips(tmp, rows, seed=SEED, error_rate=ERROR_RATE, counts=planted, **options)
    tmp.replace(path)
    meta_path.write_text(json.dumps({**want, **planted, "bytes": path.stat().st_size}))
    print(f"generated in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return path, False


def engine_block_size() -> int:
    """The engine's batch size, so that the pyarrow floor reads the same blocks (imported here,
    in the driver, to keep polars and pandera out of the pyarrow child's memory)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from engine.arrow import BLOCK_SIZE

    return BLOCK_SIZE


def run_child(name: str, csv: Path, work: Path, python: str, block_size: int) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [python, str(Path(__file__).resolve()), "--worker", name, "--csv", str(csv), "--work-dir", str(work),
           "--block-size", str(block_size)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    process_seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: worker failed with exit code {proc.returncode}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["process_seconds"] = process_seconds
    return figures


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _check(what: str, measured: Any, expected: Any) -> dict[str, Any]:
    return {"check": what, "measured": measured, "expected": expected,
            "met": None if measured is None or expected is None else measured == expected}


def summarise(results: dict[str, dict[str, Any]], files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for name, r in results.items():
        f = files[RUNS[name].file]
        r["file"] = RUNS[name].file
        r["rows_per_second"] = f["records"] / r["seconds"]
        r["mb_per_second"] = f["bytes"] / 1e6 / r["seconds"]
        r["peak_rss_mib"] = r["peak_rss_bytes"] / MIB
    sec = {name: results[name]["seconds"] if name in results else None for name in RUNS}
    platform_vs_pyarrow = _ratio(sec["platform"], sec["pyarrow"])
    platform_vs_duckdb = _ratio(sec["platform"], sec["duckdb"])
    pandas_vs_platform = _ratio(sec["pandas"], sec["platform"])
    peak = results["platform"]["peak_rss_bytes"] if "platform" in results else None
    targets = [
        {"target": "platform wall time ≤ 1.5× pyarrow", "measured": platform_vs_pyarrow, "unit": "×",
         "met": None if platform_vs_pyarrow is None else platform_vs_pyarrow <= 1.5},
        {"target": "platform wall time ≤ 1.3× DuckDB typed read", "measured": platform_vs_duckdb, "unit": "×",
         "met": None if platform_vs_duckdb is None else platform_vs_duckdb <= 1.3},
        {"target": "platform ≥ 3× faster than pandas + pandera", "measured": pandas_vs_platform, "unit": "×",
         "met": None if pandas_vs_platform is None else pandas_vs_platform >= 3},
        {"target": "platform peak RSS ≤ 0.5 GiB", "measured": None if peak is None else peak / MIB, "unit": "MiB",
         "met": None if peak is None else peak <= GIB // 2},
    ]
    ratios = {
        "platform_over_pyarrow": platform_vs_pyarrow,
        "platform_over_duckdb": platform_vs_duckdb,
        "pandas_over_platform": pandas_vs_platform,
        # quoted line breaks
        "platform_quoted_over_pyarrow_quoted": _ratio(sec["platform_quoted"], sec["pyarrow_quoted"]),
        "platform_quoted_over_platform": _ratio(sec["platform_quoted"], sec["platform"]),
        "pyarrow_quoted_over_pyarrow": _ratio(sec["pyarrow_quoted"], sec["pyarrow"]),
        # unique key: against the platform without the key, same file
        "platform_key_over_platform": _ratio(sec["platform_key"], sec["platform"]),
        "platform_key_seconds": _diff(sec["platform_key"], sec["platform"]),
        "platform_dups_key_over_platform_dups": _ratio(sec["platform_dups_key"], sec["platform_dups"]),
        "platform_dups_key_seconds": _diff(sec["platform_dups_key"], sec["platform_dups"]),
        "platform_dups_over_platform": _ratio(sec["platform_dups"], sec["platform"]),
    }
    checks = []
    if "platform_quoted" in results:
        q, notes = results["platform_quoted"], files["notes"]
        checks.append(_check("quoted line breaks: platform read path", q["read_path"], "fast"))
        checks.append(_check("quoted line breaks: platform rows read = records", q["rows_read"], notes["records"]))
        if "platform" in results:
            base = results["platform"]
            checks.append(_check("quoted line breaks: rows staged / quarantined as on the base file",
                                 f"{q['rows_staged']:,} / {q['rows_quarantined']:,}",
                                 f"{base['rows_staged']:,} / {base['rows_quarantined']:,}"))
    if "pyarrow_quoted" in results:
        checks.append(_check("quoted line breaks: pyarrow rows read = records", results["pyarrow_quoted"]["rows_read"],
                             files["notes"]["records"]))
    if "platform_key" in results:
        checks.append(_check("unique key, base file: duplicates found", results["platform_key"]["duplicates"], 0))
    if "platform_dups_key" in results:
        k = results["platform_dups_key"]
        checks.append(_check("unique key, duplicated rows: duplicates found = planted copies of clean rows",
                             k["duplicates"], files["dups"].get("duplicated_clean_rows")))
        if "platform_dups" in results:
            d = results["platform_dups"]
            checks.append(_check("unique key, duplicated rows: staged = staged without key − duplicates",
                                 k["rows_staged"], d["rows_staged"] - k["duplicates"]))
    return {"ratios": ratios, "targets": targets, "checks": checks}


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _v(value: Any) -> str:
    return "n/a" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def markdown(results: dict[str, dict[str, Any]], summary: dict[str, Any], files: dict[str, dict[str, Any]]) -> str:
    ratios = summary["ratios"]
    lines: list[str] = []
    base_runs = [n for n in PARTS["base"] if n in results]
    if base_runs:
        base = files["base"]
        lines += [
            f"Staging {base['records']:,} rows ({base['bytes'] / 1e6:,.0f} MB of CSV), {os.cpu_count()} CPUs, "
            f"Python {pyplatform.python_version()}:",
            "",
            "| approach | wall time (s) | rows/s | MB/s | peak RSS (MiB) | rows staged | rows quarantined |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name in base_runs:
            r = results[name]
            lines.append(f"| {LABELS[name]} | {r['seconds']:.1f} | {r['rows_per_second']:,.0f} | "
                         f"{r['mb_per_second']:.1f} | {r['peak_rss_mib']:,.0f} | {r['rows_staged']:,} | "
                         f"{r['rows_quarantined']:,} |")
        lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
        for t in summary["targets"]:
            measured = "n/a" if t["measured"] is None else (
                f"{t['measured']:.2f}×" if t["unit"] == "×" else f"{t['measured']:,.0f} MiB")
            met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
            lines.append(f"| {t['target']} | {measured} | {met} |")
    quoted_runs = [n for n in ("pyarrow_quoted", "platform_quoted") if n in results]
    if quoted_runs:
        notes = files["notes"]
        planted = notes.get("multiline_notes")
        lines += [
            "",
            f"Quoted line breaks: {notes['records']:,} records"
            + (f" ({planted:,} with a quoted line break in `{NOTE_COLUMN}`)" if planted is not None else "")
            + f", {notes['lines']:,} lines, {notes['bytes'] / 1e6:,.0f} MB of CSV:",
            "",
            "| approach | wall time (s) | rows/s | MB/s | peak RSS (MiB) | rows read | staged / quarantined | "
            "read path | vs pyarrow, same file | vs same approach, base file |",
            "|---|---:|---:|---:|---:|---:|---:|:---:|---:|---:|",
        ]
        same_file = {"pyarrow_quoted": 1.0 if "pyarrow_quoted" in results else None,
                     "platform_quoted": ratios["platform_quoted_over_pyarrow_quoted"]}
        base_file = {"pyarrow_quoted": ratios["pyarrow_quoted_over_pyarrow"],
                     "platform_quoted": ratios["platform_quoted_over_platform"]}
        for name in quoted_runs:
            r = results[name]
            staged = f"{r['rows_staged']:,} / {r['rows_quarantined']:,}" if RUNS[name].approach == "platform" else "—"
            lines.append(f"| {LABELS[name]} | {r['seconds']:.1f} | {r['rows_per_second']:,.0f} | "
                         f"{r['mb_per_second']:.1f} | {r['peak_rss_mib']:,.0f} | {r['rows_read']:,} | {staged} | "
                         f"{r.get('read_path', '—')} | {_x(same_file[name])} | {_x(base_file[name])} |")
    key_runs = [n for n in PARTS["unique"] if n in results]
    if set(key_runs) - {"platform"}:  # the no-key baseline alone is the first table's
        lines += [
            "",
            f"Unique key `[{', '.join(UNIQUE_KEY)}]`, checked after the pass (polars over the staged rows):",
            "",
            "| run | file | wall time (s) | rows/s | peak RSS (MiB) | duplicates | staged / quarantined | "
            "key cost (s) | vs no key, same file | find / drop / read back (s) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        cost = {"platform_key": (ratios["platform_key_seconds"], ratios["platform_key_over_platform"]),
                "platform_dups_key": (ratios["platform_dups_key_seconds"],
                                      ratios["platform_dups_key_over_platform_dups"])}
        for name in key_runs:
            r = results[name]
            label = "platform, yellow_trips (no key)" if name == "platform" else LABELS[name]
            seconds, ratio = cost.get(name, (None, None))
            keyed = RUNS[name].unique_key
            ph = r.get("key_phases", {})
            phases = " / ".join("–" if k not in ph else f"{ph[k]:.2f}"
                                for k in ("find_duplicates", "drop_from_staging", "read_back_source"))
            lines.append(f"| {label} | {FILE_LABELS[RUNS[name].file]} | {r['seconds']:.1f} | "
                         f"{r['rows_per_second']:,.0f} | {r['peak_rss_mib']:,.0f} | "
                         f"{r['duplicates']:,} | {r['rows_staged']:,} / {r['rows_quarantined']:,} | "
                         f"{_s(seconds) if keyed else '—'} | {_x(ratio) if keyed else '—'} | "
                         f"{phases if keyed else '—'} |")
    if summary["checks"]:
        lines += ["", "| check | measured | expected | met |", "|---|---:|---:|:---:|"]
        for c in summary["checks"]:
            met = "n/a" if c["met"] is None else ("yes" if c["met"] else "**no**")
            lines.append(f"| {c['check']} | {_v(c['measured'])} | {_v(c['expected'])} | {met} |")
    return "\n".join(lines).lstrip("\n")


def versions(packages: tuple[str, ...] = ("pyarrow", "polars", "pandas", "pandera", "numpy")) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": pyplatform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def selected_runs(only: list[str] | None) -> list[str]:
    """The runs to make, in RUNS order: all of them, or those named (a part names its runs and baselines)."""
    if not only:
        return list(RUNS)
    wanted = {name for item in only for name in PARTS.get(item, (item,))}
    return [name for name in RUNS if name in wanted]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                   help=f"rows of the generated CSVs (default {DEFAULT_ROWS:,}); ignored with --csv")
    p.add_argument("--csv", type=Path,
                   help="use this existing TLC-like CSV as the base file (the runs on generated variants are skipped)")
    p.add_argument("--only", nargs="+", choices=[*PARTS, *RUNS], metavar="PART_OR_RUN",
                   help=f"run only these parts ({', '.join(PARTS)}: each with the baselines its ratios need) "
                        f"or runs ({', '.join(RUNS)})")
    p.add_argument("--out-dir", type=Path, default=OUT_DIR, help="generated CSVs, outputs and JSON (default bench/out)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the child processes")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs of each measurement; the fastest is reported, with the largest peak RSS (default 1)")
    p.add_argument("--keep-outputs", action="store_true", help="keep the Parquet files each run wrote")
    p.add_argument("--block-size", type=int,
                   help="CSV block size for pyarrow, in bytes (default: engine.arrow.BLOCK_SIZE)")
    p.add_argument("--worker", choices=RUNS, help=argparse.SUPPRESS)
    p.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.csv, args.work_dir, args.block_size)
        return
    out_dir: Path = args.out_dir.resolve()
    names = selected_runs(args.only)
    if args.csv:
        skipped = [n for n in names if RUNS[n].file != "base"]
        if skipped:
            print(f"--csv: skipping {', '.join(skipped)} (they need generated variants)", file=sys.stderr)
        names = [n for n in names if n not in skipped]
    files: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(RUNS[n].file for n in names):
        if args.csv:
            path, reused, meta = args.csv.resolve(), True, {}
            if not path.is_file():
                raise SystemExit(f"{path}: no such file")
        else:
            path, reused = ensure_csv(args.rows, out_dir, variant)
            meta = json.loads(_meta_path(path).read_text())
        lines = count_rows(path)  # also puts the file in the page cache for every run alike
        records = meta.get("rows", lines)  # a generated file: its records; quoted line breaks add lines
        files[variant] = {**{k: v for k, v in meta.items() if k not in ("rows", "bytes")}, "path": str(path),
                          "records": records, "lines": lines, "bytes": path.stat().st_size, "generated": not reused}
        print(f"{path}: {records:,} records, {lines:,} lines, {files[variant]['bytes'] / 1e6:,.0f} MB"
              f"{' (reused)' if reused else ''}", file=sys.stderr)
    block_size = args.block_size or engine_block_size()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        csv = Path(files[RUNS[name].file]["path"])
        work = out_dir / f"work_{name}"
        shutil.rmtree(work, ignore_errors=True)
        runs = []
        for i in range(args.repeat):
            print(f"running {name} ({i + 1}/{args.repeat}) ...", file=sys.stderr, flush=True)
            runs.append(run_child(name, csv, work, args.python, block_size))
            print(f"  {runs[-1]['seconds']:.1f} s, peak {runs[-1]['peak_rss_bytes'] / MIB:,.0f} MiB",
                  file=sys.stderr, flush=True)
            if not args.keep_outputs:
                shutil.rmtree(work, ignore_errors=True)
        best = min(runs, key=lambda r: r["seconds"])  # the fastest run; peak memory: the largest
        results[name] = {**best, "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
                         "runs_seconds": [r["seconds"] for r in runs]}
    summary = summarise(results, files)
    table = markdown(results, summary, files)
    print(table)
    base = files.get("base")
    report = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "csv": None if base is None else {"path": base["path"], "rows": base["records"], "bytes": base["bytes"],
                                          "generated": base["generated"]},
        "files": files,
        "block_size": block_size,
        "unique_key": list(UNIQUE_KEY),
        "machine": {"cpus": os.cpu_count(), "platform": pyplatform.platform()},
        "versions": versions(),
        "results": results,
        **summary,
        "markdown": table,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "staging_bench.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
