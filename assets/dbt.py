"""The modelled zones (ods, analytics) as dbt assets, through one translator.

- dbt sources map to the staging asset keys ``[staging, <insight_zone>, <dataset>]`` (sources are
  generated from the zone YAML), so lineage is continuous from landing to the marts;
- models in ``models/<zone>/<insight_zone>/`` get the key ``[<zone>, <insight_zone>, <model>]``,
  the insight zone's group and owners;
- dbt tests are asset checks; row counts are attached after the build;
- automation: a model is built when an upstream partition was newly published and none of its
  blocking checks failed; a file that failed its contract never triggers anything.
"""

import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets

from assets.zones import load_zones
from resources.environment import REPO_ROOT
from resources.platform import PlatformResource

DBT_DIR = REPO_ROOT / "dbt_project"
MODELLED_ZONES = ("ods", "analytics")


def dbt_project() -> DbtProject:
    return DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)


def upstream_published_and_checked() -> dg.AutomationCondition:
    """True once an upstream (partition) was newly updated and none of its blocking checks failed,
    until this asset is requested; never while upstream or this asset is in progress.

    "None failed" rather than "all passed": a dbt build of a subset does not run the tests that
    span models outside the subset, and an unexecuted test must not hold serving back. For staging
    both are the same (its checks run with every materialisation), and a partition that fails its
    contract is held outside the catalog view dbt reads in any case."""
    published = dg.AutomationCondition.newly_updated() & ~dg.AutomationCondition.any_checks_match(
        dg.AutomationCondition.check_failed(), blocking_only=True
    )
    # A modelled dependency that was never built (and is not requested in this tick) must come
    # first. Staging is exempt: a file that was rejected leaves its partition missing for good.
    modelled_dep_missing = dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.key_prefixes("staging"))
    return (
        dg.AutomationCondition.any_deps_match(published).since_last_handled()
        & ~modelled_dep_missing
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("upstream_published_and_checked")


@cache
def _owners() -> dict[str, list[str]]:
    return {z.name: list(z.spec.owners) for z in load_zones()}


class PlatformDbtTranslator(DagsterDbtTranslator):
    """The one translator between dbt and the platform's conventions."""

    def __init__(self) -> None:
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))

    @staticmethod
    def _place(props: Mapping[str, Any]) -> tuple[str, str]:
        fqn = props.get("fqn", [])
        if props.get("resource_type") == "source":
            return "staging", props["source_name"].removeprefix("staging_")
        if len(fqn) < 4 or fqn[1] not in MODELLED_ZONES:
            raise ValueError(f"dbt model {props.get('name')} must live in models/<ods|analytics>/<insight_zone>/")
        return fqn[1], fqn[2]

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        zone, insight_zone = self._place(dbt_resource_props)
        return dg.AssetKey([zone, insight_zone, dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return self._place(dbt_resource_props)[1]

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> list[str] | None:
        return _owners().get(self._place(dbt_resource_props)[1])

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition | None:
        if dbt_resource_props.get("resource_type") == "source":
            return None
        return upstream_published_and_checked()


def _relations(manifest: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Model name → (schema, table), for models materialised as tables."""
    return {
        n["name"]: (n["schema"], n.get("alias") or n["name"])
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["config"].get("materialized") == "table"
    }


def _row_counts(warehouse: Path, relations: Mapping[str, tuple[str, str]], names: list[str]) -> dict[str, int]:
    # After the build, on a short-lived read-only connection: the file stays free for the next run.
    import duckdb

    from resources.catalog import quote_ident

    if not warehouse.exists():
        return {}
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        out = {}
        for name in names:
            if name in relations:
                schema, table = relations[name]
                row = con.execute(f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(table)}").fetchone()
                out[name] = int(row[0]) if row else 0
        return out
    finally:
        con.close()


def build_dbt_assets() -> dg.AssetsDefinition:
    # The manifest comes from `python -m cli dbt-parse` (make run and make test run it first), not
    # from dagster-dbt's prepare_if_dev, which looks for `dbt` on PATH and fails outside an
    # activated virtual environment.
    project = dbt_project()
    if not project.manifest_path.exists():
        raise FileNotFoundError(
            f"{project.manifest_path} is missing: run `python -m cli dbt-parse` (make run and make test do)"
        )
    translator = PlatformDbtTranslator()

    @dbt_assets(manifest=project.manifest_path, project=project, dagster_dbt_translator=translator,
                name="dbt_models")
    def dbt_models(context: dg.AssetExecutionContext, platform: PlatformResource) -> Iterator[Any]:
        env, home = platform.location()
        dbt = DbtCliResource(project_dir=project, profiles_dir=str(DBT_DIR), target=env,
                             dbt_executable=str(Path(sys.executable).parent / "dbt"))  # the venv's, PATH or not
        # dbt's profile reads PLATFORM_ENV / PLATFORM_HOME. Cautious indirect selection: when
        # automation builds a subset, run only the tests whose every parent is being built (a
        # relationships test must not run against a model that is not there yet).
        with platform.environment_variables(DBT_INDIRECT_SELECTION="cautious"):
            invocation = dbt.cli(["build"], context=context, raise_on_error=False)
            events = list(invocation.stream())
        keys = context.assets_def.keys_by_output_name
        model_of = {e.output_name: keys[e.output_name].path[-1] for e in events if isinstance(e, dg.Output)}
        counts = _row_counts(home / "warehouse.duckdb", _relations(invocation.manifest), list(model_of.values()))
        for event in events:
            if isinstance(event, dg.Output) and model_of[event.output_name] in counts:
                count = counts[model_of[event.output_name]]
                event = event.with_metadata({**event.metadata, "dagster/row_count": count})
            yield event
        if not invocation.is_successful():
            raise dg.Failure("dbt build failed: a model or a test failed; see this run's dbt events and checks")

    return dbt_models
