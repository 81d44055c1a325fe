"""Alerting, first part: incidents of the staging checks, on a real Dagster instance with the
SQLite storage ``make run`` uses, delivered to the local alert file."""

from __future__ import annotations

import dataclasses
import itertools
import json
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time
from support import SAMPLES, ingest, load_definitions_module, query

from checks.alerting import OPENED, RESOLVED, CheckOutcome, plan
from resources.alerts import JsonLinesChannel
from resources.platform import PlatformResource

ASSET = ("staging", "finance", "staging_expense_reports")
BAD = SAMPLES / "finance" / "expense_reports" / "expenses_2026-11-19.csv"  # lost its currency column
GOOD = SAMPLES / "finance" / "expense_reports" / "expenses_2026-11-18.csv"


def outcome(record_id: int, passed: bool, partition: str = "a.csv@0123456789abcdef", **metadata) -> CheckOutcome:
    return CheckOutcome(ASSET, "contract", partition, record_id, f"run{record_id}", passed, "ERROR", 1.0,
                        None if passed else "a.csv rejected", metadata)


def owners(_: tuple[str, ...]) -> tuple[str, ...]:
    return ("finance-oncall@example.com",)


def test_an_incident_opens_once_and_resolves_once() -> None:
    open_, alerts = plan({}, [outcome(1, False)], owners, "http://ui")
    assert [a.kind for a in alerts] == [OPENED]
    assert list(open_) == ["staging/finance/staging_expense_reports:contract:a.csv"]
    assert alerts[0].owners == ("finance-oncall@example.com",) and alerts[0].run_url == "http://ui/runs/run1"
    assert plan(open_, [outcome(1, False)], owners, "http://ui") == (open_, [])  # the next tick: nothing
    # A re-delivery of the same file that fails again is the same incident: no second alert.
    open_, alerts = plan(open_, [outcome(1, False), outcome(2, False, "a.csv@fedcba9876543210")], owners, "u")
    assert alerts == [] and open_["staging/finance/staging_expense_reports:contract:a.csv"]["record_id"] == 2
    # The corrected delivery passes: one resolved message, the incident is closed.
    closed, alerts = plan(open_, [outcome(2, False), outcome(3, True, "a.csv@00000000000000ff")], owners, "u")
    assert [a.kind for a in alerts] == [RESOLVED] and closed == {}
    assert plan(closed, [outcome(3, True)], owners, "u") == ({}, [])


def test_an_older_execution_neither_opens_nor_closes() -> None:
    open_, _ = plan({}, [outcome(5, False)], owners, "u")
    assert plan(open_, [outcome(4, True)], owners, "u") == (open_, [])
    assert plan({}, [outcome(4, True)], owners, "u") == ({}, [])


def test_the_alert_says_which_rules_broke_and_how_often_without_values() -> None:
    o = outcome(1, False, rows_read=200, rows_quarantined=12,
                violations={"*: dropoff_not_before_pickup": 8, "email: str_matches('^.+@.+$')": 4})
    [alert] = plan({}, [o], owners, "u")[1]
    assert alert.body == ("12 of 200 rows quarantined; 8 rows (4.0%) violated `*: dropoff_not_before_pickup`; "
                          "4 rows (2.0%) violated `email: str_matches('^.+@.+$')`")


# -- the sensor on a real instance -----------------------------------------------------------------


def _sensor() -> dg.SensorDefinition:
    return next(s for s in load_definitions_module().defs.sensors if s.name == "alerts")


def _tick(instance: dg.DagsterInstance, platform: PlatformResource, cursor: str | None) -> str:
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"platform": platform})
    result = _sensor()(ctx)
    return result.cursor


def _lines(home: Path) -> list[dict]:
    path = home / "alerts" / "alerts.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def instance():
    with tempfile.TemporaryDirectory() as d, dg.instance_for_test(temp_dir=d) as inst:
        yield inst


