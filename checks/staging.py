"""The blocking checks of every staging partition (one verdict per delivered file): their specs
and their results.

- ``contract``: the file fits its contract as a whole, and the share of quarantined rows is within
  the dataset's ``max_quarantine_ratio``;
- ``reconciliation``: nothing lost: rows read = rows staged + rows quarantined, counted from the
  written Parquet.
"""

from __future__ import annotations

import warnings

import dagster as dg

# Not exported by Dagster 1.13: the pointer from a check's verdict to the materialisation it judged.
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData

from core.errors import FileRejected
from core.markdown import bullet_list
from core.zones import Dataset
from engine.base import StagingResult

CONTRACT_CHECK, RECONCILIATION_CHECK = "contract", "reconciliation"


def check_specs(staging_key: dg.AssetKey, partitions: dg.PartitionsDefinition, ds: Dataset) -> list[dg.AssetCheckSpec]:
    # Checks are partitioned like the asset (a preview feature in Dagster 1.13): each delivered
    # file has its own verdict, instead of the asset showing whichever file finished last.
    limit = ds.spec.contract.max_quarantine_ratio
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(
                CONTRACT_CHECK, asset=staging_key, blocking=True, partitions_def=partitions,
                description=f"The file fits the contract and its quarantined share is within {limit:.2%}.",
            ),
            dg.AssetCheckSpec(
                RECONCILIATION_CHECK, asset=staging_key, blocking=True, partitions_def=partitions,
                description="Nothing lost: rows read = rows staged + rows quarantined "
                "(counted from the written Parquet).",
            ),
        ]


def contract_result(ds: Dataset, staging_key: dg.AssetKey, r: StagingResult, passed: bool,
                    extra: dict[str, object] | None = None) -> dg.AssetCheckResult:
    limit = ds.spec.contract.max_quarantine_ratio
    return dg.AssetCheckResult(
        asset_key=staging_key,
        check_name=CONTRACT_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if passed else
        f"{r.rows_quarantined} of {r.rows_read} rows quarantined ({r.quarantine_ratio:.2%}), "
        f"above the dataset's limit of {limit:.2%}",
        metadata={
            "rows_read": r.rows_read,
            "rows_quarantined": r.rows_quarantined,
            "quarantine_ratio": round(r.quarantine_ratio, 6),
            "max_quarantine_ratio": limit,
            "violations": dg.MetadataValue.json(dict(r.violations)),
            "examples": dg.MetadataValue.md(bullet_list(r.examples)),
            **(extra or {}),
        },
    )


def rejected_result(staging_key: dg.AssetKey, source_file: str, e: FileRejected) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=staging_key, check_name=CONTRACT_CHECK, passed=False,
        severity=dg.AssetCheckSeverity.ERROR, description=str(e),
        metadata={"source_file": source_file, "reason": e.reason,
                  **{k: dg.MetadataValue.json(v) for k, v in e.details.items()}},
    )


def reconciliation_result(staging_key: dg.AssetKey, rows_read: int, staged: int, quarantined: int
                          ) -> dg.AssetCheckResult:
    reconciled = staged + quarantined == rows_read
    return dg.AssetCheckResult(
        asset_key=staging_key, check_name=RECONCILIATION_CHECK, passed=reconciled,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows_read": rows_read, "rows_staged": staged, "rows_quarantined": quarantined},
        description=None if reconciled else f"rows read {rows_read} != staged {staged} + quarantined {quarantined}",
    )


def check_evaluation(instance: dg.DagsterInstance, result: dg.AssetCheckResult, partition: str,
                     blocking: dict[str, bool]) -> dg.AssetCheckEvaluation:
    """``result`` as the verdict on one partition. A step may stage several files (a range of
    partitions), and Dagster 1.13 records an ``AssetCheckResult`` of a ranged step without its
    partition; an evaluation carries it, and points at the partition's latest materialisation (the
    one the step has just recorded, when it did) as Dagster's own conversion does."""
    assert result.check_name is not None and result.asset_key is not None
    latest = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=result.asset_key, asset_partitions=[partition]), limit=1).records
    return dg.AssetCheckEvaluation(
        asset_key=result.asset_key, check_name=result.check_name, passed=result.passed,
        metadata=result.metadata, severity=result.severity, description=result.description,
        blocking=blocking[result.check_name], partition=partition,
        target_materialization_data=AssetCheckEvaluationTargetMaterializationData(
            storage_id=latest[0].storage_id, run_id=latest[0].run_id, timestamp=latest[0].timestamp)
        if latest else None,
    )
