"""The Redshift warehouse, proven offline.

- every statement it generates parses as Redshift SQL (sqlglot), and a broken one does not;
- identifiers, COPY's S3 URI and role ARN cannot carry an injection;
- the load/merge/remove logic runs through ``RedshiftWarehouse`` on a real embedded PostgreSQL 16
  (pgserver). Only the COPY step is the documented stand-in (``PostgresStdinCopy``: PostgreSQL
  cannot read S3, so it streams the staged Parquet file with ``COPY ... FROM STDIN``); the load
  table, the merge and its transaction are the production code. No Redshift is reachable here;
- ``dbt parse`` succeeds for the Redshift targets.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
import sqlglot.errors

from core.errors import ConfigError, IntegrityError, InvalidName, ResourceBusy, ResourceUnavailable, SecretMissing
from core.paths import DBT_DIR
from core.types import parse_type
from resources.catalog.base import PartitionRecord, PartitionVersion
from resources.secrets.local import LocalSecretStore, env_var
from resources.serving import ServingDatabase, stop_local
from resources.warehouse import redshift_sql as rs
from resources.warehouse.redshift import (
    Credentials,
    PostgresStdinCopy,
    RedshiftCopy,
    RedshiftWarehouse,
    WarehouseRefused,
    secret_credentials,
)

COLUMNS = {"trip_id": "int64", "fare": "decimal(12,2)", "pickup_at": "timestamp", "zone": "string",
           "paid": "boolean", "day": "date", "distance": "float64", "passengers": "int16", "n32": "int32"}
BUCKET = "lake-test-staging"
ROLE = "arn:aws:iam::123456789012:role/lake-redshift-copy"
SECRET = "s3cr3t-Pa55"


# -- the statements ---------------------------------------------------------------------------


def all_statements() -> list[rs.Statement]:
    schema, table = rs.staging_relation("mobility", "yellow_trips")
    uri = f"s3://{BUCKET}/staging/mobility/yellow_trips/a.csv@0123456789abcdef/v1.parquet"
    now = dt.datetime(2026, 1, 1)
    return [rs.create_schema(schema), rs.create_staging_table(schema, table, COLUMNS), rs.create_loads_table(schema),
            rs.create_load_table(table, COLUMNS), rs.copy_from_s3(table, uri, ROLE),
            *rs.merge_partition(schema, table, COLUMNS, "a.csv@0123456789abcdef", uri, 10, now),
            *rs.remove_partition(schema, table, "a.csv@0123456789abcdef"), rs.loaded_partitions(schema, table),
            *rs.provision_pii_key("a key with ' quotes"),
            *rs.grant_readers(schema, table, COLUMNS, "analyst_mobility", frozenset({"zone"}))]


@pytest.mark.parametrize("statement", all_statements(), ids=lambda s: s[0][:40])
def test_every_generated_statement_parses_as_redshift(statement: rs.Statement) -> None:
    sql, params = statement
    tree = sqlglot.parse_one(sql, read="redshift")
    assert not isinstance(tree, sqlglot.exp.Command), f"parsed only as an unvalidated command: {sql}"
    assert sql.count("%s") == len(params)


def test_the_parse_check_can_fail() -> None:
    sql, _ = rs.delete_partition_rows("staging_mobility", "yellow_trips", "a.csv@0123456789abcdef")
    with pytest.raises(sqlglot.errors.ParseError):
        sqlglot.parse_one(sql.replace("WHERE", "WHERE WHERE") + ")", read="redshift")


def test_copy_is_redshift_parquet_copy_with_the_role() -> None:
    sql, params = rs.copy_from_s3("yellow_trips", f"s3://{BUCKET}/k/v1.parquet", ROLE)
    assert sql == f"COPY \"_load_yellow_trips\" FROM 's3://{BUCKET}/k/v1.parquet' IAM_ROLE '{ROLE}' FORMAT AS PARQUET"
    assert params == ()
    tree = sqlglot.parse_one(sql, read="redshift")
    assert isinstance(tree, sqlglot.exp.Copy)


def test_the_staging_table_has_contract_then_system_columns_with_redshift_types() -> None:
    sql, _ = rs.create_staging_table("staging_mobility", "yellow_trips", COLUMNS)
    assert '"fare" numeric(12,2)' in sql and '"zone" varchar(65535)' in sql
    order = [sql.index(f'"{c}"') for c in ("n32", "_source_file", "_source_line", "_partition_key")]
    assert order == sorted(order)
    assert rs.file_columns(COLUMNS)[-2:] == ['"_source_file"', '"_source_line"']


EVIL = 'x"; drop table y; --'


@pytest.mark.parametrize("build", [
    lambda: rs.staging_relation("mobility", EVIL),
    lambda: rs.staging_relation(EVIL, "trips"),
    lambda: rs.create_schema(EVIL),
    lambda: rs.create_staging_table("staging_mobility", EVIL, COLUMNS),
    lambda: rs.create_staging_table(EVIL, "trips", COLUMNS),
    lambda: rs.create_staging_table("staging_mobility", "trips", {EVIL: "string"}),
    lambda: rs.create_staging_table("staging_mobility", "trips", {"_source_file": "string"}),
    lambda: rs.create_load_table(EVIL, COLUMNS),
    lambda: rs.insert_from_load("staging_mobility", "trips", {"a": "string", EVIL: "int64"}, "a@0123456789abcdef"),
    lambda: rs.delete_partition_rows("staging_mobility", "trips", "a'; drop table y; --"),
    lambda: rs.copy_from_s3("trips", f"s3://{BUCKET}/k'; drop table y; --/v.parquet", ROLE),
    lambda: rs.copy_from_s3("trips", f"s3://{BUCKET}/k/v.parquet' IAM_ROLE 'x", ROLE),
    lambda: rs.copy_from_s3("trips", f"s3://{BUCKET}/../k/v.parquet", ROLE),
    lambda: rs.copy_from_s3("trips", "s3://Bad_Bucket/k/v.parquet", ROLE),
    lambda: rs.copy_from_s3("trips", f"s3://{BUCKET}/k/v.csv", ROLE),
    lambda: rs.copy_from_s3("trips", f"https://{BUCKET}/k/v.parquet", ROLE),
    lambda: rs.copy_from_s3("trips", f"s3://{BUCKET}/k/v.parquet", "arn:aws:iam::123456789012:role/r' x"),
    lambda: rs.copy_from_s3("trips", f"s3://{BUCKET}/k/v.parquet", "arn:aws:iam::123:role/r"),
    lambda: RedshiftCopy("arn:aws:iam::123456789012:role/r'; drop table y; --"),
    lambda: rs.create_staging_table("staging_mobility", "trips", {"a": "varchar); drop table y; --"}),
    lambda: rs.grant_readers("staging_mobility", "trips", COLUMNS, EVIL, frozenset()),
    lambda: rs.grant_readers("staging_mobility", "trips", {EVIL: "string"}, "analyst_x", frozenset()),
], ids=lambda f: "")
def test_injections_are_refused(build) -> None:  # noqa: ANN001
    with pytest.raises((InvalidName, ConfigError)):
        build()


# -- the merge on a real PostgreSQL -------------------------------------------------------------

_roots: list[Path] = []


@pytest.fixture(scope="module")
def pg() -> Iterator[ServingDatabase]:
    root = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))  # short: the socket lives under it
    _roots.append(root)
    try:
        yield ServingDatabase.local(root)
    finally:
        stop_local(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return tmp_path / "bucket"


@pytest.fixture
def zone(request: pytest.FixtureRequest, pg: ServingDatabase) -> str:
    """A fresh insight zone (so a fresh schema staging_<zone>) per test."""
    name = "z" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[-30:].strip("_")
    query(pg, f'DROP SCHEMA IF EXISTS "staging_{name}" CASCADE')
    return name


def query(pg: ServingDatabase, statement: str, params: tuple = ()) -> list[tuple]:
    with pg.connect() as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows


def warehouse(pg: ServingDatabase, lake: Path) -> RedshiftWarehouse:
    dsn = pg.dsn_for_humans()  # trust authentication on the local socket

    def open_input(uri: str):  # noqa: ANN202
        assert uri.startswith(f"s3://{BUCKET}/")
        return open(lake / uri.removeprefix(f"s3://{BUCKET}/"), "rb")

    return RedshiftWarehouse(host="example.abc123.eu-west-1.redshift.amazonaws.com", database="lake",
                             credentials=lambda: Credentials("loader", SECRET), copy_role_arn=ROLE, dbt_target="dev",
                             connect=lambda: psycopg2.connect(dsn), copy_runner=PostgresStdinCopy(open_input))


def staged(lake: Path, zone: str, name: str, ids: list[int], *, delivered: int, version: str = "v1",
           rows: int | None = None) -> PartitionVersion:
    """A staged Parquet file (contract columns, _source_file, _source_line) and its catalog version."""
    key = f"{name}@{(name.encode().hex() + '0' * 16)[:16]}"
    n = len(ids)
    data = {
        "trip_id": pa.array(ids, pa.int64()),
        "fare": pa.array([decimal.Decimal(f"{i}.25") for i in ids], parse_type("decimal(12,2)").arrow()),
        "pickup_at": pa.array([dt.datetime(2024, 1, 1, 12, 0, 0, 123456) + dt.timedelta(minutes=i) for i in ids],
                              pa.timestamp("us")),
        "zone": pa.array(["" if i % 3 == 0 else None if i % 3 == 1 else f'Z,"{i}"' for i in ids], pa.string()),
        "paid": pa.array([i % 2 == 0 for i in ids], pa.bool_()),
        "day": pa.array([dt.date(2024, 1, 1)] * n, pa.date32()),
        "distance": pa.array([i / 3 for i in ids], pa.float64()),
        "passengers": pa.array([i % 5 for i in ids], pa.int16()),
        "n32": pa.array([None] * n, pa.int32()),
        "_source_file": pa.array([name] * n, pa.string()),
        "_source_line": pa.array(list(range(2, n + 2)), pa.int64()),
    }
    rel = f"staging/{zone}/trips/{key}/{version}/part-0.parquet"  # the layout of assets.ingest
    (lake / rel).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(data), lake / rel)
    return PartitionVersion(zone, "trips", key, name, delivered, f"s3://{BUCKET}/{rel}",
                            f"s3://{BUCKET}/quarantine/{key}/{version}.parquet", True,
                            n if rows is None else rows, 0)


def rec(v: PartitionVersion, state: str = "published", by: str | None = None) -> PartitionRecord:
    return PartitionRecord(v, state, by)  # type: ignore[arg-type]


def rows_by_partition(pg: ServingDatabase, zone: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for key, trip in query(pg, f'SELECT "_partition_key", trip_id FROM "staging_{zone}"."trips" ORDER BY 1, 2'):
        out.setdefault(key, []).append(trip)
    return out


def test_load_a_then_b_then_reload_a_is_idempotent(pg: ServingDatabase, lake: Path, zone: str) -> None:
    wh = warehouse(pg, lake)
    a = staged(lake, zone, "a.csv", [1, 2, 3], delivered=1)
    b = staged(lake, zone, "b.csv", [4, 5], delivered=2)

    first = wh.sync_partitions(zone, "trips", [rec(a)], COLUMNS)
    assert first.loaded == (a.partition_key,) and first.rows_loaded == 3
    assert rows_by_partition(pg, zone) == {a.partition_key: [1, 2, 3]}

    second = wh.sync_partitions(zone, "trips", [rec(a), rec(b)], COLUMNS)
    assert second.loaded == (b.partition_key,) and second.unchanged == (a.partition_key,)
    assert rows_by_partition(pg, zone) == {a.partition_key: [1, 2, 3], b.partition_key: [4, 5]}

    again = wh.sync_partitions(zone, "trips", [rec(a), rec(b)], COLUMNS)
    assert again.loaded == () and again.removed == () and again.rows_loaded == 0
    # A re-staged version of A (same partition, new object) replaces A's rows, never adds to them.
    a2 = staged(lake, zone, "a.csv", [1, 2, 3], delivered=1, version="v2")
    reload = wh.sync_partitions(zone, "trips", [rec(a2), rec(b)], COLUMNS)
    assert reload.loaded == (a.partition_key,)
    assert rows_by_partition(pg, zone) == {a.partition_key: [1, 2, 3], b.partition_key: [4, 5]}
    assert wh.row_counts({"trips": (f"staging_{zone}", "trips")}) == {"trips": 5}
    ledger = query(pg, f'SELECT "_partition_key", staging_uri FROM "staging_{zone}"."_platform_loads" ORDER BY 1')
    assert ledger == [(a.partition_key, a2.staging_uri), (b.partition_key, b.staging_uri)]


def test_values_arrive_typed_and_exact(pg: ServingDatabase, lake: Path, zone: str) -> None:
    wh = warehouse(pg, lake)
    a = staged(lake, zone, "a.csv", [3, 4, 5], delivered=1)
    wh.sync_partitions(zone, "trips", [rec(a)], COLUMNS)
    t = wh.read_table(f"staging_{zone}", "trips").sort_by("trip_id").to_pylist()
    assert t[0]["fare"] == decimal.Decimal("3.25")
    assert t[0]["pickup_at"] == dt.datetime(2024, 1, 1, 12, 3, 0, 123456)
    assert [r["zone"] for r in t] == ["", None, 'Z,"5"']  # empty string stays empty, null stays null
    assert [r["paid"] for r in t] == [False, True, False]
    assert t[0]["distance"] == 1.0 and t[0]["n32"] is None and t[0]["day"] == dt.date(2024, 1, 1)
    assert [r["_source_line"] for r in t] == [2, 3, 4] and t[0]["_source_file"] == "a.csv"
    types = dict(query(pg, "SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = %s AND table_name = 'trips'", (f"staging_{zone}",)))
    assert types["fare"] == "numeric" and types["passengers"] == "smallint"
    assert types["_partition_key"] == "character varying"


def test_a_superseded_partition_leaves_in_its_successors_transaction(pg: ServingDatabase, lake: Path,
                                                                     zone: str) -> None:
    wh = warehouse(pg, lake)
    a = staged(lake, zone, "a.csv", [1, 2, 3], delivered=1)
    b = staged(lake, zone, "b.csv", [4, 5], delivered=2)
    wh.sync_partitions(zone, "trips", [rec(a), rec(b)], COLUMNS)
    a_new = staged(lake, zone, "a_new.csv", [10, 11], delivered=3)

    out = wh.sync_partitions(zone, "trips", [rec(a, "superseded", a_new.partition_key), rec(b), rec(a_new)], COLUMNS)
    assert out.removed == (a.partition_key,) and out.loaded == (a_new.partition_key,)
    assert rows_by_partition(pg, zone) == {b.partition_key: [4, 5], a_new.partition_key: [10, 11]}


def test_removing_a_superseded_or_held_partition_leaves_only_the_others(pg: ServingDatabase, lake: Path,
                                                                        zone: str) -> None:
    wh = warehouse(pg, lake)
    a = staged(lake, zone, "a.csv", [1, 2, 3], delivered=1)
    b = staged(lake, zone, "b.csv", [4, 5], delivered=2)
    c = staged(lake, zone, "c.csv", [6], delivered=3)
    wh.sync_partitions(zone, "trips", [rec(a), rec(b), rec(c)], COLUMNS)

    out = wh.sync_partitions(zone, "trips", [rec(a, "superseded", "other@0000000000000000"), rec(b),
                                             rec(c, "held")], COLUMNS)
    assert set(out.removed) == {a.partition_key, c.partition_key} and out.loaded == ()
    assert rows_by_partition(pg, zone) == {b.partition_key: [4, 5]}
    # A partition the catalog no longer lists leaves too: the table holds exactly the published ones.
    assert wh.sync_partitions(zone, "trips", [], COLUMNS).removed == (b.partition_key,)
    assert rows_by_partition(pg, zone) == {}


def test_a_failure_between_delete_and_insert_leaves_the_previous_rows(pg: ServingDatabase, lake: Path,
                                                                      zone: str) -> None:
    wh = warehouse(pg, lake)
    a = staged(lake, zone, "a.csv", [1, 2, 3], delivered=1)
    wh.sync_partitions(zone, "trips", [rec(a)], COLUMNS)
    # Injected in the database: the merge's DELETE runs, then its INSERT fails.
    query(pg, f'CREATE FUNCTION "staging_{zone}".fail() RETURNS trigger LANGUAGE plpgsql AS '
              "$$ BEGIN RAISE EXCEPTION 'injected failure after the delete'; END $$")
    query(pg, f'CREATE TRIGGER fail BEFORE INSERT ON "staging_{zone}"."trips" '
              f'FOR EACH STATEMENT EXECUTE FUNCTION "staging_{zone}".fail()')
    a2 = staged(lake, zone, "a.csv", [7, 8], delivered=1, version="v2")
    with pytest.raises(WarehouseRefused, match="injected failure") as e:
        wh.sync_partitions(zone, "trips", [rec(a2)], COLUMNS)
    assert a.partition_key in str(e.value) and f"staging_{zone}.trips" in str(e.value)
    assert rows_by_partition(pg, zone) == {a.partition_key: [1, 2, 3]}
    ledger = query(pg, f'SELECT staging_uri FROM "staging_{zone}"."_platform_loads"')
    assert ledger == [(a.staging_uri,)]

    query(pg, f'DROP TRIGGER fail ON "staging_{zone}"."trips"')
    assert wh.sync_partitions(zone, "trips", [rec(a2)], COLUMNS).loaded == (a.partition_key,)
    assert rows_by_partition(pg, zone) == {a.partition_key: [7, 8]}


def test_a_row_count_that_does_not_match_the_catalog_changes_nothing(pg: ServingDatabase, lake: Path,
                                                                     zone: str) -> None:
    wh = warehouse(pg, lake)
    a = staged(lake, zone, "a.csv", [1, 2, 3], delivered=1)
    wh.sync_partitions(zone, "trips", [rec(a)], COLUMNS)
    wrong = staged(lake, zone, "a.csv", [1, 2], delivered=1, version="v2", rows=5)
    with pytest.raises(IntegrityError, match="2 rows loaded, the catalog says 5"):
        wh.sync_partitions(zone, "trips", [rec(wrong)], COLUMNS)
    assert rows_by_partition(pg, zone) == {a.partition_key: [1, 2, 3]}


def test_a_file_with_other_columns_is_refused(pg: ServingDatabase, lake: Path, zone: str) -> None:
    wh = warehouse(pg, lake)
    a = staged(lake, zone, "a.csv", [1], delivered=1)
    with pytest.raises(IntegrityError, match="do not match"):
        wh.sync_partitions(zone, "trips", [rec(a)], {**COLUMNS, "extra": "string"})


def test_an_unreachable_warehouse_is_transient_and_the_password_stays_out(tmp_path: Path) -> None:
    wh = RedshiftWarehouse(host="127.0.0.1", port=1, database="lake", sslmode="disable", connect_timeout_s=2,
                           credentials=lambda: Credentials("loader", SECRET), copy_role_arn=ROLE, dbt_target="dev")
    with pytest.raises(ResourceUnavailable) as e:
        wh.row_counts({"t": ("staging_x", "t")})
    assert "127.0.0.1" in str(e.value) and SECRET not in str(e.value) and e.value.__context__ is None
    assert SECRET not in repr(wh) and SECRET not in repr(Credentials("loader", SECRET))
    env = wh.dbt_environment(tmp_path)
    assert env["PLATFORM_WAREHOUSE_USER"] == "loader" and env["PLATFORM_WAREHOUSE_PORT"] == "1"
    # dbt scrubs DBT_ENV_SECRET_* values from its logs; the password travels nowhere else.
    assert [k for k, v in env.items() if SECRET in v] == ["DBT_ENV_SECRET_PLATFORM_WAREHOUSE_PASSWORD"]


@pytest.mark.parametrize(("log", "kind"), [
    ("Database Error in model trips\n  1023\n  DETAIL:  Serializable isolation violation on table - 123", "busy"),
    ("connection to server at \"h\" (10.0.0.1), port 5439 failed: Connection timed out", "unavailable"),
    ("SSL SYSCALL error: EOF detected", "unavailable"),
    ("Database Error in model trips: column \"x\" does not exist", None),
    ("Failure in test not_null_trips_trip_id", None),
])
def test_dbt_failures_that_a_retry_can_fix_are_transient(log: str, kind: str | None) -> None:
    wh = RedshiftWarehouse(host="h.example.com", database="lake", credentials=lambda: Credentials("u", SECRET),
                           copy_role_arn=ROLE, dbt_target="dev")
    error = wh.dbt_failure(log)
    expected = {"busy": ResourceBusy, "unavailable": ResourceUnavailable, None: type(None)}[kind]
    assert type(error) is expected and (error is None or error.retryable)


def test_credentials_come_from_the_secret_at_each_call(tmp_path: Path) -> None:
    environ = {env_var("lake/redshift"): json.dumps({"username": "loader", "password": SECRET})}
    creds = secret_credentials(LocalSecretStore(environ), "lake/redshift")
    assert creds() == Credentials("loader", SECRET)
    environ[env_var("lake/redshift")] = json.dumps({"username": "loader", "password": "rotated"})
    wh = RedshiftWarehouse(host="h.example.com", database="lake", credentials=creds, copy_role_arn=ROLE,
                           dbt_target="dev")
    assert wh.dbt_environment(tmp_path)["DBT_ENV_SECRET_PLATFORM_WAREHOUSE_PASSWORD"] == "rotated"
    environ[env_var("lake/redshift")] = json.dumps({"username": "loader"})
    with pytest.raises(SecretMissing, match="no password"):
        creds()


def test_analysts_read_every_column_but_the_pii_ones(pg: ServingDatabase, lake: Path, zone: str) -> None:
    """Column grants on a real PostgreSQL: the zone's group reads the table without its PII
    columns; a column that becomes PII is revoked on the next sync; a missing group names the fix."""
    group = f"analyst_{zone}"[:63]
    query(pg, f'DROP ROLE IF EXISTS "{group}"')
    wh = warehouse(pg, lake)
    a = staged(lake, zone, "a.csv", [1, 2], delivered=1)
    with pytest.raises(WarehouseRefused, match=r"does not exist.*python -m cli infra grants"):
        wh.sync_partitions(zone, "trips", [rec(a)], COLUMNS, readers=(group, frozenset({"zone"})))
    assert query(pg, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (f"staging_{zone}",)) == [(0,)]
    query(pg, f'CREATE GROUP "{group}"')
    try:
        wh.sync_partitions(zone, "trips", [rec(a)], COLUMNS, readers=(group, frozenset()))

        def as_group(sql: str) -> str:
            try:
                query(pg, f'SET ROLE "{group}"; {sql}')
                return "ok"
            except psycopg2.errors.InsufficientPrivilege:
                return "denied"

        table = f'"staging_{zone}"."trips"'
        assert as_group(f"SELECT zone, trip_id FROM {table}") == "ok"
        wh.sync_partitions(zone, "trips", [rec(a)], COLUMNS, readers=(group, frozenset({"zone", "fare"})))
        assert as_group(f"SELECT trip_id, _source_line, _partition_key FROM {table}") == "ok"
        assert as_group(f"SELECT zone FROM {table}") == "denied"
        assert as_group(f"SELECT fare FROM {table}") == "denied"
        assert as_group(f"SELECT * FROM {table}") == "denied"
        assert as_group(f'SELECT * FROM "staging_{zone}"."_platform_loads"') == "denied"
    finally:
        query(pg, f'DROP OWNED BY "{group}"; DROP ROLE "{group}"')


def test_the_sync_result_carries_no_secret(pg: ServingDatabase, lake: Path, zone: str) -> None:
    out = warehouse(pg, lake).sync_partitions(zone, "trips", [rec(staged(lake, zone, "a.csv", [1], delivered=1))],
                                              COLUMNS)
    assert SECRET not in repr(out)


# -- dbt ----------------------------------------------------------------------------------------


# dev, test and prod share one profile (a YAML anchor; prod only adds threads): parsing dev proves it.
@pytest.mark.parametrize("target", ["dev"])
def test_dbt_parse_for_the_redshift_targets(tmp_path: Path, target: str) -> None:
    """As ``python -m cli dbt-parse`` runs dbt, with the target's environment values (dummies:
    parse never connects) and its own target path, so dbt_project/target is left alone."""
    wh = RedshiftWarehouse(host="example.abc123.eu-west-1.redshift.amazonaws.com", database="lake",
                           credentials=lambda: Credentials("loader", SECRET), copy_role_arn=ROLE, dbt_target=target)
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", **wh.dbt_environment(tmp_path)}
    dbt = Path(sys.executable).parent / "dbt"
    done = subprocess.run([str(dbt), "parse", "--quiet", "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR),
                           "--target", target, "--target-path", str(tmp_path / "target"),
                           "--log-path", str(tmp_path / "logs")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "target" / "manifest.json").read_text())
    assert manifest["metadata"]["adapter_type"] == "redshift"
    models = [n for n in manifest["nodes"].values() if n["resource_type"] == "model"]
    assert models and all(m["schema"].startswith(("ods_", "analytics_")) for m in models)
    assert SECRET not in (tmp_path / "target" / "manifest.json").read_text()
