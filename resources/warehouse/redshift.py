"""The AWS warehouse: Amazon Redshift (provisioned or serverless), which dbt builds with
dbt-redshift, and into which the platform loads the published staging partitions.

``sync_partitions`` makes a dataset's staging table ``staging_<zone>.<dataset>`` hold exactly
the rows of its published partitions (the catalog's word): each published partition not yet
loaded is COPYed from its staged Parquet object and merged in ONE transaction (delete its rows,
insert the loaded ones with ``_partition_key``, record the load), so readers see a partition's
old rows or its new ones, never both, never none; a failure leaves the table as it was. Held and
superseded partitions (and any the catalog no longer knows) lose their rows; a partition
superseded by one loaded in the same sync leaves in that load's transaction, so a re-delivery
replaces its predecessor atomically. Re-running a sync changes nothing.

The connection is psycopg2 (Redshift speaks the PostgreSQL protocol), used directly rather than
through dagster-aws's ``RedshiftClientResource``: that resource takes the password as Dagster
config (visible in run config), opens a connection per call, and commits when a query fails,
which would break the one-transaction merge. Here the password comes from a callable at connect
time (Secrets Manager in AWS) and never reaches a log, a repr or returned metadata.

Only the COPY differs between Redshift and the PostgreSQL that proves this offline: a
:class:`CopyRunner` either runs the real ``COPY ... IAM_ROLE ... FORMAT AS PARQUET`` (Redshift
reads S3 itself) or, as a documented stand-in, reads the Parquet object and streams it with
``COPY ... FROM STDIN``. The load table, the merge and the transaction are the same code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NoReturn

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import SecretStr

from core.access import analyst_group, pii_columns
from core.errors import IntegrityError, PlatformError, ResourceBusy, ResourceUnavailable, SecretMissing, TerminalError
from core.names import quote_ident
from core.zones import Dataset
from resources.catalog.base import Catalog, PartitionRecord
from resources.secrets.base import SecretStore
from resources.warehouse import redshift_sql as rs
from resources.warehouse.base import Warehouse

Connection = psycopg2.extensions.connection


class WarehouseRefused(TerminalError):
    """Redshift refused a statement (a type, a value, a permission): not retried."""


@dataclass(frozen=True)
class Credentials:
    """The loader's user and password, from the warehouse secret; the password never prints."""

    user: str
    password: str = field(repr=False)


def secret_credentials(store: SecretStore, secret_name: str) -> Callable[[], Credentials]:
    """The loader's credentials from a JSON secret with ``username`` and ``password`` (the format
    Secrets Manager uses for Redshift), read at each call so a rotated password is picked up."""

    def read() -> Credentials:
        fields = store.get_fields(secret_name)
        missing = [k for k in ("username", "password") if not (k in fields and fields[k].get_secret_value())]
        if missing:
            raise SecretMissing(f"secret {secret_name!r} has no {' or '.join(missing)} (its value is not shown)")
        return Credentials(fields["username"].get_secret_value(), fields["password"].get_secret_value())

    return read


class CopyRunner(ABC):
    """Fills the (empty) load table from one staged Parquet object, inside the load's transaction."""

    @abstractmethod
    def copy(self, cur: psycopg2.extensions.cursor, table: str, columns: rs.Columns, uri: str) -> None: ...


class RedshiftCopy(CopyRunner):
    """Production: Redshift reads the object from S3 itself, assuming ``role_arn``."""

    def __init__(self, role_arn: str):
        self.role_arn = rs.check_role_arn(role_arn)

    def copy(self, cur: psycopg2.extensions.cursor, table: str, columns: rs.Columns, uri: str) -> None:
        cur.execute(*rs.copy_from_s3(table, uri, self.role_arn))


