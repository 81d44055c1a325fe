"""The warehouse interface: where dbt builds the modelled zones (ods, analytics), and where the
serving exports read the marts from.

A backend says which dbt target it is, what the dbt subprocess must be told (environment values
the profile reads), how to read a built table, and which dbt failures are transient (a lock held
by a user) rather than a model or a test that failed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa

from core.errors import PlatformError
from core.zones import Dataset
from resources.catalog.base import Catalog


class Warehouse(ABC):
    dbt_target: str

    @abstractmethod
    def dbt_environment(self, run_dir: Path) -> dict[str, str]:
        """Environment values for one dbt invocation whose artifacts go to ``run_dir``."""

    @abstractmethod
    def read_table(self, schema: str, table: str) -> pa.Table: ...

    @abstractmethod
    def row_counts(self, relations: Mapping[str, tuple[str, str]]) -> dict[str, int]:
        """Model name → rows, for the given (schema, table) of each model."""

    def sync_staging(self, catalog: Catalog, datasets: Sequence[Dataset]) -> None:
        """Bring the published staging partitions into the warehouse before dbt reads them. A
        warehouse that reads the lake through the catalog (DuckDB) has nothing to do; one that
        holds its own copy (Redshift) loads what was published and drops what left the view."""
        return None

    def dbt_failure(self, log_text: str) -> PlatformError | None:
        """A transient error when dbt failed for a reason a retry can fix; None otherwise."""
        return None
