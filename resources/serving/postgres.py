"""The PostgreSQL backend of the serving database: marts exported for applications and BI tools.

The same code serves Aurora PostgreSQL in AWS (the DSN built from Secrets Manager) and the
embedded PostgreSQL of the local environment (``resources.serving.embedded``).

An export makes the served table equal to the new version of a mart in ONE transaction: readers
see the old rows until the commit and the new ones after it, and any failure leaves the table
exactly as it was. Only rows that differ are written, so re-exporting an unchanged mart does
not touch the served table. Identifiers are validated and quoted, types come from an allow-list,
and every value travels through COPY or bound parameters.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import re
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg2 import sql

from core.errors import PlatformError, ResourceBusy, ResourceUnavailable, TerminalError
from core.names import IDENT, POSTGRES_SYSTEM_COLUMNS

log = logging.getLogger(__name__)

_SIMPLE_TYPES = frozenset({"text", "smallint", "integer", "bigint", "double precision", "date", "timestamp", "boolean"})
_NUMERIC = re.compile(r"^numeric\((\d{1,4}),(\d{1,4})\)$")
# How format_type() spells an allowed type, where that differs from the declaration.
_CATALOG_SPELLING = {"timestamp": "timestamp without time zone"}
_SECRET_PARAMS = ("password", "sslpassword")
_TMP = sql.Identifier("_serving_rows")
# An export interrupted by a lost connection is retried this many times (seconds between attempts,
# with jitter), then fails: bounded, and each attempt is its own transaction.
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)
BATCH_ROWS = 65_536  # rows rendered to CSV at a time: ~4 MB for a typical mart row
COPY_READ_SIZE = 1 << 16


class ServingError(PlatformError):
    """A serving-database operation failed. An export that raises this changed nothing."""


class ServingRefused(ServingError, TerminalError):
    """The database refused the export (a value or a statement it cannot take): not retried."""


class ServingUnavailable(ServingError, ResourceUnavailable):
    """The database cannot be reached or went away during an export: retried."""


class SchemaChangeError(ServingError, TerminalError):
    """The export would change a served column's type, drop a served column or change the key."""


class DuplicateKeyError(ServingError, TerminalError):
    """The rows to export hold the same key more than once."""


class NullKeyError(ServingError, TerminalError):
    """A key column of the rows to export holds NULL."""


class ServingDeclarationError(ServingError, TerminalError, ValueError):
    """The export itself is ill-declared (an identifier, a type, the key): nothing was attempted."""


class ServingBusy(ServingError, ResourceBusy):
    """A lock on the served table was not granted within the lock timeout (e.g. an idle transaction)."""


@dataclass(frozen=True)
class ExportResult:
    rows: int  # rows in the served table after the export
    inserted: int
    updated: int
    deleted: int


def normalize_type(declared: str) -> str:
    """The canonical spelling of an allowed column type; ValueError for anything else."""
    t = re.sub(r"\s*([(),])\s*", r"\1", " ".join(str(declared).lower().split()))
    if t in _SIMPLE_TYPES:
        return t
    m = _NUMERIC.match(t)
    if m and 1 <= int(m[1]) <= 1000 and int(m[2]) <= int(m[1]):
        return f"numeric({int(m[1])},{int(m[2])})"
    raise ServingDeclarationError(
        f"unsupported column type {declared!r}: use one of {', '.join(sorted(_SIMPLE_TYPES))} or numeric(p,s)"
    )


def _ident(name: object, what: str) -> str:
    if not isinstance(name, str) or not IDENT.match(name):
        raise ServingDeclarationError(f"invalid {what} name {name!r}: must match {IDENT.pattern}")
    if what == "column" and name in POSTGRES_SYSTEM_COLUMNS:
        raise ServingDeclarationError(f"invalid column name {name!r}: it is a PostgreSQL system column")
    return name


