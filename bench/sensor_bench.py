"""Benchmark of one ingress-sensor tick over a folder of 10,000 delivered files.

What is measured
    A temporary ingress folder is filled with ``--files`` (default 10,000) small, distinct
    TLC-like CSV files named ``yellow_tripdata_2024-03_partNNNNN.csv`` (``--rows-per-file`` rows
    each, cut from one ``cli.generate.trips`` file). Then the body of the sensor
    (``assets.sensors.build_sensor``) minus Dagster is timed: the local store's listing of the
    folder, ``Cursor.load`` of the previous cursor, ``core.arrival.plan_tick`` with the real
    ``LocalStore.sha256`` hashing and ``settle_seconds=0``, and ``Cursor.dump`` of the new cursor:

    - first tick, ``max_files_per_tick`` = 500 (the default): 500 files hashed and requested;
    - first tick, unlimited: all files hashed and requested in one tick;
    - steady state: every file already in the cursor and every partition key known, so
      nothing is hashed (every tick, every 5 s, while handled files are still in the folder);
    - draining the backlog at 500 files per tick: how many ticks, and each tick's time;
    - ``list_files`` alone, and the cursor's JSON size in bytes after each kind of tick.

How
    Each tick kind runs ``--repeat`` times (default 5) from the same starting cursor (the plan is
    a pure function, so repeats are identical work); the median and the fastest are reported.
    The files were just written, so hashing reads them from the page cache: this is the local
    file-system cost, not S3's (there every hash is a GET). The Dagster parts of a tick (the
    instance's dynamic-partition query, run requests) are not included.

Usage (from the repository root)::

    python bench/sensor_bench.py
    python bench/sensor_bench.py --files 2000 --repeat 3

The Markdown table is printed and, with everything else, written to ``bench/out/sensor_bench.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform as pyplatform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/sensor_bench.py` puts bench/, not the root, on the path

from cli.generate import trips  # noqa: E402
from core.arrival import Cursor, FileEntry, TickPlan, plan_tick  # noqa: E402
from resources.environment import SensorConfig  # noqa: E402
from resources.lake.local import LocalStore  # noqa: E402

OUT_DIR = ROOT / "bench" / "out"
PATTERN = "yellow_tripdata_*.csv"  # mobility.yellow_trips source.pattern
UNLIMITED = sys.maxsize


@dataclass
class Tick:
    plan: TickPlan
    cursor_json: str
    hashed: int
    listed: int
    seconds: dict[str, float]  # total, list, plan (cursor load + planning + hashing), dump


def make_ingress(directory: Path, files: int, rows_per_file: int, seed: int) -> int:
    """Write ``files`` distinct small CSV files; returns their total size in bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        source = trips(Path(tmp) / "all.csv", files * rows_per_file, seed=seed)
        with open(source, "rb") as f:
            header = f.readline()
            body = f.readlines()
    total = 0
    for i in range(files):
        data = header + b"".join(body[i * rows_per_file:(i + 1) * rows_per_file])
        (directory / f"yellow_tripdata_2024-03_part{i:05d}.csv").write_bytes(data)
        total += len(data)
    return total


def list_files(store: LocalStore) -> list[FileEntry]:
    return [FileEntry(f.name, f.name, f.size, f.mtime_ns) for f in store.list()]


def tick(directory: str, cursor_json: str, max_files: int, known_keys: Iterable[str]) -> Tick:
    store = LocalStore(directory)
    hashed = 0

    def hash_file(f: FileEntry) -> str:
        nonlocal hashed
        hashed += 1
        return store.sha256(f.name)

    t0 = time.perf_counter()
    listing = list_files(store)
    t1 = time.perf_counter()
    plan = plan_tick(listing, Cursor.load(cursor_json), now_ns=time.time_ns(), settle_seconds=0,
                     max_files=max_files, pattern=PATTERN, known_keys=known_keys, hash_file=hash_file)
    t2 = time.perf_counter()
    dumped = plan.cursor.dump()
    t3 = time.perf_counter()
    return Tick(plan, dumped, hashed, len(listing),
                {"total": t3 - t0, "list": t1 - t0, "plan": t2 - t1, "dump": t3 - t2})


def repeated(run: Callable[[], Tick], repeat: int) -> tuple[Tick, dict[str, Any]]:
    ticks = [run() for _ in range(repeat)]
    totals = [t.seconds["total"] for t in ticks]
    figures = {
        "median_ms": statistics.median(totals) * 1e3,
        "min_ms": min(totals) * 1e3,
        "phases_median_ms": {k: statistics.median(t.seconds[k] for t in ticks) * 1e3 for k in ticks[0].seconds},
        "runs_ms": [s * 1e3 for s in totals],
    }
    return ticks[-1], figures


