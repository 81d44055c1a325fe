"""The local catalog: a DuckDB file with one view per table, ``<zone>_<insight_zone>.<dataset>``,
over exactly the Parquet files of its visible partitions, and a table ``meta.partitions`` that
records every partition's versions and state (anyone may query it).

The platform opens the file only for the moment of a change (one transaction that updates
``meta.partitions`` and both views of the dataset), so users may keep it open between writes; a
user holding it open for writing makes the platform wait, then fail with a message saying so
(see resources.duckdb_files).
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from core.names import HASH_CHARS, PARTITION_KEY, quote_ident, quote_literal, schema_name, split_partition_key
from resources.catalog.base import Catalog, PartitionRecord, PartitionVersion, PublishOutcome, resolve_states
from resources.duckdb_files import connect

_TABLE = "meta.partitions"
_COLUMNS = ("insight_zone", "dataset", "partition_key", "source_file", "delivered_at_ns", "staging_uri",
            "quarantine_uri", "passed", "rows_staged", "rows_quarantined", "state", "superseded_by", "updated_at")
_DDL = f"""
CREATE SCHEMA IF NOT EXISTS meta;
CREATE TABLE IF NOT EXISTS {_TABLE} (
    insight_zone VARCHAR NOT NULL, dataset VARCHAR NOT NULL, partition_key VARCHAR NOT NULL,
    source_file VARCHAR NOT NULL, delivered_at_ns BIGINT NOT NULL, staging_uri VARCHAR NOT NULL,
    quarantine_uri VARCHAR NOT NULL, passed BOOLEAN NOT NULL, rows_staged BIGINT NOT NULL,
    rows_quarantined BIGINT NOT NULL, state VARCHAR NOT NULL, superseded_by VARCHAR, updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (insight_zone, dataset, partition_key)
)"""


# Which deliveries each compacted file holds (engine.compaction), by zone: what a view must leave
# out of such a file when one of them is no longer in view (re-staged, superseded); and the file
# each delivery was read from before, removed once no reader can still be reading it.
_COMPACTED = "meta.compacted"
_COMPACTED_DDL = f"""
CREATE TABLE IF NOT EXISTS {_COMPACTED} (
    insight_zone VARCHAR NOT NULL, dataset VARCHAR NOT NULL, zone VARCHAR NOT NULL, uri VARCHAR NOT NULL,
    partition_key VARCHAR NOT NULL, replaced_uri VARCHAR, compacted_at_ns BIGINT NOT NULL,
    PRIMARY KEY (zone, uri, partition_key)
)"""

_FILE = "_platform_file"  # read_parquet's file-name column, never shown: only its partition key is


def view_sql(uris: list[str]) -> str:
    """The rows of exactly these staged files, with the delivery each row belongs to: the partition
    key (``<file>@<16 hex>``, the only part of a staged file's path with an ``@``: see
    ``core.names.partition_key`` and ``assets.ingest.partition_parts``), as Glue's partition column
    holds it for the same layout."""
    files = ", ".join(quote_literal(u) for u in uris)
    return (f"SELECT * EXCLUDE ({_FILE}), regexp_extract({_FILE}, '[^/]+@[0-9a-f]{{{HASH_CHARS}}}') AS {PARTITION_KEY} "
            f"FROM read_parquet([{files}], union_by_name = true, filename = '{_FILE}')")


class DuckDBCatalog(Catalog):
    def __init__(self, path: str | Path, lock_timeout_s: float = 30.0):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    def query_hint(self) -> str:
        return f"duckdb -readonly {self.path}"

    def __repr__(self) -> str:
        return f"DuckDBCatalog({str(self.path)!r})"

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        return connect(self.path, read_only=read_only, timeout_s=self.lock_timeout_s, what="catalog")

    # -- reading --------------------------------------------------------------------------------
    def _has_table(self, con: duckdb.DuckDBPyConnection) -> bool:
        return bool(con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'meta' "
                                "AND table_name = 'partitions'").fetchone()[0])  # type: ignore[index]

    def partitions(self, insight_zone: str, dataset: str) -> list[PartitionRecord]:
        if not self.path.exists():
            return []
        con = self._connect(read_only=True)
        try:
            if not self._has_table(con):
                return []
            rows = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE} WHERE insight_zone = ? AND dataset = ? "
                               "ORDER BY delivered_at_ns, partition_key", [insight_zone, dataset]).fetchall()
        finally:
            con.close()
        return [_record(r) for r in rows]

    def published_tables(self) -> set[tuple[str, str]]:
        return {(s, t) for s, t in self.views() if s.startswith("staging_")}

    def views(self) -> set[tuple[str, str]]:
        """(schema, view) of every table with something in view."""
        if not self.path.exists():
            return set()
        con = self._connect(read_only=True)
        try:
            rows = con.execute("SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        finally:
            con.close()
        return {(schema, view) for schema, view in rows}

    def current_view(self, schema: str, view: str) -> str | None:
        if not self.path.exists():
            return None
        con = self._connect(read_only=True)
        try:
            row = con.execute("SELECT sql FROM duckdb_views() WHERE schema_name = ? AND view_name = ?",
                              [schema, view]).fetchone()
        finally:
            con.close()
        return row[0] if row else None

    def snapshot(self, dest: str | Path) -> Path:
        """A copy of every view in a new DuckDB file, for a reader that holds it for long (dbt):
        the views name immutable Parquet files, so the copy stays consistent while the catalog
        moves on, and the catalog is never held open by that reader."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for stale in (dest, Path(f"{dest}.wal")):
            stale.unlink(missing_ok=True)
        views: list[tuple[str, str, str]] = []
        if self.path.exists():
            con = self._connect(read_only=True)
            try:
                views = con.execute("SELECT schema_name, view_name, sql FROM duckdb_views() WHERE NOT internal"
                                    ).fetchall()
            finally:
                con.close()
        out = duckdb.connect(str(dest))
        try:
            for schema in sorted({s for s, _, _ in views}):
                out.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
            for _schema, _view, sql in views:
                out.execute(sql)  # schema-qualified: CREATE VIEW <schema>.<view> AS ...
        finally:
            out.close()
        return dest

    # -- writing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The catalog open for one transaction: committed, or rolled back on any error."""
        con = self._connect(read_only=False)
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()

    def publish(self, version: PartitionVersion, *, supersede: bool) -> PublishOutcome:
        return self.publish_many([version], supersede=supersede)[0]

    def publish_many(self, versions: list[PartitionVersion], *, supersede: bool) -> list[PublishOutcome]:
        """One transaction: every record in turn, then each dataset's views once (rewriting a
        view binds every file it names, so a view per file would make a run of n files cost n²)."""
        if not versions:
            return []
        with self._transaction() as con:
            outcomes = [self._publish(con, v, supersede) for v in versions]
            for key in dict.fromkeys((v.insight_zone, v.dataset) for v in versions):
                self._refresh_views(con, *key)
        return outcomes

    def _publish(self, con: duckdb.DuckDBPyConnection, v: PartitionVersion, supersede: bool) -> PublishOutcome:
        """Record ``v`` and the states it changes; the caller refreshes the views."""
        fresh = not self._has_table(con)
        con.execute(_DDL)
        if fresh:
            _adopt_legacy_views(con)
        key = (v.insight_zone, v.dataset)
        before = {r.version.partition_key: r for r in _records(con, *key, source_file=v.source_file)}
        versions = [r.version for k, r in before.items() if k != v.partition_key] + [v]
        states = resolve_states(versions, supersede=supersede)
        now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        for ver in versions:
            state, by = states[ver.partition_key]
            old = before.get(ver.partition_key)
            if ver is v or old is None or (old.state, old.superseded_by) != (state, by):
                con.execute(f"INSERT OR REPLACE INTO {_TABLE} ({', '.join(_COLUMNS)}) VALUES "
                            f"({', '.join('?' * len(_COLUMNS))})",
                            [ver.insight_zone, ver.dataset, ver.partition_key, ver.source_file, ver.delivered_at_ns,
                             ver.staging_uri, ver.quarantine_uri, ver.passed, ver.rows_staged, ver.rows_quarantined,
                             state, by, now])
        newly = tuple(sorted(k for k, (state, _) in states.items()
                             if state == "superseded" and k != v.partition_key
                             and (before[k].state != "superseded" if k in before else True)))
        state, by = states[v.partition_key]
        return PublishOutcome(state=state, superseded=newly, superseded_by=by)

    def refresh_views(self, insight_zone: str, dataset: str) -> None:
        """Rebuild a dataset's two views from its records (they always match; this repairs a view
        dropped or edited by hand)."""
        with self._transaction() as con:
            con.execute(_DDL)
            self._refresh_views(con, insight_zone, dataset)

    def _refresh_views(self, con: duckdb.DuckDBPyConnection, insight_zone: str, dataset: str) -> None:
        records = _records(con, insight_zone, dataset)
        con.execute(_COMPACTED_DDL)
        compacted: dict[str, set[str]] = {}  # uri → the deliveries it holds
        for uri, key in con.execute(f"SELECT uri, partition_key FROM {_COMPACTED} WHERE insight_zone = ? AND "
                                    "dataset = ?", [insight_zone, dataset]).fetchall():
            compacted.setdefault(uri, set()).add(key)
        wanted = {
            "staging": [(r.version.staging_uri, r.version.partition_key) for r in records if r.state == "published"],
            "quarantine": [(r.version.quarantine_uri, r.version.partition_key) for r in records
                           if r.state in ("published", "held")],
        }
        for zone, in_view in wanted.items():
            schema = schema_name(zone, insight_zone)
            name = f"{quote_ident(schema)}.{quote_ident(dataset)}"
            if in_view:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
                con.execute(f"CREATE OR REPLACE VIEW {name} AS {view_sql_with(in_view, compacted)}")
            else:
                con.execute(f"DROP VIEW IF EXISTS {name}")

    # -- compaction -------------------------------------------------------------------------------
    can_compact = True

    def compacted_uris(self, insight_zone: str, dataset: str) -> set[str]:
        if not self.path.exists():
            return set()
        con = self._connect(read_only=True)
        try:
            if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'meta' AND "
                               "table_name = 'compacted'").fetchone()[0]:  # type: ignore[index]
                return set()
            rows = con.execute(f"SELECT DISTINCT uri FROM {_COMPACTED} WHERE insight_zone = ? AND dataset = ?",
                               [insight_zone, dataset]).fetchall()
        finally:
            con.close()
        return {u for (u,) in rows}

    def swap_in_compacted(self, insight_zone: str, dataset: str, members: list[PartitionRecord],
                          staging_uri: str, quarantine_uri: str) -> list[str]:
        """Point ``members`` at the compacted files, in one transaction with both views; a member
        whose record changed since it was read (re-staged, superseded) keeps its record, and its
        rows in the compacted files stay out of view. Returns the keys now served from them."""
        with self._transaction() as con:
            con.execute(_COMPACTED_DDL)
            now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            con.register("_members", pa.table({
                "partition_key": [m.version.partition_key for m in members],
                "staging_uri": [m.version.staging_uri for m in members],
                "quarantine_uri": [m.version.quarantine_uri for m in members]}))
            swapped = {k for (k,) in con.execute(
                f"UPDATE {_TABLE} AS p SET staging_uri = ?, quarantine_uri = ?, updated_at = ? FROM _members m "
                "WHERE p.insight_zone = ? AND p.dataset = ? AND p.partition_key = m.partition_key "
                "AND p.staging_uri = m.staging_uri AND p.quarantine_uri = m.quarantine_uri "
                "AND p.state = 'published' RETURNING p.partition_key",
                [staging_uri, quarantine_uri, now, insight_zone, dataset]).fetchall()}
            con.unregister("_members")
            # Every delivery the files hold, swapped or not: what the views must know of them.
            at = time.time_ns()
            pairs = (("staging", staging_uri, lambda v: v.staging_uri),
                     ("quarantine", quarantine_uri, lambda v: v.quarantine_uri))
            rows = [(zone, uri, m.version.partition_key, old(m.version) if m.version.partition_key in swapped
                     else None) for m in members for zone, uri, old in pairs]
            con.register("_held", pa.table({"zone": [r[0] for r in rows], "uri": [r[1] for r in rows],
                                             "partition_key": [r[2] for r in rows],
                                             "replaced_uri": pa.array([r[3] for r in rows], pa.string())}))
            con.execute(f"INSERT OR REPLACE INTO {_COMPACTED} SELECT ?, ?, zone, uri, partition_key, replaced_uri, "
                        "? FROM _held", [insight_zone, dataset, at])
            con.unregister("_held")
            self._refresh_views(con, insight_zone, dataset)
        return sorted(swapped)

    def retired_files(self, insight_zone: str, dataset: str, before_ns: int) -> list[str]:
        """Files that deliveries were read from before a compaction that is older than
        ``before_ns``, and that no record points at any more: safe to remove."""
        if not self.compacted_uris(insight_zone, dataset):
            return []
        con = self._connect(read_only=True)
        try:
            rows = con.execute(
                f"SELECT DISTINCT c.replaced_uri FROM {_COMPACTED} c WHERE c.insight_zone = ? AND c.dataset = ? "
                "AND c.replaced_uri IS NOT NULL AND c.compacted_at_ns < ? AND NOT EXISTS (SELECT 1 FROM "
                f"{_TABLE} p WHERE p.staging_uri = c.replaced_uri OR p.quarantine_uri = c.replaced_uri)",
                [insight_zone, dataset, before_ns]).fetchall()
        finally:
            con.close()
        return sorted(u for (u,) in rows)

    def forget_retired(self, insight_zone: str, dataset: str, uris: list[str]) -> None:
        if not uris:
            return
        con = self._connect(read_only=False)
        try:
            con.executemany(f"UPDATE {_COMPACTED} SET replaced_uri = NULL WHERE insight_zone = ? AND dataset = ? "
                            "AND replaced_uri = ?", [[insight_zone, dataset, u] for u in uris])
        finally:
            con.close()


