"""Bad deliveries, end to end through the Dagster assets: nothing is ever lost.

- A file that does not fit its dataset as a whole (empty, header only, wrong columns, the legacy
  2009 TLC layout) is rejected: the ``contract`` check fails with a message naming the file, the
  dataset and the reason; the step fails; the landed bytes stay in landing, byte for byte; nothing
  of it reaches staging or quarantine, and no ``_tmp`` object is left behind.
- A bad row (wrong type, broken rule, unbalanced quote, bytes that are not UTF-8) costs only that
  row: it is quarantined with its exact line, failed rules/columns and original value, and
  rows read = rows staged + rows quarantined = the records in the file.
- Line endings, a byte-order mark and re-deliveries change nothing in what is staged.

Inputs are built from the first lines of the real samples, so every line number is known.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from support import SAMPLES, Ingested, dataset_defs, ingest, lake_files, published_file, query, view_files

from assets.ingest import LandingConfig
from core.arrival import Cursor, FileEntry, plan_tick
from core.zones import all_datasets
from resources.platform import PlatformResource

BOM = b"\xef\xbb\xbf"
ZONES = ("landing", "staging", "quarantine")


@dataclass(frozen=True)
class Kind:
    dataset_id: str
    sample: Path
    file_name: str  # with one {} for the variant
    identity: tuple[tuple[str, str], ...]  # (source header, target column): ties a staged row to its line
    rows: int  # data lines taken from the sample: one bad row stays within max_quarantine_ratio

    @property
    def zone(self) -> str:
        return self.dataset_id.split("__")[0]

    @property
    def name(self) -> str:
        return self.dataset_id.split("__")[1]

    @property
    def label(self) -> str:  # how messages name the dataset
        return f"{self.zone}.{self.name}"

    def view(self, zone: str) -> str:
        return f"{zone}_{self.zone}.{self.name}"

    def file(self, variant: str) -> str:
        return self.file_name.format(variant)

    def lines(self) -> list[bytes]:
        """Header and the first ``rows`` data lines of the sample, without line ends."""
        return self.sample.read_bytes().split(b"\n")[: self.rows + 1]


YELLOW = Kind(
    "mobility__yellow_trips",
    SAMPLES / "mobility" / "yellow_trips" / "yellow_tripdata_2019-06_sample.csv",
    "yellow_tripdata_2019-06_{}.csv",
    (("tpep_pickup_datetime", "pickup_at"), ("PULocationID", "pickup_location_id"),
     ("DOLocationID", "dropoff_location_id")),
    rows=100,  # max_quarantine_ratio 2%
)
EXPENSES = Kind(
    "finance__expense_reports",
    SAMPLES / "finance" / "expense_reports" / "expenses_2026-11-16.csv",
    "expenses_2026-11-16_{}.csv",
    (("report_id", "report_id"), ("line_number", "line_number")),
    rows=40,  # max_quarantine_ratio 5%
)
LEGACY_2009 = SAMPLES / "mobility" / "yellow_trips" / "yellow_tripdata_2009-01_sample.csv"
BAD = 5  # index in the list of physical lines (header = 0): the corrupted record is on line 6 of the file


# ----------------------------------------------------------------------------------------------
# Building inputs


def join(lines: list[bytes], eol: bytes = b"\n") -> bytes:
    return eol.join(lines) + eol


def names(header: bytes) -> list[str]:
    return [h.strip(b'"').decode() for h in header.lstrip(BOM).split(b",")]


def set_field(header: bytes, line: bytes, column: str, value: bytes) -> bytes:
    """Replace one field of a sample line (the samples have no delimiter inside values), keeping
    its quoting."""
    fields = line.split(b",")
    i = names(header).index(column)
    quote = b'"' if fields[i].startswith(b'"') else b""
    fields[i] = quote + value + quote
    return b",".join(fields)


def field(header: bytes, line: bytes, column: str) -> str:
    return next(csv.reader([line.decode()]))[names(header).index(column)]


def drop_column(lines: list[bytes], column: str) -> list[bytes]:
    i = names(lines[0]).index(column)
    return [b",".join(f for j, f in enumerate(line.split(b",")) if j != i) for line in lines]


def records(lines: list[bytes]) -> dict[int, bytes]:
    """Line number → bytes of every record (non-blank line after the header)."""
    return {n: line for n, line in enumerate(lines[1:], start=2) if line.strip()}


# ----------------------------------------------------------------------------------------------
# Looking at the outcome


def meta(check: dg.AssetCheckEvaluation) -> dict:
    return {k: v.value for k, v in check.metadata.items()}


def landed(home: Path, kind: Kind, ing: Ingested, name: str) -> Path:
    return home / "lake" / "landing" / kind.zone / kind.name / ing.partition_key / name


def tmp_leftovers(home: Path) -> list[Path]:
    return [p for zone in ZONES for p in lake_files(home, zone) if "_tmp" in p.parts]


def quarantine_rows(home: Path, kind: Kind, name: str, *columns: str) -> list[dict]:
    cols = ["_source_line", "_failed_rules", "_failed_columns", "_errors", "_raw_record", *columns]
    rows = query(home, f"select {', '.join(cols)} from {kind.view('quarantine')} "
                       "where _source_file = ? order by _source_line", [name])
    return [dict(zip(cols, r, strict=True)) for r in rows]


def count(home: Path, kind: Kind, zone: str, name: str) -> int:
    return query(home, f"select count(*) from {kind.view(zone)} where _source_file = ?", [name])[0][0]


def assert_nothing_lost(home: Path, kind: Kind, ing: Ingested, name: str, data: bytes,
                        recs: dict[int, bytes], quarantined: set[int]) -> None:
    """Every record of the file is either staged (as the record on its line) or quarantined."""
    checks = ing.checks()
    n, q = len(recs), len(quarantined)
    assert meta(checks["reconciliation"]) == {"rows_read": n, "rows_staged": n - q, "rows_quarantined": q}
    assert checks["reconciliation"].passed
    assert ing.success, ing.failure_message()
    assert checks["contract"].passed, checks["contract"].description
    assert meta(checks["contract"])["rows_read"] == n
    assert ing.materializations()["staging"].metadata["published"].value is True
    assert landed(home, kind, ing, name).read_bytes() == data
    assert tmp_leftovers(home) == []

    header = kind.lines()[0]
    ids = ", ".join(f"cast({target} as varchar)" for _, target in kind.identity)
    staged = query(home, f"select _source_line, {ids} from {kind.view('staging')} "
                         "where _source_file = ? order by _source_line", [name])
    assert [r[0] for r in staged] == sorted(set(recs) - quarantined)
    for line, *values in staged:
        assert values == [field(header, recs[line], source) for source, _ in kind.identity], f"line {line}"
    assert [r["_source_line"] for r in quarantine_rows(home, kind, name)] == sorted(quarantined)


def assert_rejected(home: Path, kind: Kind, ing: Ingested, name: str, data: bytes, *reasons: str) -> dict:
    """The file is rejected as a whole, it is still in landing and nothing of it went further.
    Returns the contract check's metadata."""
    assert not ing.success
    check = ing.checks()["contract"]
    assert not check.passed
    failure = ing.failure_message()
    for text in (check.description, failure):
        assert f"{name} rejected for dataset {kind.label}" in text, text
        for reason in reasons:
            assert reason in text, text
    assert "stays in landing" in failure
    assert set(ing.materializations()) == {"landing"}

    assert landed(home, kind, ing, name).read_bytes() == data
    for zone in ("staging", "quarantine"):
        assert [p for p in lake_files(home, zone) if ing.partition_key in p.name] == []
        assert count(home, kind, zone, name) == 0
    assert tmp_leftovers(home) == []
    # The earlier, good delivery is untouched.
    assert count(home, kind, "staging", kind.file("baseline")) == 10
    return meta(check)


