"""Compile a dataset's contract (``core.contract_spec``) into polars and pandera: one code path for
every dataset and every engine.

:func:`compile_contract` turns the declaration into

- per column, polars expressions that parse its raw text into its type, one per accepted format
  (a value that parses in none is a row-level violation), and an expression that names the rule a
  value broke when it did not parse: ``type(int16)``, ``out_of_range(int16)`` (a valid integer
  outside the type), ``scale(decimal(12,2))`` (more decimal places than the scale keeps),
  ``precision(decimal(12,2))`` (more digits than fit), ``precision(timestamp)`` (digits below a
  microsecond, in a value a format with fractional seconds reads otherwise). No value is ever
  rounded, truncated or coerced into its type;
- every other rule as one polars expression that is true where a row passes (``not_nullable``,
  ranges, allowed values, patterns, ``finite`` for floats, and the row rules), and
- a ``pandera.polars.DataFrameSchema`` whose checks are built from those same expressions, so
  the engine's vectorised row split and pandera's verdict cannot disagree.

Every expression is evaluated once on a probe frame while compiling, so a contract that compiles
stages: a rule comparing a string with a number, a row rule that is no condition, a strict
``CAST`` that some value of its column would break, an ``allowed`` list of the wrong type or a
regular expression polars cannot run is an error here, naming the column or rule.
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field
from decimal import Decimal

import pandera.polars as pa
import polars as pl

from core.contract_spec import ColumnSpec, ContractSpec, snake_case
from core.errors import ContractError
from core.rules import (
    FALSE_WORDS,
    GRAMMAR,
    TRUE_WORDS,
    RuleSpec,
    column_rule_specs,
    parse_formats,
    portable_contract,
    row_rule_spec,
)
from core.types import INTEGER_RANGES, ContractType

__all__ = ["CompiledContract", "ContractSpec", "HeaderMatch", "Rule", "compile_contract", "snake_case"]

_INTEGER, _DECIMAL, _SUB_MICROSECOND = GRAMMAR["integer"], GRAMMAR["decimal"], GRAMMAR["sub_microsecond"]


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
    """One rule of a contract, as one polars expression that is true where a row passes."""

    name: str  # as pandera names it: in_range(1.0, 265.0), isin([...]), not_nullable, or the rule's name
    columns: tuple[str, ...]
    ok: pl.Expr
    row_rule: bool = False  # a declared row rule (over several columns), not a column rule
    spec: RuleSpec | None = None  # the description it was compiled from (what other engines compile)

    @property
    def label(self) -> str:
        return ", ".join(self.columns)


@dataclass
class CompiledContract:
    dataset: str
    spec: ContractSpec
    schema: pa.DataFrameSchema
    parse: dict[str, list[pl.Expr]]  # target column → parse expressions over its raw text, by preference
    unparsed_rule: dict[str, pl.Expr]  # target column → the rule a raw value broke when it did not parse
    rules: list[Rule] = field(default_factory=list)  # every rule except parsing and uniqueness

    @property
    def columns(self) -> list[str]:
        return list(self.spec.columns)

    @property
    def row_rules(self) -> list[Rule]:
        return [r for r in self.rules if r.row_rule]

    def pii_labels(self) -> list[str]:
        """Failure labels whose values messages mask: PII columns, row rules over one, and the
        unique key when it holds one (quarantine itself keeps the values: a restricted zone)."""
        labels = [c for c, col in self.spec.columns.items() if col.pii]
        labels += [r.label for r in self.row_rules if set(r.columns) & set(labels)]
        if set(self.spec.unique_key) & set(labels):
            labels.append(", ".join(self.spec.unique_key))
        return labels

    def portable(self) -> dict:
        """The contract as JSON for an engine in another environment (``core.rules``)."""
        return portable_contract(self.dataset, self.spec, [r.spec for r in self.rules if r.spec is not None])

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
        missing = [c.source or n for n, c in self.spec.columns.items() if n not in found and c.required]
        optional = [n for n, c in self.spec.columns.items() if n not in found and not c.required]
        return HeaderMatch(mapping, missing, unexpected, duplicated, optional)


def _decimal_digits(text: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(integer digits without leading zeros, decimal places without trailing zeros) of a number's text."""
    integer = text.str.extract(GRAMMAR["integer_digits"], 1).fill_null("").str.len_chars()
    fraction = text.str.extract(GRAMMAR["fraction_digits"], 1).fill_null("").str.len_chars()
    return integer, fraction


