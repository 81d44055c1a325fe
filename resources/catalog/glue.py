"""The AWS catalog: the Glue Data Catalog, read by Athena, Redshift Spectrum and Glue/EMR jobs.

Layout (``P`` is the environment's database prefix):

- databases ``Pstaging_<insight_zone>`` and ``Pquarantine_<insight_zone>``, one ``EXTERNAL_TABLE``
  per dataset in each, Parquet SerDe, columns typed from the Parquet schema of the staged
  (quarantined) file (``core.types.glue_type``), partitioned by the string column ``_partition_key``
  (the partition key). The table's location is the dataset's folder; a Glue partition's location
  is the folder holding exactly one staged (quarantined) file of that version. The staging table
  shows exactly the ``published`` partitions, the quarantine table the ``published`` and ``held``
  ones (see ``resources.catalog.base``).
- database ``Pplatform``, table ``partitions__<insight_zone>__<dataset>``: the records. One Glue
  partition per partition key (``partition_key``) whose ``Parameters`` carry every field of its
  PartitionRecord as strings. It has no columns and no data: it exists so that the record of every
  version, superseded ones included, lives in the same durable, IAM-controlled, CloudTrail-audited
  service as the tables it describes, with no other store to provision. Anyone can read it with
  ``aws glue get-partitions``.

Publishing. Glue has no transaction across tables, so ``publish`` is a sequence of idempotent steps
that converge on the state computed by ``resolve_states`` over the recorded versions of the file
name plus the new one:

1. schema check of both tables (nothing is written if either drifted), then create missing
   databases and tables;
2. quarantine: register the partitions that must be visible (create, or move a changed location),
   then deregister the ones that must not;
3. staging: deregister first, then register;
4. write the records (older versions whose state changed, then the new version's): the commit
   point. ``partitions()`` and ``referenced_uris()`` see the new version only from here.

What a reader can see between the steps: after 2, the new version's quarantined rows without its
staged rows (the quarantine table runs ahead; it only explains, nothing downstream builds on it);
during 3, for a supersession, neither the old nor the new version's staged rows for a moment (a
staging reader may see a file missing, as before it was delivered, but never two versions of one
file counted twice, and never staged rows before the quarantined rows that account for the rest
of the file). The failure of any step raises; because each step reconciles the Glue partitions of
the file name's versions against the wanted state (listed, not assumed), a retry of the same
publish, or the next publish of that file name, completes or undoes what was left half done. Until
then the records still describe the previous, committed state.

Concurrency: publishes of different file names touch disjoint partitions and records, so they may
run at once. Two publishes of the same file name at once are not serialised here (Glue offers no
lock): each would miss the other's version, so with ``supersede`` both could stay in view until the
next publish of that name reconciles them. The caller must serialise deliveries of one file name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from core.errors import PlatformError, ResourceUnavailable, TerminalError
from core.names import PARTITION_KEY, check_ident, schema_name
from core.types import glue_type
from resources.aws import AwsSession, translate
from resources.catalog.base import Catalog, PartitionRecord, PartitionVersion, PublishOutcome, State, resolve_states

RECORD_KEY = "partition_key"
CREATE_BATCH = 100  # BatchCreatePartition: at most 100 PartitionInputList entries
DELETE_BATCH = 25  # BatchDeletePartition: at most 25 PartitionsToDelete
UPDATE_BATCH = 100  # BatchUpdatePartition: at most 100 entries
SERDE = {"SerializationLibrary": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
         "Parameters": {"serialization.format": "1"}}
INPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
_PREFIX = re.compile(r"^([a-z][a-z0-9_]{0,30})?$")
_TRANSIENT = {"ThrottlingException", "InternalServiceException", "OperationTimeoutException",
              "ConcurrentModificationException", "ResourceNumberLimitExceededException"}
_FIELDS = ("insight_zone", "dataset", "partition_key", "source_file", "delivered_at_ns", "staging_uri",
           "quarantine_uri", "passed", "rows_staged", "rows_quarantined", "state", "superseded_by")


class SchemaDrift(TerminalError):
    """A file's columns differ from its registered Glue table: the contract changed without a
    migration of the table. Nothing was written; the message names the table and the columns."""


def folder_of(uri: str) -> str:
    """The prefix holding exactly one staged file: a Glue partition's location."""
    return uri.rsplit("/", 1)[0] + "/"