def ingest_baseline(home: Path, kind: Kind) -> None:
    """A good delivery first, so the catalog views exist and a rejection can be seen not to touch them."""
    lines = kind.lines()[:11]
    ing = ingest(home, kind.dataset_id, join(lines), name=kind.file("baseline"))
    assert ing.success, ing.failure_message()


# ----------------------------------------------------------------------------------------------
# Whole-file problems: rejected, kept in landing


@pytest.mark.parametrize(
    ("kind", "column"),
    [
        pytest.param(YELLOW, "PULocationID", id="yellow-PULocationID"),
        pytest.param(YELLOW, "tpep_dropoff_datetime", id="yellow-tpep_dropoff_datetime"),
        pytest.param(EXPENSES, "employee_id", id="expenses-employee_id"),
    ],
)
def test_missing_column_rejects_the_file(home: Path, kind: Kind, column: str):
    ingest_baseline(home, kind)
    data = join(drop_column(kind.lines(), column))
    name = kind.file("missing")
    ing = ingest(home, kind.dataset_id, data, name=name)
    details = assert_rejected(home, kind, ing, name, data,
                              f"the header does not match the contract (missing columns: {column})")
    assert details["missing_columns"] == [column]
    assert details["unexpected_columns"] == []


def test_a_renamed_column_is_rejected_with_the_fix(home: Path):
    """A column renamed at the source (tip_amount → Tip_Amt) is missing and unexpected at once: the
    rejection says which line of the zone YAML would accept it, and changes nothing itself."""
    ingest_baseline(home, YELLOW)
    lines = YELLOW.lines()
    lines[0] = lines[0].replace(b"tip_amount", b"Tip_Amt")
    data = join(lines)
    name = YELLOW.file("renamed")
    ing = ingest(home, YELLOW.dataset_id, data, name=name)
    details = assert_rejected(
        home, YELLOW, ing, name, data,
        "(missing columns: tip_amount; unexpected columns: Tip_Amt). If the file is right and the contract "
        "is not, in platform/zones/mobility.yaml add `source: Tip_Amt` to `tip_amount`, then deliver the file again")
    assert details["suggested_sources"] == {"tip_amount": "Tip_Amt"}
    assert "re-execute this run to stage it from there" in ing.failure_message()


