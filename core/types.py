"""Contract types and what each becomes in every engine the platform talks to: the one table.

A contract declares ``string``, ``int16``, ``int32``, ``int64``, ``float64``, ``boolean``,
``date``, ``timestamp`` (microseconds, no time zone) or ``decimal(p,s)`` (1 ≤ p ≤ 38, 0 ≤ s ≤ p).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import polars as pl
import pyarrow as pa

from core.errors import ConfigError

_DECIMAL = re.compile(r"^decimal\(\s*(\d{1,2})\s*,\s*(\d{1,2})\s*\)$")
MAX_DECIMAL_PRECISION = 38  # Arrow's decimal128, Redshift and Spark

# name → (arrow, polars, duckdb, postgres, redshift, spark)
_SIMPLE: dict[str, tuple[pa.DataType, pl.DataType, str, str, str, str]] = {
    "string": (pa.string(), pl.String(), "VARCHAR", "text", "varchar(65535)", "string"),
    "int16": (pa.int16(), pl.Int16(), "SMALLINT", "smallint", "smallint", "smallint"),
    "int32": (pa.int32(), pl.Int32(), "INTEGER", "integer", "integer", "int"),
    "int64": (pa.int64(), pl.Int64(), "BIGINT", "bigint", "bigint", "bigint"),
    "float64": (pa.float64(), pl.Float64(), "DOUBLE", "double precision", "double precision", "double"),
    "boolean": (pa.bool_(), pl.Boolean(), "BOOLEAN", "boolean", "boolean", "boolean"),
    "date": (pa.date32(), pl.Date(), "DATE", "date", "date", "date"),
    "timestamp": (pa.timestamp("us"), pl.Datetime("us"), "TIMESTAMP", "timestamp", "timestamp", "timestamp"),
}
SIMPLE_TYPES = tuple(_SIMPLE)
INTEGER_RANGES = {"int16": (-(2**15), 2**15 - 1), "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class ContractType:
    name: str  # the simple name, or "decimal"
    precision: int = 0
    scale: int = 0

    def __str__(self) -> str:
        return f"decimal({self.precision},{self.scale})" if self.is_decimal else self.name

    @property
    def is_decimal(self) -> bool:
        return self.name == "decimal"

    @property
    def is_integer(self) -> bool:
        return self.name in INTEGER_RANGES

    @property
    def is_numeric(self) -> bool:
        return self.is_integer or self.is_decimal or self.name == "float64"

    def arrow(self) -> pa.DataType:
        return pa.decimal128(self.precision, self.scale) if self.is_decimal else _SIMPLE[self.name][0]

    def polars(self) -> pl.DataType:
        return pl.Decimal(self.precision, self.scale) if self.is_decimal else _SIMPLE[self.name][1]

    def duckdb(self) -> str:
        return f"DECIMAL({self.precision},{self.scale})" if self.is_decimal else _SIMPLE[self.name][2]

    def postgres(self) -> str:
        return f"numeric({self.precision},{self.scale})" if self.is_decimal else _SIMPLE[self.name][3]

    def redshift(self) -> str:
        return f"numeric({self.precision},{self.scale})" if self.is_decimal else _SIMPLE[self.name][4]

    def spark(self) -> str:
        return f"decimal({self.precision},{self.scale})" if self.is_decimal else _SIMPLE[self.name][5]

    def portable_sql(self) -> str:
        """A spelling DuckDB, PostgreSQL and Redshift all accept (dbt source ``data_type``)."""
        return self.postgres()


@cache
def parse_type(declared: str) -> ContractType:
    """``"decimal(12,2)"`` → ContractType; ConfigError (a ValueError) naming the allowed types otherwise."""
    if declared in _SIMPLE:
        return ContractType(declared)
    m = _DECIMAL.match(declared)
    if m:
        p, s = int(m.group(1)), int(m.group(2))
        if not 1 <= p <= MAX_DECIMAL_PRECISION or s > p:
            raise ConfigError(f"type {declared!r}: decimal(p,s) needs 1 <= p <= {MAX_DECIMAL_PRECISION} and s <= p")
        return ContractType("decimal", p, s)
    raise ConfigError(f"unknown type {declared!r}; use one of {', '.join(_SIMPLE)} or decimal(p,s)")


def glue_type(arrow: pa.DataType) -> str:
    """The Glue Data Catalog (Hive) type of a Parquet column read as ``arrow``: what Athena, Glue
    and Redshift Spectrum read it as. Polars writes ``large_string`` / ``large_list``, so the
    large and view variants map like the plain ones."""
    t = arrow
    if pa.types.is_dictionary(t):
        return glue_type(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    for test, name in ((pa.types.is_int64, "bigint"), (pa.types.is_int32, "int"), (pa.types.is_int16, "smallint"),
                       (pa.types.is_int8, "tinyint"), (pa.types.is_uint8, "smallint"), (pa.types.is_uint16, "int"),
                       (pa.types.is_uint32, "bigint"), (pa.types.is_float64, "double"),
                       (pa.types.is_float32, "float"), (pa.types.is_boolean, "boolean"), (pa.types.is_date, "date"),
                       (pa.types.is_timestamp, "timestamp")):
        if test(t):
            return name
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_fixed_size_list(t):
        return f"array<{glue_type(t.value_type)}>"
    if pa.types.is_map(t):
        return f"map<{glue_type(t.key_type)},{glue_type(t.item_type)}>"
    if pa.types.is_struct(t):
        fields = (t.field(i) for i in range(t.num_fields))
        return "struct<" + ",".join(f"{f.name}:{glue_type(f.type)}" for f in fields) + ">"
    raise ConfigError(f"no Glue type for the Arrow type {t} (uint64, null, time, duration and interval columns "
                      "have no Hive equivalent)")


def contract_glue_type(declared: str) -> str:
    """``"decimal(12,2)"`` → ``decimal(12,2)``, ``"int32"`` → ``int``: a contract type in the Glue catalog."""
    return glue_type(parse_type(declared).arrow())
