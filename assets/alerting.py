"""The alerting sensor: reads the check-execution index (never ASSET_CHECK_EVALUATION events by
storage id, which repeat across runs on the SQLite storage ``make run`` uses), turns executions
into incidents (checks.alerting.plan) and delivers each alert to every channel. The cursor holds
the open incidents and the deliveries still pending; a channel that fails keeps its alerts
pending for the next tick and never holds up the others."""

from __future__ import annotations

import json
from collections.abc import Sequence

import dagster as dg

# The check-execution index has no public API in Dagster 1.13; these are its record statuses.
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from checks.alerting import Alert, CheckOutcome, plan
from checks.staging import CONTRACT_CHECK, RECONCILIATION_CHECK
from core.errors import PlatformError
from core.zones import Dataset
from resources.platform import PlatformResource

ALERTS_SENSOR = "alerts"
INTERVAL_S = 5
HISTORY = 500  # newest executions read per check each tick
_DONE = {AssetCheckExecutionRecordStatus.SUCCEEDED: True, AssetCheckExecutionRecordStatus.FAILED: False}


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


def build_alerting_sensor(datasets: Sequence[Dataset]) -> dg.SensorDefinition:
    keys = [dg.AssetCheckKey(dg.AssetKey(["staging", d.insight_zone, d.name]), check)
            for d in datasets for check in (CONTRACT_CHECK, RECONCILIATION_CHECK)]
    owners = {("staging", d.insight_zone, d.name): tuple(d.owners) for d in datasets}

    @dg.sensor(name=ALERTS_SENSOR, minimum_interval_seconds=INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Alerts the datasets' owners once when a staging check fails (an incident per "
                           "dataset, check and delivered file) and once when it passes again.")
    def alerts(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
        state = json.loads(context.cursor) if context.cursor else {}
        open_incidents, new = plan(state.get("open", {}), outcomes(context.instance, keys),
                                   lambda asset: owners.get(asset, ()), platform.ui_url())
        pending: list[dict] = state.get("pending", [])
        for a in new:
            (context.log.warning if a.kind == "opened" else context.log.info)(
                f"{a.title}: {a.body} (owners: {', '.join(a.owners) or 'none declared'}; run {a.run_url})")
        channels = platform.alert_channels()
        pending += [{"channel": c.name, "alert": json.loads(a.to_json())} for a in new for c in channels]
        by_name = {c.name: c for c in channels}
        left = []
        for item in pending:
            channel = by_name.get(item["channel"])
            if channel is None:  # a channel no longer configured: say so, do not keep it forever
                context.log.error(f"alert {item['alert']['id']} for channel {item['channel']}: no such channel")
                continue
            try:
                channel.deliver(Alert(**{**item["alert"], "owners": tuple(item["alert"]["owners"])}))
            except PlatformError as e:
                context.log.warning(f"alert {item['alert']['id']} not delivered to {channel.name}: {e}; "
                                    "retried on the next tick")
                left.append(item)
        return dg.SensorResult(cursor=json.dumps({"open": open_incidents, "pending": left}, sort_keys=True))

    return alerts
