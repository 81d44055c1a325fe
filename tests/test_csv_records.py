"""RFC 4180 is read in full and every row names its exact line: the staging engine, without Dagster.

- A table of valid texts (quoted delimiters, doubled quotes, LF and CRLF inside quoted fields,
  fields over several lines, empty quoted fields, no final newline, multi-byte text, a BOM, blank
  lines): staged values, the start line of every row, the read path. Each case is also read by
  Python's ``csv`` module (the oracle below), and again with tiny pyarrow blocks.
- Really broken text costs only the first line of the broken record (rule ``structure`` or
  ``encoding``); reading restarts on the next line and nothing is lost.
- Seeded random files, read with small blocks so that block boundaries fall everywhere, against
  the oracle: Python's ``csv`` module with each record's start line counted from the lines it
  consumed (no code of the engine is reused).
- ``RecordScanner`` alone, fed in reads of every size from 1 to 20 bytes.
- ``ReadAhead``: in every test here it never runs out of patience (pyarrow never waits on it) and
  keeps pyarrow within its bound; a record longer than the bound allows slows the reading, never
  stops it.
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import engine.arrow
from core.zones import CsvOptions, Dataset, load_zone
from engine import StagingResult, stage_local_file
from engine.arrow.records import BOM, ReadAhead, RecordScanner, WholeCRLF, read_ahead_for

ZONE = """\
description: Test zone for the CSV reading tests.
owners: [team:x]
datasets:
  notes:
    source:
      pattern: "*.csv"
      csv: {delimiter: ",", quote_char: '"', encoding: utf-8, null_values: [""]}
    contract:
      max_quarantine_ratio: 1.0
      columns:
        id: {type: string}
        note: {type: string}
        extra: {type: string}
  counts:
    source:
      pattern: "*.csv"
      csv: {delimiter: ",", quote_char: '"', encoding: utf-8, null_values: [""]}
    contract:
      max_quarantine_ratio: 1.0
      columns:
        id: {type: string}
        n: {type: int32}
        note: {type: string}
