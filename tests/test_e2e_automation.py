"""Declarative automation under a real ``dagster dev``: a published staging partition leads, with
no one clicking, to the dbt (ods, analytics) and serving assets; a partition that fails its
blocking check leads to nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from dagster_dev import DagsterDev, drop_file, wait_until

from resources.serving import ServingDatabase

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "mobility"

pytestmark = pytest.mark.slow


def automation_runs(dev: DagsterDev) -> list[dict]:
    # Runs requested by declarative automation target the implicit asset job, not an ingest job.
    return [r for r in dev.runs(limit=100) if r["jobName"].startswith("__ASSET_JOB")]


def materialized(dev: DagsterDev, key: list[str]) -> int:
    data = dev.graphql(
        """query M($k: AssetKeyInput!) { assetOrError(assetKey: $k) { __typename
             ... on Asset { assetMaterializations(limit: 100) { runId } } } }""",
        {"k": {"path": key}},
    )["assetOrError"]
    return len(data.get("assetMaterializations") or [])


def column_lineage(dev: DagsterDev, key: list[str]) -> dict[str, set[str]]:
    """The latest materialisation's column lineage, as the UI reads it."""
    data = dev.graphql(
        """query L($k: AssetKeyInput!) { assetOrError(assetKey: $k) { ... on Asset {
             assetMaterializations(limit: 1) { metadataEntries { label
               ... on TableColumnLineageMetadataEntry { lineage { columnName
                 columnDeps { assetKey { path } columnName } } } } } } } }""",
        {"k": {"path": key}},
    )["assetOrError"]
    entries = [e for m in data["assetMaterializations"] for e in m["metadataEntries"]
               if e["label"] == "dagster/column_lineage"]
    assert len(entries) == 1, data
    return {c["columnName"]: {"/".join(d["assetKey"]["path"]) + "." + d["columnName"] for d in c["columnDeps"]}
            for c in entries[0]["lineage"]}


def test_published_partitions_flow_to_serving_and_failed_ones_do_not(dev: DagsterDev) -> None:
    ingress = dev.platform_home / "ingress" / "mobility"
    drop_file(ingress / "taxi_zones", "taxi_zone_lookup.csv", SAMPLES / "taxi_zones" / "taxi_zone_lookup.csv")
    drop_file(ingress / "yellow_trips", "yellow_tripdata_2019-06_sample.csv",
              SAMPLES / "yellow_trips" / "yellow_tripdata_2019-06_sample.csv")
    start = time.monotonic()
    served = ["serving", "mobility", "daily_trips_by_borough"]
    wait_until(lambda: materialized(dev, served) > 0, timeout_s=300, interval_s=3,
               what="serving materialised by automation")
    print(f"\n[e2e] drop → served by automation: {time.monotonic() - start:.1f} s")
    runs = automation_runs(dev)
    assert runs and all(r["status"] in ("SUCCESS", "STARTED", "QUEUED", "NOT_STARTED") for r in runs), runs
    wait_until(lambda: all(r["status"] == "SUCCESS" for r in automation_runs(dev)), timeout_s=120, interval_s=2,
               what="every automation run succeeded")
    assert materialized(dev, ["ods", "mobility", "trips"]) >= 1
    db = ServingDatabase.local(dev.platform_home)
    assert db.row_count("mobility", "daily_trips_by_borough") > 0
    # Column lineage, as the UI shows it, from the served table back through the mart.
    assert column_lineage(dev, served)["total_revenue"] == {"analytics/mobility/daily_trips_by_borough.total_revenue"}
    assert column_lineage(dev, ["analytics", "mobility", "daily_trips_by_borough"])["total_revenue"] == {
        "ods/mobility/trips.total_amount"}

    # A reference file that fails its blocking contract check: nothing downstream may run for it.
    settled = len(automation_runs(dev))
    bad = (SAMPLES / "taxi_zones" / "taxi_zone_lookup.csv").read_text().replace('"Queens","Jamaica Bay"',
                                                                                   '"Atlantis","Jamaica Bay"')
    drop_file(ingress / "taxi_zones", "taxi_zone_lookup_v2.csv", bad.encode())
    wait_until(lambda: not (ingress / "taxi_zones" / "taxi_zone_lookup_v2.csv").exists(), timeout_s=120,
               interval_s=1, what="the bad file landed")
    time.sleep(45)  # several automation ticks (10 s) after the failed partition was staged
    assert len(automation_runs(dev)) == settled, automation_runs(dev)[: len(automation_runs(dev)) - settled]
