"""Benchmark of the modelled zones: ``dbt build`` (ods, analytics) over a large staged trips file.

What is measured
    In a fresh temporary ``PLATFORM_HOME`` (a short path under ``/tmp``), the inputs of the dbt
    project are staged in process with the real local resources (``tests/support.ingest``: ingress
    → landing → staging, the sensor's run without the sensor): the zone lookup
    (``samples/mobility/taxi_zones/taxi_zone_lookup.csv``), the three good expense exports
    (``samples/finance/expense_reports/expenses_2026-11-1{6,7,8}.csv``) and one large TLC-like
    trips file (default 10,000,000 rows of ``cli.generate.trips``, seed 7, 0.1 % planted faults).
    The trips ingest is timed: the whole ``ingest`` call (copy into ingress, landing, staging,
    catalog registration) and, from the run's step events, the landing and staging steps alone.

    Then ``dbt build --target local`` (the venv's ``dbt``, a child process; DuckDB at
    ``$PLATFORM_HOME/warehouse.duckdb`` with the catalog attached read-only) builds every model
    and runs every test. Reported:

    - the wall time of the whole ``dbt build`` process (dbt start-up and parse included) and dbt's
      own ``elapsed_time`` from ``run_results.json``;
    - per layer (``ods``: ``models/ods/``, ``analytics``: ``models/analytics/``; a test belongs to
      the layer of the model it is attached to): the layer's span (first node started → last node
      completed; dbt builds in DAG order, not layer by layer, so with ``threads: 2`` the spans
      overlap: a mart whose ods parents are small starts while ``trips`` still builds) and the
      sums of the models' and the tests' ``execution_time``; the slowest nodes are listed;
    - with ``--layer-builds``, as a second measurement, ``dbt build --select path:models/ods`` then
      ``--select path:models/analytics`` as two more processes (rebuilding the same tables);
    - the row counts of the staged trips (the catalog) and of every table dbt built (the warehouse,
      queried read-only after dbt has exited);
    - ods rows/s: staged trip rows divided by the ods layer's span;
    - the peak resident memory of the dbt process (DuckDB runs inside it): from ``/usr/bin/time -v``
      when present, else the process's ``VmHWM`` (its high-water mark, ``/proc/<pid>/status``) read
      every 0.2 s while it runs, else ``resource.getrusage(RUSAGE_CHILDREN)`` (an upper bound: on
      Linux a child's maximum starts from this process's size when it forks, which after staging
      is larger than a small dbt build); the peak of this process after staging
      (``RUSAGE_SELF``: Dagster, imports and the staging engine) is reported too;
    - dbt's node statuses; a model or test that did not succeed is listed with its message.

    Nothing is asserted: the machine is shared (2 cores). Run the 10M measurement once.

How
    ``--csv`` uses an existing TLC-like CSV; without it, ``/tmp/bench/yellow_tripdata_10m.csv`` is
    reused when ``--rows`` is the default and the file exists, otherwise the file is generated
    into ``bench/out/yellow_tripdata_bench_<rows>.csv`` (shared with ``staging_bench.py``: reused
    while its ``.meta.json`` sidecar matches). Before staging, the file is read once to count its
    rows (and warm the page cache). dbt gets ``PLATFORM_HOME``, ``PLATFORM_ENV=local``,
    ``DBT_SEND_ANONYMOUS_USAGE_STATS=false``, and ``--target-path``/``--log-path`` under the home,
    so the repository's ``dbt_project/target`` is untouched. The home is deleted at the end unless
    ``--keep``.

Usage (from the repository root)::

    .venv/bin/python bench/dbt_bench.py                         # 10M rows (reuses /tmp/bench/... if there)
    .venv/bin/python bench/dbt_bench.py --rows 200000           # quick run, generated into bench/out/
    .venv/bin/python bench/dbt_bench.py --csv some/yellow_tripdata_x.csv --layer-builds --keep

The Markdown table is printed and, with everything else, written to ``bench/out/dbt_bench.json``.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any

# The generated trips file is shared with the staging benchmark (same seed, fault rate and name).
from staging_bench import count_rows, ensure_csv, versions  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "bench" / "out"
SAMPLES = ROOT / "samples"
PROJECT = ROOT / "dbt_project"
DBT = Path(sys.executable).parent / "dbt"
GNU_TIME = Path("/usr/bin/time")
DEFAULT_ROWS = 10_000_000
DEFAULT_CSV = Path("/tmp/bench/yellow_tripdata_10m.csv")
TRIPS = "mobility__yellow_trips"
SMALL_INPUTS = [
    ("mobility__taxi_zones", SAMPLES / "mobility" / "taxi_zones" / "taxi_zone_lookup.csv"),
    *[("finance__expense_reports", SAMPLES / "finance" / "expense_reports" / f"expenses_2026-11-{day}.csv")
      for day in (16, 17, 18)],
]
LAYERS = ("ods", "analytics")
MIB = 1 << 20
SLOWEST = 8


# ----------------------------------------------------------------------------------------------
# The trips file


def resolve_csv(args: argparse.Namespace) -> tuple[Path, bool]:
    if args.csv:
        csv = args.csv.resolve()
        if not csv.is_file():
            raise SystemExit(f"{csv}: no such file")
        return csv, False
    if args.rows == DEFAULT_ROWS and DEFAULT_CSV.is_file():
        return DEFAULT_CSV, False
    path, reused = ensure_csv(args.rows, args.out_dir.resolve())
    return path, not reused


# ----------------------------------------------------------------------------------------------
# Staging (in this process, as the sensor's run would)


def _peak_rss_self() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _peak_rss_children() -> int:
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _vm_hwm(pid: int) -> int | None:
    """The peak resident set size of a running process (Linux), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _run_watched(cmd: list[str], env: dict[str, str], output: Path, watch: bool) -> tuple[int, int | None]:
    """Run ``cmd`` (output to ``output``); (exit code, peak VmHWM seen, if ``watch``)."""
    peak: int | None = None
    with open(output, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        while True:
            if watch and (hwm := _vm_hwm(proc.pid)) is not None:
                peak = max(peak or 0, hwm)
            try:
                return proc.wait(timeout=0.2), peak
            except subprocess.TimeoutExpired:
                continue


def stage(home: Path, dataset_id: str, source: Path, instance: Any) -> dict[str, Any]:
    """Ingest one file with tests/support.ingest; wall time, step times and row counts."""
    from support import ingest

    t0 = time.perf_counter()
    r = ingest(home, dataset_id, source, instance=instance)
    seconds = time.perf_counter() - t0
    steps = {
        ev.step_key: ev.event_specific_data.duration_ms / 1000
        for ev in r.result.all_events
        if ev.event_type_value == "STEP_SUCCESS" and ev.step_key
    }
    figures: dict[str, Any] = {"dataset": dataset_id, "file": source.name, "partition": r.partition_key,
                               "success": r.success, "seconds": seconds, "steps_seconds": steps}
    if not r.success:
        figures["failure"] = r.failure_message()
        return figures
    staged = next((m for m in r.materializations().values() if m.asset_key.path[0] == "staging"), None)
    if staged is not None:
        md = {k: getattr(v, "value", v) for k, v in staged.metadata.items()}
        figures.update(rows_read=md.get("rows_read"), rows_staged=md.get("dagster/row_count"),
                       rows_quarantined=md.get("rows_quarantined"), published=md.get("published"),
                       slow_path=md.get("slow_path"))
    return figures


def stage_inputs(home: Path, csv: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import dagster as dg

    instance = dg.DagsterInstance.ephemeral()
    small = []
    for dataset_id, path in SMALL_INPUTS:
        small.append(stage(home, dataset_id, path, instance))
        print(f"staged {path.name}: {small[-1]['seconds']:.1f} s", file=sys.stderr, flush=True)
    print(f"staging {csv.name} ...", file=sys.stderr, flush=True)
    trips = stage(home, TRIPS, csv, instance)
    trips["peak_rss_process_bytes"] = _peak_rss_self()
    print(f"staged {csv.name}: {trips['seconds']:.1f} s", file=sys.stderr, flush=True)
    for figures in (*small, trips):
        if not figures["success"]:
            raise SystemExit(f"staging {figures['file']} failed:\n{figures.get('failure', '')}")
    return small, trips


# ----------------------------------------------------------------------------------------------
# dbt


def _parse_gnu_time(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key == "Maximum resident set size (kbytes)":
            out["peak_rss_bytes"] = int(value) * 1024
        elif key == "User time (seconds)":
            out["user_cpu_seconds"] = float(value)
        elif key == "System time (seconds)":
            out["system_cpu_seconds"] = float(value)
        elif key == "Percent of CPU this job got":
            out["cpu_percent"] = float(value.rstrip("%") or 0)
    return out


def run_dbt(home: Path, label: str, select: str | None = None, extra: tuple[str, ...] = (),
            parse_state: Path | None = None) -> dict[str, Any]:
    """One ``dbt build`` process (``extra``: more arguments); wall time, peak memory, run_results
    and manifest. ``parse_state``: dbt's partial parse state, read when it exists and kept after
    the build, as the platform's dbt asset does (assets.dbt.keep_parse_state)."""
    work = home / "dbt" / label
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PLATFORM_HOME": str(home), "PLATFORM_ENV": "local",
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    if parse_state is not None and parse_state.exists():
        env["DBT_PARTIAL_PARSE_FILE_PATH"] = str(parse_state)
    cmd = [str(DBT), "build", "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT), "--target", "local",
           "--target-path", str(work / "target"), "--log-path", str(work / "logs")]
    if select:
        cmd += ["--select", *select.split()]
    cmd += list(extra)
    time_file = work / "time.txt"
    use_gnu_time = GNU_TIME.exists()
    if use_gnu_time:
        cmd = [str(GNU_TIME), "-v", "-o", str(time_file), *cmd]
    children_before = _peak_rss_children()
    print(f"dbt build ({label}) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    returncode, hwm = _run_watched(cmd, env, work / "output.txt", watch=not use_gnu_time)
    seconds = time.perf_counter() - t0
    print(f"  {seconds:.1f} s, exit code {returncode}", file=sys.stderr, flush=True)
    if parse_state is not None:
        from assets.dbt import PARTIAL_PARSE, keep_parse_state

        keep_parse_state(work / "target" / PARTIAL_PARSE, parse_state)
    output = (work / "output.txt").read_text(errors="replace")
    figures: dict[str, Any] = {"label": label, "select": select, "seconds": seconds, "returncode": returncode}
    if use_gnu_time and time_file.exists():
        figures.update(_parse_gnu_time(time_file.read_text()), peak_rss_source="/usr/bin/time -v")
    elif hwm is not None:
        figures.update(peak_rss_bytes=hwm, peak_rss_source="VmHWM of the dbt process, polled every 0.2 s")
    else:
        children_after = _peak_rss_children()
        figures["peak_rss_bytes"] = children_after
        figures["peak_rss_source"] = ("getrusage(RUSAGE_CHILDREN), an upper bound" if children_after > children_before
                                      else "getrusage(RUSAGE_CHILDREN), not above an earlier child's")
    results_path, manifest_path = work / "target" / "run_results.json", work / "target" / "manifest.json"
    if not results_path.exists() or not manifest_path.exists():
        figures["output_tail"] = output[-4000:]
        return figures
    run_results = json.loads(results_path.read_text())
    manifest = json.loads(manifest_path.read_text())
    figures["dbt_elapsed_seconds"] = run_results.get("elapsed_time")
    figures["nodes"] = nodes(run_results, manifest)
    figures["layers"] = layers(figures["nodes"])
    figures["statuses"] = _count(n["status"] for n in figures["nodes"])
    figures["not_successful"] = [
        {k: n[k] for k in ("unique_id", "status", "message", "failures")}
        for n in figures["nodes"] if n["status"] not in ("success", "pass")
    ]
    if figures["not_successful"]:
        figures["output_tail"] = output[-4000:]
    figures["relations"] = relations(manifest)
    return figures


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _layer_of(node: dict[str, Any], manifest: dict[str, Any]) -> str:
    """ods or analytics, from the path of the model (or, for a test, of the model it is attached to)."""
    if node.get("resource_type") == "test":
        parent = node.get("attached_node") or next(
            (d for d in node.get("depends_on", {}).get("nodes", []) if d.startswith("model.")), None)
        node = manifest["nodes"].get(parent, {}) if parent else {}
    path = node.get("original_file_path", "")
    for layer in LAYERS:
        if path.startswith(f"models/{layer}/"):
            return layer
    return "other"


def _timing(result: dict[str, Any]) -> tuple[float | None, float | None]:
    starts, ends = [], []
    for t in result.get("timing", []):
        if t.get("started_at") and t.get("completed_at"):
            starts.append(dt.datetime.fromisoformat(t["started_at"].replace("Z", "+00:00")).timestamp())
            ends.append(dt.datetime.fromisoformat(t["completed_at"].replace("Z", "+00:00")).timestamp())
    return (min(starts), max(ends)) if starts else (None, None)


def nodes(run_results: dict[str, Any], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in run_results["results"]:
        node = manifest["nodes"].get(r["unique_id"], {})
        started, completed = _timing(r)
        out.append({
            "unique_id": r["unique_id"],
            "name": node.get("name", r["unique_id"].split(".")[-1]),
            "resource_type": node.get("resource_type", r["unique_id"].split(".")[0]),
            "layer": _layer_of(node, manifest),
            "status": r["status"],
            "execution_time": r.get("execution_time") or 0.0,
            "started": started,
            "completed": completed,
            "message": r.get("message"),
            "failures": r.get("failures"),
        })
    return out


def layers(node_list: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for layer in (*LAYERS, "other"):
        mine = [n for n in node_list if n["layer"] == layer]
        if not mine:
            continue
        starts = [n["started"] for n in mine if n["started"] is not None]
        ends = [n["completed"] for n in mine if n["completed"] is not None]
        out[layer] = {
            "span_seconds": max(ends) - min(starts) if starts and ends else None,
            "models": sum(1 for n in mine if n["resource_type"] == "model"),
            "tests": sum(1 for n in mine if n["resource_type"] == "test"),
            "models_execution_seconds": sum(n["execution_time"] for n in mine if n["resource_type"] == "model"),
            "tests_execution_seconds": sum(n["execution_time"] for n in mine if n["resource_type"] == "test"),
        }
    return out


def relations(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Model name → schema, table and layer, for the models materialised as tables."""
    return {
        n["name"]: {"schema": n["schema"], "table": n.get("alias") or n["name"], "layer": _layer_of(n, manifest)}
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["config"].get("materialized") == "table"
    }


def row_counts(home: Path, rels: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Staged trips (the catalog) and every table dbt built (the warehouse), read-only, after dbt."""
    import duckdb

    from core.names import quote_ident

    out: dict[str, Any] = {}
    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM staging_mobility.yellow_trips").fetchone()
        out["staging_mobility.yellow_trips"] = int(row[0]) if row else 0
    finally:
        con.close()
    warehouse = home / "warehouse.duckdb"
    if not warehouse.exists():
        return out
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        order = {layer: i for i, layer in enumerate(LAYERS)}
        for rel in sorted(rels.values(), key=lambda r: (order.get(r["layer"], len(LAYERS)), r["table"])):
            qualified = f"{rel['schema']}.{rel['table']}"
            try:
                row = con.execute(f"SELECT count(*) FROM {quote_ident(rel['schema'])}.{quote_ident(rel['table'])}"
                                  ).fetchone()
                out[qualified] = int(row[0]) if row else 0
            except duckdb.Error as e:  # a model that failed to build
                out[qualified] = f"error: {str(e).splitlines()[0]}"
    finally:
        con.close()
    return out


# ----------------------------------------------------------------------------------------------
# Report


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / MIB:,.0f} MiB"


def _s(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.1f} s"


def markdown(report: dict[str, Any]) -> str:
    csv, trips, build = report["csv"], report["staging"]["trips"], report["dbt"]["build"]
    staged = report["row_counts"].get("staging_mobility.yellow_trips")
    lines = [
        f"`dbt build` over {csv['rows']:,} TLC-like trip rows ({csv['bytes'] / 1e6:,.0f} MB of CSV), "
        f"{report['machine']['cpus']} CPUs, dbt {report['versions'].get('dbt-core')}, "
        f"DuckDB {report['versions'].get('duckdb')}:",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| trips ingest (copy to ingress, landing, staging, catalog) | {_s(trips['seconds'])} |",
    ]
    for step, seconds in trips["steps_seconds"].items():
        lines.append(f"| &nbsp;&nbsp;step `{step}` | {_s(seconds)} |")
    lines += [
        f"| trips staged / quarantined | {trips.get('rows_staged') or 0:,} / {trips.get('rows_quarantined') or 0:,} |",
        f"| trips staging rows/s (staging step) | {report['staging']['trips_rows_per_second'] or 0:,.0f} |",
        f"| peak RSS of this process after staging | {_mib(trips.get('peak_rss_process_bytes'))} |",
        f"| **`dbt build` wall time** (process) | **{_s(build['seconds'])}** |",
        f"| &nbsp;&nbsp;dbt `elapsed_time` | {_s(build.get('dbt_elapsed_seconds'))} |",
    ]
    for layer, figures in build.get("layers", {}).items():
        lines.append(
            f"| {layer} layer ({figures['models']} models, {figures['tests']} tests): first start → last end | "
            f"{_s(figures['span_seconds'])} |")
        lines.append(
            f"| &nbsp;&nbsp;{layer}: models / tests execution time (sum) | "
            f"{figures['models_execution_seconds']:,.1f} s / {figures['tests_execution_seconds']:,.1f} s |")
    ods_rps = report["dbt"].get("ods_rows_per_second")
    lines.append(f"| ods rows/s (staged trips / ods span) | {'n/a' if ods_rps is None else f'{ods_rps:,.0f}'} |")
    for label in ("ods", "analytics"):
        separate = report["dbt"].get(f"build_{label}")
        if separate:
            lines.append(f"| `dbt build --select path:models/{label}` (second measurement) | "
                         f"{_s(separate['seconds'])}, peak {_mib(separate.get('peak_rss_bytes'))} |")
    cpu = ""
    if build.get("user_cpu_seconds") is not None:
        cpu = f" (CPU user {build['user_cpu_seconds']:,.0f} s + sys {build.get('system_cpu_seconds', 0):,.0f} s)"
    lines += [
        f"| peak RSS of `dbt build`{cpu} | {_mib(build.get('peak_rss_bytes'))} |",
        f"| dbt node statuses | {', '.join(f'{k} {v}' for k, v in sorted(build.get('statuses', {}).items()))} |",
    ]
    for rel, count in report["row_counts"].items():
        value = f"{count:,}" if isinstance(count, int) else count
        lines.append(f"| rows `{rel}` | {value} |")
    if staged is not None and isinstance(report["row_counts"].get("ods_mobility.trips"), int):
        lines.append(f"| staged trips not in `ods_mobility.trips` (de-duplicated) | "
                     f"{staged - report['row_counts']['ods_mobility.trips']:,} |")
    slow = sorted(build.get("nodes", []), key=lambda n: -n["execution_time"])[:SLOWEST]
    if slow:
        lines += ["", "Slowest dbt nodes (execution time):", "", "| node | type | layer | status | time |",
                  "|---|---|---|---|---:|"]
        for n in slow:
            lines.append(f"| `{n['name']}` | {n['resource_type']} | {n['layer']} | {n['status']} | "
                         f"{n['execution_time']:,.1f} s |")
    if build.get("not_successful"):
        lines += ["", "Not successful:", ""]
        for n in build["not_successful"]:
            message = (n["message"] or "").replace("\n", " ")[:300]
            lines.append(f"- `{n['unique_id']}`: {n['status']}, {message}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                   help=f"rows of the generated CSV (default {DEFAULT_ROWS:,}); ignored with --csv")
    p.add_argument("--csv", type=Path,
                   help=f"use this existing TLC-like CSV (name yellow_tripdata_*.csv); default: {DEFAULT_CSV} "
                        "if it exists and --rows is the default, else a generated file")
    p.add_argument("--out-dir", type=Path, default=OUT_DIR, help="generated CSV and JSON (default bench/out)")
    p.add_argument("--layer-builds", action="store_true",
                   help="also run `dbt build --select path:models/ods`, then `path:models/analytics`")
    p.add_argument("--keep", action="store_true", help="keep the temporary PLATFORM_HOME (its path is printed)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for path in (ROOT, ROOT / "tests"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    csv, generated = resolve_csv(args)
    if not csv.name.startswith("yellow_tripdata_") or csv.suffix != ".csv":
        raise SystemExit(f"{csv}: the yellow_trips dataset only accepts files named yellow_tripdata_*.csv")
    rows = count_rows(csv)
    csv_bytes = csv.stat().st_size
    print(f"{csv}: {rows:,} rows, {csv_bytes / 1e6:,.0f} MB{' (generated)' if generated else ''}",
          file=sys.stderr, flush=True)
    home = Path(tempfile.mkdtemp(prefix="dbtb", dir="/tmp"))
    print(f"PLATFORM_HOME={home}", file=sys.stderr, flush=True)
    try:
        small, trips = stage_inputs(home, csv)
        staging_step = next((s for k, s in trips["steps_seconds"].items() if k.startswith("stage__")), None)
        build = run_dbt(home, "build")
        counts = row_counts(home, build.get("relations", {}))
        dbt_report: dict[str, Any] = {"build": build}
        if args.layer_builds:
            for layer in LAYERS:
                dbt_report[f"build_{layer}"] = run_dbt(home, layer, select=f"path:models/{layer}")
        ods_span = build.get("layers", {}).get("ods", {}).get("span_seconds")
        staged = counts.get("staging_mobility.yellow_trips")
        dbt_report["ods_rows_per_second"] = staged / ods_span if staged and ods_span else None
        report: dict[str, Any] = {
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "csv": {"path": str(csv), "rows": rows, "bytes": csv_bytes, "generated": generated},
            "platform_home": str(home),
            "kept": args.keep,
            "machine": {"cpus": os.cpu_count(), "platform": pyplatform.platform(),
                        "load_average_at_end": os.getloadavg()},
            "versions": versions(("dbt-core", "dbt-duckdb", "duckdb", "dagster", "dagster-dbt", "pyarrow", "polars")),
            "staging": {"small_inputs": small, "trips": trips,
                        "trips_rows_per_second": rows / staging_step if staging_step else None},
            "dbt": dbt_report,
            "row_counts": counts,
        }
        table = markdown(report)
        report["markdown"] = table
        print(table)
        out_dir: Path = args.out_dir.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "dbt_bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    finally:
        if args.keep:
            print(f"kept PLATFORM_HOME={home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