def test_a_rejected_run_re_executed_after_the_fix_stages_the_landed_bytes(home: Path):
    """The rejection's advice works: with the suggested line in the contract, the same run (same
    partition, the file long gone from ingress) stages the bytes kept in landing."""
    ingest_baseline(home, YELLOW)
    lines = YELLOW.lines()
    lines[0] = lines[0].replace(b"tip_amount", b"Tip_Amt")
    name = YELLOW.file("renamed")
    with dg.instance_for_test() as instance:
        ing = ingest(home, YELLOW.dataset_id, join(lines), name=name, instance=instance)
        assert not ing.success and not ing.ingress_file.exists()
        ds = {d.id: d for d in all_datasets()}[YELLOW.dataset_id]
        contract = ds.spec.contract
        fixed_columns = {**contract.columns, "tip_amount": contract.columns["tip_amount"].model_copy(
            update={"source": "Tip_Amt"})}
        fixed = dataclasses.replace(ds, spec=ds.spec.model_copy(update={"contract": contract.model_copy(
            update={"columns": fixed_columns})}))
        defs = dataset_defs(fixed)
        again = dg.materialize(
            [defs.assets], partition_key=ing.partition_key, instance=instance, raise_on_error=False,
            resources={"platform": PlatformResource(environment="local", home=str(home))},
            run_config=defs.run_config(LandingConfig(ingress_file=name)))
    assert again.success
    assert count(home, YELLOW, "staging", name) == YELLOW.rows


