"""The platform's own numbers (issue 9): the daily deliveries asset of an insight zone counts what
the staging checks decided that day, and every alert raised is an entry of the incident log."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from support import SAMPLES, ingest, load_definitions_module
from test_steward import held_trips

from assets.operations import INCIDENTS_KEY, deliveries_key
from resources.platform import PlatformResource

TRIPS = SAMPLES / "mobility" / "yellow_trips"


@pytest.fixture
def instance():
    with tempfile.TemporaryDirectory() as d, dg.instance_for_test(temp_dir=d) as inst:
        yield inst


def _defs() -> dg.Definitions:
    return load_definitions_module().defs


def test_a_days_deliveries_count_staged_held_and_rejected_files_and_the_incidents(home: Path, instance) -> None:
    platform = PlatformResource(environment="local", home=str(home))
    good = ingest(home, "mobility__yellow_trips", TRIPS / "yellow_tripdata_2019-06_sample.csv", instance=instance)
    held = ingest(home, "mobility__yellow_trips", held_trips(), name="yellow_tripdata_2021-02.csv", instance=instance)
    rejected = ingest(home, "mobility__yellow_trips", TRIPS / "yellow_tripdata_2009-01_sample.csv", instance=instance)
    assert good.success and not held.success and not rejected.success
    # The alerts sensor raises two incidents (held, rejected) and records each in the incident log.
    sensor = next(s for s in _defs().sensors if s.name == "alerts")
    result = sensor(dg.build_sensor_context(instance=instance, resources={"platform": platform}))
    for event in result.asset_events:  # as the daemon stores a tick's events
        instance.report_runless_asset_event(event)
    log = instance.fetch_observations(INCIDENTS_KEY, limit=10).records
    assert sorted(r.asset_observation.metadata["source_file"].value for r in log) == [
        "yellow_tripdata_2009-01_sample.csv", "yellow_tripdata_2021-02.csv"]
    assert {r.asset_observation.metadata["alert"].value for r in log} == {"opened"}
    assert all(r.asset_observation.metadata["asset"].value == "staging/mobility/staging_yellow_trips" for r in log)

    today = datetime.now(UTC).strftime("%Y-%m-%d")
    job = _defs().resolve_job_def("operations__daily")
    run = job.execute_in_process(partition_key=today, instance=instance, resources={"platform": platform})
    assert run.success
    mat = [m for m in run.get_asset_materialization_events()
           if m.asset_key == deliveries_key("mobility")][0].materialization
    assert mat.partition == today
    stats = {k: v.value for k, v in mat.metadata.items()}
    contract = {c.asset_check_key.asset_key: c for c in good.result.get_asset_check_evaluations()}
    good_read = next(iter(contract.values())).metadata["rows_read"].value
    good_q = next(iter(contract.values())).metadata["rows_quarantined"].value
    assert stats["files_delivered"] == 3 and stats["files_staged"] == 1
    assert stats["files_held"] == 1 and stats["files_rejected"] == 1
    assert stats["rows_staged"] == good_read - good_q and stats["rows_held"] > 0
    assert stats["rows_read"] == stats["rows_staged"] + stats["rows_held"] + stats["rows_quarantined"]
    assert stats["incidents_opened"] == 2 and stats["incidents_resolved"] == 0
    assert all(isinstance(v, int) for v in stats.values())  # numeric: the Plots tab draws each
    # Another day had nothing; the finance zone had nothing today.
    other = job.execute_in_process(partition_key="2026-01-01", instance=instance, resources={"platform": platform})
    assert other.success
    latest = instance.get_latest_materialization_event(deliveries_key("finance")).asset_materialization
    assert latest.partition == "2026-01-01" and all(v.value == 0 for v in latest.metadata.values())


def test_the_schedule_counts_today() -> None:
    defs = _defs()
    schedule = defs.resolve_schedule_def("operations__today")
    when = datetime(2026, 12, 2, 23, 45, tzinfo=UTC)
    ctx = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    [request] = schedule.evaluate_tick(ctx).run_requests
    assert request.partition_key == "2026-12-02"
