"""The serving zone: marts declared under ``serving:`` in a zone YAML are exported to the serving
database (an embedded PostgreSQL locally, Aurora PostgreSQL in AWS) as ``[serving, <zone>, <mart>]``.

Each export is one transaction (create or migrate the table from the mart's dbt contract, COPY,
upsert on the declared key, delete what the new version no longer has), followed by a blocking
check that the served row count equals the mart's.
"""

import json
from pathlib import Path
from typing import Any

import dagster as dg

from assets.dbt import DBT_DIR, upstream_published_and_checked
from assets.zones import InsightZone, ServingSpec
from resources.catalog import quote_ident
from resources.platform import PlatformResource

ROW_COUNT_CHECK = "row_count_matches_mart"


def mart_contract(model: str, manifest_path: Path | None = None) -> tuple[str, dict[str, str]]:
    """(warehouse schema, column → SQL type) of an analytics model, from the dbt manifest."""
    manifest = json.loads((manifest_path or DBT_DIR / "target" / "manifest.json").read_text())
    for node in manifest["nodes"].values():
        if node["resource_type"] == "model" and node["name"] == model:
            types = {c: spec.get("data_type") for c, spec in node["columns"].items()}
            missing = [c for c, t in types.items() if not t]
            if missing or not types:
                raise ValueError(f"served model {model} needs a contract with a data_type for every column "
                                 f"(missing: {', '.join(missing) or 'all'})")
            return node["schema"], types  # type: ignore[return-value]
    raise ValueError(f"served model {model} is not a dbt model")


def served_columns(mart_key: dg.AssetKey, types: dict[str, str]) -> dict[str, Any]:
    """Column schema and lineage of a served table: each column is its mart's column of the same name."""
    return {
        "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in types.items()]),
        "dagster/column_lineage": dg.TableColumnLineage(
            deps_by_column={name: [dg.TableColumnDep(asset_key=mart_key, column_name=name)] for name in types}
        ),
    }


def build_serving_asset(zone: InsightZone, model: str, spec: ServingSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey(["serving", zone.name, model])
    mart_key = dg.AssetKey(["analytics", zone.name, model])

    @dg.asset(
        key=key,
        deps=[mart_key],
        group_name=zone.name,
        owners=list(zone.spec.owners),
        kinds={"postgres"},
        description=spec.description or f"{model}, served from the serving database.",
        metadata={"serving_table": f"{zone.name}.{model}", "key": spec.key},
        automation_condition=upstream_published_and_checked(),
        check_specs=[dg.AssetCheckSpec(ROW_COUNT_CHECK, asset=key, blocking=True,
                                       description="The served table has exactly the mart's rows.")],
    )
    def serve(context: dg.AssetExecutionContext, platform: PlatformResource) -> Any:
        import duckdb

        schema, types = mart_contract(model)
        columns = served_columns(mart_key, types)
        _, home = platform.location()
        con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)  # briefly: dbt writes this file
        try:
            table = con.sql(f"SELECT * FROM {quote_ident(schema)}.{quote_ident(model)}").to_arrow_table()
        finally:
            con.close()
        db = platform.serving()
        result = db.export(table, schema=zone.name, name=model, key=list(spec.key), column_types=types)
        served = db.row_count(zone.name, model)
        context.log.info(f"served {zone.name}.{model}: {result}")
        yield dg.MaterializeResult(metadata={
            "dagster/row_count": served, "inserted": result.inserted, "updated": result.updated,
            "deleted": result.deleted, "connect": db.dsn_for_humans(),
            **columns,
        })
        yield dg.AssetCheckResult(
            check_name=ROW_COUNT_CHECK, passed=served == table.num_rows, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"mart_rows": table.num_rows, "served_rows": served},
        )

    return serve


def build_serving_assets(zones: tuple[InsightZone, ...]) -> list[dg.AssetsDefinition]:
    return [build_serving_asset(z, model, spec) for z in zones for model, spec in z.spec.serving.items()]