def dataset_folder(uri: str, insight_zone: str, dataset: str) -> str:
    """A Glue table's location: the dataset's folder, ``.../<insight_zone>/<dataset>/`` (the lake's
    layout), else the parent of the partition's folder."""
    marker = f"/{insight_zone}/{dataset}/"
    at = uri.find(marker)
    if at >= 0:
        return uri[:at + len(marker)]
    return folder_of(folder_of(uri).rstrip("/"))


def columns_of(schema: pa.Schema) -> list[dict[str, str]]:
    out = []
    for f in schema:
        if f.name == PARTITION_KEY:
            continue  # the partition column is Glue's, never a data column
        try:
            out.append({"Name": f.name, "Type": glue_type(f.type)})
        except PlatformError as e:
            raise SchemaDrift(f"column {f.name}: {e}") from e
    return out


def drift(table: str, registered: list[dict[str, str]], wanted: list[dict[str, str]]) -> str | None:
    """What differs between two column lists (name, type, order), for people; None if nothing."""
    old = [(c["Name"], c["Type"]) for c in registered if c["Name"] != PARTITION_KEY]
    new = [(c["Name"], c["Type"]) for c in wanted]
    if old == new:
        return None
    o, n = dict(old), dict(new)
    parts = []
    added = [f"{c} ({t})" for c, t in new if c not in o]
    removed = [f"{c} ({t})" for c, t in old if c not in n]
    changed = [f"{c}: {o[c]} → {t}" for c, t in new if c in o and o[c] != t]
    if added:
        parts.append("added " + ", ".join(added))
    if removed:
        parts.append("removed " + ", ".join(removed))
    if changed:
        parts.append("changed " + ", ".join(changed))
    if not parts:
        parts.append(f"column order changed: {', '.join(c for c, _ in old)} → {', '.join(c for c, _ in new)}")
    return f"{table}: the file's columns differ from the registered table: {'; '.join(parts)}"


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _item_errors(errors: list[dict], doing: str, key: str = "PartitionValues") -> None:
    if not errors:
        return
    detail = "; ".join(f"{'/'.join(e.get(key) or [])}: {e.get('ErrorDetail', {}).get('ErrorCode', '?')} "
                       f"{e.get('ErrorDetail', {}).get('ErrorMessage', '')}".rstrip() for e in errors)
    codes = {e.get("ErrorDetail", {}).get("ErrorCode") for e in errors}
    message = f"{doing}: {len(errors)} partition(s) failed: {detail}"
    if codes <= _TRANSIENT:  # throttled or raced: a retry of the publish reconciles
        raise ResourceUnavailable(message)
    raise TerminalError(message)


def _record_params(r: PartitionRecord) -> dict[str, str]:
    v = r.version
    return {"insight_zone": v.insight_zone, "dataset": v.dataset, "partition_key": v.partition_key,
            "source_file": v.source_file, "delivered_at_ns": str(v.delivered_at_ns), "staging_uri": v.staging_uri,
            "quarantine_uri": v.quarantine_uri, "passed": "true" if v.passed else "false",
            "rows_staged": str(v.rows_staged), "rows_quarantined": str(v.rows_quarantined), "state": r.state,
            "superseded_by": r.superseded_by or ""}


