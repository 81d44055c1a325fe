"""Drop → queryable on S3, through S3's event notifications, under a real ``dagster dev``.

What is measured
    The README's AWS demo (``python -m cli stand-in --env test``: moto in server mode over TLS
    with the environment's CloudFormation stack, which sends S3's ``ObjectCreated`` notifications
    to the ingress SQS queue) with ``dagster dev`` on ``PLATFORM_ENV=test``. ``--drops`` distinct
    1,000-row trips files (``cli.generate.trips``, as ``bench/e2e_bench.py`` drops locally) are put
    into the S3 ingress prefix one after the other. Timed from the ``PutObject`` call to: the run
    being created (the ``ingress__events`` sensor read the notification), the run worker being
    launched and up, the staging step ending, and the partition being published in the Glue Data
    Catalog (what Athena, Redshift Spectrum or Spark would query), read through the platform's own
    catalog resource. Median reported. The stand-in's numbers are not AWS's: moto answers in
    milliseconds, real S3 notifications take up to seconds to arrive, and a real run worker starts
    where the deployment puts it (an ECS task takes minutes; see ``deploy/``).

Usage (from the repository root)::

    .venv/bin/python bench/s3_latency_bench.py              # 10 drops

The Markdown table is printed and written with everything else to ``bench/out/s3_latency_bench.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from aws_stand_in import start_demo, stop_demo  # noqa: E402
from dagster_dev import TERMINAL, DagsterDev  # noqa: E402
from e2e_bench import OUT_DIR, TRIPS_JOB, fmt, key_of, log, phases  # noqa: E402

from cli import generate  # noqa: E402


def published(platform, key: str) -> bool:
    return any(r.version.partition_key == key and r.state == "published"
               for r in platform.catalog().partitions("mobility", "yellow_trips"))


def drops(dev: DagsterDev, platform, work: Path, n: int, rows: int, timeout_s: float) -> list[dict]:
    from resources.environment import split_s3_uri

    ingress = platform.env().ingress.root
    bucket, prefix = split_s3_uri(ingress)
    s3 = platform.ingress().client
    out = []
    for i in range(n):
        name = f"yellow_tripdata_2024-04_s3lat{i:02d}.csv"
        src = generate.trips(work / name, rows, seed=2000 + i, error_rate=0.0)
        key, body = key_of(src), src.read_bytes()
        known = {r["runId"] for r in dev.runs(TRIPS_JOB)}
        t0, wall0 = time.monotonic(), time.time()
        s3.put_object(Bucket=bucket, Key=f"{prefix}/mobility/yellow_trips/{name}", Body=body,
                      ServerSideEncryption="aws:kms", SSEKMSKeyId=platform.env().lake.kms_key_id)
        t: dict = {"file": name, "rows": rows, "bytes": len(body)}
        run = None
        while time.monotonic() - t0 < timeout_s:
            if "glue_s" not in t and published(platform, key):
                t["glue_s"] = time.monotonic() - t0
            if run is None or run["status"] not in TERMINAL:
                new = [r for r in dev.runs(TRIPS_JOB, limit=20) if r["runId"] not in known]
                run = new[0] if new else None
            if run is not None and run["status"] in TERMINAL and ("glue_s" in t or run["status"] != "SUCCESS"):
                break
            time.sleep(0.2)
        if run is not None:
            t["status"] = run["status"]
            t["run_created_s"] = run["creationTime"] - wall0
            t.update(phases(dev, run["runId"], wall0))
        else:
            t["status"] = "NO RUN"
        log(f"S3 drop {i + 1}/{n}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in t.items()))
        out.append(t)
    return out


def table(lat: list[dict]) -> str:
    def med(k: str):
        vals = [t[k] for t in lat if k in t]
        return statistics.median(vals) if vals else None

    return "\n".join([
        "| measure (S3 stand-in, event notifications) | median |", "|---|---:|",
        f"| drops | {len(lat)} × {lat[0]['rows']:,} rows; outcomes {', '.join(t['status'] for t in lat)} |",
        f"| PutObject → run created (the notification read) | {fmt(med('run_created_s'))} |",
        f"| PutObject → run worker launched | {fmt(med('launched_s'))} |",
        f"| PutObject → run worker up | {fmt(med('worker_up_s'))} |",
        f"| PutObject → staging step ended | {fmt(med('step_ended_s'))} |",
        f"| PutObject → published in the Glue Data Catalog | {fmt(med('glue_s'))} |",
        f"| each drop, → Glue | {', '.join(fmt(t.get('glue_s'), '') for t in lat)} s |",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--drops", type=int, default=10)
    p.add_argument("--rows", type=int, default=1000)
    a = p.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="s3lat", dir="/tmp"))  # short: PostgreSQL's socket lives under it
    home = base / "h"
    proc, exports = start_demo(home)
    lat: list[dict] = []
    saved = dict(os.environ)
    try:
        os.environ.update({**exports, "PLATFORM_HOME": str(home)})
        from resources.environment import load_environment
        from resources.platform import PlatformResource

        load_environment.cache_clear()
        platform = PlatformResource()
        with DagsterDev(home, Path(exports["DAGSTER_HOME"]), extra_env=exports) as dev:
            log(f"dagster dev on the stand-in: ready after {dev.location_ready_s:.1f} s")
            (base / "gen").mkdir()
            lat = drops(dev, platform, base / "gen", a.drops, a.rows, timeout_s=300)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        stop_demo(proc)
        shutil.rmtree(base, ignore_errors=True)
    md = table(lat)
    print(md)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "s3_latency_bench.json").write_text(json.dumps({
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "args": vars(a), "latency": lat, "markdown": md}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
