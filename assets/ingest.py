"""Turn each declared dataset into Dagster definitions:

- ``[landing, <zone>, <dataset>]``: the exact bytes of each delivered file, one dynamic partition
  per file (``<file name>@<sha256 prefix>``), immutable once written;
- ``[staging, <zone>, <dataset>]`` and ``[quarantine, <zone>, <dataset>]``: one multi-asset step
  that streams the landed file through its contract, with two blocking checks (``contract`` and
  ``reconciliation``);
- an ingest job and a file-arrival sensor over the dataset's ingress folder.
"""


import hashlib
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg
import pyarrow.parquet as pq

from assets.sensors import (
    Cursor,
    plan_tick,
    split_partition_key,
)
from assets.staging import FileRejected, StagingResult, stage_csv
from assets.zones import Dataset
from resources.lake import TMP_DIR, LakeStorage, filesystem_for, list_files, sha256_of
from resources.platform import PlatformResource

CONTRACT_CHECK, RECONCILIATION_CHECK = "contract", "reconciliation"
SENSOR_INTERVAL_S = 5


class LandingConfig(dg.Config):
    ingress_path: str = ""  # where the sensor found the file; empty when re-materialising


@dataclass(frozen=True)
class DatasetDefs:
    dataset: Dataset
    landing: dg.AssetsDefinition
    staging: dg.AssetsDefinition
    job: object  # the unresolved asset job returned by define_asset_job
    sensor: dg.SensorDefinition
    partitions: dg.DynamicPartitionsDefinition


def keys(ds: Dataset) -> tuple[dg.AssetKey, dg.AssetKey, dg.AssetKey]:
    return (
        dg.AssetKey(["landing", ds.insight_zone, ds.name]),
        dg.AssetKey(["staging", ds.insight_zone, ds.name]),
        dg.AssetKey(["quarantine", ds.insight_zone, ds.name]),
    )


def column_schema(ds: Dataset) -> dg.TableSchema:
    cols = [
        dg.TableColumn(
            name,
            col.type,
            description=col.description or None,
            constraints=dg.TableColumnConstraints(nullable=col.nullable, other=_constraints(col)),
            tags={"pii": ""} if col.pii else None,
        )
        for name, col in ds.spec.contract.columns.items()
    ]
    cols += [dg.TableColumn("_source_file", "string"), dg.TableColumn("_source_line", "int64")]
    return dg.TableSchema(columns=cols)


def _constraints(col) -> list[str]:
    out = []
    if col.min is not None:
        out.append(f">= {col.min}")
    if col.max is not None:
        out.append(f"<= {col.max}")
    if col.allowed is not None:
        out.append(f"in {col.allowed}")
    if col.pattern is not None:
        out.append(f"matches {col.pattern}")
    return out


def landing_path(ds: Dataset, key: str) -> tuple[str, ...]:
    name, _ = split_partition_key(key)
    return (ds.insight_zone, ds.name, key, name)


def staging_paths(ds: Dataset, key: str) -> dict[str, tuple[str, ...]]:
    return {
        "published": (ds.insight_zone, ds.name, f"{key}.parquet"),
        "held": (ds.insight_zone, ds.name, "_held", f"{key}.parquet"),
        "quarantine": (ds.insight_zone, ds.name, f"{key}.parquet"),
    }


# ----------------------------------------------------------------------------------------------
# Landing


