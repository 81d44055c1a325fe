"""The dbt models (ods, analytics) built from staged samples: `dbt build` passes on DuckDB (the local
warehouse) and on PostgreSQL (an embedded server, the serving engine's dialect), both engines give
the same rows, and no personal data reaches the modelled zones."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import duckdb
import pgserver
import psycopg2
import pytest
import yaml
from support import REPO, SAMPLES, ingest, query

from resources.pii import postgres_options

DBT = Path(sys.executable).parent / "dbt"
PROJECT = REPO / "dbt_project"
# Spaces, a backslash and a quote: the key must survive libpq's option parsing and SQL quoting alike.
PII_KEY = "test pii\\key 'quoted'"

GOOD_SAMPLES = [
    ("mobility__yellow_trips", "mobility/yellow_trips/yellow_tripdata_2019-06_sample.csv"),
    ("mobility__yellow_trips", "mobility/yellow_trips/yellow_tripdata_2021-01_sample.csv"),
    ("mobility__taxi_zones", "mobility/taxi_zones/taxi_zone_lookup.csv"),
    ("finance__expense_reports", "finance/expense_reports/expenses_2026-11-16.csv"),
    ("finance__expense_reports", "finance/expense_reports/expenses_2026-11-17.csv"),
    ("finance__expense_reports", "finance/expense_reports/expenses_2026-11-18.csv"),
]
# Part of a file delivered again under another name: the same trips and expense lines staged twice,
# which the canonical tables must de-duplicate.
RESENT = [
    ("mobility__yellow_trips", "mobility/yellow_trips/yellow_tripdata_2019-06_sample.csv",
     "yellow_tripdata_2019-06_resent.csv", 100),
    ("finance__expense_reports", "finance/expense_reports/expenses_2026-11-16.csv",
     "expenses_2026-11-16_resent.csv", 40),
]

STAGING_TABLES = [("staging_mobility", "yellow_trips"), ("staging_mobility", "taxi_zones"),
                  ("staging_finance", "expense_reports")]
# Relation → key: the served marts (keys as in platform/zones/*.yaml `serving:`), the other mart and
# the canonical tables. Compared row for row between the two engines.
COMPARED = {
    "analytics_mobility.daily_trips_by_borough": ["trip_date", "pickup_borough"],
    "analytics_mobility.zone_flows": ["pickup_location_id", "dropoff_location_id"],
    "analytics_mobility.tips_by_payment_type": ["payment_type"],
    "analytics_finance.monthly_spend_by_cost_centre": ["expense_month", "cost_centre", "category", "currency"],
    "ods_mobility.trips": ["trip_id"],
    "ods_mobility.zones": ["location_id"],
    "ods_finance.expense_lines": ["expense_line_id"],
}
# When a row was built: the one column two builds of the same inputs differ in.
BUILD_TIME = "modelled_at"
MODELS = {
    "base_mobility__yellow_trips", "base_mobility__taxi_zones", "zones", "trips", "base_finance__expense_reports",
    "expense_lines", "daily_trips_by_borough", "zone_flows", "tips_by_payment_type", "monthly_spend_by_cost_centre",
}
NATURAL_KEY = ("vendor_id, pickup_at, dropoff_at, pickup_location_id, dropoff_location_id, "
               "round(fare_amount, 2), round(total_amount, 2)")


@dataclass
class Build:
    target: str
    seconds: float
    results: list[dict]
    output: str
    workdir: Path


def run_dbt_build(target: str, home: Path, workdir: Path, env: dict[str, str] | None = None) -> Build:
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PLATFORM_HOME": str(home), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", **(env or {})}
    started = time.monotonic()
    out = subprocess.run(
        [str(DBT), "build", "--project-dir", str(PROJECT), "--profiles-dir", str(PROJECT), "--target", target,
         "--target-path", str(workdir / "target"), "--log-path", str(workdir / "logs")],
        capture_output=True, text=True, env=full_env, timeout=600,
    )
    seconds = time.monotonic() - started
    output = out.stdout + out.stderr
    assert out.returncode == 0, output
    results = json.loads((workdir / "target" / "run_results.json").read_text())["results"]
    return Build(target, seconds, results, output, workdir)


def assert_all_passed(build: Build) -> None:
    statuses = {r["unique_id"]: r["status"] for r in build.results}
    failed = {k: v for k, v in statuses.items() if v not in ("success", "pass")}
    assert not failed, f"{build.target}: {failed}\n{build.output[-5000:]}"
    models = {k.split(".")[-1] for k in statuses if k.startswith("model.")}
    tests = [k for k in statuses if k.startswith("test.")]
    assert models == MODELS
    assert len(tests) >= 100, len(tests)


# -- the platform home ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def platform_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("dbt_build") / "platform_home"
    home.mkdir()
    for dataset_id, relative in GOOD_SAMPLES:
        r = ingest(home, dataset_id, SAMPLES / relative)
        assert r.success, r.failure_message()
    for dataset_id, relative, name, rows in RESENT:
        lines = (SAMPLES / relative).read_bytes().splitlines(keepends=True)
        r = ingest(home, dataset_id, b"".join(lines[: rows + 1]), name=name)
        assert r.success, r.failure_message()
    return home


@pytest.fixture(scope="module")
def pii_values(platform_home: Path) -> set[str]:
    rows = query(platform_home, "select distinct employee_id from staging_finance.expense_reports union "
                                "select distinct employee_email from staging_finance.expense_reports")
    values = {v for (v,) in rows}
    assert len(values) > 100
    return values


# -- DuckDB ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def duckdb_build(platform_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Build:
    return run_dbt_build("local", platform_home, tmp_path_factory.mktemp("dbt_duckdb"), {"PLATFORM_PII_KEY": PII_KEY})


@pytest.fixture(scope="module")
def warehouse(platform_home: Path, duckdb_build: Build) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(platform_home / "warehouse.duckdb"), read_only=True)
    # The base_ views read the staging tables through the catalog, attached as dbt attaches it.
    con.execute(f"attach '{platform_home / 'catalog.duckdb'}' as catalog (read_only)")
    yield con
    con.close()


def duckdb_rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def test_duckdb_build_passes(duckdb_build: Build) -> None:
    assert_all_passed(duckdb_build)


def test_duckdb_row_counts_and_totals(platform_home: Path, warehouse: duckdb.DuckDBPyConnection) -> None:
    one = lambda sql: duckdb_rows(warehouse, sql)[0][0]
    staged_trips, natural_keys = query(
        platform_home, f"select count(*), count(distinct ({NATURAL_KEY})) from staging_mobility.yellow_trips")[0]
    assert staged_trips == 1776 + 100  # two sample files and the re-sent part
    assert natural_keys == 1776
    assert one("select count(*) from ods_mobility.trips") == natural_keys
    assert one("select count(distinct trip_id) from ods_mobility.trips") == natural_keys
    assert one("select count(*) from ods_mobility.zones") == 265
    assert one("select count(*) from ods_mobility.trips where pickup_borough is null or dropoff_borough is null") == 0

    staged_lines, distinct_lines, staged_amount = query(
        platform_home, "select count(*), count(distinct (report_id, line_number)), "
                       "(select sum(amount) from (select distinct report_id, line_number, amount "
                       "from staging_finance.expense_reports)) from staging_finance.expense_reports")[0]
    assert staged_lines == distinct_lines + 40
    assert one("select count(*) from ods_finance.expense_lines") == distinct_lines
    assert one("select sum(amount) from ods_finance.expense_lines") == staged_amount

    # Marts: non-empty, and their totals are the ods totals.
    trips_total = duckdb_rows(warehouse, "select count(*), sum(total_amount), sum(fare_amount), sum(tip_amount), "
                                         "sum(passenger_count) from ods_mobility.trips")[0]
    daily = duckdb_rows(warehouse, "select sum(trips), sum(total_revenue), sum(fare_revenue), sum(tip_revenue), "
                                   "sum(passengers), count(*) from analytics_mobility.daily_trips_by_borough")[0]
    assert daily[:5] == trips_total and daily[5] > 1
    assert duckdb_rows(warehouse, "select sum(trips), count(*) > 100 from analytics_mobility.zone_flows")[0] == (
        natural_keys, True)
    assert one("select sum(trips) from analytics_mobility.tips_by_payment_type") == natural_keys
    spend = duckdb_rows(warehouse, "select sum(lines), sum(total_amount), count(*), sum(out_of_policy_lines) "
                                   "from analytics_finance.monthly_spend_by_cost_centre")[0]
    assert spend[:2] == (distinct_lines, staged_amount) and spend[2] > 1
    limits = yaml.safe_load((PROJECT / "dbt_project.yml").read_text())["vars"]["expense_policy_limits"]
    over_limit = " or ".join(f"(category = '{c}' and amount > {limit})" for c, limit in limits.items())
    assert spend[3] == one(f"select count(*) from ods_finance.expense_lines where {over_limit}")


def test_employee_key_is_the_keyed_hash(platform_home: Path, warehouse: duckdb.DuckDBPyConnection) -> None:
    staged = dict(query(platform_home, "select report_id || '-' || line_number, employee_id "
                                       "from staging_finance.expense_reports"))
    modelled = dict(duckdb_rows(warehouse, "select expense_line_id, employee_key from ods_finance.expense_lines"))
    assert modelled.keys() == staged.keys()
    for line_id, employee_key in modelled.items():
        assert employee_key == hashlib.sha256(f"{PII_KEY}|{staged[line_id]}".encode()).hexdigest(), line_id


# -- PostgreSQL -----------------------------------------------------------------------------------


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    database: str

    def connect(self):
        return psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=self.database)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="delete")
    try:
        uri = urlsplit(server.get_uri())
        yield Postgres(host=parse_qs(uri.query)["host"][0], port=uri.port or 5432, user=uri.username or "postgres",
                       database=uri.path.lstrip("/") or "postgres")
    finally:
        server.cleanup()


def source_columns() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(schema, table) → [(column, data_type)], from the generated sources.yml."""
    sources = yaml.safe_load((PROJECT / "models" / "sources.yml").read_text())["sources"]
    return {(s["schema"], t["name"]): [(c["name"], c["data_type"]) for c in t["columns"]]
            for s in sources for t in s["tables"]}


