"""End to end under a real ``dagster dev`` (webserver + daemon + code server): the bundled samples
are delivered into ingress, the sensors start one run per file, and the outcome is read back
through the GraphQL API, the lake and the DuckDB catalog, as a user would see it."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from dagster_dev import TERMINAL, DagsterDev, drop_file, wait_until

from assets.sensors import SET_ASIDE_JOB
from core.names import partition_key

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "mobility"
TRIPS = ("mobility", "yellow_trips")
ZONES = ("mobility", "taxi_zones")
GOOD_TRIPS = ("yellow_tripdata_2019-06_sample.csv", "yellow_tripdata_2021-01_sample.csv")
BAD_TRIPS = "yellow_tripdata_2009-01_sample.csv"
ZONE_FILE = "taxi_zone_lookup.csv"
STAGING_KEY = ["staging", TRIPS[0], f"staging_{TRIPS[1]}"]
RUNS_TIMEOUT_S = 240

pytestmark = pytest.mark.slow


def ingest_runs(dev: DagsterDev) -> list[dict]:
    """Runs started by the ingress sensors (automation also runs the modelled zones meanwhile)."""
    return [r for r in dev.runs() if r["jobName"].startswith("ingest__")]


def key_of(path: Path) -> str:
    return partition_key(path.name, hashlib.sha256(path.read_bytes()).hexdigest())


def count(home: Path, table: str) -> int:
    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def test_samples_flow_through_dagster_dev(dev: DagsterDev):
    home = dev.platform_home
    print(f"\n[e2e] startup: GraphQL answering after {dev.graphql_ready_s:.1f} s, "
          f"code location loaded after {dev.location_ready_s:.1f} s")

    deliveries = {
        **{name: (TRIPS, SAMPLES / "yellow_trips" / name) for name in (*GOOD_TRIPS, BAD_TRIPS)},
        ZONE_FILE: (ZONES, SAMPLES / "taxi_zones" / ZONE_FILE),
    }
    keys = {name: key_of(src) for name, (_, src) in deliveries.items()}

    dropped_at = time.monotonic()
    for name, ((zone, dataset), src) in deliveries.items():
        drop_file(home / "ingress" / zone / dataset, name, src)

    # Poll until one run per file has finished; note when the first staging partition appears.
    staging_dir = home / "lake" / "staging" / zone_path(TRIPS)
    published = lambda: any(staging_dir.glob("*/*/*.parquet"))  # noqa: E731
    first_publish_s = None
    runs: dict[str, dict] = {}
    deadline = dropped_at + RUNS_TIMEOUT_S
    while True:
        if first_publish_s is None and published():
            first_publish_s = time.monotonic() - dropped_at
        runs = {r["tags"].get("platform/source_file"): r for r in ingest_runs(dev)}
        if set(deliveries) <= set(runs) and all(r["status"] in TERMINAL for r in runs.values()):
            break
        if time.monotonic() > deadline:
            state = {name: r["status"] for name, r in runs.items()}
            pytest.fail(f"runs not finished {RUNS_TIMEOUT_S} s after the drop: {state}\n{dev.log_tail()}")
        time.sleep(0.5)
    all_done_s = time.monotonic() - dropped_at
    if first_publish_s is None and published():
        first_publish_s = all_done_s

    print(f"[e2e] drop → first staging publish (yellow_trips Parquet): "
          f"{first_publish_s:.1f} s" if first_publish_s is not None else "[e2e] no staging publish seen")
    print(f"[e2e] drop → all {len(runs)} runs finished: {all_done_s:.1f} s")
    for name, r in sorted(runs.items()):
        queued = r["startTime"] - r["creationTime"] if r["startTime"] else float("nan")
        took = r["endTime"] - r["startTime"] if r["endTime"] and r["startTime"] else float("nan")
        print(f"[e2e]   {name:40s} {r['status']:8s} waited {queued:5.1f} s, ran {took:5.1f} s  ({r['runId']})")

    # -- runs: one per file, of the right job, with the expected outcome --------------------
    per_file = Counter(r["tags"].get("platform/source_file") for r in ingest_runs(dev))
    assert per_file == dict.fromkeys(deliveries, 1), f"expected one run per delivered file: {per_file}"
    for name, ((zone, dataset), _) in deliveries.items():
        r = runs[name]
        assert r["jobName"] == f"ingest__{zone}__{dataset}", r
        assert r["tags"].get("dagster/partition") == keys[name], r["tags"]
    expected_status = {**dict.fromkeys((*GOOD_TRIPS, ZONE_FILE), "SUCCESS"), BAD_TRIPS: "FAILURE"}
    reasons = {n: dev.failure_reason(r["runId"]) for n, r in runs.items() if r["status"] != "SUCCESS"}
    assert {n: r["status"] for n, r in runs.items()} == expected_status, reasons
    print(f"[e2e] {BAD_TRIPS} failed as expected: {reasons[BAD_TRIPS][:300]}")
    assert reasons[BAD_TRIPS].startswith("land_and_stage__mobility__yellow_trips"), reasons  # landed, then rejected

    # -- blocking checks on staging/mobility/staging_yellow_trips, per partition ---------------------
    # The check specs declare no partitions_def, so Dagster records executions unpartitioned
    # (partition None); each run materialises exactly one partition, so the run identifies it.
    checks = {
        name: {e["runId"]: e for e in dev.check_executions(STAGING_KEY, name)}
        for name in ("contract", "reconciliation")
    }
    for check, by_run in checks.items():
        for ex in by_run.values():
            run_partition = next(r["tags"].get("dagster/partition") for r in runs.values() if r["runId"] == ex["runId"])
            assert ex["partition"] in (None, run_partition), (check, ex, run_partition)
    for name in GOOD_TRIPS:
        for check in ("contract", "reconciliation"):
            ex = checks[check].get(runs[name]["runId"])
            assert ex is not None, f"no {check} execution for {name} ({keys[name]}): {checks[check]}"
            assert ex["status"] == "SUCCEEDED" and ex["evaluation"]["success"], (check, name, ex)
    bad = checks["contract"].get(runs[BAD_TRIPS]["runId"])
    assert bad is not None, f"no contract execution for {BAD_TRIPS} ({keys[BAD_TRIPS]}): {checks['contract']}"
    assert bad["status"] == "FAILED" and bad["evaluation"]["success"] is False, bad
    assert "missing" in (bad["evaluation"]["description"] or "").lower(), bad
    rec_bad = checks["reconciliation"].get(runs[BAD_TRIPS]["runId"])
    assert rec_bad is None or rec_bad["status"] != "SUCCEEDED", rec_bad  # never reconciled
    print(f"[e2e] check executions (partition field): "
          f"{sorted({str(e['partition']) for by_run in checks.values() for e in by_run.values()})}")

    # -- alerting: the rejected file is one alert in the local alert file, within a sensor interval --
    import json

    alert_file = home / "alerts" / "alerts.jsonl"
    wait_until(lambda: alert_file.exists() and alert_file.read_text().strip(), timeout_s=30, interval_s=1,
               what="the rejection's alert in the local alert file")
    time.sleep(6)  # one more alerting tick: it must add nothing
    alerts = [json.loads(line) for line in alert_file.read_text().splitlines()]
    assert [(a["kind"], a["source_file"], a["check"]) for a in alerts] == [("opened", BAD_TRIPS, "contract")], alerts
    assert "missing columns" in alerts[0]["body"] and alerts[0]["partition"] == keys[BAD_TRIPS]
    print(f"[e2e] alert: {alerts[0]['title']}: {alerts[0]['body'][:160]}")

    # -- catalog, read as a user would (separate read-only connection) -----------------------
    assert count(home, "staging_mobility.yellow_trips") == 1000 + 776
    assert count(home, "quarantine_mobility.yellow_trips") == 4
    assert count(home, "staging_mobility.taxi_zones") == 265

    # -- lake: the rejected file stays in landing; every delivered file has left ingress -------
    landed_bad = home / "lake" / "landing" / zone_path(TRIPS) / keys[BAD_TRIPS] / BAD_TRIPS
    assert landed_bad.is_file(), sorted((home / "lake" / "landing").rglob("*"))
    assert landed_bad.read_bytes() == (SAMPLES / "yellow_trips" / BAD_TRIPS).read_bytes()
    assert not (staging_dir / keys[BAD_TRIPS]).exists()
    for name, ((zone, dataset), _) in deliveries.items():
        assert not (home / "ingress" / zone / dataset / name).exists(), f"{name} still in ingress"
    assert sorted(p.parent.parent.name for p in staging_dir.glob("*/*/*.parquet")) \
        == sorted(keys[n] for n in GOOD_TRIPS)

    # -- a byte-identical re-delivery under another name is set aside, visibly ----------------
    copy_name = "yellow_tripdata_2019-06_copy.csv"
    runs_before = {r["runId"] for r in ingest_runs(dev)}
    drop_file(home / "ingress" / zone_path(TRIPS), copy_name, SAMPLES / "yellow_trips" / GOOD_TRIPS[0])
    aside = wait_until(lambda: [r for r in dev.runs(SET_ASIDE_JOB) if r["status"] in TERMINAL], timeout_s=60,
                       what="the copy set aside")
    assert [r["status"] for r in aside] == ["SUCCESS"], aside  # nothing wrong, just nothing new
    assert {r["runId"] for r in ingest_runs(dev)} == runs_before  # no ingest run for it
    assert not (home / "ingress" / zone_path(TRIPS) / copy_name).exists()
    moved = home / "ingress" / "_set_aside" / zone_path(TRIPS) / copy_name
    assert moved.read_bytes() == (SAMPLES / "yellow_trips" / GOOD_TRIPS[0]).read_bytes()
    ticks = dev.sensor_ticks("mobility__yellow_trips__ingress", limit=25)
    said = [e["message"] for t in ticks for e in t["logEvents"]["events"]
            if f"setting aside {copy_name}" in e["message"]]
    assert said and "byte-identical to the earlier delivery yellow_tripdata_2019-06_sample.csv" in said[0], said
    print(f"[e2e] duplicate: {said[0]}")
    # ... and so is a file whose name does not match the dataset's pattern: its run fails, naming it.
    drop_file(home / "ingress" / zone_path(TRIPS), "trips_export.csv", b"whatever")
    failed = wait_until(lambda: [r for r in dev.runs(SET_ASIDE_JOB) if r["status"] == "FAILURE"], timeout_s=60,
                        what="the misnamed file set aside")
    reason = dev.failure_reason(failed[0]["runId"])
    assert "ingress/mobility/yellow_trips/trips_export.csv does not match the dataset's file pattern " \
           "'yellow_tripdata_*.csv'" in reason, reason
    assert (home / "ingress" / "_set_aside" / zone_path(TRIPS) / "trips_export.csv").read_bytes() == b"whatever"
    assert count(home, "staging_mobility.yellow_trips") == 1000 + 776


def zone_path(zone_dataset: tuple[str, str]) -> str:
    return "/".join(zone_dataset)