def _land(lake: LakeStorage, ds: Dataset, key: str, ingress_path: str, log) -> dict:
    name, digest = split_partition_key(key)
    rel = landing_path(ds, key)
    fs = lake.fs("landing")
    if lake.exists("landing", *rel):
        sha = sha256_of(fs, lake.path("landing", *rel))
        if not sha.startswith(digest):
            raise dg.Failure(f"landing object {lake.uri('landing', *rel)} no longer matches its hash {digest}")
        landed_now = False
    else:
        if not ingress_path:
            raise dg.Failure(
                f"partition {key} of {ds.id} is not in landing and no ingress_path was given: "
                "the sensor passes it; re-deliver the file to ingress to land it again"
            )
        src_fs, src = filesystem_for(ingress_path)
        before = src_fs.get_file_info(src)
        h = hashlib.sha256()
        with lake.staged_write("landing", *rel, read_only=True) as tmp:
            with src_fs.open_input_stream(src) as fin, fs.open_output_stream(tmp) as fout:
                while chunk := fin.read(1 << 20):
                    h.update(chunk)
                    fout.write(chunk)
            sha = h.hexdigest()
            if not sha.startswith(digest):
                raise dg.Failure(
                    f"{ingress_path} changed after it was picked up (hash {sha[:16]}, expected {digest}); "
                    "it stays in ingress and will be picked up again as a new delivery"
                )
        landed_now = True
    if ingress_path:
        # The bytes are safe in landing, so the file leaves ingress (which holds pending files
        # only), unless it changed meanwhile: then it stays, to be picked up as a new delivery.
        src_fs, src = filesystem_for(ingress_path)
        info = src_fs.get_file_info(src)
        if info.type.name == "File":
            unchanged = (
                (info.size, info.mtime_ns) == (before.size, before.mtime_ns) if landed_now
                else sha256_of(src_fs, src) == sha
            )
            if unchanged:
                src_fs.delete_file(src)
                log.info(f"removed {ingress_path} from ingress: its bytes are in landing")
    size = fs.get_file_info(lake.path("landing", *rel)).size
    return {"sha": sha, "size": size, "name": name, "landed_now": landed_now, "uri": lake.uri("landing", *rel)}


def build_landing(ds: Dataset, partitions: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    landing_key, _, _ = keys(ds)

    @dg.asset(
        key=landing_key,
        partitions_def=partitions,
        group_name=ds.insight_zone,
        owners=list(ds.owners),
        kinds={"csv", "file"},
        description=f"Exact bytes of each delivered {ds.name} file, one partition per file. Immutable; "
        "not readable by analysts.",
        metadata={"zone": "landing", "insight_zone": ds.insight_zone, "file_pattern": ds.spec.source.pattern},
    )
    def landing(context: dg.AssetExecutionContext, config: LandingConfig, platform: PlatformResource):
        info = _land(platform.lake(), ds, context.partition_key, config.ingress_path, context.log)
        return dg.MaterializeResult(
            metadata={
                "source_file": info["name"],
                "sha256": info["sha"],
                "size_bytes": info["size"],
                "dagster/uri": info["uri"],
                "landed_in_this_run": info["landed_now"],
            }
        )

    return landing


# ----------------------------------------------------------------------------------------------
# Staging + quarantine


def _contract_result(ds: Dataset, staging_key, r: StagingResult, passed: bool) -> dg.AssetCheckResult:
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
            "examples": dg.MetadataValue.md("\n".join(f"- {e}" for e in r.examples) or "none"),
        },
    )


def _parquet_rows(lake: LakeStorage, zone: str, path: str) -> int:
    with lake.fs(zone).open_input_file(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def _check_specs(staging_key: dg.AssetKey, partitions: dg.DynamicPartitionsDefinition,
                 max_ratio: float) -> list[dg.AssetCheckSpec]:
    # Checks are partitioned like the asset (a preview feature in Dagster 1.13): each delivered
    # file has its own verdict, instead of the asset showing whichever file finished last.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(
                CONTRACT_CHECK, asset=staging_key, blocking=True, partitions_def=partitions,
                description=f"The file fits the contract and its quarantined share is within {max_ratio:.2%}.",
            ),
            dg.AssetCheckSpec(
                RECONCILIATION_CHECK, asset=staging_key, blocking=True, partitions_def=partitions,
                description="Nothing lost: rows read = rows staged + rows quarantined "
                "(counted from the written Parquet).",
            ),
        ]


