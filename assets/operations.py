"""How the platform itself is doing, per insight zone, where the UI plots it.

- ``operations/<zone>/operations_<zone>_deliveries``: daily partitions (UTC). Each materialisation
  counts the day's deliveries from the verdicts of the staging checks: files delivered, staged,
  held and rejected; rows read, staged, quarantined and held; incidents opened and resolved. All
  numeric, so the asset's *Plots* tab draws them over the days. A schedule refreshes today's
  partition every 15 minutes; any past day can be materialised from the UI.
- ``operations/platform/operations_incidents``: the alert history. The ``alerts`` sensor records
  every alert it raises as an observation of this asset (when, what, severity, asset, file, run),
  so the asset's *Events* list is the browsable incident log in every environment (it lives in
  the instance's event log, not on one machine's disk).
"""


from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.policies import RETRY
from checks.alerting import Alert
from checks.freshness import DATA_FRESHNESS_CHECK
from checks.staging import CONTRACT_CHECK
from core.names import asset_path
from core.zones import InsightZone

OPERATIONS = "operations"
INCIDENTS_KEY = dg.AssetKey(asset_path(OPERATIONS, "platform", "incidents"))
DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)  # today's partition too
JOB = "operations__daily"
PAGE = 500


def deliveries_key(zone: str) -> dg.AssetKey:
    return dg.AssetKey(asset_path(OPERATIONS, zone, f"{zone}_deliveries"))


def incident_observation(alert: Alert) -> dg.AssetObservation:
    """One alert as an entry of the incident log (its body has counts and rules, never values)."""
    return dg.AssetObservation(asset_key=INCIDENTS_KEY, metadata={
        "alert": alert.kind, "severity": alert.severity, "title": alert.title, "insight_zone": alert.insight_zone,
        "asset": alert.asset, "check": alert.check, "source_file": alert.source_file or "-",
        # The body as plain text, not markdown: rules keep their backslashes and angle brackets.
        "incident": alert.incident, "alert_id": alert.id, "body": alert.body,
        "run": dg.MetadataValue.url(alert.run_url) if alert.run_url else "-",
        "raised_at": datetime.fromtimestamp(alert.at, UTC).isoformat(timespec="seconds"),
    })


def _evaluations(instance: dg.DagsterInstance, key: dg.AssetCheckKey, start: float, end: float
                 ) -> Iterable[tuple[str, bool, dict]]:
    """(partition, passed or only warned, metadata) of the check's executions created in [start, end),
    newest first."""
    cursor = None
    while True:
        page = instance.event_log_storage.get_asset_check_execution_history(key, limit=PAGE, cursor=cursor)
        for rec in page:
            if rec.create_timestamp >= end:
                continue
            if rec.create_timestamp < start:
                return
            ev = rec.event.dagster_event.event_specific_data if rec.event and rec.event.dagster_event else None
            if isinstance(ev, dg.AssetCheckEvaluation) and rec.partition:
                # Only a failure at ERROR severity holds a delivery; a warning lets it through.
                held = not ev.passed and ev.severity == dg.AssetCheckSeverity.ERROR
                yield rec.partition, not held, {k: v.value for k, v in ev.metadata.items()}
        if len(page) < PAGE:
            return
        cursor = page[-1].id


def day_statistics(instance: dg.DagsterInstance, zone: InsightZone, day: str) -> dict[str, int]:
    start = datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()
    end = start + timedelta(days=1).total_seconds()
    stats = dict.fromkeys(("files_delivered", "files_staged", "files_held", "files_rejected", "rows_read",
                           "rows_staged", "rows_quarantined", "rows_held", "incidents_opened",
                           "incidents_resolved"), 0)
    for ds in zone.datasets:
        staging = dg.AssetKey(asset_path("staging", ds.insight_zone, ds.name))
        contract: dict[str, tuple[bool, dict]] = {}
        for partition, passed, md in _evaluations(instance, dg.AssetCheckKey(staging, CONTRACT_CHECK), start, end):
            contract.setdefault(partition, (passed, md))  # the day's latest verdict per file
        stale = {p for p, passed, _ in _evaluations(instance, dg.AssetCheckKey(staging, DATA_FRESHNESS_CHECK),
                                                    start, end) if not passed}
        for partition, (passed, md) in contract.items():
            stats["files_delivered"] += 1
            if "reason" in md:  # rejected as a whole: no rows were read
                stats["files_rejected"] += 1
                continue
            read, quarantined = int(md.get("rows_read", 0)), int(md.get("rows_quarantined", 0))
            held = not passed or partition in stale
            stats["files_held" if held else "files_staged"] += 1
            stats["rows_read"] += read
            stats["rows_quarantined"] += quarantined
            stats["rows_held" if held else "rows_staged"] += read - quarantined
    for rec in instance.fetch_observations(dg.AssetRecordsFilter(asset_key=INCIDENTS_KEY, after_timestamp=start,
                                                                 before_timestamp=end), limit=10_000).records:
        md = rec.asset_observation.metadata if rec.asset_observation else {}
        if getattr(md.get("insight_zone"), "value", None) == zone.name:
            kind = md["alert"].value
            stats["incidents_opened" if kind == "opened" else "incidents_resolved"] += 1
    return stats


def _deliveries_asset(zone: InsightZone) -> dg.AssetsDefinition:
    # It reads the event log, not the staging tables: no deps, so the lineage graph stays the data's.
    @dg.asset(key=deliveries_key(zone.name), partitions_def=DAYS, group_name=zone.name,
              owners=list(zone.spec.owners), kinds={"dagster"}, retry_policy=RETRY,
              description=f"The {zone.name} zone's deliveries per day (UTC): files staged, held and rejected, "
                          "rows staged and quarantined, incidents opened and resolved. See the Plots tab.")
    def deliveries(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        stats = day_statistics(context.instance, zone, context.partition_key)
        context.log.info(f"{zone.name} on {context.partition_key}: {stats}")
        return dg.MaterializeResult(metadata=stats)

    return deliveries


def build_operations(zones: Sequence[InsightZone]) -> tuple[list, object, dg.ScheduleDefinition]:
    assets: list = [dg.AssetSpec(
        INCIDENTS_KEY, group_name=OPERATIONS, kinds={"dagster"},
        description="The alert history: every alert the `alerts` sensor raised (opened and resolved), one "
                    "observation each. Browse it in this asset's Events.")]
    assets += [_deliveries_asset(zone) for zone in zones]
    job = dg.define_asset_job(JOB, selection=dg.AssetSelection.assets(*(deliveries_key(z.name) for z in zones)),
                              partitions_def=DAYS, description="Counts the day's deliveries of every insight zone.")

    @dg.schedule(job=job, cron_schedule="*/15 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING,
                 name="operations__today")
    def today(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = context.scheduled_execution_time.astimezone(UTC).strftime("%Y-%m-%d")
        return dg.RunRequest(run_key=None, partition_key=day)

    return assets, job, today
