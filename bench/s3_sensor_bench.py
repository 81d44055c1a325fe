"""Benchmark of one ingress-sensor tick over 10,000 objects in S3 (the moto stand-in over HTTPS),
beside the same tick over the same files on the local file system.

What is measured
    The files of ``bench/sensor_bench.py`` (``--files``, default 10,000, small distinct TLC-like
    CSV files, ``--rows-per-file`` rows each) are written to a temporary folder, which is the
    local baseline, and uploaded (SSE-KMS, ``--upload-workers`` threads, one boto3 client each)
    to ``s3://<bucket>/ingress/mobility/yellow_trips/`` in a moto server over TLS started in this
    process (``tests/aws_stand_in.MotoServer``). Then the body of the sensor
    (``assets.sensors.build_sensor``) minus Dagster is timed with the production code:
    ``S3Store("s3://<bucket>/ingress", ...).list("mobility", "yellow_trips")`` (paginated
    ListObjectsV2, 1,000 keys a page, → FileEntry with the ETag), ``Cursor.load``,
    ``core.arrival.plan_tick`` with ``hash_file`` = ``S3Store.sha256`` (one GetObject per file)
    and ``settle_seconds=0``, and ``Cursor.dump``:

    - first tick, ``max_files_per_tick`` = 500 (the default): 500 objects hashed and requested;
    - steady state: every object in the cursor and every partition key known: nothing hashed;
    - draining the backlog at 500 per tick (how many ticks, each tick's time); its last cursor
      and partitions are the steady state's starting point;
    - the listing alone, and the cursor's JSON size after each kind of tick.

    The local figures are ``bench/sensor_bench.measure`` over the same files in the same run.

How
    Each tick kind runs ``--repeat`` times (default 3) from the same starting cursor; the median
    and the fastest are reported, and the ratio S3/local of the medians. The stand-in runs in
    this process (a thread): client and server share one interpreter (and its GIL), and there is
    no network latency, so real S3 (a few ms to tens of ms per request, from inside the region)
    is slower per request than these figures; what they show is the request count and the
    client-side cost (TLS, botocore, XML parsing). The Dagster parts of a tick are not included.

Usage (from the repository root)::

    python bench/s3_sensor_bench.py
    python bench/s3_sensor_bench.py --files 2000 --repeat 3

The Markdown table is printed and, with everything else, written to ``bench/out/s3_sensor_bench.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform as pyplatform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "bench", ROOT / "tests"):  # the root for the platform, bench/ and tests/ for helpers
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from aws_stand_in import MotoServer  # noqa: E402
from sensor_bench import PATTERN, Tick, describe, make_ingress, repeated  # noqa: E402
from sensor_bench import measure as measure_local  # noqa: E402

from core.arrival import Cursor, FileEntry, plan_tick  # noqa: E402
from core.process_env import environ  # noqa: E402
from resources.aws import AwsSession  # noqa: E402
from resources.environment import SensorConfig  # noqa: E402
from resources.lake.s3 import S3Store  # noqa: E402

OUT_DIR = ROOT / "bench" / "out"
REGION = "eu-west-1"
BUCKET = "bench-lake-ingress"
KMS_ALIAS = "alias/bench-lake"
FOLDER = ("mobility", "yellow_trips")


def upload(directory: Path, workers: int, checksum_sha256: bool) -> int:
    """Upload every file of ``directory`` under ingress/mobility/yellow_trips/; returns the count."""
    import boto3

    names = sorted(p.name for p in directory.iterdir())
    local = threading.local()
    extra = {"ChecksumAlgorithm": "SHA256"} if checksum_sha256 else {}

    def put(name: str) -> None:
        if not hasattr(local, "s3"):
            local.s3 = boto3.session.Session(region_name=REGION).client("s3")  # one client per thread
        local.s3.put_object(Bucket=BUCKET, Key=f"ingress/{'/'.join(FOLDER)}/{name}",
                            Body=(directory / name).read_bytes(),
                            ServerSideEncryption="aws:kms", SSEKMSKeyId=KMS_ALIAS, **extra)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, names))
    return len(names)


def list_files(store: S3Store) -> list[FileEntry]:
    # exactly the sensor's construction (assets/sensors.py build_sensor)
    return [FileEntry("/".join(f.parts), f.name, f.size, f.mtime_ns, f.etag) for f in store.list(*FOLDER)]


def tick(store: S3Store, cursor_json: str, max_files: int, known_keys: Iterable[str]) -> Tick:
    hashed = 0

    def hash_file(f: FileEntry) -> str:
        nonlocal hashed
        hashed += 1
        return store.sha256(*FOLDER, f.name)

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


def handled_state(store: S3Store, local_dir: Path) -> tuple[str, list[str]]:
    """The cursor and partitions the sensor has once it has handled every object: ``plan_tick``
    over the S3 listing without a budget, hashing the identical local copies instead of GETting
    each object (same bytes, same keys: the state a drain reaches, without n more requests)."""
    from resources.lake.local import LocalStore

    local = LocalStore(str(local_dir))
    plan = plan_tick(list_files(store), Cursor(), now_ns=time.time_ns(), settle_seconds=0, max_files=sys.maxsize,
                     pattern=PATTERN, known_keys=[], hash_file=lambda f: local.sha256(f.name))
    return plan.cursor.dump(), [r.partition_key for r in plan.requests]


def drain(store: S3Store, max_files: int) -> tuple[dict[str, Any], str, list[str]]:
    """The backlog drained as the sensor would, tick after tick, carrying cursor and partitions over."""
    cursor_json, known, times, hashed = "", [], [], 0
    while True:
        t = tick(store, cursor_json, max_files, known)
        times.append(t.seconds["total"])
        hashed += t.hashed
        cursor_json = t.cursor_json
        known += [r.partition_key for r in t.plan.requests]
        if not t.plan.waiting:
            break
    figures = {"max_files_per_tick": max_files, "ticks": len(times), "requests": len(known), "files_hashed": hashed,
               "median_ms": statistics.median(times) * 1e3, "max_ms": max(times) * 1e3,
               "total_ms": sum(times) * 1e3, "runs_ms": [s * 1e3 for s in times], "measured": True}
    return figures, cursor_json, known


def measure_s3(store: S3Store, local_dir: Path, max_files: int, repeat: int, run_drain: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    listings = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = len(list_files(store))
        listings.append(time.perf_counter() - t0)
    out["list_files"] = {"files_listed": n, "median_ms": statistics.median(listings) * 1e3,
                         "min_ms": min(listings) * 1e3}

    first, figures = repeated(lambda: tick(store, "", max_files, []), repeat)
    out["first_tick"] = describe(first, figures) | {"max_files_per_tick": max_files}
    print(f"S3 first tick: {figures['median_ms']:,.0f} ms median", file=sys.stderr, flush=True)

    cursor_json, known = handled_state(store, local_dir)
    if run_drain:
        out["drain"], drained_cursor, drained_known = drain(store, max_files)
        out["drain"]["same_state_as_steady_start"] = (Cursor.load(drained_cursor).files == Cursor.load(
            cursor_json).files and sorted(drained_known) == sorted(known))
    else:  # every drain tick but the last is a first tick's work (500 HEAD+GET pairs): estimate from it
        ticks = -(-n // max_files)
        per = out["first_tick"]["median_ms"]
        out["drain"] = {"max_files_per_tick": max_files, "ticks": ticks, "requests": len(known), "files_hashed": n,
                        "median_ms": per, "max_ms": per, "total_ms": per * n / max(first.hashed, 1),
                        "measured": False}

    steady, figures = repeated(lambda: tick(store, cursor_json, max_files, known), repeat)
    out["steady_state"] = describe(steady, figures) | {"max_files_per_tick": max_files,
                                                        "known_partitions": len(known)}
    return out


def ratios(s3: dict[str, Any], local: dict[str, Any]) -> dict[str, float]:
    def r(a: float, b: float) -> float:
        return a / b if b else float("inf")

    return {k: r(s3[k]["median_ms"], local[k]["median_ms"]) for k in ("first_tick", "steady_state", "list_files")} | {
        "drain_total": r(s3["drain"]["total_ms"], local["drain"]["total_ms"])}


def markdown(s3: dict[str, Any], local: dict[str, Any], ratio: dict[str, float], files: int, total_bytes: int,
             max_files: int, upload_s: float, checksum_sha256: bool) -> str:
    def row(label: str, key: str) -> str:
        a, b = s3[key], local[key]
        hashed = f"{a.get('files_hashed', 0):,}"
        cursor = f"{a['cursor_bytes']:,}" if "cursor_bytes" in a else "–"
        return (f"| {label} | {a['files_listed']:,} | {hashed} | {a['median_ms']:,.0f} | {a['min_ms']:,.0f} | "
                f"{b['median_ms']:,.1f} | {ratio[key]:,.1f}× | {cursor} |")

    d3, dl = s3["drain"], local["drain"]
    lines = [
        f"Ingress sensor tick over {files:,} objects ({total_bytes / 1e6:,.1f} MB) in S3 (moto stand-in over HTTPS, "
        f"in-process), against the same files on the local file system; {os.cpu_count()} CPUs, "
        f"Python {pyplatform.python_version()}. Upload of the {files:,} objects: {upload_s:,.1f} s.",
        "",
        "| tick | objects listed | objects hashed | S3 median (ms) | S3 fastest (ms) "
        "| local median (ms) | S3/local | cursor JSON (bytes) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        row(f"first tick, max_files_per_tick = {max_files}", "first_tick"),
        row(f"steady state (all {files:,} in the cursor)", "steady_state"),
        row(f"listing alone ({-(-files // 1000)} ListObjectsV2 pages)", "list_files"),
        "",
        "Each hash is `S3Store.sha256`: a HEAD with ChecksumMode, "
        + ("which gives the SHA256 checksum the objects were uploaded with (no GET)." if checksum_sha256 else
           "then a GET, the objects having no SHA256 checksum (uploaded with the SDK's default, CRC32)."),
        f"Draining the {files:,}-object backlog at {max_files} per tick"
        f"{'' if d3['measured'] else ' (S3 estimated from the first tick, not run; --drain runs it)'}: "
        f"S3 {d3['ticks']} ticks, "
        f"{d3['median_ms']:,.0f} ms median per tick (slowest {d3['max_ms']:,.0f} ms), {d3['total_ms'] / 1e3:,.1f} s "
        f"in all; local {dl['ticks']} ticks, {dl['total_ms'] / 1e3:,.2f} s in all ({ratio['drain_total']:,.1f}×).",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_max = SensorConfig().max_files_per_tick
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=10_000, help="objects under the ingress prefix (default 10,000)")
    p.add_argument("--rows-per-file", type=int, default=20, help="data rows per file (default 20)")
    p.add_argument("--max-files", type=int, default=default_max,
                   help=f"max_files_per_tick for the capped ticks (default {default_max}, the platform default)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each tick kind (default 3)")
    p.add_argument("--upload-workers", type=int, default=16, help="upload threads (default 16)")
    p.add_argument("--checksum-sha256", action="store_true",
                   help="upload with ChecksumAlgorithm=SHA256, so S3Store.sha256 reads it from a HEAD (no GET); "
                        "default: the SDK's default checksum (CRC32), so each hash is a HEAD and a GET")
    p.add_argument("--drain", action="store_true",
                   help="also drain the whole backlog in S3 (one HEAD+GET per object: ~n × 50 ms here)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--tmp-dir", type=Path, help="parent of the temporary local folder (default: system temp)")
    p.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where s3_sensor_bench.json goes (default bench/out)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ingress = Path(tempfile.mkdtemp(prefix="s3_sensor_bench_", dir=args.tmp_dir))
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request would be measured too
    server = MotoServer()
    restore = contextlib.ExitStack()
    restore.enter_context(environ(server.env()))
    try:
        import boto3

        t0 = time.perf_counter()
        total_bytes = make_ingress(ingress, args.files, args.rows_per_file, args.seed)
        print(f"wrote {args.files:,} files ({total_bytes / 1e6:,.1f} MB) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
        kms = boto3.client("kms", region_name=REGION)
        key_id = kms.create_key(Description="bench lake")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=KMS_ALIAS, TargetKeyId=key_id)
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        t0 = time.perf_counter()
        uploaded = upload(ingress, args.upload_workers, args.checksum_sha256)
        upload_s = time.perf_counter() - t0
        print(f"uploaded {uploaded:,} objects with {args.upload_workers} threads in {upload_s:.1f} s",
              file=sys.stderr, flush=True)

        t0 = time.perf_counter()
        local = measure_local(str(ingress), args.max_files, args.repeat)
        print(f"local figures in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        store = S3Store(f"s3://{BUCKET}/ingress", AwsSession(REGION), KMS_ALIAS)
        t0 = time.perf_counter()
        s3 = measure_s3(store, ingress, args.max_files, args.repeat, args.drain)
        print(f"S3 figures in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    finally:
        server.stop()
        restore.close()
        shutil.rmtree(ingress, ignore_errors=True)
    ratio = ratios(s3, local)
    table = markdown(s3, local, ratio, args.files, total_bytes, args.max_files, upload_s, args.checksum_sha256)
    print(table)
    report = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ingress": {"files": args.files, "rows_per_file": args.rows_per_file, "bytes": total_bytes,
                    "pattern": PATTERN, "s3_prefix": f"s3://{BUCKET}/ingress/{'/'.join(FOLDER)}/"},
        "stand_in": "moto server over TLS, in this process (tests/aws_stand_in.MotoServer)",
        "upload": {"objects": uploaded, "workers": args.upload_workers, "seconds": upload_s,
                   "checksum": "SHA256" if args.checksum_sha256 else "SDK default"},
        "settle_seconds": 0,
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "platform": pyplatform.platform(),
                    "python": pyplatform.python_version()},
        "results": {"s3": s3, "local": local, "ratio_s3_over_local": ratio},
        "markdown": table,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "s3_sensor_bench.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