def test_a_rejected_file_alerts_once_and_its_corrected_delivery_resolves_it(home: Path, instance) -> None:
    platform = PlatformResource(environment="local", home=str(home))
    bad = ingest(home, "finance__expense_reports", BAD, instance=instance)
    assert not bad.success
    cursor = _tick(instance, platform, None)
    [alert] = _lines(home)
    assert alert["kind"] == "opened" and alert["source_file"] == BAD.name and alert["check"] == "contract"
    assert "missing columns: currency" in alert["body"] and alert["owners"] == ["team:finance-data"]
    assert alert["run_url"].endswith(bad.result.run_id) and alert["asset_url"].endswith("/assets/staging/finance/"
                                                                                          "staging_expense_reports")
    # The following ticks say nothing; neither does a restarted daemon (a fresh sensor, the stored
    # cursor), nor one that crashed after delivering and before its cursor was stored.
    assert _tick(instance, platform, cursor) == cursor
    _tick(instance, platform, None)
    assert len(_lines(home)) == 1
    # The corrected file, delivered under the same name, passes: one resolved message.
    good = ingest(home, "finance__expense_reports", GOOD.read_bytes(), name=BAD.name, instance=instance)
    assert good.success
    cursor = _tick(instance, platform, cursor)
    assert [a["kind"] for a in _lines(home)] == ["opened", "resolved"]
    assert json.loads(cursor)["open"] == {}
    _tick(instance, platform, cursor)
    assert len(_lines(home)) == 2


class TwoFiles(PlatformResource):
    """The platform with a second alert file, so one channel can fail for real (its folder is a file)."""

    second: str = ""

    def alert_channels(self) -> list[JsonLinesChannel]:
        broken = JsonLinesChannel(Path(self.second) / "alerts.jsonl")
        broken.name = "second_file"
        return [*super().alert_channels(), broken]


def test_a_failing_channel_is_retried_and_does_not_hold_up_the_others(home: Path, tmp_path: Path, instance) -> None:
    blocker = tmp_path / "second"
    blocker.write_text("a file where the channel wants a folder")
    platform = TwoFiles(environment="local", home=str(home), second=str(blocker))
    ingest(home, "finance__expense_reports", BAD, instance=instance)
    start = time.time()
    with freeze_time(start):
        cursor = _tick(instance, platform, None)
    assert len(_lines(home)) == 1  # the working channel delivered at once
    [pending] = json.loads(cursor)["pending"]
    assert pending["channel"] == "second_file" and pending["attempts"] == 1
    assert pending["next_at"] == pytest.approx(start + 5)
    with freeze_time(start + 1):  # not due yet: not tried
        assert _tick(instance, platform, cursor) == cursor
    with freeze_time(start + 6):  # tried again, still failing: backs off further; nothing repeated elsewhere
        cursor = _tick(instance, platform, cursor)
    [pending] = json.loads(cursor)["pending"]
    assert len(_lines(home)) == 1 and pending["attempts"] == 2 and pending["next_at"] == pytest.approx(start + 6 + 15)
    blocker.unlink()
    with freeze_time(start + 22):
        cursor = _tick(instance, platform, cursor)
    assert json.loads(cursor)["pending"] == []
    assert [json.loads(x)["kind"] for x in (blocker / "alerts.jsonl").read_text().splitlines()] == ["opened"]


# -- routing ---------------------------------------------------------------------------------------


def _routes(*raw: dict):
    from core.zones import AlertRoute

    return [AlertRoute.model_validate(r) for r in raw]


def test_routes_pick_channels_and_recipients_by_severity() -> None:
    from checks.alerting import route

    [error] = plan({}, [outcome(1, False)], owners, "u")[1]
    warn = dataclasses.replace(error, severity="WARN")
    routes = _routes({"to": ["oncall@example.com"], "severities": ["ERROR"], "channels": ["pager", "slack"]},
                     {"to": ["team:finance-data"], "channels": ["slack"]})
    configured = ["alert_file", "pager", "slack"]
    assert route(error, routes, configured) == ({"alert_file": ("finance-oncall@example.com",),
                                                 "pager": ("oncall@example.com",),
                                                 "slack": ("oncall@example.com", "team:finance-data")}, [])
    assert route(warn, routes, configured) == ({"alert_file": ("finance-oncall@example.com",),
                                                "slack": ("team:finance-data",)}, [])
    # An environment without those channels: the alert file still gets it; the gap is named.
    assert route(error, routes, ["alert_file"]) == ({"alert_file": ("finance-oncall@example.com",)},
                                                    ["pager", "slack"])
    # No channels listed: every configured one.
    assert route(warn, _routes({"to": ["a@example.com"]}), configured)[0] == {
        "alert_file": ("finance-oncall@example.com",), "pager": ("a@example.com",), "slack": ("a@example.com",)}


class Collected(JsonLinesChannel):
    """A second alert file under another channel's name, to see what routing sends it."""


