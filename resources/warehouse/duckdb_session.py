"""A dbt-duckdb plugin (``plugins: [{module: resources.warehouse.duckdb_session}]`` in profiles.yml) that gives
every warehouse connection the PII hashing key as a DuckDB variable (see resources.pii).

DuckDB variables belong to one connection, and dbt-duckdb runs models on cursors (new connections
to the same database), so the variable is set on both. The value is a bound parameter: dbt never
sees it, logs it or writes it into an artifact.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from resources.pii import DUCKDB_VARIABLE, pii_key


class Plugin(BasePlugin):
    def _set_key(self, conn: Any) -> None:
        # Read per connection (not at plugin load), so `dbt parse` never needs the key.
        conn.execute(f"SET VARIABLE {DUCKDB_VARIABLE} = ?", [pii_key().get_secret_value()])

    def configure_connection(self, conn: Any) -> None:
        self._set_key(conn)

    def configure_cursor(self, cursor: Any) -> None:
        self._set_key(cursor)
