"""The statements of the Redshift warehouse, as pure functions: (SQL, parameters) pairs.

Every identifier is validated (core.names) and double-quoted; every value is a bound ``%s``
parameter, except where Redshift takes no parameter: COPY's ``FROM`` and ``IAM_ROLE``. Those two
are checked against strict patterns (an S3 URI of safe characters, a role ARN) and only then
written as literals, so nothing from a catalog row or a declaration can change the statement.

The staging table of a dataset is ``staging_<insight_zone>.<dataset>``: the contract columns,
``_source_file``, ``_source_line`` (the order of the staged Parquet files), then
``_partition_key``, which says which delivered file each row belongs to. A partition is loaded
by COPYing its Parquet object into a per-load TEMP table (exactly the file's columns, so COPY's
positional mapping is right), then, in the same transaction, deleting the partition's rows,
inserting the load table's rows with the key, and recording the load in ``_platform_loads``.

The DDL leaves out DISTSTYLE/SORTKEY on purpose: Redshift then chooses them (AUTO), and the very
same statements run on the PostgreSQL that proves the merge offline. No TRUNCATE anywhere:
in Redshift it commits the open transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

from core.errors import ConfigError, InvalidName
from core.names import (
    NAME,
    PARTITION_KEY,
    ROLE_ARN,
    S3_BUCKET,
    SOURCE_FILE,
    SOURCE_LINE,
    check_ident,
    quote_ident,
    schema_name,
)
from core.types import ContractType, parse_type

Statement = tuple[str, tuple[object, ...]]
Columns = Mapping[str, "ContractType | str"]

LOADS_TABLE = "_platform_loads"  # one per staging schema: which version of which partition is loaded
SYSTEM_COLUMN_TYPES = {SOURCE_FILE: "varchar(1024)", SOURCE_LINE: "bigint"}
PARTITION_KEY_TYPE = "varchar(256)"
URI_TYPE = "varchar(2048)"

# s3://<bucket>/<key>.parquet; the key of safe characters only (no quote, backslash, space, '..').
S3_PARQUET_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9.-]{3,63})/(?P<key>(?!.*\.\.)[A-Za-z0-9_./@=+-]{1,1000}\.parquet)$")


def _q(name: str) -> str:
    """A quoted identifier the platform builds itself (``_load_x``): its parts are validated."""
    if not re.fullmatch(r"_[a-z][a-z0-9_]{0,61}", name):
        raise InvalidName(f"invalid system table name {name!r}")
    return '"' + name + '"'


def staging_relation(insight_zone: str, dataset: str) -> tuple[str, str]:
    """(schema, table) of a dataset's staging table: ``staging_<insight_zone>``, ``<dataset>``."""
    for value, what in ((insight_zone, "insight zone"), (dataset, "dataset")):
        if not isinstance(value, str) or not NAME.match(value):
            raise InvalidName(f"invalid {what} name {value!r}: must match {NAME.pattern}")
    return schema_name("staging", insight_zone), check_ident(dataset, "table")


def load_table(table: str) -> str:
    """The quoted name of the per-load TEMP table of ``table`` (session-private, unqualified)."""
    return _q("_load_" + check_ident(table, "table"))


def _typed(columns: Columns) -> list[tuple[str, str]]:
    """(quoted column, redshift type) of the contract columns then the system columns."""
    if not columns:
        raise ConfigError("a staging table needs at least one contract column")
    out = []
    for name, declared in columns.items():
        t = declared if isinstance(declared, ContractType) else parse_type(declared)
        out.append((quote_ident(check_ident(name, "column")), t.redshift()))
    return out + [(f'"{n}"', t) for n, t in SYSTEM_COLUMN_TYPES.items()]


def file_columns(columns: Columns) -> list[str]:
    """Quoted names of the columns of a staged Parquet file, in its order."""
    return [c for c, _ in _typed(columns)]


def create_schema(schema: str) -> Statement:
    return f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}", ()


