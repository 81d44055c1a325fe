"""ods → analytics → serving, in process, with the real local resources: dbt on DuckDB over the
catalog, the embedded PostgreSQL for serving, and a real Dagster instance."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from support import REPO, SAMPLES, ingest, load_definitions_module, requested

from assets.dbt import PlatformDbtTranslator, prune_runs, unpublished_sources
from core.markdown import escape
from resources.platform import PlatformResource

GOOD = [
    ("mobility__yellow_trips", SAMPLES / "mobility/yellow_trips/yellow_tripdata_2019-06_sample.csv"),
    ("mobility__yellow_trips", SAMPLES / "mobility/yellow_trips/yellow_tripdata_2021-01_sample.csv"),
    ("mobility__taxi_zones", SAMPLES / "mobility/taxi_zones/taxi_zone_lookup.csv"),
    *[("finance__expense_reports", p)
      for p in sorted((SAMPLES / "finance/expense_reports").glob("expenses_*1[678].csv"))],
]


def modelled_assets() -> list[dg.AssetsDefinition]:
    defs = load_definitions_module().defs
    graph = defs.resolve_asset_graph()
    keys = {k for k in graph.get_all_asset_keys() if k.path[0] in ("ods", "analytics", "serving")}
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and set(a.keys) & keys]


@pytest.fixture
def short_home():
    # The embedded PostgreSQL puts its Unix socket under PLATFORM_HOME: keep the path short.
    home = Path(tempfile.mkdtemp(prefix="ph", dir="/tmp"))
    yield home
    from resources.serving import stop_local

    stop_local(home)


def build(home: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize(modelled_assets(), instance=instance, raise_on_error=False,
                          resources={"platform": PlatformResource(environment="local", home=str(home))})


PII_KEY = "modelled-zones-test-key"


@dataclass
class Flowed:
    home: Path
    success: bool
    failed_checks: list[str]
    checks: int
    mats: dict[str, Mapping[str, Any]]
    events_searched: int  # characters of every event of every run, searched for the PII hashing key
    events_with_key: int


@pytest.fixture(scope="module")
def flowed() -> Iterator[Flowed]:
    """The good samples ingested and everything downstream materialised once, in process."""
    home = Path(tempfile.mkdtemp(prefix="ph", dir="/tmp"))
    try:
        with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
            env.setenv("PLATFORM_PII_KEY", PII_KEY)
            for dataset, path in GOOD:
                assert ingest(home, dataset, path, instance=instance).success
            result = build(home, instance)
            checks = result.get_asset_check_evaluations()
            events = [dg.serialize_value(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id)]
            yield Flowed(home, result.success, [c.check_name for c in checks if not c.passed], len(checks),
                         {e.asset_key.to_user_string(): e.materialization.metadata
                          for e in result.get_asset_materialization_events()},
                         sum(map(len, events)), sum(PII_KEY in e for e in events))
    finally:
        from resources.serving import stop_local

        stop_local(home)


def test_samples_flow_to_serving(flowed: Flowed) -> None:
    assert flowed.success
    assert flowed.checks and not flowed.failed_checks
    mats = flowed.mats
    for key in ("ods/mobility/ods_trips", "ods/mobility/ods_zones",
                "analytics/mobility/analytics_daily_trips_by_borough",
                "ods/finance/ods_expense_lines", "serving/mobility/serving_zone_flows",
                "serving/finance/serving_monthly_spend_by_cost_centre"):
        assert key in mats, key
        assert mats[key]["dagster/row_count"].value > 0
    assert mats["ods/mobility/ods_zones"]["dagster/row_count"].value == 265
    # The served tables hold exactly the marts' rows.
    from resources.serving import ServingDatabase

    db = ServingDatabase.local(flowed.home)
    for key in ("serving/mobility/serving_daily_trips_by_borough", "serving/mobility/serving_zone_flows"):
        zone, model = key.split("/")[1], key.split("/")[2].removeprefix("serving_")
        assert db.row_count(zone, model) == mats[f"analytics/{zone}/analytics_{model}"]["dagster/row_count"].value


def test_the_hashing_key_is_in_no_dagster_event(flowed: Flowed) -> None:
    # The runs hashed employee ids with PII_KEY.
    assert "ods/finance/ods_expense_lines" in flowed.mats
    assert flowed.events_searched > 100_000 and flowed.events_with_key == 0


def declared_columns() -> dict[str, set[str]]:
    """Asset key → columns, as the dbt manifest declares them (contracts; generated sources)."""
    manifest = json.loads((REPO / "dbt_project" / "target" / "manifest.json").read_text())
    translator = PlatformDbtTranslator()
    out = {}
    for props in [*manifest["nodes"].values(), *manifest["sources"].values()]:
        if props["resource_type"] in ("model", "source"):
            out[translator.get_asset_key(props).to_user_string()] = set(props["columns"])
    return out


def lineage(mats: Mapping[str, Mapping[str, Any]], key: str) -> dict[str, set[str]]:
    deps = mats[key]["dagster/column_lineage"].value.deps_by_column
    return {column: {f"{d.asset_key.to_user_string()}.{d.column_name}" for d in ds} for column, ds in deps.items()}


def test_column_lineage_is_attached_to_every_modelled_and_served_asset(flowed: Flowed) -> None:
    columns = declared_columns()
    modelled = [k for k in flowed.mats if k.split("/")[0] in ("ods", "analytics", "serving")]
    assert len(modelled) == 13  # 10 models, 3 served marts
    for key in modelled:
        served_mart = key.replace("serving/", "analytics/", 1).replace("/serving_", "/analytics_")
        own = columns[key] if key in columns else columns[served_mart]
        deps = lineage(flowed.mats, key)
        assert set(deps) == own, key
        for column, upstream in deps.items():  # every dependency names a real upstream column
            for dep in upstream:
                asset, _, name = dep.rpartition(".")
                assert name in columns[asset], f"{key}.{column} <- {dep}"
        # The same lineage as a table where the open-source UI shows it (the materialisation's metadata).
        shown = flowed.mats[key]["column_lineage_table"].value
        for column, upstream in deps.items():
            row = next(line for line in shown.splitlines() if line.startswith(f"| {escape(column)} |"))
            assert all(escape(dep) in row for dep in upstream), (key, column, row)
    trips, spend = lineage(flowed.mats, "ods/mobility/ods_trips"), lineage(flowed.mats, "ods/finance/ods_expense_lines")
    assert trips["pickup_borough"] == {"ods/mobility/ods_zones.borough"}
    assert trips["duration_minutes"] == {"ods/mobility/ods_base_mobility__yellow_trips.pickup_at",
                                         "ods/mobility/ods_base_mobility__yellow_trips.dropoff_at"}
    assert spend["expense_line_id"] == {"ods/finance/ods_base_finance__expense_reports.report_id",
                                        "ods/finance/ods_base_finance__expense_reports.line_number"}
    assert lineage(flowed.mats, "ods/finance/ods_base_finance__expense_reports")["employee_key"] == {
        "staging/finance/staging_expense_reports.employee_id"}


def test_column_lineage_runs_unbroken_from_serving_to_staging(flowed: Flowed) -> None:
    def roots(column: str) -> set[str]:
        asset, _, name = column.rpartition(".")
        if asset.startswith("staging/"):
            return {column}
        found: set[str] = set()
        for dep in lineage(flowed.mats, asset)[name]:
            found |= roots(dep)
        return found

    assert roots("serving/mobility/serving_daily_trips_by_borough.total_revenue") == {
        "staging/mobility/staging_yellow_trips.total_amount"}
    assert roots("serving/mobility/serving_zone_flows.pickup_borough") == {
        "staging/mobility/staging_taxi_zones.borough"}
    assert roots("serving/finance/serving_monthly_spend_by_cost_centre.out_of_policy_lines") == {
        "staging/finance/staging_expense_reports.amount", "staging/finance/staging_expense_reports.category"}


def test_broken_source_row_fails_its_dbt_test_as_an_asset_check(short_home: Path) -> None:
    # Zone 48 (Clinton East) is missing from the reference file: the file itself is valid, but the
    # trips that start there break the relationships test of the ods model.
    zones = (SAMPLES / "mobility/taxi_zones/taxi_zone_lookup.csv").read_text().splitlines(keepends=True)
    broken = "".join(line for line in zones if not line.startswith("48,"))
    with dg.instance_for_test() as instance:
        assert ingest(short_home, "mobility__taxi_zones", broken.encode(), name="taxi_zone_lookup.csv",
                      instance=instance).success
        assert ingest(short_home, "mobility__yellow_trips", GOOD[0][1], instance=instance).success
        result = build(short_home, instance)
    failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
    assert failed, "a relationships test should have failed"
    assert any("relationships" in c.check_name and c.asset_key.path[:2] == ["ods", "mobility"] for c in failed), \
        [(c.asset_key.to_user_string(), c.check_name) for c in failed]
    assert not result.success  # the run says so too
    assert os.environ.get("PLATFORM_HOME") != str(short_home)  # the environment was restored


def test_dbt_artifacts_go_under_platform_home_not_the_repo(flowed: Flowed) -> None:
    runs = [p for p in (flowed.home / "dbt" / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1
    assert (runs[0] / "run_results.json").exists() and (runs[0] / "dbt.log").exists()


def test_only_the_newest_dbt_run_folders_are_kept(tmp_path: Path) -> None:
    for i in range(25):
        folder = tmp_path / f"run-{i:02d}"
        folder.mkdir()
        (folder / "run_results.json").write_text("{}")
        os.utime(folder, (1_000_000 + i, 1_000_000 + i))
    removed = prune_runs(tmp_path, keep=20)
    assert sorted(p.name for p in removed) == [f"run-{i:02d}" for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"run-{i:02d}" for i in range(5, 25)]
    assert prune_runs(tmp_path / "absent", keep=20) == []


def names(manifest: Mapping[str, Any], unique_ids: object) -> set[str]:
    return {manifest["nodes"][u]["name"] for u in unique_ids}  # type: ignore[attr-defined]


def test_models_reading_an_unpublished_staging_table_are_found_through_their_parents() -> None:
    manifest = json.loads((REPO / "dbt_project" / "target" / "manifest.json").read_text())
    models = {u for u, n in manifest["nodes"].items() if n["resource_type"] == "model"}
    mobility = {("staging_mobility", "yellow_trips"), ("staging_mobility", "taxi_zones")}
    blocked = unpublished_sources(manifest, models, mobility)
    assert names(manifest, blocked) == {"base_finance__expense_reports", "expense_lines",
                                        "monthly_spend_by_cost_centre"}
    assert all(s == {"source.lake_platform.staging_finance.expense_reports"} for s in blocked.values())
    no_zones = unpublished_sources(manifest, models, {("staging_mobility", "yellow_trips"),
                                                      ("staging_finance", "expense_reports")})
    assert names(manifest, no_zones) == {"base_mobility__taxi_zones", "zones", "trips", "daily_trips_by_borough",
                                         "zone_flows", "tips_by_payment_type"}
    assert unpublished_sources(manifest, models, mobility | {("staging_finance", "expense_reports")}) == {}


def test_materialize_all_before_a_zone_has_data_builds_the_rest_and_names_what_it_could_not(
    short_home: Path,
) -> None:
    with dg.instance_for_test() as instance:
        for dataset, path in GOOD[:3]:  # mobility only: finance has never had a file
            assert ingest(short_home, dataset, path, instance=instance).success
        _, cursor = requested(instance)
        result = build(short_home, instance)
        built = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
        next_tick = {k.to_user_string() for k in requested(instance, cursor)[0]}
    assert not result.success
    # The mobility models are built; serving was skipped, since the dbt step as a whole failed, and
    # automation serves the new marts on its next tick.
    assert {"ods/mobility/ods_trips", "analytics/mobility/analytics_zone_flows"} <= built
    assert {k for k in built if k.startswith("serving/")} == set()
    assert {k for k in next_tick if k.startswith("serving/")} == {
        "serving/mobility/serving_zone_flows", "serving/mobility/serving_daily_trips_by_borough"}
    assert not {k for k in built if "/finance/" in k}
    message = "\n".join(failures)
    assert "not built: analytics/finance/analytics_monthly_spend_by_cost_centre, " \
           "ods/finance/ods_base_finance__expense_reports, ods/finance/ods_expense_lines" in message, message
    assert ("They read staging/finance/staging_expense_reports, where no delivered file has passed its contract"
            in message)
    assert "Catalog Error" not in message


def test_materialize_all_with_no_data_at_all_fails_before_dbt_runs(short_home: Path) -> None:
    with dg.instance_for_test() as instance:
        result = build(short_home, instance)
        failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
    assert not result.success and not result.get_asset_materialization_events()
    assert any("staging/mobility/staging_yellow_trips" in f and "staging/finance/staging_expense_reports" in f
               for f in failures), \
        failures
    assert not (short_home / "dbt" / "runs").exists()


def test_a_user_holding_the_warehouse_is_a_transient_failure_naming_the_file(
    short_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DuckDB session that holds warehouse.duckdb open for writing makes dbt fail to start; that
    is infrastructure, not a broken model: the step fails as transient (retried by its policy),
    naming the file, the process that holds it and what to close."""
    import duckdb

    import assets.dbt

    monkeypatch.setattr(assets.dbt, "RETRY", dg.RetryPolicy(max_retries=0))  # see one attempt's failure
    dbt_models = assets.dbt.build_dbt_assets()
    with dg.instance_for_test() as instance:
        assert ingest(short_home, "mobility__taxi_zones", SAMPLES / "mobility/taxi_zones/taxi_zone_lookup.csv",
                      instance=instance).success
        user = duckdb.connect(str(short_home / "warehouse.duckdb"))
        try:
            result = dg.materialize([dbt_models], instance=instance, raise_on_error=False,
                                    selection=["ods/mobility/ods_base_mobility__taxi_zones"],
                                    resources={"platform": PlatformResource(environment="local", home=str(short_home))})
        finally:
            user.close()
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    assert failure.user_failure_data.metadata["error_kind"].value == "transient"
    message, err = "", failure.error
    while err is not None:  # "Exceeded max_retries of 0", caused by the step's own failure
        message, err = message + err.message, err.cause
    assert f"the warehouse {short_home / 'warehouse.duckdb'} is locked by process {os.getpid()}" in message, message
    assert "Close that DuckDB session" in message