def test_unrelated_extra_and_missing_columns_get_no_suggestion(home: Path):
    ingest_baseline(home, YELLOW)
    lines = drop_column(YELLOW.lines(), "tip_amount")
    lines = [lines[0] + b",zzz_weather"] + [line + b",sunny" for line in lines[1:]]
    data = join(lines)
    name = YELLOW.file("unrelated")
    ing = ingest(home, YELLOW.dataset_id, data, name=name)
    details = assert_rejected(home, YELLOW, ing, name, data,
                              "(missing columns: tip_amount; unexpected columns: zzz_weather)")
    assert details["suggested_sources"] == {}
    assert "If the file is right" not in ing.checks()["contract"].description


@pytest.mark.parametrize(
    ("kind", "extra", "value"),
    [
        pytest.param(YELLOW, b"tip_currency", b"USD", id="yellow"),
        pytest.param(EXPENSES, b'"approved_by"', b'"E100001"', id="expenses"),
    ],
)
def test_unexpected_column_rejects_the_file(home: Path, kind: Kind, extra: bytes, value: bytes):
    ingest_baseline(home, kind)
    header, *rows = kind.lines()
    data = join([header + b"," + extra] + [r + b"," + value for r in rows])
    name = kind.file("extra")
    ing = ingest(home, kind.dataset_id, data, name=name)
    column = extra.strip(b'"').decode()
    details = assert_rejected(home, kind, ing, name, data,
                              f"the header does not match the contract (unexpected columns: {column})")
    assert details["unexpected_columns"] == [column]
    assert details["missing_columns"] == []


@pytest.mark.parametrize(
    ("kind", "data", "reason"),
    [
        pytest.param(YELLOW, b"", "the file is empty (0 bytes)", id="yellow-0-bytes"),
        pytest.param(EXPENSES, b"", "the file is empty (0 bytes)", id="expenses-0-bytes"),
        pytest.param(YELLOW, b"\r\n", "line 1 (header) is blank", id="yellow-one-blank-line"),
    ],
)
def test_empty_file_is_rejected(home: Path, kind: Kind, data: bytes, reason: str):
    ingest_baseline(home, kind)
    name = kind.file("empty")
    ing = ingest(home, kind.dataset_id, data, name=name)
    details = assert_rejected(home, kind, ing, name, data, reason)
    assert details["reason"] == reason


@pytest.mark.parametrize(
    ("kind", "shape"),
    [
        pytest.param(YELLOW, "lf", id="yellow-lf"),
        pytest.param(YELLOW, "crlf", id="yellow-crlf"),
        pytest.param(YELLOW, "bom", id="yellow-bom"),
        pytest.param(YELLOW, "no-final-newline", id="yellow-no-final-newline"),
        pytest.param(YELLOW, "blank-lines-after-header", id="yellow-blank-lines-after-header"),
        pytest.param(EXPENSES, "lf", id="expenses-lf"),
    ],
)
def test_header_only_file_is_rejected(home: Path, kind: Kind, shape: str):
    ingest_baseline(home, kind)
    header = kind.lines()[0]
    data = {
        "lf": header + b"\n",
        "crlf": header + b"\r\n",
        "bom": BOM + header + b"\n",
        "no-final-newline": header,
        "blank-lines-after-header": header + b"\n\n\n",
    }[shape]
    name = kind.file("header_only")
    ing = ingest(home, kind.dataset_id, data, name=name)
    assert_rejected(home, kind, ing, name, data, "the file has a header but no data rows")