def _record_of(p: dict[str, str]) -> PartitionRecord:
    v = PartitionVersion(
        insight_zone=p["insight_zone"], dataset=p["dataset"], partition_key=p["partition_key"],
        source_file=p["source_file"], delivered_at_ns=int(p["delivered_at_ns"]), staging_uri=p["staging_uri"],
        quarantine_uri=p["quarantine_uri"], passed=p["passed"] == "true", rows_staged=int(p["rows_staged"]),
        rows_quarantined=int(p["rows_quarantined"]))
    state: State = p["state"]  # type: ignore[assignment]
    return PartitionRecord(v, state, p["superseded_by"] or None)


class GlueCatalog(Catalog):
    def __init__(self, session: AwsSession, database_prefix: str, schema_of: Callable[[str], pa.Schema]):
        if not _PREFIX.match(database_prefix):
            raise TerminalError(f"invalid Glue database prefix {database_prefix!r}: must match {_PREFIX.pattern}")
        self.session, self.prefix, self.schema_of = session, database_prefix, schema_of

    def query_hint(self) -> str:
        return f"Amazon Athena, with the Glue databases {self.prefix}<zone>_<insight_zone> as schemas"

    def __repr__(self) -> str:
        return f"GlueCatalog(prefix={self.prefix!r})"

    @property
    def glue(self) -> Any:
        return self.session.client("glue")

    # -- names ----------------------------------------------------------------------------------
    def database(self, zone: str, insight_zone: str) -> str:
        return self.prefix + schema_name(zone, insight_zone)

    @property
    def records_database(self) -> str:
        return f"{self.prefix}platform"

    @staticmethod
    def records_table(insight_zone: str, dataset: str) -> str:
        return f"partitions__{check_ident(insight_zone, 'insight zone')}__{check_ident(dataset, 'dataset')}"

    # -- Glue calls -----------------------------------------------------------------------------
    def _call(self, doing: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.glue, method)(**kwargs)
        except Exception as e:
            raise translate(e, doing) from e

    def _get_table(self, database: str, table: str) -> dict | None:
        try:
            return self.glue.get_table(DatabaseName=database, Name=table)["Table"]
        except self.glue.exceptions.EntityNotFoundException:
            return None
        except Exception as e:
            raise translate(e, f"reading the Glue table {database}.{table}") from e

    def _partitions(self, database: str, table: str) -> Iterator[dict]:
        try:
            for page in self.glue.get_paginator("get_partitions").paginate(DatabaseName=database, TableName=table):
                yield from page["Partitions"]
        except self.glue.exceptions.EntityNotFoundException:
            return
        except Exception as e:
            raise translate(e, f"listing the partitions of the Glue table {database}.{table}") from e

    def _ensure_database(self, name: str) -> None:
        try:
            self.glue.create_database(DatabaseInput={
                "Name": name, "Description": "lake-platform catalog (managed by the platform: do not edit)"})
        except self.glue.exceptions.AlreadyExistsException:
            pass
        except Exception as e:
            raise translate(e, f"creating the Glue database {name}") from e

    def _create_partitions(self, database: str, table: str, inputs: list[dict]) -> None:
        doing = f"registering partitions in the Glue table {database}.{table}"
        for batch in _chunks(inputs, CREATE_BATCH):
            out = self._call(doing, "batch_create_partition", DatabaseName=database, TableName=table,
                             PartitionInputList=batch)
            _item_errors(out.get("Errors", []), doing)

    def _update_partitions(self, database: str, table: str, inputs: list[dict]) -> None:
        doing = f"updating partitions in the Glue table {database}.{table}"
        for batch in _chunks(inputs, UPDATE_BATCH):
            out = self._call(doing, "batch_update_partition", DatabaseName=database, TableName=table,
                             Entries=[{"PartitionValueList": p["Values"], "PartitionInput": p} for p in batch])
            _item_errors(out.get("Errors", []), doing, key="PartitionValueList")

    def _delete_partitions(self, database: str, table: str, keys: list[str]) -> None:
        doing = f"deregistering partitions from the Glue table {database}.{table}"
        for batch in _chunks(keys, DELETE_BATCH):
            out = self._call(doing, "batch_delete_partition", DatabaseName=database, TableName=table,
                             PartitionsToDelete=[{"Values": [k]} for k in batch])
            _item_errors(out.get("Errors", []), doing)

    # -- reading --------------------------------------------------------------------------------
    def partitions(self, insight_zone: str, dataset: str) -> list[PartitionRecord]:
        records = [_record_of(p.get("Parameters", {}))
                   for p in self._partitions(self.records_database, self.records_table(insight_zone, dataset))]
        return sorted(records, key=lambda r: (r.version.delivered_at_ns, r.version.partition_key))

    def published_tables(self) -> set[tuple[str, str]]:
        """(schema, table) with at least one visible partition; the schema without the prefix
        (``staging_<insight_zone>``: the logical schema dbt reads)."""
        out: set[tuple[str, str]] = set()
        try:
            for page in self.glue.get_paginator("get_databases").paginate():
                for db in page["DatabaseList"]:
                    name = db["Name"]
                    logical = name[len(self.prefix):]
                    if not name.startswith(self.prefix) or not logical.startswith("staging_"):
                        continue
                    for tpage in self.glue.get_paginator("get_tables").paginate(DatabaseName=name):
                        for t in tpage["TableList"]:
                            if next(iter(self._partitions(name, t["Name"])), None) is not None:
                                out.add((logical, t["Name"]))
        except Exception as e:
            raise translate(e, "listing the Glue staging tables") from e
        return out

    # -- writing --------------------------------------------------------------------------------
    def _table_input(self, table: str, columns: list[dict], location: str) -> dict:
        return {
            "Name": table, "TableType": "EXTERNAL_TABLE",
            "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE", "managed_by": "lake-platform"},
            "PartitionKeys": [{"Name": PARTITION_KEY, "Type": "string",
                               "Comment": "partition key: <file name>@<16 hex of its sha256>"}],
            "StorageDescriptor": {"Columns": columns, "Location": location, "InputFormat": INPUT_FORMAT,
                                  "OutputFormat": OUTPUT_FORMAT, "SerdeInfo": SERDE, "Compressed": False,
                                  "StoredAsSubDirectories": False},
        }

    def _partition_input(self, table_input: dict, key: str, uri: str) -> dict:
        sd = {**table_input["StorageDescriptor"], "Location": folder_of(uri)}
        return {"Values": [key], "StorageDescriptor": sd, "Parameters": {"classification": "parquet"}}

    def publish(self, version: PartitionVersion, *, supersede: bool) -> PublishOutcome:
        v = version
        iz, ds = v.insight_zone, check_ident(v.dataset, "dataset")
        before = {r.version.partition_key: r for r in self.partitions(iz, ds) if r.version.source_file == v.source_file}
        versions = [r.version for k, r in before.items() if k != v.partition_key] + [v]
        states = resolve_states(versions, supersede=supersede)

        # (1) the schema of both files against the registered tables: refuse before writing anything
        zones = {"quarantine": (v.quarantine_uri, {"published", "held"}),
                 "staging": (v.staging_uri, {"published"})}
        plans = {}
        for zone, (uri, visible) in zones.items():
            db = self.database(zone, iz)
            columns = columns_of(self.schema_of(uri))
            table_input = self._table_input(ds, columns, dataset_folder(uri, iz, ds))
            existing = self._get_table(db, ds)
            if existing is not None:
                problem = drift(f"{db}.{ds}", existing.get("StorageDescriptor", {}).get("Columns", []), columns)
                if problem:
                    raise SchemaDrift(f"{problem} (file {v.source_file}, partition {v.partition_key}); nothing was "
                                      "written: migrate the table or revert the contract")
            plans[zone] = (db, table_input, existing, visible)
        for db, table_input, existing, _ in plans.values():
            self._ensure_database(db)
            if existing is None:
                try:
                    self.glue.create_table(DatabaseName=db, TableInput=table_input)
                except self.glue.exceptions.AlreadyExistsException:
                    pass  # a concurrent first publish: its columns were checked by the same contract
                except Exception as e:
                    raise translate(e, f"creating the Glue table {db}.{ds}") from e
            elif existing.get("StorageDescriptor", {}).get("Location") != table_input["StorageDescriptor"]["Location"]:
                self._call(f"updating the Glue table {db}.{ds}", "update_table", DatabaseName=db,
                           TableInput=table_input)

        # (2) quarantine, then (3) staging: reconcile the partitions of this file name's versions
        for zone in ("quarantine", "staging"):
            db, table_input, _, visible = plans[zone]
            uri_of = (lambda x: x.quarantine_uri) if zone == "quarantine" else (lambda x: x.staging_uri)
            wanted = {x.partition_key: folder_of(uri_of(x)) for x in versions
                      if states[x.partition_key][0] in visible}
            mine = {x.partition_key for x in versions}
            current = {p["Values"][0]: p.get("StorageDescriptor", {}).get("Location")
                       for p in self._partitions(db, ds) if p["Values"] and p["Values"][0] in mine}
            by_key = {x.partition_key: x for x in versions}
            create = [self._partition_input(table_input, k, uri_of(by_key[k])) for k in wanted if k not in current]
            move = [self._partition_input(table_input, k, uri_of(by_key[k]))
                    for k in wanted if k in current and current[k] != wanted[k]]
            drop = sorted(k for k in current if k not in wanted)
            if zone == "staging":  # out of view first: never two versions of one file at once
                self._delete_partitions(db, ds, drop)
            self._create_partitions(db, ds, create)
            self._update_partitions(db, ds, move)
            if zone == "quarantine":  # in view first: quarantine never lacks what staging shows
                self._delete_partitions(db, ds, drop)

        # (4) the records: the commit point
        self._write_records(iz, ds, versions, states, before, v)
        newly = tuple(sorted(k for k, (state, _) in states.items()
                             if state == "superseded" and k != v.partition_key
                             and (before[k].state != "superseded" if k in before else True)))
        state, by = states[v.partition_key]
        return PublishOutcome(state=state, superseded=newly, superseded_by=by)

    def _write_records(self, iz: str, ds: str, versions: list[PartitionVersion],
                       states: dict[str, tuple[State, str | None]], before: dict[str, PartitionRecord],
                       new: PartitionVersion) -> None:
        db, table = self.records_database, self.records_table(iz, ds)
        self._ensure_database(db)
        if self._get_table(db, table) is None:
            try:
                self.glue.create_table(DatabaseName=db, TableInput={
                    "Name": table, "TableType": "EXTERNAL_TABLE",
                    "Description": f"lake-platform: every partition of {iz}.{ds}, its state and files (in "
                                   "each partition's Parameters)",
                    "Parameters": {"managed_by": "lake-platform", "content": "partition records"},
                    "PartitionKeys": [{"Name": RECORD_KEY, "Type": "string"}],
                    "StorageDescriptor": {"Columns": []}})
            except self.glue.exceptions.AlreadyExistsException:
                pass
            except Exception as e:
                raise translate(e, f"creating the Glue table {db}.{table}") from e

        def record_input(x: PartitionVersion) -> dict:
            state, by = states[x.partition_key]
            return {"Values": [x.partition_key], "Parameters": _record_params(PartitionRecord(x, state, by)),
                    "StorageDescriptor": {"Columns": []}}

        def moved(x: PartitionVersion) -> bool:
            old = before.get(x.partition_key)
            return old is not None and (old.state, old.superseded_by) != states[x.partition_key]

        changed = [x for x in versions if x is not new and moved(x)]
        self._update_partitions(db, table, [record_input(x) for x in changed])
        # the new version's record last: from here on it is published (or held, or superseded)
        if new.partition_key in before:
            self._update_partitions(db, table, [record_input(new)])
        else:
            self._create_partitions(db, table, [record_input(new)])