@dataclass(frozen=True)
class _Target:
    schema: str
    name: str
    key: tuple[str, ...]
    columns: dict[str, str]  # name -> canonical type, in table order

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def values(self) -> list[str]:
        return [c for c in self.columns if c not in self.key]


def _target(table: pa.Table, schema: str, name: str, key: list[str], column_types: dict[str, str]) -> _Target:
    """Validate everything that can be validated without the database."""
    _ident(schema, "schema")
    _ident(name, "table")
    if not column_types:
        raise ServingDeclarationError(f"{schema}.{name}: column_types is empty")
    columns = {_ident(c, "column"): normalize_type(t) for c, t in column_types.items()}
    if not key:
        raise ServingDeclarationError(f"{schema}.{name}: the key is empty; a served table needs a primary key")
    if len(set(key)) != len(key):
        raise ServingDeclarationError(f"{schema}.{name}: key {key} names a column twice")
    if missing := [k for k in key if k not in columns]:
        raise ServingDeclarationError(
            f"{schema}.{name}: key column(s) {', '.join(map(repr, missing))} not in column_types")
    names = table.column_names
    if len(set(names)) != len(names):
        raise ServingDeclarationError(f"{schema}.{name}: the rows to export have duplicated column names {names}")
    untyped = [c for c in names if c not in columns]
    absent = [c for c in columns if c not in names]
    if untyped or absent:
        raise ServingDeclarationError(
            f"{schema}.{name}: the rows' columns do not match column_types"
            + (f"; without a type: {', '.join(untyped)}" if untyped else "")
            + (f"; typed but absent: {', '.join(absent)}" if absent else "")
        )
    return _Target(schema, name, tuple(key), columns)


def _prepare(table: pa.Table, t: _Target) -> pa.Table:
    """The columns in table order; zoned timestamps in UTC, because pyarrow writes them with their
    zone's offset and PostgreSQL ignores an offset when it reads a ``timestamp`` (UTC wall time)."""
    table = table.select(list(t.columns))
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz not in (None, "UTC"):
            table = table.set_column(i, field.name, table.column(i).cast(pa.timestamp(field.type.unit, tz="UTC")))
    return table


def _redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text


def _pg_message(e: psycopg2.Error) -> str:
    """The server's message and detail (they name the column and value), without the statement."""
    diag = e.diag
    if diag.message_primary:
        parts = [diag.message_primary, diag.message_detail, diag.context]
        return " | ".join(p.strip() for p in parts if p)
    return str(e).strip()


