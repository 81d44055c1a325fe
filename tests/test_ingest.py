"""Integration: in-process materialisation with the real local resources (filesystem lake,
DuckDB catalog, a real Dagster instance)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
from support import SAMPLES, dataset_defs, ingest, lake_files, query

import assets.staging as staging_engine

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
    assert m["staging"].metadata["dagster/row_count"].value == 776
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


def _downstream(dataset_id: str) -> dg.AssetsDefinition:
    defs = dataset_defs(dataset_id)

    @dg.asset(key=["ods", "test", "downstream"], deps=[k for k in defs.staging.keys if k.path[0] == "staging"],
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
        assert [p.parent.name for p in lake_files(home, "staging")] == ["_held"]
        with pytest.raises(duckdb.CatalogException):
            query(home, "select count(*) from staging_mobility.taxi_zones")
        assert query(home, "select _failed_columns, _failed_rules from quarantine_mobility.taxi_zones") == [
            (["borough"], ["isin(['Bronx', 'Brooklyn', 'EWR', 'Manhattan', 'Queens', 'Staten Island', 'Unknown'])"])]


def test_rerun_replaces_the_partition_exactly(home: Path) -> None:
    src = YELLOW / "yellow_tripdata_2021-01_sample.csv"
    with dg.instance_for_test() as instance:
        first = ingest(home, "mobility__yellow_trips", src, instance=instance)
        before = {p: pq.read_table(p) for p in lake_files(home, "staging") + lake_files(home, "quarantine")}
        second = ingest(home, "mobility__yellow_trips", src, instance=instance)  # same bytes again
    assert first.partition_key == second.partition_key and second.success
    after = {p: pq.read_table(p) for p in lake_files(home, "staging") + lake_files(home, "quarantine")}
    assert before.keys() == after.keys()
    assert all(before[p].equals(after[p]) for p in before)
    assert query(home, "select count(*) from staging_mobility.yellow_trips") == [(776,)]
    assert second.materializations()["landing"].metadata["landed_in_this_run"].value is False


def test_failure_mid_write_leaves_previous_output_intact(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = YELLOW / "yellow_tripdata_2019-06_sample.csv"
    with dg.instance_for_test() as instance:
        good = ingest(home, "mobility__yellow_trips", src, instance=instance)
        assert good.success
        published = {p: p.read_bytes() for p in lake_files(home, "staging") + lake_files(home, "quarantine")}

        # Small batches so the file is written in several pieces; fail after the first one.
        monkeypatch.setattr(staging_engine, "BLOCK_SIZE", 16 << 10)
        calls = {"n": 0}
        real = staging_engine._Stager.process

        def crash_after_first_batch(self, raw, lines):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("disk full (injected)")
            return real(self, raw, lines)

        monkeypatch.setattr(staging_engine._Stager, "process", crash_after_first_batch)
        bad = ingest(home, "mobility__yellow_trips", src, instance=instance)
    assert not bad.success and "disk full (injected)" in bad.failure_message()
    assert calls["n"] == 2
    now = {p: p.read_bytes() for p in lake_files(home, "staging") + lake_files(home, "quarantine")}
    assert now == published  # same files, same bytes: nothing partial, no temporary leftovers
    assert query(home, "select count(*) from staging_mobility.yellow_trips") == [(1000,)]


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
    from assets.sensors import partition_key
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
            [defs.landing, defs.staging], partition_key=key, instance=instance, raise_on_error=False,
            resources={"platform": PlatformResource(environment="local", home=str(home))},
            run_config=dg.RunConfig(ops={"landing__mobility__taxi_zones": LandingConfig(ingress_path=str(path))}),
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "changed after it was picked up" in failure.event_specific_data.error.message
    assert path.exists() and path.read_bytes().endswith(b"New Zone\",\"Boro Zone\"\n")
    assert lake_files(home, "landing") == [] and lake_files(home, "staging") == []