class PostgresStdinCopy(CopyRunner):
    """Stand-in for PostgreSQL (tests, offline proofs): PostgreSQL cannot read S3, so this reads
    the Parquet object through ``open_input(uri)`` (a binary file-like; e.g. from a local
    directory or moto's S3) and sends it as CSV with ``COPY ... FROM STDIN``. The URI and the
    file's columns are checked as Redshift's COPY would need them."""

    def __init__(self, open_input: Callable[[str], AbstractContextManager[IO[bytes]]]):
        self.open_input = open_input

    def copy(self, cur: psycopg2.extensions.cursor, table: str, columns: rs.Columns, uri: str) -> None:
        with self.open_input(rs.check_s3_uri(uri)) as f:
            data = pq.read_table(f)
        expected = [c.strip('"') for c in rs.file_columns(columns)]
        if data.column_names != expected:
            raise IntegrityError(f"{uri}: columns {data.column_names} do not match the staging table's {expected}")
        buf = io.BytesIO()
        pacsv.write_csv(data, buf, pacsv.WriteOptions(include_header=False))  # strings quoted: '' stays ''
        buf.seek(0)
        cur.copy_expert(f"COPY {rs.load_table(table)} ({', '.join(rs.file_columns(columns))}) "
                        "FROM STDIN WITH (FORMAT csv)", buf)


@dataclass(frozen=True)
class SyncResult:
    schema: str
    table: str
    loaded: tuple[str, ...]  # partition keys whose rows were (re)loaded
    removed: tuple[str, ...]  # partition keys whose rows were deleted
    unchanged: tuple[str, ...]  # published partitions already loaded
    rows_loaded: int