"""
H = b"id,note,extra\n"
HC = b"id,note,extra\r\n"
DEFAULT_BLOCK = engine.arrow.BLOCK_SIZE


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    d = tmp_path_factory.mktemp("zone")
    (d / "notes.yaml").write_text(ZONE)
    return {ds.name: ds for ds in load_zone(d / "notes.yaml").datasets}


# ----------------------------------------------------------------------------------------------
# Staging a text and looking at the outcome


@dataclass
class Outcome:
    result: StagingResult
    staged: list[tuple[int, tuple]]  # (_source_line, values in contract order)
    quarantined: list[tuple[int, str]]  # (_source_line, rules joined with ",")
    raw: dict[int, str | None]  # _source_line → _raw_record of the quarantined rows


@pytest.fixture(autouse=True)
def read_aheads(monkeypatch: pytest.MonkeyPatch):
    """Every ReadAhead the engine makes in a test: afterwards, none ran out of patience."""
    made: list[ReadAhead] = []

    class Recorded(ReadAhead):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(engine.arrow, "ReadAhead", Recorded)
    yield made
    assert [(r.stalls, r.most_ahead <= r._blocks) for r in made] == [(0, True)] * len(made)


def stage(dataset: Dataset, data: bytes, tmp: Path, monkeypatch: pytest.MonkeyPatch,
          block_size: int = DEFAULT_BLOCK) -> Outcome:
    monkeypatch.setattr(engine.arrow, "BLOCK_SIZE", block_size)
    src = tmp / "f.csv"
    src.write_bytes(data)
    result = stage_local_file(dataset, src, str(tmp / "staged.parquet"), str(tmp / "quarantined.parquet"))
    columns = list(dataset.contract.columns)
    rows = pq.read_table(tmp / "staged.parquet").to_pylist()
    staged = [(r["_source_line"], tuple(r[c] for c in columns)) for r in rows]
    assert {r["_source_file"] for r in rows} <= {"f.csv"}
    qrows = pq.read_table(tmp / "quarantined.parquet").to_pylist()
    quarantined = sorted((r["_source_line"], ",".join(r["_failed_rules"])) for r in qrows)
    # Nothing lost: every record read is either staged or quarantined, once.
    assert result.rows_read == result.rows_staged + result.rows_quarantined
    assert (len(staged), len(quarantined)) == (result.rows_staged, result.rows_quarantined)
    lines = [n for n, _ in staged] + [n for n, _ in quarantined]
    assert len(set(lines)) == len(lines), f"a line is named twice: {sorted(lines)}"
    return Outcome(result, staged, quarantined, {r["_source_line"]: r["_raw_record"] for r in qrows})


# ----------------------------------------------------------------------------------------------
# The oracle: Python's csv module, each record's start line counted from the lines it consumed


def _split_lf(data: bytes) -> list[bytes]:
    """The physical lines of a text, each with its own "\\n" (the last one may have none)."""
    parts = data.split(b"\n")
    return [p + b"\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _null(v: str) -> str | None:
    return v if v != "" else None


def oracle(data: bytes) -> tuple[list[tuple[int, tuple]], bool]:
    """The records of a valid text (start line, values with "" as null), and whether a blank line
    sits between two records."""
    lines = [raw.decode("utf-8-sig" if i == 0 else "utf-8") for i, raw in enumerate(_split_lf(data))]
    reader = csv.reader(iter(lines), strict=True)
    records: list[tuple[int, tuple]] = []
    consumed, blank_seen, blank_between = 0, False, False
    for row in reader:
        start, consumed = consumed + 1, reader.line_num
        if start == 1:
            continue  # the header
        if not row:
            blank_seen = True
            continue
        blank_between |= blank_seen
        records.append((start, tuple(_null(v) for v in row)))
    return records, blank_between


def oracle_line_by_line(data: bytes, n_fields: int = 3) -> tuple[list[tuple[int, tuple]], list[tuple[int, str]]]:
    """What a broken text must give: each record read from its first line on (over more lines
    while a quoted field is open, Python's csv strict); a record whose quoting is broken
    quarantines its first line only and reading restarts on the next; a well-formed record with
    the wrong number of fields is quarantined whole."""
    lines = _split_lf(data)
    staged: list[tuple[int, tuple]] = []
    quarantined: list[tuple[int, str]] = []
    i = 1
    while i < len(lines):
        no = i + 1
        try:
            first = lines[i].decode("utf-8")
        except UnicodeDecodeError:
            quarantined.append((no, "encoding"))
            i += 1
            continue
        if first.removesuffix("\n").removesuffix("\r") == "":
            i += 1  # a blank line is no record
            continue

        def pieces(first: str = first, i: int = i):
            yield first
            for raw in lines[i + 1:]:
                yield raw.decode("utf-8")

        reader = csv.reader(pieces(), strict=True)
        try:
            row = next(reader)
        except (csv.Error, UnicodeDecodeError):
            row = None
        if row is None:  # broken quoting: this line only
            quarantined.append((no, "structure"))
            i += 1
            continue
        if len(row) != n_fields:  # a well-formed record with the wrong field count: all its lines
            quarantined.append((no, "structure"))
        else:
            staged.append((no, tuple(_null(v) for v in row)))
        i += reader.line_num
    return staged, quarantined


def longest_record(data: bytes, starts: list[int]) -> int:
    """Bytes of the longest record (with the blank lines after it): pyarrow needs a block at least
    that long ("straddling object straddles two block boundaries")."""
    lines = _split_lf(data)
    bounds = [1, *starts, len(lines) + 1]
    return max(sum(len(x) for x in lines[a - 1:b - 1]) for a, b in zip(bounds, bounds[1:], strict=False))


# ----------------------------------------------------------------------------------------------
# 1. Valid text, case by case


@dataclass(frozen=True)
class Case:
    data: bytes
    staged: list[tuple[int, tuple]]
    path: str = "fast"
    dataset: str = "notes"


VALID = {
    "quoted-delimiters": Case(
        H + b'1,"a,b",x\n2,"c,,d",",y"\n',
        [(2, ("1", "a,b", "x")), (3, ("2", "c,,d", ",y"))]),
    "doubled-quotes": Case(
        H + b'1,"he said ""hi""",x\n2,"""",""""""\n',
        [(2, ("1", 'he said "hi"', "x")), (3, ("2", '"', '""'))]),
    "lf-in-quoted-field": Case(
        H + b'1,"a\nb",x\n2,c,d\n',
        [(2, ("1", "a\nb", "x")), (4, ("2", "c", "d"))]),
    "crlf-in-quoted-field": Case(
        HC + b'1,"a\r\nb",x\r\n2,c,d\r\n',
        [(2, ("1", "a\r\nb", "x")), (4, ("2", "c", "d"))]),
    "lf-in-quoted-field-of-a-crlf-file": Case(
        HC + b'1,"a\nb",x\r\n2,c,d\r\n',
        [(2, ("1", "a\nb", "x")), (4, ("2", "c", "d"))]),
    "crlf-in-quoted-field-of-an-lf-file": Case(
        H + b'1,"a\r\nb",x\n2,c,d\n',
        [(2, ("1", "a\r\nb", "x")), (4, ("2", "c", "d"))]),
    "quoted-field-over-4-lines": Case(
        H + b'1,"one\ntwo\r\nthree\nfour",x\n2,c,d\n',
        [(2, ("1", "one\ntwo\r\nthree\nfour", "x")), (6, ("2", "c", "d"))]),
    "two-multi-line-fields-in-one-record": Case(
        H + b'1,"a\nb","c\nd\ne"\n2,c,d\n',
        [(2, ("1", "a\nb", "c\nd\ne")), (6, ("2", "c", "d"))]),
    "quoted-blank-lines-are-text": Case(
        H + b'1,"\n\n",x\n2,"\r\n\r\n",y\n3,c,d\n',
        [(2, ("1", "\n\n", "x")), (5, ("2", "\r\n\r\n", "y")), (8, ("3", "c", "d"))]),
    "empty-fields-quoted-or-not-are-null": Case(
        H + b'1,"",x\n2,,""\n,"",\n"",x,""\n',
        [(2, ("1", None, "x")), (3, ("2", None, None)), (4, (None, None, None)), (5, (None, "x", None))]),
    "spaces-are-kept": Case(
        H + b'1," a ", b \n',
        [(2, ("1", " a ", " b "))]),
    "no-final-newline-plain": Case(
        H + b"1,a,b\n2,c,d",
        [(2, ("1", "a", "b")), (3, ("2", "c", "d"))]),
    "no-final-newline-quoted": Case(
        H + b'1,a,b\n2,"c\nd","e"',
        [(2, ("1", "a", "b")), (3, ("2", "c\nd", "e"))]),
    "no-final-newline-crlf-quoted": Case(
        HC + b'1,a,b\r\n2,c,"d\r\n"',
        [(2, ("1", "a", "b")), (3, ("2", "c", "d\r\n"))]),
    "utf8-multi-byte": Case(
        H + '1,café,日本語\n2,"😀,ü",ß\n'.encode(),
        [(2, ("1", "café", "日本語")), (3, ("2", "😀,ü", "ß"))]),
    "utf8-in-a-multi-line-field": Case(
        H + '1,"naïve\nстрока\r\n日本😀",x\n2,é,ü\n'.encode(),
        [(2, ("1", "naïve\nстрока\r\n日本😀", "x")), (5, ("2", "é", "ü"))]),
    "bom-and-quoted-header": Case(
        BOM + b'"id","note","extra"\n"1","a","b"\n2,"c\nd",e\n',
        [(2, ("1", "a", "b")), (3, ("2", "c\nd", "e"))]),
    "bom-crlf-plain": Case(
        BOM + HC + b"1,a,b\r\n2,c,d\r\n",
        [(2, ("1", "a", "b")), (3, ("2", "c", "d"))]),
    "blank-lines-lf": Case(
        H + b'1,"a",b\n\n2,c,d\n\n\n3,e,f\n\n',
        [(2, ("1", "a", "b")), (4, ("2", "c", "d")), (7, ("3", "e", "f"))]),
    "blank-lines-crlf": Case(
        HC + b'1,"a",b\r\n\r\n2,c,d\r\n\r\n\r\n3,e,f\r\n\r\n',
        [(2, ("1", "a", "b")), (4, ("2", "c", "d")), (7, ("3", "e", "f"))]),
    # Without a quote in the file, a blank line between records is found by the record counts
    # differing (engine.arrow.records._scan_plain): the file is read line by line, exactly.
    "blank-lines-lf-no-quotes": Case(
        H + b"1,a,b\n\n2,c,d\n\n",
        [(2, ("1", "a", "b")), (4, ("2", "c", "d"))], path="line_by_line"),
    "blank-lines-crlf-no-quotes": Case(
        HC + b"1,a,b\r\n\r\n2,c,d\r\n\r\n",
        [(2, ("1", "a", "b")), (4, ("2", "c", "d"))], path="line_by_line"),
    "trailing-blank-lines-no-quotes": Case(
        H + b"1,a,b\n2,c,d\n\n\r\n\n",
        [(2, ("1", "a", "b")), (3, ("2", "c", "d"))]),
    "trailing-blank-lines-crlf-no-quotes": Case(
        HC + b"1,a,b\r\n2,c,d\r\n\r\n\r\n",
        [(2, ("1", "a", "b")), (3, ("2", "c", "d"))]),
    "multi-line-record-then-blank-line": Case(
        H + b'1,"a\nb",c\n\n2,d,e\n',
        [(2, ("1", "a\nb", "c")), (5, ("2", "d", "e"))]),
    "multi-line-record-then-blank-line-crlf": Case(
        HC + b'1,"a\r\nb",c\r\n\r\n2,d,e\r\n\r\n',
        [(2, ("1", "a\r\nb", "c")), (5, ("2", "d", "e"))]),
    "next-line-starts-with-the-closing-quote": Case(
        H + b'1,"a\n",x\n2,c,d\n',
        [(2, ("1", "a\n", "x")), (4, ("2", "c", "d"))]),
    "next-line-starts-with-a-doubled-quote": Case(
        H + b'1,"a\n""b""",x\n2,c,d\n',
        [(2, ("1", 'a\n"b"', "x")), (4, ("2", "c", "d"))]),
    "next-line-closes-then-opens-a-field": Case(
        H + b'1,"a\n","b\r\nc"\n2,d,e\n',
        [(2, ("1", "a\n", "b\r\nc")), (5, ("2", "d", "e"))]),
    "next-line-is-the-closing-quote": Case(
        H + b'1,x,"a\n"\n2,c,d\n',
        [(2, ("1", "x", "a\n")), (4, ("2", "c", "d"))]),
    "cr-alone-inside-a-quoted-field": Case(
        H + b'1,"a\rb",x\n2,c,d\n',
        [(2, ("1", "a\rb", "x")), (3, ("2", "c", "d"))]),
    "int-column-quoted-or-not": Case(
        b"id,n,note\n" + b'a,"12",x\nb,7,"y\nz"\nc,,w\nd,"",v\n',
        [(2, ("a", 12, "x")), (3, ("b", 7, "y\nz")), (5, ("c", None, "w")), (6, ("d", None, "v"))],
        dataset="counts"),
    # Not RFC 4180, but read as pyarrow and Python's csv read it: a quote inside an unquoted
    # field is a literal character.
    "literal-quote-inside-an-unquoted-field": Case(
        H + b'1,ab"c,x\n2,"d\ne",f\n3,g"",h\n',
        [(2, ("1", 'ab"c', "x")), (3, ("2", "d\ne", "f")), (5, ("3", 'g""', "h"))], path="line_by_line"),
}


