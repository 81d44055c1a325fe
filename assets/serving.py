"""The serving zone: marts declared under ``serving:`` in a zone YAML are exported to the serving
database (an embedded PostgreSQL locally, Aurora PostgreSQL in AWS) as ``[serving, <zone>, <mart>]``.

Each export is one transaction (create or migrate the table from the mart's dbt contract, COPY,
upsert on the declared key, delete what the new version no longer has), followed by a blocking
check that the served row count equals the mart's (``checks.serving``). An export that loses its
connection is retried (by the serving database, then by the step's retry policy); the served
table keeps its previous version until an export commits.
"""

import json
from pathlib import Path
from typing import Any

import dagster as dg

from assets.dbt import lineage_table, upstream_policy, upstream_published_and_checked
from assets.policies import RETRY, WAREHOUSE_POOL, platform_errors
from checks.serving import check_specs, row_count_result
from core.errors import ConfigError
from core.names import asset_path
from core.paths import DBT_DIR
from core.zones import InsightZone, ServingSpec
from resources.platform import PlatformResource


def mart_contract(model: str, manifest_path: Path | None = None) -> tuple[str, dict[str, str]]:
    """(warehouse schema, column → SQL type) of an analytics model, from the dbt manifest."""
    manifest = json.loads((manifest_path or DBT_DIR / "target" / "manifest.json").read_text())
    for node in manifest["nodes"].values():
        if node["resource_type"] == "model" and node["name"] == model:
            types = {c: spec.get("data_type") for c, spec in node["columns"].items()}
            missing = [c for c, t in types.items() if not t]
            if missing or not types:
                raise ConfigError(f"served model {model} needs a contract with a data_type for every column "
                                 f"(missing: {', '.join(missing) or 'all'})")
            return node["schema"], types  # type: ignore[return-value]
    raise ConfigError(f"served model {model} is not a dbt model")


def mart_policy(model: str, manifest_path: Path | None = None) -> dg.FreshnessPolicy | None:
    """The served table's freshness policy: its mart's, derived from the staging tables it reads."""
    manifest = json.loads((manifest_path or DBT_DIR / "target" / "manifest.json").read_text())
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] == "model" and node["name"] == model:
            return upstream_policy(manifest, uid)
    raise ConfigError(f"served model {model} is not a dbt model")


def served_columns(mart_key: dg.AssetKey, types: dict[str, str]) -> dict[str, Any]:
    """Column schema and lineage of a served table: each column is its mart's column of the same name."""
    lineage = dg.TableColumnLineage(
        deps_by_column={name: [dg.TableColumnDep(asset_key=mart_key, column_name=name)] for name in types})
    return {
        "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in types.items()]),
        "dagster/column_lineage": lineage,
        "column_lineage_table": lineage_table(lineage),
    }


def build_serving_asset(zone: InsightZone, model: str, spec: ServingSpec) -> dg.AssetsDefinition:
    key = dg.AssetKey(asset_path("serving", zone.name, model))
    mart_key = dg.AssetKey(asset_path("analytics", zone.name, model))

    @dg.asset(
        key=key,
        deps=[mart_key],
        group_name=zone.name,
        owners=list(zone.spec.owners),
        kinds={"postgres"},
        description=spec.description or f"{model}, served from the serving database.",
        metadata={"serving_table": f"{zone.name}.{model}", "key": spec.key},
        automation_condition=upstream_published_and_checked(),
        freshness_policy=mart_policy(model),
        check_specs=check_specs(key),
        pool=WAREHOUSE_POOL,  # reads the warehouse, which dbt writes
        retry_policy=RETRY,
    )
    def serve(context: dg.AssetExecutionContext, platform: PlatformResource) -> Any:
        with platform_errors(f"serving {zone.name}.{model}", table=f"{zone.name}.{model}"):
            schema, types = mart_contract(model)
            columns = served_columns(mart_key, types)
            table = platform.warehouse().read_table(schema, model)
            db = platform.serving()
            result = db.export(table, schema=zone.name, name=model, key=list(spec.key), column_types=types)
            served = db.row_count(zone.name, model)
        context.log.info(f"served {zone.name}.{model}: {result}")
        yield dg.MaterializeResult(metadata={
            "dagster/row_count": served, "inserted": result.inserted, "updated": result.updated,
            "deleted": result.deleted, "connect": db.dsn_for_humans(),
            **columns,
        })
        yield row_count_result(table.num_rows, served)

    return serve


def build_serving_assets(zones: tuple[InsightZone, ...]) -> list[dg.AssetsDefinition]:
    return [build_serving_asset(z, model, spec) for z in zones for model, spec in z.spec.serving.items()]
