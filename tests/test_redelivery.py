"""A file delivered again under the same name with other bytes (a corrected export) supersedes the
earlier delivery downstream: the newest delivery is what the staging view (and so dbt) reads; the
earlier partition stays in landing and in the event log, and leaves the staging and quarantine
views. ``redelivery: append`` keeps both. Everything runs through the real Dagster assets."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest
from support import SAMPLES, catalog_states, ingest, lake_files, query

from core.zones import load_zone
from resources.catalog.duckdb import DuckDBCatalog

TRIPS = SAMPLES / "mobility" / "yellow_trips" / "yellow_tripdata_2019-06_sample.csv"
ZONES = SAMPLES / "mobility" / "taxi_zones" / "taxi_zone_lookup.csv"
NAME = "yellow_tripdata_2019-06.csv"
SECOND = 10**9
# Delivery times are real instants (the trips are from 2019; their pickups must not be after arrival).
T0 = 1_767_225_600 * SECOND  # 2026-01-01 00:00 UTC


def trips(rows: int, bad_line: int | None = None) -> bytes:
    """The header and ``rows`` records of the sample; ``bad_line`` (a file line number) gets an unknown zone."""
    lines = TRIPS.read_bytes().split(b"\n")[: rows + 1]
    if bad_line is not None:
        fields = lines[bad_line - 1].split(b",")
        fields[7] = b"999"  # PULocationID out of 1..265
        lines[bad_line - 1] = b",".join(fields)
    return b"\n".join(lines) + b"\n"


def staged_lines(home: Path, name: str = NAME) -> list[int]:
    rows = query(home, "select _source_line from staging_mobility.yellow_trips where _source_file = ? "
                       "order by _source_line", [name])
    return [r[0] for r in rows]


def quarantined_lines(home: Path, table: str = "quarantine_mobility.yellow_trips") -> list[int]:
    return [r[0] for r in query(home, f"select _source_line from {table} order by _source_line")]


def observations(instance: dg.DagsterInstance, zone: str) -> dict[str, dict]:
    records = instance.fetch_observations(dg.AssetKey([zone, "mobility", f"{zone}_yellow_trips"]), limit=20).records
    return {r.partition_key: {k: v.value for k, v in r.asset_observation.metadata.items()} for r in records}


def test_a_corrected_redelivery_replaces_the_earlier_one_downstream(home: Path) -> None:
    with dg.instance_for_test() as instance:
        first = ingest(home, "mobility__yellow_trips", trips(60, bad_line=5), name=NAME, instance=instance,
                       delivered_at_ns=T0 + 1_000 * SECOND)
        assert first.success and quarantined_lines(home) == [5]
        assert staged_lines(home) == [n for n in range(2, 62) if n != 5]  # within the 2% limit

        corrected = ingest(home, "mobility__yellow_trips", trips(70), name=NAME, instance=instance,
                           delivered_at_ns=T0 + 2_000 * SECOND)
        assert corrected.success, corrected.failure_message()
        assert corrected.partition_key != first.partition_key  # other bytes, another partition

        # Staging reads the newest delivery only; the earlier one's quarantined row left quarantine too.
        assert staged_lines(home) == list(range(2, 72))
        assert quarantined_lines(home) == []
        assert catalog_states(home, "mobility__yellow_trips") == {
            first.partition_key: "superseded", corrected.partition_key: "published"}
        meta = corrected.materializations()["staging"].metadata
        assert meta["supersedes"].value == [first.partition_key]
        assert meta["published"].value is True
        # The earlier partition is told so, on both of its assets, in the event log.
        for zone in ("staging", "quarantine"):
            seen = observations(instance, zone)[first.partition_key]
            assert seen["superseded_by"] == corrected.partition_key and seen["in_catalog"] is False
        # ...and stays for audit: its landed bytes and its materialisation.
        assert len(lake_files(home, "landing")) == 2
        history = instance.fetch_materializations(
            dg.AssetKey(["staging", "mobility", "staging_yellow_trips"]), limit=10)
        assert {r.partition_key for r in history.records} == {first.partition_key, corrected.partition_key}

    # What dbt attaches (a snapshot of the catalog) sees the same.
    snapshot = DuckDBCatalog(home / "catalog.duckdb").snapshot(home / "snapshot.duckdb")
    con = duckdb.connect(str(snapshot), read_only=True)
    try:
        assert con.execute("select count(*), min(_source_line) from staging_mobility.yellow_trips").fetchone() == (
            70, 2)
    finally:
        con.close()


def test_another_file_name_does_not_supersede(home: Path) -> None:
    with dg.instance_for_test() as instance:
        ingest(home, "mobility__yellow_trips", trips(10), name=NAME, instance=instance)
        other = ingest(home, "mobility__yellow_trips", trips(12), name="yellow_tripdata_2019-07.csv",
                       instance=instance)
    assert other.materializations()["staging"].metadata["supersedes"].value == []
    assert query(home, "select count(*) from staging_mobility.yellow_trips") == [(22,)]


def test_an_older_delivery_staged_late_is_superseded_on_arrival(home: Path) -> None:
    """Delivery order decides, not the order in which runs happen to finish."""
    with dg.instance_for_test() as instance:
        newer = ingest(home, "mobility__yellow_trips", trips(70), name=NAME, instance=instance,
                       delivered_at_ns=T0 + 2_000 * SECOND)
        older = ingest(home, "mobility__yellow_trips", trips(60, bad_line=5), name=NAME, instance=instance,
                       delivered_at_ns=T0 + 1_000 * SECOND)
        assert older.success
        meta = older.materializations()["staging"].metadata
        assert meta["published"].value is False
        assert newer.partition_key in meta["catalog_state"].value
        assert staged_lines(home) == list(range(2, 72)) and quarantined_lines(home) == []
        # Staging it again changes nothing: it stays superseded.
        again = ingest(home, "mobility__yellow_trips", trips(60, bad_line=5), name=NAME, instance=instance,
                       delivered_at_ns=T0 + 1_000 * SECOND)
        assert again.partition_key == older.partition_key
    assert catalog_states(home, "mobility__yellow_trips") == {older.partition_key: "superseded",
                                                             newer.partition_key: "published"}
    assert staged_lines(home) == list(range(2, 72))


def test_a_redelivery_that_fails_its_contract_is_held_and_the_earlier_one_stays(home: Path) -> None:
    """Reference data may not lose its published version to a broken correction."""
    good = ZONES.read_bytes()
    bad = good.replace(b'"Queens","Jamaica Bay"', b'"Atlantis","Jamaica Bay"')
    with dg.instance_for_test() as instance:
        first = ingest(home, "mobility__taxi_zones", good, name="taxi_zone_lookup.csv", instance=instance,
                       delivered_at_ns=T0 + 1_000 * SECOND)
        broken = ingest(home, "mobility__taxi_zones", bad, name="taxi_zone_lookup.csv", instance=instance,
                        delivered_at_ns=T0 + 2_000 * SECOND)
        assert first.success and not broken.success  # the blocking contract check failed
        assert f"the earlier delivery of this file name ({first.partition_key}) stays in staging" in \
            broken.materializations()["quarantine"].metadata["catalog_state"].value
        assert "staging" not in broken.materializations()  # held: not shown as materialised
        assert catalog_states(home, "mobility__taxi_zones") == {first.partition_key: "published",
                                                               broken.partition_key: "held"}
        assert query(home, "select count(*) from staging_mobility.taxi_zones") == [(265,)]
        assert query(home, "select borough from quarantine_mobility.taxi_zones") == [("Atlantis",)]  # says why
        # A corrected delivery after it supersedes both.
        fixed = ingest(home, "mobility__taxi_zones", good.replace(b'"Jamaica Bay"', b'"Jamaica Bay Wildlife"'),
                       name="taxi_zone_lookup.csv", instance=instance, delivered_at_ns=T0 + 3_000 * SECOND)
        assert fixed.success
    assert catalog_states(home, "mobility__taxi_zones") == {
        first.partition_key: "superseded", broken.partition_key: "superseded", fixed.partition_key: "published"}
    assert query(home, "select count(*) from quarantine_mobility.taxi_zones") == [(0,)]
    assert query(home, "select count(*) from staging_mobility.taxi_zones where zone = 'Jamaica Bay Wildlife'") == [
        (1,)]


@pytest.fixture
def appending(tmp_path: Path):
    """A dataset whose file names legitimately repeat with new content."""
    path = tmp_path / "zones" / "telemetry.yaml"
    path.parent.mkdir()
    path.write_text(
        "owners: [team:telemetry]\n"
        "datasets:\n"
        "  readings:\n"
        "    redelivery: append\n"
        "    source: {pattern: 'latest*.csv'}\n"
        "    contract:\n"
        "      columns:\n"
        "        sensor: {type: string, nullable: false}\n"
        "        value: {type: float64}\n"
    )
    return load_zone(path).datasets[0]


def test_a_first_delivery_held_does_not_claim_an_earlier_one_stays(home: Path) -> None:
    """The held state names the earlier delivery left in view only where there is one."""
    bad = ZONES.read_bytes().replace(b'"Queens","Jamaica Bay"', b'"Atlantis","Jamaica Bay"')
    with dg.instance_for_test() as instance:
        held = ingest(home, "mobility__taxi_zones", bad, name="taxi_zone_lookup.csv", instance=instance,
                      delivered_at_ns=T0)
    note = held.materializations()["quarantine"].metadata["catalog_state"].value
    assert note.startswith("held: a blocking check failed") and "earlier delivery" not in note
    assert catalog_states(home, "mobility__taxi_zones") == {held.partition_key: "held"}


def test_redelivery_append_keeps_every_delivery(home: Path, appending) -> None:
    with dg.instance_for_test() as instance:
        a = ingest(home, appending, b"sensor,value\ns1,1.5\n", name="latest.csv", instance=instance)
        b = ingest(home, appending, b"sensor,value\ns1,2.5\ns2,3.0\n", name="latest.csv", instance=instance)
    assert a.success and b.success
    assert b.materializations()["staging"].metadata["supersedes"].value == []
    assert sorted(query(home, "select sensor, value from staging_telemetry.readings")) == [
        ("s1", 1.5), ("s1", 2.5), ("s2", 3.0)]
    assert set(catalog_states(home, "telemetry__readings").values()) == {"published"}
