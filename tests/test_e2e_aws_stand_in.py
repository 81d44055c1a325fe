"""The README's demo, as a user runs it: ``python -m cli stand-in --env test`` in one shell; in
another, ``source`` the file it writes, ``python -m cli seed`` and ``dagster dev`` (what ``make
run`` does). Under that real ``dagster dev`` (webserver, daemon, code server), with
``PLATFORM_ENV=test``: every sample goes from the S3 ingress prefix to landing and staging (S3,
Glue), automation builds the warehouse (the Redshift code on the PostgreSQL stand-in) and serving
(Aurora's path, credentials from Secrets Manager over verified TLS). Outcomes are read back
through GraphQL, Glue, the warehouse and the serving database; no secret is in the event log."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from aws_stand_in import clean_env, start_demo, stop_demo
from dagster_dev import TERMINAL, DagsterDev, wait_until

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
SERVED = [["serving", "mobility", "serving_daily_trips_by_borough"], ["serving", "mobility", "serving_zone_flows"],
          ["serving", "finance", "serving_monthly_spend_by_cost_centre"]]
# The two sample files that are wrong on purpose (README: "Real-data findings").
REJECTED = {"yellow_tripdata_2009-01_sample.csv", "expenses_2026-11-19.csv"}  # 2009 layout; no currency

pytestmark = pytest.mark.slow


def _samples() -> list[Path]:
    return sorted(p for p in SAMPLES.glob("*/*/*") if p.is_file() and not p.name.startswith((".", "README")))


def _materialized(dev: DagsterDev, key: list[str]) -> int:
    data = dev.graphql("""query M($k: AssetKeyInput!) { assetOrError(assetKey: $k) {
                            ... on Asset { assetMaterializations(limit: 100) { runId } } } }""",
                       {"k": {"path": key}})["assetOrError"]
    return len(data.get("assetMaterializations") or [])


def test_the_demo_serves_the_samples_from_the_stand_ins_under_dagster_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    base = Path(tempfile.mkdtemp(prefix="e2eaws", dir="/tmp"))
    home = base / "h"
    t0 = time.monotonic()
    proc, exports = start_demo(home)
    print(f"\n[e2e-aws] stand-ins up after {time.monotonic() - t0:.1f} s")
    try:
        assert exports["PLATFORM_ENV"] == "test" and exports["AWS_ENDPOINT_URL"].startswith("https://127.0.0.1:")
        env = {**clean_env(), **exports, "PLATFORM_HOME": str(home)}
        seeded = subprocess.run([sys.executable, "-m", "cli", "seed"], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=120)
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        assert "s3://acme-lake-test-ingress/ingress/" in seeded.stdout
        dagster_home = Path(exports["DAGSTER_HOME"])  # the demo's own instance, under its PLATFORM_HOME
        assert dagster_home.is_relative_to(home)
        with DagsterDev(home, dagster_home, extra_env=exports) as dev:
            samples = {p.name for p in _samples()}

            def ingested() -> dict[str, dict]:
                return {r["tags"].get("platform/source_file"): r for r in dev.runs()
                        if r["jobName"].startswith("ingest__")}

            wait_until(lambda: samples <= set(ingested()) and all(r["status"] in TERMINAL for r in ingested().values()),
                       timeout_s=420, interval_s=3, what="one finished ingest run per sample")
            print(f"[e2e-aws] every sample ingested {time.monotonic() - t0:.1f} s in")
            outcome = {name: r["status"] for name, r in ingested().items()}
            assert {n for n, s in outcome.items() if s != "SUCCESS"} == REJECTED, outcome
            wait_until(lambda: all(_materialized(dev, k) > 0 for k in SERVED) and
                       all(r["status"] in TERMINAL for r in dev.runs()), timeout_s=420, interval_s=3,
                       what="every served model materialised by automation, every run finished")
            automation = [r for r in dev.runs() if r["jobName"].startswith("__ASSET_JOB")]
            print(f"[e2e-aws] served, {len(automation)} automation runs, {time.monotonic() - t0:.1f} s in")
            failed = [(r["runId"], dev.failure_reason(r["runId"])) for r in automation if r["status"] != "SUCCESS"]
            assert automation and not failed, failed

        print(f"[e2e-aws] dagster dev stopped {time.monotonic() - t0:.1f} s in")
        # Read back as an operator would, through the platform's own resources on the stand-ins.
        for key, value in {**exports, "PLATFORM_HOME": str(home)}.items():
            monkeypatch.setenv(key, value)
        from core.zones import all_datasets, load_zones
        from resources.environment import load_environment
        from resources.platform import PlatformResource

        load_environment.cache_clear()
        platform = PlatformResource()
        catalog, warehouse = platform.catalog(), platform.warehouse()
        for ds in all_datasets():
            published = [r for r in catalog.partitions(ds.insight_zone, ds.name) if r.state == "published"]
            assert published, ds.id
            rows = warehouse.row_counts({ds.name: (f"staging_{ds.insight_zone}", ds.name)})[ds.name]
            assert rows == sum(r.version.rows_staged for r in published) > 0, ds.id
        db = platform.serving()
        for zone in load_zones():
            for model in zone.spec.serving:
                assert db.row_count(zone.name, model) > 0, (zone.name, model)
        secrets = platform.secrets()
        env = platform.env()
        password = secrets.get_fields(env.serving.secret_name)["password"].get_secret_value()
        pii_key = secrets.get(env.secrets.pii_key).get_secret_value()
        # Every byte Dagster kept (event log, run storage, compute logs): the secrets are in none.
        kept = [f for f in dagster_home.rglob("*") if f.is_file()]
        # The scan reads the event log.
        assert any(b"land_and_stage__mobility__yellow_trips" in f.read_bytes() for f in kept)
        leaks = [f for f in kept if password.encode() in (data := f.read_bytes()) or pii_key.encode() in data]
        assert leaks == []
        load_environment.cache_clear()
        print(f"[e2e-aws] read back {time.monotonic() - t0:.1f} s in")
    finally:
        stop_demo(proc)
        shutil.rmtree(base, ignore_errors=True)
    # Ctrl-C stops everything the stand-in started: its PostgreSQL's files (and so the server) are gone.
    assert proc.returncode == 0
    assert not Path(exports["PGSSLROOTCERT"]).parent.exists()
