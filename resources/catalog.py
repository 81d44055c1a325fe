"""The local catalog: a DuckDB file with one view per published table.

Views are ``<zone>_<insight_zone>.<dataset>`` over the table's Parquet files, so anyone can
query the lake with DuckDB. The platform opens the file only for the moment of a write and only
when a view is new or changed, so users may keep it open between writes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import duckdb

IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class CatalogBusy(RuntimeError):
    pass


def quote_ident(name: str) -> str:
    if not IDENT.match(name):
        raise ValueError(f"invalid identifier {name!r}: must match {IDENT.pattern}")
    return '"' + name + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class DuckDBCatalog:
    def __init__(self, path: str | Path, lock_timeout_s: float = 30.0):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        # Another process (a user's shell, a parallel run) may hold the file: retry briefly.
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as e:
                if "lock" not in str(e).lower() or time.monotonic() > deadline:
                    raise CatalogBusy(f"catalog {self.path} is locked by another process: {e}") from e
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    @staticmethod
    def view_sql(glob: str) -> str:
        return f"SELECT * FROM read_parquet({quote_literal(glob)}, union_by_name = true)"

    def current_view(self, schema: str, view: str) -> str | None:
        if not self.path.exists():
            return None
        con = self._connect(read_only=True)
        try:
            row = con.execute(
                "SELECT sql FROM duckdb_views() WHERE schema_name = ? AND view_name = ?",
                [schema, view],
            ).fetchone()
        finally:
            con.close()
        return row[0] if row else None

    def views(self) -> set[tuple[str, str]]:
        """(schema, view) of every published table."""
        if not self.path.exists():
            return set()
        con = self._connect(read_only=True)
        try:
            rows = con.execute("SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        finally:
            con.close()
        return {(schema, view) for schema, view in rows}

    def register(self, zone: str, insight_zone: str, dataset: str, glob: str) -> bool:
        """Create or replace the view for a table; returns False when it was already current."""
        schema = f"{zone}_{insight_zone}"
        ddl_select = self.view_sql(glob)
        current = self.current_view(schema, dataset)
        if current is not None and ddl_select in current:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect(read_only=False)
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
            con.execute(
                f"CREATE OR REPLACE VIEW {quote_ident(schema)}.{quote_ident(dataset)} AS {ddl_select}"
            )
        finally:
            con.close()
        return True
