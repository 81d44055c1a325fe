"""Contract shapes: every shape ``python -m cli validate`` accepts stages a small file with nothing
lost, and every contract that could not stage is refused when it is loaded or compiled, with a
message that names the column or rule.

A dataset is built from a zone YAML written here and loaded as ``validate`` loads it (load the
zone, compile the contract); see ``staging_helpers``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from staging_helpers import make_dataset, stage

from core.errors import PlatformError

S = {"type": "string", "nullable": True}


@dataclass(frozen=True)
class Shape:
    contract: dict
    content: str
    staged: list[int]  # the lines staged
    quarantined: dict[int, list[str]] = field(default_factory=dict)  # line → the rules it broke
    csv: dict | None = None
    values: dict[str, list] = field(default_factory=dict)  # column → staged values, in line order


SHAPES = {
    # Used to crash with "cannot return empty fold": no column has a rule, and there is no row rule.
    "no_rules_at_all": Shape(
        {"columns": {"a": S, "b": S, "c": S}},
        'a,b,c\nx,y,z\n,q,\n"",,w\n',
        staged=[2, 3, 4], values={"a": ["x", None, None], "c": ["z", None, "w"]},
    ),
    "only_a_row_rule": Shape(
        {"columns": {"a": S, "b": S}, "rules": [{"name": "a_differs_from_b", "expr": "a <> b"}]},
        "a,b\nx,y\nx,x\n,x\n",
        staged=[2, 4], quarantined={3: ["a_differs_from_b"]},
    ),
    "every_column_optional_file_carries_some": Shape(
        {"columns": {"n": {"type": "int32", "required": False}, "s": {**S, "required": False},
                     "d": {"type": "date", "required": False}}},
        "s\nq\nr\n",
        staged=[2, 3], values={"n": [None, None], "s": ["q", "r"], "d": [None, None]},
    ),
    "every_column_optional_file_carries_all": Shape(
        {"columns": {"n": {"type": "int32", "required": False}, "s": {**S, "required": False},
                     "d": {"type": "date", "required": False}}},
        "d,n,s\n2024-01-31,1,q\nx,2,r\n",
        staged=[2], quarantined={3: ["type(date)"]}, values={"n": [1], "d": [dt.date(2024, 1, 31)]},
    ),
    "every_column_optional_with_a_rule_on_an_absent_one": Shape(
        {"columns": {"n": {"type": "int32", "required": False, "min": 1}, "s": {**S, "required": False}}},
        "s\nq\n",
        staged=[2], values={"n": [None]},
    ),
    "a_single_column": Shape(
        {"columns": {"n": {"type": "int16"}}},
        "n\n1\nx\n3\n",
        staged=[2, 4], quarantined={3: ["type(int16)"]}, values={"n": [1, 3]},
    ),
    "only_a_unique_key": Shape(
        {"columns": {"k": S}, "unique_key": ["k"]},
        "k\na\nb\na\n",
        staged=[2, 3], quarantined={4: ["unique_key"]},
    ),
    "only_typed_columns": Shape(
        {"columns": {"i": {"type": "int64"}, "f": {"type": "float64"}, "b": {"type": "boolean"},
                     "d": {"type": "date"}, "t": {"type": "timestamp"}, "m": {"type": "decimal(10,3)"}}},
        "i,f,b,d,t,m\n1,1.5,true,2024-01-01,2024-01-01 10:00:00,1.234\nx,y,z,w,v,u\n,,,,,\n",
        staged=[2, 4],
        quarantined={3: ["type(int64)", "type(float64)", "type(boolean)", "type(date)", "type(timestamp)",
                         "type(decimal(10,3))"]},
        values={"i": [1, None], "m": [Decimal("1.234"), None]},
    ),
    "a_decimal_column": Shape(
        {"columns": {"amount": {"type": "decimal(12,2)", "min": 0.01}}},
        "amount\n12.30\n1.234\n0.00\n 7.5 \n",
        staged=[2, 5], quarantined={3: ["scale(decimal(12,2))"], 4: ["greater_than_or_equal_to(0.01)"]},
        values={"amount": [Decimal("12.30"), Decimal("7.50")]},
    ),
    "boolean_date_timestamp_with_formats": Shape(
        {"columns": {"b": {"type": "boolean"}, "d": {"type": "date", "formats": ["%d.%m.%Y", "%Y-%m-%d"]},
                     "t": {"type": "timestamp", "formats": ["%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S%.f"]}}},
        "b,d,t\nyes,31.01.2024,01/02/2024 10:30\nN,2024-02-01,01/02/2024 10:30:00.25\n"
        "maybe,2024/02/01,2024-01-02 10:30:00\n",
        staged=[2, 3],
        quarantined={4: ["type(boolean)", "type(date as %d.%m.%Y or %Y-%m-%d)",
                         "type(timestamp as %m/%d/%Y %H:%M or %m/%d/%Y %H:%M:%S%.f)"]},
        values={"b": [True, False], "d": [dt.date(2024, 1, 31), dt.date(2024, 2, 1)],
                "t": [dt.datetime(2024, 1, 2, 10, 30), dt.datetime(2024, 1, 2, 10, 30, 0, 250000)]},
    ),
    "unexpected_columns_ignored": Shape(
        {"columns": {"a": {"type": "int32"}}, "unexpected_columns": "ignore"},
        "z,a,y\nq,1,r\ns,2,t\n",
        staged=[2, 3], values={"a": [1, 2]},
    ),
    "empty_file_accepted_header_only": Shape(
        {"columns": {"a": {"type": "int32"}, "b": S}, "empty_file": "accept", "unique_key": ["a"]},
        "a,b\n",
        staged=[],
    ),
    "empty_file_accepted_header_without_line_end": Shape(
        {"columns": {"a": S, "b": S}, "empty_file": "accept"},
        "a,b",
        staged=[],
    ),
    "empty_file_accepted_header_and_blank_lines": Shape(
        {"columns": {"a": S, "b": S}, "empty_file": "accept"},
        "a,b\r\n\r\n\r\n",
        staged=[],
    ),
    "every_column_not_nullable": Shape(
        {"columns": {"a": {"type": "int32", "nullable": False}, "b": {"type": "string", "nullable": False}}},
        'a,b\n1,x\n,y\n2,""\n,\nq,\n',
        staged=[2],
        # A value that does not parse is reported as such, not again as a null.
        quarantined={3: ["not_nullable"], 4: ["not_nullable"], 5: ["not_nullable", "not_nullable"],
                     6: ["type(int32)", "not_nullable"]},
    ),
    "latin1_encoding": Shape(
        {"columns": {"city": S}},
        "city\nZürich\n",
        csv={"encoding": "latin-1"},
        staged=[2], values={"city": ["Zürich"]},
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_accepted_shape_stages_with_nothing_lost(tmp_path: Path, shape: Shape) -> None:
    ds = make_dataset(tmp_path, shape.contract, csv=shape.csv)
    encoding = (shape.csv or {}).get("encoding", "utf-8")
    out = stage(tmp_path, ds, shape.content.encode(encoding))  # checks rows read = staged + quarantined
    assert sorted(out.staged["_source_line"].to_list()) == shape.staged
    assert out.rules_by_line() == shape.quarantined
    assert out.result.rows_read == len(shape.staged) + len(shape.quarantined)
    for column, values in shape.values.items():
        assert out.staged_values(column) == values, column


def test_a_header_only_file_is_rejected_unless_empty_files_are_accepted(tmp_path: Path) -> None:
    from core.errors import FileRejected

    ds = make_dataset(tmp_path, {"columns": {"a": S}})
    with pytest.raises(FileRejected, match="the file has a header but no data rows"):
        stage(tmp_path, ds, "a\n")


@dataclass(frozen=True)
class Bad:
    contract: dict
    message: str  # a literal part of the error
    csv: dict | None = None


N = {"type": "int32"}
REJECTED = {
    "row_rule_compares_string_with_number": Bad(
        {"columns": {"s": S, "n": N}, "rules": [{"name": "s_big", "expr": "s > 5"}]},
        "rule 's_big' cannot be evaluated on the declared types: cannot compare string with numeric type",
    ),
    "allowed_numbers_on_a_string_column": Bad(
        {"columns": {"s": {"type": "string", "allowed": [1, 2]}}},
        "column 's', rule isin([1, 2]) cannot be evaluated on the declared types",
    ),
    "allowed_of_mixed_types": Bad(
        {"columns": {"s": {"type": "string", "allowed": ["a", 1]}}},
        "column 's': its rules cannot be built",
    ),
    "pattern_polars_cannot_run": Bad(
        {"columns": {"s": {"type": "string", "pattern": "^(?=x)"}}},
        "column 's', rule str_matches('^(?=x)') cannot be evaluated on the declared types: regex error",
    ),
    "decimal_precision_over_38": Bad(
        {"columns": {"m": {"type": "decimal(40,2)"}}},
        "columns.m.type: Value error, type 'decimal(40,2)': decimal(p,s) needs 1 <= p <= 38 and s <= p",
    ),
    "decimal_scale_over_precision": Bad(
        {"columns": {"m": {"type": "decimal(5,6)"}}},
        "type 'decimal(5,6)': decimal(p,s) needs 1 <= p <= 38 and s <= p",
    ),
    "decimal_precision_zero": Bad(
        {"columns": {"m": {"type": "decimal(0,0)"}}},
        "type 'decimal(0,0)': decimal(p,s) needs 1 <= p <= 38",
    ),
    "min_greater_than_max": Bad(
        {"columns": {"n": {"type": "int32", "min": 5, "max": 1}}},
        "columns.n: Value error, min 5.0 is greater than max 1.0",
    ),
    "min_not_a_number": Bad(  # every comparison with NaN is false: no row could pass
        {"columns": {"f": {"type": "float64", "min": float("nan")}}},
        "columns.f: Value error, min nan is not a finite number",
    ),
    "empty_allowed": Bad(
        {"columns": {"s": {"type": "string", "allowed": []}}},
        "columns.s: Value error, allowed is empty: no value could pass",
    ),
    "rule_reading_no_column": Bad(
        {"columns": {"n": N}, "rules": [{"name": "always", "expr": "1 = 1"}]},
        "rule 'always' reads no column: '1 = 1'",
    ),
    "two_rules_with_the_same_name": Bad(
        {"columns": {"n": N}, "rules": [{"name": "r", "expr": "n > 1"}, {"name": "r", "expr": "n < 9"}]},
        "two rules are named 'r'",
    ),
    "row_rule_that_is_no_condition": Bad(
        {"columns": {"n": N}, "rules": [{"name": "plus_one", "expr": "n + 1"}]},
        "rule 'plus_one' is not a condition: it gives Int32, not true or false",
    ),
    "row_rule_with_a_cast_some_text_breaks": Bad(
        {"columns": {"s": S}, "rules": [{"name": "s_positive", "expr": "CAST(s AS INTEGER) > 0"}]},
        "rule 's_positive' cannot be evaluated on the declared types: conversion from `str` to `i32` failed",
    ),
    "allow_non_finite_on_an_integer_column": Bad(
        {"columns": {"n": {"type": "int32", "allow_non_finite": True}}},
        "columns.n: Value error, allow_non_finite applies only to float64 columns",
    ),
    "encoding_not_ascii_compatible": Bad(
        {"columns": {"n": N}},
        "source.csv: Value error, encoding 'utf-16' is not ASCII-compatible",
        csv={"encoding": "utf-16"},
    ),
}


@pytest.mark.parametrize("bad", list(REJECTED.values()), ids=list(REJECTED))
def test_contract_that_could_not_stage_is_rejected_naming_the_column_or_rule(tmp_path: Path, bad: Bad) -> None:
    # A PlatformError (ConfigError at load, ContractError at compile) is what `cli validate` reports.
    with pytest.raises(PlatformError, match=re.escape(bad.message)) as e:
        make_dataset(tmp_path, bad.contract, csv=bad.csv)
    assert "\n" not in str(e.value), "one error, on one line"


def test_try_cast_is_the_way_to_read_text_as_a_number_in_a_rule(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path, {"columns": {"s": S},
                                 "rules": [{"name": "s_positive", "expr": "TRY_CAST(s AS INTEGER) > 0"}]})
    out = stage(tmp_path, ds, "s\n5\n-1\nabc\n")
    assert out.staged_values("s") == ["5", "abc"]  # a rule over a NULL passes
    assert out.rules_by_line() == {3: ["s_positive"]}
