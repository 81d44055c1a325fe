"""The incremental modelled zones give the full refresh's tables, row for row, after every kind of
change a delivery can make: new files, late data on dates already built, duplicates that change
which occurrence of a trip is kept, a re-delivery that supersedes (and empties a date), a held
file released by the steward, a rejected file, and a new zone lookup.

Each step builds the mobility models twice with real dbt on DuckDB: incrementally in one warehouse
(``dbt build``: models and their tests), and with ``--full-refresh`` in another; the two must hold
the same rows (all columns but ``modelled_at``, the build time). The incremental build must also
have left the dates it did not need alone (their ``modelled_at`` unchanged)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from support import REPO, SAMPLES, catalog_states, ingest, load_definitions_module

from resources.platform import PlatformResource

pytestmark = pytest.mark.slow

DBT = Path(sys.executable).parent / "dbt"
PROJECT = REPO / "dbt_project"
TRIPS_2019 = SAMPLES / "mobility/yellow_trips/yellow_tripdata_2019-06_sample.csv"
TRIPS_2021 = SAMPLES / "mobility/yellow_trips/yellow_tripdata_2021-01_sample.csv"
ZONES = SAMPLES / "mobility/taxi_zones/taxi_zone_lookup.csv"
SELECT = ["--select", "path:models/ods/mobility", "path:models/analytics/mobility"]
# Relation → its key, for the comparison's order.
RELATIONS = {
    "ods_mobility.trips": "trip_id",
    "ods_mobility.zones": "location_id",
    "analytics_mobility.daily_trips_by_borough": "trip_date, pickup_borough",
    "analytics_mobility.zone_flows": "pickup_location_id, dropoff_location_id",
    "analytics_mobility.tips_by_payment_type": "payment_type",
}
BUILD_TIME = "modelled_at"


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def csv(header: bytes, rows: list[bytes]) -> bytes:
    return b"\n".join([header, *rows]) + b"\n"


def with_money(row: bytes, delta: float) -> bytes:
    """The same trip with other fare and total amounts: another trip (they are in its natural key)."""
    f = row.split(b",")
    f[10] = str(round(float(f[10]) + delta, 2)).encode()
    f[16] = str(round(float(f[16]) + delta, 2)).encode()
    return b",".join(f)


def in_july(row: bytes) -> bytes:
    return row.replace(b"2019-06-01", b"2019-07-01").replace(b"2019-05-31", b"2019-06-30")


def reversed_times(row: bytes) -> bytes:
    f = row.split(b",")
    f[1], f[2] = f[2], f[1]
    return b",".join(f)


def same_row(a: tuple, b: tuple) -> bool:
    """Equal, floats to 1e-9: a parallel sum of doubles is not the same to the last bit twice."""
    return len(a) == len(b) and all(
        x == y or (isinstance(x, float) and isinstance(y, float) and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9))
        for x, y in zip(a, b, strict=True))


class Lake:
    """A platform home, its Dagster instance, and the two warehouses built from its catalog."""

    def __init__(self, home: Path, instance: dg.DagsterInstance):
        self.home, self.instance = home, instance
        self.incremental, self.full = home / "incremental.duckdb", home / "full.duckdb"

    def deliver(self, dataset: str, data: bytes | Path, name: str | None = None):
        return ingest(self.home, dataset, data, name=name, instance=self.instance)

    def dbt(self, warehouse: Path, *args: str) -> subprocess.Popen:
        env = {**os.environ, "PLATFORM_HOME": str(self.home), "PLATFORM_ENV": "local",
               "PLATFORM_WAREHOUSE_PATH": str(warehouse), "PLATFORM_PII_KEY": "incremental test key",
               "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        work = self.home / "dbt" / warehouse.stem
        return subprocess.Popen([str(DBT), *args, "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT),
                                 "--target", "local", "--target-path", str(work / "target"),
                                 "--log-path", str(work / "logs"), *SELECT],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def build_both(self) -> None:
        """Both builds at once: separate warehouses, the catalog attached read-only by each."""
        runs = [self.dbt(self.incremental, "build"), self.dbt(self.full, "run", "--full-refresh")]
        for run in runs:
            out, _ = run.communicate(timeout=600)
            assert run.returncode == 0, out[-8000:]

    def rows(self, warehouse: Path, sql: str) -> list[tuple]:
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def assert_same(self) -> dict[str, int]:
        """Both warehouses hold the same rows in every relation; returns the row counts."""
        counts = {}
        for relation, key in RELATIONS.items():
            schema, table = relation.split(".")
            columns = [c for (c,) in self.rows(self.full, "select column_name from information_schema.columns "
                                                          f"where table_schema = '{schema}' and table_name = '{table}' "
                                                          "order by ordinal_position") if c != BUILD_TIME]
            sql = f"select {', '.join(columns)} from {relation} order by {key}"
            full, incremental = self.rows(self.full, sql), self.rows(self.incremental, sql)
            assert len(incremental) == len(full), (relation, len(incremental), len(full))
            diff = [(i, f) for i, f in zip(incremental, full, strict=True) if not same_row(i, f)]
            assert not diff, (relation, diff[:3])
            counts[relation] = len(full)
        return counts

    def built_at(self, pickup_date: str) -> set:
        return {t for (t,) in self.rows(self.incremental, "select distinct modelled_at from ods_mobility.trips "
                                                          f"where pickup_date = date '{pickup_date}'")}


@pytest.fixture(scope="module")
def lake() -> Iterator[Lake]:
    with tempfile.TemporaryDirectory(prefix="inc", dir="/tmp") as d, \
            tempfile.TemporaryDirectory() as dagster_home, dg.instance_for_test(temp_dir=dagster_home) as instance:
        yield Lake(Path(d), instance)


def test_incremental_builds_equal_the_full_refresh_after_every_kind_of_change(lake: Lake) -> None:
    header, *trips = lines(TRIPS_2019)
    on_0531 = [r for r in trips if r.split(b",")[1].startswith(b"2019-05-31")]
    on_0601 = [r for r in trips if r.split(b",")[1].startswith(b"2019-06-01")]
    assert len(on_0531) == 16 and len(on_0601) == 984

    # 1. The first deliveries: the first incremental build is a full one.
    assert lake.deliver("mobility__taxi_zones", ZONES).success
    assert lake.deliver("mobility__yellow_trips", TRIPS_2019, name="yellow_tripdata_2019-06.csv").success
    assert lake.deliver("mobility__yellow_trips", TRIPS_2021).success
    lake.build_both()
    first = lake.assert_same()
    assert first["ods_mobility.trips"] > 1700
    built_0531, built_2021 = lake.built_at("2019-05-31"), lake.built_at("2021-01-01")
    assert built_0531 and built_2021

    # 2. Late data on a built date, and a file sorting first that re-sends 100 trips: those trips
    #    are now kept from it (the first occurrence by file name), in both builds.
    late = csv(header, on_0601[:100] + [with_money(r, 1.0) for r in on_0601[100:120]])
    assert lake.deliver("mobility__yellow_trips", late, name="a_late_2019-06.csv").success
    lake.build_both()
    counts = lake.assert_same()
    assert counts["ods_mobility.trips"] == first["ods_mobility.trips"] + 20
    [(kept,)] = lake.rows(lake.incremental, "select count(*) from ods_mobility.trips "
                                            "where source_file = 'a_late_2019-06.csv'")
    assert kept == 120
    # Only 2019-06-01 was rebuilt.
    assert lake.built_at("2019-05-31") == built_0531 and lake.built_at("2021-01-01") == built_2021

    # 3. A re-delivery of the June file without its 16 trips of May 31 supersedes the first: that
    #    date leaves trips and the daily mart altogether.
    redelivered = lake.deliver("mobility__yellow_trips", csv(header, on_0601), name="yellow_tripdata_2019-06.csv")
    assert redelivered.success and "superseded" in catalog_states(lake.home, "mobility__yellow_trips").values()
    lake.build_both()
    counts = lake.assert_same()
    assert counts["ods_mobility.trips"] == first["ods_mobility.trips"] + 20 - 16
    assert lake.rows(lake.incremental, "select count(*) from analytics_mobility.daily_trips_by_borough "
                                       "where trip_date = date '2019-05-31'") == [(0,)]
    assert lake.built_at("2021-01-01") == built_2021

    # 4. A file held by its contract changes nothing; released by the steward, its rows flow in.
    july = [in_july(r) for r in on_0601[:300]]
    held = lake.deliver("mobility__yellow_trips", csv(header, [reversed_times(r) for r in july[:30]] + july[30:]),
                        name="yellow_tripdata_2019-07.csv")
    assert not held.success and catalog_states(lake.home, "mobility__yellow_trips")[held.partition_key] == "held"
    lake.build_both()
    assert lake.assert_same() == counts
    released = load_definitions_module().defs.get_job_def("steward__mobility__yellow_trips").execute_in_process(
        partition_key=held.partition_key, instance=lake.instance, raise_on_error=False,
        resources={"platform": PlatformResource(environment="local", home=str(lake.home))},
        run_config={"ops": {"decide__mobility__yellow_trips": {"config": {
            "decision": "release", "reason": "reversed clocks, known", "steward": "ada@example.com"}}}})
    assert released.success
    lake.build_both()
    after_release = lake.assert_same()
    assert after_release["ods_mobility.trips"] == counts["ods_mobility.trips"] + 270
    assert lake.built_at("2021-01-01") == built_2021

    # 5. A rejected file (a required column missing) publishes nothing and changes nothing.
    no_fares = b"\n".join(b",".join(line.split(b",")[:10]) for line in lines(TRIPS_2019)[:50]) + b"\n"
    rejected = lake.deliver("mobility__yellow_trips", no_fares, name="yellow_tripdata_2019-08.csv")
    assert not rejected.success
    lake.build_both()
    assert lake.assert_same() == after_release

    # 6. A new zone lookup (a zone renamed) re-enriches every date.
    zone_lines = lines(ZONES)
    renamed = [zone_lines[0]] + [line.replace(b'"Upper East Side South"', b'"Upper East Side (South)"')
                                 for line in zone_lines[1:]]
    assert renamed != zone_lines
    assert lake.deliver("mobility__taxi_zones", csv(renamed[0], renamed[1:]), name="taxi_zone_lookup.csv").success
    lake.build_both()
    assert lake.assert_same() == after_release
    assert lake.built_at("2021-01-01") != built_2021
    assert lake.rows(lake.incremental, "select count(*) from ods_mobility.trips "
                                       "where pickup_zone = 'Upper East Side (South)'")[0][0] > 0