def view_sql_with(in_view: list[tuple[str, str]], compacted: dict[str, set[str]]) -> str:
    """The view over (file, delivery) pairs in view: per-delivery files as ``view_sql``; compacted
    files, which carry ``_partition_key`` as a column, read whole where every delivery they hold is
    in view, and without those that are not (re-staged or superseded after compaction)."""
    single = [u for u, _ in in_view if u not in compacted]
    showing: dict[str, set[str]] = {}
    for uri, key in in_view:
        if uri in compacted:
            showing.setdefault(uri, set()).add(key)
    parts = [view_sql(single)] if single else []
    whole = sorted(u for u, keys in showing.items() if keys >= compacted[u])
    if whole:
        parts.append(f"SELECT * FROM read_parquet([{', '.join(quote_literal(u) for u in whole)}], "
                     "union_by_name = true)")
    for uri in sorted(set(showing) - set(whole)):
        keys = ", ".join(quote_literal(k) for k in sorted(showing[uri]))
        parts.append(f"SELECT * FROM read_parquet([{quote_literal(uri)}], union_by_name = true) "
                     f"WHERE {PARTITION_KEY} IN ({keys})")
    return "\nUNION ALL BY NAME\n".join(parts)


def _record(row: tuple) -> PartitionRecord:
    d = dict(zip(_COLUMNS, row, strict=True))
    version = PartitionVersion(
        insight_zone=d["insight_zone"], dataset=d["dataset"], partition_key=d["partition_key"],
        source_file=d["source_file"], delivered_at_ns=d["delivered_at_ns"], staging_uri=d["staging_uri"],
        quarantine_uri=d["quarantine_uri"], passed=d["passed"], rows_staged=d["rows_staged"],
        rows_quarantined=d["rows_quarantined"])
    return PartitionRecord(version, d["state"], d["superseded_by"])