def test_legacy_2009_file_is_rejected(home: Path):
    """The 2009 TLC layout (vendor_name, Trip_Pickup_DateTime, Start_Lon, ...) is another dataset."""
    ingest_baseline(home, YELLOW)
    data = LEGACY_2009.read_bytes()
    ing = ingest(home, YELLOW.dataset_id, LEGACY_2009)
    details = assert_rejected(
        home, YELLOW, ing, LEGACY_2009.name, data,
        "the header does not match the contract (missing columns: VendorID, tpep_pickup_datetime, "
        "tpep_dropoff_datetime, RatecodeID, store_and_fwd_flag, PULocationID, DOLocationID, fare_amount, "
        "extra, tip_amount, tolls_amount, improvement_surcharge, total_amount; ",
        "unexpected columns: <unnamed>, vendor_name, Trip_Pickup_DateTime, Trip_Dropoff_DateTime, Start_Lon",
    )
    assert {"VendorID", "tpep_pickup_datetime", "PULocationID", "DOLocationID"} <= set(details["missing_columns"])
    assert {"vendor_name", "Trip_Pickup_DateTime", "Start_Lon", "Fare_Amt"} <= set(details["unexpected_columns"])
    # Columns whose names survived (Passenger_Count, Trip_Distance, ...) are not reported as missing.
    assert "passenger_count" not in details["missing_columns"]
    # Renamed columns are suggested for a person to confirm; unrelated ones (Start_Lon) are not.
    suggested = details["suggested_sources"]
    assert {"pickup_at": "Trip_Pickup_DateTime", "tip_amount": "Tip_Amt"}.items() <= suggested.items()
    assert "Start_Lon" not in details["suggested_sources"].values()


def test_non_utf8_bytes_in_the_header_reject_the_file(home: Path):
    ingest_baseline(home, YELLOW)
    header, *rows = YELLOW.lines()
    data = join([header.replace(b"VendorID", b"Vendor\xe9ID"), *rows])
    name = YELLOW.file("latin1_header")
    ing = ingest(home, YELLOW.dataset_id, data, name=name)
    assert_rejected(home, YELLOW, ing, name, data, "line 1 (header): bytes not valid utf-8 at byte 6")


# ----------------------------------------------------------------------------------------------
# Row-level problems: the row is quarantined, the rest is staged


@pytest.mark.parametrize(
    ("kind", "source", "target", "value", "rule"),
    [
        pytest.param(YELLOW, "PULocationID", "pickup_location_id", "abc", "type(int16)",
                     id="yellow-location-abc"),
        pytest.param(YELLOW, "tpep_pickup_datetime", "pickup_at", "2019-06-31 00:03:25",
                     "type(timestamp as %Y-%m-%d %H:%M:%S or %m/%d/%Y %H:%M)", id="yellow-june-31st"),
        pytest.param(YELLOW, "tpep_dropoff_datetime", "dropoff_at", "13/06/2019 0:15",
                     "type(timestamp as %Y-%m-%d %H:%M:%S or %m/%d/%Y %H:%M)", id="yellow-day-first"),
        pytest.param(EXPENSES, "amount", "amount", "abc", "type(decimal(12,2))", id="expenses-amount-abc"),
        pytest.param(EXPENSES, "expense_date", "expense_date", "2026-02-30", "type(date)",
                     id="expenses-february-30th"),
    ],
)
def test_wrong_type_quarantines_the_row(home: Path, kind: Kind, source: str, target: str, value: str, rule: str):
    lines = kind.lines()
    lines[BAD] = set_field(lines[0], lines[BAD], source, value.encode())
    data, name = join(lines), kind.file("wrong_type")
    ing = ingest(home, kind.dataset_id, data, name=name)

    assert_nothing_lost(home, kind, ing, name, data, records(lines), {BAD + 1})
    [q] = quarantine_rows(home, kind, name, target)
    assert q["_source_line"] == BAD + 1
    assert q["_failed_rules"] == [rule]  # reported as a type error, not again as a null
    assert q["_failed_columns"] == [target]
    assert q[target] == value  # the original text
    assert q["_errors"] == f"{target}: {rule} (value {value})"
    assert meta(ing.checks()["contract"])["violations"] == {f"{target}: {rule}": 1}


