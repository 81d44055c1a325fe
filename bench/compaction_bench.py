"""Reading a table after 10,000 deliveries, before and after compaction (``engine.compaction``).

What is measured
    A local lake as ``--deliveries`` (default 10,000) hourly deliveries of ``finance.expense_reports``
    would leave it: one staged and one quarantine Parquet file per delivery (``--rows`` staged rows
    each, default 50, written with the platform's staged schema: the contract's columns plus
    ``_source_file`` and ``_source_line``; one quarantined row in every tenth delivery), recorded
    in the DuckDB catalog as published (records inserted in bulk, then the views built once, as
    10,000 publishes would have left them: publishing them one by one would take an hour and
    measure nothing here). Then, through a separate read-only connection, as a user queries:

    - ``count(*)`` of the staging view;
    - a one-day filter: ``count(*), sum(amount)`` of the rows submitted on one day;
    - ``count(*)`` of the quarantine view;

    each ``--repeat`` times (default 5; median and fastest), before and after ``compact_table``
    (the real compaction: per month of arrival, 2M rows per file at most), whose own time is
    reported too, with the number of files each view reads.

Usage (from the repository root)::

    python bench/compaction_bench.py
    python bench/compaction_bench.py --deliveries 2000 --repeat 3

Writes ``bench/out/compaction_bench.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.compaction import compact_table  # noqa: E402
from resources.catalog.duckdb import DuckDBCatalog  # noqa: E402
from resources.platform import PlatformResource  # noqa: E402

OUT_DIR = ROOT / "bench" / "out"
ZONE, DATASET = "finance", "expense_reports"
START = dt.datetime(2025, 10, 1, tzinfo=dt.UTC)
STAGING, QUARANTINE = "staging_finance.expense_reports", "quarantine_finance.expense_reports"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build_lake(home: Path, deliveries: int, rows: int) -> tuple[int, str]:
    """The lake and catalog of ``deliveries`` hourly deliveries; returns the staged row count and
    a day in the middle to filter on."""
    rng = np.random.default_rng(5)
    s_root, q_root = home / "lake" / "staging" / ZONE / DATASET, home / "lake" / "quarantine" / ZONE / DATASET
    records = []
    total = 0
    for n in range(deliveries):
        arrived = START + dt.timedelta(hours=n)
        name = f"expenses_{arrived:%Y-%m-%dT%H}.csv"
        key = f"{name}@{n:016x}"
        submitted = [arrived - dt.timedelta(seconds=int(s)) for s in rng.integers(60, 3600, rows)]
        staged = pa.table({
            "report_id": [f"ER-{20250000 + n * 10 + i // 8:08d}" for i in range(rows)],
            "line_number": pa.array([i % 8 + 1 for i in range(rows)], pa.int16()),
            "category": rng.choice(["travel", "meals", "lodging", "office"], rows).tolist(),
            "amount": pa.array(np.round(rng.lognormal(3.5, 1.0, rows), 2)),
            "currency": ["EUR"] * rows,
            "submitted_at": pa.array(submitted, pa.timestamp("us", "UTC")),
            "_source_file": [name] * rows,
            "_source_line": pa.array(range(2, rows + 2), pa.int64()),
        })
        bad = 1 if n % 10 == 0 else 0
        quarantined = pa.table({
            "report_id": ["ER-?"] * bad, "amount": ["-1"] * bad, "_source_file": [name] * bad,
            "_source_line": pa.array([rows + 2] * bad, pa.int64()), "_failed_rules": [["amount >= 0"]] * bad})
        version = "20260101T000000Z-bench000"
        for root, table in ((s_root, staged), (q_root, quarantined)):
            d = root / key / version
            d.mkdir(parents=True)
            pq.write_table(table, d / "part-0.parquet")
        records.append([ZONE, DATASET, key, name, int(arrived.timestamp() * 1e9),
                        str(s_root / key / version / "part-0.parquet"), str(q_root / key / version / "part-0.parquet"),
                        True, rows, bad, "published", None, "2026-01-01 00:00:00"])
        total += rows
    catalog = DuckDBCatalog(home / "catalog.duckdb")
    catalog.refresh_views(ZONE, DATASET)  # creates the records table
    con = duckdb.connect(str(catalog.path))
    try:
        con.executemany("INSERT INTO meta.partitions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", records)
    finally:
        con.close()
    catalog.refresh_views(ZONE, DATASET)
    middle = START + dt.timedelta(hours=deliveries // 2)
    return total, f"{middle:%Y-%m-%d}"


def files_in_view(home: Path, view: str) -> int:
    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    try:
        schema, name = view.split(".")
        [(sql,)] = con.execute("SELECT sql FROM duckdb_views() WHERE schema_name = ? AND view_name = ?",
                               [schema, name]).fetchall()
    finally:
        con.close()
    return sql.count(".parquet'")


def timed(home: Path, sql: str, params: list, repeat: int) -> dict:
    times, answer = [], None
    for _ in range(repeat):
        con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)  # a user's connection, each time
        try:
            t = time.perf_counter()
            answer = con.execute(sql, params).fetchall()
            times.append(time.perf_counter() - t)
        finally:
            con.close()
    return {"median_s": statistics.median(times), "fastest_s": min(times), "answer": answer}


def queries(home: Path, day: str, repeat: int) -> dict:
    d0 = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
    return {
        "count": timed(home, f"SELECT count(*) FROM {STAGING}", [], repeat),
        "one_day": timed(home, f"SELECT count(*), round(sum(amount), 2) FROM {STAGING} WHERE submitted_at >= ? "
                               "AND submitted_at < ?", [d0, d0 + dt.timedelta(days=1)], repeat),
        "quarantine_count": timed(home, f"SELECT count(*) FROM {QUARANTINE}", [], repeat),
        "files": {"staging": files_in_view(home, STAGING), "quarantine": files_in_view(home, QUARANTINE)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deliveries", type=int, default=10_000)
    p.add_argument("--rows", type=int, default=50)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="compaction_bench_") as tmp:
        home = Path(tmp)
        t = time.perf_counter()
        rows, day = build_lake(home, a.deliveries, a.rows)
        log(f"{a.deliveries:,} deliveries ({rows:,} staged rows) written and recorded in "
            f"{time.perf_counter() - t:.1f} s")
        before = queries(home, day, a.repeat)
        log(f"before: {json.dumps({k: v.get('median_s', v) for k, v in before.items()})}")
        lake = PlatformResource(environment="local", home=str(home)).lake()
        t = time.perf_counter()
        done, _ = compact_table(lake, DuckDBCatalog(home / "catalog.duckdb"), ZONE, DATASET, version="bench",
                                sort_by="submitted_at", retention_s=3600, now_ns=time.time_ns())
        compaction_s = time.perf_counter() - t
        log(f"compacted into {len(done)} file(s) per table in {compaction_s:.1f} s")
        after = queries(home, day, a.repeat)
        for k in ("count", "one_day", "quarantine_count"):
            assert after[k]["answer"] == before[k]["answer"], (k, before[k]["answer"], after[k]["answer"])

    rows_md = ["| query | before: median (fastest) | after: median (fastest) | before ÷ after |",
               "|---|---:|---:|---:|"]
    for k, label in (("count", "`count(*)` of staging"), ("one_day", f"one day ({day}) of staging"),
                     ("quarantine_count", "`count(*)` of quarantine")):
        b, f = before[k], after[k]
        rows_md.append(f"| {label} | {b['median_s'] * 1000:,.0f} ms ({b['fastest_s'] * 1000:,.0f}) | "
                       f"{f['median_s'] * 1000:,.0f} ms ({f['fastest_s'] * 1000:,.0f}) | "
                       f"{b['median_s'] / f['median_s']:,.1f}× |")
    rows_md.append(f"| files the staging / quarantine view reads | {before['files']['staging']:,} / "
                   f"{before['files']['quarantine']:,} | {after['files']['staging']:,} / "
                   f"{after['files']['quarantine']:,} | |")
    md = "\n".join(rows_md) + f"\n\nCompaction itself: {compaction_s:.1f} s for {a.deliveries:,} deliveries " \
                              f"({len(done)} compacted file(s) per table)."
    print(md)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = {"when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(), "args": vars(a),
           "rows": rows, "day": day, "before": before, "after": after, "compaction_s": compaction_s,
           "compacted": [c.__dict__ for c in done], "markdown": md}
    (OUT_DIR / "compaction_bench.json").write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
