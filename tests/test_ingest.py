"""Integration: in-process materialisation with the real local resources (filesystem lake,
DuckDB catalog, a real Dagster instance)."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
from support import SAMPLES, catalog_states, dataset_defs, ingest, lake_files, published_file, query, view_files

import assets.ingest
import engine.arrow as arrow_engine
import engine.arrow.stager as stager

YELLOW = SAMPLES / "mobility" / "yellow_trips"
ZONES = SAMPLES / "mobility" / "taxi_zones" / "taxi_zone_lookup.csv"
EXPENSES = SAMPLES / "finance" / "expense_reports"


def test_mobility_samples_reach_staging(home: Path) -> None:
    with dg.instance_for_test() as instance:
        r2019 = ingest(home, "mobility__yellow_trips", YELLOW / "yellow_tripdata_2019-06_sample.csv", instance=instance)
        r2021 = ingest(home, "mobility__yellow_trips", YELLOW / "yellow_tripdata_2021-01_sample.csv", instance=instance)
        rzones = ingest(home, "mobility__taxi_zones", ZONES, instance=instance)
    for r in (r2019, r2021, rzones):
        assert r.success, r.failure_message()
        assert all(c.passed for c in r.checks().values())
        assert {c.partition for c in r.checks().values()} == {r.partition_key}  # a verdict per file
        assert not r.ingress_file.exists()  # landed, so removed from ingress
    assert query(home, "select count(*) from staging_mobility.yellow_trips") == [(1776,)]
    assert query(home, "select count(*) from quarantine_mobility.yellow_trips") == [(4,)]
    assert query(home, "select count(*), count(distinct location_id) from staging_mobility.taxi_zones") == [(265, 265)]
    # Typed columns, snake_case names, both timestamp formats parsed.
    assert query(home, "select min(pickup_at)::varchar, max(pickup_at)::varchar from staging_mobility.yellow_trips "
                       "where _source_file = 'yellow_tripdata_2021-01_sample.csv'") == [
        ("2021-01-01 00:00:00", "2021-01-01 01:00:00")]
    cols = dict(query(home, "select column_name, column_type from (describe staging_mobility.yellow_trips)"))
    assert cols["pickup_location_id"] == "SMALLINT" and cols["pickup_at"] == "TIMESTAMP"
    assert cols["fare_amount"] == "DOUBLE" and cols["_source_line"] == "BIGINT"
    # Metadata the UI shows.
    m = r2021.materializations()
    assert m["staging"].metadata["rows_staged"].value == 776
    # The asset's row count is the published table's (both trip files), what a reader of staging sees.
    assert m["staging"].metadata["dagster/row_count"].value == 1776 == query(
        home, "select count(*) from staging_mobility.yellow_trips")[0][0]
    assert m["quarantine"].metadata["dagster/row_count"].value == 4
    assert m["staging"].metadata["source_file"].value == "yellow_tripdata_2021-01_sample.csv"
    schema = m["staging"].metadata["dagster/column_schema"].value
    assert [c.name for c in schema.columns][:3] == ["vendor_id", "pickup_at", "dropoff_at"]
    sha = hashlib.sha256((YELLOW / "yellow_tripdata_2021-01_sample.csv").read_bytes()).hexdigest()
    assert m["landing"].metadata["sha256"].value == sha
    assert r2021.partition_key == f"yellow_tripdata_2021-01_sample.csv@{sha[:16]}"


def test_landing_keeps_the_exact_bytes(home: Path) -> None:
    src = YELLOW / "yellow_tripdata_2019-06_sample.csv"
    r = ingest(home, "mobility__yellow_trips", src)
    [landed] = lake_files(home, "landing")
    assert landed.read_bytes() == src.read_bytes()
    assert landed.parent.name == r.partition_key
    assert landed.stat().st_mode & 0o777 == 0o440  # immutable; not readable by other users
    # Landing is never exposed through the catalog.
    assert not [s for (s,) in query(home, "select distinct table_schema from information_schema.tables")
                if s.startswith("landing")]


def test_quarantine_rows_carry_reasons_and_original_values(home: Path) -> None:
    r = ingest(home, "mobility__yellow_trips", YELLOW / "yellow_tripdata_2021-01_sample.csv")
    rows = query(home, "select _source_file, _source_line, _failed_columns, _failed_rules, pickup_at, _errors "
                       "from quarantine_mobility.yellow_trips order by _source_line")
    assert [row[1] for row in rows] == [457, 532, 548, 718] or len(rows) == 4
    first = rows[0]
    assert first[0] == "yellow_tripdata_2021-01_sample.csv"
    assert first[2] == ["pickup_at"] and first[3][0].startswith("type(timestamp")
    assert first[4] == "31/12/2020 23:59"  # the original text, not a guessed date
    line = (YELLOW / "yellow_tripdata_2021-01_sample.csv").read_text().splitlines()[first[1] - 1]
    assert line.startswith("2,31/12/2020 23:59") or "31/12/2020 23:59" in line
    check = r.checks()["contract"]
    assert check.passed and check.metadata["rows_quarantined"].value == 4


def test_finance_samples_mask_pii_in_metadata(home: Path) -> None:
    with dg.instance_for_test() as instance:
        results = [ingest(home, "finance__expense_reports", p, instance=instance)
                   for p in sorted(EXPENSES.glob("expenses_2026-11-1[678].csv"))]
    assert all(r.success for r in results)
    staged = query(home, "select count(*) from staging_finance.expense_reports")[0][0]
    quarantined = query(home, "select count(*) from quarantine_finance.expense_reports")[0][0]
    read = sum(r.checks()["reconciliation"].metadata["rows_read"].value for r in results)
    assert staged + quarantined == read and quarantined > 0
    emails = {e for (e,) in query(home, "select employee_email from quarantine_finance.expense_reports")}
    for r in results:
        for ev in r.result.all_events:
            text = str(ev.event_specific_data)
            assert not any(e and e in text for e in emails), "PII leaked into Dagster events"


def test_rejected_file_fails_the_blocking_check_and_stays_in_landing(home: Path) -> None:
    src = EXPENSES / "expenses_2026-11-19.csv"
    r = ingest(home, "finance__expense_reports", src)
    assert not r.success
    check = r.checks()["contract"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "expenses_2026-11-19.csv rejected for dataset finance.expense_reports" in check.description
    assert "missing columns: currency" in check.description
    assert "stays in landing" in r.failure_message()
    assert [p.read_bytes() for p in lake_files(home, "landing")] == [src.read_bytes()]
    assert lake_files(home, "staging") == [] and lake_files(home, "quarantine") == []
    # Terminal: a rejected file is never retried, and the failure says so to alerting.
    assert not [e for e in r.result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    failure = next(e for e in r.result.all_events if e.is_step_failure).step_failure_data
    assert failure.user_failure_data.metadata["error_kind"].value == "terminal"
    assert failure.user_failure_data.metadata["error"].value == "FileRejected"


def _downstream(dataset_id: str) -> dg.AssetsDefinition:
    defs = dataset_defs(dataset_id)

    @dg.asset(key=["ods", "test", "ods_downstream"], deps=[k for k in defs.assets.keys if k.path[0] == "staging"],
              partitions_def=defs.partitions)
    def downstream() -> None:
        return None

    return downstream


@pytest.mark.parametrize(("bad", "runs_downstream"), [(False, True), (True, False)])
def test_blocking_check_stops_downstream(home: Path, bad: bool, runs_downstream: bool) -> None:
    text = ZONES.read_text()
    if bad:  # reference data allows no quarantine at all: one bad borough blocks the partition
        text = text.replace('"Queens","Jamaica Bay"', '"Atlantis","Jamaica Bay"')
    r = ingest(home, "mobility__taxi_zones", text.encode(), name="taxi_zone_lookup.csv",
               extra_assets=[_downstream("mobility__taxi_zones")])
    assert r.checks()["contract"].passed is not bad
    materialized = {ev.asset_key.path[0] for ev in r.result.get_asset_materialization_events()}
    assert ("ods" in materialized) is runs_downstream
    if bad:
        assert r.checks()["reconciliation"].passed  # nothing lost even when blocked
        # Held outside the catalog's view: nothing reading staging picks it up.
        assert catalog_states(home, "mobility__taxi_zones") == {r.partition_key: "held"}
        # Not materialised in staging: the partition shows as failed, not green.
        assert "staging" not in r.materializations()
        assert r.materializations()["quarantine"].metadata["catalog_state"].value.startswith("held")
        with pytest.raises(duckdb.CatalogException):
            query(home, "select count(*) from staging_mobility.taxi_zones")
        assert query(home, "select _failed_columns, _failed_rules from quarantine_mobility.taxi_zones") == [
            (["borough"], ["isin(['Bronx', 'Brooklyn', 'EWR', 'Manhattan', 'Queens', 'Staten Island', 'Unknown'])"])]


def test_rerun_replaces_the_partition_exactly(home: Path) -> None:
    src = YELLOW / "yellow_tripdata_2021-01_sample.csv"
    with dg.instance_for_test() as instance:
        first = ingest(home, "mobility__yellow_trips", src, instance=instance)
        before = {zone: pq.read_table(published_file(first, zone)) for zone in ("staging", "quarantine")}
        second = ingest(home, "mobility__yellow_trips", src, instance=instance)  # same bytes again
    assert first.partition_key == second.partition_key and second.success
    for zone in ("staging", "quarantine"):
        # A new version, identical, which the catalog now points at; the previous one is out of view.
        assert published_file(second, zone) != published_file(first, zone)
        assert pq.read_table(published_file(second, zone)).equals(before[zone])
        assert published_file(second, zone) in view_files(home, f"{zone}_mobility.yellow_trips")
        assert published_file(first, zone) not in view_files(home, f"{zone}_mobility.yellow_trips")
    assert query(home, "select count(*) from staging_mobility.yellow_trips") == [(776,)]
    assert second.materializations()["landing"].metadata["landed_in_this_run"].value is False


def test_old_versions_of_a_partition_are_removed_once_no_reader_can_need_them(home: Path) -> None:
    src = YELLOW / "yellow_tripdata_2021-01_sample.csv"
    with dg.instance_for_test() as instance:
        first = ingest(home, "mobility__yellow_trips", src, instance=instance)
        old = published_file(first, "staging")
        second = ingest(home, "mobility__yellow_trips", src, instance=instance)
        assert old.exists()  # kept for a while: a dbt run's catalog snapshot may still read it
        hours_ago = time.time() - 2 * 3600
        os.utime(old, (hours_ago, hours_ago))
        third = ingest(home, "mobility__yellow_trips", src, instance=instance)
    assert not old.exists()
    assert published_file(second, "staging").exists()  # younger than the retention: kept
    assert published_file(third, "staging") in view_files(home, "staging_mobility.yellow_trips")


def test_failure_mid_write_leaves_previous_output_intact(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = YELLOW / "yellow_tripdata_2019-06_sample.csv"
    monkeypatch.setattr(assets.ingest, "RETRY", dg.RetryPolicy(max_retries=0))  # see what one attempt leaves
    with dg.instance_for_test() as instance:
        good = ingest(home, "mobility__yellow_trips", src, instance=instance)
        assert good.success
        published = {p: p.read_bytes() for p in lake_files(home, "staging") + lake_files(home, "quarantine")}
        views = {zone: view_files(home, f"{zone}_mobility.yellow_trips") for zone in ("staging", "quarantine")}

        # Small batches so the file is written in several pieces; fail after the first one.
        monkeypatch.setattr(arrow_engine, "BLOCK_SIZE", 16 << 10)
        calls = {"n": 0}
        real = stager.Stager.process

        def crash_after_first_batch(self, raw, lines):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
            return real(self, raw, lines)

        monkeypatch.setattr(stager.Stager, "process", crash_after_first_batch)
        bad = ingest(home, "mobility__yellow_trips", src, instance=instance)
    assert not bad.success and "no space left on the device" in bad.failure_message()
    assert "previous version is intact" in bad.failure_message()
    assert calls["n"] == 2
    now = {p: p.read_bytes() for p in lake_files(home, "staging") + lake_files(home, "quarantine")}
    assert now == published  # same files, same bytes: nothing partial, no temporary leftovers
    assert {zone: view_files(home, f"{zone}_mobility.yellow_trips") for zone in views} == views
    assert query(home, "select count(*) from staging_mobility.yellow_trips") == [(1000,)]


def test_a_transient_failure_is_retried_and_the_retry_succeeds(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets.ingest, "RETRY", dg.RetryPolicy(max_retries=2, delay=0.1))
    calls = {"n": 0}
    real = stager.Stager.process

    def fail_once(self, raw, lines):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, "Input/output error (injected)")
        return real(self, raw, lines)

    monkeypatch.setattr(stager.Stager, "process", fail_once)
    r = ingest(home, "mobility__taxi_zones", ZONES)
    assert r.success, r.failure_message()
    retried = [e for e in r.result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1 and "Input/output error (injected)" in str(retried[0].event_specific_data.error)
    assert query(home, "select count(*) from staging_mobility.taxi_zones") == [(265,)]


def test_catalog_is_not_held_open_between_writes(home: Path) -> None:
    ingest(home, "mobility__taxi_zones", ZONES)
    # A user may open the catalog for writing while the platform is idle.
    con = duckdb.connect(str(home / "catalog.duckdb"))
    try:
        assert con.execute("select count(*) from staging_mobility.taxi_zones").fetchone() == (265,)
    finally:
        con.close()


def test_file_changed_after_pickup_is_not_landed_and_stays_in_ingress(home: Path) -> None:
    from assets.ingest import LandingConfig
    from core.names import partition_key
    from resources.platform import PlatformResource

    defs = dataset_defs("mobility__taxi_zones")
    src = ZONES.read_bytes()
    ingress = home / "ingress" / "mobility" / "taxi_zones"
    ingress.mkdir(parents=True)
    path = ingress / "taxi_zone_lookup.csv"
    path.write_bytes(src)
    key = partition_key(path.name, hashlib.sha256(src).hexdigest())  # what the sensor saw
    path.write_bytes(src + b'266,"Queens","New Zone","Boro Zone"\n')  # then the uploader rewrote it
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(defs.partitions.name, [key])
        result = dg.materialize(
            [defs.assets], partition_key=key, instance=instance, raise_on_error=False,
            resources={"platform": PlatformResource(environment="local", home=str(home))},
            run_config=defs.run_config(LandingConfig(ingress_file=path.name)),
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "changed after it was picked up" in failure.event_specific_data.error.message
    assert path.exists() and path.read_bytes().endswith(b"New Zone\",\"Boro Zone\"\n")
    assert lake_files(home, "landing") == [] and lake_files(home, "staging") == []
