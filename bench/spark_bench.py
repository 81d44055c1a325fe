"""The Spark engine against the Arrow engine, on the same generated TLC-like file in the same run.

What is measured
    ``arrow``: the Arrow engine on one file (``engine.stage_local_file``), in a child process;
    peak RSS is the child's own ``VmHWM``. ``spark ×N``: the Spark engine's job
    (``engine/spark/job.py`` in ``.venv-spark``, ``local[2]``, 1 GiB driver) staging N copies of
    the file in one session; peak memory is the sum of the job's process tree (the Python driver
    and the JVM that holds driver and executors in local mode), sampled every 0.2 s. Wall time
    includes the Spark session's start (about 10 s), which a cluster pays once per job too.

Both engines run the real ``mobility.yellow_trips`` contract: typing, every rule, quarantine with
reasons and line numbers. Their outputs are compared for equality in ``tests/test_spark_engine.py``.

Usage (from the repository root)::

    python bench/spark_bench.py                          # 10M rows, 1, 2 and 4 files
    python bench/spark_bench.py --rows 1000000 --files 1,2

Writes ``bench/out/spark_bench.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import staging_bench as sb  # noqa: E402

MIB = 1 << 20

ARROW_CHILD = """
import json, os, sys, time
from core.zones import all_datasets
from engine import stage_local_file
ds = {d.id: d for d in all_datasets()}["mobility__yellow_trips"]
t = time.perf_counter()
r = stage_local_file(ds, sys.argv[1], sys.argv[2], sys.argv[3])
wall = time.perf_counter() - t
hwm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"wall": wall, "peak": hwm, "rows_read": r.rows_read, "rows_staged": r.rows_staged}))
"""


def arrow(path: Path, work: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", ARROW_CHILD, str(path), str(work / "a.s.parquet"),
                          str(work / "a.q.parquet")], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a process that just ended
            total += p.memory_info().rss
    return total


def spark(paths: list[Path], work: Path) -> dict:
    from core.zones import all_datasets
    from engine import StagingRequest
    from engine.spark import JOB, job_env, job_request, spark_python

    ds = {d.id: d for d in all_datasets()}["mobility__yellow_trips"]
    header = paths[0].open().readline().strip().split(",")
    reqs = []
    for i, p in enumerate(paths):
        req = StagingRequest(source_uri=str(p), source_name=p.name, contract=ds.contract, csv=ds.spec.source.csv,
                             staging_uri="", quarantine_uri="")
        reqs.append(job_request(req, header, str(work / f"s{i}"), str(work / f"q{i}")))
    work.mkdir(parents=True, exist_ok=True)
    req_path, result_path = work / "request.json", work / "result.json"
    req_path.write_text(json.dumps({"requests": reqs}))
    t = time.perf_counter()
    proc = psutil.Popen([spark_python(), str(JOB), "--request", str(req_path), "--result", str(result_path)],
                        env=job_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss(proc))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    wall = time.perf_counter() - t
    stop.set()
    sampler.join()
    if code:
        raise SystemExit(f"the Spark job failed (exit {code})")
    results = json.loads(result_path.read_text())["results"]
    return {"wall": wall, "peak": peak[0], "rows_read": sum(r["rows_read"] for r in results),
            "rows_staged": sum(r["rows_staged"] for r in results)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--files", default="1,2,4", help="how many copies of the file one Spark job stages")
    ap.add_argument("--out-dir", type=Path, default=sb.OUT_DIR)
    args = ap.parse_args()
    path = sb.ensure_csv(args.rows, args.out_dir.resolve())[0]
    counts = [int(n) for n in args.files.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="spark-bench-", dir=args.out_dir) as tmp:
        work = Path(tmp)
        copies = []
        for i in range(max(counts)):  # N delivered files: hard links to the one generated file
            link = work / f"yellow_tripdata_2024-{i + 1:02d}_bench.csv"
            os.link(path, link)
            copies.append(link)
        a = arrow(path, work)
        rows.append({"engine": "arrow", "files": 1, **a})
        print(f"arrow ×1: {a['wall']:.1f} s, {a['peak'] / MIB:.0f} MiB", file=sys.stderr, flush=True)
        for n in counts:
            s = spark(copies[:n], work / f"n{n}")
            rows.append({"engine": "spark", "files": n, **s})
            print(f"spark ×{n}: {s['wall']:.1f} s, {s['peak'] / MIB:.0f} MiB", file=sys.stderr, flush=True)
    base = rows[0]["wall"]
    (args.out_dir / "spark_bench.json").write_text(json.dumps({"rows_per_file": args.rows, "runs": rows}, indent=1))
    print(f"\n{args.rows:,} rows a file, {psutil.cpu_count()} cores\n")
    print("| engine | files | wall | rows/s | peak memory | wall ÷ arrow ×1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['engine']} | {r['files']} | {r['wall']:.1f} s | {r['rows_read'] / r['wall']:,.0f} | "
              f"{r['peak'] / MIB:,.0f} MiB | {r['wall'] / base:.1f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