def create_staging_table(schema: str, table: str, columns: Columns) -> Statement:
    cols = [f"{c} {t}" for c, t in _typed(columns)] + [f'"{PARTITION_KEY}" {PARTITION_KEY_TYPE} NOT NULL']
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(schema)}.{quote_ident(table)} ({', '.join(cols)})", ()


def staging_columns(columns: Columns) -> list[str]:
    """Names of a staging table's columns, in order (contract, system, partition key)."""
    return [c.strip('"') for c, _ in _typed(columns)] + [PARTITION_KEY]


def grant_readers(schema: str, table: str, columns: Columns, group: str, hidden: frozenset[str]) -> list[Statement]:
    """The analysts' group reads every column of the staging table but ``hidden`` (its PII
    columns): column grants. Table-wide grants and grants on hidden columns are revoked first, in
    the same transaction, so a column that became PII stops being readable. Groups exist in
    Redshift and PostgreSQL alike (``TO GROUP g``); ``cli infra grants`` creates them, not this."""
    t, g = f"{quote_ident(schema)}.{quote_ident(table)}", quote_ident(check_ident(group, "group"))
    names = staging_columns(columns)  # validated: contract columns are identifiers, the rest the platform's
    readable = ", ".join(f'"{c}"' for c in names if c not in hidden)
    out = [(f"GRANT USAGE ON SCHEMA {quote_ident(schema)} TO GROUP {g}", ()),
           (f"REVOKE SELECT ON TABLE {t} FROM GROUP {g}", ())]
    if hidden & set(names):
        cols = ", ".join(f'"{c}"' for c in names if c in hidden)
        out.append((f"REVOKE SELECT ({cols}) ON TABLE {t} FROM GROUP {g}", ()))
    out.append((f"GRANT SELECT ({readable}) ON TABLE {t} TO GROUP {g}", ()))
    return out


def create_loads_table(schema: str) -> Statement:
    return (f"CREATE TABLE IF NOT EXISTS {quote_ident(schema)}.{_q(LOADS_TABLE)} ("
            f"\"dataset\" varchar(64) NOT NULL, \"{PARTITION_KEY}\" {PARTITION_KEY_TYPE} NOT NULL, "
            f"\"staging_uri\" {URI_TYPE} NOT NULL, \"rows\" bigint NOT NULL, \"loaded_at\" timestamp NOT NULL)"), ()


def create_load_table(table: str, columns: Columns) -> Statement:
    """The per-load table: exactly the Parquet file's columns; TEMP, so dropped with the session
    at the latest, and created inside the load's transaction, so a rollback removes it too."""
    cols = ", ".join(f"{c} {t}" for c, t in _typed(columns))
    return f"CREATE TEMP TABLE {load_table(table)} ({cols})", ()


def check_s3_uri(uri: object) -> str:
    if not isinstance(uri, str) or not (m := S3_PARQUET_URI.match(uri)) or not S3_BUCKET.match(m["bucket"]):
        raise InvalidName(f"invalid COPY source {uri!r}: must be s3://<bucket>/<key>.parquet of [A-Za-z0-9_./@=+-]")
    return uri


def check_role_arn(arn: object) -> str:
    if not isinstance(arn, str) or not ROLE_ARN.match(arn):
        raise ConfigError(f"invalid COPY role {arn!r}: must match {ROLE_ARN.pattern}")
    return arn


def copy_from_s3(table: str, uri: str, role_arn: str) -> Statement:
    """COPY one staged Parquet object into the load table; Redshift binds no parameter here, so
    both literals are validated first (and cannot contain a quote)."""
    source, role = check_s3_uri(uri), check_role_arn(role_arn)
    return f"COPY {load_table(table)} FROM '{source}' IAM_ROLE '{role}' FORMAT AS PARQUET", ()


def delete_partition_rows(schema: str, table: str, partition_key: str) -> Statement:
    return (f"DELETE FROM {quote_ident(schema)}.{quote_ident(table)} WHERE \"{PARTITION_KEY}\" = %s",
            (_key(partition_key),))


