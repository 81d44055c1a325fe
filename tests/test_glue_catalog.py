"""The Glue catalog against the moto server (real HTTP, boto3's production path): tables with the
Parquet SerDe, typed columns and partition locations; the published/held/superseded semantics of
the DuckDB catalog; batching past Glue's per-call limits; per-item errors raised; schema drift
refused before anything is written; every field of a record round-trips."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import TerminalError
from core.types import contract_glue_type, glue_type
from resources.aws import AwsSession
from resources.catalog.base import PartitionRecord, PartitionVersion
from resources.catalog.glue import (
    INPUT_FORMAT,
    OUTPUT_FORMAT,
    GlueCatalog,
    SchemaDrift,
    _item_errors,
    _record_params,
    dataset_folder,
    folder_of,
)

PREFIX = "t_"
SCHEMA = pa.schema([("trip_id", pa.int64()), ("amount", pa.decimal128(12, 2)), ("vendor", pa.large_string()),
                    ("n", pa.int32()), ("flag", pa.bool_()), ("day", pa.date32()), ("at", pa.timestamp("us")),
                    ("_source_file", pa.large_string()), ("_source_line", pa.int64())])
Q_SCHEMA = pa.schema([("_source_file", pa.large_string()), ("_source_line", pa.int64()),
                      ("_failed_columns", pa.large_list(pa.large_string())), ("_errors", pa.large_string())])


def staged(schema: pa.Schema = SCHEMA) -> pa.Table:
    values = {"trip_id": [1], "amount": [Decimal("1.50")], "vendor": ["v"], "n": [1], "flag": [True],
              "day": [None], "at": [None], "_source_file": ["f.csv"], "_source_line": [2], "extra": [1.0],
              "_failed_columns": [["n"]], "_errors": ["bad"]}
    def column(f: pa.Field) -> pa.Array:
        try:
            return pa.array(values[f.name], f.type)
        except pa.ArrowInvalid:  # a drifted type: a null of it will do
            return pa.nulls(1, f.type)

    return pa.table({f.name: column(f) for f in schema})


class Lake:
    """Local Parquet files under ``<root>/<zone>/mobility/trips/<key>/<n>.parquet``, named by s3-like
    URIs; ``schema_of`` reads a footer, as the platform's does through the lake."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, uri: str) -> Path:
        return self.root / uri.removeprefix("s3://lake/")

    def schema_of(self, uri: str) -> pa.Schema:
        return pq.read_schema(self.path(uri))

    def version(self, key: str, delivered: int, passed: bool = True, name: str = "f.csv", n: int = 1,
                schema: pa.Schema = SCHEMA, rows: tuple[int, int] = (1, 0)) -> PartitionVersion:
        pk = f"{name}@{key:0>16}"
        s, q = (f"s3://lake/{zone}/mobility/trips/{pk}/v{n}/part-0.parquet" for zone in ("staging", "quarantine"))
        for uri, table in ((s, staged(schema)), (q, staged(Q_SCHEMA))):
            self.path(uri).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, self.path(uri))
        return PartitionVersion("mobility", "trips", pk, name, delivered, s, q, passed, *rows)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path)


@pytest.fixture
def catalog(aws, lake: Lake) -> GlueCatalog:
    return GlueCatalog(AwsSession("eu-west-1"), PREFIX, lake.schema_of)


def glue():
    return boto3.client("glue", region_name="eu-west-1")


def visible(zone: str) -> dict[str, str]:
    """Partition key → location of the Glue table ``<prefix><zone>_mobility.trips``."""
    pages = glue().get_paginator("get_partitions").paginate(DatabaseName=f"{PREFIX}{zone}_mobility", TableName="trips")
    return {p["Values"][0]: p["StorageDescriptor"]["Location"] for page in pages for p in page["Partitions"]}


def states(catalog: GlueCatalog) -> dict[str, tuple[str, str | None]]:
    return {r.version.partition_key: (r.state, r.superseded_by) for r in catalog.partitions("mobility", "trips")}


