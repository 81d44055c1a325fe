"""The serving database against a real embedded PostgreSQL 16 (pgserver), no mocks.

One server serves the export tests (each test in its own schema); the lifecycle tests start and
stop their own. Homes live in short /tmp directories: a Unix socket path is limited to ~107 bytes.
"""

from __future__ import annotations

import datetime
import decimal
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pytest

from resources.serving import (
    DuplicateKeyError,
    ExportResult,
    NullKeyError,
    SchemaChangeError,
    ServingDatabase,
    ServingError,
    ServingUnavailable,
    normalize_type,
    stop_local,
)

REPO = Path(__file__).resolve().parent.parent
TYPES = {"trip_date": "date", "zone": "integer", "trips": "bigint", "avg_fare": "double precision", "borough": "text"}
KEY = ["trip_date", "zone"]
D1 = datetime.date(2024, 1, 1)

_homes: list[tuple[Path, Path]] = []  # (temporary root, home)


def _postgres_processes(under: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] == "postgres" and any(str(under) in arg for arg in p.info["cmdline"] or []):
            found.append(p)
    return found


def new_home(*parts: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix="srv-", dir="/tmp"))
    home = root.joinpath(*parts)
    home.mkdir(parents=True, exist_ok=True)
    _homes.append((root, home))
    return home


@pytest.fixture(scope="module", autouse=True)
def no_server_left() -> Iterator[None]:
    """After the module: every server a test started is stopped, and the homes are removed."""
    yield
    try:
        for _, home in _homes:
            stop_local(home)  # a no-op unless a failed test left one running
        left = [p.pid for root, _ in _homes for p in _postgres_processes(root)]
        assert not left, f"PostgreSQL processes left running: {left}"
    finally:
        for root, _ in _homes:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def db() -> Iterator[ServingDatabase]:
    home = new_home()
    yield ServingDatabase.local(home)
    assert stop_local(home)


