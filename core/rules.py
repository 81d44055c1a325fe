"""A contract's rules as plain descriptions: the one source every engine compiles them from.

``checks.contract`` turns each :class:`RuleSpec` into a polars expression (the Arrow engine and
pandera's polars schema); ``engine.spark.expressions`` turns the same descriptions into Spark
column expressions. Names are pandera's (``in_range(1.0, 265.0)``, ``isin([...])``), so a
quarantined row names the same rule whichever engine staged it.

:func:`portable_contract` is what a Spark job receives: JSON only, so the job's own environment
needs neither polars nor this project's pins.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from core.contract_spec import ColumnSpec, ContractSpec

Kind = Literal["not_nullable", "finite", "in_range", "at_least", "at_most", "isin", "str_matches", "row"]

# Parse formats (chrono's spelling, as polars reads them) when a temporal column declares none.
DEFAULT_FORMATS = {
    "timestamp": ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f"],
    "date": ["%Y-%m-%d"],
}
TRUE_WORDS = ["true", "t", "yes", "y", "1"]
FALSE_WORDS = ["false", "f", "no", "n", "0"]
# The text every engine accepts as a value (regular expressions that polars and Java read alike).
GRAMMAR: dict[str, Any] = {
    # ASCII digits only: the regex crate's \d also matches other scripts' digits, which no cast reads.
    "integer": r"^[+-]?[0-9]+$",
    "decimal": r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$",
    "integer_digits": r"^[+-]?0*([0-9]*)",  # a number's integer digits without leading zeros
    "fraction_digits": r"\.([0-9]*?)0*$",  # its decimal places without trailing zeros
    # A fraction of a second with a non-zero digit below the microsecond, which the type cannot hold.
    "sub_microsecond": r"[.,][0-9]{6}[0-9]*[1-9]",
    "true_words": TRUE_WORDS,
    "false_words": FALSE_WORDS,
}


@dataclass(frozen=True)
class RuleSpec:
    """One rule: true where a row passes; like pandera's checks, a null passes every rule but
    ``not_nullable``, and a row rule over a null passes."""

    name: str
    kind: Kind
    columns: tuple[str, ...]
    params: tuple[Any, ...] = ()  # in_range: (min, max); at_least/at_most: (bound,); isin: the values;
    #                               str_matches: (pattern,); row: (sql,)

    @property
    def row_rule(self) -> bool:
        return self.kind == "row"


def column_rule_specs(name: str, col: ColumnSpec) -> list[RuleSpec]:
    rules = []
    if not col.nullable:
        rules.append(RuleSpec("not_nullable", "not_nullable", (name,)))
    if col.type == "float64" and not col.allow_non_finite:
        rules.append(RuleSpec("finite", "finite", (name,)))
    if col.min is not None and col.max is not None:
        lo, hi = float(col.min), float(col.max)
        rules.append(RuleSpec(f"in_range({lo}, {hi})", "in_range", (name,), (col.min, col.max)))
    elif col.min is not None:
        rules.append(RuleSpec(f"greater_than_or_equal_to({float(col.min)})", "at_least", (name,), (col.min,)))
    elif col.max is not None:
        rules.append(RuleSpec(f"less_than_or_equal_to({float(col.max)})", "at_most", (name,), (col.max,)))
    if col.allowed is not None:
        rules.append(RuleSpec(f"isin({col.allowed})", "isin", (name,), tuple(col.allowed)))
    if col.pattern is not None:
        rules.append(RuleSpec(f"str_matches('{col.pattern}')", "str_matches", (name,), (col.pattern,)))
    return rules


def row_rule_spec(name: str, sql: str, columns: tuple[str, ...]) -> RuleSpec:
    return RuleSpec(name, "row", columns, (sql,))


def parse_formats(col: ColumnSpec) -> list[str]:
    return col.formats or DEFAULT_FORMATS.get(col.type, [])


def portable_contract(dataset: str, spec: ContractSpec, rules: list[RuleSpec]) -> dict[str, Any]:
    """The contract as JSON for an engine outside this environment: columns with their types and
    parse formats, and every rule (``rules`` as compiled, row rules' columns resolved)."""
    columns = []
    for name, col in spec.columns.items():
        ct = col.contract_type
        columns.append({"name": name, "type": ct.name, "declared": col.type, "precision": ct.precision,
                        "scale": ct.scale, "formats": parse_formats(col), "declared_formats": col.formats or [],
                        "nullable": col.nullable})
    return {"dataset": dataset, "columns": columns,
            "rules": [{"name": r.name, "kind": r.kind, "columns": list(r.columns),
                       "params": [_json(v) for v in r.params]} for r in rules],
            "grammar": GRAMMAR}


def _json(value: Any) -> Any:
    """A rule parameter as JSON; temporal values tagged, so the other side compares like with like."""
    if isinstance(value, dt.datetime):
        return {"timestamp": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    return value
