"""Numbers are never rounded: a value that parses but cannot be held exactly is quarantined with a
named rule, its original text kept; its valid neighbours are staged exactly.

Rules: ``scale(decimal(p,s))``, ``precision(decimal(p,s))``, ``type(...)``, ``out_of_range(intN)``,
``finite`` (float64 unless ``allow_non_finite``), ``precision(timestamp)`` (only with a format
that reads fractional seconds).

Valid values are staged twice: in a file of valid values only (integers and floats then go
through Arrow's cast) and among invalid ones (the polars parse chain decides value by value); both
must give the same values. Each invalid value is staged in a file of its own between two valid
neighbours, so the verdict never depends on what else is in the batch.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from pathlib import Path

import pytest
from staging_helpers import make_dataset, stage

from core.names import Q_ERRORS, Q_RULES

COLUMNS = {
    "decimal_12_2": {"type": "decimal(12,2)"},
    "decimal_38_0": {"type": "decimal(38,0)"},
    "decimal_5_5": {"type": "decimal(5,5)"},
    "int16": {"type": "int16"},
    "int32": {"type": "int32"},
    "int64": {"type": "int64"},
    "float64": {"type": "float64"},
    "float64_non_finite": {"type": "float64", "allow_non_finite": True},
    "timestamp": {"type": "timestamp"},  # default formats: one reads fractional seconds (%.f)
    "timestamp_no_fraction": {"type": "timestamp", "formats": ["%Y-%m-%d %H:%M:%S"]},
}
NEIGHBOUR = {  # a valid value of each column, around every invalid one
    "decimal_12_2": ("1.00", Decimal("1.00")),
    "decimal_38_0": ("1", Decimal("1")),
    "decimal_5_5": ("0.5", Decimal("0.50000")),
    "int16": ("1", 1),
    "int32": ("1", 1),
    "int64": ("1", 1),
    "float64": ("1", 1.0),
    "float64_non_finite": ("1", 1.0),
    "timestamp": ("2024-01-01 00:00:00", dt.datetime(2024, 1, 1)),
    "timestamp_no_fraction": ("2024-01-01 00:00:00", dt.datetime(2024, 1, 1)),
}
T = dt.datetime(2024, 1, 1, 0, 0, 0)

VALID: dict[str, list[tuple[str, object]]] = {
    "decimal_12_2": [
        ("12.30", Decimal("12.30")), ("12.3", Decimal("12.30")), ("1.230", Decimal("1.23")),  # trailing zeros
        ("0.01", Decimal("0.01")), ("-0.01", Decimal("-0.01")), ("+5", Decimal("5.00")),
        (" 7.25 ", Decimal("7.25")), (".5", Decimal("0.50")), ("5.", Decimal("5.00")),
        ("9999999999.99", Decimal("9999999999.99")), ("-9999999999.99", Decimal("-9999999999.99")),
        ("00000000001.50", Decimal("1.50")), ("0", Decimal("0.00")), ("1.2300000", Decimal("1.23")),
    ],
    "decimal_38_0": [("9" * 38, Decimal("9" * 38)), ("-" + "9" * 38, Decimal("-" + "9" * 38)), ("1.0", Decimal(1))],
    "decimal_5_5": [("0.12345", Decimal("0.12345")), ("-0.99999", Decimal("-0.99999")), ("0.0", Decimal("0.00000"))],
    "int16": [("32767", 32767), ("-32768", -32768), ("0", 0), ("+5", 5), (" 5 ", 5), ("007", 7), ("-0", 0),
              (" -32768", -32768)],
    "int32": [("2147483647", 2147483647), ("-2147483648", -2147483648), (" 2147483647 ", 2147483647)],
    "int64": [("9223372036854775807", 2**63 - 1), ("-9223372036854775808", -(2**63)), ("+7", 7)],
    "float64": [("1.5", 1.5), ("-0.25", -0.25), ("1e308", 1e308), (" 2.5 ", 2.5), ("+5", 5.0),
                ("1.7976931348623157e308", 1.7976931348623157e308), ("1E3", 1000.0)],
    "float64_non_finite": [("NaN", math.nan), ("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf),
                           ("1e400", math.inf), (" inf ", math.inf), ("1.5", 1.5)],
    "timestamp": [
        ("2024-01-01 00:00:00.123456", T.replace(microsecond=123456)),
        ("2024-01-01 00:00:00.1234560", T.replace(microsecond=123456)),  # a trailing zero is no precision
        ("2024-01-01 00:00:00.123456000", T.replace(microsecond=123456)),
        ("2024-01-01 00:00:00.5", T.replace(microsecond=500000)),
        ("2024-01-01T10:00:00", T.replace(hour=10)),
        (" 2024-01-01 00:00:00 ", T),
    ],
    "timestamp_no_fraction": [("2024-01-01 10:00:00", T.replace(hour=10))],
}

INVALID: dict[str, list[tuple[str, str]]] = {
    "decimal_12_2": [
        ("1.234", "scale(decimal(12,2))"), ("1.2300001", "scale(decimal(12,2))"), ("0.001", "scale(decimal(12,2))"),
        (" 1.234 ", "scale(decimal(12,2))"),
        ("12345678901.00", "precision(decimal(12,2))"), ("99999999999", "precision(decimal(12,2))"),
        ("-12345678901", "precision(decimal(12,2))"),
        ("1e3", "type(decimal(12,2))"), ("abc", "type(decimal(12,2))"), ("1,5", "type(decimal(12,2))"),
        ("NaN", "type(decimal(12,2))"), ("inf", "type(decimal(12,2))"), ("1.2.3", "type(decimal(12,2))"),
        ("-", "type(decimal(12,2))"), ("\u0663", "type(decimal(12,2))"),  # an Arabic-Indic digit
    ],
    "decimal_38_0": [("1" + "0" * 38, "precision(decimal(38,0))"), ("1.5", "scale(decimal(38,0))")],
    "decimal_5_5": [("1", "precision(decimal(5,5))"), ("0.123456", "scale(decimal(5,5))")],
    "int16": [
        ("32768", "out_of_range(int16)"), ("-32769", "out_of_range(int16)"), (" 32768 ", "out_of_range(int16)"),
        ("99999999999999999999999", "out_of_range(int16)"),
        ("1.5", "type(int16)"), ("abc", "type(int16)"), ("5.0", "type(int16)"), ("1e3", "type(int16)"),
        ("0x1F", "type(int16)"), ("0xFFFF", "type(int16)"),  # Arrow's cast would read hex (and wrap 0xFFFF to -1)
        ("\u0663", "type(int16)"), ("1_000", "type(int16)"), ("--5", "type(int16)"),
    ],
    "int32": [("2147483648", "out_of_range(int32)"), ("-2147483649", "out_of_range(int32)"),
              ("0x7FFFFFFF", "type(int32)")],
    "int64": [("9223372036854775808", "out_of_range(int64)"), ("-9223372036854775809", "out_of_range(int64)"),
              (" 9223372036854775808", "out_of_range(int64)")],
    "float64": [
        ("NaN", "finite"), ("nan", "finite"), ("inf", "finite"), ("-inf", "finite"), ("Infinity", "finite"),
        ("1e400", "finite"), ("-1e400", "finite"), (" NaN ", "finite"),
        ("abc", "type(float64)"), ("0x10", "type(float64)"), ("1,5", "type(float64)"),
    ],
    "float64_non_finite": [("abc", "type(float64)")],
    "timestamp": [
        ("2024-01-01 00:00:00.1234567", "precision(timestamp)"),
        ("2024-01-01 00:00:00.123456001", "precision(timestamp)"),
        (" 2024-01-01 00:00:00.1234567 ", "precision(timestamp)"),
        ("2024-02-30 00:00:00", "type(timestamp)"), ("2024-01-01", "type(timestamp)"),
        ("2024-01-01 00:00:00,1234567", "type(timestamp)"),  # no format reads a comma: not a precision issue
    ],
    # Without a fractional-seconds directive no fraction is read at all: a type error, not precision.
    "timestamp_no_fraction": [("2024-01-01 00:00:00.1234567", "type(timestamp as %Y-%m-%d %H:%M:%S)"),
                              ("2024-01-01 00:00:00.5", "type(timestamp as %Y-%m-%d %H:%M:%S)")],
}


def _csv(values: list[str]) -> str:
    """``i,v`` rows, every value quoted so that surrounding spaces are part of it."""
    return "i,v\n" + "".join(f'{i},"{v}"\n' for i, v in enumerate(values))


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b and str(a) == str(b)  # Decimal('12.30') is not Decimal('12.3')


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One dataset per column kind, compiled once (``i`` ties each row to its value)."""
    out = {}
    for kind, column in COLUMNS.items():
        d = tmp_path_factory.mktemp(kind)
        out[kind] = make_dataset(d, {"columns": {"i": {"type": "int32"}, "v": column}})
    return out