def test_dropoff_before_pickup_quarantines_the_row(home: Path):
    lines = YELLOW.lines()
    header = lines[0]
    pickup = field(header, lines[BAD], "tpep_pickup_datetime")
    dropoff = field(header, lines[BAD], "tpep_dropoff_datetime")
    assert pickup < dropoff
    lines[BAD] = set_field(header, lines[BAD], "tpep_pickup_datetime", dropoff.encode())
    lines[BAD] = set_field(header, lines[BAD], "tpep_dropoff_datetime", pickup.encode())
    # A zero-length trip does not end before it starts: it is staged.
    lines[BAD + 2] = set_field(header, lines[BAD + 2], "tpep_dropoff_datetime",
                               field(header, lines[BAD + 2], "tpep_pickup_datetime").encode())
    data, name = join(lines), YELLOW.file("dropoff_before_pickup")
    ing = ingest(home, YELLOW.dataset_id, data, name=name)

    assert_nothing_lost(home, YELLOW, ing, name, data, records(lines), {BAD + 1})
    [q] = quarantine_rows(home, YELLOW, name, "pickup_at", "dropoff_at")
    assert q["_source_line"] == BAD + 1
    assert q["_failed_rules"] == ["dropoff_not_before_pickup"]
    assert q["_failed_columns"] == ["dropoff_at, pickup_at"]
    assert (q["pickup_at"], q["dropoff_at"]) == (dropoff, pickup)
    assert f"dropoff_at={pickup}" in q["_errors"] and f"pickup_at={dropoff}" in q["_errors"]


def _quote_first_field(line: bytes) -> bytes:
    return b'"' + line


def _quote_middle_field(line: bytes) -> bytes:
    return line.replace(b",N,", b',"N,', 1)


def _quote_last_field(line: bytes) -> bytes:
    head, _, last = line.rpartition(b",")
    return head + b',"' + last


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(_quote_first_field, id="first-field"),
        pytest.param(_quote_middle_field, id="middle-field"),
        pytest.param(_quote_last_field, id="last-field"),
    ],
)
def test_unbalanced_quote_on_one_line_quarantines_that_line_only(home: Path, corrupt):
    lines = YELLOW.lines()
    lines[BAD] = corrupt(lines[BAD])
    assert lines[BAD].count(b'"') == 1
    data, name = join(lines), YELLOW.file("unbalanced_quote")
    ing = ingest(home, YELLOW.dataset_id, data, name=name)

    assert_nothing_lost(home, YELLOW, ing, name, data, records(lines), {BAD + 1})
    [q] = quarantine_rows(home, YELLOW, name)
    assert q["_failed_rules"] == ["structure"]
    assert q["_failed_columns"] == ["*"]
    assert q["_errors"].startswith("malformed quoting")
    assert q["_raw_record"] == lines[BAD].decode()


def test_an_opening_and_a_closing_quote_two_lines_apart_make_one_record_as_rfc_4180_reads_it(home: Path):
    """An opening quote on line 6 and a closing one on line 8: RFC 4180 (and pyarrow, Python's csv,
    DuckDB) read lines 6-8 as ONE record whose store_and_fwd_flag holds the text in between. That
    record is quarantined (its flag is not Y or N) as line 6, with lines 7 and 8 inside its value:
    nothing is lost, and no line is read as something the standard does not say it is."""
    lines = YELLOW.lines()
    lines[BAD] = _quote_middle_field(lines[BAD])
    lines[BAD + 2] = lines[BAD + 2].replace(b",N,", b',N",', 1)
    data, name = join(lines), YELLOW.file("quote_over_three_lines")
    ing = ingest(home, YELLOW.dataset_id, data, name=name)

    standard = list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]
    assert len(standard) == YELLOW.rows - 2
    recs = {n: line for n, line in records(lines).items() if n not in (BAD + 2, BAD + 3)}
    assert_nothing_lost(home, YELLOW, ing, name, data, recs, {BAD + 1})
    [q] = quarantine_rows(home, YELLOW, name, "store_and_fwd_flag")
    assert q["_source_line"] == BAD + 1
    assert q["_failed_rules"] == ["isin(['Y', 'N'])"]
    assert q["store_and_fwd_flag"] == standard[BAD - 1][6]  # exactly as the standard reads the field
    assert lines[BAD + 1].decode() in q["store_and_fwd_flag"]


