"""Freshness, both kinds (issue 9): the declarations, the policies derived downstream, the data
rule evaluated with the contract, and arrival-freshness incidents raised by the alerting sensor
from the states Dagster's own freshness daemon records, all under a controllable clock
(dagster's ``freeze_time``), never a sleep."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon.freshness import FreshnessDaemon
from support import REPO, SAMPLES, catalog_states, ingest, load_definitions_module, query

from checks.freshness import derived_policy
from core.yaml_config import ConfigError
from core.zones import Dataset, DatasetSpec, all_datasets
from resources.platform import PlatformResource

TRIPS = SAMPLES / "mobility" / "yellow_trips" / "yellow_tripdata_2021-01_sample.csv"
HEADER = TRIPS.read_text().splitlines()[0]
STAGING_TRIPS = dg.AssetKey(["staging", "mobility", "staging_yellow_trips"])
MART = dg.AssetKey(["analytics", "mobility", "analytics_daily_trips_by_borough"])


def trips_csv(*pickups: str) -> bytes:
    """Trips with these pickup times (New York wall clock), each ending a minute later."""
    rows = []
    for p in pickups:
        start = datetime.fromisoformat(p)
        end = start + timedelta(minutes=1)
        rows.append(f"1,{start:%Y-%m-%d %H:%M:%S},{end:%Y-%m-%d %H:%M:%S},1,2.1,1,N,142,43,2,8,3,0.5,0,0,0.3,11.8,2.5")
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def ns(iso_utc: str) -> int:
    return int(datetime.fromisoformat(iso_utc).replace(tzinfo=UTC).timestamp() * 1e9)


def trips_with(**data: object) -> Dataset:
    """The declared yellow_trips dataset with another ``freshness.data`` rule."""
    ds = next(d for d in all_datasets() if d.id == "mobility__yellow_trips")
    raw = ds.spec.model_dump(mode="json", exclude_none=True)
    raw["freshness"]["data"] = data
    return Dataset(ds.insight_zone, ds.name, DatasetSpec.model_validate(raw), ds.owners)


# -- declarations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("freshness", "message"), [
    ({"arrival": {}}, "exactly one of every_hours or deadline_cron"),
    ({"arrival": {"every_hours": 24, "deadline_cron": "0 7 * * *"}}, "exactly one of"),
    ({"arrival": {"every_hours": 24, "warn_after_hours": 30}}, "warn_after_hours must be less than every_hours"),
    ({"arrival": {"deadline_cron": "0 7 * * *", "timezone": "Mars/Olympus"}}, "not an IANA time zone"),
    ({"arrival": {"every_hours": 24, "timezone": "Europe/Zurich"}}, "apply to deadline_cron only"),
    ({"data": {"event_time": "pickup_at"}}, "max_age_hours, future_tolerance_minutes or both"),
    ({"data": {"event_time": "fare_amount", "max_age_hours": 1}}, "must be a timestamp column"),
    ({"data": {"event_time": "nope", "max_age_hours": 1}}, "must be a timestamp column"),
    ({"max_lag_hours": 26}, "max_lag_hours"),  # the old shape is refused by name, not ignored
])
def test_a_wrong_freshness_declaration_is_refused_naming_the_field(tmp_path: Path, freshness: dict,
                                                                   message: str) -> None:
    import yaml

    from core.zones import load_zone

    zone = yaml.safe_load((REPO / "platform" / "zones" / "mobility.yaml").read_text())
    zone["datasets"]["yellow_trips"]["freshness"] = freshness
    path = tmp_path / "mobility.yaml"
    path.write_text(yaml.safe_dump(zone))
    with pytest.raises(ConfigError, match=message):
        load_zone(path)


@pytest.mark.parametrize(("arrival", "message"), [
    ({"deadline_cron": "every morning"}, "Invalid cron string"),
    ({"deadline_cron": "0 * * * *", "window_hours": 2}, "lower_bound_delta must be less than or equal"),
    ({"every_hours": 24, "warn_after_hours": 0.001}, "warn_window cannot be less than 1 minute"),
])
def test_what_only_dagster_can_judge_is_refused_naming_the_dataset(arrival: dict, message: str) -> None:
    from checks.freshness import freshness_policy

    ds = next(d for d in all_datasets() if d.id == "mobility__yellow_trips")
    raw = ds.spec.model_dump(mode="json", exclude_none=True)
    raw["freshness"]["arrival"] = arrival
    bad = Dataset(ds.insight_zone, ds.name, DatasetSpec.model_validate(raw), ds.owners)
    with pytest.raises(ConfigError, match=f"dataset mobility.yellow_trips: freshness.arrival: .*{message}"):
        freshness_policy(bad)


def test_a_cron_deadline_in_a_time_zone_becomes_dagsters_cron_policy() -> None:
    [policy] = [d for d in all_datasets() if d.id == "finance__expense_reports"]
    from checks.freshness import freshness_policy

    p = freshness_policy(policy)
    assert (p.deadline_cron, p.timezone, p.lower_bound_delta) == ("0 7 * * *", "Europe/Zurich", timedelta(days=1))


def test_modelled_and_served_assets_derive_their_policy_from_the_staging_tables_they_read() -> None:
    graph = load_definitions_module().defs.resolve_asset_graph()
    staging = graph.get(STAGING_TRIPS).freshness_policy
    assert staging is not None and staging.fail_window.to_timedelta() == timedelta(hours=840)
    downstream = [k for k in graph.get_all_asset_keys() if STAGING_TRIPS in set(graph.upstream_key_iterator(k))]
    assert {k.path[0] for k in downstream} == {"ods", "analytics", "serving"}
    for key in downstream:
        assert graph.get(key).freshness_policy == staging, key
    finance = graph.get(dg.AssetKey(["serving", "finance", "serving_monthly_spend_by_cost_centre"])).freshness_policy
    assert finance == graph.get(dg.AssetKey(["staging", "finance", "staging_expense_reports"])).freshness_policy
    # Reference data without a policy adds none: the zones model reads only taxi_zones.
    assert graph.get(dg.AssetKey(["ods", "mobility", "ods_zones"])).freshness_policy is None


def test_the_strictest_input_policy_wins() -> None:
    daily = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26))
    monthly = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=35))
    hourly_deadline = dg.FreshnessPolicy.cron(deadline_cron="0 * * * *", lower_bound_delta=timedelta(hours=1))
    assert derived_policy([monthly, None, daily]) == daily
    assert derived_policy([daily, hourly_deadline]) == hourly_deadline
    assert derived_policy([None]) is None


# -- data freshness, evaluated with the contract --------------------------------------------------


def test_an_event_after_the_files_arrival_is_quarantined_in_the_event_times_zone(home: Path) -> None:
    # Arrival 12:00 UTC is 08:00 in New York (EDT); the tolerance is 60 minutes, so 09:00 there.
    ing = ingest(home, trips_with(event_time="pickup_at", timezone="America/New_York", future_tolerance_minutes=60),
                 trips_csv("2026-06-01 11:00:00", *["2026-06-01 08:30:00", "2026-05-31 23:00:00"] * 30),
                 name="yellow_tripdata_2026-06_sample.csv", delivered_at_ns=ns("2026-06-01 12:00:00"))
    assert ing.success
    rows = query(home, "select _source_line, _errors from quarantine_mobility.yellow_trips")
    # 11:00 New York is after the limit, though it would pass a naive comparison with 12:00 UTC.
    assert rows == [(2, "pickup_at: not_after_arrival(+60 min) (value 2026-06-01 11:00:00)")]
    assert query(home, "select count(*) from staging_mobility.yellow_trips") == [(60,)]


@pytest.mark.parametrize(("severity", "state"), [("error", "held"), ("warn", "published")])
def test_a_delivery_of_old_data_fails_the_data_freshness_rule(home: Path, severity: str, state: str) -> None:
    ds = trips_with(event_time="pickup_at", timezone="America/New_York", max_age_hours=48, severity=severity)
    arrival = ns("2026-06-01 12:00:00")  # 08:00 in New York
    old = ingest(home, ds, trips_csv("2025-05-30 07:00:00", "2025-05-30 08:00:00"),
                 name="yellow_tripdata_2025-05_sample.csv", delivered_at_ns=arrival)
    [check] = old.result.get_asset_check_evaluations()[2:]
    assert check.check_name == "data_freshness" and not check.passed
    assert check.severity == (dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN)
    assert check.description.startswith("stale data: the newest `pickup_at` is 2025-05-30 08:00:00, 8,808.0 h "
                                        "before the file arrived (2026-06-01 08:00:00 America/New_York)")
    assert check.metadata["age_hours"].value == 8808.0
    assert catalog_states(home, "mobility__yellow_trips") == {old.partition_key: state}
    # Data 47 hours old at arrival passes.
    recent = ingest(home, ds, trips_csv("2026-05-30 09:00:00"), name="yellow_tripdata_2026-05_sample.csv",
                    delivered_at_ns=arrival)
    [check] = recent.result.get_asset_check_evaluations()[2:]
    assert check.passed and check.metadata["age_hours"].value == 47.0
    assert catalog_states(home, "mobility__yellow_trips")[recent.partition_key] == "published"


def test_the_data_freshness_check_is_blocking_only_at_severity_error() -> None:
    from assets.ingest import build_dataset

    for severity, blocking in (("error", True), ("warn", False)):
        defs = build_dataset(trips_with(event_time="pickup_at", max_age_hours=48, severity=severity))
        [spec] = [s for s in defs.assets.check_specs if s.name == "data_freshness"]
        assert spec.blocking is blocking


# -- arrival freshness: Dagster's freshness daemon, the alerting sensor ---------------------------


@pytest.fixture
def instance():
    with tempfile.TemporaryDirectory() as d, dg.instance_for_test(temp_dir=d) as inst:
        yield inst


def _evaluate_freshness(instance: dg.DagsterInstance, at: float) -> None:
    """One iteration of Dagster's freshness daemon over the code location, at time ``at``."""
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(
        python_file=str(REPO / "platform" / "definitions.py"), working_directory=str(REPO)))
    with freeze_time(at), WorkspaceProcessContext(instance, InProcessTestWorkspaceLoadTarget(origin)) as ctx:
        asyncio.run(FreshnessDaemon()._evaluate_assets(workspace_process_context=ctx))