@pytest.mark.parametrize("case", VALID.values(), ids=VALID.keys())
def test_valid_text(case: Case, datasets, tmp_path, monkeypatch) -> None:
    expected, _ = oracle(case.data)
    if case.dataset == "counts":  # the int column
        expected = [(n, (i, None if v is None else int(v), t)) for n, (i, v, t) in expected]
    assert expected == case.staged, "the case disagrees with Python's csv module"
    out = stage(datasets[case.dataset], case.data, tmp_path, monkeypatch)
    assert out.staged == case.staged
    assert out.quarantined == []
    assert out.result.rows_read == len(case.staged)
    assert out.result.read_path == case.path


@pytest.mark.parametrize("case", VALID.values(), ids=VALID.keys())
def test_valid_text_in_tiny_blocks(case: Case, datasets, tmp_path, monkeypatch) -> None:
    """The same texts in pyarrow blocks as small as their longest record, and a little longer: block
    boundaries fall inside quoted fields, after closing quotes and between "\r" and "\n"."""
    _, blank_between = oracle(case.data)
    smallest = max(longest_record(case.data, [n for n, _ in case.staged]), 16)
    for block in (smallest + k for k in (0, 1, 2, 3, 5, 8, 13, 21)):
        out = stage(datasets[case.dataset], case.data, tmp_path, monkeypatch, block)
        assert (block, out.staged, out.quarantined) == (block, case.staged, [])
        # A blank line in a block without quotes is only found by the counts (see above).
        allowed = {case.path, "line_by_line"} if blank_between else {case.path}
        assert out.result.read_path in allowed, block


