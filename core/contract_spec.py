"""A dataset's contract as declared in the zone YAML (``contract:``): columns, row rules, key.

This is the declaration only; ``checks.contract`` compiles it into polars expressions and a
pandera schema. Validation here is meant to be complete: a contract that loads compiles and
stages (``checks.contract`` probes every rule once to make sure).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from core.names import IDENT
from core.types import ContractType, parse_type
from core.yaml_config import Strict

TEMPORAL = ("timestamp", "date")


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
    pattern: str | None = None  # a regular expression (Rust syntax, as polars evaluates it)
    pii: bool = False
    allow_non_finite: bool = False  # float64 only: accept NaN, inf and -inf instead of quarantining them

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        parse_type(v)  # raises ValueError with the allowed types
        return v

    @model_validator(mode="after")
    def _rules_fit_type(self) -> ColumnSpec:
        if self.formats is not None:
            if self.type not in TEMPORAL:
                raise ValueError("formats apply only to timestamp and date columns")
            if not self.formats:
                raise ValueError("formats is empty: list at least one format, or leave it out for the defaults")
        if (self.min is not None or self.max is not None) and not self.contract_type.is_numeric:
            raise ValueError(f"min/max do not apply to {self.type} columns")
        for what, bound in (("min", self.min), ("max", self.max)):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"{what} {bound} is not a finite number")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if self.pattern is not None and self.type != "string":
            raise ValueError("pattern applies only to string columns")
        if self.allow_non_finite and self.type != "float64":
            raise ValueError("allow_non_finite applies only to float64 columns")
        if self.allowed is not None and not self.allowed:
            raise ValueError("allowed is empty: no value could pass")
        return self

    @property
    def contract_type(self) -> ContractType:
        return parse_type(self.type)

    @property
    def dtype(self) -> pl.DataType:
        return self.contract_type.polars()


class RowRule(Strict):
    name: str
    expr: str  # a SQL boolean expression over target columns; NULL counts as passing
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not IDENT.match(v):
            raise ValueError(f"rule name {v!r} must be snake_case ({IDENT.pattern})")
        return v


class ContractSpec(Strict):
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    rules: list[RowRule] = []
    unique_key: list[str] = []
    unexpected_columns: Literal["reject", "ignore"] = "reject"
    empty_file: Literal["reject", "accept"] = "reject"
    max_quarantine_ratio: float = Field(default=0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> ContractSpec:
        for name in self.columns:
            if not IDENT.match(name):
                raise ValueError(f"column name {name!r} must be snake_case ({IDENT.pattern})")
        unknown = [k for k in self.unique_key if k not in self.columns]
        if unknown:
            raise ValueError(f"unique_key names unknown columns: {', '.join(unknown)}")
        if len(set(self.unique_key)) != len(self.unique_key):
            raise ValueError(f"unique_key names a column twice: {self.unique_key}")
        sources: dict[str, str] = {}
        for name, col in self.columns.items():
            key = snake_case(col.source or name)
            if not key:
                raise ValueError(f"column {name!r}: source {col.source!r} has no letters or digits")
            if key in sources:
                raise ValueError(f"columns {sources[key]!r} and {name!r} read the same source column")
            sources[key] = name
        seen_rules: set[str] = set()
        for rule in self.rules:
            if rule.name in seen_rules:
                raise ValueError(f"two rules are named {rule.name!r}")
            seen_rules.add(rule.name)
            try:
                expr = pl.sql_expr(rule.expr)
            except Exception as e:  # polars raises several types for bad SQL
                raise ValueError(f"rule {rule.name!r}: cannot parse {rule.expr!r}: {e}") from None
            used = set(expr.meta.root_names())
            if not used:
                raise ValueError(f"rule {rule.name!r} reads no column: {rule.expr!r}")
            if not used <= set(self.columns):
                unknown_cols = ", ".join(sorted(used - set(self.columns)))
                raise ValueError(f"rule {rule.name!r} uses unknown columns: {unknown_cols}")
        return self