class RedshiftWarehouse(Warehouse):
    def __init__(self, *, host: str, database: str, credentials: Callable[[], Credentials], copy_role_arn: str,
                 dbt_target: str, port: int = 5439, sslmode: str = "verify-full", connect_timeout_s: int = 30,
                 connect: Callable[[], Connection] | None = None, copy_runner: CopyRunner | None = None,
                 pii_key: Callable[[], SecretStr] | None = None, ca_bundle: str | None = None):
        self.host, self.port, self.database = host, int(port), database
        self.dbt_target = dbt_target
        self.sslmode, self.connect_timeout_s = sslmode, connect_timeout_s
        # The CA that verify-full checks the server against (Redshift's: the Amazon trust bundle);
        # None leaves it to libpq (PGSSLROOTCERT, else ~/.postgresql/root.crt).
        self.ca_bundle = ca_bundle
        self._credentials = credentials  # called at connect time: a rotated secret is picked up
        self._connect = connect or self._connect_psycopg2
        self.copy_runner = copy_runner or RedshiftCopy(copy_role_arn)
        self._pii_key = pii_key  # read at sync time from the secret store, like the credentials

    def __repr__(self) -> str:
        return f"RedshiftWarehouse({self.host!r}, {self.database!r})"

    # -- dbt ------------------------------------------------------------------------------------

    def dbt_environment(self, run_dir: Path) -> dict[str, str]:
        creds = self._credentials()
        # dbt scrubs DBT_ENV_SECRET_* values from its logs and artifacts.
        return {"PLATFORM_WAREHOUSE_HOST": self.host, "PLATFORM_WAREHOUSE_PORT": str(self.port),
                "PLATFORM_WAREHOUSE_DATABASE": self.database, "PLATFORM_WAREHOUSE_USER": creds.user,
                "DBT_ENV_SECRET_PLATFORM_WAREHOUSE_PASSWORD": creds.password}

    def dbt_failure(self, log_text: str) -> PlatformError | None:
        """A transient error when dbt failed on contention or a lost connection, not on a model."""
        low = log_text.lower()
        if m := _DBT_BUSY.search(low):
            return ResourceBusy(f"dbt could not run on the warehouse {self.host}: {m.group(0)}")
        if m := _DBT_UNAVAILABLE.search(low):
            return ResourceUnavailable(f"dbt could not reach the warehouse {self.host}: {m.group(0)}")
        return None

    # -- reads ----------------------------------------------------------------------------------

    def read_table(self, schema: str, table: str) -> pa.Table:
        relation = f"{quote_ident(schema)}.{quote_ident(table)}"
        with self._session(f"reading {schema}.{table}") as conn, conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {relation}")
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})

    def row_counts(self, relations: Mapping[str, tuple[str, str]]) -> dict[str, int]:
        if not relations:
            return {}
        out: dict[str, int] = {}
        with self._session("counting rows") as conn, conn.cursor() as cur:
            for name, (schema, table) in relations.items():
                cur.execute(f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(table)}")
                row = cur.fetchone()
                out[name] = int(row[0]) if row else 0
        return out

    # -- loading the staging tables -------------------------------------------------------------

    def sync_staging(self, catalog: Catalog, datasets: Sequence[Dataset]) -> None:
        if self._pii_key is not None:
            self.provision_pii_key(self._pii_key())
        for ds in datasets:
            records = catalog.partitions(ds.insight_zone, ds.name)
            if records:
                columns = {name: col.contract_type for name, col in ds.spec.contract.columns.items()}
                readers = (analyst_group(ds.insight_zone), pii_columns(ds))
                self.sync_partitions(ds.insight_zone, ds.name, records, columns, readers=readers)

    def provision_pii_key(self, key: SecretStr) -> None:
        """The key table ``redshift__keyed_hash`` reads (one transaction; the key a bound value)."""
        with self._session("provisioning the PII key table") as conn:
            self._transaction(conn, "platform_secrets.pii_key", rs.provision_pii_key(key.get_secret_value()))

    def sync_partitions(self, insight_zone: str, dataset: str, records: Sequence[PartitionRecord],
                        columns: rs.Columns, *, readers: tuple[str, frozenset[str]] | None = None) -> SyncResult:
        """Make ``staging_<insight_zone>.<dataset>`` hold exactly the published partitions' rows;
        ``readers``: the zone's analysts' group and the columns it may not select (core/access.py)."""
        schema, table = rs.staging_relation(insight_zone, dataset)
        what = f"{schema}.{table}"
        for r in records:
            if (r.version.insight_zone, r.version.dataset) != (insight_zone, dataset):
                raise IntegrityError(f"{what}: partition {r.version.partition_key} belongs to "
                                     f"{r.version.insight_zone}.{r.version.dataset}")
        with self._session(f"syncing {what}") as conn:
            grants = rs.grant_readers(schema, table, columns, *readers) if readers else []
            self._transaction(conn, what, [rs.create_schema(schema), rs.create_staging_table(schema, table, columns),
                                           rs.create_loads_table(schema), *grants])
            with conn.cursor() as cur:
                cur.execute(*rs.loaded_partitions(schema, table))
                loaded = {key: uri for key, uri in cur.fetchall()}
            conn.commit()

            published = {r.version.partition_key: r for r in records if r.state == "published"}
            to_load = sorted((r for k, r in published.items() if loaded.get(k) != r.version.staging_uri),
                             key=lambda r: (r.version.delivered_at_ns, r.version.partition_key))
            to_remove = sorted(k for k in loaded if k not in published)
            # A partition superseded by one loaded now leaves in that load's transaction.
            superseded_by = {r.version.partition_key: r.superseded_by for r in records if r.state == "superseded"}
            with_load: dict[str, list[str]] = {}
            alone = []
            for key in to_remove:
                successor = superseded_by.get(key)
                if successor is not None and any(r.version.partition_key == successor for r in to_load):
                    with_load.setdefault(successor, []).append(key)
                else:
                    alone.append(key)

            for key in alone:
                self._transaction(conn, f"{what} removing {key}", rs.remove_partition(schema, table, key))
            rows = 0
            for r in to_load:
                rows += self._load(conn, schema, table, columns, r, with_load.get(r.version.partition_key, []))
        unchanged = tuple(sorted(k for k, r in published.items() if loaded.get(k) == r.version.staging_uri))
        return SyncResult(schema, table, loaded=tuple(r.version.partition_key for r in to_load),
                          removed=tuple(to_remove), unchanged=unchanged, rows_loaded=rows)

    def _load(self, conn: Connection, schema: str, table: str, columns: rs.Columns, record: PartitionRecord,
              replaces: list[str]) -> int:
        v = record.version
        what = f"{schema}.{table} partition {v.partition_key} ({v.staging_uri})"
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with _atomic(conn, f"loading {what}") as cur:
            cur.execute(*rs.create_load_table(table, columns))
            self.copy_runner.copy(cur, table, columns, v.staging_uri)
            for old in replaces:
                for stmt in rs.remove_partition(schema, table, old):
                    cur.execute(*stmt)
            delete, insert, *rest = rs.merge_partition(schema, table, columns, v.partition_key, v.staging_uri,
                                                       v.rows_staged, now)
            cur.execute(*delete)
            cur.execute(*insert)
            if cur.rowcount != v.rows_staged:
                raise IntegrityError(f"{what}: {cur.rowcount} rows loaded, the catalog says {v.rows_staged}; "
                                     "nothing was changed")
            for stmt in rest:
                cur.execute(*stmt)
        return v.rows_staged

    def _transaction(self, conn: Connection, what: str, statements: list[rs.Statement]) -> None:
        with _atomic(conn, what) as cur:
            for stmt in statements:
                cur.execute(*stmt)

    # -- connections ----------------------------------------------------------------------------

    def _connect_psycopg2(self) -> Connection:
        creds = self._credentials()
        try:
            return psycopg2.connect(host=self.host, port=self.port, dbname=self.database, user=creds.user,
                                    password=creds.password, sslmode=self.sslmode,
                                    **({"sslrootcert": self.ca_bundle} if self.ca_bundle else {}),
                                    connect_timeout=self.connect_timeout_s, application_name="lake-platform")
        except psycopg2.Error as e:
            # libpq names host, port and user, not the password; redact it anyway.
            failure = str(e).strip().replace(creds.password, "***") if creds.password else str(e).strip()
        # Raised outside the handler: the original exception does not travel along as __context__.
        raise ResourceUnavailable(f"cannot connect to the warehouse {self.host}:{self.port}/{self.database}: {failure}")

    @contextmanager
    def _session(self, what: str) -> Iterator[Connection]:
        try:
            conn = self._connect()
        except psycopg2.Error as e:
            _raise_translated(e, f"connecting to the warehouse {self.host}/{self.database} for {what}")
        try:
            yield conn
        except psycopg2.Error as e:
            _rollback(conn)
            _raise_translated(e, what)
        finally:
            conn.close()


