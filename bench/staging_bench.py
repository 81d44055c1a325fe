"""Benchmark of the landing → staging step on one large TLC-like CSV file.

What is measured
    The same delivered CSV (default 10,000,000 rows of ``cli.generate.trips`` output, seed 7,
    0.1 % planted faults) is turned into Parquet by three approaches:

    ``pyarrow``   the floor: ``pyarrow.csv.open_csv`` streaming (``engine.arrow.BLOCK_SIZE`` blocks)
                  → ``pyarrow.parquet.ParquetWriter``, explicit column types, no validation.
                  The two timestamp columns are read as text and parsed per batch with
                  ``pyarrow.compute.strptime(error_is_null=True)``: a plain typed conversion
                  would abort the whole file on the first planted unparseable timestamp.
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

How
    The CSV is generated once into ``bench/out/`` and reused while its ``.meta.json`` sidecar
    matches (rows, seed, error rate, size); ``--csv`` uses an existing file instead. Each approach
    runs in its own child process (this script re-invoked with ``--worker``), so its peak memory
    is its own: the child reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (interpreter and
    imports included) as JSON on its last stdout line. The wall time is measured inside the child
    around the work only (imports, schema construction and contract compilation excluded, as they
    happen once per process); the child's whole lifetime, as seen from here, is kept in the JSON
    as ``process_seconds``. With ``--repeat N`` each approach runs N times and the fastest run is
    reported, with the largest peak seen. Before the runs the CSV is read once, so every approach
    starts with the file in the page cache. Outputs go to ``bench/out/work_*`` (git-ignored) and
    are deleted after each run unless ``--keep-outputs``.

    rows/s counts data rows of the CSV; MB/s is CSV bytes (10^6) per second; peak RSS is in MiB.
    Targets reported (not asserted): platform ≤ 1.5× pyarrow wall time, platform ≥ 3× faster
    than pandas + pandera, platform peak RSS < 1 GiB.

Usage (from the repository root)::

    python bench/staging_bench.py                         # 10M rows, generated once into bench/out/
    python bench/staging_bench.py --rows 200000           # quick run
    python bench/staging_bench.py --csv /tmp/bench/yellow_tripdata_10m.csv
    python bench/staging_bench.py --only platform         # one approach (or several)

The Markdown table is printed and, with everything else, written to ``bench/out/staging_bench.json``.
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
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"
APPROACHES = ("pyarrow", "pandas", "platform")
LABELS = {
    "pyarrow": "pyarrow CSV → Parquet (no validation)",
    "pandas": "pandas read_csv + pandera + to_parquet",
    "platform": "platform `stage_local_file` (yellow_trips contract)",
}
DEFAULT_ROWS = 10_000_000
SEED, ERROR_RATE = 7, 0.001
TS_FORMAT = "%Y-%m-%d %H:%M:%S"
TS_COLUMNS = ("tpep_pickup_datetime", "tpep_dropoff_datetime")
INT_COLUMNS = ("VendorID", "passenger_count", "RatecodeID", "PULocationID", "DOLocationID", "payment_type")
STRING_COLUMNS = ("store_and_fwd_flag",)
GIB = 1 << 30
MIB = 1 << 20


# ----------------------------------------------------------------------------------------------
# Workers (run in a child process each)


def _peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # kilobytes on Linux, bytes on macOS


def _size(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


def work_pyarrow(csv: Path, work: Path, block_size: int) -> dict[str, Any]:
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
            "output_bytes": _size(out), "block_size": block_size}


def work_pandas(csv: Path, work: Path, block_size: int) -> dict[str, Any]:
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


def work_platform(csv: Path, work: Path, block_size: int) -> dict[str, Any]:
    from core.zones import all_datasets
    from engine import stage_local_file
    from engine.arrow import BLOCK_SIZE

    ds = next(d for d in all_datasets() if d.insight_zone == "mobility" and d.name == "yellow_trips")
    ds.contract  # noqa: B018 - compiled once per process, as in Dagster
    staging, quarantine = work / "staging.parquet", work / "quarantine.parquet"
    t0 = time.perf_counter()
    result = stage_local_file(ds, csv, str(staging), str(quarantine))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows_read": result.rows_read, "rows_staged": result.rows_staged,
            "rows_quarantined": result.rows_quarantined, "output_bytes": _size(staging, quarantine),
            "slow_path": result.slow_path, "violations": dict(result.violations), "block_size": BLOCK_SIZE}


WORKERS = {"pyarrow": work_pyarrow, "pandas": work_pandas, "platform": work_platform}


def worker_main(approach: str, csv: Path, work: Path, block_size: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    figures = WORKERS[approach](csv, work, block_size)
    figures["peak_rss_bytes"] = _peak_rss_bytes()
    print(json.dumps(figures), flush=True)


# ----------------------------------------------------------------------------------------------
# Driver


def count_rows(path: Path) -> int:
    """Data rows (newlines after the header); reading the file also warms the page cache."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(16 * MIB):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return max(lines - 1, 0)


