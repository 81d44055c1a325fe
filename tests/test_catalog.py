"""The local catalog (a real DuckDB file): one transaction publishes a partition's staged and
quarantined rows together, re-deliveries resolve by delivery time, a user's lock makes the
platform wait and then fail saying who holds it, dbt reads a snapshot, and a catalog written by
an earlier version is adopted as it was."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import ResourceBusy
from resources.catalog.base import PartitionVersion, resolve_states
from resources.catalog.duckdb import DuckDBCatalog


def version(key: str, delivered: int, passed: bool = True, name: str = "f.csv", root: Path | None = None,
            rows: int = 1) -> PartitionVersion:
    root = root or Path("/nowhere")
    partition = f"{name}@{key:0>16}"
    # The lake's layout: <zone>/<insight zone>/<dataset>/<partition key>/<version>/part-0.parquet
    return PartitionVersion("mobility", "trips", partition, name, delivered,
                            str(root / "staging/mobility/trips" / partition / "v1/part-0.parquet"),
                            str(root / "quarantine/mobility/trips" / partition / "v1/part-0.parquet"), passed, rows, 0)


def write(root: Path, v: PartitionVersion, value: int) -> None:
    for uri, x in ((v.staging_uri, value), (v.quarantine_uri, -value)):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"x": [x]}), uri)


def rows(path: Path, table: str) -> list[tuple]:
    """The data columns of a view (not the delivery column every view adds: see the test below)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return sorted(con.execute(f"select * exclude (_partition_key) from {table}").fetchall())
    finally:
        con.close()


# (case, versions as (key, delivered_at, passed), supersede, expected states)
STATES = [
    ("one published", [("1", 1, True)], True, {"1": ("published", None)}),
    ("newer supersedes", [("1", 1, True), ("2", 2, True)], True,
     {"1": ("superseded", "2"), "2": ("published", None)}),
    ("older arrives late", [("2", 2, True), ("1", 1, True)], True,
     {"1": ("superseded", "2"), "2": ("published", None)}),
    ("newer held keeps the older", [("1", 1, True), ("2", 2, False)], True,
     {"1": ("published", None), "2": ("held", None)}),
    ("held then a good one", [("1", 1, True), ("2", 2, False), ("3", 3, True)], True,
     {"1": ("superseded", "3"), "2": ("superseded", "3"), "3": ("published", None)}),
    ("held newer than the live one stays held", [("1", 1, True), ("3", 3, False), ("2", 2, True)], True,
     {"1": ("superseded", "2"), "2": ("published", None), "3": ("held", None)}),
    ("append keeps all", [("1", 1, True), ("2", 2, True), ("3", 3, False)], False,
     {"1": ("published", None), "2": ("published", None), "3": ("held", None)}),
]


@pytest.mark.parametrize(("case", "versions", "supersede", "expected"), STATES, ids=[c[0] for c in STATES])
def test_states_of_the_deliveries_of_one_file_name(case, versions, supersede, expected) -> None:
    vs = [version(k, d, p) for k, d, p in versions]
    got = resolve_states(vs, supersede=supersede)
    key = lambda k: f"f.csv@{k:0>16}"  # noqa: E731
    assert got == {key(k): (s, key(by) if by else None) for k, (s, by) in expected.items()}


