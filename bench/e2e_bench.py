"""End-to-end benchmark under a real ``dagster dev`` (webserver + daemon + code server).

What is measured
    (a) Latency of one delivery: a distinct TLC-like trips file (``--latency-rows`` rows of
        ``cli.generate.trips`` output, no planted faults) is dropped into
        ``ingress/mobility/yellow_trips/`` (hidden temporary name, then rename) while nothing else
        runs. Timed from the rename to: the run being created by the sensor, the run starting
        (run worker up), the run ending, its Parquet file appearing under
        ``lake/staging/mobility/yellow_trips/`` and the catalog view
        ``staging_mobility.yellow_trips`` answering with its rows (a separate read-only DuckDB
        connection, as a user's). ``--drops`` deliveries one after the other; median reported.
    (b) Throughput: ``--files`` (default 1,000) small, distinct expense files
        (``cli.generate.expenses(path, reports=2, seed=n, error_rate=0)``, a few lines each) are
        written outside ingress first, then renamed into ``ingress/finance/expense_reports/`` as
        ``expenses_<n>.csv`` as fast as possible. Timed from the first rename until every file
        has a finished run and a published staging partition; reported as files/s, together with
        when the sensor had requested every run. Outcomes (runs succeeded / failed) and the
        catalog's row count are checked against what was generated.

How
    Temporary DAGSTER_HOME (``python -m cli dagster-home``: at most two runs at a time) and
    PLATFORM_HOME, ``PLATFORM_ENV=local``, a free loopback port. The dagster-dev process helper
    is shared with the end-to-end test (``tests/dagster_dev.py``). Each run is a new process (the
    default run launcher), so per-file cost is dominated by run-worker start-up, not by staging.
    The machine may be shared: the load average is recorded. No timing is asserted.

Usage (from the repository root)::

    .venv/bin/python bench/e2e_bench.py                 # 3 latency drops, 1,000 files
    .venv/bin/python bench/e2e_bench.py --files 20      # quick debugging run

The Markdown table is printed and, with everything else, written to ``bench/out/e2e_bench.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform as pyplatform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from dagster_dev import TERMINAL, DagsterDev, drop_file  # noqa: E402

from cli import generate  # noqa: E402
from core.names import partition_key  # noqa: E402

OUT_DIR = ROOT / "bench" / "out"
TRIPS_JOB = "ingest__mobility__yellow_trips"
EXPENSES_JOB = "ingest__finance__expense_reports"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def key_of(path: Path) -> str:
    return partition_key(path.name, hashlib.sha256(path.read_bytes()).hexdigest())


def catalog_count(home: Path, table: str, where: str = "", params: list | None = None) -> int | None:
    """Rows in a catalog view, or None while the view does not exist or the file is locked."""
    path = home / "catalog.duckdb"
    if not path.exists():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None  # a run is writing the catalog right now
    try:
        return con.execute(f"SELECT count(*) FROM {table} {where}", params or []).fetchone()[0]
    except duckdb.Error:
        return None
    finally:
        con.close()


def run_count(dev: DagsterDev, job: str, statuses: list[str] | None = None) -> int:
    flt: dict = {"pipelineName": job}
    if statuses:
        flt["statuses"] = statuses
    data = dev.graphql(
        "query C($f: RunsFilter) { runsOrError(filter: $f, limit: 1) { ... on Runs { count } } }", {"f": flt}
    )
    return data["runsOrError"]["count"]


# ----------------------------------------------------------------------------------------------
# (a) latency


def latency(dev: DagsterDev, work: Path, drops: int, rows: int, timeout_s: float) -> list[dict]:
    home = dev.platform_home
    ingress = home / "ingress" / "mobility" / "yellow_trips"
    staging = home / "lake" / "staging" / "mobility" / "yellow_trips"
    out = []
    for i in range(drops):
        name = f"yellow_tripdata_2024-03_lat{i:02d}.csv"
        src = generate.trips(work / name, rows, seed=1000 + i, error_rate=0.0)
        key = key_of(src)
        known = {r["runId"] for r in dev.runs(TRIPS_JOB)}
        t0 = time.monotonic()
        wall0 = time.time()
        drop_file(ingress, name, src)
        t: dict = {"file": name, "rows": rows, "bytes": src.stat().st_size}
        run = None
        while time.monotonic() - t0 < timeout_s:
            now = time.monotonic() - t0
            if "parquet_s" not in t and any((staging / key).glob("*/part-0.parquet")):
                t["parquet_s"] = now
            if "parquet_s" in t and "catalog_s" not in t:
                n = catalog_count(home, "staging_mobility.yellow_trips", "WHERE _source_file = ?", [name])
                if n == rows:
                    t["catalog_s"] = time.monotonic() - t0
            if run is None or run["status"] not in TERMINAL:
                new = [r for r in dev.runs(TRIPS_JOB, limit=20) if r["runId"] not in known]
                run = new[0] if new else None
            if "catalog_s" in t and run is not None and run["status"] in TERMINAL:
                break
            if run is not None and run["status"] in TERMINAL and run["status"] != "SUCCESS":
                break
            time.sleep(0.2)
        if run is not None:
            t["status"] = run["status"]
            t["run_created_s"] = run["creationTime"] - wall0
            if run["startTime"]:
                t["run_started_s"] = run["startTime"] - wall0
            if run["endTime"]:
                t["run_ended_s"] = run["endTime"] - wall0
            t.update(phases(dev, run["runId"], wall0))
        else:
            t["status"] = "NO RUN"
        log(f"latency drop {i + 1}/{drops}: " + ", ".join(
            f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in t.items()))
        out.append(t)
    return out


# Where a run's time goes before its step does anything: the run's own events, by type.
PHASES = {"RunStartingEvent": "launched_s", "RunStartEvent": "worker_up_s",
          "ExecutionStepStartEvent": "step_started_s", "ExecutionStepSuccessEvent": "step_ended_s"}


def phases(dev: DagsterDev, run_id: str, wall0: float) -> dict[str, float]:
    """Seconds from the drop to each phase of the run: launched (dequeued, the launcher asked for
    a run worker), worker up (the worker loaded the code location), step started and ended."""
    events = dev.graphql(
        """query L($id: ID!) { logsForRun(runId: $id, limit: 500) { ... on EventConnection { events {
             __typename ... on MessageEvent { timestamp } } } } }""", {"id": run_id})["logsForRun"].get("events", [])
    out: dict[str, float] = {}
    for e in events:
        name = PHASES.get(e["__typename"])
        if name and name not in out and e.get("timestamp"):
            out[name] = float(e["timestamp"]) / 1000 - wall0
    return out


# ----------------------------------------------------------------------------------------------
# (b) throughput


def throughput(dev: DagsterDev, work: Path, files: int, timeout_s: float) -> dict:
    home = dev.platform_home
    ingress = home / "ingress" / "finance" / "expense_reports"
    gen_dir = work / "expenses"
    gen_dir.mkdir(parents=True, exist_ok=True)
    t_gen = time.monotonic()
    sources = []
    lines = 0
    for n in range(files):
        p = generate.expenses(gen_dir / f"expenses_{n}.csv", reports=2, seed=n + 1, error_rate=0.0,
                              day=dt.date(2026, 11, 19))
        lines += sum(1 for _ in p.open()) - 1
        sources.append(p)
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in sources}
    assert len(digests) == files, "generated files are not all distinct"
    log(f"generated {files} expense files ({lines} lines) in {time.monotonic() - t_gen:.1f} s")

    t0 = time.monotonic()
    for p in sources:
        drop_file(ingress, p.name, p)
    dropped_s = time.monotonic() - t0
    log(f"dropped {files} files into ingress in {dropped_s:.2f} s")

    res: dict = {"files": files, "lines": lines, "drop_s": dropped_s}
    last_progress = 0.0
    recorded = 0
    while True:
        now = time.monotonic() - t0
        # A file is done once the catalog records it (published, or held by a blocking check); while
        # a run holds the catalog for a write, the last count stands.
        count = catalog_count(home, "meta.partitions", "WHERE dataset = 'expense_reports'")
        recorded = recorded if count is None else count
        busy = run_count(dev, EXPENSES_JOB, ["QUEUED", "NOT_STARTED", "STARTING", "STARTED"])
        if recorded >= 1 and "first_published_s" not in res:
            res["first_published_s"] = now
        if now - last_progress >= 30:
            log(f"  {now:6.0f} s: {run_count(dev, EXPENSES_JOB)} runs requested, {busy} queued or running, "
                f"{recorded} files in the catalog")
            last_progress = now
        if recorded >= files and busy == 0:
            res["all_finished_s"] = now
            break
        if now > timeout_s:
            res.update(timed_out_s=now, recorded=recorded)
            log(f"timed out after {now:.0f} s")
            break
        time.sleep(2.0)  # light polling: the webserver shares the two cores with the runs

    res["published"] = catalog_count(home, "meta.partitions",
                                     "WHERE dataset = 'expense_reports' AND state = 'published'")
    res["runs"] = run_count(dev, EXPENSES_JOB)
    res["runs_succeeded"] = run_count(dev, EXPENSES_JOB, ["SUCCESS"])
    res["runs_failed"] = run_count(dev, EXPENSES_JOB, ["FAILURE", "CANCELED"])
    if "all_finished_s" in res:
        res["files_per_s"] = files / res["all_finished_s"]
    for _ in range(60):
        rows = catalog_count(home, "staging_finance.expense_reports")
        if rows is not None:
            res["catalog_rows"] = rows
            break
        time.sleep(0.5)
    failed = dev.runs(EXPENSES_JOB, limit=20, statuses=["FAILURE", "CANCELED"])
    res["failures"] = [
        {"file": r["tags"].get("platform/source_file") or r["tags"].get("platform/first_file"), "run_id": r["runId"],
         "reason": dev.failure_reason(r["runId"])}
        for r in failed
    ]
    for f in res["failures"]:
        log(f"  failed: {f['file']} ({f['run_id']}): {f['reason'][:200]}")
    res["ingress_left"] = sum(1 for e in os.scandir(ingress) if not e.name.startswith("."))
    # Per-run times from the runs themselves (queue wait = created → started).
    runs = [r for r in dev.all_runs(EXPENSES_JOB) if r["startTime"] and r["endTime"]]
    if runs:
        res["run_exec_median_s"] = statistics.median(r["endTime"] - r["startTime"] for r in runs)
        res["run_wait_median_s"] = statistics.median(r["startTime"] - r["creationTime"] for r in runs)
        res["run_wait_max_s"] = max(r["startTime"] - r["creationTime"] for r in runs)
    return res


def verdicts(dagster_home: Path, files: int) -> dict[str, int]:
    """Files (partitions) with their own finished contract and reconciliation verdict, read from
    the instance's check-execution index, as the UI and the alerting sensor read them."""
    import dagster as dg

    staging = dg.AssetKey(["staging", "finance", "staging_expense_reports"])
    out = {}
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for check in ("contract", "reconciliation"):
            history = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(staging, check), limit=files * 2)
            out[check] = len({r.partition for r in history
                              if r.partition is not None and r.status.value in ("SUCCEEDED", "FAILED")})
    return out