@pytest.mark.parametrize(
    ("kind", "column", "value"),
    [
        pytest.param(YELLOW, "store_and_fwd_flag", "Né", id="yellow"),
        pytest.param(EXPENSES, "category", "déjeuner", id="expenses"),
    ],
)
def test_non_utf8_bytes_on_one_line_quarantine_that_line_only(home: Path, kind: Kind, column: str, value: str):
    lines = kind.lines()
    lines[BAD] = set_field(lines[0], lines[BAD], column, value.encode("latin-1"))
    data, name = join(lines), kind.file("latin1")
    ing = ingest(home, kind.dataset_id, data, name=name)

    assert_nothing_lost(home, kind, ing, name, data, records(lines), {BAD + 1})
    [q] = quarantine_rows(home, kind, name)
    assert q["_failed_rules"] == ["encoding"]
    assert q["_failed_columns"] == ["*"]
    column_no = lines[BAD].index(b"\xe9") + 1
    assert q["_errors"] == f"bytes b'\\xe9' at column {column_no} are not valid utf-8"
    # The whole original line, the offending byte escaped (the exact bytes stay in landing).
    assert q["_raw_record"] == lines[BAD].decode("utf-8", errors="backslashreplace")
    assert "\\xe9" in q["_raw_record"]


@pytest.mark.parametrize(
    "where",
    [
        pytest.param("end", id="trailing-blank-line"),
        pytest.param("middle", id="blank-line-in-the-middle"),
        pytest.param("end-crlf", id="trailing-blank-line-crlf"),
    ],
)
def test_blank_lines_are_not_records(home: Path, where: str):
    """The staging engine's documented rule: a blank line is no record (not a row of nulls)."""
    lines = YELLOW.lines()
    if where == "middle":
        lines.insert(BAD, b"")
    else:
        lines.append(b"")
    data = join(lines, b"\r\n" if where == "end-crlf" else b"\n")
    name = YELLOW.file("blank_line")
    ing = ingest(home, YELLOW.dataset_id, data, name=name)
    assert_nothing_lost(home, YELLOW, ing, name, data, records(lines), set())


# ----------------------------------------------------------------------------------------------
# Same data, different bytes: staged exactly alike


def _variant_lines(kind: Kind, problem: str) -> list[bytes]:
    lines = kind.lines()
    if problem == "type-error":  # a quarantined row, fast path
        lines[BAD] = set_field(lines[0], lines[BAD], "PULocationID", b"abc")
    elif problem == "latin1":  # a quarantined row, slow path
        lines[BAD] = set_field(lines[0], lines[BAD], "store_and_fwd_flag", b"N\xe9")
    return lines


def assert_stages_alike(home: Path, kind: Kind, plain: bytes, variant: bytes, recs: dict[int, bytes],
                        quarantined: set[int]) -> None:
    outcome = {}
    for label, data in (("plain", plain), ("variant", variant)):
        name = kind.file(label)
        ing = ingest(home, kind.dataset_id, data, name=name)
        assert_nothing_lost(home, kind, ing, name, data, recs, quarantined)
        outcome[label] = [
            query(home, f"select * exclude (_source_file, _partition_key) from {kind.view(zone)} "
                        "where _source_file = ? order by _source_line", [name])
            for zone in ("staging", "quarantine")
        ]
    assert outcome["variant"] == outcome["plain"]


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        pytest.param(YELLOW, "none", id="yellow-clean"),
        pytest.param(YELLOW, "type-error", id="yellow-type-error"),
        pytest.param(YELLOW, "latin1", id="yellow-latin1-line"),
        pytest.param(EXPENSES, "none", id="expenses-clean"),
    ],
)
def test_windows_line_endings_stage_exactly_like_lf(home: Path, kind: Kind, problem: str):
    lines = _variant_lines(kind, problem)
    quarantined = set() if problem == "none" else {BAD + 1}
    assert_stages_alike(home, kind, join(lines), join(lines, b"\r\n"), records(lines), quarantined)