@pytest.fixture
def schema(request: pytest.FixtureRequest, db: ServingDatabase) -> str:
    """A fresh schema per test, named after it."""
    name = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower()).strip("_")[:63]
    query(db, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    return name


def query(db: ServingDatabase, statement: str, params: tuple = ()) -> list[tuple]:
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows


def rows_of(db: ServingDatabase, schema: str, name: str = "daily") -> list[tuple]:
    return query(db, f'SELECT * FROM "{schema}"."{name}" ORDER BY 1, 2')


def column_types(db: ServingDatabase, schema: str, name: str = "daily") -> dict[str, str]:
    return dict(
        query(
            db,
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (f'"{schema}"."{name}"',),
        )
    )


def daily(zones: list[int], trips: list[int] | None = None, **extra: list) -> pa.Table:
    n = len(zones)
    return pa.table(
        {
            "trip_date": pa.array([D1] * n, pa.date32()),
            "zone": pa.array(zones, pa.int32()),
            "trips": pa.array(trips or [z * 10 for z in zones], pa.int64()),
            "avg_fare": pa.array([z + 0.5 for z in zones], pa.float64()),
            "borough": pa.array([f"b{z}" for z in zones]),
            **extra,
        }
    )


def export(db: ServingDatabase, schema: str, table: pa.Table, types: dict[str, str] = TYPES, **kw) -> ExportResult:
    return db.export(table, schema=schema, name=kw.pop("name", "daily"), key=kw.pop("key", KEY), column_types=types)


# Exports


def test_first_export_creates_the_table(db: ServingDatabase, schema: str) -> None:
    result = export(db, schema, daily([1, 2, 3]))
    assert result == ExportResult(rows=3, inserted=3, updated=0, deleted=0)
    assert rows_of(db, schema) == [(D1, z, z * 10, z + 0.5, f"b{z}") for z in (1, 2, 3)]
    assert column_types(db, schema) == {
        "trip_date": "date",
        "zone": "integer",
        "trips": "bigint",
        "avg_fare": "double precision",
        "borough": "text",
    }
    pk = query(
        db,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY 1",
        (f"{schema}.daily",),
    )
    assert [r[0] for r in pk] == ["trip_date", "zone"]
    assert db.row_count(schema, "daily") == 3


def test_reexport_of_the_same_rows_writes_nothing(db: ServingDatabase, schema: str) -> None:
    export(db, schema, daily([1, 2, 3]))
    versions = query(db, f"SELECT zone, xmin::text, ctid::text FROM {schema}.daily ORDER BY zone")
    assert export(db, schema, daily([1, 2, 3])) == ExportResult(rows=3, inserted=0, updated=0, deleted=0)
    assert rows_of(db, schema) == [(D1, z, z * 10, z + 0.5, f"b{z}") for z in (1, 2, 3)]
    # Same row versions: not even a row lock was written.
    assert query(db, f"SELECT zone, xmin::text, ctid::text FROM {schema}.daily ORDER BY zone") == versions


def test_a_changed_row_is_updated(db: ServingDatabase, schema: str) -> None:
    export(db, schema, daily([1, 2, 3]))
    result = export(db, schema, daily([1, 2, 3], trips=[10, 99, 30]))
    assert result == ExportResult(rows=3, inserted=0, updated=1, deleted=0)
    assert [r[2] for r in rows_of(db, schema)] == [10, 99, 30]


def test_a_value_changed_to_or_from_null_is_an_update(db: ServingDatabase, schema: str) -> None:
    export(db, schema, daily([1, 2]))
    with_null = daily([1, 2]).set_column(3, "avg_fare", pa.array([None, 2.5]))
    assert export(db, schema, with_null).updated == 1
    assert export(db, schema, with_null).updated == 0  # NULL is not distinct from NULL
    assert export(db, schema, daily([1, 2])).updated == 1


def test_a_removed_row_is_deleted_and_a_new_one_inserted(db: ServingDatabase, schema: str) -> None:
    export(db, schema, daily([1, 2, 3]))
    assert export(db, schema, daily([1, 3, 4])) == ExportResult(rows=3, inserted=1, updated=0, deleted=1)
    assert [r[1] for r in rows_of(db, schema)] == [1, 3, 4]
    assert export(db, schema, daily([]).slice(0, 0)) == ExportResult(rows=0, inserted=0, updated=0, deleted=3)


def test_random_versions_are_served_exactly(db: ServingDatabase, schema: str) -> None:
    rng = random.Random(42)
    served: dict[tuple, tuple] = {}
    for _ in range(6):
        version = {}
        for zone in rng.sample(range(1, 400), rng.randint(0, 300)):
            old = served.get((D1, zone))
            keep = old is not None and rng.random() < 0.7
            fare = None if rng.random() < 0.2 else float(rng.randint(0, 3))
            version[(D1, zone)] = old if keep else (rng.randint(0, 3), fare, rng.choice(["", "a", None]))
        table = pa.table(
            {
                "trip_date": pa.array([k[0] for k in version], pa.date32()),
                "zone": pa.array([k[1] for k in version], pa.int32()),
                "trips": pa.array([v[0] for v in version.values()], pa.int64()),
                "avg_fare": pa.array([v[1] for v in version.values()], pa.float64()),
                "borough": pa.array([v[2] for v in version.values()], pa.string()),
            }
        )
        expected = ExportResult(
            rows=len(version),
            inserted=len(version.keys() - served.keys()),
            updated=sum(1 for k in version.keys() & served.keys() if version[k] != served[k]),
            deleted=len(served.keys() - version.keys()),
        )
        assert export(db, schema, table) == expected
        assert rows_of(db, schema) == sorted((*k, *v) for k, v in version.items())
        served = version


def test_concurrent_exports_wait_for_each_other(db: ServingDatabase, schema: str) -> None:
    # Two tables of a new schema (both would create it), and twice the same new table (both
    # would create it): each export waits for the one before it instead of failing.
    jobs = [("a", daily([1, 2])), ("b", daily([3])), ("c", daily([1, 2, 3])), ("c", daily([2, 4]))]
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda job: export(db, schema, job[1], name=job[0]), jobs))
    assert [r.rows for r in results] == [2, 1, 3, 2]
    assert [r[1] for r in rows_of(db, schema, "a")] == [1, 2]
    assert [r[1] for r in rows_of(db, schema, "c")] in ([1, 2, 3], [2, 4])  # whichever committed last
    assert sorted(r.inserted for r in results[2:]) in ([1, 3], [2, 2])


