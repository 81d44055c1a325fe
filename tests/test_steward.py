"""The data steward's decision on a held delivery (issue 9): release publishes it and automation
builds from it, reject keeps it out for good; both recorded in the event log and closing the
incident with a resolved message. Real SQLite instance, real catalog, real dbt."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from support import SAMPLES, catalog_states, ingest, load_definitions_module, query

from resources.platform import PlatformResource

TRIPS = SAMPLES / "mobility" / "yellow_trips" / "yellow_tripdata_2021-01_sample.csv"
ZONES = SAMPLES / "mobility" / "taxi_zones" / "taxi_zone_lookup.csv"
STAGING = dg.AssetKey(["staging", "mobility", "staging_yellow_trips"])


def held_trips(broken: int = 30) -> bytes:
    """The 2021 sample with ``broken`` trips ending before they start: above the 2% limit."""
    lines = TRIPS.read_bytes().splitlines()
    for i in range(1, broken + 1):
        f = lines[i].split(b",")
        f[1], f[2] = b"01/02/2021 0:00", b"01/01/2021 0:00"
        lines[i] = b",".join(f)
    return b"\n".join(lines) + b"\n"


@pytest.fixture
def short_home():
    # The embedded PostgreSQL puts its Unix socket under PLATFORM_HOME: keep the path short.
    home = Path(tempfile.mkdtemp(prefix="ph", dir="/tmp"))
    yield home
    from resources.serving import stop_local

    stop_local(home)


@pytest.fixture
def instance():
    with tempfile.TemporaryDirectory() as d, dg.instance_for_test(temp_dir=d) as inst:
        yield inst


def job(name: str) -> dg.JobDefinition:
    return load_definitions_module().defs.get_job_def(name)


def decide(home: Path, instance: dg.DagsterInstance, partition: str, decision: str, reason: str = "checked by hand",
           steward: str = "ada@example.com") -> dg.ExecuteInProcessResult:
    return job("steward__mobility__yellow_trips").execute_in_process(
        partition_key=partition, instance=instance, raise_on_error=False,
        resources={"platform": PlatformResource(environment="local", home=str(home))},
        run_config={"ops": {"decide__mobility__yellow_trips": {"config": {
            "decision": decision, "reason": reason, "steward": steward}}}})


def tick(home: Path, instance: dg.DagsterInstance, cursor: str | None) -> str:
    defs = load_definitions_module().defs
    sensor = next(s for s in defs.sensors if s.name == "alerts")
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=defs.get_repository_def(),
                                  resources={"platform": PlatformResource(environment="local", home=str(home))})
    return sensor(ctx).cursor


def alerts(home: Path) -> list[dict]:
    path = home / "alerts" / "alerts.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def automation_requests(instance: dg.DagsterInstance, cursor: str | None) -> tuple[set[dg.AssetKey], str]:
    result = dg.evaluate_automation_conditions(defs=load_definitions_module().defs, instance=instance, cursor=cursor)
    return {r.key for r in result.results if r.true_subset.size}, result.cursor


def decisions_logged(instance: dg.DagsterInstance, partition: str) -> list[dict]:
    recs = instance.fetch_observations(STAGING, limit=20).records
    return [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in recs
            if r.partition_key == partition and "steward_decision" in r.asset_observation.metadata]


def test_a_released_delivery_is_published_flows_downstream_and_closes_its_incident(
        short_home: Path, instance) -> None:
    home = short_home
    assert ingest(home, "mobility__taxi_zones", ZONES, instance=instance).success
    held = ingest(home, "mobility__yellow_trips", held_trips(), name="yellow_tripdata_2021-02.csv", instance=instance)
    assert not held.success and catalog_states(home, "mobility__yellow_trips") == {held.partition_key: "held"}
    # Held: not materialised in staging (the partition shows as failed, not green); the check says why.
    node = "land_and_stage__mobility__yellow_trips"
    assert [m.asset_key for m in held.result.asset_materializations_for_node(node)] == [
        dg.AssetKey(["landing", "mobility", "landing_yellow_trips"]),
        dg.AssetKey(["quarantine", "mobility", "quarantine_yellow_trips"])]
    [contract] = [c for c in held.result.get_asset_check_evaluations() if c.check_name == "contract"]
    staged = contract.metadata["rows_staged"].value  # the 30 broken and the sample's own 4 are out
    assert staged == 780 - 30 - 4
    assert "steward__mobility__yellow_trips" in contract.metadata["catalog_state"].value
    assert "WHERE _source_file = 'yellow_tripdata_2021-02.csv'" in contract.metadata["quarantine_query"].value
    cursor = tick(home, instance, None)
    assert [(a["kind"], a["check"]) for a in alerts(home)] == [("opened", "contract")]
    _, auto = automation_requests(instance, None)
    before, auto = automation_requests(instance, auto)
    assert not {k for k in before if k.path[1] == "mobility" and k.path[0] == "ods" and "trips" in k.path[-1]}

    released = decide(home, instance, held.partition_key, "release", reason="30 reversed timestamps, known TLC bug")
    assert released.success
    assert catalog_states(home, "mobility__yellow_trips") == {held.partition_key: "published"}
    assert query(home, "select count(*) from staging_mobility.yellow_trips") == [(staged,)]
    [logged] = decisions_logged(instance, held.partition_key)
    assert (logged["steward_decision"], logged["steward"], logged["reason"]) == (
        "released", "ada@example.com", "30 reversed timestamps, known TLC bug")
    mat = instance.fetch_materializations(STAGING, limit=1).records[0]
    assert mat.partition_key == held.partition_key
    assert mat.asset_materialization.metadata["steward_decision"].value == "released"
    assert mat.asset_materialization.metadata["rows_staged"].value == staged
    assert mat.asset_materialization.metadata["dagster/row_count"].value == staged  # the table: only this file

    # Automation picks it up: the failed check no longer counts against the newer materialisation.
    after, _ = automation_requests(instance, auto)
    assert dg.AssetKey(["ods", "mobility", "ods_base_mobility__yellow_trips"]) in after

    cursor = tick(home, instance, cursor)
    assert [a["kind"] for a in alerts(home)] == ["opened", "resolved"]
    resolved = alerts(home)[1]
    assert resolved["title"] == "[resolved] released by the steward: staging/mobility/staging_yellow_trips " \
                                "(yellow_tripdata_2021-02.csv)"
    assert "by ada@example.com" in resolved["body"] and "known TLC bug" in resolved["body"]
    assert tick(home, instance, cursor) == cursor and len(alerts(home)) == 2  # closed for good

    # The released rows reach the ods and the marts (dbt, for real; the mobility models, as finance
    # has nothing published here).
    dbt = next(a for a in load_definitions_module().defs.assets if isinstance(a, dg.AssetsDefinition)
               and a.node_def.name == "dbt_models")
    built = dg.materialize([dbt], instance=instance, raise_on_error=False,
                           selection=dg.AssetSelection.groups("mobility"),
                           resources={"platform": PlatformResource(environment="local", home=str(home))})
    assert built.success
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("select count(*) from ods_mobility.trips where source_file = ?",
                           ["yellow_tripdata_2021-02.csv"]).fetchone()[0] > 0
        assert con.execute("select sum(trips) from analytics_mobility.daily_trips_by_borough").fetchone()[0] > 0
    finally:
        con.close()


def test_a_rejected_delivery_stays_out_for_good_and_its_incident_closes(home: Path, instance) -> None:
    held = ingest(home, "mobility__yellow_trips", held_trips(), name="yellow_tripdata_2021-03.csv", instance=instance)
    cursor = tick(home, instance, None)
    rejected = decide(home, instance, held.partition_key, "reject", reason="wrong month delivered")
    assert rejected.success
    assert catalog_states(home, "mobility__yellow_trips") == {held.partition_key: "held"}
    assert [d["steward_decision"] for d in decisions_logged(instance, held.partition_key)] == ["rejected"]
    tick(home, instance, cursor)
    assert [a["kind"] for a in alerts(home)] == ["opened", "resolved"]
    assert alerts(home)[1]["title"].startswith("[resolved] rejected by the steward")
    # A later release is refused, naming the rejection; rejecting again changes nothing.
    again = decide(home, instance, held.partition_key, "release")
    assert not again.success
    failure = next(e for e in again.all_events if e.is_step_failure).step_failure_data.error.message
    assert "was rejected by ada@example.com" in failure and "a rejection is final; deliver the file again" in failure
    assert decide(home, instance, held.partition_key, "reject").success
    assert len(decisions_logged(instance, held.partition_key)) == 1
    # A re-delivery of the file is checked anew (here: corrected, published); the rejected rows never
    # join it in staging.
    fixed = ingest(home, "mobility__yellow_trips", TRIPS.read_bytes(), name="yellow_tripdata_2021-03.csv",
                   instance=instance)
    assert fixed.success
    assert catalog_states(home, "mobility__yellow_trips") == {held.partition_key: "superseded",
                                                              fixed.partition_key: "published"}
    assert query(home, "select count(*) from staging_mobility.yellow_trips") == [(780 - 4,)]


@pytest.mark.parametrize(("decision", "reason", "message"), [
    ("publish", "x", "say release or reject"),
    ("release", "  ", "needs a reason and the steward's name"),
])
def test_a_decision_without_a_valid_word_or_reason_is_refused(home: Path, instance, decision: str, reason: str,
                                                              message: str) -> None:
    held = ingest(home, "mobility__yellow_trips", held_trips(), name="yellow_tripdata_2021-04.csv", instance=instance)
    result = decide(home, instance, held.partition_key, decision, reason=reason)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert message in failure.step_failure_data.error.message
    assert catalog_states(home, "mobility__yellow_trips") == {held.partition_key: "held"}


def test_only_a_held_partition_can_be_decided(home: Path, instance) -> None:
    ok = ingest(home, "mobility__yellow_trips", TRIPS, instance=instance)
    result = decide(home, instance, ok.partition_key, "release")
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "is published, not held: nothing to decide" in failure.step_failure_data.error.message
