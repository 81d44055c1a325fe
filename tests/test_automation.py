"""Declarative automation of the modelled zones, evaluated tick by tick against a real instance
whose staging partitions were produced by real in-process ingest runs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from support import SAMPLES, ingest, requested

ZONES_FILE = SAMPLES / "mobility/taxi_zones/taxi_zone_lookup.csv"
STG_ZONES = dg.AssetKey(["ods", "mobility", "ods_base_mobility__taxi_zones"])
MART = dg.AssetKey(["analytics", "mobility", "analytics_daily_trips_by_borough"])
SERVED = dg.AssetKey(["serving", "mobility", "serving_daily_trips_by_borough"])


@pytest.mark.parametrize(("bad", "expect_request"), [(False, True), (True, False)])
def test_staging_partition_triggers_dbt_only_when_its_blocking_checks_pass(
    home: Path, bad: bool, expect_request: bool
) -> None:
    text = ZONES_FILE.read_text()
    if bad:  # reference data allows no quarantine: one bad borough fails the blocking contract check
        text = text.replace('"Queens","Jamaica Bay"', '"Atlantis","Jamaica Bay"')
    with dg.instance_for_test() as instance:
        before, cursor = requested(instance)
        assert STG_ZONES not in before  # nothing happened yet
        run = ingest(home, "mobility__taxi_zones", text.encode(), name="taxi_zone_lookup.csv", instance=instance)
        assert run.checks()["contract"].passed is not bad
        after, cursor = requested(instance, cursor)
        assert (STG_ZONES in after) is expect_request
        again, _ = requested(instance, cursor)
        assert STG_ZONES not in again  # handled: one request per update


@pytest.mark.parametrize(("failed_check", "expect_request"),
                         [(None, True), ("not_null_daily_trips_by_borough_trips", False)])
def test_serving_follows_its_mart_unless_a_blocking_test_failed(failed_check: str | None,
                                                                 expect_request: bool) -> None:
    with dg.instance_for_test() as instance:
        _, cursor = requested(instance)
        instance.report_runless_asset_event(dg.AssetMaterialization(MART))
        if failed_check:
            instance.report_runless_asset_event(dg.AssetCheckEvaluation(
                asset_key=MART, check_name=failed_check, passed=False, severity=dg.AssetCheckSeverity.ERROR))
        after, _ = requested(instance, cursor)
        assert (SERVED in after) is expect_request


def test_a_model_waits_for_a_modelled_dependency_that_was_never_built(home: Path) -> None:
    trips = SAMPLES / "mobility/yellow_trips/yellow_tripdata_2019-06_sample.csv"
    with dg.instance_for_test() as instance:
        _, cursor = requested(instance)
        assert ingest(home, "mobility__yellow_trips", trips, instance=instance).success
        after, _ = requested(instance, cursor)
    assert dg.AssetKey(["ods", "mobility", "ods_base_mobility__yellow_trips"]) in after
    # trips also needs ods/mobility/ods_zones, which does not exist: it must not be requested yet.
    assert dg.AssetKey(["ods", "mobility", "ods_trips"]) not in after