@pytest.mark.parametrize("kind", list(VALID))
def test_valid_values_are_staged_exactly_on_both_parse_paths(tmp_path: Path, datasets: dict, kind: str) -> None:
    texts = [t for t, _ in VALID[kind]]
    expected = [v for _, v in VALID[kind]]
    alone = stage(tmp_path, datasets[kind], _csv(texts), "alone.csv")
    assert alone.result.rows_quarantined == 0, alone.quarantined
    mixed = stage(tmp_path, datasets[kind], _csv([*texts, "not a number"]), "mixed.csv")
    assert mixed.result.rows_staged == len(texts)
    assert [int(i) for i in mixed.quarantined["i"]] == [len(texts)]
    for out in (alone, mixed):
        got = out.staged.sort("i")["v"].to_list()
        bad = [(t, e, g) for t, e, g in zip(texts, expected, got, strict=True) if not _same(e, g)]
        assert not bad, f"(text, expected, staged): {bad}"


CASES = [(kind, text, rule) for kind, cases in INVALID.items() for text, rule in cases]


@pytest.mark.parametrize(("kind", "text", "rule"), CASES,
                         ids=[f"{k}:{t.strip() or repr(t)}" for k, t, _ in CASES])
def test_invalid_value_is_quarantined_with_its_rule_and_text(tmp_path: Path, datasets: dict, kind: str, text: str,
                                                            rule: str) -> None:
    neighbour, value = NEIGHBOUR[kind]
    out = stage(tmp_path, datasets[kind], _csv([neighbour, text, neighbour]))
    assert out.result.rows_staged == 2, out.quarantined
    assert all(_same(value, v) for v in out.staged["v"].to_list())
    assert out.result.rows_quarantined == 1, out.staged
    row = out.quarantined.row(0, named=True)
    assert row["_source_line"] == 3
    assert row[Q_RULES] == [rule]
    assert row["v"] == text  # the original text, spaces and all
    assert row[Q_ERRORS] == f"v: {rule} (value {text})"
    assert out.result.violations == {f"v: {rule}": 1}


