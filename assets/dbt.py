"""The modelled zones (ods, analytics) as dbt assets, through one translator.

- dbt sources map to the staging asset keys ``[staging, <insight_zone>, <dataset>]`` (sources are
  generated from the zone YAML), so lineage is continuous from landing to the marts;
- models in ``models/<zone>/<insight_zone>/`` get the key ``[<zone>, <insight_zone>, <model>]``,
  the insight zone's group and owners;
- dbt tests are asset checks; row counts and column lineage are attached after the build;
- automation: a model is built when an upstream partition was newly published and none of its
  blocking checks failed; a file that failed its contract never triggers anything.
"""

import json
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets
from pydantic import Field

from assets.policies import RETRY, WAREHOUSE_POOL, failure, platform_errors
from checks.freshness import derived_policy, freshness_policy
from core.errors import ConfigError
from core.names import MODELLED_ZONES, asset_path, name_in_path
from core.paths import DBT_DIR
from core.zones import all_datasets, load_zones
from resources.platform import PlatformResource


def dbt_project() -> DbtProject:
    return DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)


def upstream_published_and_checked() -> dg.AutomationCondition:
    """True once an upstream (partition) was newly updated and none of its blocking checks failed,
    until this asset is requested; never while upstream or this asset is in progress.

    "None failed" rather than "all passed": a dbt build of a subset does not run the tests that
    span models outside the subset, and an unexecuted test must not hold serving back. For staging
    both are the same (its checks run with every materialisation), and a partition that fails its
    contract is held outside the catalog view dbt reads in any case.

    A dependency that will be requested in the same tick counts as published: the whole chain
    from a staging partition to serving is then one run (in dependency order, a failed blocking
    dbt test skipping what follows), not one run per layer and tick. A dependency updated by a run
    that also built this asset does not count again (Dagster's ``executed_with_root_target``)."""
    checked = ~dg.AutomationCondition.any_checks_match(dg.AutomationCondition.check_failed(), blocking_only=True)
    published = (
        (dg.AutomationCondition.newly_updated() & ~dg.AutomationCondition.executed_with_root_target()) & checked
        | dg.AutomationCondition.will_be_requested()
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


@cache
def _arrival_policies() -> dict[tuple[str, str], dg.FreshnessPolicy | None]:
    """(warehouse schema of the dbt source, table) → the dataset's arrival policy."""
    return {(f"staging_{d.insight_zone}", d.name): freshness_policy(d) for d in all_datasets()}


def upstream_policy(manifest: Mapping[str, Any], unique_id: str) -> dg.FreshnessPolicy | None:
    """A model's freshness policy, derived from the staging tables it reads, however indirectly:
    a mart is stale when its inputs are."""
    parents = manifest["parent_map"]
    seen: set[str] = set()
    sources: set[tuple[str, str]] = set()
    todo = [unique_id]
    while todo:
        uid = todo.pop()
        if uid in seen:
            continue
        seen.add(uid)
        if uid.startswith("source."):
            src = manifest["sources"][uid]
            sources.add((src["schema"], src["name"]))
        todo.extend(parents.get(uid, []))
    return derived_policy(_arrival_policies().get(s) for s in sorted(sources))


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
            raise ConfigError(f"dbt model {props.get('name')} must live in models/<ods|analytics>/<insight_zone>/")
        return fqn[1], fqn[2]

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        zone, insight_zone = self._place(dbt_resource_props)
        return dg.AssetKey(asset_path(zone, insight_zone, dbt_resource_props["name"]))

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return self._place(dbt_resource_props)[1]

    def get_owners(self, dbt_resource_props: Mapping[str, Any]) -> list[str] | None:
        return _owners().get(self._place(dbt_resource_props)[1])

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if unique_id.startswith("model."):
            policy = upstream_policy(manifest, unique_id)
            if policy is not None:
                return spec.replace_attributes(freshness_policy=policy)
        return spec

    def get_automation_condition(self, dbt_resource_props: Mapping[str, Any]) -> dg.AutomationCondition | None:
        if dbt_resource_props.get("resource_type") == "source":
            return None
        return upstream_published_and_checked()


def _relations(manifest: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Model name → (schema, table), for models materialised as tables (incremental ones included)."""
    return {
        n["name"]: (n["schema"], n.get("alias") or n["name"])
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["config"].get("materialized") in ("table", "incremental")
    }


def _declared_columns(props: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {"data_type": column.get("data_type")} for name, column in props.get("columns", {}).items()}


def column_lineage(manifest: Mapping[str, Any], unique_id: str, target_path: Path,
                   translator: DagsterDbtTranslator, project: DbtProject) -> dict[str, Any]:
    """``dagster/column_lineage`` of one built model: its compiled SQL (from this build's target
    path) traced by sqlglot to the columns of its parents.

    dagster-dbt's own ``fetch_column_metadata`` asks the warehouse for every relation's columns while
    the dbt subprocess still holds DuckDB's single-writer lock (see GOTCHAS), so it cannot run here.
    The columns come from the manifest instead: every model has an enforced contract and every
    source is generated with its types, so the declared columns are the built ones. The tracing
    itself is dagster-dbt's (a private function, pinned with dagster-dbt; a test fails if it moves)."""
    from dagster_dbt.core.dbt_cli_event import EventHistoryMetadata, _build_column_lineage_metadata

    node = manifest["nodes"][unique_id]
    parents = {}
    for parent_id in manifest["parent_map"].get(unique_id, []):
        parent = manifest["nodes"].get(parent_id) or manifest["sources"].get(parent_id)
        if parent and parent.get("relation_name"):
            parents[parent["relation_name"]] = _declared_columns(parent)
    return _build_column_lineage_metadata(
        event_history_metadata=EventHistoryMetadata(columns=_declared_columns(node), parents=parents),
        dbt_resource_props=dict(node), manifest=manifest, dagster_dbt_translator=translator,
        target_path=target_path, project=project,
    )


def lineage_table(lineage: dg.TableColumnLineage) -> dg.MarkdownMetadataValue:
    """Column lineage where the open-source UI shows it: a column → upstream columns table in the
    materialisation's metadata (the graphical *Column lineage* view is Dagster+ only)."""
    from core.markdown import table

    rows = [(col, ", ".join(f"{'/'.join(d.asset_key.path)}.{d.column_name}" for d in deps) or "(computed)")
            for col, deps in sorted(lineage.deps_by_column.items())]
    return dg.MetadataValue.md(table(("column", "from"), rows))


def unpublished_sources(manifest: Mapping[str, Any], models: set[str],
                        published: set[tuple[str, str]]) -> dict[str, set[str]]:
    """Model unique id → the sources it reads (directly or through other models) that have no
    published table yet, for each of ``models`` that reads one."""
    parents = manifest["parent_map"]

    @cache
    def missing(unique_id: str) -> frozenset[str]:
        if unique_id.startswith("source."):
            source = manifest["sources"][unique_id]
            return frozenset() if (source["schema"], source["name"]) in published else frozenset([unique_id])
        return frozenset().union(*(missing(p) for p in parents.get(unique_id, [])))

    return {m: set(missing(m)) for m in models if missing(m)}


def _blocked_message(manifest: Mapping[str, Any], model_keys: Mapping[str, dg.AssetKey],
                     blocked: Mapping[str, set[str]]) -> str:
    sources = sorted({s for missing in blocked.values() for s in missing})
    tables = ", ".join("/".join(asset_path("staging", manifest["sources"][s]["schema"].removeprefix("staging_"),
                                            manifest["sources"][s]["name"])) for s in sources)
    models = ", ".join(sorted(model_keys[m].to_user_string() for m in blocked))
    return (f"not built: {models}. They read {tables}, where no delivered file has passed its contract yet "
            "(nothing is published). Drop a file into the dataset's ingress folder; automation builds these "
            "models once it is published.")


KEPT_DBT_RUNS = 20
PARTIAL_PARSE = "partial_parse.msgpack"


def keep_parse_state(produced: Path, kept: Path) -> None:
    """Keep dbt's parse state for the next run (each run has a target folder of its own): dbt then
    re-parses only what changed, which saves most of its start (about 5 s of 9 on 2 cores). dbt
    checks the state itself (version, project files, profile, vars) and parses in full when it
    does not match, so a stale copy costs time, never correctness."""
    import shutil

    if produced.exists():
        tmp = kept.with_suffix(".tmp")
        shutil.copyfile(produced, tmp)
        tmp.replace(kept)


def prune_runs(runs: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest run folders; returns the removed ones."""
    import shutil

    folders = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True) \
        if runs.exists() else []
    for old in folders[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return folders[keep:]


class DbtBuildConfig(dg.Config):
    """Launch option of the modelled zones (the Launchpad's config)."""

    full_refresh: bool = Field(
        default=False,
        description="Rebuild the incremental models from all of staging (dbt --full-refresh) instead of only "
                    "what changed since their last build. Gives the same rows; use it after changing a model.")


def build_dbt_assets() -> dg.AssetsDefinition:
    # The manifest comes from `python -m cli dbt-parse` (make run and make test run it first), not
    # from dagster-dbt's prepare_if_dev, which looks for `dbt` on PATH and fails outside an
    # activated virtual environment.
    project = dbt_project()
    if not project.manifest_path.exists():
        raise ConfigError(
            f"{project.manifest_path} is missing: run `python -m cli dbt-parse` (make run and make test do)"
        )
    translator = PlatformDbtTranslator()
    manifest = json.loads(project.manifest_path.read_text())
    model_keys = {uid: translator.get_asset_key(props) for uid, props in manifest["nodes"].items()
                  if props["resource_type"] == "model"}

    @dbt_assets(manifest=manifest, project=project, dagster_dbt_translator=translator, name="dbt_models",
                pool=WAREHOUSE_POOL, retry_policy=RETRY)
    def dbt_models(context: dg.AssetExecutionContext, platform: PlatformResource,
                   config: DbtBuildConfig) -> Iterator[Any]:
        with platform_errors("building the modelled zones"):
            warehouse = platform.warehouse()
            catalog = platform.catalog()
            published = catalog.published_tables()
            warehouse.sync_staging(catalog, all_datasets())
        _, home = platform.location()
        dbt = DbtCliResource(project_dir=project, profiles_dir=str(DBT_DIR), target=warehouse.dbt_target,
                             dbt_executable=str(Path(sys.executable).parent / "dbt"))  # the venv's, PATH or not
        # Models whose staging tables have no published partition yet (e.g. "materialize all" before
        # a zone's first file) are left out, with the tests on them by cautious selection; the rest
        # is built, and the run then fails naming them rather than with the engine's missing table.
        selected = {uid for uid, key in model_keys.items() if key in context.selected_asset_keys}
        blocked = unpublished_sources(manifest, selected, published)
        if blocked and blocked.keys() == selected:
            raise dg.Failure(_blocked_message(manifest, model_keys, blocked), allow_retries=False,
                             metadata={"error": "NothingPublished", "error_kind": "terminal"})
        exclude = ["--exclude", " ".join(sorted(manifest["nodes"][m]["name"] for m in blocked))] if blocked else []
        # Each run's artifacts and log go to their own folder under PLATFORM_HOME (not the repo), and
        # only the newest are kept: automation runs dbt once per delivered file.
        run_dir = home / "dbt" / "runs" / context.run.run_id
        with platform_errors("preparing the dbt run"):
            dbt_env = warehouse.dbt_environment(run_dir)
        # dbt's profile reads PLATFORM_ENV / PLATFORM_HOME and what the warehouse adds. Cautious
        # indirect selection: when automation builds a subset, run only the tests whose every parent
        # is being built (a relationships test must not run against a model that is not there yet).
        parse_state = run_dir.parent / PARTIAL_PARSE
        if parse_state.exists():
            dbt_env["DBT_PARTIAL_PARSE_FILE_PATH"] = str(parse_state)
        with platform.environment_variables(DBT_INDIRECT_SELECTION="cautious", **dbt_env):
            refresh = ["--full-refresh"] if config.full_refresh else []
            invocation = dbt.cli(["build", *refresh, *exclude], context=context, raise_on_error=False,
                                 target_path=run_dir)
            events = list(invocation.stream())
        keep_parse_state(run_dir / PARTIAL_PARSE, parse_state)
        keys = context.assets_def.keys_by_output_name
        model_of = {e.output_name: name_in_path(keys[e.output_name].path) for e in events if isinstance(e, dg.Output)}
        relations = _relations(invocation.manifest)
        with platform_errors("counting the built models' rows"):
            counts = warehouse.row_counts({m: relations[m] for m in model_of.values() if m in relations})
        # Lineage matches the compiled SQL against relation names: take both from this build (the
        # loaded manifest was parsed for the local target; another target names relations otherwise).
        built = invocation.get_artifact("manifest.json") if (invocation.target_path / "manifest.json").exists() \
            else invocation.manifest
        for event in events:
            if isinstance(event, dg.Output):
                extra: dict[str, Any] = {}
                if model_of[event.output_name] in counts:
                    extra["dagster/row_count"] = counts[model_of[event.output_name]]
                unique_id = str(getattr(event.metadata.get("unique_id"), "value", ""))
                try:
                    extra.update(column_lineage(built, unique_id, invocation.target_path, translator, project))
                    if "dagster/column_lineage" in extra:
                        extra["column_lineage_table"] = lineage_table(extra["dagster/column_lineage"])
                except Exception as e:  # lineage is metadata: never fail a built model over it
                    context.log.warning(f"column lineage of {unique_id} not attached: {type(e).__name__}: {e}")
                event = event.with_metadata({**event.metadata, **extra})
            yield event
        prune_runs(run_dir.parent, keep=KEPT_DBT_RUNS)
        if not invocation.is_successful():
            log = invocation.target_path / "dbt.log"
            transient = warehouse.dbt_failure(log.read_text(errors="replace") if log.exists() else "")
            if transient is not None:
                raise failure(transient, dbt_log=str(log))
        failures = [_blocked_message(manifest, model_keys, blocked)] if blocked else []
        if not invocation.is_successful():
            failures.append(f"dbt build failed: a model or a test failed; see this run's dbt events and checks, "
                            f"and its dbt log in {invocation.target_path}")
        if failures:
            raise dg.Failure("\n".join(failures), allow_retries=False,
                             metadata={"error": "DbtBuildFailed", "error_kind": "terminal"})

    return dbt_models
