"""YAML → pandera compilation: one code path, every rule enforced, clear errors for bad YAML."""

from __future__ import annotations

from pathlib import Path

import pandera.polars as pa
import polars as pl
import pytest

from checks.contract import ContractSpec, compile_contract, snake_case
from core.errors import ConfigError
from core.zones import all_datasets, load_zone


def _compile(columns: dict, rules: list | None = None, **kw):
    spec = ContractSpec.model_validate({"columns": columns, "rules": rules or [], **kw})
    return compile_contract("t.d", spec)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("VendorID", "vendor_id"),
        ("PULocationID", "pu_location_id"),
        ("RatecodeID", "ratecode_id"),
        ("tpep_pickup_datetime", "tpep_pickup_datetime"),
        ('"Borough"', "borough"),
        ("service zone", "service_zone"),
        ("\ufeffLocationID", "location_id"),
    ],
)
def test_snake_case(raw: str, expected: str) -> None:
    assert snake_case(raw) == expected


def test_every_declared_dataset_compiles_to_a_pandera_schema() -> None:
    datasets = all_datasets()
    assert {d.id for d in datasets} >= {"mobility__yellow_trips", "mobility__taxi_zones", "finance__expense_reports"}
    for d in datasets:
        c = d.contract
        assert isinstance(c.schema, pa.DataFrameSchema)
        assert list(c.schema.columns) == list(d.spec.contract.columns)
        assert set(c.parse) == set(d.spec.contract.columns)


def test_column_rules_become_pandera_checks() -> None:
    c = _compile({
        "n": {"type": "int32", "min": 1, "max": 5, "nullable": False},
        "s": {"type": "string", "allowed": ["a", "b"]},
        "p": {"type": "string", "pattern": "^x[0-9]$"},
    })
    df = pl.DataFrame({"n": [1, 9, None], "s": ["a", "c", "b"], "p": ["x1", "x1", "y"]},
                      schema={"n": pl.Int32, "s": pl.String, "p": pl.String})
    with pytest.raises(pa.errors.SchemaErrors) as e:
        c.schema.validate(df, lazy=True)
    fc = e.value.failure_cases.select("column", "check", "index").sort("index").rows()
    assert ("n", "in_range(1.0, 5.0)", 1) in fc
    assert ("s", "isin(['a', 'b'])", 1) in fc
    assert ("n", "not_nullable", 2) in fc
    assert ("p", "str_matches('^x[0-9]$')", 2) in fc


def test_row_rule_is_a_dataframe_check_and_null_passes() -> None:
    c = _compile({"a": {"type": "int32"}, "b": {"type": "int32"}}, rules=[{"name": "b_ge_a", "expr": "b >= a"}])
    df = pl.DataFrame({"a": [1, 5, None], "b": [2, 1, 3]}, schema={"a": pl.Int32, "b": pl.Int32})
    with pytest.raises(pa.errors.SchemaErrors) as e:
        c.schema.validate(df, lazy=True)
    fc = e.value.failure_cases
    assert fc.select("check", "index").rows() == [("b_ge_a", 1)]


def test_timestamp_formats_are_tried_in_order() -> None:
    c = _compile({"t": {"type": "timestamp", "formats": ["%Y-%m-%d %H:%M:%S", "%m/%d/%Y %H:%M"]}})
    raw = pl.DataFrame({"t": ["2019-06-01 00:55:13", "01/01/2021 0:30", "31/12/2020 23:59"]})
    first, second = c.parse["t"][:2]  # then the same formats again on stripped text
    parsed = raw.select(pl.coalesce(raw.select(first).to_series(), raw.select(second).to_series()))
    assert [str(v) for v in parsed.to_series().to_list()] == ["2019-06-01 00:55:13", "2021-01-01 00:30:00", "None"]


@pytest.mark.parametrize(
    ("columns", "extra", "message"),
    [
        ({"a": {"type": "integer"}}, {}, "unknown type 'integer'"),
        ({"a": {"type": "string", "min": 1}}, {}, "min/max do not apply to string"),
        ({"a": {"type": "int32", "pattern": "x"}}, {}, "pattern applies only to string"),
        ({"a": {"type": "int32", "formats": ["%Y"]}}, {}, "formats apply only to timestamp and date"),
        ({"Bad Name": {"type": "int32"}}, {}, "must be snake_case"),
        ({"a": {"type": "int32"}}, {"unique_key": ["b"]}, "unique_key names unknown columns: b"),
        ({"a": {"type": "int32"}, "b": {"type": "int32", "source": "A"}}, {}, "read the same source column"),
        ({"a": {"type": "int32"}}, {"rules": [{"name": "r", "expr": "zz > 1"}]}, "uses unknown columns: zz"),
        ({"a": {"type": "int32", "colour": "red"}}, {}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_contracts_are_rejected(columns: dict, extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ContractSpec.model_validate({"columns": columns, **extra})


def test_zone_yaml_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "sales.yaml"
    path.write_text(
        "owners: [team:sales]\n"
        "datasets:\n"
        "  orders:\n"
        "    contract:\n"
        "      columns:\n"
        "        amount: {type: money}\n"
        "      max_quarantine_ratio: 2\n"
        "    colour: red\n"
    )
    with pytest.raises(ConfigError) as e:
        load_zone(path)
    msg = str(e.value)
    assert f"{path}:6: datasets.orders.contract.columns.amount.type" in msg or f"{path}:6:" in msg
    assert "unknown type 'money'" in msg
    assert f"{path}:8: datasets.orders.colour: unknown key" in msg


def test_zone_yaml_rejects_bad_owner(tmp_path: Path) -> None:
    path = tmp_path / "ops.yaml"
    path.write_text("owners: [bob]\ndatasets:\n  x:\n    contract:\n      columns: {a: {type: int32}}\n")
    with pytest.raises(ConfigError, match=r"ops.yaml:1: owners: .*email address or team:<name>"):
        load_zone(path)