class Routed(PlatformResource):
    extra: str = ""

    def alert_channels(self) -> list[JsonLinesChannel]:
        out = []
        for name in ("oncall", "slack"):
            c = Collected(Path(self.extra) / f"{name}.jsonl")
            c.name = name
            out.append(c)
        return [*super().alert_channels(), *out]


def test_the_mobility_zones_routes_reach_their_channels(home: Path, tmp_path: Path, instance) -> None:
    platform = Routed(environment="local", home=str(home), extra=str(tmp_path))
    bad = SAMPLES / "mobility" / "yellow_trips" / "yellow_tripdata_2009-01_sample.csv"
    assert not ingest(home, "mobility__yellow_trips", bad, instance=instance).success
    _tick(instance, platform, None)
    sent = {n: [json.loads(x) for x in (tmp_path / f"{n}.jsonl").read_text().splitlines()]
            for n in ("oncall", "slack")}
    assert [a["owners"] for a in sent["oncall"]] == [["mobility-oncall@example.com"]]
    assert [a["owners"] for a in sent["slack"]] == [["mobility-oncall@example.com", "team:mobility-data"]]
    assert [a["owners"] for a in _lines(home)] == [["team:mobility-data", "mobility-oncall@example.com"]]


# -- runs and sensors ------------------------------------------------------------------------------


def test_a_failed_run_alerts_once_unless_a_failed_check_already_did_and_its_next_success_resolves(
        home: Path, instance) -> None:
    import hashlib

    from support import dataset_defs

    from core.names import partition_key

    platform = PlatformResource(environment="local", home=str(home))
    zones = SAMPLES / "mobility" / "taxi_zones" / "taxi_zone_lookup.csv"
    defs = dataset_defs("mobility__taxi_zones")
    key = partition_key(zones.name, hashlib.sha256(zones.read_bytes()).hexdigest())
    instance.add_dynamic_partitions(defs.partitions.name, [key])
    # Landing with nothing in ingress and no file named: a terminal error, no check involved.
    landing = next(k for k in defs.assets.keys if k.path[0] == "landing")
    failed = dg.materialize([defs.assets], selection=[landing], partition_key=key, instance=instance,
                            raise_on_error=False, resources={"platform": platform})
    assert not failed.success
    assert not ingest(home, "finance__expense_reports", BAD, instance=instance).success  # fails on its check
    cursor = _tick(instance, platform, None)
    runs = [a for a in _lines(home) if a["check"] == "run_failure"]
    assert [(a["kind"], a["source_file"], a["run_url"].rsplit("/", 1)[1]) for a in runs] == [
        ("opened", zones.name, failed.run_id)]
    assert [a["check"] for a in _lines(home) if a["check"] != "run_failure"] == ["contract"]  # no run alert for it
    assert _tick(instance, platform, cursor) == cursor
    assert ingest(home, "mobility__taxi_zones", zones, instance=instance).success  # the same partition, now landed
    _tick(instance, platform, cursor)
    assert [a["kind"] for a in _lines(home) if a["check"] == "run_failure"] == ["opened", "resolved"]


_CLOCK = itertools.count(int(time.time()), 10)


def _sensor_ticks(instance: dg.DagsterInstance, name: str, statuses: list) -> None:
    """Ticks of the platform's sensor ``name``, written through Dagster's own scheduler storage
    (a stand-in for a daemon whose sensor keeps failing: making a real sensor fail on cue would
    need a broken deployment)."""
    from dagster._core.remote_origin import (
        InProcessCodeLocationOrigin,
        RemoteInstigatorOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        TickData,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._utils.error import SerializableErrorInfo
    from support import REPO

    repo = RemoteRepositoryOrigin(InProcessCodeLocationOrigin(LoadableTargetOrigin(
        python_file=str(REPO / "platform" / "definitions.py"))), "__repository__")
    origin = RemoteInstigatorOrigin(repo, name)
    state = InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING)
    if not instance.get_instigator_state(origin.get_id(), state.selector_id):
        instance.add_instigator_state(state)
    for i, status in enumerate(statuses):
        instance.create_tick(TickData(
            instigator_origin_id=origin.get_id(), instigator_name=name, instigator_type=InstigatorType.SENSOR,
            status=status, timestamp=float(next(_CLOCK) + i), selector_id=state.selector_id, run_ids=[], run_keys=[],
            error=SerializableErrorInfo("NotAvailable: ingress s3://acme/ingress: access denied\n", [], "X")
            if status.value == "FAILURE" else None))


