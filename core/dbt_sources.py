"""dbt sources generated from the zone declarations, so they cannot drift from the contracts.

``python -m cli dbt-sources`` writes ``dbt_project/models/sources.yml``; a test fails when the
committed file differs from what the declarations generate. Each staging table is a source
``staging_<insight_zone>.<dataset>``: locally the catalog's view (DuckDB, attached read-only as
``catalog``), elsewhere a table of the same name in the warehouse.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from core.names import PARTITION_KEY, SOURCE_FILE, SOURCE_LINE, asset_path, schema_name
from core.paths import DBT_DIR
from core.types import parse_type
from core.zones import InsightZone, load_zones

SOURCES_FILE = DBT_DIR / "models" / "sources.yml"
HEADER = "# Generated from platform/zones/*.yaml by `python -m cli dbt-sources`. Do not edit.\n"


def sql_type(contract_type: str) -> str:
    return parse_type(contract_type).portable_sql()


def source_name(insight_zone: str) -> str:
    return schema_name("staging", insight_zone)


def render_sources(zones: tuple[InsightZone, ...] | None = None) -> str:
    sources = []
    for zone in zones or load_zones():
        tables = []
        for ds in zone.datasets:
            cols = [
                {
                    "name": name,
                    "description": col.description or "",
                    "data_type": sql_type(col.type),
                    **({"meta": {"pii": True}} if col.pii else {}),
                }
                for name, col in ds.spec.contract.columns.items()
            ]
            cols += [
                {"name": SOURCE_FILE, "description": "delivered file the row came from", "data_type": "text"},
                {"name": SOURCE_LINE, "description": "line of the row in that file", "data_type": "bigint"},
                {"name": PARTITION_KEY, "description": "the delivery (landing partition key) the row belongs to",
                 "data_type": "text"},
            ]
            tables.append({
                "name": ds.name,
                "description": " ".join(ds.spec.description.split()) or f"Staged {ds.name}.",
                "meta": {"dagster": {"asset_key": asset_path("staging", zone.name, ds.name)}},
                "columns": cols,
            })
        sources.append({
            "name": source_name(zone.name),
            "description": f"Staging zone of the {zone.name} insight zone: only partitions that passed their contract.",
            "database": "{{ 'catalog' if target.type == 'duckdb' else target.database }}",
            "schema": source_name(zone.name),
            "tables": tables,
        })
    return HEADER + yaml.safe_dump({"version": 2, "sources": sources}, sort_keys=False, width=110)


def write_sources(path: Path = SOURCES_FILE) -> Path:
    path.write_text(render_sources())
    return path