def test_a_new_column_is_added(db: ServingDatabase, schema: str) -> None:
    export(db, schema, daily([1, 2, 3]))
    wider = daily(
        [1, 2, 3], total=pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("3.50")], pa.decimal128(12, 2))
    )
    result = export(db, schema, wider, {**TYPES, "total": "numeric(12, 2)"})
    # The new column is NULL in the served rows, so the rows with a value are updates.
    assert result == ExportResult(rows=3, inserted=0, updated=2, deleted=0)
    assert column_types(db, schema)["total"] == "numeric(12,2)"
    assert [r[5] for r in rows_of(db, schema)] == [decimal.Decimal("1.25"), None, decimal.Decimal("3.50")]


def test_a_changed_type_is_refused_and_nothing_changes(db: ServingDatabase, schema: str) -> None:
    export(db, schema, daily([1, 2, 3]))
    before = rows_of(db, schema)
    changed = daily([1, 2, 4], extra=pa.array([1, 2, 3])).set_column(2, "trips", pa.array([1.5, 2.5, 3.5]))
    with pytest.raises(SchemaChangeError, match=r"trips is bigint, the export has double precision") as e:
        export(db, schema, changed, {**TYPES, "trips": "double precision", "extra": "integer"})
    assert "Nothing was changed" in str(e.value)
    assert rows_of(db, schema) == before
    assert column_types(db, schema) == dict(
        zip(TYPES, ["date", "integer", "bigint", "double precision", "text"], strict=True)
    )


def test_a_dropped_column_or_a_changed_key_is_refused(db: ServingDatabase, schema: str) -> None:
    export(db, schema, daily([1, 2, 3]))
    before = rows_of(db, schema)
    narrower = daily([1, 2, 3]).drop_columns(["borough"])
    with pytest.raises(SchemaChangeError, match=r"served column\(s\) missing from the export: borough"):
        export(db, schema, narrower, {k: v for k, v in TYPES.items() if k != "borough"})
    with pytest.raises(SchemaChangeError, match=r"the key is \(trip_date, zone\), the export's is \(zone\)"):
        export(db, schema, daily([1, 2, 3]), key=["zone"])
    assert rows_of(db, schema) == before


@pytest.mark.parametrize("existing", [False, True], ids=["new_table", "existing_table"])
def test_duplicate_keys_are_refused(db: ServingDatabase, schema: str, existing: bool) -> None:
    if existing:
        export(db, schema, daily([1, 2, 3]))
    before = rows_of(db, schema) if existing else None
    with pytest.raises(DuplicateKeyError, match=r"\(trip_date, zone\)=\(2024-01-01, 2\) appears 2 times"):
        export(db, schema, daily([1, 2, 2, 3], trips=[10, 20, 21, 30]))
    if existing:
        assert rows_of(db, schema) == before
    else:
        assert query(db, "SELECT to_regclass(%s)", (f"{schema}.daily",)) == [(None,)]


def test_duplicate_keys_are_refused_even_when_the_diff_skips_them(db: ServingDatabase, schema: str) -> None:
    # Rows equal to the served ones never reach ON CONFLICT; the final row count still catches them.
    export(db, schema, daily([1, 2, 3]))
    with pytest.raises(DuplicateKeyError, match=r"=\(2024-01-01, 2\) appears 2 times"):
        export(db, schema, daily([1, 2, 2, 3]))
    # A table whose every column is in the key takes ON CONFLICT DO NOTHING.
    keys_only = pa.table({"a": [1, 2], "b": ["x", "y"]})
    export(db, schema, keys_only, {"a": "integer", "b": "text"}, name="pairs", key=["a", "b"])
    with pytest.raises(DuplicateKeyError, match=r"\(a, b\)=\(3, z\) appears 2 times"):
        export(db, schema, pa.table({"a": [1, 3, 3], "b": ["x", "z", "z"]}), {"a": "integer", "b": "text"},
               name="pairs", key=["a", "b"])  # fmt: skip
    assert rows_of(db, schema, "pairs") == [(1, "x"), (2, "y")]


