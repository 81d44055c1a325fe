"""Unique keys: checked over the staged rows after the pass (exact typed values, the first staged
occurrence in file order wins). A later occurrence moves to quarantine with rule ``unique_key``,
column ``a, b``, value ``v1|v2; first on line N`` and its original text; a row with a null key part
is not subject to uniqueness; a row quarantined for another rule does not claim its key.

``engine.arrow.BLOCK_SIZE`` is made small to put duplicates in different batches. Every staging
checks rows read = staged + quarantined (``staging_helpers.stage``), and every test here checks
that the staged Parquet holds no key twice.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import polars as pl
import pytest
from staging_helpers import Staged, make_dataset, stage

import engine.arrow
from core.names import Q_COLUMNS, Q_ERRORS, Q_RAW, Q_RULES, SOURCE_LINE
from engine.arrow.stager import Stager


def _records(content: str) -> tuple[list[str], dict[int, list[str]]]:
    """The header and the data records of a well-formed CSV text, by the line each starts on."""
    reader = csv.reader(io.StringIO(content, newline=""))
    header = next(reader)
    out, start = {}, reader.line_num + 1
    for record in reader:
        if record:
            out[start] = record
        start = reader.line_num + 1
    return header, out


def _check(out: Staged, content: str, keys: list[str], dups: dict[int, str]) -> None:
    """``dups``: line → the ``_errors`` of its unique-key quarantine row. The staged rows hold no key
    twice; every duplicate row carries its original text (spaces, quotes, line breaks and all)."""
    complete = out.staged.drop_nulls(keys)
    assert not complete.select(pl.struct(keys).is_duplicated().any()).item(), complete
    q = out.quarantined.filter(pl.col(Q_RULES).list.contains("unique_key"))
    assert dict(q.select(SOURCE_LINE, Q_ERRORS).rows()) == dups
    assert out.result.duplicates == len(dups)
    assert out.result.violations[f"{', '.join(keys)}: unique_key"] == len(dups)
    header, records = _records(content)
    columns = [c for c in header if c in out.quarantined.columns]
    for row in q.iter_rows(named=True):
        assert row[Q_RULES] == ["unique_key"]
        assert row[Q_COLUMNS] == [", ".join(keys)]
        assert row[Q_RAW] is None  # the record could be split: its fields hold its text
        original = dict(zip(header, records[row[SOURCE_LINE]], strict=True))
        assert {c: row[c] for c in columns} == {c: original[c] or None for c in columns}


KV = {"columns": {"k": {"type": "int32"}, "v": {"type": "string"}}, "unique_key": ["k"]}


def test_duplicates_within_a_batch_keep_the_first_line(tmp_path: Path) -> None:
    content = "k,v\n1,a\n2,b\n1,c\n 1 ,d\n3,e\n2,f\n"
    out = stage(tmp_path, make_dataset(tmp_path, KV), content)
    assert out.staged_values("v") == ["a", "b", "e"]
    _check(out, content, ["k"], {
        4: "k: unique_key (value 1; first on line 2)",
        5: "k: unique_key (value 1; first on line 2)",  # exact typed values: " 1 " is 1
        7: "k: unique_key (value 2; first on line 3)",
    })
    assert out.quarantined_text("k")[5] == " 1 "


def test_duplicates_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.arrow, "BLOCK_SIZE", 200)
    rows = [f"{i},first {i}" for i in range(1, 101)]
    rows += ["1,again", "50,again", "100,again", "1,once more"]
    content = "k,v\n" + "\n".join(rows) + "\n"
    batches = []
    process = Stager.process
    monkeypatch.setattr(Stager, "process", lambda self, raw, lines: (batches.append(len(lines)),
                                                                      process(self, raw, lines)))
    out = stage(tmp_path, make_dataset(tmp_path, KV), content)
    assert len(batches) > 5 and sum(batches) == 104
    assert out.result.rows_staged == 100
    assert out.staged_values("v") == [f"first {i}" for i in range(1, 101)]
    _check(out, content, ["k"], {
        102: "k: unique_key (value 1; first on line 2)",
        103: "k: unique_key (value 50; first on line 51)",
        104: "k: unique_key (value 100; first on line 101)",
        105: "k: unique_key (value 1; first on line 2)",
    })


MULTI = {"columns": {"a": {"type": "int16"}, "b": {"type": "string"}, "n": {"type": "int32", "min": 0}},
         "unique_key": ["a", "b"]}


def test_multi_column_key(tmp_path: Path) -> None:
    content = "a,b,n\n1,x,1\n1,y,2\n2,x,3\n1,x,4\n2,y,5\n2,x,6\n"
    out = stage(tmp_path, make_dataset(tmp_path, MULTI), content)
    assert out.staged_values("n") == [1, 2, 3, 5]
    _check(out, content, ["a", "b"], {
        5: "a, b: unique_key (value 1|x; first on line 2)",
        7: "a, b: unique_key (value 2|x; first on line 4)",
    })


def test_null_key_parts_are_not_subject_to_uniqueness(tmp_path: Path) -> None:
    content = 'a,b,n\n,x,1\n,x,2\n1,,3\n1,"",4\n,,5\n,,6\n1,x,7\n1,x,8\n'
    out = stage(tmp_path, make_dataset(tmp_path, MULTI), content)
    assert out.staged_values("n") == [1, 2, 3, 4, 5, 6, 7]
    _check(out, content, ["a", "b"], {9: "a, b: unique_key (value 1|x; first on line 8)"})


def test_a_first_occurrence_that_fails_another_rule_does_not_claim_the_key(tmp_path: Path) -> None:
    content = ("a,b,n\n"
               "1,x,-1\n"  # breaks n's minimum: quarantined, claims nothing
               "1,x,2\n"  # the first staged occurrence
               "1,x,3\n"
               "abc,y,4\n"  # a key part that does not parse
               "1,x,-5\n"  # a duplicate key, but quarantined for its own rule only
               "1,y,6\n")
    out = stage(tmp_path, make_dataset(tmp_path, MULTI), content)
    assert out.staged_values("n") == [2, 6]
    assert out.rules_by_line() == {2: ["greater_than_or_equal_to(0.0)"], 4: ["unique_key"], 5: ["type(int16)"],
                                   6: ["greater_than_or_equal_to(0.0)"]}
    _check(out, content, ["a", "b"], {4: "a, b: unique_key (value 1|x; first on line 3)"})


@pytest.mark.parametrize("block_size", [engine.arrow.BLOCK_SIZE, 64], ids=["one_batch", "many_batches"])
def test_duplicates_in_a_file_read_line_by_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                block_size: int) -> None:
    monkeypatch.setattr(engine.arrow, "BLOCK_SIZE", block_size)
    content = ('k,v\n'
               '1,a\n'
               '2,"x"y\n'  # a stray quote: the file is read line by line
               '2,b\n'  # the broken line 3 claimed nothing: this is the first 2
               '3,"multi\nline"\n'  # a record over lines 5-6
               '1,"with ""quotes"", and a comma"\n'
               '3,"again\r\nover two lines"\n'
               '4,c\n'
               '2,d\n')
    out = stage(tmp_path, make_dataset(tmp_path, KV), content)
    assert out.result.read_path == "line_by_line"
    assert out.staged_values("v") == ["a", "b", "multi\nline", "c"]
    assert out.rules_by_line()[3] == ["structure"]
    assert out.raw_records()[3] == '2,"x"y'
    _check(out, content, ["k"], {
        7: "k: unique_key (value 1; first on line 2)",
        8: "k: unique_key (value 3; first on line 5)",
        11: "k: unique_key (value 2; first on line 4)",
    })
    assert out.quarantined_text("v")[7] == 'with "quotes", and a comma'
    assert out.quarantined_text("v")[8] == "again\r\nover two lines"


def test_crlf_bom_and_blank_lines_keep_the_line_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.arrow, "BLOCK_SIZE", 64)
    content = "\ufeffk,v\r\n1,a\r\n\r\n2,b\r\n" + "".join(f"{i},x\r\n" for i in range(3, 20)) + "2,again\r\n\r\n"
    out = stage(tmp_path, make_dataset(tmp_path, KV), content)
    _check(out, content.removeprefix("\ufeff"), ["k"], {22: "k: unique_key (value 2; first on line 4)"})


def test_keys_compare_typed_values(tmp_path: Path) -> None:
    """``1.5`` and ``1.50`` are one decimal, ``yes`` and ``true`` one boolean, a ``T`` or a space one timestamp."""
    contract = {"columns": {"m": {"type": "decimal(5,2)"}, "t": {"type": "timestamp"}, "b": {"type": "boolean"}},
                "unique_key": ["m", "t", "b"]}
    content = ("m,t,b\n"
               "1.5,2024-01-01 00:00:00,true\n"
               "1.50,2024-01-01T00:00:00,yes\n"
               "1.5,2024-01-01 00:00:00,false\n")
    out = stage(tmp_path, make_dataset(tmp_path, contract), content)
    _check(out, content, ["m", "t", "b"],
           {3: "m, t, b: unique_key (value 1.50|2024-01-01 00:00:00.000000|true; first on line 2)"})


def test_an_absent_optional_key_column_is_a_null_key_part(tmp_path: Path) -> None:
    contract = {"columns": {"k": {"type": "int32", "required": False}, "v": {"type": "string"}},
                "unique_key": ["k"]}
    content = "v\na\na\n"
    out = stage(tmp_path, make_dataset(tmp_path, contract), content)
    assert out.result.rows_staged == 2
    _check(out, content, ["k"], {})


def test_a_key_over_pii_is_masked_in_the_examples(tmp_path: Path) -> None:
    contract = {"columns": {"n": {"type": "int32"}, "email": {"type": "string", "pii": True}},
                "unique_key": ["n", "email"]}
    content = "n,email\n1,a@example.com\n1,a@example.com\n"
    out = stage(tmp_path, make_dataset(tmp_path, contract), content)
    _check(out, content, ["n", "email"], {3: "n, email: unique_key (value 1|a@example.com; first on line 2)"})
    assert out.result.examples == ["line 3: n, email: unique_key (value <pii>)"]


def test_no_duplicates_leaves_the_staged_file_in_place(tmp_path: Path) -> None:
    content = "k,v\n1,a\n2,b\n"
    out = stage(tmp_path, make_dataset(tmp_path, KV), content)
    assert out.result.staging_uri == str(tmp_path / "f.csv.staging.parquet")
    assert not list(tmp_path.glob("*.unique"))
    _check(out, content, ["k"], {})
