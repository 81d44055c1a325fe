"""The alerting sensor: reads the check-execution index (never ASSET_CHECK_EVALUATION events by
storage id, which repeat across runs on the SQLite storage ``make run`` uses) and the freshness
states the freshness daemon records, turns them into incidents (checks.alerting.plan) and
delivers each alert to every channel. The cursor holds the open incidents and the deliveries
still pending; a channel that fails keeps its alerts pending, is retried with backoff and never
holds up the others.

A modelled or served asset is stale when its inputs are (its policy is derived from theirs): its
freshness incident is raised only when none of the staging tables it reads is stale itself, so
one late file gives one alert, on the dataset, not one per mart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dagster as dg

# The check-execution index has no public API in Dagster 1.13; these are its record statuses.
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._time import get_current_timestamp

from assets.operations import incident_observation
from assets.sensors import SET_ASIDE_JOB
from assets.steward import decisions
from checks.alerting import FRESHNESS, RUN_FAILURE, SENSOR_HEALTH, Alert, CheckOutcome, close_decided, plan, route
from checks.freshness import DATA_FRESHNESS_CHECK, describe_policy
from checks.staging import CONTRACT_CHECK, RECONCILIATION_CHECK
from core.errors import PlatformError
from core.names import asset_path
from core.zones import InsightZone
from resources.alerts.base import ChannelFailed
from resources.platform import PlatformResource

if TYPE_CHECKING:
    from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

ALERTS_SENSOR = "alerts"
INTERVAL_S = 5
HISTORY = 500  # newest executions read per check each tick
_DONE = {AssetCheckExecutionRecordStatus.SUCCEEDED: True, AssetCheckExecutionRecordStatus.FAILED: False}
_STALE = {"WARN": "WARN", "FAIL": "ERROR"}  # freshness state → the alert's severity
BACKOFF_S = (5, 15, 60, 300, 900)  # a failing channel's next attempts: after 5 s, 15 s, ... then every 15 min


def _metadata(evaluation: dg.AssetCheckEvaluation) -> dict[str, object]:
    return {k: v.value for k, v in evaluation.metadata.items()
            if k in ("rows_read", "rows_quarantined", "violations", "reason", "source_file")}


def outcomes(instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey]) -> list[CheckOutcome]:
    out = []
    for key in keys:
        for rec in instance.event_log_storage.get_asset_check_execution_history(key, limit=HISTORY):
            if rec.status not in _DONE or rec.event is None or rec.event.dagster_event is None:
                continue
            ev = rec.event.dagster_event.event_specific_data
            if not isinstance(ev, dg.AssetCheckEvaluation):
                continue
            out.append(CheckOutcome(asset=tuple(key.asset_key.path), check=key.name, partition=rec.partition,
                                    record_id=rec.id, run_id=rec.run_id, passed=_DONE[rec.status],
                                    severity=ev.severity.value, at=rec.create_timestamp,
                                    description=ev.description, metadata=_metadata(ev)))
    return out


def freshness_outcomes(instance: dg.DagsterInstance, graph: BaseAssetGraph | None) -> list[CheckOutcome]:
    """The current freshness state of every asset with a policy, as an outcome of check ``freshness``
    (UNKNOWN, before a first materialisation, is no incident)."""
    if graph is None:
        return []
    with_policy = {k: graph.get(k) for k in graph.get_all_asset_keys() if graph.get(k).freshness_policy is not None}
    if not with_policy:
        return []
    records = instance.event_log_storage.get_freshness_state_records(list(with_policy))
    stale = {k for k, r in records.items() if r.freshness_state.value in _STALE}
    out = []
    for key, rec in records.items():
        state = rec.freshness_state.value
        if state not in ("PASS", *_STALE):
            continue
        node = with_policy[key]
        if key.path[0] != "staging" and state in _STALE:
            roots = {k for k in graph.upstream_key_iterator(key) if k.path[0] == "staging"} & stale
            if roots:  # the stale input has its own incident; this one is its consequence
                continue
        at = rec.updated_at.timestamp()
        policy = describe_policy(node.freshness_policy)
        out.append(CheckOutcome(
            asset=tuple(key.path), check=FRESHNESS, partition=None, record_id=int(at * 1e6), run_id="",
            passed=state == "PASS", severity=_STALE.get(state, "WARN"), at=at,
            description=f"freshness {state} since {rec.updated_at:%Y-%m-%d %H:%M:%S %Z}: {policy}, and no "
                        "new materialisation came in time" if state != "PASS" else None))
    return out


RUNS = 200  # newest finished runs read each tick
_FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def run_outcomes(instance: dg.DagsterInstance, failed_check_runs: set[str],
                 zone_of_job: dict[str, str]) -> list[CheckOutcome]:
    """Failed and canceled runs as incidents per (job, delivered file or -), resolved by the next
    successful run of the same. Left out: a run that failed on a failed check (the check's own
    incident says more), one that Dagster will retry (its retry decides), and the set-aside job's
    runs, which fail on purpose and are reported once each (an incident keyed by their run)."""
    out = []
    for rec in instance.get_run_records(dg.RunsFilter(statuses=list(_FINISHED)), limit=RUNS):
        run = rec.dagster_run
        failed = run.status != dg.DagsterRunStatus.SUCCESS
        if failed and (run.run_id in failed_check_runs or run.tags.get("dagster/will_retry") == "true"):
            continue
        partition = run.tags.get("dagster/partition")
        one_shot = run.job_name == SET_ASIDE_JOB
        if one_shot and not failed:
            continue
        # The set-aside job's source tag is a dataset id (<insight_zone>__<dataset>) or "ingress".
        zone = zone_of_job.get(run.job_name) or run.tags.get("platform/source", "").split("__")[0]
        at = (rec.end_time or rec.update_timestamp.timestamp())
        what = "was canceled" if run.status == dg.DagsterRunStatus.CANCELED else "failed"
        out.append(CheckOutcome(
            asset=("runs", zone or "-", run.job_name), check=RUN_FAILURE,
            partition=partition or (run.run_id if one_shot else None), record_id=rec.storage_id,
            run_id=run.run_id, passed=not failed, severity="ERROR", at=at,
            description=f"run {run.run_id[:8]} of {run.job_name} {what}"
                        + (f" ({run.tags['platform/source_file']})" if "platform/source_file" in run.tags else "")
                        + "; its event log says why"))
    return out


FAILED_TICKS = 3  # consecutive failed ticks that make a sensor unhealthy


def sensor_outcomes(instance: dg.DagsterInstance, names: dict[str, str]) -> list[CheckOutcome]:
    """Each of the platform's sensors whose last FAILED_TICKS ticks all failed (an incident per
    sensor), resolved by its next tick that does not fail."""
    from dagster._core.scheduler.instigation import InstigatorType, TickStatus

    out = []
    for st in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if st.instigator_name not in names:
            continue
        ticks = instance.get_ticks(st.instigator_origin_id, st.selector_id, limit=FAILED_TICKS)
        done = [t for t in ticks if t.status != TickStatus.STARTED]
        if not done:
            continue
        failing = len(done) == FAILED_TICKS and all(t.status == TickStatus.FAILURE for t in done)
        if not failing and done[0].status == TickStatus.FAILURE:
            continue  # failing, but not for long enough: neither opens nor closes
        error = done[0].error.message.strip().splitlines()[-1][:300] if failing and done[0].error else ""
        out.append(CheckOutcome(
            asset=("sensors", names[st.instigator_name], st.instigator_name), check=SENSOR_HEALTH, partition=None,
            record_id=done[0].tick_id, run_id="", passed=not failing, severity="ERROR", at=done[0].timestamp,
            description=f"sensor {st.instigator_name} failed its last {FAILED_TICKS} ticks: {error}" if failing
            else None))
    return out


def _due(item: dict, now: float) -> bool:
    return float(item.get("next_at", 0)) <= now


def build_alerting_sensor(zones: Sequence[InsightZone]) -> dg.SensorDefinition:
    datasets = [d for z in zones for d in z.datasets]
    routes = {z.name: z.spec.routes for z in zones}
    keys = [dg.AssetCheckKey(dg.AssetKey(asset_path("staging", d.insight_zone, d.name)), check)
            for d in datasets for check in (CONTRACT_CHECK, RECONCILIATION_CHECK, DATA_FRESHNESS_CHECK)
            if check != DATA_FRESHNESS_CHECK or (d.spec.freshness and d.spec.freshness.data
                                                 and d.spec.freshness.data.max_age_hours)]
    zone_owners = {d.insight_zone: tuple(d.owners) for d in datasets}
    staging_keys = [dg.AssetKey(asset_path("staging", d.insight_zone, d.name)) for d in datasets]
    zone_of_job = {f"ingest__{d.id}": d.insight_zone for d in datasets}
    # Sensor name → its insight zone (whose owners hear of it); the shared sensors have none.
    sensor_names = {f"{d.id}__ingress": d.insight_zone for d in datasets} | dict.fromkeys(
        ("ingress__strays", "modelled_zones_automation", ALERTS_SENSOR), "-")

    @dg.sensor(name=ALERTS_SENSOR, minimum_interval_seconds=INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Alerts the owners once when a staging check fails (an incident per dataset, "
                           "check and delivered file) or an asset goes stale, and once when it is resolved.")
    def alerts(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
        state = json.loads(context.cursor) if context.cursor else {}
        graph = context.repository_def.asset_graph if context.repository_def is not None else None
        checks = outcomes(context.instance, keys)
        failed_check_runs = {o.run_id for o in checks if not o.passed}
        seen = checks + freshness_outcomes(context.instance, graph) + run_outcomes(
            context.instance, failed_check_runs, zone_of_job) + sensor_outcomes(context.instance, sensor_names)
        owners_of = lambda asset: zone_owners.get(asset[1], ()) if len(asset) > 1 else ()  # noqa: E731
        open_incidents, new = plan(state.get("open", {}), seen, owners_of, platform.ui_url())
        decided = {("/".join(k.path), p): d for k in staging_keys for p, d in decisions(context.instance, k).items()}
        open_incidents, closed = close_decided(open_incidents, decided, owners_of, platform.ui_url())
        new += closed
        # A one-shot incident (a set-aside run) that fell out of the runs read is forgotten: it
        # cannot come back, so the cursor stays bounded.
        current = {o.incident_id for o in seen}
        open_incidents = {k: v for k, v in open_incidents.items()
                          if not (f"/{SET_ASIDE_JOB}:" in k and k not in current)}
        pending: list[dict] = state.get("pending", [])
        for a in new:
            (context.log.warning if a.kind == "opened" else context.log.info)(
                f"{a.title}: {a.body} (owners: {', '.join(a.owners) or 'none declared'}; run {a.run_url})")
        channels = platform.alert_channels()
        by_name = {c.name: c for c in channels}
        for a in new:
            zone = a.insight_zone
            targets, missing = route(a, routes.get(zone, []), list(by_name))
            if missing:
                context.log.warning(f"alert {a.id}: the {zone} zone routes {a.severity} alerts to "
                                    f"{', '.join(missing)}, which this environment does not configure "
                                    "(alerts.channels): not sent there")
            body = json.loads(a.to_json())
            pending += [{"channel": c, "alert": {**body, "owners": list(to)}} for c, to in targets.items()]
        left = []
        now = get_current_timestamp()  # Dagster's clock: tests move it with freeze_time
        for item in pending:
            channel = by_name.get(item["channel"])
            if channel is None:  # a channel no longer configured: say so, do not keep it forever
                context.log.error(f"alert {item['alert']['id']} for channel {item['channel']}: no such channel")
                continue
            if not _due(item, now):
                left.append(item)
                continue
            try:
                channel.deliver(Alert(**{**item["alert"], "owners": tuple(item["alert"]["owners"])}))
            except PlatformError as e:
                attempts = int(item.get("attempts", 0)) + 1
                wait = BACKOFF_S[min(attempts, len(BACKOFF_S)) - 1]
                context.log.warning(f"alert {item['alert']['id']} not delivered to {channel.name} (attempt "
                                    f"{attempts}): {e}; retried in {wait} s")
                left.append({**item, "attempts": attempts, "next_at": now + wait})
        failing = {i["channel"] for i in left if i.get("attempts")}
        if by_name and failing == set(by_name):
            # No channel took anything: fail the tick, so the sensor shows red in the UI and the
            # daemon's log says why (the cursor is kept: nothing is lost, the next tick retries).
            raise ChannelFailed(f"the {ALERTS_SENSOR} sensor could not deliver to any channel "
                                f"({', '.join(sorted(failing))}); {len(left)} deliveries pending")
        # The incident log (operations/platform/operations_incidents): one observation per alert raised.
        return dg.SensorResult(cursor=json.dumps({"open": open_incidents, "pending": left}, sort_keys=True),
                               asset_events=[incident_observation(a) for a in new])

    return alerts