def test_a_null_key_is_refused(db: ServingDatabase, schema: str) -> None:
    export(db, schema, daily([1, 2]))
    with pytest.raises(NullKeyError, match=r"key column 'zone' holds 1 NULL"):
        export(db, schema, daily([1, 2]).set_column(1, "zone", pa.array([1, None], pa.int32())))
    assert len(rows_of(db, schema)) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("schema", "Mobility"),
        ("schema", "mart-x"),
        ("name", 'daily"; DROP TABLE x; --'),
        ("name", "1daily"),
        ("name", "d" * 64),
        ("name", ""),
        ("column", "Trips"),
        ("column", "trips per day"),
        ("column", "xmin"),
        ("key", "nope"),
        ("type", "varchar(10)"),
        ("type", "bigint; DROP TABLE x"),
        ("type", "numeric(5,7)"),
    ],
)
def test_invalid_identifiers_and_types_are_refused(db: ServingDatabase, field: str, value: str) -> None:
    table, types, schema, name, key = daily([1]), dict(TYPES), "refused", "daily", list(KEY)
    if field == "schema":
        schema = value
    elif field == "name":
        name = value
    elif field == "column":
        table = table.rename_columns([value if c == "borough" else c for c in table.column_names])
        types = {value if c == "borough" else c: t for c, t in types.items()}
    elif field == "key":
        key = ["trip_date", value]
    else:
        types["borough"] = value
    with pytest.raises(ValueError):
        db.export(table, schema=schema, name=name, key=key, column_types=types)
    assert query(db, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)) == [(0,)]


def test_columns_must_match_the_declared_types(db: ServingDatabase, schema: str) -> None:
    with pytest.raises(ValueError, match=r"without a type: borough; typed but absent: other"):
        export(db, schema, daily([1]), {**{k: v for k, v in TYPES.items() if k != "borough"}, "other": "text"})


def test_allowed_types_are_normalized() -> None:
    assert normalize_type("Double  Precision") == "double precision"
    assert normalize_type("NUMERIC( 12 , 2 )") == "numeric(12,2)"
    with pytest.raises(ValueError, match="unsupported column type"):
        normalize_type("timestamptz")


