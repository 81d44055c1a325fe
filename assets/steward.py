"""The data steward's decision on a held delivery: one job per dataset, partitioned like it, so the
UI's launchpad offers the partition picker; the decision and its reason are run config.

- ``release``: the held partition is published to staging with its recorded rows (the catalog's
  one transaction, superseding an earlier delivery of the same file like any publish), and a
  staging materialisation says who released it and why. That materialisation is newer than the
  failed check, which Dagster then no longer counts for the partition, so automation builds the
  modelled zones from it as from any published file.
- ``reject``: the partition stays held for good: a later release of it is refused. A re-delivery
  of the file is a new partition and goes through the contract as usual.

Each decision is an observation of the staging partition (who, when, why) in the event log and on
the asset's page; the alerting sensor closes the partition's incidents with a resolved message.
"""

import dataclasses
import time

import dagster as dg
from pydantic import Field

from assets.ingest import DatasetDefs, keys
from assets.policies import platform_errors
from core.errors import TerminalError
from core.zones import Dataset
from resources.platform import PlatformResource

DECISION = "steward_decision"  # the observation's metadata key: released | rejected
HISTORY = 500  # newest observations read to find earlier decisions


class StewardDecision(dg.Config):
    decision: str = Field(description="release (publish the held partition) or reject (keep it out for good)")
    reason: str = Field(description="Why: recorded with the decision, shown in the alert")
    steward: str = Field(description="Who decides (name or email): recorded with the decision")


def decisions(instance: dg.DagsterInstance, staging_key: dg.AssetKey) -> dict[str, dict[str, str]]:
    """Partition key → its latest steward decision (decision, steward, reason, decided_at)."""
    out: dict[str, dict[str, str]] = {}
    for rec in instance.fetch_observations(staging_key, limit=HISTORY).records:  # newest first
        md = rec.asset_observation.metadata if rec.asset_observation else {}
        if DECISION in md and rec.partition_key and rec.partition_key not in out:
            out[rec.partition_key] = {k: str(md[k].value) for k in (DECISION, "steward", "reason", "decided_at")
                                      if k in md}
    return out


def _decide(context: dg.OpExecutionContext, ds: Dataset, cfg: StewardDecision, platform: PlatformResource) -> None:
    staging_key, quarantine_key = keys(ds)[1:]
    key = context.partition_key
    decision = cfg.decision.strip().lower()
    if decision not in ("release", "reject"):
        raise TerminalError(f"decision {cfg.decision!r}: say release or reject")
    if not cfg.reason.strip() or not cfg.steward.strip():
        raise TerminalError("a steward's decision needs a reason and the steward's name: both are recorded")
    records = {r.version.partition_key: r for r in platform.catalog().partitions(ds.insight_zone, ds.name)}
    record = records.get(key)
    if record is None:
        raise TerminalError(f"{key} of {ds.label} was never staged (a file rejected as a whole has no rows to "
                            "release): nothing to decide; deliver a corrected file")
    if record.state != "held":
        detail = f" by {record.superseded_by}" if record.superseded_by else ""
        raise TerminalError(f"{key} of {ds.label} is {record.state}{detail}, not held: nothing to decide")
    earlier = decisions(context.instance, staging_key).get(key)
    if earlier and earlier[DECISION] == "rejected":
        if decision == "reject":
            context.log.info(f"{key} was already rejected by {earlier.get('steward')}: nothing to do")
            return
        raise TerminalError(f"{key} of {ds.label} was rejected by {earlier.get('steward')} on "
                            f"{earlier.get('decided_at')} ({earlier.get('reason')}): a rejection is final; "
                            "deliver the file again to have it checked anew")
    decided_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    record_md = {DECISION: "released" if decision == "release" else "rejected", "steward": cfg.steward.strip(),
                 "reason": cfg.reason.strip(), "decided_at": decided_at, "source_file": record.version.source_file}
    if decision == "release":
        outcome = platform.catalog().publish(dataclasses.replace(record.version, passed=True),
                                             supersede=ds.spec.redelivery == "supersede")
        for old in outcome.superseded:
            for asset_key in (staging_key, quarantine_key):
                context.log_event(dg.AssetObservation(asset_key=asset_key, partition=old, metadata={
                    "superseded_by": key, "in_catalog": False,
                    "reason": f"{record.version.source_file} was released by a steward; {key} replaces it"}))
        published_rows = sum(r.version.rows_staged for r in platform.catalog().partitions(ds.insight_zone, ds.name)
                             if r.state == "published")
        context.log_event(dg.AssetMaterialization(asset_key=staging_key, partition=key, metadata={
            **record_md, "dagster/row_count": published_rows, "rows_staged": record.version.rows_staged,
            "rows_quarantined": record.version.rows_quarantined, "published": outcome.state == "published",
            "catalog_state": f"{outcome.state}: released by {cfg.steward.strip()}"}))
    context.log_event(dg.AssetObservation(asset_key=staging_key, partition=key, metadata=record_md))
    context.log.info(f"{key} of {ds.label} {record_md[DECISION]} by {record_md['steward']}: {record_md['reason']}")


def build_steward_job(defs: DatasetDefs) -> dg.JobDefinition:
    ds = defs.dataset

    @dg.op(name=f"decide__{ds.id}")
    def decide(context: dg.OpExecutionContext, config: StewardDecision, platform: PlatformResource) -> None:
        with platform_errors(f"the steward's decision on {context.partition_key}", partition=context.partition_key):
            _decide(context, ds, config, platform)

    @dg.job(name=f"steward__{ds.id}", partitions_def=defs.partitions,
            description=f"Release a held {ds.name} delivery into staging, or reject it for good, with a reason "
            "(the data steward's decision; recorded in the event log and on the asset).")
    def steward() -> None:
        decide()

    return steward