def test_a_sensor_failing_tick_after_tick_alerts_once_and_resolves_when_it_recovers(home: Path, instance) -> None:
    from dagster._core.scheduler.instigation import TickStatus

    platform = PlatformResource(environment="local", home=str(home))
    _sensor_ticks(instance, "mobility__yellow_trips__ingress", [TickStatus.SUCCESS, TickStatus.FAILURE,
                                                                 TickStatus.FAILURE])
    cursor = _tick(instance, platform, None)
    assert _lines(home) == []  # two failed ticks: not yet
    _sensor_ticks(instance, "mobility__yellow_trips__ingress", [TickStatus.FAILURE])
    cursor = _tick(instance, platform, cursor)
    [alert] = _lines(home)
    assert alert["title"] == "[ERROR] sensor mobility__yellow_trips__ingress is failing"
    assert alert["owners"] == ["team:mobility-data", "mobility-oncall@example.com"]
    assert alert["check"] == "sensor_health" and alert["asset"] == "sensors/mobility/mobility__yellow_trips__ingress"
    assert alert["body"] == ("sensor mobility__yellow_trips__ingress failed its last 3 ticks: "
                             "NotAvailable: ingress s3://acme/ingress: access denied")
    _sensor_ticks(instance, "mobility__yellow_trips__ingress", [TickStatus.FAILURE])
    cursor = _tick(instance, platform, cursor)
    assert len(_lines(home)) == 1
    _sensor_ticks(instance, "mobility__yellow_trips__ingress", [TickStatus.SKIPPED])
    _tick(instance, platform, cursor)
    assert [a["kind"] for a in _lines(home)] == ["opened", "resolved"]


def test_when_no_channel_takes_an_alert_the_tick_fails_and_keeps_it(home: Path, instance) -> None:
    from core.errors import PlatformError

    (home / "alerts").mkdir(parents=True)
    (home / "alerts" / "alerts.jsonl").mkdir()  # the only channel cannot write
    platform = PlatformResource(environment="local", home=str(home))
    ingest(home, "finance__expense_reports", BAD, instance=instance)
    with pytest.raises(PlatformError, match="could not deliver to any channel"):
        _tick(instance, platform, None)
    (home / "alerts" / "alerts.jsonl").rmdir()
    _tick(instance, platform, None)  # the stored cursor did not move: the alert is delivered now
    assert [a["kind"] for a in _lines(home)] == ["opened"]


def test_no_planted_personal_value_reaches_an_alert_the_incident_log_or_the_log(
        home: Path, instance, caplog: pytest.LogCaptureFixture) -> None:
    """Personal values that break the contract are quarantined with reasons; what the owners are
    told (alert file, incident log, sensor log) and the check's examples carry none of them."""
    lines = GOOD.read_text().splitlines()
    n = len(lines) // 10  # a tenth of the file's lines: above its 5% limit, so the delivery is held
    planted = [f"planted.person{i}#nowhere" for i in range(1, n + 1)] + [f"XPLANTED{i}" for i in range(1, n + 1)]
    for i in range(1, n + 1):
        cells = lines[i].split('","')
        cells[2], cells[3] = f"XPLANTED{i}", f"planted.person{i}#nowhere"
        lines[i] = '","'.join(cells)
    platform = PlatformResource(environment="local", home=str(home))
    held = ingest(home, "finance__expense_reports", ("\n".join(lines) + "\n").encode(), name=GOOD.name,
                  instance=instance)
    assert not held.success
    [contract] = [c for c in held.result.get_asset_check_evaluations() if c.check_name == "contract"]
    assert not contract.passed and contract.metadata["rows_quarantined"].value >= n
    with caplog.at_level("DEBUG"):
        sensor = _sensor()
        result = sensor(dg.build_sensor_context(instance=instance, resources={"platform": platform}))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    [alert] = _lines(home)
    assert "violated" in alert["body"] and "employee_email" in alert["body"]
    log = [str(r.asset_observation.metadata) for r in instance.fetch_observations(
        dg.AssetKey(["operations", "platform", "operations_incidents"]), limit=10).records]
    assert len(log) == 1
    told = [(home / "alerts" / "alerts.jsonl").read_text(), *log, caplog.text,
            str({k: v.value for k, v in contract.metadata.items()}), contract.description or ""]
    leaked = {value for value in planted for text in told if value in text}
    assert leaked == set(), leaked
    # The values themselves are where a steward may look: the restricted quarantine zone.
    assert query(home, "select count(*) from quarantine_finance.expense_reports where employee_email like "
                       "'planted.person%'")[0][0] == n