# ----------------------------------------------------------------------------------------------
# 2. Really broken text: only the first line of a broken record is lost to quarantine


@dataclass(frozen=True)
class Broken:
    data: bytes
    staged: list[tuple[int, tuple]]
    quarantined: list[tuple[int, str]]
    raw: dict[int, str]  # _raw_record of some quarantined lines


BROKEN = {
    "text-after-a-closing-quote": Broken(
        H + b'1,a,b\n2,"ab"c,x\n3,d,e\n',
        [(2, ("1", "a", "b")), (4, ("3", "d", "e"))], [(3, "structure")], {3: '2,"ab"c,x'}),
    "text-after-a-closing-quote-on-a-later-line": Broken(
        # line 3 alone (b"c,x) has 2 fields: it is broken too
        H + b'1,"a\nb"c,x\n2,d,e\n',
        [(4, ("2", "d", "e"))], [(2, "structure"), (3, "structure")], {2: '1,"a'}),
    "quote-never-closed-at-eof": Broken(
        H + b'1,a,b\n2,"open,x\n3,c,d\n4,e,f\n',
        [(2, ("1", "a", "b")), (4, ("3", "c", "d")), (5, ("4", "e", "f"))], [(3, "structure")],
        {3: '2,"open,x'}),
    "quote-never-closed-until-a-later-quote-with-text-after-it": Broken(
        H + b'1,"open,x\n2,c,d\n3,"e",f\n4,g,h\n',
        [(3, ("2", "c", "d")), (4, ("3", "e", "f")), (5, ("4", "g", "h"))], [(2, "structure")],
        {2: '1,"open,x'}),
    "wrong-field-counts": Broken(
        H + b'1,a,b\n2,c\n3,d,e,f\n"4","g"\n5,"h\ni",j\n',
        [(2, ("1", "a", "b")), (6, ("5", "h\ni", "j"))],
        [(3, "structure"), (4, "structure"), (5, "structure")], {3: "2,c", 5: '"4","g"'}),
    "a-multi-line-record-with-the-wrong-field-count-is-quarantined-whole": Broken(
        # well-formed RFC 4180 over lines 3-4, four fields: one record, never staged in pieces
        H + b'1,a,b\n2,"c\nd",e,f\n3,g,h\n',
        [(2, ("1", "a", "b")), (5, ("3", "g", "h"))], [(3, "structure")], {3: '2,"c\nd",e,f'}),
    "wrong-field-count-crlf": Broken(
        HC + b'1,a,b\r\n2,c\r\n3,"d\r\ne",f\r\n',
        [(2, ("1", "a", "b")), (4, ("3", "d\r\ne", "f"))], [(3, "structure")], {3: "2,c"}),
    "bare-cr-in-an-unquoted-field": Broken(
        H + b'1,a,b\n2,c\rd,e\n3,"f\ng",h\n',
        [(2, ("1", "a", "b")), (4, ("3", "f\ng", "h"))], [(3, "structure")], {3: "2,c\rd,e"}),
    "invalid-utf8-in-a-plain-line": Broken(
        H + b'1,a,b\n2,\xff\xfe,c\n3,"d\ne",f\n',
        [(2, ("1", "a", "b")), (4, ("3", "d\ne", "f"))], [(3, "encoding")], {3: "2,\\xff\\xfe,c"}),
    "invalid-utf8-inside-a-multi-line-field": Broken(
        # line 3 opens the field, line 4 holds the bad bytes; reading restarts on each next line
        H + b'1,a,b\n2,"x\ny\xffz\nw",c\n3,d,e\n',
        [(2, ("1", "a", "b")), (6, ("3", "d", "e"))],
        [(3, "structure"), (4, "encoding"), (5, "structure")], {3: '2,"x', 4: "y\\xffz", 5: 'w",c'}),
    "invalid-utf8-on-the-first-line-of-a-multi-line-field": Broken(
        H + b'1,"x\xff\ny",c\n2,d,e\n',
        [(4, ("2", "d", "e"))], [(2, "encoding"), (3, "structure")], {2: '1,"x\\xff'}),
}


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_broken_text(case: Broken, datasets, tmp_path, monkeypatch) -> None:
    assert oracle_line_by_line(case.data) == (case.staged, case.quarantined), "the case disagrees with the oracle"
    for block in (DEFAULT_BLOCK, 32, 41):
        out = stage(datasets["notes"], case.data, tmp_path, monkeypatch, block)
        assert out.result.read_path == "line_by_line"
        assert out.staged == case.staged, block
        assert out.quarantined == case.quarantined, block
        assert {n: out.raw[n] for n in case.raw} == case.raw
        records = len(case.staged) + len(case.quarantined)
        assert out.result.rows_read == records


