"""Shared helpers for the tests: real local resources, a real (ephemeral or temporary) Dagster
instance, and the code location loaded by path exactly as workspace.yaml loads it."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dagster as dg
import duckdb

from assets.ingest import DatasetDefs, LandingConfig, build_dataset
from core.names import partition_key
from core.zones import Dataset, all_datasets
from resources.platform import PlatformResource

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
SHARED_DATA = REPO.parent / "shared" / "data" / "nyc_tlc"


@cache
def load_definitions_module():
    """platform/definitions.py, loaded by path (platform/ is not a package)."""
    spec = importlib.util.spec_from_file_location("lake_platform_definitions", REPO / "platform" / "definitions.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def requested(instance: dg.DagsterInstance, cursor: str | None = None) -> tuple[set[dg.AssetKey], str]:
    """One automation tick against ``instance``: the asset keys it would request, and its cursor."""
    defs = load_definitions_module().defs
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    return {r.key for r in result.results if r.true_subset.size}, result.cursor


def dataset_defs(dataset: str | Dataset) -> DatasetDefs:
    """A declared dataset's definitions (``<insight_zone>__<dataset>``, e.g. ``mobility__yellow_trips``),
    or those of a Dataset built by the test."""
    ds = dataset if isinstance(dataset, Dataset) else {d.id: d for d in all_datasets()}[dataset]
    return build_dataset(ds)


@dataclass
class Ingested:
    result: dg.ExecuteInProcessResult
    partition_key: str
    ingress_file: Path

    @property
    def success(self) -> bool:
        return self.result.success

    def checks(self) -> dict[str, dg.AssetCheckEvaluation]:
        return {e.check_name: e for e in self.result.get_asset_check_evaluations()}

    def materializations(self) -> dict[str, dg.AssetMaterialization]:
        out = {}
        for ev in self.result.get_asset_materialization_events():
            m = ev.event_specific_data.materialization
            out[m.asset_key.path[0]] = m
        return out

    def failure_message(self) -> str:
        """The step failure's message with the messages of its causes."""
        for ev in self.result.all_events:
            if ev.event_type_value == "STEP_FAILURE":
                parts, err = [], ev.event_specific_data.error
                while err is not None:
                    parts.append(err.message)
                    err = err.cause
                return "\n".join(parts)
        return ""


def drop_into_ingress(home: Path, dataset_id: str, source: Path | bytes, name: str | None = None) -> Path:
    zone, dataset = dataset_id.split("__", 1)
    target_dir = home / "ingress" / zone / dataset
    target_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        assert name, "name is required for bytes"
        target = target_dir / name
        target.write_bytes(source)
    else:
        target = target_dir / (name or source.name)
        shutil.copyfile(source, target)
    return target


def ingest(
    home: Path,
    dataset: str | Dataset,
    source: Path | bytes,
    name: str | None = None,
    instance: dg.DagsterInstance | None = None,
    extra_assets: list | None = None,
    delivered_at_ns: int | None = None,
) -> Ingested:
    """Drop a file into ingress and materialise its landing + staging partition in process,
    as the sensor's run would. ``extra_assets`` are materialised in the same run (downstream)."""
    defs = dataset_defs(dataset)
    path = drop_into_ingress(home, defs.dataset.id, source, name)
    key = partition_key(path.name, hashlib.sha256(path.read_bytes()).hexdigest())
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(defs.partitions.name, [key])
    result = dg.materialize(
        [defs.assets, *(extra_assets or [])],
        partition_key=key,
        instance=instance,
        resources={"platform": PlatformResource(environment="local", home=str(home))},
        run_config=defs.run_config(LandingConfig(
            ingress_file=path.name, delivered_at_ns=delivered_at_ns or path.stat().st_mtime_ns)),
        raise_on_error=False,
    )
    return Ingested(result, key, path)


def query(home: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Query the catalog as a user would: a separate, read-only DuckDB connection."""
    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def lake_files(home: Path, zone: str) -> list[Path]:
    root = home / "lake" / zone
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def catalog_states(home: Path, dataset: str) -> dict[str, str]:
    """Partition key → its state in the catalog (published, held, superseded)."""
    sql = "select partition_key, state from meta.partitions where insight_zone || '__' || dataset = ?"
    return dict(query(home, sql, [dataset]))


def view_files(home: Path, table: str) -> set[Path]:
    """The Parquet files a catalog view reads (``staging_mobility.yellow_trips``)."""
    schema, view = table.split(".")
    [(sql,)] = query(home, "select sql from duckdb_views() where schema_name = ? and view_name = ?", [schema, view])
    return {Path(p) for p in re.findall(r"'([^']+\.parquet)'", sql)}


def published_file(ing: Ingested, zone: str) -> Path:
    """The file a run published for its partition in ``zone`` (staging or quarantine)."""
    return Path(str(ing.materializations()[zone].metadata["dagster/uri"].value))


def execute_request(defs: DatasetDefs, req: dg.RunRequest, instance: dg.DagsterInstance,
                    platform: PlatformResource, raise_on_error: bool = False) -> dg.ExecuteInProcessResult:
    """Run a sensor's ingest request in process as the daemon would: one partition, or a range
    of them (several files in one run)."""
    cfg = req.run_config["ops"][defs.op_name]["config"]
    ranged = {k: v for k, v in req.tags.items() if k.startswith("dagster/asset_partition_range_")}
    return dg.materialize([defs.assets], partition_key=req.partition_key, instance=instance, tags=ranged or None,
                          resources={"platform": platform}, raise_on_error=raise_on_error,
                          run_config=defs.run_config(LandingConfig(**cfg)))


def file_verdicts(instance: dg.DagsterInstance, defs: DatasetDefs, check: str = "contract") -> dict[str, bool]:
    """Partition → whether its latest ``check`` passed, from the check-execution index (what the
    UI and the alerting sensor read)."""
    staging = next(k for k in defs.assets.keys if k.path[0] == "staging")
    out: dict[str, bool] = {}
    history = instance.event_log_storage.get_asset_check_execution_history(dg.AssetCheckKey(staging, check), limit=1000)
    for rec in history:
        if rec.partition is not None and rec.partition not in out and rec.status.value in ("SUCCEEDED", "FAILED"):
            out[rec.partition] = rec.status.value == "SUCCEEDED"
    return out


def request_files(req: dg.RunRequest) -> list[str]:
    """The delivered files an ingest run request names: one (its tag), or a batch (its config)."""
    if "platform/source_file" in req.tags:
        return [req.tags["platform/source_file"]]
    ops = (req.run_config or {}).get("ops", {})
    return [f["ingress_file"] for op in ops.values() for f in (op.get("config") or {}).get("batch") or []]