class _CsvStream:
    """A file-like object for ``copy_expert``: renders the table to CSV one batch at a time.

    The next batch is rendered on a worker thread (pyarrow releases the GIL) while the current
    one is sent, so rendering is hidden behind the server's COPY; memory stays at two batches.
    Values are written by pyarrow: strings are always quoted, so an empty string stays an empty
    string and only a real null becomes NULL (an unquoted empty field).
    """

    _OPTIONS = pacsv.WriteOptions(include_header=False)

    def __init__(self, table: pa.Table, batch_rows: int = BATCH_ROWS):
        self._batches = iter(table.to_batches(max_chunksize=batch_rows))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serving-csv")
        self._next: Future[memoryview | None] = self._pool.submit(self._render_next)
        self._buf = memoryview(b"")
        self._pos = 0

    def _render_next(self) -> memoryview | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        out = io.BytesIO()
        pacsv.write_csv(batch, out, self._OPTIONS)
        return out.getbuffer()

    def read(self, size: int = -1) -> bytes:
        while self._pos >= len(self._buf):
            rendered = self._next.result()  # re-raises a rendering error inside COPY: it aborts
            if rendered is None:
                return b""
            self._next = self._pool.submit(self._render_next)
            self._buf, self._pos = rendered, 0
        end = len(self._buf) if size is None or size < 0 else min(self._pos + size, len(self._buf))
        chunk = bytes(self._buf[self._pos : end])
        self._pos = end
        return chunk

    def __enter__(self) -> _CsvStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class ServingDatabase:
    """A PostgreSQL database that serves marts. Holds no connection: each call opens its own."""

    def __init__(self, dsn: str, *, lock_timeout_s: float = 60.0,
                 retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S):
        try:
            params: dict[str, str] | None = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.Error:
            params = None
        if params is None:
            # Raised outside the handler: the parser's message quotes the DSN, which may hold a
            # password, and must not travel along as __context__.
            raise ServingDeclarationError("invalid serving database DSN (not shown: it may hold a password)")
        self._params = params
        self._dsn = dsn
        self._secrets = [v for k, v in self._params.items() if k in _SECRET_PARAMS and v]
        self.lock_timeout_s = lock_timeout_s
        self.retry_delays_s = retry_delays_s

    def __repr__(self) -> str:
        return f"ServingDatabase({self.dsn_for_humans()!r})"

    def dsn_for_humans(self) -> str:
        """The connection string without any password: ``psql "<this>"``."""
        return psycopg2.extensions.make_dsn(**{k: v for k, v in self._params.items() if k not in _SECRET_PARAMS})

    @classmethod
    def local(cls, home: Path) -> ServingDatabase:
        """The embedded server of the local environment (see resources.serving.embedded)."""
        from resources.serving.embedded import start

        return start(Path(home).expanduser().resolve() / "serving" / "pgdata")

    @contextlib.contextmanager
    def connect(self) -> Iterator[psycopg2.extensions.connection]:
        """A new connection, closed on exit; nothing is committed unless the caller commits."""
        defaults = {"application_name": "lake-platform", "connect_timeout": "30"}
        extra = {k: v for k, v in defaults.items() if k not in self._params}
        try:
            conn = psycopg2.connect(self._dsn, **extra)
        except psycopg2.Error as e:
            # libpq names host, port and user, never the password; redact it anyway.
            failure = _redact(str(e).strip(), self._secrets)
        else:
            failure = None
        if failure is not None:
            # Raised outside the handler, so the original exception does not travel as __context__.
            raise ServingUnavailable(f"cannot connect to the serving database ({self.dsn_for_humans()}): {failure}")
        try:
            conn.set_client_encoding("UTF8")
            yield conn
        finally:
            conn.close()

    def row_count(self, schema: str, name: str) -> int:
        relation = sql.Identifier(_ident(schema, "schema"), _ident(name, "table"))
        with self.connect() as conn, conn.cursor() as cur:
            try:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(relation))
            except psycopg2.errors.UndefinedTable:
                raise ServingRefused(f"no table {schema}.{name} in the serving database") from None
            row = cur.fetchone()
            assert row is not None
            return int(row[0])

    def export(
        self, table: pa.Table, *, schema: str, name: str, key: list[str], column_types: dict[str, str]
    ) -> ExportResult:
        """Make ``schema.name`` hold exactly ``table``'s rows, in one transaction (see the module doc)."""
        target = _target(table, schema, name, key, column_types)
        for k in target.key:
            if nulls := table.column(k).null_count:
                raise NullKeyError(f"{target}: key column {k!r} holds {nulls} NULL value(s); nothing was changed")
        prepared = _prepare(table, target)
        started = time.monotonic()
        for attempt, delay in enumerate((*self.retry_delays_s, None), start=1):
            try:
                result = self._export_once(prepared, target)
                break
            except ServingBusy:
                raise
            except ServingUnavailable as e:
                if delay is None:
                    raise ServingUnavailable(
                        f"export to {target}: the serving database was unavailable on {attempt} attempts over "
                        f"{time.monotonic() - started:.0f} s; the served table is unchanged. Last error: {e}"
                    ) from None
                log.warning("export to %s, attempt %d: %s; retrying in %.1f s", target, attempt, e, delay)
                time.sleep(delay * random.uniform(0.75, 1.25))
        log.info("exported %s: %s", target, result)
        return result

    def _export_once(self, table: pa.Table, target: _Target) -> ExportResult:
        with self.connect() as conn:
            try:
                with conn.cursor() as cur:
                    result = self._export(cur, table, target)
                conn.commit()
            except psycopg2.errors.LockNotAvailable as e:
                with contextlib.suppress(psycopg2.Error):
                    conn.rollback()
                raise ServingBusy(f"export to {target}: a lock was not granted within {self.lock_timeout_s:.0f} s "
                                  f"(another session holds the table); the served table is unchanged: "
                                  f"{_pg_message(e)}") from None
            except psycopg2.OperationalError as e:  # the connection went away: nothing was committed
                with contextlib.suppress(psycopg2.Error):
                    conn.rollback()
                raise ServingUnavailable(f"export to {target} was interrupted and rolled back, the served table is "
                                         f"unchanged: {_pg_message(e)}") from None
            except psycopg2.Error as e:
                with contextlib.suppress(psycopg2.Error):
                    conn.rollback()
                raise ServingRefused(
                    f"export to {target} failed and was rolled back, the served table is unchanged: {_pg_message(e)}"
                ) from e
            except BaseException:
                with contextlib.suppress(psycopg2.Error):
                    conn.rollback()
                raise
        return result

    # The steps of an export, all on one cursor inside one transaction.

    def _export(self, cur: psycopg2.extensions.cursor, table: pa.Table, t: _Target) -> ExportResult:
        # Hash joins of a million keys fit in memory; the primary key of a new table is built in one sort.
        cur.execute("SELECT set_config('work_mem', '64MB', true), set_config('maintenance_work_mem', '256MB', true)")
        # One export of a table at a time (two would race on CREATE TABLE and on the diff).
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"lake-platform serving {t}",))
        # Then fail rather than wait forever behind, e.g., an idle psql transaction holding a lock.
        cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(self.lock_timeout_s * 1000)}ms",))
        existing = _existing_table(cur, t)
        if existing is None:
            inserted, updated, deleted = self._load_new(cur, table, t), 0, 0
        else:
            self._migrate(cur, t, *existing)
            inserted, updated, deleted = self._load_diff(cur, table, t)
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(t.table))
        rows = int(cur.fetchone()[0])
        if rows != table.num_rows:
            # Duplicates that the diff filtered out, or that ON CONFLICT DO NOTHING skipped.
            _raise_duplicates(cur, _TMP if existing is not None else t.table, t)
            raise ServingRefused(f"{t}: the served table would hold {rows} rows, the export has {table.num_rows}")
        return ExportResult(rows=rows, inserted=inserted, updated=updated, deleted=deleted)

    def _load_new(self, cur: psycopg2.extensions.cursor, table: pa.Table, t: _Target) -> int:
        """A table that does not exist yet: COPY straight into it, then build its primary key."""
        if not _schema_exists(cur, t.schema):
            # Exports of two tables of a new schema would both create it: the second waits here
            # for the first to commit, then finds it.
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"lake-platform schema {t.schema}",))
            if not _schema_exists(cur, t.schema):
                # Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even
                # if the schema exists, which a serving role in Aurora may not have.
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(t.schema)))
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(t.table, _column_defs(t, not_null_keys=False)))
        # FREEZE (allowed: the table is new in this transaction) spares the first readers and vacuum
        # a rewrite of every page to set hint bits.
        copied = _copy(cur, table, t.table, t, freeze=True)
        cur.execute("SAVEPOINT loaded")
        try:
            # One sort instead of a million index insertions; it also finds duplicated keys.
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                    t.table, sql.SQL(", ").join(map(sql.Identifier, t.key))
                )
            )
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT loaded")
            _raise_duplicates(cur, t.table, t)
            raise
        log.info("created %s (%d rows)", t, copied)
        return copied

    def _migrate(self, cur: psycopg2.extensions.cursor, t: _Target, columns: dict[str, str], pk: list[str]) -> None:
        """Add new columns; refuse anything that would break the table's readers."""
        changed = [
            f"{c} is {columns[c]}, the export has {typ}"
            for c, typ in t.columns.items()
            if c in columns and columns[c] != _CATALOG_SPELLING.get(typ, typ)
        ]
        dropped = [c for c in columns if c not in t.columns]
        problems = []
        if changed:
            problems.append("changed column type(s): " + "; ".join(changed))
        if dropped:
            problems.append("served column(s) missing from the export: " + ", ".join(dropped))
        if set(pk) != set(t.key):
            problems.append(f"the key is ({', '.join(pk) or 'none'}), the export's is ({', '.join(t.key)})")
        if problems:
            raise SchemaChangeError(
                f"cannot export to {t}: {'; '.join(problems)}. This would break the table's readers: "
                "migrate or drop the served table by hand first. Nothing was changed."
            )
        added = [c for c in t.columns if c not in columns]
        if added:
            cur.execute(
                sql.SQL("ALTER TABLE {} {}").format(
                    t.table,
                    sql.SQL(", ").join(
                        sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(c), sql.SQL(t.columns[c])) for c in added
                    ),
                )
            )
            log.info("%s: added column(s) %s", t, ", ".join(added))

    def _load_diff(self, cur: psycopg2.extensions.cursor, table: pa.Table, t: _Target) -> tuple[int, int, int]:
        """An existing table: COPY into a temporary table, then write only the differences."""
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(_TMP, _column_defs(t, not_null_keys=True))
        )
        _copy(cur, table, _TMP, t)
        cur.execute(sql.SQL("ANALYZE {}").format(_TMP))  # temporary tables are never auto-analyzed
        cur.execute("SAVEPOINT loaded")
        try:
            return self._write_diff(cur, t)
        except psycopg2.errors.CardinalityViolation:  # the same key twice in one ON CONFLICT DO UPDATE
            cur.execute("ROLLBACK TO SAVEPOINT loaded")
            _raise_duplicates(cur, _TMP, t)
            raise

    def _write_diff(self, cur: psycopg2.extensions.cursor, t: _Target) -> tuple[int, int, int]:
        """Upsert the new and changed rows, delete the rows whose key is gone: (inserted, updated, deleted).

        One statement, so both tables are read once: a full join finds the differences (unchanged
        rows never reach ON CONFLICT, which would lock, i.e. write, every one of them), then
        INSERT ... ON CONFLICT DO UPDATE ... WHERE IS DISTINCT FROM (still the authority on what
        is written) and a DELETE by row address run on that snapshot. They touch disjoint keys.
        Aliases start with "_", which no validated column name does.
        """
        ident = sql.Identifier
        cols = sql.SQL(", ").join(ident(c) for c in t.columns)

        def row(alias: str) -> sql.Composed:
            return sql.SQL("ROW({})").format(sql.SQL(", ").join(ident(alias, c) for c in t.values))

        k0 = ident(t.key[0])  # keys are NOT NULL on both sides: a NULL one means "no match"
        differs = sql.SQL("s.{0} IS NULL OR d.{0} IS NULL").format(k0)
        if t.values:
            differs = sql.SQL("{} OR {} IS DISTINCT FROM {}").format(differs, row("d"), row("s"))
            on_conflict = sql.SQL("DO UPDATE SET {} WHERE {} IS DISTINCT FROM {}").format(
                sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(ident(c)) for c in t.values),
                row("t"),
                row("excluded"),
            )
        else:  # every column is in the key: nothing can be updated
            on_conflict = sql.SQL("DO NOTHING")
        cur.execute(
            sql.SQL(
                "WITH _diff AS MATERIALIZED ("
                "  SELECT s.*, d.ctid AS _address, s.{k0} IS NULL AS _gone"
                "  FROM {tmp} s FULL JOIN {target} d ON {join} WHERE {differs}"
                "), _written AS ("
                "  INSERT INTO {target} AS t ({cols}) SELECT {cols} FROM _diff WHERE NOT _gone"
                "  ON CONFLICT ({keys}) {on_conflict}"
                "  RETURNING t.xmax = 0 AS _inserted"
                "), _deleted AS ("
                "  DELETE FROM {target} t USING _diff WHERE _diff._gone AND t.ctid = _diff._address RETURNING 1"
                ") SELECT (SELECT count(*) FILTER (WHERE _inserted) FROM _written),"
                " (SELECT count(*) FILTER (WHERE NOT _inserted) FROM _written), (SELECT count(*) FROM _deleted)"
            ).format(
                k0=k0,
                tmp=_TMP,
                target=t.table,
                join=sql.SQL(" AND ").join(sql.SQL("d.{0} = s.{0}").format(ident(k)) for k in t.key),
                differs=differs,
                cols=cols,
                keys=sql.SQL(", ").join(ident(k) for k in t.key),
                on_conflict=on_conflict,
            )
        )
        # xmax = 0 only on a freshly inserted row version; an updated one carries our row lock.
        inserted, updated, deleted = cur.fetchone()
        return int(inserted), int(updated), int(deleted)


