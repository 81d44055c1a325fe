"""The Spark engine stages what the Arrow engine stages: the same rows, types, quarantine, rules.

Real Spark (``local[2]`` in ``.venv-spark``, one session for all files) against the Arrow engine
on the same files: the bundled samples, files of tricky values for every type and rule (built
from the samples' first lines), a generated expense export with its planted faults, a generated
1M-row trips file, and the shapes of file Spark refuses. Every file is compared whole: the staging
and quarantine Parquet files (schema and every value), the counts and the violations.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pyarrow.parquet as pq
import pytest
from support import SAMPLES, dataset_defs, ingest, published_file, query

from checks.freshness import delivery_contract
from cli import generate
from core.errors import FileRejected
from core.zones import all_datasets
from engine import LocalFiles, StagingRequest
from engine.arrow import ArrowEngine
from engine.spark import SparkEngine, spark_python

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_spark_at_a_time")]

DATASETS = {d.contract.dataset: d for d in all_datasets()}
TRIPS_2021 = SAMPLES / "mobility" / "yellow_trips" / "yellow_tripdata_2021-01_sample.csv"


def _sample(name: str) -> Path:
    [path] = SAMPLES.glob(f"*/*/{name}")
    return path


def _lines(path: Path, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n + 1)]


def _with(header: str, row: str, **cells: str) -> str:
    """``row`` with the cells of the named source columns replaced (unquoted CSV)."""
    names = header.split(",")
    values = row.split(",")
    for k, v in cells.items():
        values[names.index(k)] = v
    return ",".join(values)


TRICKY = {
    "passenger_count": ["", " 3", "3 ", "+3", "-0", "3.0", "1e2", "0x1F", "99999", "abc", "\u0663", "10", "NULL"],
    "trip_distance": ["1e3", ".5", "5.", "inf", "-inf", "NaN", "nan", "1,5", " 2.5", "1d", "0x1p3", "-1", "Infinity",
                      "+inf", "1E+2", "--1", ""],
    "tpep_pickup_datetime": ["01/01/2021 0:30", "2021-01-01T00:30:00", "2021-1-1 00:30:00", "2021-01-01 00:30:00.123",
                             "31/12/2020 10:00", " 2021-01-01 00:30:00", "2021-02-30 00:00:00",
                             "2021-01-01 24:00:00", "2021-01-01 00:30", "", "1/1/2021 0:30"],
    "store_and_fwd_flag": ["y", "Y ", "", '"N"', '"Y,N"'],
    "VendorID": ["3", '"1"', "1.0"],
    "PULocationID": ["0", "266", "", "1"],
    "RatecodeID": ["99", "7"],
}


def _trips_torture(tmp: Path, eol: str = "\n", bom: bool = False) -> Path:
    header, *rows = _lines(TRIPS_2021, 60)
    out = [header]
    i = 0
    for column, values in TRICKY.items():
        for v in values:
            out.append(_with(header, rows[i % len(rows)], **{column: v}))
            i += 1
    base = rows[0]
    out.append(_with(header, base, tpep_dropoff_datetime="2020-12-31 23:00:00"))  # dropoff before pickup
    out.append(base + ",1.5")  # one field too many
    out.append(",".join(base.split(",")[:-2]))  # two too few
    out.append("")  # a blank line is no record
    out.append(_with(header, base, tpep_pickup_datetime="2021-01-05 10:00:00",
                     tpep_dropoff_datetime="2021-01-05 10:20:00"))  # after the arrival below: the future rule
    out.extend(rows[40:])
    path = tmp / f"yellow_tripdata_2021-01_tricky{'_crlf' if eol != chr(10) else ''}{'_bom' if bom else ''}.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (eol.join(out) + eol).encode())
    return path


def _expenses_tricky(tmp: Path) -> Path:
    path = generate.expenses(tmp / "expenses_2026-11-19_generated.csv", 120, seed=5, error_rate=0.25)
    header, *rows = path.read_text().splitlines()
    names = [n.strip('"') for n in header.split(",")]
    amount, day, sub = names.index("amount"), names.index("expense_date"), names.index("submitted_at")
    tricky = [(amount, v) for v in ("12.345", "123456789012.00", "1e2", " 12.50", "+5", ".5", "5.", "0.001", "-0",
                                    "0.00", "12.50 ", "")] + \
             [(day, v) for v in ("2026-11-1", "20261101", "2026-02-29", " 2026-11-01", "2026-11-01 ")] + \
             [(sub, v) for v in ("2026-11-19 10:00:00.1234567", "2026-11-19 10:00:00.1234560",
                                 "2026-11-19T10:00:00", "2026-11-19 10:00:00.5", "2026-11-19 10:00")]
    out = list(rows)
    for k, (col, value) in enumerate(tricky):
        cells = out[k].split(",")
        cells[col] = f'"{value}"' if k % 2 else value  # quoted as the export writes them, or not
        out[k] = ",".join(cells)
    path.write_text("\n".join([header, *out]) + "\n")
    return path


def _zones_tricky(tmp: Path) -> Path:
    header, *rows = _lines(_sample("taxi_zone_lookup.csv"), 30)
    rows += [rows[3], rows[7].replace("Manhattan", "Atlantis"), '"",Queens,Somewhere,Boro Zone', rows[3]]
    path = tmp / "taxi_zone_lookup_tricky.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _refused(tmp: Path) -> list[Path]:
    header, *rows = _lines(TRIPS_2021, 5)
    broken = {
        "quoted_line_break": _with(header, rows[1], store_and_fwd_flag='"Y\nN"'),
        "latin1": _with(header, rows[1], store_and_fwd_flag="\udce9"),
        "stray_quote": _with(header, rows[1], store_and_fwd_flag='N"'),
    }
    paths = []
    for name, row in broken.items():
        p = tmp / f"yellow_tripdata_2021-01_{name}.csv"
        p.write_bytes("\n".join([header, rows[0], row, rows[2]]).encode("utf-8", "surrogateescape") + b"\n")
        paths.append(p)
    return paths


def _request(path: Path, dataset: str, out: Path, engine: str) -> StagingRequest:
    ds = DATASETS[dataset]
    contract = ds.contract
    if dataset == "mobility.yellow_trips":  # with the freshness rule a delivery adds (arrival: 2021-01-02)
        arrival = dt.datetime(2021, 1, 2, tzinfo=ZoneInfo("America/New_York"))
        contract = delivery_contract(ds, int(arrival.timestamp() * 1e9))
    return StagingRequest(source_uri=str(path), source_name=path.name, contract=contract, csv=ds.spec.source.csv,
                          staging_uri=str(out / f"{path.stem}.{engine}.staging.parquet"),
                          quarantine_uri=str(out / f"{path.stem}.{engine}.quarantine.parquet"),
                          event_time="pickup_at" if dataset == "mobility.yellow_trips" else None)


def _diff(a, b) -> str:
    if a.schema != b.schema:
        return f"schemas differ:\n{a.schema}\n---\n{b.schema}"
    if a.num_rows != b.num_rows:
        return f"{a.num_rows} rows against {b.num_rows}"
    for name in a.schema.names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            if u != v and not (u != u and v != v):  # NaN equals NaN here
                return f"column {name}, row {i}: arrow {u!r}, spark {v!r}"
    return ""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[tuple[Path, str]]:
    assert Path(spark_python()).exists(), f"the Spark environment is missing ({spark_python()}): make spark-venv"
    tmp = tmp_path_factory.mktemp("spark_in")
    return [
        (_sample("yellow_tripdata_2021-01_sample.csv"), "mobility.yellow_trips"),
        (_sample("yellow_tripdata_2019-06_sample.csv"), "mobility.yellow_trips"),
        (_sample("taxi_zone_lookup.csv"), "mobility.taxi_zones"),
        *[(p, "finance.expense_reports") for p in sorted((SAMPLES / "finance" / "expense_reports").glob("*.csv"))],
        (_sample("yellow_tripdata_2009-01_sample.csv"), "mobility.yellow_trips"),  # rejected: the legacy layout
        (_trips_torture(tmp), "mobility.yellow_trips"),
        (_trips_torture(tmp, eol="\r\n"), "mobility.yellow_trips"),
        (_trips_torture(tmp, bom=True), "mobility.yellow_trips"),
        (_expenses_tricky(tmp), "finance.expense_reports"),
        (_zones_tricky(tmp), "mobility.taxi_zones"),
        # A generated month of 1M trips with 0.1 % planted faults (before the arrival above).
        (generate.trips(tmp / "yellow_tripdata_2020-12_generated.csv", 1_000_000, seed=7, error_rate=0.001,
                        month=dt.date(2020, 12, 1)), "mobility.yellow_trips"),
        *[(p, "mobility.yellow_trips") for p in _refused(tmp)],
    ]


@pytest.fixture(scope="module")
def outcomes(files, tmp_path_factory, one_spark_at_a_time) -> list[tuple[object, object]]:
    out = tmp_path_factory.mktemp("spark_out")
    arrow = []
    for path, dataset in files:
        try:
            arrow.append(ArrowEngine().stage(_request(path, dataset, out, "arrow"), LocalFiles()))
        except FileRejected as e:
            arrow.append(e)
    spark = SparkEngine().stage_many([_request(p, d, out, "spark") for p, d in files], LocalFiles())
    return list(zip(arrow, spark, strict=True))


def test_every_file_stages_identically_on_spark_or_is_refused_before_anything_is_written(files, outcomes) -> None:
    compared = refused = rejected = 0
    for (path, _), (a, s) in zip(files, outcomes, strict=True):
        if "_quoted_line_break" in path.name or "_latin1" in path.name or "_stray_quote" in path.name:
            assert isinstance(s, FileRejected), path.name
            assert "cannot be staged on Spark as the Arrow engine would" in str(s) and "line 3" in str(s), str(s)
            assert not os.path.exists(str(path).replace(".csv", ".spark.staging.parquet"))
            assert a.rows_quarantined >= 1 and a.rows_read == a.rows_staged + a.rows_quarantined  # type: ignore[union-attr]
            refused += 1
            continue
        if isinstance(a, FileRejected):  # a whole-file verdict: the same one, in the same words
            assert isinstance(s, FileRejected) and str(s) == str(a), (path.name, str(s))
            rejected += 1
            continue
        assert not isinstance(s, Exception), f"{path.name}: {s}"
        for what in ("rows_read", "rows_staged", "rows_quarantined", "duplicates", "newest_event_time"):
            assert getattr(s, what) == getattr(a, what), (path.name, what, getattr(a, what), getattr(s, what))
        assert dict(s.violations) == dict(a.violations), path.name
        assert s.examples == a.examples, (path.name, a.examples, s.examples)  # PII masked alike
        for uri in ("staging_uri", "quarantine_uri"):
            left, right = pq.read_table(getattr(a, uri)), pq.read_table(getattr(s, uri))
            if not left.equals(right):  # (NaN is never equal to itself there: _diff looks closer)
                assert not (problem := _diff(left, right)), f"{path.name} {uri}: {problem}"
        compared += 1
    assert (compared, rejected, refused) == (12, 2, 3)  # 2 rejected: the 2009 layout, the 11-19 export


def test_the_tricky_files_exercise_every_kind_of_verdict(files, outcomes) -> None:
    """The comparison above is only as strong as its files: they must quarantine for each rule."""
    rules = set()
    for _, (a, _s) in zip(files, outcomes, strict=True):
        if not isinstance(a, Exception):
            rules |= {k.split(": ", 1)[1].split("(")[0] for k in a.violations}
    assert {"type", "out_of_range", "scale", "precision", "not_nullable", "isin", "in_range", "finite",
            "greater_than_or_equal_to", "str_matches", "unique_key", "structure", "dropoff_not_before_pickup",
            "expense_not_after_submission", "not_after_arrival"} <= rules, rules



def test_a_dataset_declaring_spark_runs_through_the_same_assets_checks_and_catalog(tmp_path: Path) -> None:
    """``engine: spark`` changes only the engine: the same run, checks, published tables; the
    staging asset's kinds say spark."""
    base = {d.id: d for d in all_datasets()}["mobility__yellow_trips"]
    on_spark = dataclasses.replace(base, spec=base.spec.model_copy(update={"engine": "spark"}))
    seen = {}
    instance = dg.DagsterInstance.ephemeral()
    for ds in (base, on_spark):
        defs = dataset_defs(ds)
        [staging] = [s for s in defs.assets.specs if s.key.path[0].startswith("staging")]
        seen[ds.spec.engine] = (staging.kinds, ingest(tmp_path / ds.spec.engine, ds, TRIPS_2021,
                                                           instance=instance))
    assert "spark" in seen["spark"][0] and "spark" not in seen["arrow"][0]
    (_, arrow), (_, spark) = seen["arrow"], seen["spark"]
    assert arrow.success and spark.success
    # The job ran under Dagster Pipes: its log line (with its counts) is in the run's event log.
    logs = [e.user_message for e in instance.all_logs(spark.result.run_id)]
    assert any(m.startswith(f"{TRIPS_2021.name}: ") and '"rows_staged": 776' in m for m in logs), logs[-5:]
    verdicts = {e: {n: (c.passed, {k: v.value for k, v in c.metadata.items() if k in ("rows_read", "rows_staged",
                                                                                       "rows_quarantined")})
                    for n, c in ing.checks().items()} for e, ing in (("arrow", arrow), ("spark", spark))}
    assert verdicts["arrow"] == verdicts["spark"] and verdicts["spark"]["contract"][0]
    rows = {e: query(tmp_path / e, "select * exclude (_partition_key) from staging_mobility.yellow_trips "
                                   "order by _source_line") for e in ("arrow", "spark")}
    assert len(rows["spark"]) == 776 and rows["arrow"] == rows["spark"]
    assert pq.read_table(published_file(spark, "quarantine")).equals(pq.read_table(published_file(arrow,
                                                                                                   "quarantine")))