# ----------------------------------------------------------------------------------------------
# Regressions found with the tests above


def test_quoted_crlf_split_between_two_reads(datasets, tmp_path, monkeypatch) -> None:
    """pyarrow drops the "\\n" of a quoted CRLF whose "\\r" ends one read and "\\n" starts the next
    (apache/arrow#51368): the engine never hands it a read ending on "\\r". Every block size
    below puts some quoted CRLF across a boundary, on the fast path and on the line-by-line copy."""
    body = b"".join(b'%d,"line\r\nbreak %d",x\r\n' % (i, i) for i in range(12))
    expected = [(2 + 2 * i, (str(i), f"line\r\nbreak {i}", "x")) for i in range(12)]
    for block in range(32, 54):
        out = stage(datasets["notes"], HC + body, tmp_path, monkeypatch, block)
        assert (block, out.result.read_path, out.staged) == (block, "fast", expected)
    broken = HC + b"0,bad\r\n" + body  # one broken line first: the copy is read in blocks too
    shifted = [(n + 1, v) for n, v in expected]
    for block in range(32, 54):
        out = stage(datasets["notes"], broken, tmp_path, monkeypatch, block)
        assert (block, out.result.read_path, out.staged, out.quarantined) == \
               (block, "line_by_line", shifted, [(2, "structure")])


