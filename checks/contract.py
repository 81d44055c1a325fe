"""Compile a dataset's contract, declared in the zone YAML, into pandera and polars.

One code path for every dataset: the YAML declares target columns (type, source column, formats,
nullability, allowed values, ranges, patterns, PII), row rules (SQL boolean expressions such as
``dropoff_at >= pickup_at``) and a uniqueness key. :func:`compile_contract` turns that into

- polars expressions that parse the raw text of each column into its type, one per accepted
  format (a value that parses in none is a row-level ``type`` violation, reported with the raw
  value), and
- a ``pandera.polars.DataFrameSchema`` holding every other rule, validated lazily so that each
  failing row is reported once per failed rule, with its index for the quarantine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pandera.polars as pa
import polars as pl
from pydantic import Field, field_validator, model_validator

from resources.yaml_config import Strict

DECIMAL = re.compile(r"^decimal\((\d{1,2}),\s*(\d{1,2})\)$")
SIMPLE_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "int16": pl.Int16(),
    "int32": pl.Int32(),
    "int64": pl.Int64(),
    "float64": pl.Float64(),
    "boolean": pl.Boolean(),
    "date": pl.Date(),
    "timestamp": pl.Datetime("us"),
}
DEFAULT_FORMATS = {
    "timestamp": ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f"],
    "date": ["%Y-%m-%d"],
}
TRUE_WORDS = ["true", "t", "yes", "y", "1"]
FALSE_WORDS = ["false", "f", "no", "n", "0"]
COLUMN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def snake_case(name: str) -> str:
    """``PULocationID`` → ``pu_location_id``, ``tpep_pickup_datetime`` unchanged, ``"Zone"`` → ``zone``."""
    s = name.strip().strip('"').lstrip("\ufeff")
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"[^0-9a-zA-Z]+", "_", s)
    return s.strip("_").lower()


class ColumnSpec(Strict):
    type: str
    source: str | None = None  # header in delivered files; default: the column's own name
    description: str = ""
    required: bool = True  # must the column be present in every file?
    nullable: bool = True
    formats: list[str] | None = None  # timestamp/date parse formats, tried in order
    allowed: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    pii: bool = False

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v not in SIMPLE_TYPES and not DECIMAL.match(v):
            raise ValueError(f"unknown type {v!r}; use one of {', '.join(SIMPLE_TYPES)} or decimal(p,s)")
        return v

    @model_validator(mode="after")
    def _rules_fit_type(self) -> ColumnSpec:
        if self.formats is not None and self.type not in ("timestamp", "date"):
            raise ValueError("formats apply only to timestamp and date columns")
        if (self.min is not None or self.max is not None) and self.type in ("string", "boolean"):
            raise ValueError(f"min/max do not apply to {self.type} columns")
        if self.pattern is not None and self.type != "string":
            raise ValueError("pattern applies only to string columns")
        if self.pattern is not None:
            re.compile(self.pattern)
        return self

    @property
    def dtype(self) -> pl.DataType:
        if m := DECIMAL.match(self.type):
            return pl.Decimal(int(m.group(1)), int(m.group(2)))
        return SIMPLE_TYPES[self.type]


class RowRule(Strict):
    name: str
    expr: str  # a SQL boolean expression over target columns; NULL counts as passing
    description: str = ""


class ContractSpec(Strict):
    columns: dict[str, ColumnSpec]
    rules: list[RowRule] = []
    unique_key: list[str] = []
    unexpected_columns: Literal["reject", "ignore"] = "reject"
    empty_file: Literal["reject", "accept"] = "reject"
    max_quarantine_ratio: float = Field(default=0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> ContractSpec:
        for name in self.columns:
            if not COLUMN_NAME.match(name):
                raise ValueError(f"column name {name!r} must be snake_case ({COLUMN_NAME.pattern})")
        unknown = [k for k in self.unique_key if k not in self.columns]
        if unknown:
            raise ValueError(f"unique_key names unknown columns: {', '.join(unknown)}")
        sources: dict[str, str] = {}
        for name, col in self.columns.items():
            key = snake_case(col.source or name)
            if key in sources:
                raise ValueError(f"columns {sources[key]!r} and {name!r} read the same source column")
            sources[key] = name
        for rule in self.rules:
            try:
                expr = pl.sql_expr(rule.expr)
            except Exception as e:  # polars raises several types for bad SQL
                raise ValueError(f"rule {rule.name!r}: cannot parse {rule.expr!r}: {e}") from None
            used = set(expr.meta.root_names())
            if not used <= set(self.columns):
                unknown_cols = ", ".join(sorted(used - set(self.columns)))
                raise ValueError(f"rule {rule.name!r} uses unknown columns: {unknown_cols}")
        return self


@dataclass(frozen=True)
class HeaderMatch:
    """How a delivered file's header maps onto the contract."""

    mapping: dict[str, str]  # source header → target column
    missing: list[str]  # required target columns (named by their source) not in the file
    unexpected: list[str]  # headers the contract does not know
    duplicated: list[str]  # headers that appear twice after normalisation
    absent_optional: list[str]  # optional target columns not in the file (filled with nulls)

    @property
    def structural_errors(self) -> bool:
        return bool(self.missing or self.duplicated)


@dataclass(frozen=True)
class Rule:
    """One rule of a contract, as one polars expression that is true where a row passes.

    The same expression backs the pandera check and the engine's vectorised row split, so the
    two cannot disagree."""

    name: str  # as pandera names it: in_range(1.0, 265.0), isin([...]), not_nullable, or the rule's name
    columns: tuple[str, ...]
    ok: pl.Expr

    @property
    def label(self) -> str:
        return ", ".join(self.columns)


