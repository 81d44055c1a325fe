"""Staging engines: landed file in, typed staging rows and quarantined rows out (see engine.base).

``engine_for(dataset)`` picks the engine a dataset declares; the Arrow engine is the default.
Nothing here imports Dagster: the Dagster layer (``assets/``) calls an engine and reports what it
returned.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

from core.zones import Dataset
from engine.base import FileIO, StagingEngine, StagingRequest, StagingResult

__all__ = ["FileIO", "LocalFiles", "StagingEngine", "StagingRequest", "StagingResult", "engine_for",
           "stage_local_file"]


def engine_for(dataset: Dataset, spark_jobs: Callable[[], object] | None = None) -> StagingEngine:
    """The engine the dataset declares. ``spark_jobs`` makes the launcher the Spark engine runs its
    job with (the environment's, through Dagster Pipes); called only for a Spark dataset."""
    if dataset.spec.engine == "spark":
        from engine.spark import SparkEngine

        return SparkEngine(spark_jobs() if spark_jobs else None)  # type: ignore[arg-type]
    from engine.arrow import ArrowEngine

    return ArrowEngine()


class LocalFiles:
    """FileIO over plain local paths (benchmarks, tools and tests)."""

    def open_input(self, uri: str) -> BinaryIO:
        return open(uri, "rb")  # noqa: SIM115 - the engine closes it

    def open_output(self, uri: str) -> BinaryIO:
        return open(uri, "wb")  # noqa: SIM115

    def delete(self, uri: str) -> None:
        os.remove(uri)


def stage_local_file(dataset: Dataset, path: str | os.PathLike, staging_path: str,
                     quarantine_path: str) -> StagingResult:
    """Stage a local file into two local Parquet files (benchmarks and tools). When the contract
    has a unique key and duplicates were found, the staged rows are moved to ``staging_path``."""
    result = engine_for(dataset).stage(
        StagingRequest(source_uri=str(path), source_name=os.path.basename(path), contract=dataset.contract,
                       csv=dataset.spec.source.csv, staging_uri=staging_path, quarantine_uri=quarantine_path),
        LocalFiles(),
    )
    if result.staging_uri and result.staging_uri != staging_path:
        os.replace(result.staging_uri, staging_path)
        result.staging_uri = staging_path
    return result