def describe(t: Tick, figures: dict[str, Any]) -> dict[str, Any]:
    return {"files_listed": t.listed, "files_hashed": t.hashed, "requests": len(t.plan.requests),
            "waiting": len(t.plan.waiting), "cursor_bytes": len(t.cursor_json.encode()), **figures}


def measure(directory: str, max_files: int, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    store = LocalStore(directory)
    listings = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = len(list_files(store))
        listings.append(time.perf_counter() - t0)
    out["list_files"] = {"files_listed": n, "median_ms": statistics.median(listings) * 1e3,
                         "min_ms": min(listings) * 1e3}

    first, figures = repeated(lambda: tick(directory, "", max_files, []), repeat)
    out["first_tick"] = describe(first, figures) | {"max_files_per_tick": max_files}

    full, figures = repeated(lambda: tick(directory, "", UNLIMITED, []), repeat)
    out["first_tick_unlimited"] = describe(full, figures) | {"max_files_per_tick": None}

    known = [r.partition_key for r in full.plan.requests]
    steady, figures = repeated(lambda: tick(directory, full.cursor_json, max_files, known), repeat)
    out["steady_state"] = describe(steady, figures) | {"max_files_per_tick": max_files,
                                                        "known_partitions": len(known)}

    # Drain the backlog as the sensor would, tick after tick, carrying cursor and partitions over.
    cursor_json, known, times = "", [], []
    while True:
        t = tick(directory, cursor_json, max_files, known)
        times.append(t.seconds["total"])
        cursor_json = t.cursor_json
        known += [r.partition_key for r in t.plan.requests]
        if not t.plan.waiting:
            break
    out["drain"] = {"max_files_per_tick": max_files, "ticks": len(times), "requests": len(known),
                    "median_ms": statistics.median(times) * 1e3, "max_ms": max(times) * 1e3,
                    "total_ms": sum(times) * 1e3, "runs_ms": [s * 1e3 for s in times]}
    return out


def markdown(res: dict[str, Any], files: int, total_bytes: int, max_files: int) -> str:
    def row(label: str, r: dict[str, Any]) -> str:
        return (f"| {label} | {r['files_listed']:,} | {r['files_hashed']:,} | {r['requests']:,} | "
                f"{r['median_ms']:,.0f} | {r['min_ms']:,.0f} | {r['cursor_bytes']:,} |")

    lst, drain = res["list_files"], res["drain"]
    lines = [
        f"Ingress sensor tick over {files:,} files ({total_bytes / 1e6:,.1f} MB, local file system, "
        f"warm page cache), {os.cpu_count()} CPUs, Python {pyplatform.python_version()}:",
        "",
        "| tick | files listed | files hashed | run requests | tick time, median (ms) | fastest (ms) "
        "| cursor JSON (bytes) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row(f"first tick, max_files_per_tick = {max_files}", res["first_tick"]),
        row("first tick, unlimited", res["first_tick_unlimited"]),
        row(f"steady state (all {files:,} in the cursor)", res["steady_state"]),
        f"| `list_files` alone | {lst['files_listed']:,} | 0 | 0 | {lst['median_ms']:,.0f} | "
        f"{lst['min_ms']:,.0f} | – |",
        "",
        f"Draining the {files:,}-file backlog at {max_files} files per tick: {drain['ticks']} ticks, "
        f"{drain['median_ms']:,.0f} ms median per tick (slowest {drain['max_ms']:,.0f} ms), "
        f"{drain['total_ms'] / 1e3:,.2f} s of tick time in all.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_max = SensorConfig().max_files_per_tick
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=10_000, help="files in the ingress folder (default 10,000)")
    p.add_argument("--rows-per-file", type=int, default=20, help="data rows per file (default 20)")
    p.add_argument("--max-files", type=int, default=default_max,
                   help=f"max_files_per_tick for the capped ticks (default {default_max}, the platform default)")
    p.add_argument("--repeat", type=int, default=5, help="runs of each tick kind (default 5)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tmp-dir", type=Path, help="parent of the temporary ingress folder (default: system temp)")
    p.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where sensor_bench.json goes (default bench/out)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ingress = Path(tempfile.mkdtemp(prefix="sensor_bench_ingress_", dir=args.tmp_dir))
    try:
        t0 = time.perf_counter()
        total_bytes = make_ingress(ingress, args.files, args.rows_per_file, args.seed)
        print(f"wrote {args.files:,} files ({total_bytes / 1e6:,.1f} MB) into {ingress} "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        results = measure(str(ingress), args.max_files, args.repeat)
    finally:
        shutil.rmtree(ingress, ignore_errors=True)
    table = markdown(results, args.files, total_bytes, args.max_files)
    print(table)
    report = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ingress": {"files": args.files, "rows_per_file": args.rows_per_file, "bytes": total_bytes,
                    "pattern": PATTERN},
        "settle_seconds": 0,
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "platform": pyplatform.platform(),
                    "python": pyplatform.python_version()},
        "results": results,
        "markdown": table,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "sensor_bench.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
