"""Shared helpers for the tests: real local resources, a real (ephemeral or temporary) Dagster
instance, and the code location loaded by path exactly as workspace.yaml loads it."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dagster as dg
import duckdb

from assets.ingest import DatasetDefs, LandingConfig, build_dataset
from assets.sensors import partition_key
from assets.zones import all_datasets
from resources.lake import filesystem_for, sha256_of
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


def dataset_defs(dataset_id: str) -> DatasetDefs:
    """``dataset_id`` is ``<insight_zone>__<dataset>``, e.g. ``mobility__yellow_trips``."""
    ds = {d.id: d for d in all_datasets()}[dataset_id]
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
    zone, dataset = dataset_id.split("__")
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
    dataset_id: str,
    source: Path | bytes,
    name: str | None = None,
    instance: dg.DagsterInstance | None = None,
    extra_assets: list | None = None,
) -> Ingested:
    """Drop a file into ingress and materialise its landing + staging partition in process,
    as the sensor's run would. ``extra_assets`` are materialised in the same run (downstream)."""
    defs = dataset_defs(dataset_id)
    path = drop_into_ingress(home, dataset_id, source, name)
    fs, p = filesystem_for(str(path))
    key = partition_key(path.name, sha256_of(fs, p))
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(defs.partitions.name, [key])
    landing_op = "__".join(defs.landing.key.path)
    result = dg.materialize(
        [defs.landing, defs.staging, *(extra_assets or [])],
        partition_key=key,
        instance=instance,
        resources={"platform": PlatformResource(environment="local", home=str(home))},
        run_config=dg.RunConfig(ops={landing_op: LandingConfig(ingress_path=str(path))}),
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