def test_the_full_refresh_launch_option_rebuilds_the_incremental_models(flowed: Flowed) -> None:
    """``full_refresh`` (the Launchpad's config of dbt_models) passes ``--full-refresh`` to dbt: the
    incremental models are rebuilt from all of staging, with the same rows."""
    import duckdb

    import assets.dbt

    dbt_models = assets.dbt.build_dbt_assets()
    resources = {"platform": PlatformResource(environment="local", home=str(flowed.home))}
    runs = {}
    with dg.instance_for_test() as instance:
        for refresh in (False, True):
            result = dg.materialize([dbt_models], instance=instance, raise_on_error=False, resources=resources,
                                    selection=dg.AssetSelection.groups("mobility"),
                                    run_config={"ops": {"dbt_models": {"config": {"full_refresh": refresh}}}})
            assert result.success
            run_results = json.loads((flowed.home / "dbt" / "runs" / result.run_id / "run_results.json").read_text())
            runs[refresh] = run_results["args"].get("full_refresh", False)
            con = duckdb.connect(str(flowed.home / "warehouse.duckdb"), read_only=True)
            try:
                count = con.execute("select count(*) from ods_mobility.trips").fetchone()[0]
            finally:
                con.close()
            assert count == flowed.mats["ods/mobility/ods_trips"]["dagster/row_count"].value
    assert runs == {False: False, True: True}