# ----------------------------------------------------------------------------------------------


def fmt(v, unit: str = " s") -> str:
    return "–" if v is None else f"{v:,.2f}{unit}"


def table(lat: list[dict], thr: dict | None, startup: dict) -> str:
    def med(k: str):
        vals = [t[k] for t in lat if k in t]
        return statistics.median(vals) if vals else None

    rows = ["| measure | value |", "|---|---|",
            f"| dagster dev start → GraphQL answering | {fmt(startup['graphql_ready_s'])} |",
            f"| dagster dev start → code location loaded | {fmt(startup['location_ready_s'])} |"]
    if lat:
        rows += [
            f"| (a) drops | {len(lat)} × {lat[0]['rows']:,} rows ({lat[0]['bytes']:,} bytes); "
            f"outcomes {', '.join(t['status'] for t in lat)} |",
            f"| (a) drop → run created by the sensor (median) | {fmt(med('run_created_s'))} |",
            f"| (a) drop → run worker launched (median) | {fmt(med('launched_s'))} |",
            f"| (a) drop → run worker up, code location loaded (median) | {fmt(med('worker_up_s'))} |",
            f"| (a) drop → step started / ended (median) | {fmt(med('step_started_s'))} / "
            f"{fmt(med('step_ended_s'))} |",
            f"| (a) drop → run started (median) | {fmt(med('run_started_s'))} |",
            f"| (a) drop → staging Parquet published (median) | {fmt(med('parquet_s'))} |",
            f"| (a) drop → catalog view answers with the rows (median) | {fmt(med('catalog_s'))} |",
            f"| (a) drop → run ended (median) | {fmt(med('run_ended_s'))} |",
            f"| (a) drop → catalog answers, each drop | {', '.join(fmt(t.get('catalog_s'), '') for t in lat)} s |",
        ]
    if thr:
        rows += [
            f"| (b) files (lines) | {thr['files']:,} ({thr['lines']:,}) |",
            f"| (b) renaming all into ingress | {fmt(thr['drop_s'])} |",
            f"| (b) first drop → first partition published | {fmt(thr.get('first_published_s'))} |",
            f"| (b) first drop → all runs finished | {fmt(thr.get('all_finished_s') or thr.get('timed_out_s'))}"
            f"{' (timed out)' if 'timed_out_s' in thr else ''} |",
            f"| (b) throughput | {fmt(thr.get('files_per_s'), ' files/s')}, "
            f"{fmt((thr.get('files_per_s') or 0) * 60, ' files/min')} |",
            f"| (b) runs (succeeded / failed) | {thr['runs']:,} ({thr['runs_succeeded']:,} / {thr['runs_failed']:,}) |",
            f"| (b) partitions published / catalog rows | {thr['published'] or 0:,} / {thr.get('catalog_rows', '–')} |",
            f"| (b) files with their own contract / reconciliation verdict | "
            f"{thr.get('verdicts', {}).get('contract', '–')} / {thr.get('verdicts', {}).get('reconciliation', '–')} |",
            f"| (b) per run: executing (median) / waiting in queue (median, max) | "
            f"{fmt(thr.get('run_exec_median_s'))} / {fmt(thr.get('run_wait_median_s'))}, "
            f"{fmt(thr.get('run_wait_max_s'))} |",
        ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=1000, help="(b) number of expense files (default 1000)")
    p.add_argument("--drops", type=int, default=3, help="(a) number of single-file drops (default 3)")
    p.add_argument("--latency-rows", type=int, default=1000, help="(a) rows per trips file (default 1000)")
    p.add_argument("--timeout", type=float, default=7200, help="(b) give up after this many seconds")
    p.add_argument("--keep", action="store_true", help="keep the temporary homes (for inspection)")
    a = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="e2e_bench_"))
    dev = DagsterDev(work / "platform_home", work / "dagster_home")
    load_before = os.getloadavg()
    lat: list[dict] = []
    thr: dict | None = None
    startup: dict = {"graphql_ready_s": None, "location_ready_s": None}
    try:
        dev.start()
        startup = {"graphql_ready_s": dev.graphql_ready_s, "location_ready_s": dev.location_ready_s}
        log(f"dagster dev on port {dev.port}: ready after {dev.location_ready_s:.1f} s; log {dev.log_path}")
        if a.drops:
            lat = latency(dev, work / "gen", a.drops, a.latency_rows, timeout_s=300)
        if a.files:
            thr = throughput(dev, work / "gen", a.files, a.timeout)
    finally:
        dev.stop()
        if thr is not None:
            thr["verdicts"] = verdicts(work / "dagster_home", a.files)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")

    md = table(lat, thr, startup)
    print(md)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": pyplatform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "args": vars(a),
        "startup": startup,
        "latency": lat,
        "throughput": thr,
        "markdown": md,
    }
    (OUT_DIR / "e2e_bench.json").write_text(json.dumps(out, indent=2))
    print(f"\nwritten {OUT_DIR / 'e2e_bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
