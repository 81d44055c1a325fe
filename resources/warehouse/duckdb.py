"""The local warehouse: a DuckDB file (``$PLATFORM_HOME/warehouse.duckdb``) that dbt builds.

dbt reads the staging tables through a snapshot of the catalog taken when the run starts (the
views name immutable Parquet files, so the snapshot stays consistent), attached read-only: a
long dbt run never holds the catalog, so ingest runs keep publishing meanwhile. The warehouse file
itself has one writer at a time; the runs that touch it share the ``warehouse`` concurrency pool
(assets.policies), and a lock held by a user's DuckDB session is a transient error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from core.errors import PlatformError, ResourceBusy
from core.names import quote_ident
from resources.catalog.duckdb import DuckDBCatalog
from resources.duckdb_files import connect, is_lock_error, lock_message
from resources.warehouse.base import Warehouse

_LOCKED = re.compile(r'Could not set lock on file "(?P<path>[^"]+)"[^\n]*')


class DuckDBWarehouse(Warehouse):
    def __init__(self, path: str | Path, catalog: DuckDBCatalog, dbt_target: str, lock_timeout_s: float = 30.0):
        self.path = Path(path)
        self.catalog = catalog
        self.dbt_target = dbt_target
        self.lock_timeout_s = lock_timeout_s

    def __repr__(self) -> str:
        return f"DuckDBWarehouse({str(self.path)!r})"

    def dbt_environment(self, run_dir: Path) -> dict[str, str]:
        # One path for every run (beside the run folders): dbt's profile attaches it, and a profile
        # that stays the same lets dbt parse partially (seconds per run). The warehouse pool runs
        # one dbt at a time, so no run replaces the snapshot another is reading.
        snapshot = self.catalog.snapshot(run_dir.parent / "catalog_snapshot.duckdb")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return {"PLATFORM_WAREHOUSE_PATH": str(self.path), "PLATFORM_CATALOG_SNAPSHOT": str(snapshot)}

    def read_table(self, schema: str, table: str) -> pa.Table:
        con = connect(self.path, read_only=True, timeout_s=self.lock_timeout_s, what="warehouse")
        try:  # briefly: dbt writes this file
            return con.sql(f"SELECT * FROM {quote_ident(schema)}.{quote_ident(table)}").to_arrow_table()
        finally:
            con.close()

    def row_counts(self, relations: Mapping[str, tuple[str, str]]) -> dict[str, int]:
        if not self.path.exists() or not relations:
            return {}
        con = connect(self.path, read_only=True, timeout_s=self.lock_timeout_s, what="warehouse")
        try:
            out = {}
            for name, (schema, table) in relations.items():
                row = con.execute(f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(table)}").fetchone()
                out[name] = int(row[0]) if row else 0
            return out
        finally:
            con.close()

    def dbt_failure(self, log_text: str) -> PlatformError | None:
        if not is_lock_error(log_text):
            return None
        m = _LOCKED.search(log_text)
        path = Path(m["path"]) if m else self.path
        what = "warehouse" if path == self.path else "file"
        return ResourceBusy("dbt could not run: " + lock_message(path, what, m.group(0) if m else log_text))