@pytest.mark.parametrize(
    ("kind", "problem", "eol"),
    [
        pytest.param(YELLOW, "none", b"\n", id="yellow-clean"),
        pytest.param(YELLOW, "latin1", b"\n", id="yellow-latin1-line"),
        pytest.param(YELLOW, "none", b"\r\n", id="yellow-clean-crlf"),
        pytest.param(EXPENSES, "none", b"\n", id="expenses-clean"),
    ],
)
def test_byte_order_mark_stages_exactly_like_without(home: Path, kind: Kind, problem: str, eol: bytes):
    lines = _variant_lines(kind, problem)
    quarantined = set() if problem == "none" else {BAD + 1}
    assert_stages_alike(home, kind, join(lines, eol), BOM + join(lines, eol), records(lines), quarantined)


# ----------------------------------------------------------------------------------------------
# Re-deliveries


def test_duplicate_delivery_is_idempotent(home: Path):
    """Delivering the same file again re-materialises the same partition: same staging and
    quarantine content, no duplicate rows in the catalog, nothing left in ingress."""
    lines = _variant_lines(YELLOW, "type-error")
    data, name = join(lines), YELLOW.file("delivery")
    instance = dg.DagsterInstance.ephemeral()

    first = ingest(home, YELLOW.dataset_id, data, name=name, instance=instance)
    assert_nothing_lost(home, YELLOW, first, name, data, records(lines), {BAD + 1})
    before = {zone: pq.read_table(published_file(first, zone)) for zone in ("staging", "quarantine")}

    second = ingest(home, YELLOW.dataset_id, data, name=name, instance=instance)
    assert second.partition_key == first.partition_key
    assert_nothing_lost(home, YELLOW, second, name, data, records(lines), {BAD + 1})
    assert second.materializations()["landing"].metadata["landed_in_this_run"].value is False

    for zone, table in before.items():
        assert view_files(home, YELLOW.view(zone)) == {published_file(second, zone)}
        assert pq.read_table(published_file(second, zone)).equals(table), zone
    assert len(lake_files(home, "landing")) == 1
    assert list((home / "ingress" / YELLOW.zone / YELLOW.name).iterdir()) == []
    staged = query(home, f"select count(*), count(distinct _source_line) from {YELLOW.view('staging')}")
    assert staged == [(YELLOW.rows - 1, YELLOW.rows - 1)]
    assert query(home, f"select count(*) from {YELLOW.view('quarantine')}") == [(1,)]


def test_duplicate_delivery_under_another_name_is_not_ingested_again(home: Path):
    """The same bytes re-delivered under a new name are recognised by the sensor as the earlier
    partition, so they cannot be staged twice."""
    data = join(YELLOW.lines())
    first = ingest(home, YELLOW.dataset_id, data, name=YELLOW.file("delivery"))
    assert first.success
    again = FileEntry(f"/in/{YELLOW.file('resent')}", YELLOW.file("resent"), len(data), 1)
    plan = plan_tick(
        [again], Cursor(), now_ns=10**12, settle_seconds=1, max_files=10, pattern="yellow_tripdata_*.csv",
        known_keys=[first.partition_key], hash_file=lambda _f: hashlib.sha256(data).hexdigest(),
    )
    assert plan.requests == []
    assert plan.duplicates == [(again, first.partition_key)]
    assert count(home, YELLOW, "staging", YELLOW.file("delivery")) == YELLOW.rows
