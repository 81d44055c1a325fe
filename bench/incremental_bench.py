"""Benchmark: what one small delivery costs the modelled zones as the lake grows.

What is measured
    For each lake size (default 10,000, 1,000,000 and 10,000,000 staged trips: ``cli.generate.trips``,
    seed 7, March 2024, 0.1 % planted faults, shared with the other benchmarks), in a fresh
    ``PLATFORM_HOME`` under ``/tmp``:

    1. the zone lookup and the lake's trips file are staged in process (``tests/support.ingest``);
    2. the mobility models are built once (``dbt build``, models and tests): the first build;
    3. one delivery of 1,000 new trips (April 2024, same generator, seed 8) is staged;
    4. ``dbt build --select base_mobility__yellow_trips+`` (what automation selects for a new
       trips partition: the trips model, the marts and their tests) runs **incrementally**, then
       the same selection again with ``--full-refresh``: the baseline, which is what every delivery
       cost before the models were incremental. Every build reads the partial parse state the
       previous one kept, as the platform's dbt asset does.

    Reported per size: wall time of each dbt process (start-up and parse included), dbt's own
    elapsed time, the ``trips`` model's execution time, and the peak resident memory of the dbt
    process (``/usr/bin/time -v``, else the polled ``VmHWM``). Ratios: full refresh ÷ incremental
    in each size, and the incremental time at each size ÷ at the smallest (the target: 10M within
    2× of 10k, under 10 s). Nothing is asserted (a shared 2-core machine).

Usage (from the repository root)::

    .venv/bin/python bench/incremental_bench.py                    # 10k, 1M, 10M
    .venv/bin/python bench/incremental_bench.py --sizes 10000 200000

The Markdown table is printed and written, with everything else, to ``bench/out/incremental_bench.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from dbt_bench import DEFAULT_CSV, DEFAULT_ROWS, MIB, run_dbt, stage  # bench/ is on sys.path as a script
from staging_bench import ensure_csv

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
ZONES = ROOT / "samples" / "mobility" / "taxi_zones" / "taxi_zone_lookup.csv"
FIRST = "path:models/ods/mobility path:models/analytics/mobility"
AFTER_DELIVERY = "base_mobility__yellow_trips+"
DELIVERY_ROWS = 1_000


def lake_file(rows: int) -> Path:
    if rows == DEFAULT_ROWS and DEFAULT_CSV.is_file():
        return DEFAULT_CSV
    return ensure_csv(rows, OUT)[0]


def delivery(tmp: Path) -> Path:
    from cli.generate import trips

    path = tmp / "yellow_tripdata_2024-04.csv"
    trips(path, DELIVERY_ROWS, seed=8, month=dt.date(2024, 4, 1))
    return path


def summary(run: dict[str, Any]) -> dict[str, Any]:
    models = {n["name"]: n["execution_time"] for n in run.get("nodes", []) if n["resource_type"] == "model"}
    tests = sum(n["execution_time"] for n in run.get("nodes", []) if n["resource_type"] == "test")
    return {"seconds": run["seconds"], "dbt_elapsed_seconds": run.get("dbt_elapsed_seconds"),
            "trips_model_seconds": models.get("trips"), "models_seconds": models, "tests_seconds": tests,
            "peak_rss_bytes": run.get("peak_rss_bytes"),
            "returncode": run["returncode"], "statuses": run.get("statuses"),
            "not_successful": run.get("not_successful")}


def measure(rows: int, new_file: Path) -> dict[str, Any]:
    import dagster as dg

    home = Path(tempfile.mkdtemp(prefix="incb", dir="/tmp"))
    try:
        instance = dg.DagsterInstance.ephemeral()
        for dataset, path in (("mobility__taxi_zones", ZONES), ("mobility__yellow_trips", lake_file(rows))):
            staged = stage(home, dataset, path, instance)
            if not staged["success"]:
                raise SystemExit(f"staging {path} failed:\n{staged.get('failure')}")
        state = home / "dbt" / "partial_parse.msgpack"  # kept from build to build, as the platform does
        first = run_dbt(home, "first", select=FIRST, parse_state=state)
        delivered = stage(home, "mobility__yellow_trips", new_file, instance)
        if not delivered["success"]:
            raise SystemExit(f"staging the delivery failed:\n{delivered.get('failure')}")
        incremental = run_dbt(home, "incremental", select=AFTER_DELIVERY, parse_state=state)
        full = run_dbt(home, "full_refresh", select=AFTER_DELIVERY, extra=("--full-refresh",), parse_state=state)
        return {"staged_rows": rows, "delivery_rows": delivered.get("rows_staged"),
                "first_build": summary(first), "incremental": summary(incremental), "full_refresh": summary(full)}
    finally:
        shutil.rmtree(home, ignore_errors=True)


def mib(value: int | None) -> str:
    return f"{value / MIB:,.0f}" if value else "?"


def table(results: list[dict[str, Any]]) -> str:
    base = results[0]["incremental"]["seconds"]
    lines = ["| staged trips | incremental dbt (s) | trips model (s) | peak MiB | full refresh dbt (s) | "
             "trips model (s) | peak MiB | full ÷ incremental | incremental ÷ smallest |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        inc, full = r["incremental"], r["full_refresh"]
        lines.append(f"| {r['staged_rows']:,} | {inc['seconds']:.1f} | {inc['trips_model_seconds'] or 0:.2f} | "
                     f"{mib(inc['peak_rss_bytes'])} | {full['seconds']:.1f} | {full['trips_model_seconds'] or 0:.2f} | "
                     f"{mib(full['peak_rss_bytes'])} | {full['seconds'] / inc['seconds']:.1f}× | "
                     f"{inc['seconds'] / base:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000, DEFAULT_ROWS])
    args = parser.parse_args()
    for path in (ROOT, ROOT / "tests"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    with tempfile.TemporaryDirectory() as tmp:
        new_file = delivery(Path(tmp))
        results = []
        for rows in args.sizes:
            print(f"lake of {rows:,} trips ...", file=sys.stderr, flush=True)
            results.append(measure(rows, new_file))
    for r in results:
        for run in ("first_build", "incremental", "full_refresh"):
            if r[run]["returncode"] != 0 or r[run]["not_successful"]:
                print(f"{r['staged_rows']:,} {run}: not successful: {r[run]['not_successful']}", file=sys.stderr)
    out = table(results)
    print(out)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "incremental_bench.json").write_text(json.dumps(
        {"measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "results": results,
         "table": out}, indent=2, default=str))


if __name__ == "__main__":
    main()