def ensure_csv(rows: int, out_dir: Path) -> tuple[Path, bool]:
    """The generated file for ``rows`` rows, reused when its sidecar says it is complete."""
    path = out_dir / f"yellow_tripdata_bench_{rows}.csv"
    meta_path = path.with_suffix(".meta.json")
    want = {"rows": rows, "seed": SEED, "error_rate": ERROR_RATE}
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
    trips(tmp, rows, seed=SEED, error_rate=ERROR_RATE)
    tmp.replace(path)
    meta_path.write_text(json.dumps({**want, "bytes": path.stat().st_size}))
    print(f"generated in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return path, False


def engine_block_size() -> int:
    """The engine's batch size, so that the pyarrow floor reads the same blocks (imported here,
    in the driver, to keep polars and pandera out of the pyarrow child's memory)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from engine.arrow import BLOCK_SIZE

    return BLOCK_SIZE


def run_child(approach: str, csv: Path, work: Path, python: str, block_size: int) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [python, str(Path(__file__).resolve()), "--worker", approach, "--csv", str(csv), "--work-dir", str(work),
           "--block-size", str(block_size)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    process_seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{approach}: worker failed with exit code {proc.returncode}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["process_seconds"] = process_seconds
    return figures


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(results: dict[str, dict[str, Any]], rows: int, csv_bytes: int) -> dict[str, Any]:
    for r in results.values():
        r["rows_per_second"] = rows / r["seconds"]
        r["mb_per_second"] = csv_bytes / 1e6 / r["seconds"]
        r["peak_rss_mib"] = r["peak_rss_bytes"] / MIB
    sec = {a: results[a]["seconds"] if a in results else None for a in APPROACHES}
    platform_vs_pyarrow = _ratio(sec["platform"], sec["pyarrow"])
    pandas_vs_platform = _ratio(sec["pandas"], sec["platform"])
    peak = results["platform"]["peak_rss_bytes"] if "platform" in results else None
    targets = [
        {"target": "platform wall time ≤ 1.5× pyarrow", "measured": platform_vs_pyarrow, "unit": "×",
         "met": None if platform_vs_pyarrow is None else platform_vs_pyarrow <= 1.5},
        {"target": "platform ≥ 3× faster than pandas + pandera", "measured": pandas_vs_platform, "unit": "×",
         "met": None if pandas_vs_platform is None else pandas_vs_platform >= 3},
        {"target": "platform peak RSS < 1 GiB", "measured": None if peak is None else peak / MIB, "unit": "MiB",
         "met": None if peak is None else peak < GIB},
    ]
    return {"ratios": {"platform_over_pyarrow": platform_vs_pyarrow, "pandas_over_platform": pandas_vs_platform},
            "targets": targets}


def markdown(results: dict[str, dict[str, Any]], summary: dict[str, Any], rows: int, csv_bytes: int) -> str:
    lines = [
        f"Staging {rows:,} rows ({csv_bytes / 1e6:,.0f} MB of CSV), {os.cpu_count()} CPUs, "
        f"Python {pyplatform.python_version()}:",
        "",
        "| approach | wall time (s) | rows/s | MB/s | peak RSS (MiB) | rows staged | rows quarantined |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for a in APPROACHES:
        if a in results:
            r = results[a]
            lines.append(f"| {LABELS[a]} | {r['seconds']:.1f} | {r['rows_per_second']:,.0f} | "
                         f"{r['mb_per_second']:.1f} | {r['peak_rss_mib']:,.0f} | {r['rows_staged']:,} | "
                         f"{r['rows_quarantined']:,} |")
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for t in summary["targets"]:
        measured = "n/a" if t["measured"] is None else (
            f"{t['measured']:.2f}×" if t["unit"] == "×" else f"{t['measured']:,.0f} MiB")
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {measured} | {met} |")
    return "\n".join(lines)


def versions(packages: tuple[str, ...] = ("pyarrow", "polars", "pandas", "pandera", "numpy")) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": pyplatform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                   help=f"rows of the generated CSV (default {DEFAULT_ROWS:,}); ignored with --csv")
    p.add_argument("--csv", type=Path, help="use this existing TLC-like CSV instead of generating one")
    p.add_argument("--only", nargs="+", choices=APPROACHES, metavar="APPROACH",
                   help=f"run only these approaches ({', '.join(APPROACHES)})")
    p.add_argument("--out-dir", type=Path, default=OUT_DIR, help="generated CSV, outputs and JSON (default bench/out)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the child processes")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs of each approach; the fastest is reported, with the largest peak RSS (default 1)")
    p.add_argument("--keep-outputs", action="store_true", help="keep the Parquet files each approach wrote")
    p.add_argument("--block-size", type=int,
                   help="CSV block size for pyarrow, in bytes (default: engine.arrow.BLOCK_SIZE)")
    p.add_argument("--worker", choices=APPROACHES, help=argparse.SUPPRESS)
    p.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.csv, args.work_dir, args.block_size)
        return
    out_dir: Path = args.out_dir.resolve()
    if args.csv:
        csv, reused = args.csv.resolve(), True
        if not csv.is_file():
            raise SystemExit(f"{csv}: no such file")
    else:
        csv, reused = ensure_csv(args.rows, out_dir)
    rows = count_rows(csv)  # also puts the file in the page cache for every approach alike
    csv_bytes = csv.stat().st_size
    print(f"{csv}: {rows:,} rows, {csv_bytes / 1e6:,.0f} MB{' (reused)' if reused else ''}", file=sys.stderr)
    block_size = args.block_size or engine_block_size()
    results: dict[str, dict[str, Any]] = {}
    for approach in APPROACHES:
        if args.only and approach not in args.only:
            continue
        work = out_dir / f"work_{approach}"
        shutil.rmtree(work, ignore_errors=True)
        runs = []
        for i in range(args.repeat):
            print(f"running {approach} ({i + 1}/{args.repeat}) ...", file=sys.stderr, flush=True)
            runs.append(run_child(approach, csv, work, args.python, block_size))
            print(f"  {runs[-1]['seconds']:.1f} s, peak {runs[-1]['peak_rss_bytes'] / MIB:,.0f} MiB",
                  file=sys.stderr, flush=True)
            if not args.keep_outputs:
                shutil.rmtree(work, ignore_errors=True)
        best = min(runs, key=lambda r: r["seconds"])  # the fastest run; peak memory: the largest
        results[approach] = {**best, "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
                             "runs_seconds": [r["seconds"] for r in runs]}
    summary = summarise(results, rows, csv_bytes)
    table = markdown(results, summary, rows, csv_bytes)
    print(table)
    report = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "csv": {"path": str(csv), "rows": rows, "bytes": csv_bytes, "generated": not reused},
        "block_size": block_size,
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