def _parse_exprs(name: str, col: ColumnSpec) -> list[pl.Expr]:
    """Expressions that parse the raw text of a column, in order of preference: the first is
    applied to every value, each next one only to values the previous ones missed (so a file in
    the usual format pays for one parse; surrounding spaces cost only where they occur)."""
    raw = pl.col(name)
    ct = col.contract_type
    if col.type == "string":
        return [raw]
    if col.type == "boolean":
        low = raw.str.strip_chars().str.to_lowercase()
        return [
            pl.when(low.is_in(TRUE_WORDS)).then(True).when(low.is_in(FALSE_WORDS)).then(False)
            .otherwise(None).alias(name)
        ]
    if ct.is_decimal:
        # Cast only what fits exactly: polars would round 1.234 into decimal(12,2) without a word.
        text = raw.str.strip_chars()
        integer, fraction = _decimal_digits(text)
        fits = text.str.contains(_DECIMAL) & (integer <= ct.precision - ct.scale) & (fraction <= ct.scale)
        return [pl.when(fits).then(text.cast(ct.polars(), strict=False)).otherwise(None).alias(name)]
    exprs = []
    for text in (raw, raw.str.strip_chars()):
        if col.type in ("timestamp", "date"):
            for f in parse_formats(col):
                # cache=False: values are mostly distinct, and the cache doubles the parse cost.
                parsed = (text.str.to_datetime(f, time_unit="us", strict=False, cache=False) if col.type == "timestamp"
                          else text.str.to_date(f, strict=False, cache=False))
                if col.type == "timestamp" and "f" in f.replace("%%", ""):
                    # chrono would drop nanoseconds silently; such values are refused instead.
                    parsed = pl.when(text.str.contains(_SUB_MICROSECOND)).then(None).otherwise(parsed)
                exprs.append(parsed.alias(name))
        else:
            exprs.append(text.cast(col.dtype, strict=False).alias(name))
    return exprs


def _unparsed_rule(name: str, col: ColumnSpec) -> pl.Expr:
    """For a raw value that none of the parse expressions accepted: the name of the rule it broke."""
    ct = col.contract_type
    text = pl.col(name).str.strip_chars()
    formats = f" as {' or '.join(col.formats)}" if col.formats else ""
    generic = pl.repeat(pl.lit(f"type({col.type}{formats})"), pl.len())  # one per value, as the others
    if ct.is_integer:
        return pl.when(text.str.contains(_INTEGER)).then(pl.lit(f"out_of_range({col.type})")).otherwise(generic)
    if ct.is_decimal:
        integer, fraction = _decimal_digits(text)
        number = text.str.contains(_DECIMAL)
        return (pl.when(number & (fraction > ct.scale)).then(pl.lit(f"scale({col.type})"))
                .when(number & (integer > ct.precision - ct.scale)).then(pl.lit(f"precision({col.type})"))
                .otherwise(generic))
    fractional = [f for f in parse_formats(col) if "f" in f.replace("%%", "")] if col.type == "timestamp" else []
    if fractional:
        # Sub-microsecond digits are the only fault when the value parses without them; a value
        # no format reads (or a format without fractional seconds) is a type error.
        micro = text.str.replace(r"([.,][0-9]{6})[0-9]+", "${1}")
        parses = pl.any_horizontal([micro.str.to_datetime(f, time_unit="us", strict=False, cache=False).is_not_null()
                                    for f in fractional])
        return pl.when(text.str.contains(_SUB_MICROSECOND) & parses).then(pl.lit("precision(timestamp)")) \
            .otherwise(generic)
    return generic


def polars_rule(spec: RuleSpec) -> pl.Expr:
    """A rule description as a polars expression, true where a row passes."""
    if spec.row_rule:
        return pl.sql_expr(spec.params[0]).fill_null(True)  # a rule over a NULL passes
    c = pl.col(spec.columns[0])
    p = spec.params
    ok = {
        "not_nullable": lambda: c.is_not_null(),
        "finite": lambda: c.is_finite(),
        "in_range": lambda: c.is_between(p[0], p[1]),
        "at_least": lambda: c >= p[0],
        "at_most": lambda: c <= p[0],
        "isin": lambda: c.is_in(list(p)),
        "str_matches": lambda: c.str.contains(p[0]),
    }[spec.kind]()
    return ok if spec.kind == "not_nullable" else ok | c.is_null()