def test_closing_quote_at_the_end_of_a_read(datasets, tmp_path, monkeypatch) -> None:
    """A closing quote that is a read's last byte is checked against the next read's first byte
    (the check once always failed: -1 past the end became 255 in uint8, which sent the file line
    by line)."""
    data = H + b"".join(b'%d,"a\nb",x\n' % i for i in range(30))
    expected = [(2 + 2 * i, (str(i), "a\nb", "x")) for i in range(30)]
    for block in range(24, 48):
        out = stage(datasets["notes"], data, tmp_path, monkeypatch, block)
        assert (block, out.result.read_path, out.staged) == (block, "fast", expected)


def test_plain_reads_after_a_quoted_one(datasets, tmp_path, monkeypatch) -> None:
    """Reads without a quote after one with a quote (the scanner once failed with a TypeError),
    with blank lines at the end taken back."""
    rows = b"".join(b"%d,plain,x\n" % i for i in range(2, 31))
    expected = [(2, ("1", "a,b", "x"))] + [(i + 1, (str(i), "plain", "x")) for i in range(2, 31)]
    for tail in (b"", b"\n", b"\n\r\n\n"):
        for block in (32, 47, 64, 100, 1000):
            out = stage(datasets["notes"], H + b'1,"a,b",x\n' + rows + tail, tmp_path, monkeypatch, block)
            assert (tail, block, out.result.read_path, out.staged) == (tail, block, "fast", expected)


def test_blocks_of_blank_lines_only(datasets, tmp_path, monkeypatch) -> None:
    """pyarrow returns empty batches for blocks holding only blank lines (the scanner once failed
    on taking 0 lines)."""
    data = H + b'"1",a,b\n' + b"\n" * 300 + b"2,c,d\n" + b"\r\n" * 200 + b'3,"e",f\n'
    expected = [(2, ("1", "a", "b")), (303, ("2", "c", "d")), (504, ("3", "e", "f"))]
    for block in (64, 100):
        out = stage(datasets["notes"], data, tmp_path, monkeypatch, block)
        assert out.staged == expected
        assert out.quarantined == []


# ----------------------------------------------------------------------------------------------
# 3. Seeded random files against the oracle


WORDS = ["a", "bc", "x y", "0", "42", " sp ", "é", "naïve", "日本", "😀", "ß€"]
QUOTED_PARTS = [*WORDS, ",", ",,", '""', '""""', "\n", "\r\n", "\n\n", "\r\n\r\n", ",\n", '\n""', '\r\n""x',
                '""\n', "\r"]


def random_field(rng: random.Random) -> bytes:
    k = rng.random()
    if k < 0.12:
        return b""
    if k < 0.17:
        return b'""'
    if k < 0.5:
        return rng.choice(WORDS).encode()
    return b'"' + "".join(rng.choice(QUOTED_PARTS) for _ in range(rng.randint(1, 5))).encode() + b'"'


def random_record(rng: random.Random) -> bytes:
    return b",".join(random_field(rng) for _ in range(3))


def random_file(rng: random.Random) -> list[bytes]:
    """The header and records of a valid text, each with its line end, blank lines among them."""
    eol = rng.choice([b"\n", b"\r\n"])
    parts = [b"id,note,extra" + eol]
    for _ in range(rng.randint(1, 30)):
        if rng.random() < 0.07:
            parts.append(rng.choice([b"\n", b"\r\n"]))
        parts.append(random_record(rng) + (eol if rng.random() < 0.85 else rng.choice([b"\n", b"\r\n"])))
    r = rng.random()
    if r < 0.2:
        parts[-1] = parts[-1].removesuffix(b"\n").removesuffix(b"\r")  # no final line end
    elif r < 0.3:
        parts.append(rng.choice([b"\n", b"\r\n\r\n", b"\n\n\n"]))
    return parts


def boundaries(data: bytes, block: int) -> Counter:
    """What the block boundaries of one reading fall between (roughly: held "\\r" move them)."""
    seen: Counter = Counter()
    for cut in range(block, len(data), block):
        pair = data[cut - 1:cut + 1]
        seen["quote|"] += pair[:1] == b'"'
        seen["\\r|\\n"] += pair == b"\r\n"
    return seen