def _column_defs(t: _Target, *, not_null_keys: bool) -> sql.Composed:
    # Types are canonical spellings from the allow-list, so composing them as SQL is safe.
    return sql.SQL(", ").join(
        sql.SQL("{} {}{}").format(
            sql.Identifier(c), sql.SQL(typ), sql.SQL(" NOT NULL" if not_null_keys and c in t.key else "")
        )
        for c, typ in t.columns.items()
    )


def _schema_exists(cur: psycopg2.extensions.cursor, schema: str) -> bool:
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return cur.fetchone() is not None


def _existing_table(cur: psycopg2.extensions.cursor, t: _Target) -> tuple[dict[str, str], list[str]] | None:
    """(column -> type as format_type spells it, primary key columns), or None if there is no table."""
    cur.execute(
        "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (t.schema, t.name),
    )
    found = cur.fetchone()
    if found is None:
        return None
    oid, kind = found
    if kind not in ("r", "p"):
        raise SchemaChangeError(f"cannot export to {t}: it exists and is not a table (relkind {kind!r})")
    cur.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (oid,),
    )
    columns = dict(cur.fetchall())
    cur.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = %s AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
        (oid,),
    )
    return columns, [r[0] for r in cur.fetchall()]


def _copy(
    cur: psycopg2.extensions.cursor, table: pa.Table, relation: sql.Composable, t: _Target, *, freeze: bool = False
) -> int:
    stmt = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv{})").format(
        relation,
        sql.SQL(", ").join(sql.Identifier(c) for c in t.columns),
        sql.SQL(", FREEZE" if freeze else ""),
    )
    with _CsvStream(table) as stream:
        cur.copy_expert(stmt, stream, size=COPY_READ_SIZE)
    return cur.rowcount


def _raise_duplicates(cur: psycopg2.extensions.cursor, relation: sql.Composable, t: _Target) -> None:
    """Raise DuplicateKeyError naming the duplicated key(s) in ``relation``; return if there are none."""
    keys = sql.SQL(", ").join(map(sql.Identifier, t.key))
    cur.execute(
        sql.SQL(
            "SELECT {}, count(*), count(*) OVER () FROM {} GROUP BY {} HAVING count(*) > 1 ORDER BY {} LIMIT 3"
        ).format(sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in t.key), relation, keys, keys)
    )
    found = cur.fetchall()
    if not found:
        return
    n = len(t.key)
    examples = "; ".join(f"({', '.join(t.key)})=({', '.join(map(str, r[:n]))}) appears {r[n]} times" for r in found)
    raise DuplicateKeyError(
        f"duplicate key in the rows to export to {t}: {examples} ({found[0][n + 1]} duplicated key(s) in all). "
        "Nothing was changed."
    )