@contextmanager
def _atomic(conn: Connection, what: str) -> Iterator[psycopg2.extensions.cursor]:
    """One transaction: committed when the block ends, rolled back (and translated) when it raises."""
    try:
        with conn.cursor() as cur:
            yield cur
        conn.commit()
    except BaseException as e:
        _rollback(conn)
        if isinstance(e, psycopg2.Error):
            _raise_translated(e, what)
        raise


def _rollback(conn: Connection) -> None:
    with contextlib.suppress(psycopg2.Error):  # a lost connection has nothing to roll back
        conn.rollback()


# What dbt-redshift logs when a retry can help (Redshift's error 1023, lock waits, a lost connection).
_DBT_BUSY = re.compile(r"serializable isolation violation[^\n]*|could not obtain lock[^\n]*|deadlock detected[^\n]*")
_DBT_UNAVAILABLE = re.compile(r"(could not connect to server|connection refused|connection timed out|"
                              r"ssl syscall error|server closed the connection unexpectedly|"
                              r"connection to server at [^\n]* failed)[^\n]*")
_BUSY = (psycopg2.errors.SerializationFailure, psycopg2.errors.LockNotAvailable, psycopg2.errors.DeadlockDetected)


def _raise_translated(e: psycopg2.Error, doing: str) -> NoReturn:
    text = (getattr(e, "pgerror", None) or str(e)).strip()
    if isinstance(e, _BUSY) or "serializable isolation violation" in text.lower():  # Redshift's error 1023
        raise ResourceBusy(f"warehouse busy while {doing}: {text}") from e
    if isinstance(e, psycopg2.OperationalError | psycopg2.InterfaceError):
        raise ResourceUnavailable(f"warehouse unavailable while {doing}: {text}") from e
    if isinstance(e, psycopg2.errors.UndefinedObject) and "analyst_" in text:
        raise WarehouseRefused(f"the warehouse refused {doing}: {text}. The analysts' groups are created by an "
                               "administrator with the SQL of `python -m cli infra grants --env <env> "
                               "--database warehouse`") from e
    raise WarehouseRefused(f"the warehouse refused {doing}: {text}") from e