def test_number_rules_in_one_file_each_value_on_its_line(tmp_path: Path) -> None:
    """Every rule at once, several invalid values per column in one batch."""
    ds = make_dataset(tmp_path, {"columns": {"m": {"type": "decimal(12,2)"}, "n": {"type": "int16"},
                                             "f": {"type": "float64"}, "t": {"type": "timestamp"}}})
    out = stage(tmp_path, ds, "m,n,f,t\n"
                              "12.30,32767,1.5,2024-01-01 00:00:00.123456\n"
                              "1.234,32768,NaN,2024-01-01 00:00:00.1234567\n"
                              "12345678901,1.5,inf,x\n"
                              "1e3,abc,1e400,2024-01-01 00:00:00\n"
                              "-0.01,-32768,-1e308,2024-01-01T00:00:00\n")
    assert out.staged_values("m") == [Decimal("12.30"), Decimal("-0.01")]
    assert out.staged_values("n") == [32767, -32768]
    assert out.rules_by_line() == {
        3: ["scale(decimal(12,2))", "out_of_range(int16)", "precision(timestamp)", "finite"],
        4: ["precision(decimal(12,2))", "type(int16)", "type(timestamp)", "finite"],
        5: ["type(decimal(12,2))", "type(int16)", "finite"],
    }
    assert out.quarantined_text("f") == {3: "NaN", 4: "inf", 5: "1e400"}


@pytest.mark.parametrize(("column", "rule"), [
    ({"type": "float64"}, "type(float64)"),
    ({"type": "date"}, "type(date)"),
    ({"type": "boolean"}, "type(boolean)"),
    ({"type": "timestamp", "formats": ["%d.%m.%Y %H:%M"]}, "type(timestamp as %d.%m.%Y %H:%M)"),
    ({"type": "int32"}, "type(int32)"),
], ids=["float64", "date", "boolean", "timestamp_formats", "int32"])
def test_several_unparsed_values_in_one_batch_each_get_their_rule(tmp_path: Path, column: dict, rule: str) -> None:
    """Used to fail the whole file (a ShapeError) for a rule name that is the same for every value."""
    ds = make_dataset(tmp_path, {"columns": {"i": {"type": "int32"}, "v": column}})
    out = stage(tmp_path, ds, _csv(["abc", "x y", "-"]))
    assert out.rules_by_line() == dict.fromkeys([2, 3, 4], [rule])
    assert out.quarantined_text("v") == {2: "abc", 3: "x y", 4: "-"}