def _state(instance: dg.DagsterInstance, key: dg.AssetKey) -> str:
    return instance.get_freshness_state_records([key])[key].freshness_state.value


def _tick(instance: dg.DagsterInstance, home: Path, cursor: str | None, at: float) -> str:
    defs = load_definitions_module().defs
    sensor = next(s for s in defs.sensors if s.name == "alerts")
    with freeze_time(at):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=defs.get_repository_def(),
                                      resources={"platform": PlatformResource(environment="local", home=str(home))})
        return sensor(ctx).cursor


def _alerts(home: Path) -> list[dict]:
    path = home / "alerts" / "alerts.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_a_stale_dataset_raises_one_freshness_alert_at_the_right_time_and_resolves(home: Path, instance) -> None:
    assert ingest(home, "mobility__yellow_trips", TRIPS, instance=instance).success
    instance.report_runless_asset_event(dg.AssetMaterialization(MART))  # the mart was built from it
    t0 = time.time()
    day = 24 * 3600
    _evaluate_freshness(instance, t0)
    assert _state(instance, STAGING_TRIPS) == "PASS" and _state(instance, MART) == "PASS"
    cursor = _tick(instance, home, None, t0)
    assert _alerts(home) == []
    # 31 days on: within the warning window, nothing yet.
    _evaluate_freshness(instance, t0 + 31 * day)
    assert _state(instance, STAGING_TRIPS) == "PASS"
    cursor = _tick(instance, home, cursor, t0 + 31 * day)
    assert _alerts(home) == []
    # 33 days: WARN. One alert, on the dataset; the mart is stale because its input is, so it says nothing.
    _evaluate_freshness(instance, t0 + 33 * day)
    assert _state(instance, STAGING_TRIPS) == "WARN" and _state(instance, MART) == "WARN"
    cursor = _tick(instance, home, cursor, t0 + 33 * day)
    [warn] = _alerts(home)
    assert (warn["kind"], warn["severity"], warn["asset"]) == (
        "opened", "WARN", "staging/mobility/staging_yellow_trips")
    assert warn["title"] == "[WARN] staging/mobility/staging_yellow_trips is stale"
    assert "every 840 h (warning after 768 h)" in warn["body"] and warn["owners"] == ["team:mobility-data",
                                                                                      "mobility-oncall@example.com"]
    assert _tick(instance, home, cursor, t0 + 34 * day) == cursor  # the ticks between: nothing
    # 36 days: FAIL. Raised once more, now as an error.
    _evaluate_freshness(instance, t0 + 36 * day)
    cursor = _tick(instance, home, cursor, t0 + 36 * day)
    assert [(a["kind"], a["severity"]) for a in _alerts(home)] == [("opened", "WARN"), ("opened", "ERROR")]
    cursor = _tick(instance, home, cursor, t0 + 36 * day)
    assert len(_alerts(home)) == 2
    # A new file arrives: the dataset is fresh again (one resolved message). The mart was not rebuilt
    # (no automation here), so now it is stale on its own account: that is its own incident.
    later = t0 + 36 * day + 60
    with freeze_time(later - 30):
        assert ingest(home, "mobility__yellow_trips", SAMPLES / "mobility" / "yellow_trips" /
                      "yellow_tripdata_2019-06_sample.csv", instance=instance).success
    _evaluate_freshness(instance, later)
    assert _state(instance, STAGING_TRIPS) == "PASS" and _state(instance, MART) == "FAIL"
    cursor = _tick(instance, home, cursor, later)
    new = _alerts(home)[2:]
    assert sorted((a["kind"], a["asset"]) for a in new) == [
        ("opened", "analytics/mobility/analytics_daily_trips_by_borough"),
        ("resolved", "staging/mobility/staging_yellow_trips")]
    # A restarted sensor (no cursor) repeats nothing the alert file already holds.
    _tick(instance, home, None, later)
    assert len(_alerts(home)) == 4