def test_glue_types_of_contract_and_arrow_types() -> None:
    assert [contract_glue_type(t) for t in ("string", "int16", "int32", "int64", "float64", "boolean", "date",
                                            "timestamp", "decimal(12,2)")] == [
        "string", "smallint", "int", "bigint", "double", "boolean", "date", "timestamp", "decimal(12,2)"]
    assert glue_type(pa.int8()) == "tinyint" and glue_type(pa.float32()) == "float"
    assert glue_type(pa.large_list(pa.large_string())) == "array<string>"
    assert glue_type(pa.struct([("a", pa.int32()), ("b", pa.string())])) == "struct<a:int,b:string>"
    assert glue_type(pa.timestamp("ns", tz="UTC")) == "timestamp"
    with pytest.raises(TerminalError, match="uint64"):
        glue_type(pa.uint64())


def test_first_publish_creates_tables_with_columns_serde_and_locations(catalog: GlueCatalog, lake: Lake) -> None:
    v = lake.version("1", 1)
    outcome = catalog.publish(v, supersede=True)
    assert (outcome.state, outcome.superseded, outcome.superseded_by) == ("published", (), None)
    t = glue().get_table(DatabaseName="t_staging_mobility", Name="trips")["Table"]
    sd = t["StorageDescriptor"]
    assert t["TableType"] == "EXTERNAL_TABLE" and t["Parameters"]["classification"] == "parquet"
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == [
        ("trip_id", "bigint"), ("amount", "decimal(12,2)"), ("vendor", "string"), ("n", "int"), ("flag", "boolean"),
        ("day", "date"), ("at", "timestamp"), ("_source_file", "string"), ("_source_line", "bigint")]
    assert [(c["Name"], c["Type"]) for c in t["PartitionKeys"]] == [("_partition_key", "string")]
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert (sd["InputFormat"], sd["OutputFormat"]) == (INPUT_FORMAT, OUTPUT_FORMAT)
    assert sd["Location"] == "s3://lake/staging/mobility/trips/" == dataset_folder(v.staging_uri, "mobility", "trips")
    q = glue().get_table(DatabaseName="t_quarantine_mobility", Name="trips")["Table"]
    assert [(c["Name"], c["Type"]) for c in q["StorageDescriptor"]["Columns"]] == [
        ("_source_file", "string"), ("_source_line", "bigint"), ("_failed_columns", "array<string>"),
        ("_errors", "string")]
    assert visible("staging") == {v.partition_key: f"s3://lake/staging/mobility/trips/{v.partition_key}/v1/"}
    assert visible("quarantine") == {v.partition_key: folder_of(v.quarantine_uri)}
    p = glue().get_partition(DatabaseName="t_staging_mobility", TableName="trips", PartitionValues=[v.partition_key])
    assert p["Partition"]["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
    assert catalog.published_tables() == {("staging_mobility", "trips")}
    assert catalog.referenced_uris("mobility", "trips") == {v.staging_uri, v.quarantine_uri}


def test_a_republish_moves_the_partition_to_its_new_files(catalog: GlueCatalog, lake: Lake) -> None:
    v = lake.version("1", 1)
    catalog.publish(v, supersede=True)
    again = lake.version("1", 1, n=2, rows=(5, 1))  # the same partition staged again: a new version folder
    assert catalog.publish(again, supersede=True).state == "published"
    assert visible("staging") == {v.partition_key: folder_of(again.staging_uri)}
    assert [r.version for r in catalog.partitions("mobility", "trips")] == [again]


def test_supersede_then_held_then_a_good_one_supersedes_both(catalog: GlueCatalog, lake: Lake) -> None:
    v1, v2, v3, v4 = (lake.version(k, d, p) for k, d, p in (("1", 1, True), ("2", 2, True), ("3", 3, False),
                                                           ("4", 4, True)))
    catalog.publish(v1, supersede=True)
    outcome = catalog.publish(v2, supersede=True)
    assert outcome.superseded == (v1.partition_key,) and outcome.state == "published"
    assert set(visible("staging")) == set(visible("quarantine")) == {v2.partition_key}
    assert states(catalog) == {v1.partition_key: ("superseded", v2.partition_key),
                               v2.partition_key: ("published", None)}
    # a held delivery does not supersede: v2 stays in view; v3's quarantined rows say why
    outcome = catalog.publish(v3, supersede=True)
    assert (outcome.state, outcome.superseded) == ("held", ())
    assert set(visible("staging")) == {v2.partition_key}
    assert set(visible("quarantine")) == {v2.partition_key, v3.partition_key}
    # a good one supersedes the published and the held one
    outcome = catalog.publish(v4, supersede=True)
    assert outcome.superseded == (v2.partition_key, v3.partition_key)
    assert set(visible("staging")) == set(visible("quarantine")) == {v4.partition_key}
    assert states(catalog) == {v1.partition_key: ("superseded", v4.partition_key),
                               v2.partition_key: ("superseded", v4.partition_key),
                               v3.partition_key: ("superseded", v4.partition_key),
                               v4.partition_key: ("published", None)}


def test_an_older_delivery_arriving_late_is_superseded_at_once(catalog: GlueCatalog, lake: Lake) -> None:
    v2, v1 = lake.version("2", 2), lake.version("1", 1)
    catalog.publish(v2, supersede=True)
    outcome = catalog.publish(v1, supersede=True)
    assert (outcome.state, outcome.superseded_by, outcome.superseded) == ("superseded", v2.partition_key, ())
    assert set(visible("staging")) == set(visible("quarantine")) == {v2.partition_key}


def test_append_keeps_every_delivery_and_other_files_are_untouched(catalog: GlueCatalog, lake: Lake) -> None:
    a1, a2, a3 = lake.version("1", 1), lake.version("2", 2), lake.version("3", 3, passed=False)
    other = lake.version("9", 9, name="g.csv")
    catalog.publish(other, supersede=True)
    for v in (a1, a2, a3):
        catalog.publish(v, supersede=False)
    assert set(visible("staging")) == {a1.partition_key, a2.partition_key, other.partition_key}
    assert set(visible("quarantine")) == {a1.partition_key, a2.partition_key, a3.partition_key, other.partition_key}
    assert states(catalog)[a3.partition_key] == ("held", None)


def test_only_held_leaves_no_published_table(catalog: GlueCatalog, lake: Lake) -> None:
    v = lake.version("1", 1, passed=False)
    assert catalog.publish(v, supersede=True).state == "held"
    assert visible("staging") == {} and set(visible("quarantine")) == {v.partition_key}
    assert catalog.published_tables() == set()


def test_more_partitions_than_one_glue_call_takes(catalog: GlueCatalog, lake: Lake,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """230 versions of one file name: registering them takes three create calls (≤ 100 each),
    superseding them ten delete calls (≤ 25 each) and three record updates (≤ 100 each). The
    versions are recorded as a publish that crashed after its records would leave them (records
    written, Glue partitions missing), which the next publish heals: one publish, not 230."""
    calls: list[tuple[str, str, int]] = []
    client = catalog.glue
    for method, arg in (("batch_create_partition", "PartitionInputList"),
                        ("batch_delete_partition", "PartitionsToDelete"), ("batch_update_partition", "Entries")):
        real = getattr(client, method)

        def spy(*, _real=real, _method=method, _arg=arg, **kw):
            calls.append((_method, kw["DatabaseName"], len(kw[_arg])))
            return _real(**kw)

        monkeypatch.setattr(client, method, spy)
    versions = [lake.version(f"{i}", i) for i in range(1, 231)]
    catalog.publish(versions[0], supersede=False)
    catalog._create_partitions("t_platform", "partitions__mobility__trips", [
        {"Values": [v.partition_key], "Parameters": _record_params(PartitionRecord(v, "published", None))}
        for v in versions[1:]])
    calls.clear()
    assert catalog.publish(versions[0], supersede=False).state == "published"
    assert len(visible("staging")) == len(visible("quarantine")) == 230
    creates = [n for m, db, n in calls if m == "batch_create_partition"]
    assert creates == [100, 100, 29, 100, 100, 29]  # quarantine, then staging (one was there already)
    calls.clear()
    last = lake.version("999", 999)
    outcome = catalog.publish(last, supersede=True)
    assert len(outcome.superseded) == 230
    assert set(visible("staging")) == set(visible("quarantine")) == {last.partition_key}
    deletes = [n for m, db, n in calls if m == "batch_delete_partition"]
    assert max(deletes) == 25 and sum(deletes) == 2 * 230 and len(deletes) == 2 * 10
    updates = [n for m, db, n in calls if m == "batch_update_partition" and db == "t_platform"]
    assert updates == [100, 100, 30]
    records = catalog.partitions("mobility", "trips")
    assert len(records) == 231 and sum(r.state == "superseded" for r in records) == 230


def test_per_item_errors_are_raised_naming_partitions_and_codes(catalog: GlueCatalog, lake: Lake) -> None:
    v = lake.version("1", 1)
    catalog.publish(v, supersede=True)
    table = glue().get_table(DatabaseName="t_staging_mobility", Name="trips")["Table"]
    sd = table["StorageDescriptor"]
    out = glue().batch_create_partition(DatabaseName="t_staging_mobility", TableName="trips", PartitionInputList=[
        {"Values": [v.partition_key], "StorageDescriptor": sd}])
    assert out["Errors"]  # Glue reports it per item, with HTTP 200
    with pytest.raises(TerminalError) as e:
        _item_errors(out["Errors"], "registering partitions in t_staging_mobility.trips")
    assert v.partition_key in str(e.value) and "AlreadyExistsException" in str(e.value)
    # through the catalog: a partition the catalog does not know is listed as missing, then exists
    # when it creates it (another writer raced it), and the publish fails saying so
    v2 = lake.version("2", 2, name="g.csv")
    real = catalog._partitions
    catalog._partitions = lambda db, t: iter(())  # type: ignore[method-assign]  # a stale listing
    try:
        glue().batch_create_partition(DatabaseName="t_quarantine_mobility", TableName="trips", PartitionInputList=[
            {"Values": [v2.partition_key], "StorageDescriptor": sd}])
        with pytest.raises(TerminalError, match=r"t_quarantine_mobility\.trips: 1 partition\(s\) failed: "
                                                r"g\.csv@0000000000000002: AlreadyExistsException"):
            catalog.publish(v2, supersede=True)
    finally:
        catalog._partitions = real  # type: ignore[method-assign]
    assert v2.partition_key not in states(catalog)  # the records, the commit point, were not written


def test_a_deleted_table_fails_loudly(catalog: GlueCatalog, lake: Lake) -> None:
    """A table deleted behind the catalog's back: Glue refuses the whole call (not per item); the
    botocore error is translated, naming the table and Glue's code."""
    catalog.publish(lake.version("1", 1), supersede=True)
    glue().delete_table(DatabaseName="t_quarantine_mobility", Name="trips")
    with pytest.raises(TerminalError, match=r"t_quarantine_mobility\.trips: EntityNotFoundException"):
        catalog._create_partitions("t_quarantine_mobility", "trips", [{"Values": ["x"]}])


def test_schema_drift_is_refused_naming_columns_and_nothing_is_written(catalog: GlueCatalog, lake: Lake) -> None:
    v1 = lake.version("1", 1)
    catalog.publish(v1, supersede=True)
    fields = [f for f in SCHEMA if f.name != "vendor"]
    fields[1] = pa.field("amount", pa.float64())
    drifted = pa.schema([*fields, ("extra", pa.float64())])
    v2 = lake.version("2", 2, schema=drifted)
    before = (glue().get_table(DatabaseName="t_staging_mobility", Name="trips")["Table"]["StorageDescriptor"],
              visible("staging"), visible("quarantine"), states(catalog))
    with pytest.raises(SchemaDrift) as e:
        catalog.publish(v2, supersede=True)
    message = str(e.value)
    assert "t_staging_mobility.trips" in message
    assert "added extra (double)" in message and "removed vendor (string)" in message
    assert "amount: decimal(12,2) → double" in message and "nothing was written" in message
    after = (glue().get_table(DatabaseName="t_staging_mobility", Name="trips")["Table"]["StorageDescriptor"],
             visible("staging"), visible("quarantine"), states(catalog))
    assert after == before
    # a reordering alone is drift too
    reordered = pa.schema([SCHEMA.field("amount"), SCHEMA.field("trip_id"), *list(SCHEMA)[2:]])
    with pytest.raises(SchemaDrift, match="column order changed: trip_id, amount"):
        catalog.publish(lake.version("3", 3, schema=reordered), supersede=True)


def test_records_round_trip_every_field(catalog: GlueCatalog, lake: Lake) -> None:
    v1 = lake.version("1", 1_700_000_000_123_456_789, rows=(12345, 7))
    v2 = lake.version("2", 1_700_000_000_123_456_790, passed=False, rows=(0, 3))
    v3 = lake.version("3", 1_700_000_000_123_456_791, rows=(9, 0))
    for v in (v1, v2, v3):
        catalog.publish(v, supersede=True)
    records = catalog.partitions("mobility", "trips")
    assert [r.version for r in records] == [v1, v2, v3]
    assert [(r.state, r.superseded_by) for r in records] == [
        ("superseded", v3.partition_key), ("superseded", v3.partition_key), ("published", None)]
    assert GlueCatalog(AwsSession("eu-west-1"), PREFIX, lake.schema_of).partitions("mobility", "trips") == records
    assert GlueCatalog(AwsSession("eu-west-1"), "other_", lake.schema_of).partitions("mobility", "trips") == []


def test_a_bad_prefix_is_refused(aws, lake: Lake) -> None:
    with pytest.raises(TerminalError, match="prefix"):
        GlueCatalog(AwsSession("eu-west-1"), "Bad-Prefix", lake.schema_of)


def test_a_publish_that_fails_midway_commits_nothing_and_its_retry_converges(
        catalog: GlueCatalog, lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = lake.version("1", 1), lake.version("2", 2)
    catalog.publish(v1, supersede=True)
    real = catalog._create_partitions

    def crash_on_staging(db: str, table: str, inputs: list[dict]) -> None:
        if db == "t_staging_mobility":
            raise TerminalError("crash (injected)")
        real(db, table, inputs)

    monkeypatch.setattr(catalog, "_create_partitions", crash_on_staging)
    with pytest.raises(TerminalError, match="injected"):
        catalog.publish(v2, supersede=True)
    # what a reader sees in the gap: quarantine ran ahead; staging shows neither version, never both
    assert set(visible("quarantine")) == {v2.partition_key} and visible("staging") == {}
    assert states(catalog) == {v1.partition_key: ("published", None)}  # the records: not committed
    monkeypatch.setattr(catalog, "_create_partitions", real)
    outcome = catalog.publish(v2, supersede=True)  # the run's retry
    assert outcome.superseded == (v1.partition_key,)
    assert set(visible("staging")) == set(visible("quarantine")) == {v2.partition_key}
    assert states(catalog) == {v1.partition_key: ("superseded", v2.partition_key),
                               v2.partition_key: ("published", None)}


def test_per_item_errors_of_a_delete_are_raised_too(catalog: GlueCatalog, lake: Lake) -> None:
    catalog.publish(lake.version("1", 1), supersede=True)
    with pytest.raises(TerminalError) as e:
        catalog._delete_partitions("t_staging_mobility", "trips", ["gone.csv@00000000000000ff"])
    assert "t_staging_mobility.trips" in str(e.value) and "gone.csv@00000000000000ff" in str(e.value)
    assert "EntityNotFoundException" in str(e.value)