def test_random_valid_files(datasets, tmp_path, monkeypatch) -> None:
    hits: Counter = Counter()
    paths: Counter = Counter()
    for seed in range(250):
        rng = random.Random(seed)
        data = b"".join(random_file(rng))
        expected, blank_between = oracle(data)
        assert all(len(v) == 3 for _, v in expected), (seed, data)
        block = longest_record(data, [n for n, _ in expected]) + rng.randrange(0, 40)
        hits += boundaries(data, block)
        out = stage(datasets["notes"], data, tmp_path, monkeypatch, block)
        assert (out.staged, out.quarantined) == (expected, []), (seed, block, data)
        assert out.result.rows_read == len(expected)
        if not blank_between:  # a blank line in a block without quotes is found by the counts
            assert out.result.read_path == "fast", (seed, block, data)
        paths[out.result.read_path] += 1
    assert hits["quote|"] >= 50 and hits["\\r|\\n"] >= 20, hits  # the boundaries fell everywhere
    assert paths["fast"] >= 230, paths


BREAKERS = [
    b'9,"ab"c,x',  # text after a closing quote
    b"9,two",  # too few fields
    b"9,a,b,c",  # too many
    b'9,"never closed,x',  # a later quote may "close" it, with text after it
    b"9,\xff\xfe,x",  # not UTF-8
    b'9,"ok\nbad \xc3\x28\nend",x',  # not UTF-8, inside a multi-line quoted field
    b"9,a\rb,x",  # a bare CR in an unquoted field
    b'9,"a"\rb,x',  # a bare CR after a closing quote
]


def test_random_files_with_a_broken_record(datasets, tmp_path, monkeypatch) -> None:
    for seed in range(120):
        rng = random.Random(1000 + seed)
        parts = random_file(rng)
        if not parts[-1].endswith(b"\n"):
            parts[-1] += b"\n"
        at = rng.randint(1, len(parts))
        parts.insert(at, rng.choice(BREAKERS) + rng.choice([b"\n", b"\r\n"]))
        data = b"".join(parts)
        staged, quarantined = oracle_line_by_line(data)
        assert quarantined, (seed, data)
        block = max(longest_record(data, sorted([n for n, _ in staged] + [n for n, _ in quarantined])), 16)
        block += rng.randrange(0, 40)
        out = stage(datasets["notes"], data, tmp_path, monkeypatch, block)
        assert out.result.read_path == "line_by_line", (seed, data)
        assert (out.staged, out.quarantined) == (staged, quarantined), (seed, block, data)


# ----------------------------------------------------------------------------------------------
# 4. RecordScanner alone, in reads of every size


def scan(data: bytes, size: int) -> tuple[list[int], tuple[int, str] | None]:
    scanner = RecordScanner(io.BytesIO(data), CsvOptions())
    got = b""
    while b := scanner.read(size):
        got += b
    assert got == data and scanner.eof and scanner.size == len(data)
    return scanner.take(scanner.records).tolist(), scanner.anomaly


EXACT = {
    "plain-lf": (b"h\n1\n2\n", [2, 3]),
    "plain-crlf": (b"h\r\n1\r\n2\r\n", [2, 3]),
    "no-final-newline": (b"h\n1\n2", [2, 3]),
    "no-final-newline-quoted": (b'h\n1\n"2\n"', [2, 3]),
    "quoted-lf-and-crlf": (b'h\n"a\nb"\n"c\r\nd"\r\ne\n', [2, 4, 6]),
    "quoted-blank-lines": (b'h\n"\n\n",x\n"\r\n\r\n"\r\ny\n', [2, 5, 8]),
    "closing-quote-then-delimiter-or-line-end": (b'h,i\n"a","b"\r\n"c",d\n"e"\n', [2, 3, 4]),
    "doubled-quotes": (b'h,i\n"a""b",""""\n"""",c\n', [2, 3]),
    "cr-inside-quotes-at-every-place": (b'h\n"a\r\n\rb"\r\n"\r"\r\n', [2, 4]),
    "bom-quoted-header": (BOM + b'"h","i"\n"a",b\n', [2]),
    "bom-plain": (BOM + b"h,i\r\na,b", [2]),
    "trailing-blank-lines": (b"h\n1\n2\n\n\r\n\n", [2, 3]),
    "trailing-blank-lines-after-quotes": (b'h\n"1"\n2\n\n\r\n\n', [2, 3]),
    "trailing-blank-lines-after-a-quoted-record": (b'h\n1\n"2\n"\r\n\r\n\n', [2, 3]),
    "trailing-blank-lines-after-an-open-record": (b'h\n"1",x\n\n\n', [2]),
}


@pytest.mark.parametrize(("data", "lines"), EXACT.values(), ids=EXACT.keys())
def test_scanner_exact(data: bytes, lines: list[int]) -> None:
    for size in range(1, 21):
        assert scan(data, size) == (lines, None), size