@pytest.mark.parametrize(("case", "versions", "supersede", "expected"), STATES, ids=[c[0] for c in STATES])
def test_publishing_several_in_one_transaction_equals_publishing_them_in_turn(
        tmp_path: Path, case, versions, supersede, expected) -> None:
    """What a run of several files does (one catalog write for all of them): the same outcomes,
    states and views as one publish after the other, re-deliveries of one name within the batch too."""
    vs = [version(k, d, p, root=tmp_path) for k, d, p in versions]
    for i, v in enumerate(vs, 1):
        write(tmp_path, v, i)
    one_by_one, batched = DuckDBCatalog(tmp_path / "a.duckdb"), DuckDBCatalog(tmp_path / "b.duckdb")
    outcomes = [one_by_one.publish(v, supersede=supersede) for v in vs]
    assert batched.publish_many(vs, supersede=supersede) == outcomes
    assert batched.partitions("mobility", "trips") == one_by_one.partitions("mobility", "trips")
    key = lambda k: f"f.csv@{k:0>16}"  # noqa: E731
    assert {r.version.partition_key: (r.state, r.superseded_by) for r in batched.partitions("mobility", "trips")} \
        == {key(k): (s, key(by) if by else None) for k, (s, by) in expected.items()}
    assert batched.views() == one_by_one.views()
    for schema, view in one_by_one.views():
        assert rows(tmp_path / "b.duckdb", f"{schema}.{view}") == rows(tmp_path / "a.duckdb", f"{schema}.{view}")
    assert batched.publish_many([], supersede=supersede) == []


def test_staging_and_quarantine_change_together_in_one_transaction(tmp_path: Path) -> None:
    catalog = DuckDBCatalog(tmp_path / "catalog.duckdb")
    v1, v2 = version("1", 1, root=tmp_path), version("2", 2, root=tmp_path)
    write(tmp_path, v1, 1)
    write(tmp_path, v2, 2)
    assert catalog.publish(v1, supersede=True).state == "published"
    outcome = catalog.publish(v2, supersede=True)
    assert outcome.state == "published" and outcome.superseded == (v1.partition_key,)
    path = tmp_path / "catalog.duckdb"
    assert rows(path, "staging_mobility.trips") == [(2,)]
    assert rows(path, "quarantine_mobility.trips") == [(-2,)]
    assert catalog.published_tables() == {("staging_mobility", "trips")}
    states = {r.version.partition_key: (r.state, r.superseded_by) for r in catalog.partitions("mobility", "trips")}
    assert states == {v1.partition_key: ("superseded", v2.partition_key), v2.partition_key: ("published", None)}


def test_every_row_says_which_delivery_it_belongs_to(tmp_path: Path) -> None:
    """``_partition_key``, as Glue's partition column and the Redshift tables have it: what the
    incremental models key on."""
    catalog = DuckDBCatalog(tmp_path / "catalog.duckdb")
    v1, v2 = version("1", 1, name="a.csv", root=tmp_path), version("2", 2, name="b.csv", root=tmp_path)
    for i, v in enumerate((v1, v2), 1):
        write(tmp_path, v, i)
        catalog.publish(v, supersede=True)
    con = duckdb.connect(str(tmp_path / "catalog.duckdb"), read_only=True)
    try:
        for zone, sign in (("staging", 1), ("quarantine", -1)):
            got = sorted(con.execute(f"select x, _partition_key from {zone}_mobility.trips").fetchall())
            assert got == sorted([(sign * 1, v1.partition_key), (sign * 2, v2.partition_key)])
    finally:
        con.close()


def test_a_failed_change_leaves_the_catalog_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = DuckDBCatalog(tmp_path / "catalog.duckdb")
    v1, v2 = version("1", 1, root=tmp_path), version("2", 2, root=tmp_path)
    write(tmp_path, v1, 1)
    write(tmp_path, v2, 2)
    catalog.publish(v1, supersede=True)

    def broken(self, con, insight_zone, dataset):
        con.execute("DROP VIEW staging_mobility.trips")  # half of the change, then a crash
        raise OSError("crash (injected)")

    monkeypatch.setattr(DuckDBCatalog, "_refresh_views", broken)
    with pytest.raises(OSError, match="injected"):
        catalog.publish(v2, supersede=True)
    assert rows(tmp_path / "catalog.duckdb", "staging_mobility.trips") == [(1,)]
    assert [r.state for r in DuckDBCatalog(tmp_path / "catalog.duckdb").partitions("mobility", "trips")] == [
        "published"]


