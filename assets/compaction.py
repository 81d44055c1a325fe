"""The ``compact_lake`` job and its nightly schedule: the small per-delivery Parquet files of the
staging and quarantine tables, compacted per month of arrival (``engine.compaction``). What is in
view does not change, only how many files a query opens; each compaction is an observation on the
dataset's staging asset (files, rows, where they went)."""

import time

import dagster as dg

from assets.ingest import SUPERSEDED_VERSION_RETENTION_S, keys
from assets.policies import RETRY, platform_errors
from core.zones import Dataset
from engine.compaction import MIN_FILES, TARGET_ROWS, compact_table
from resources.platform import PlatformResource

JOB = "compact_lake"


class CompactionConfig(dg.Config):
    datasets: list[str] = []  # <insight_zone>.<dataset>; empty: every dataset
    target_rows: int = TARGET_ROWS  # rows per compacted file
    min_files: int = MIN_FILES  # fewer small deliveries than this in a month are left alone


def build_compaction(datasets: list[Dataset]) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    by_label = {ds.label: ds for ds in datasets}

    @dg.op(name="compact", retry_policy=RETRY,
           description="Compact the small per-delivery files of the staging and quarantine tables.")
    def compact(context: dg.OpExecutionContext, config: CompactionConfig, platform: PlatformResource) -> None:
        unknown = sorted(set(config.datasets) - set(by_label))
        if unknown:
            raise dg.Failure(description=f"unknown dataset(s) {', '.join(unknown)}: known are "
                             f"{', '.join(sorted(by_label))}", allow_retries=False)
        catalog = platform.catalog()
        if not catalog.can_compact:
            context.log.warning(f"{catalog!r} serves each delivery from its own files: nothing compacted here")
            return
        version = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{context.run.run_id[:8]}"
        for ds in [by_label[d] for d in config.datasets] or datasets:
            data = ds.spec.freshness.data if ds.spec.freshness else None
            with platform_errors(f"compacting {ds.label}"):
                done, removed = compact_table(
                    platform.lake(), catalog, ds.insight_zone, ds.name, version=version,
                    sort_by=data.event_time if data else None, target_rows=config.target_rows,
                    min_files=config.min_files, retention_s=SUPERSEDED_VERSION_RETENTION_S, now_ns=time.time_ns())
            for c in done:
                context.log.info(f"{ds.label} {c.month}: {c.files} deliveries ({c.rows_staged:,} staged rows, "
                                 f"{c.rows_quarantined:,} quarantined) into {c.staging_uri}; {c.served} served "
                                 "from it")
                context.log_event(dg.AssetObservation(asset_key=keys(ds)[1], metadata={
                    "compacted_month": c.month, "deliveries": c.files, "served_from_it": c.served,
                    "rows_staged": c.rows_staged, "rows_quarantined": c.rows_quarantined,
                    "staging_file": c.staging_uri, "quarantine_file": c.quarantine_uri}))
            if removed:
                context.log.info(f"{ds.label}: removed {len(removed)} file(s) replaced by a compaction more than "
                                 f"{SUPERSEDED_VERSION_RETENTION_S // 60} minutes ago")
            if not done and not removed:
                context.log.info(f"{ds.label}: nothing to compact")

    @dg.job(name=JOB, description="Compact the small per-delivery Parquet files of staging and quarantine (per "
            "month of arrival); what is in view does not change.")
    def compact_lake() -> None:
        compact()

    schedule = dg.ScheduleDefinition(name=f"{JOB}_nightly", job=compact_lake, cron_schedule="30 2 * * *",
                                     default_status=dg.DefaultScheduleStatus.RUNNING)
    return compact_lake, schedule