BLANK_BETWEEN = {
    "plain": (b"h\n1\n\n2\n", [2, 4]),
    "crlf": (b"h\r\n1\r\n\r\n2\r\n", [2, 4]),
    "quoted": (b'h\n"1"\n\n"2"\n', [2, 4]),
    "after-a-multi-line-record": (b'h\n"a\nb"\n\n\r\n"c"\n', [2, 6]),
}


@pytest.mark.parametrize(("data", "lines"), BLANK_BETWEEN.values(), ids=BLANK_BETWEEN.keys())
def test_scanner_blank_lines_between_records(data: bytes, lines: list[int]) -> None:
    """A blank line between records is found in a read with a quote; in a read without one it is
    counted as a record, so the count is higher than pyarrow's and the file goes line by line.
    Either way the scanner never gives other lines for the right count."""
    for size in range(1, 21):
        got, anomaly = scan(data, size)
        assert anomaly is None
        assert got == lines or len(got) > len(lines), size
    assert scan(data, len(data))[0] == lines or b'"' not in data


ANOMALIES = {
    "text-after-a-closing-quote": (b'h,i\n1,"ab"c\n', (2, "text after the closing quote of a field")),
    "closing-quote-then-cr-then-text": (b'h,i\n"a"\rx,y\n', (2, "text after the closing quote of a field")),
    "closing-quote-then-space": (b'h,i\n1,x\n"a" ,y\n', (3, "text after the closing quote of a field")),
    "quote-inside-an-unquoted-field": (b'h,i\n1,ab"c"\n', (2, "a quote inside an unquoted field")),
    "quote-after-a-bare-cr": (b'h,i\n1,a\r"b"\n', (2, "a quote inside an unquoted field")),
    "never-closed": (b'h\n1\n"abc\n2\n', (3, "a quoted field opened on line 3 is never closed")),
    "never-closed-after-multi-line-records": (b'h\n"a\nb"\n"c\r\n', (4, "a quoted field opened on line 4 is never "
                                                                        "closed")),
}


@pytest.mark.parametrize(("data", "anomaly"), ANOMALIES.values(), ids=ANOMALIES.keys())
def test_scanner_anomalies(data: bytes, anomaly: tuple[int, str]) -> None:
    for size in range(1, 21):
        assert scan(data, size)[1] == anomaly, size


def test_whole_crlf_never_ends_a_read_on_cr() -> None:
    data = b'h\r\n"a\r\nb"\r\r\n' + b"\r" * 25 + b'x\r\n"c\r\n"\r'
    for size in range(1, 21):
        stream, reads = WholeCRLF(io.BytesIO(data)), []
        while b := stream.read(size):
            reads.append(b)
        assert b"".join(reads) == data
        assert not any(r.endswith(b"\r") for r in reads[:-1]), size
        # longer than asked only to get past carriage returns: they and one byte more
        assert all(len(r) <= size or len(r.lstrip(b"\r")) == 1 for r in reads), size


def test_read_ahead_is_bounded(datasets, tmp_path, monkeypatch, read_aheads) -> None:
    """Hundreds of blocks with records much shorter than one (the proportions of 8 MiB blocks and
    4 MiB records, scaled down): pyarrow reads two blocks ahead of the batch taken, no further,
    and never waits on it."""
    import engine.arrow.records

    monkeypatch.setattr(engine.arrow.records, "MAX_RECORD_BYTES", 128)
    rows = b"".join(b"%d,note %d,x\n" % (i, i) for i in range(5_000))
    out = stage(datasets["notes"], H + rows, tmp_path, monkeypatch, 256)
    assert out.result.rows_staged == 5_000
    assert [round(r.most_ahead) for r in read_aheads] == [2]
    assert read_aheads[0]._read // 256 > 100  # many blocks: the bound was tested, not the file's size


def test_read_ahead_for_block_sizes() -> None:
    assert read_ahead_for(engine.arrow.BLOCK_SIZE) == 2
    assert read_ahead_for(1 << 20) == 5  # a 4 MiB record starting in a 1 MiB block reaches 4 more


def test_read_ahead_slows_a_reader_that_needs_more() -> None:
    """With a bound pyarrow cannot work within (one block: it needs the next one before handing
    a batch over), each wait runs out of patience and the reading goes on, complete."""
    import pyarrow.csv as pacsv

    data = b"a,b\n" + b"".join(b"%d,y\n" % i for i in range(100))
    ahead = ReadAhead(io.BytesIO(data), 256, 1, patience=0.02)
    reader = pacsv.open_csv(ahead, read_options=pacsv.ReadOptions(block_size=256))
    assert sum(batch.num_rows for batch in ahead.batches(reader)) == 100
    assert ahead.stalls > 0