def test_a_user_holding_the_catalog_makes_the_platform_wait_then_say_who(tmp_path: Path) -> None:
    path = tmp_path / "catalog.duckdb"
    duckdb.connect(str(path)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
                               "time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout and holder.stdout.readline().strip() == "held"
        catalog = DuckDBCatalog(path, lock_timeout_s=1.5)
        v = version("1", 1, root=tmp_path)
        write(tmp_path, v, 1)
        started = time.monotonic()
        with pytest.raises(ResourceBusy) as e:
            catalog.publish(v, supersede=True)
        waited = time.monotonic() - started
        assert 1.5 <= waited < 10
        message = str(e.value)
        assert f"the catalog {path} is locked by process {holder.pid}" in message
        assert "Close that DuckDB session" in message and "read_only" in message
        assert e.value.retryable
    finally:
        holder.kill()
        holder.wait()
    assert catalog.publish(v, supersede=True).state == "published"  # free again: it goes through


def test_dbt_reads_a_snapshot_that_outlives_later_changes(tmp_path: Path) -> None:
    catalog = DuckDBCatalog(tmp_path / "catalog.duckdb")
    v1, v2 = version("1", 1, root=tmp_path), version("2", 2, root=tmp_path, name="g.csv")
    write(tmp_path, v1, 1)
    write(tmp_path, v2, 2)
    catalog.publish(v1, supersede=True)
    snapshot = catalog.snapshot(tmp_path / "run" / "catalog_snapshot.duckdb")
    held = duckdb.connect(str(snapshot), read_only=True)  # a long dbt run holds its snapshot...
    try:
        catalog.publish(v2, supersede=True)  # ...and the catalog moves on meanwhile
        assert sorted(held.execute("select x from staging_mobility.trips").fetchall()) == [(1,)]
    finally:
        held.close()
    assert rows(tmp_path / "catalog.duckdb", "staging_mobility.trips") == [(1,), (2,)]


def test_a_catalog_from_before_partitions_were_recorded_is_adopted_as_it_was(tmp_path: Path) -> None:
    """The previous layout: one file per partition, <dataset>/<key>.parquet, held ones in _held/,
    and views over a glob. Upgrading must not drop a single row from any view."""
    staging, quarantine = tmp_path / "staging" / "mobility" / "trips", tmp_path / "quarantine" / "mobility" / "trips"
    (staging / "_held").mkdir(parents=True)
    quarantine.mkdir(parents=True)
    old = ["a.csv@1111111111111111", "b.csv@2222222222222222"]
    for i, key in enumerate(old, 1):
        pq.write_table(pa.table({"x": [i]}), staging / f"{key}.parquet")
        pq.write_table(pa.table({"x": [-i]}), quarantine / f"{key}.parquet")
    held = "c.csv@3333333333333333"
    pq.write_table(pa.table({"x": [3]}), staging / "_held" / f"{held}.parquet")
    pq.write_table(pa.table({"x": [-3]}), quarantine / f"{held}.parquet")
    path = tmp_path / "catalog.duckdb"
    con = duckdb.connect(str(path))
    for zone, folder in (("staging", staging), ("quarantine", quarantine)):
        con.execute(f"create schema {zone}_mobility")
        con.execute(f"create view {zone}_mobility.trips as select * from read_parquet('{folder}/*.parquet', "
                    "union_by_name = true)")
    con.close()

    new = version("4", 4, root=tmp_path, name="d.csv")
    write(tmp_path, new, 4)
    DuckDBCatalog(path).publish(new, supersede=True)
    assert rows(path, "staging_mobility.trips") == [(1,), (2,), (4,)]
    assert rows(path, "quarantine_mobility.trips") == [(-4,), (-3,), (-2,), (-1,)]
    states = {r.version.partition_key: r.state for r in DuckDBCatalog(path).partitions("mobility", "trips")}
    assert states == {old[0]: "published", old[1]: "published", held: "held", new.partition_key: "published"}