def test_a_failure_after_the_upsert_rolls_everything_back(
    db: ServingDatabase, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    export(db, schema, daily([1, 2, 3]))
    before = rows_of(db, schema)

    write_diff = ServingDatabase._write_diff

    def write_then_fail(self: ServingDatabase, cur: Any, t: Any) -> tuple[int, int, int]:
        assert write_diff(self, cur, t) == (1, 2, 1)  # the rows were written in the transaction ...
        raise RuntimeError("injected failure after the upsert")  # ... and then it failed

    monkeypatch.setattr(ServingDatabase, "_write_diff", write_then_fail)
    wider = daily([1, 2, 5], trips=[11, 22, 55], total=pa.array([1, 2, 3]))
    with pytest.raises(RuntimeError, match="injected"):
        export(db, schema, wider, {**TYPES, "total": "bigint"})
    assert rows_of(db, schema) == before  # no update, no insert
    assert "total" not in column_types(db, schema)  # nor the added column
    monkeypatch.undo()
    assert export(db, schema, wider, {**TYPES, "total": "bigint"}) == ExportResult(3, 1, 2, 1)


def test_a_value_postgres_rejects_rolls_back(db: ServingDatabase, schema: str) -> None:
    export(db, schema, daily([1, 2, 3]))
    before = rows_of(db, schema)
    bad = daily([1, 2, 3]).set_column(2, "trips", pa.array(["10", "20", "lots"]))
    with pytest.raises(ServingError, match=r'rolled back.*invalid input syntax for type bigint: "lots".*line 3'):
        export(db, schema, bad)
    assert rows_of(db, schema) == before
    with pytest.raises(ServingError, match="rolled back"):
        export(db, schema, bad, name="fresh")
    assert query(db, "SELECT to_regclass(%s)", (f"{schema}.fresh",)) == [(None,)]


def test_values_round_trip(db: ServingDatabase, schema: str) -> None:
    types = {
        "id": "integer",
        "s": "text",
        "f": "double precision",
        "n": "numeric(10,3)",
        "b": "boolean",
        "ts": "timestamp",
        "small": "smallint",
    }
    # 2024-06-01 10:00 in Paris = 08:00 UTC, given as an instant: once pandera.polars is imported in
    # the process, pyarrow reads the wall time of a zone-aware Python datetime as UTC.
    paris = int(datetime.datetime(2024, 6, 1, 8, 0, tzinfo=datetime.UTC).timestamp() * 1_000_000)
    table = pa.table(
        {
            "id": pa.array([1, 2, 3, 4], pa.int32()),
            "s": ["", None, 'a "quoted", comma\nand newline', "ünïcödé \\. €"],
            "f": [math.nan, math.inf, -0.1, None],
            "n": pa.array([decimal.Decimal("1.234"), None, decimal.Decimal("-0.001"), decimal.Decimal("0")]),
            "b": [True, False, None, True],
            "ts": pa.array([paris, None, paris, paris], pa.timestamp("us", tz="Europe/Paris")),
            "small": pa.array([1, -2, None, 32767], pa.int16()),
        }
    )
    export(db, schema, table, types, name="values", key=["id"])
    got = query(db, f"SELECT id, s, s IS NULL, f::text, n, b, ts, small FROM {schema}.values ORDER BY id")
    utc = datetime.datetime(2024, 6, 1, 8, 0)  # zoned timestamps are served as UTC
    assert got == [
        (1, "", False, "NaN", decimal.Decimal("1.234"), True, utc, 1),
        (2, None, True, "Infinity", None, False, None, -2),
        (3, 'a "quoted", comma\nand newline', False, "-0.1", decimal.Decimal("-0.001"), None, utc, None),
        (4, "ünïcödé \\. €", False, None, decimal.Decimal("0.000"), True, utc, 32767),
    ]
    # NaN equals NaN for PostgreSQL: the same rows again are no change.
    assert export(db, schema, table, types, name="values", key=["id"]).updated == 0


def test_an_export_fails_rather_than_waits_behind_a_lock(schema: str, db: ServingDatabase) -> None:
    export(db, schema, daily([1, 2]))
    impatient = ServingDatabase(db.dsn_for_humans(), lock_timeout_s=0.5)
    with db.connect() as reader, reader.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {schema}.daily")  # an open transaction holds ACCESS SHARE
        with pytest.raises(ServingError, match="lock timeout"):
            export(impatient, schema, daily([1, 2], extra=pa.array([1, 2])), {**TYPES, "extra": "integer"})
        reader.rollback()
    assert "extra" not in column_types(db, schema)


def test_a_server_stopped_mid_export_leaves_the_table_as_it_was_and_the_next_export_succeeds() -> None:
    """The export is inside its transaction (blocked behind a lock) when the server stops: its
    retries find no server, it fails saying so after a bounded wait, the table is exactly the
    previous version when the server is back, and the next export goes through."""
    home = new_home()
    db = ServingDatabase.local(home)
    patient = ServingDatabase(db.dsn_for_humans(),
                              retry_delays_s=(0.2, 0.4, 0.8))
    export(db, "outage", daily([1, 2]))
    before = rows_of(db, "outage")
    outcome: dict[str, BaseException | ExportResult] = {}

    def run() -> None:
        try:
            outcome["result"] = export(patient, "outage", daily([1, 2, 3], trips=[7, 8, 9]))
        except BaseException as e:
            outcome["result"] = e

    with db.connect() as holder, holder.cursor() as cur:
        cur.execute('LOCK TABLE "outage"."daily" IN ACCESS EXCLUSIVE MODE')
        worker = threading.Thread(target=run)
        worker.start()
        deadline = time.monotonic() + 30
        while not query(db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")[0][0]:
            assert time.monotonic() < deadline, "the export never got to wait inside its transaction"
            time.sleep(0.1)
        started = time.monotonic()
        assert stop_local(home)
        worker.join(timeout=60)
    failure = outcome["result"]
    assert isinstance(failure, ServingUnavailable), failure
    assert "the serving database was unavailable on 4 attempts" in str(failure)
    assert "the served table is unchanged" in str(failure)
    assert failure.retryable and time.monotonic() - started < 30
    db = ServingDatabase.local(home)  # the server is back (the step's retry starts it the same way)
    assert rows_of(db, "outage") == before
    assert export(db, "outage", daily([1, 2, 3], trips=[7, 8, 9])).rows == 3
    assert stop_local(home)


def test_the_dsn_is_never_shown() -> None:
    secret = "s3cr3t-pw"
    unreachable = ServingDatabase(f"host=/nonexistent user=app dbname=marts password={secret}")
    assert secret not in repr(unreachable) and secret not in unreachable.dsn_for_humans()
    assert "user=app" in unreachable.dsn_for_humans()
    with pytest.raises(ServingError, match="cannot connect") as e:
        unreachable.row_count("a", "b")
    assert secret not in str(e.value) and e.value.__context__ is None and e.value.__cause__ is None
    with pytest.raises(ValueError, match="invalid serving database DSN") as e2:
        ServingDatabase(f"host=x password = {secret} oops")
    assert secret not in str(e2.value) and e2.value.__context__ is None
    uri = ServingDatabase(f"postgresql://app:{secret}@db.example:5432/marts?sslmode=require")
    assert secret not in uri.dsn_for_humans()


# The embedded server's lifecycle


def _start_time(db: ServingDatabase) -> tuple:
    return query(db, "SELECT pg_postmaster_start_time(), current_setting('data_directory')")[0]


def _local_in_subprocess(home: Path) -> subprocess.Popen:
    code = (
        "import sys; from pathlib import Path; from resources.serving import ServingDatabase;"
        "db = ServingDatabase.local(Path(sys.argv[1]));"
        "\nwith db.connect() as c, c.cursor() as cur:"
        "\n    cur.execute('SELECT pg_postmaster_start_time()'); print(cur.fetchone()[0].isoformat())"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(home)], cwd=REPO, stdout=subprocess.PIPE, text=True)


def test_local_reuses_a_running_server_across_processes_and_stop_local_stops_it() -> None:
    home = new_home()
    # Two processes start the same fresh home at once: pgserver's lock makes it one server.
    first, second = _local_in_subprocess(home), _local_in_subprocess(home)
    started = {first.communicate(timeout=120)[0].strip(), second.communicate(timeout=120)[0].strip()}
    assert first.returncode == second.returncode == 0 and len(started) == 1
    # It outlived them, and this process reuses it.
    a, b = ServingDatabase.local(home), ServingDatabase.local(home)
    assert _start_time(a) == _start_time(b)
    assert _start_time(a)[0].isoformat() == started.pop()
    assert a.dsn_for_humans() == b.dsn_for_humans()
    assert f"host={home.resolve() / 'serving' / 'pgdata'}" in a.dsn_for_humans()
    assert len([p for p in _postgres_processes(home) if "-D" in p.cmdline()]) == 1

    assert stop_local(home) is True
    assert not _postgres_processes(home)
    with pytest.raises(ServingError, match="cannot connect"):
        a.row_count("x", "y")
    assert stop_local(home) is False
    # Started again on demand, with the data kept.
    c = ServingDatabase.local(home)
    assert c.row_count("pg_catalog", "pg_class") > 0
    assert stop_local(home) is True


def test_cli_serving_status_and_stop() -> None:
    home = new_home()

    def cli(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli", "serving", action, "--home", str(home)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    down = cli("status")
    assert down.returncode == 1 and "is not running" in down.stdout
    db = ServingDatabase.local(home)
    up = cli("status")
    assert up.returncode == 0 and f'psql "{db.dsn_for_humans()}"' in up.stdout
    assert "stopped" in cli("stop").stdout and not _postgres_processes(home)
    assert "was not running" in cli("stop").stdout


def test_local_with_a_home_too_long_for_a_unix_socket() -> None:
    home = new_home("a_rather_long_directory_name_" * 3)
    pgdata = home.resolve() / "serving" / "pgdata"
    assert len(str(pgdata / ".s.PGSQL.5432")) > 107
    db = ServingDatabase.local(home)
    socket_dir = Path(re.search(r"host=(\S+)", db.dsn_for_humans())[1])
    try:
        assert db.row_count("pg_catalog", "pg_class") > 0
        # pgserver put the socket in a directory of its own under the user's runtime directory.
        assert socket_dir != pgdata and socket_dir.parent.name == "python_PostgresServer"
    finally:
        assert stop_local(home)
        socket_dir.rmdir()  # pgserver leaves it behind, empty


def test_local_starts_over_a_stale_pid_file() -> None:
    # After a reboot postmaster.pid survives, and its pid may now be another program's.
    home = new_home()
    assert ServingDatabase.local(home).row_count("pg_catalog", "pg_class") > 0
    assert stop_local(home)
    pgdata = home.resolve() / "serving" / "pgdata"
    lines = [str(os.getpid()), str(pgdata), "1700000000", "5432", str(pgdata), "", "0 0", "ready"]
    (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
    assert stop_local(home) is False  # not a postgres process: nothing to stop
    try:
        assert ServingDatabase.local(home).row_count("pg_catalog", "pg_class") > 0
    finally:
        assert stop_local(home)
