"""Benchmark of exporting a mart to the serving database (``resources.serving``).

What is measured
    A synthetic mart-like table of N rows (default 1,000,000; seeded): key ``(day, zone_a,
    zone_b)`` (10,000 zone pairs per day), ``trips`` bigint, ``avg_distance`` and ``avg_fare``
    double precision, ``total_amount`` numeric(14,2), ``pickup_borough`` text. Against a fresh
    embedded PostgreSQL 16 (pgserver) in a temporary home, in this order:

    ``psql \\copy``     the baseline: the rows as a CSV file (written once by pyarrow, not timed),
                       loaded by ``psql -c "\\copy ... FROM file WITH (FORMAT csv)"`` into a fresh
                       table with the same columns and primary key. Also reported without the
                       primary key (raw COPY speed), for reference.
    ``first export``   ``ServingDatabase.export`` into a table that does not exist yet.
    ``re-export``      the same rows again (nothing changes: inserted = updated = deleted = 0).
    ``1% changed``     the same rows with ``trips`` changed in every 100th row.

    Every timing is wall time around one call (``export``: connect, COPY, diff, commit and all;
    psql: the whole process). Between steps, untimed: ``VACUUM (ANALYZE)`` of the tables (what
    autovacuum does between two daily exports) and a ``CHECKPOINT``, so that one step's dirty
    pages are not flushed during the next. With ``--repeat N`` each step runs N times and the
    fastest is reported. Nothing is asserted: the machine (2 cores) is shared.

Usage (from the repository root)::

    python bench/serving_bench.py                  # 1,000,000 rows
    python bench/serving_bench.py --rows 100000 --repeat 3

The Markdown table is printed and, with everything else, written to ``bench/out/serving_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from resources.serving import ServingDatabase, local_bin, stop_local  # noqa: E402

OUT_DIR = ROOT / "bench" / "out"
SCHEMA = "bench"
KEY = ["day", "zone_a", "zone_b"]
COLUMN_TYPES = {
    "day": "date",
    "zone_a": "integer",
    "zone_b": "integer",
    "trips": "bigint",
    "avg_distance": "double precision",
    "avg_fare": "double precision",
    "total_amount": "numeric(14,2)",
    "pickup_borough": "text",
}
ZONES = 100  # zone pairs per day: ZONES²
BOROUGHS = np.array(["Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island", "EWR", "Unknown"])


def mart(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    i = np.arange(rows)
    trips = rng.integers(1, 5_000, rows)
    cents = trips * rng.integers(500, 8_000, rows)
    return pa.table(
        {
            "day": pa.array(np.datetime64("2024-01-01", "D") + (i // (ZONES * ZONES)).astype("timedelta64[D]")),
            "zone_a": pa.array((i // ZONES) % ZONES + 1, pa.int32()),
            "zone_b": pa.array(i % ZONES + 1, pa.int32()),
            "trips": pa.array(trips),
            "avg_distance": pa.array(np.round(rng.gamma(2.0, 1.5, rows), 3)),
            "avg_fare": pa.array(cents / trips / 100),
            "total_amount": cents_to_decimal(cents),
            "pickup_borough": pa.array(BOROUGHS[rng.integers(0, len(BOROUGHS), rows)]),
        }
    )


def cents_to_decimal(cents: np.ndarray) -> pa.Array:
    """Exact decimal128(14,2) amounts: the unscaled 128-bit integers are the cents themselves."""
    unscaled = np.zeros((len(cents), 2), dtype="<i8")
    unscaled[:, 0] = cents
    unscaled[:, 1] = np.where(cents < 0, -1, 0)  # sign extension into the high word
    return pa.Array.from_buffers(pa.decimal128(14, 2), len(cents), [None, pa.py_buffer(unscaled.tobytes())])


def with_changes(table: pa.Table, every: int = 100) -> pa.Table:
    """``trips`` + 1 in every ``every``-th row."""
    trips = table.column("trips").to_numpy().copy()
    trips[::every] += 1
    return table.set_column(table.schema.get_field_index("trips"), "trips", pa.array(trips))


def psql_path() -> Path:
    bundled = local_bin("psql")  # pgserver ships the PostgreSQL 16 client with the server
    if bundled.exists():
        return bundled
    found = shutil.which("psql")
    if not found:
        raise SystemExit("no psql: neither pgserver's nor one on PATH")
    return Path(found)


def execute(db: ServingDatabase, statement: str) -> list[tuple]:
    with db.connect() as conn:
        conn.autocommit = True  # VACUUM cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute(statement)
            return cur.fetchall() if cur.description else []


def settle(db: ServingDatabase) -> None:
    execute(db, "VACUUM (ANALYZE)")
    execute(db, "CHECKPOINT")


def best_of(repeat: int, before: Callable[[], None], step: Callable[[], Any]) -> tuple[float, Any]:
    best: tuple[float, Any] | None = None
    for _ in range(repeat):
        before()
        t0 = time.perf_counter()
        out = step()
        seconds = time.perf_counter() - t0
        if best is None or seconds < best[0]:
            best = (seconds, out)
    assert best is not None
    return best


def column_defs(primary_key: bool) -> str:
    cols = ", ".join(f"{c} {t}" for c, t in COLUMN_TYPES.items())
    return cols + (f", PRIMARY KEY ({', '.join(KEY)})" if primary_key else "")


def psql_copy(db: ServingDatabase, psql: Path, csv: Path, table: str) -> None:
    command = f"\\copy {SCHEMA}.{table} ({', '.join(COLUMN_TYPES)}) FROM '{csv}' WITH (FORMAT csv)"
    subprocess.run(
        [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db.dsn_for_humans(), "-c", command],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=1, help="runs per step; the fastest is reported")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=OUT_DIR / "serving_bench.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    table = mart(args.rows, args.seed)
    changed = with_changes(table)
    # Short, so that the server's Unix socket can live in its data directory.
    work = Path(tempfile.mkdtemp(prefix="serving-bench-", dir="/tmp"))
    results: dict[str, dict[str, Any]] = {}
    try:
        csv = work / "mart.csv"
        t0 = time.perf_counter()
        pacsv.write_csv(table, csv, pacsv.WriteOptions(include_header=False))
        csv_seconds = time.perf_counter() - t0
        csv_bytes = csv.stat().st_size
        home = work / "home"
        t0 = time.perf_counter()
        db = ServingDatabase.local(home)
        start_seconds = time.perf_counter() - t0
        version = execute(db, "SHOW server_version")[0][0]
        psql = psql_path()
        print(f"{args.rows:,} rows, CSV {csv_bytes / 1e6:,.0f} MB; PostgreSQL {version} started in "
              f"{start_seconds:.1f} s; psql: {psql}", file=sys.stderr)  # fmt: skip
        execute(db, f"CREATE SCHEMA {SCHEMA}")

        def fresh(name: str, primary_key: bool) -> Callable[[], None]:
            def before() -> None:
                execute(db, f"DROP TABLE IF EXISTS {SCHEMA}.{name}")
                execute(db, f"CREATE TABLE {SCHEMA}.{name} ({column_defs(primary_key)})")
                execute(db, "CHECKPOINT")

            return before

        def export(rows: pa.Table) -> Callable[[], Any]:
            return lambda: db.export(rows, schema=SCHEMA, name="mart", key=KEY, column_types=COLUMN_TYPES)

        def drop_mart() -> None:
            execute(db, f"DROP TABLE IF EXISTS {SCHEMA}.mart")
            execute(db, "CHECKPOINT")

        flip = [False]

        def changed_export() -> Any:
            # Alternate, so that every repeat changes 1% of the rows.
            flip[0] = not flip[0]
            return export(changed if flip[0] else table)()

        steps: list[tuple[str, Callable[[], None], Callable[[], Any]]] = [
            ("psql \\copy, table with primary key (baseline)", fresh("copy_pk", True),
             lambda: psql_copy(db, psql, csv, "copy_pk")),
            ("psql \\copy, table without primary key", fresh("copy_nopk", False),
             lambda: psql_copy(db, psql, csv, "copy_nopk")),
            ("export into a new table", drop_mart, export(table)),
            ("re-export, nothing changed", lambda: settle(db), export(table)),
            ("re-export, 1% of rows changed", lambda: settle(db), changed_export),
        ]  # fmt: skip
        for label, before, step in steps:
            print(f"{label} ...", file=sys.stderr, flush=True)
            seconds, out = best_of(args.repeat, before, step)
            results[label] = {"seconds": seconds, "rows_per_second": args.rows / seconds}
            if out is not None:
                results[label].update(rows=out.rows, inserted=out.inserted, updated=out.updated, deleted=out.deleted)
            print(f"  {seconds:.2f} s", file=sys.stderr, flush=True)
        assert db.row_count(SCHEMA, "mart") == args.rows
    finally:
        stop_local(work / "home")
        shutil.rmtree(work, ignore_errors=True)

    baseline = results["psql \\copy, table with primary key (baseline)"]["seconds"]
    command = f"python bench/serving_bench.py --rows {args.rows}" + (
        f" --repeat {args.repeat}" if args.repeat > 1 else ""
    )
    lines = [
        f"**Export of {args.rows:,} mart rows** (`{command}`), PostgreSQL {version} (pgserver), {os.cpu_count()} cores",
        "",
        "| step | seconds | rows/s | vs psql \\copy | inserted / updated / deleted |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, r in results.items():
        counts = f"{r['inserted']:,} / {r['updated']:,} / {r['deleted']:,}" if "inserted" in r else ""
        lines.append(
            f"| {label} | {r['seconds']:.2f} | {r['rows_per_second'] / 1e6:.2f} M | "
            f"{r['seconds'] / baseline:.2f}× | {counts} |"
        )
    print("\n".join(lines))
    report = {
        "rows": args.rows,
        "repeat": args.repeat,
        "seed": args.seed,
        "csv_bytes": csv_bytes,
        "csv_render_seconds": csv_seconds,
        "server_start_seconds": start_seconds,
        "postgres_version": version,
        "machine": {"cpus": os.cpu_count(), "python": pyplatform.python_version(), "platform": pyplatform.platform()},
        "versions": {"pyarrow": pa.__version__, "psycopg2": psycopg2.__version__},
        "steps": results,
        "markdown": "\n".join(lines),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