def _records(con: duckdb.DuckDBPyConnection, insight_zone: str, dataset: str,
             source_file: str | None = None) -> list[PartitionRecord]:
    sql = f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE} WHERE insight_zone = ? AND dataset = ?"
    params: list = [insight_zone, dataset]
    if source_file is not None:
        sql += " AND source_file = ?"
        params.append(source_file)
    return [_record(r) for r in con.execute(sql + " ORDER BY delivered_at_ns, partition_key", params).fetchall()]


def _adopt_legacy_views(con: duckdb.DuckDBPyConnection) -> None:
    """A catalog written before partitions were recorded had views over ``<dataset>/*.parquet``
    (one file per partition, named by its key): record those files as published partitions, so
    that upgrading keeps every table exactly as it was."""
    views = con.execute("SELECT schema_name, view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()
    now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    quarantined: dict[tuple[str, str, str], str] = {}
    staged: dict[tuple[str, str, str], str] = {}
    staging_dirs: dict[tuple[str, str], str] = {}
    for schema, view, sql in views:
        zone, _, insight_zone = schema.partition("_")
        start = sql.find("read_parquet('")
        if zone not in ("staging", "quarantine") or start < 0:
            continue
        pattern = sql[start + len("read_parquet('"):].split("'", 1)[0]
        if zone == "staging":
            staging_dirs[(insight_zone, view)] = os.path.dirname(pattern)
        for path in glob.glob(pattern):
            key = Path(path).name.removesuffix(".parquet")
            try:
                split_partition_key(key)
            except ValueError:
                continue
            (staged if zone == "staging" else quarantined)[(insight_zone, view, key)] = path
    for (insight_zone, dataset, key), q_path in quarantined.items():
        s_path = staged.get((insight_zone, dataset, key))
        held = os.path.join(staging_dirs.get((insight_zone, dataset), ""), "_held", f"{key}.parquet")
        name = split_partition_key(key)[0]
        con.execute(
            f"INSERT OR REPLACE INTO {_TABLE} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            [insight_zone, dataset, key, name, os.stat(q_path).st_mtime_ns, s_path or held, q_path,
             s_path is not None, 0, 0, "published" if s_path else "held", None, now])