def build_staging(ds: Dataset, partitions: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    landing_key, staging_key, quarantine_key = keys(ds)
    contract = ds.spec.contract
    table = f"staging_{ds.insight_zone}.{ds.name}"

    @dg.multi_asset(
        name=f"stage__{ds.id}",
        partitions_def=partitions,
        group_name=ds.insight_zone,
        specs=[
            dg.AssetSpec(
                staging_key,
                deps=[landing_key],
                owners=list(ds.owners),
                kinds={"parquet", "pandera", "duckdb"},
                description=ds.spec.description or f"Typed, contract-validated {ds.name}.",
                metadata={"dagster/column_schema": column_schema(ds), "dagster/table_name": table},
                freshness_policy=dg.FreshnessPolicy.time_window(
                    fail_window=timedelta(hours=ds.spec.freshness.max_lag_hours)
                ) if ds.spec.freshness else None,
            ),
            dg.AssetSpec(
                quarantine_key,
                deps=[landing_key],
                owners=list(ds.owners),
                kinds={"parquet", "duckdb"},
                description=f"Rows of {ds.name} that broke the contract: original values, failed rules "
                "and columns, source file and line.",
                metadata={"dagster/table_name": f"quarantine_{ds.insight_zone}.{ds.name}"},
            ),
        ],
        check_specs=_check_specs(staging_key, partitions, contract.max_quarantine_ratio),
    )
    def stage(context: dg.AssetExecutionContext, platform: PlatformResource):
        key = context.partition_key
        name, _ = split_partition_key(key)
        lake = platform.lake()
        landed = landing_path(ds, key)
        src = lake.path("landing", *landed)
        if not lake.exists("landing", *landed):
            raise dg.Failure(f"{name}: partition {key} has no landed file at {lake.uri('landing', *landed)}")
        paths = staging_paths(ds, key)
        tmp_s = lake.path("staging", TMP_DIR, f"{key}.{time.time_ns()}.parquet")
        tmp_q = lake.path("quarantine", TMP_DIR, f"{key}.{time.time_ns()}.parquet")
        s_fs, q_fs = lake.fs("staging"), lake.fs("quarantine")
        s_fs.create_dir(lake.path("staging", TMP_DIR), recursive=True)
        q_fs.create_dir(lake.path("quarantine", TMP_DIR), recursive=True)
        try:
            try:
                result = stage_csv(
                    ds.contract, ds.spec.source.csv,
                    lambda: lake.fs("landing").open_input_stream(src), name,
                    lambda: (s_fs.open_output_stream(tmp_s), q_fs.open_output_stream(tmp_q)),
                )
            except FileRejected as e:
                yield dg.AssetCheckResult(
                    asset_key=staging_key, check_name=CONTRACT_CHECK, passed=False,
                    severity=dg.AssetCheckSeverity.ERROR, description=str(e),
                    metadata={"source_file": name, "reason": e.reason,
                              **{k: dg.MetadataValue.json(v) for k, v in e.details.items()}},
                )
                raise dg.Failure(
                    description=f"{e} The file stays in landing ({lake.uri('landing', *landed)}).",
                    metadata={"source_file": name, "partition": key},
                    allow_retries=False,
                ) from None
            staged = _parquet_rows(lake, "staging", tmp_s)
            quarantined = _parquet_rows(lake, "quarantine", tmp_q)
            reconciled = staged + quarantined == result.rows_read
            contract_ok = result.quarantine_ratio <= contract.max_quarantine_ratio
            publish = reconciled and contract_ok
            # A partition that fails its contract is held outside the catalog's view of staging,
            # so nothing reading staging picks it up; quarantine always shows why.
            target = paths["published"] if publish else paths["held"]
            stale = paths["held"] if publish else paths["published"]
            lake.publish("quarantine", tmp_q, *paths["quarantine"])
            lake.publish("staging", tmp_s, *target)
            lake.delete("staging", *stale)
        finally:
            for fs, p in ((s_fs, tmp_s), (q_fs, tmp_q)):
                if fs.get_file_info(p).type.name == "File":
                    fs.delete_file(p)

        catalog = platform.catalog()
        catalog.register("quarantine", ds.insight_zone, ds.name,
                         lake.path("quarantine", ds.insight_zone, ds.name, "*.parquet"))
        if publish:
            catalog.register("staging", ds.insight_zone, ds.name,
                             lake.path("staging", ds.insight_zone, ds.name, "*.parquet"))
        common = {"source_file": name, "partition": key, "rows_read": result.rows_read,
                  "sha256_prefix": split_partition_key(key)[1]}
        yield dg.MaterializeResult(
            asset_key=staging_key,
            metadata={
                **common,
                "dagster/row_count": staged,
                "dagster/column_schema": column_schema(ds),
                "rows_quarantined": quarantined,
                "quarantine_ratio": round(result.quarantine_ratio, 6),
                "published": publish,
                "dagster/uri": lake.uri("staging", *target),
                "slow_path": result.slow_path,
            },
        )
        yield dg.MaterializeResult(
            asset_key=quarantine_key,
            metadata={**common, "dagster/row_count": quarantined,
                      "violations": dg.MetadataValue.json(dict(result.violations)),
                      "dagster/uri": lake.uri("quarantine", *paths["quarantine"])},
        )
        yield _contract_result(ds, staging_key, result, contract_ok)
        yield dg.AssetCheckResult(
            asset_key=staging_key, check_name=RECONCILIATION_CHECK, passed=reconciled,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"rows_read": result.rows_read, "rows_staged": staged, "rows_quarantined": quarantined},
            description=None if reconciled else
            f"rows read {result.rows_read} != staged {staged} + quarantined {quarantined}",
        )

    return stage