def insert_from_load(schema: str, table: str, columns: Columns, partition_key: str) -> Statement:
    cols = ", ".join(file_columns(columns))
    return (f"INSERT INTO {quote_ident(schema)}.{quote_ident(table)} ({cols}, \"{PARTITION_KEY}\") "
            f"SELECT {cols}, %s FROM {load_table(table)}", (_key(partition_key),))


def drop_load_table(table: str) -> Statement:
    return f"DROP TABLE IF EXISTS {load_table(table)}", ()


def forget_load(schema: str, table: str, partition_key: str) -> Statement:
    return (f"DELETE FROM {quote_ident(schema)}.{_q(LOADS_TABLE)} WHERE \"dataset\" = %s AND \"{PARTITION_KEY}\" = %s",
            (check_ident(table, "table"), _key(partition_key)))


def record_load(schema: str, table: str, partition_key: str, staging_uri: str, rows: int,
                loaded_at: dt.datetime) -> Statement:
    return (f"INSERT INTO {quote_ident(schema)}.{_q(LOADS_TABLE)} "
            f"(\"dataset\", \"{PARTITION_KEY}\", \"staging_uri\", \"rows\", \"loaded_at\") "
            "VALUES (%s, %s, %s, %s, %s)",
            (check_ident(table, "table"), _key(partition_key), check_s3_uri(staging_uri), int(rows), loaded_at))


def loaded_partitions(schema: str, table: str) -> Statement:
    """(partition key, staging uri) of every partition whose rows are in the table."""
    return (f"SELECT \"{PARTITION_KEY}\", \"staging_uri\" FROM {quote_ident(schema)}.{_q(LOADS_TABLE)} "
            "WHERE \"dataset\" = %s", (check_ident(table, "table"),))


def merge_partition(schema: str, table: str, columns: Columns, partition_key: str, staging_uri: str,
                    rows: int, loaded_at: dt.datetime) -> list[Statement]:
    """After the COPY, in the same transaction: replace the partition's rows with the load
    table's, record the load, drop the load table. Re-running it gives the same rows."""
    return [
        delete_partition_rows(schema, table, partition_key),
        insert_from_load(schema, table, columns, partition_key),  # its row count is checked
        forget_load(schema, table, partition_key),
        record_load(schema, table, partition_key, staging_uri, rows, loaded_at),
        drop_load_table(table),
    ]


def remove_partition(schema: str, table: str, partition_key: str) -> list[Statement]:
    """A superseded or held partition: its rows leave the table, and the record of its load."""
    return [delete_partition_rows(schema, table, partition_key), forget_load(schema, table, partition_key)]


def _key(partition_key: object) -> str:
    # Bound as a parameter anyway; the check keeps odd values out of the table and the ledger.
    if not isinstance(partition_key, str) or not re.fullmatch(r"[A-Za-z0-9._@-]{1,256}", partition_key):
        raise InvalidName(f"invalid partition key {partition_key!r}")
    return partition_key


# The PII hashing key (resources/pii.py): Redshift has no session variables, so the dbt macro
# ``redshift__keyed_hash`` reads it from this one-row table, readable only by its owner (the
# platform's warehouse user, which dbt runs as). The key is a bound parameter, never SQL text.
PII_KEY_SCHEMA, PII_KEY_TABLE = "platform_secrets", "pii_key"


def provision_pii_key(key: str) -> list[Statement]:
    schema, table = quote_ident(PII_KEY_SCHEMA), f"{quote_ident(PII_KEY_SCHEMA)}.{quote_ident(PII_KEY_TABLE)}"
    return [(f"CREATE SCHEMA IF NOT EXISTS {schema}", ()),
            (f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC", ()),
            (f"CREATE TABLE IF NOT EXISTS {table} (pii_key varchar(256) NOT NULL)", ()),
            (f"DELETE FROM {table}", ()),
            (f"INSERT INTO {table} (pii_key) VALUES (%s)", (key,))]
