"""Compaction: many small per-delivery Parquet files of one table into a few larger ones.

Staging and quarantine hold one file per delivered file, so after a year of hourly deliveries a
query over a table opens tens of thousands of small files. A compacted file holds the rows of
many deliveries, each row still with its ``_source_file`` and ``_source_line`` and now with its
delivery's ``_partition_key`` as a real column (a per-delivery file carries it in its path). The
catalog then points those deliveries at the compacted file in one transaction
(``resources.catalog``); the per-delivery files stay until no reader can still be reading them.

This module only plans and writes; it never decides what is in view.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.errors import IntegrityError, NotAvailable
from core.names import PARTITION_KEY
from resources.catalog.base import Catalog
from resources.lake.base import TMP_DIR, Lake

COMPACTED_DIR = "_compacted"  # <zone>/<insight_zone>/<dataset>/_compacted/<month>/<version>/part-0.parquet

TARGET_ROWS = 2_000_000  # rows per compacted file (of staged rows: about 50-150 MB of Parquet)
MIN_FILES = 8  # fewer small files than this in a month are left as they are
SMALL_ROWS = TARGET_ROWS // 4  # a delivery at least this big is already worth opening by itself
ROW_GROUP_ROWS = 122_880  # DuckDB's own row-group size: its zone maps then skip whole groups


@dataclass(frozen=True)
class Member:
    """One delivery's file in a table, as the catalog records it."""

    partition_key: str
    uri: str
    rows: int
    delivered_at_ns: int


def unit_of(delivered_at_ns: int) -> str:
    """Deliveries are compacted per calendar month of arrival (UTC): a compacted month holds the
    deliveries queries about that time read together, and is not rewritten when later months are."""
    return dt.datetime.fromtimestamp(delivered_at_ns / 1e9, dt.UTC).strftime("%Y-%m")


def plan(members: Iterable[Member], *, target_rows: int = TARGET_ROWS, min_files: int = MIN_FILES
         ) -> list[tuple[str, list[Member]]]:
    """(month, members) of each compacted file to write: small deliveries only, per month of
    arrival, in arrival order, up to ``target_rows`` each; a group of fewer than ``min_files``
    files is left alone (so is a month's last group until enough files join it)."""
    by_unit: dict[str, list[Member]] = {}
    for m in sorted(members, key=lambda m: (m.delivered_at_ns, m.partition_key)):
        if m.rows < min(SMALL_ROWS, target_rows):
            by_unit.setdefault(unit_of(m.delivered_at_ns), []).append(m)
    out = []
    for unit, small in sorted(by_unit.items()):
        group: list[Member] = []
        rows = 0
        for m in small:
            if group and rows + m.rows > target_rows:
                out.append((unit, group))
                group, rows = [], 0
            group.append(m)
            rows += m.rows
        out += [(unit, group)] if group else []
    return [(u, g) for u, g in out if len(g) >= min_files]


def write(lake: Lake, members: list[Member], dest_uri: str, *, sort_by: str | None = None) -> dict[str, int]:
    """The rows of ``members`` into one Parquet file at ``dest_uri`` (sorted by ``sort_by``, the
    dataset's event time when it has one, so a filter on it skips row groups); returns the rows
    written per partition key, checked against what the catalog recorded for each."""
    tables = []
    for m in members:
        with lake.open_input(m.uri) as f:
            t = pq.read_table(f)
        if PARTITION_KEY in t.column_names:
            raise IntegrityError(f"{m.uri} already has a {PARTITION_KEY} column: it is not one delivery's file")
        tables.append(t.append_column(PARTITION_KEY, pa.array([m.partition_key] * t.num_rows, pa.string())))
    table = pa.concat_tables(tables, promote_options="permissive")
    if sort_by is not None and sort_by in table.column_names:
        table = table.sort_by([(sort_by, "ascending")])
    written = pc.value_counts(table[PARTITION_KEY]).to_pylist() if table.num_rows else []
    counts = {d["values"]: d["counts"] for d in written}
    wrong = [(m.partition_key, m.rows, counts.get(m.partition_key, 0)) for m in members
             if counts.get(m.partition_key, 0) != m.rows]
    if wrong:
        raise IntegrityError(f"compacting into {dest_uri}: rows per delivery do not match the catalog's records "
                             f"(partition, recorded, read): {wrong[:5]}; nothing was changed")
    with lake.open_output(dest_uri) as out:
        pq.write_table(table, out, row_group_size=ROW_GROUP_ROWS, compression="zstd")
    return counts


@dataclass(frozen=True)
class Compacted:
    """One compacted pair of files (staging, quarantine) and the deliveries it now serves."""

    month: str
    files: int  # deliveries written into it
    served: int  # of them, those the catalog now reads from it (the rest changed meanwhile)
    rows_staged: int
    rows_quarantined: int
    staging_uri: str
    quarantine_uri: str


def compact_table(lake: Lake, catalog: Catalog, insight_zone: str, dataset: str, *, version: str,
                  sort_by: str | None, target_rows: int = TARGET_ROWS, min_files: int = MIN_FILES,
                  retention_s: float, now_ns: int) -> tuple[list[Compacted], list[str]]:
    """Compact the published deliveries of one dataset's staging and quarantine tables, then
    remove the files earlier compactions replaced, once ``retention_s`` old. Returns what was
    compacted and the files removed.

    Per group: both compacted files are written under a temporary name, checked row for row
    against the catalog's counts per delivery, published, and only then does one catalog
    transaction point the deliveries at them; a failure before that changes nothing visible."""
    if not catalog.can_compact:
        raise NotAvailable(f"{catalog!r} serves each delivery from its own files (a Glue partition is one "
                           "delivery's folder): compaction is not available on this catalog yet")
    records = catalog.partitions(insight_zone, dataset)
    compacted = catalog.compacted_uris(insight_zone, dataset)
    by_key = {r.version.partition_key: r for r in records}
    candidates = [Member(v.partition_key, v.staging_uri, v.rows_staged, v.delivered_at_ns)
                  for r in records if r.state == "published" and (v := r.version).staging_uri not in compacted
                  and v.quarantine_uri not in compacted]
    s_store, q_store = lake.zone("staging"), lake.zone("quarantine")
    done = []
    for month, group in plan(candidates, target_rows=target_rows, min_files=min_files):
        members = [by_key[m.partition_key] for m in group]
        final = (insight_zone, dataset, COMPACTED_DIR, month, version, "part-0.parquet")
        tmp = (TMP_DIR, f"{COMPACTED_DIR}.{insight_zone}.{dataset}.{month}.{version}.parquet")
        try:
            staged = write(lake, group, s_store.uri(*tmp), sort_by=sort_by)
            quarantined = write(lake, [Member(r.version.partition_key, r.version.quarantine_uri,
                                              r.version.rows_quarantined, r.version.delivered_at_ns)
                                       for r in members], q_store.uri(*tmp))
            s_store.publish(tmp, final)
            q_store.publish(tmp, final)
        finally:
            for store in (s_store, q_store):
                if store.exists(*tmp):
                    store.delete(*tmp)
        served = catalog.swap_in_compacted(insight_zone, dataset, members, s_store.uri(*final), q_store.uri(*final))
        done.append(Compacted(month, len(group), len(served), sum(staged.values()), sum(quarantined.values()),
                              s_store.uri(*final), q_store.uri(*final)))
    retired = catalog.retired_files(insight_zone, dataset, now_ns - int(retention_s * 1e9))
    for uri in retired:
        if lake.exists(uri):
            lake.delete(uri)
    catalog.forget_retired(insight_zone, dataset, retired)
    return done, retired