# ----------------------------------------------------------------------------------------------
# Sensor


def build_sensor(ds: Dataset, job, partitions: dg.DynamicPartitionsDefinition) -> dg.SensorDefinition:
    landing_key, _, _ = keys(ds)
    landing_op = "__".join(landing_key.path)

    @dg.sensor(
        name=f"{ds.id}__ingress",
        job=job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts one ingest run per new file in ingress/{ds.insight_zone}/{ds.name}/.",
    )
    def ingress_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
        env = platform.env()
        fs, directory = platform.ingress_fs(ds.insight_zone, ds.name)
        plan = plan_tick(
            list_files(fs, directory),
            Cursor.load(context.cursor),
            now_ns=time.time_ns(),
            settle_seconds=env.sensors.settle_seconds,
            max_files=env.sensors.max_files_per_tick,
            pattern=ds.spec.source.pattern,
            known_keys=context.instance.get_dynamic_partitions(partitions.name),
            hash_file=lambda f: sha256_of(fs, f.path),
        )
        for line in plan.log_lines(f"ingress/{ds.insight_zone}/{ds.name}"):
            context.log.info(line)
        ingress_root = platform.ingress_dir(ds.insight_zone, ds.name)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"{ds.id}:{r.sha256}",
                    partition_key=r.partition_key,
                    run_config=dg.RunConfig(
                        ops={landing_op: LandingConfig(ingress_path=f"{ingress_root}/{r.file.name}")}
                    ),
                    tags={"platform/source_file": r.file.name, "platform/sha256": r.sha256,
                          "platform/dataset": f"{ds.insight_zone}.{ds.name}"},
                )
                for r in plan.requests
            ],
            dynamic_partitions_requests=[
                partitions.build_add_request([r.partition_key for r in plan.requests])
            ] if plan.requests else [],
            cursor=plan.cursor.dump(),
        )

    return ingress_sensor


def build_dataset(ds: Dataset) -> DatasetDefs:
    partitions = dg.DynamicPartitionsDefinition(name=f"{ds.id}__files")
    landing = build_landing(ds, partitions)
    staging = build_staging(ds, partitions)
    landing_key, staging_key, quarantine_key = keys(ds)
    job = dg.define_asset_job(
        name=f"ingest__{ds.id}",
        selection=dg.AssetSelection.assets(landing_key, staging_key, quarantine_key),
        description=f"Land one delivered {ds.name} file and stage it through its contract.",
    )
    sensor = build_sensor(ds, job, partitions)
    return DatasetDefs(ds, landing, staging, job, sensor, partitions)