@dataclass
class CompiledContract:
    dataset: str
    spec: ContractSpec
    schema: pa.DataFrameSchema
    parse: dict[str, list[pl.Expr]]  # target column → parse expressions over its raw text, by preference
    rules: list[Rule] = field(default_factory=list)  # every rule except parsing (type) and uniqueness

    @property
    def columns(self) -> list[str]:
        return list(self.spec.columns)

    def polars_schema(self) -> dict[str, pl.DataType]:
        return {n: c.dtype for n, c in self.spec.columns.items()}

    def match_header(self, header: list[str]) -> HeaderMatch:
        by_source = {snake_case(c.source or n): n for n, c in self.spec.columns.items()}
        mapping: dict[str, str] = {}
        seen: dict[str, str] = {}
        unexpected, duplicated = [], []
        for h in header:
            key = snake_case(h)
            if key in seen:
                duplicated.append(h)
                continue
            seen[key] = h
            if key in by_source:
                mapping[h] = by_source[key]
            else:
                unexpected.append(h if h.strip() else "<unnamed>")
        found = set(mapping.values())
        missing = [
            c.source or n for n, c in self.spec.columns.items() if n not in found and c.required
        ]
        optional = [n for n, c in self.spec.columns.items() if n not in found and not c.required]
        return HeaderMatch(mapping, missing, unexpected, duplicated, optional)


def _parse_exprs(name: str, col: ColumnSpec) -> list[pl.Expr]:
    """Expressions that parse the raw text of a column, in order of preference: the first is
    applied to every value, each next one only to values the previous ones missed (so a file in
    the usual format pays for one parse; surrounding spaces cost only where they occur)."""
    raw = pl.col(name)
    if col.type == "string":
        return [raw]
    if col.type == "boolean":
        low = raw.str.strip_chars().str.to_lowercase()
        return [
            pl.when(low.is_in(TRUE_WORDS)).then(True).when(low.is_in(FALSE_WORDS)).then(False)
            .otherwise(None).alias(name)
        ]
    exprs = []
    for text in (raw, raw.str.strip_chars()):
        if col.type == "timestamp":
            # cache=False: timestamps are mostly distinct, and the cache doubles the parse cost.
            exprs += [text.str.to_datetime(f, time_unit="us", strict=False, cache=False).alias(name)
                      for f in col.formats or DEFAULT_FORMATS["timestamp"]]
        elif col.type == "date":
            exprs += [text.str.to_date(f, strict=False, cache=False).alias(name)
                      for f in col.formats or DEFAULT_FORMATS["date"]]
        else:
            exprs.append(text.cast(col.dtype, strict=False).alias(name))
    return exprs


def _num(v: float) -> float:
    return float(v)


def column_rules(name: str, col: ColumnSpec) -> list[Rule]:
    """A column's rules. Like pandera's built-in checks, a null passes every rule but nullability."""
    c = pl.col(name)
    rules = []
    if not col.nullable:
        rules.append(Rule("not_nullable", (name,), c.is_not_null()))
    if col.min is not None and col.max is not None:
        rules.append(Rule(f"in_range({_num(col.min)}, {_num(col.max)})", (name,),
                          c.is_between(col.min, col.max) | c.is_null()))
    elif col.min is not None:
        rules.append(Rule(f"greater_than_or_equal_to({_num(col.min)})", (name,), (c >= col.min) | c.is_null()))
    elif col.max is not None:
        rules.append(Rule(f"less_than_or_equal_to({_num(col.max)})", (name,), (c <= col.max) | c.is_null()))
    if col.allowed is not None:
        rules.append(Rule(f"isin({col.allowed})", (name,), c.is_in(col.allowed) | c.is_null()))
    if col.pattern is not None:
        rules.append(Rule(f"str_matches('{col.pattern}')", (name,), c.str.contains(col.pattern) | c.is_null()))
    return rules


def _as_check(rule: Rule) -> pa.Check:
    def check(data: pa.PolarsData, _ok: pl.Expr = rule.ok) -> pl.LazyFrame:
        return data.lazyframe.select(_ok.alias("passed"))

    return pa.Check(check, name=rule.name)


def compile_contract(dataset: str, spec: ContractSpec) -> CompiledContract:
    per_column = {name: column_rules(name, col) for name, col in spec.columns.items()}
    row_rules = [
        Rule(r.name, tuple(sorted(set(pl.sql_expr(r.expr).meta.root_names()))),
             pl.sql_expr(r.expr).fill_null(True))  # a rule over a NULL passes: nullability is its own rule
        for r in spec.rules
    ]
    schema = pa.DataFrameSchema(
        {
            name: pa.Column(
                col.dtype,
                nullable=col.nullable,
                checks=[_as_check(r) for r in per_column[name] if r.name != "not_nullable"],
                description=col.description or None,
                metadata={"pii": col.pii} if col.pii else None,
            )
            for name, col in spec.columns.items()
        },
        checks=[_as_check(r) for r in row_rules],
        name=dataset,
        strict=True,
        ordered=False,
    )
    parse = {name: _parse_exprs(name, col) for name, col in spec.columns.items()}
    rules = [r for name in spec.columns for r in per_column[name]] + row_rules
    return CompiledContract(dataset, spec, schema, parse, rules)