def _rule(spec: RuleSpec) -> Rule:
    return Rule(spec.name, spec.columns, polars_rule(spec), row_rule=spec.row_rule, spec=spec)


def column_rules(name: str, col: ColumnSpec) -> list[Rule]:
    """A column's rules. Like pandera's built-in checks, a null passes every rule but nullability."""
    return [_rule(r) for r in column_rule_specs(name, col)]


def _as_check(rule: Rule) -> pa.Check:
    def check(data: pa.PolarsData, _ok: pl.Expr = rule.ok) -> pl.LazyFrame:
        return data.lazyframe.select(_ok.alias("passed"))

    return pa.Check(check, name=rule.name)


def _extreme(ct: ContractType) -> object:
    """A value of the type that a rule must survive: text that is no number, the largest number."""
    if ct.is_integer:
        return INTEGER_RANGES[ct.name][1]
    if ct.is_decimal:
        return Decimal(("9" * (ct.precision - ct.scale) or "0") + ("." + "9" * ct.scale if ct.scale else ""))
    return {"string": "x", "float64": sys.float_info.max, "boolean": True, "date": dt.date.max,
            "timestamp": dt.datetime.max}[ct.name]


def _first_paragraph(e: Exception) -> str:
    """A polars error on one line: its first paragraph, without the carets under a regex."""
    lines = (line.strip() for line in str(e).split("\n\n")[0].splitlines())
    return " ".join(line for line in lines if line and set(line) != {"^"})


def _probe(dataset: str, spec: ContractSpec, parse: dict[str, list[pl.Expr]], unparsed: dict[str, pl.Expr],
           rules: list[Rule]) -> None:
    """Evaluate every expression once, so type errors surface when the contract is compiled,
    not when the first file is staged. Rules are evaluated on a null and on an extreme value of
    each column, so a strict CAST that some value would break is refused here too."""
    raw = pl.DataFrame({n: ["1", None] for n in spec.columns}, schema=dict.fromkeys(spec.columns, pl.String))
    typed = pl.DataFrame({n: [None, _extreme(c.contract_type)] for n, c in spec.columns.items()},
                         schema={n: c.dtype for n, c in spec.columns.items()})
    for name in spec.columns:
        try:
            heights = [raw.select(expr).height for expr in [*parse[name], unparsed[name]]]
        except Exception as e:  # polars raises several types
            raise ContractError(f"contract {dataset}: column {name!r} cannot be parsed: {e}") from None
        if set(heights) != {raw.height}:
            raise ContractError(f"contract {dataset}: column {name!r}: a parse expression does not give one value "
                                "per row; the compiled contract is inconsistent")
    for rule in rules:
        what = f"rule {rule.name!r}" if rule.row_rule else f"column {rule.label!r}, rule {rule.name}"
        try:
            out = typed.select(rule.ok).to_series()
        except Exception as e:
            first = _first_paragraph(e)
            hint = " (a CAST that can fail stops the whole file: use TRY_CAST)" if "conversion from" in first else ""
            raise ContractError(f"contract {dataset}: {what} cannot be evaluated on the declared types: "
                                f"{first}{hint}") from None
        if out.dtype != pl.Boolean:
            raise ContractError(f"contract {dataset}: {what} is not a condition: it gives {out.dtype}, "
                                "not true or false")


def compile_contract(dataset: str, spec: ContractSpec) -> CompiledContract:
    per_column: dict[str, list[Rule]] = {}
    for name, col in spec.columns.items():
        try:
            per_column[name] = column_rules(name, col)
        except (TypeError, ValueError, pl.exceptions.PolarsError) as e:  # e.g. `allowed` values of mixed types
            raise ContractError(f"contract {dataset}: column {name!r}: its rules cannot be built: "
                                f"{str(e).splitlines()[0]}") from None
    row_rules = [_rule(row_rule_spec(r.name, r.expr, tuple(sorted(set(pl.sql_expr(r.expr).meta.root_names())))))
                 for r in spec.rules]
    parse = {name: _parse_exprs(name, col) for name, col in spec.columns.items()}
    unparsed = {name: _unparsed_rule(name, col) for name, col in spec.columns.items()}
    rules = [r for name in spec.columns for r in per_column[name]] + row_rules
    _probe(dataset, spec, parse, unparsed, rules)
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
    return CompiledContract(dataset, spec, schema, parse, unparsed, rules)