def load_staging_into_postgres(home: Path, pg: Postgres, workdir: Path) -> dict[str, int]:
    """The staging tables as the catalog shows them, copied into PostgreSQL schemas of the same names
    (DuckDB writes CSV: nulls unquoted and empty, empty strings quoted, as PostgreSQL's CSV COPY reads them)."""
    workdir.mkdir(parents=True, exist_ok=True)
    counts = {}
    catalog = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    conn = pg.connect()
    try:
        with conn, conn.cursor() as cur:
            for (schema, table), columns in source_columns().items():
                names = ", ".join(name for name, _ in columns)
                csv_path = workdir / f"{schema}.{table}.csv"
                catalog.execute(f"copy (select {names} from {schema}.{table}) to '{csv_path}' (header false)")
                cur.execute(f"create schema if not exists {schema}")
                cur.execute(f"create table {schema}.{table} ({', '.join(f'{n} {t}' for n, t in columns)})")
                with csv_path.open() as f:
                    cur.copy_expert(f"copy {schema}.{table} ({names}) from stdin with (format csv)", f)
                cur.execute(f"select count(*) from {schema}.{table}")
                counts[f"{schema}.{table}"] = cur.fetchone()[0]
    finally:
        conn.close()
        catalog.close()
    return counts


@pytest.fixture(scope="module")
def postgres_build(platform_home: Path, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Build:
    workdir = tmp_path_factory.mktemp("dbt_postgres")
    counts = load_staging_into_postgres(platform_home, postgres, workdir / "staging")
    for relation, count in counts.items():
        assert [(count,)] == query(platform_home, f"select count(*) from {relation}")
    # The key only as the session setting: PostgreSQL never reads PLATFORM_PII_KEY.
    env = {"PLATFORM_PG_HOST": postgres.host, "PLATFORM_PG_PORT": str(postgres.port),
           "PLATFORM_PG_USER": postgres.user, "PLATFORM_PG_DATABASE": postgres.database,
           "PGOPTIONS": postgres_options(PII_KEY)}
    return run_dbt_build("postgres", platform_home, workdir, env)


def postgres_rows(pg: Postgres, sql: str) -> list[tuple]:
    conn = pg.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def same_value(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def test_postgres_build_passes(postgres_build: Build) -> None:
    assert_all_passed(postgres_build)


@pytest.mark.parametrize("relation", list(COMPARED))
def test_postgres_gives_the_same_rows_as_duckdb(
    relation: str, postgres: Postgres, postgres_build: Build, warehouse: duckdb.DuckDBPyConnection
) -> None:
    schema, table = relation.split(".")
    columns = [c for (c,) in duckdb_rows(warehouse, "select column_name from information_schema.columns where "
                                                    f"table_schema = '{schema}' and table_name = '{table}' "
                                                    "order by ordinal_position")]
    pg_columns = [c for (c,) in postgres_rows(postgres, "select column_name from information_schema.columns where "
                                                        f"table_schema = '{schema}' and table_name = '{table}' "
                                                        "order by ordinal_position")]
    assert columns and pg_columns == columns
    columns = [c for c in columns if c != BUILD_TIME]
    key = COMPARED[relation]
    sql = f"select {', '.join(columns)} from {relation} order by {', '.join(key)}"
    from_duckdb, from_postgres = duckdb_rows(warehouse, sql), postgres_rows(postgres, sql)
    assert len(from_duckdb) == len(from_postgres) > 0
    for d_row, p_row in zip(from_duckdb, from_postgres, strict=True):
        assert all(same_value(d, p) for d, p in zip(d_row, p_row, strict=True)), (relation, d_row, p_row)
    if relation == "analytics_finance.monthly_spend_by_cost_centre":
        assert sum(r[columns.index("total_amount")] for r in from_postgres) > Decimal(0)


# -- personal data --------------------------------------------------------------------------------


def modelled_relations(rows: list[tuple[str, str]]) -> list[str]:
    relations = [f"{s}.{t}" for s, t in rows if s.startswith(("ods_", "analytics_"))]
    assert len(relations) == len(MODELS), relations  # every model: the base_ views too
    return relations


def assert_no_pii(engine: str, relation: str, columns: list[str], rows: list[tuple], pii: set[str]) -> None:
    # One string per column, values separated by NUL: a value equal to or containing a PII value is a
    # substring of it, and no match can straddle two values.
    for i, column in enumerate(columns):
        text = "\0".join(v for v in (row[i] for row in rows) if v is not None)
        found = sorted(p for p in pii if p in text)
        assert not found, f"{engine}: {relation}.{column} holds personal data, e.g. {found[:3]}"


def test_no_personal_data_in_modelled_zones(
    pii_values: set[str], warehouse: duckdb.DuckDBPyConnection, postgres: Postgres, postgres_build: Build
) -> None:
    tables_sql = "select table_schema, table_name from information_schema.tables"
    columns_sql = ("select column_name from information_schema.columns where table_schema = '{}' "
                   "and table_name = '{}' order by ordinal_position")
    scanned = 0
    for relation in modelled_relations(duckdb_rows(warehouse, tables_sql + " where table_catalog = 'warehouse'")):
        columns = [c for (c,) in duckdb_rows(warehouse, columns_sql.format(*relation.split(".")))]
        rows = duckdb_rows(warehouse, f"select {', '.join(f'cast({c} as text)' for c in columns)} from {relation}")
        assert_no_pii("duckdb", relation, columns, rows, pii_values)
        scanned += len(rows) * len(columns)
    for relation in modelled_relations(postgres_rows(postgres, tables_sql)):
        columns = [c for (c,) in postgres_rows(postgres, columns_sql.format(*relation.split(".")))]
        rows = postgres_rows(postgres, f"select {', '.join(f'cast({c} as text)' for c in columns)} from {relation}")
        assert_no_pii("postgres", relation, columns, rows, pii_values)
        scanned += len(rows) * len(columns)
    assert scanned > 100_000


def test_the_hashing_key_is_in_no_artifact_log_or_stored_object(
    platform_home: Path, duckdb_build: Build, postgres_build: Build, postgres: Postgres
) -> None:
    """The key reaches the engines as a session value: no compiled SQL, run result, manifest, dbt log,
    view definition or warehouse file holds it (the hashes themselves are checked above)."""
    needles = [PII_KEY.encode(), PII_KEY.replace("'", "''").encode()]
    searched = 0
    for build in (duckdb_build, postgres_build):
        files = [p for p in build.workdir.rglob("*") if p.is_file() and "staging" not in p.parts]
        assert any(p.name == "run_results.json" for p in files) and any(p.suffix == ".log" for p in files)
        for path in files:
            data = path.read_bytes()
            assert not any(n in data for n in needles), f"{build.target}: the hashing key is in {path}"
            searched += len(data)
        compiled = [p for p in files if p.name == "base_finance__expense_reports.sql"]
        assert compiled and all(b"platform_pii_key" in p.read_bytes() or b"platform.pii_key" in p.read_bytes()
                                for p in compiled)
    for path in (platform_home / "warehouse.duckdb", platform_home / "catalog.duckdb"):
        assert not any(n in path.read_bytes() for n in needles), path
    definitions = postgres_rows(postgres, "select coalesce(string_agg(definition, ' '), '') from pg_views "
                                          "where schemaname like 'ods_%' or schemaname like 'analytics_%'")[0][0]
    assert PII_KEY not in definitions and definitions
    assert searched > 1_000_000


@pytest.mark.parametrize("key", ["plain", "with space", "back\\slash", "quote'd", "tab\tand  two spaces", "ünï-cødé"])
def test_postgres_session_option_carries_any_key_exactly(postgres: Postgres, key: str) -> None:
    conn = psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user, dbname=postgres.database,
                            options=postgres_options(key))
    try:
        with conn.cursor() as cur:
            cur.execute("select current_setting('platform.pii_key')")
            assert cur.fetchone()[0] == key
    finally:
        conn.close()


def test_postgres_without_the_key_fails_rather_than_hashing_without_it(postgres: Postgres) -> None:
    conn = postgres.connect()
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.Error, match="platform.pii_key"):
            cur.execute("select current_setting('platform.pii_key')")
    finally:
        conn.close()


def test_column_lineage_from_a_postgres_build(postgres_build: Build) -> None:
    """Lineage is traced in the dialect and with the relation names of the build it describes."""
    from assets.dbt import PlatformDbtTranslator, column_lineage, dbt_project

    target = postgres_build.workdir / "target"
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["metadata"]["adapter_type"] == "postgres"
    lineage = column_lineage(manifest, "model.lake_platform.trips", target, PlatformDbtTranslator(), dbt_project())
    deps = {column: {f"{d.asset_key.to_user_string()}.{d.column_name}" for d in ds}
            for column, ds in lineage["dagster/column_lineage"].deps_by_column.items()}
    assert deps["pickup_borough"] == {"ods/mobility/ods_zones.borough"}
    assert deps["fare_amount"] == {"ods/mobility/ods_base_mobility__yellow_trips.fare_amount"}
