"""Identifiers, table names, partition keys and the system columns: one owner for each.

Everything from configuration that ends up in SQL or in a path is validated here against a strict
pattern first, then quoted where it is used.
"""

from __future__ import annotations

import re

from core.errors import InvalidName

# SQL identifiers (schemas, tables, columns): lower snake_case, within PostgreSQL's 63 bytes.
IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Insight zones and datasets: they become parts of identifiers (``staging_<zone>``), so shorter.
NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
# Environment names (``platform/environments/<name>.yaml``).
ENV_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
# AWS identifiers from the environment files: strict, so nothing odd reaches an ARN, a policy or SQL.
S3_BUCKET = re.compile(r"^(?!xn--)(?!.*-s3alias$)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
S3_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
AWS_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$")
AWS_ACCOUNT = re.compile(r"^[0-9]{12}$")
KMS_ALIAS = re.compile(r"^alias/[A-Za-z0-9/_-]{1,250}$")
RESOURCE_PREFIX = re.compile(r"^[a-z][a-z0-9-]{2,30}[a-z0-9]$")  # names of roles, keys, secrets
SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
SQS_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")  # standard queues
ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,64}$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
# PostgreSQL refuses these as column names.
POSTGRES_SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid"})

LAKE_ZONES = ("landing", "staging", "quarantine")
MODELLED_ZONES = ("ods", "analytics")

# System columns of every staging table: the delivered file and the line each row came from.
SOURCE_FILE, SOURCE_LINE = "_source_file", "_source_line"
# The delivery (partition key) a staged row belongs to, as every staging table exposes it: the
# local catalog's views derive it from the file's path, Glue has it as the partition column, the
# Redshift warehouse stores it. Incremental models key on it (what a delivery added or took away).
PARTITION_KEY = "_partition_key"
# Quarantine's extra columns: what failed, why, and the raw text of a record that could not be split.
Q_COLUMNS, Q_RULES, Q_ERRORS, Q_RAW = "_failed_columns", "_failed_rules", "_errors", "_raw_record"
SYSTEM_COLUMNS = (SOURCE_FILE, SOURCE_LINE, PARTITION_KEY, Q_COLUMNS, Q_RULES, Q_ERRORS, Q_RAW)

HASH_CHARS = 16  # 64 bits of sha256 in a partition key
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def check_ident(name: object, what: str = "identifier") -> str:
    if not isinstance(name, str) or not IDENT.match(name):
        raise InvalidName(f"invalid {what} name {name!r}: must match {IDENT.pattern}")
    return name


def quote_ident(name: str) -> str:
    """A validated identifier in double quotes (valid in DuckDB, PostgreSQL and Redshift)."""
    return '"' + check_ident(name) + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def asset_path(zone: str, insight_zone: str, name: str) -> list[str]:
    """``[staging, mobility, staging_yellow_trips]``: an asset's key. Dagster's lineage graph draws
    only the last part, so it carries the zone: the same dataset in landing, staging and quarantine,
    or a mart and its served table, never look alike there."""
    return [zone, insight_zone, f"{zone}_{name}"]


def name_in_path(path: list[str] | tuple[str, ...]) -> str:
    """The dataset, model or table an asset key names: ``yellow_trips`` for the path above."""
    zone, _, last = path
    if not last.startswith(f"{zone}_"):
        raise InvalidName(f"{'/'.join(path)} is not a platform asset key ([zone, insight_zone, <zone>_<name>])")
    return last.removeprefix(f"{zone}_")


def schema_name(zone: str, insight_zone: str) -> str:
    """``staging_mobility``: the schema of a zone's tables for one insight zone."""
    return check_ident(f"{zone}_{insight_zone}", "schema")


def table_name(zone: str, insight_zone: str, dataset: str) -> str:
    """``staging_mobility.yellow_trips``."""
    return f"{schema_name(zone, insight_zone)}.{check_ident(dataset, 'table')}"


def partition_key(file_name: str, sha256: str) -> str:
    """``<file name>@<first 16 hex of sha256>``: readable, traceable, unique per content."""
    safe = _UNSAFE.sub("_", file_name).replace("..", "_")
    return f"{safe}@{sha256[:HASH_CHARS]}"


def split_partition_key(key: str) -> tuple[str, str]:
    name, _, digest = key.rpartition("@")
    if not name or len(digest) != HASH_CHARS:
        raise InvalidName(f"{key!r} is not a landing partition key (<file>@<{HASH_CHARS} hex>)")
    return name, digest
