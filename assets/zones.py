"""Insight-zone declarations: ``platform/zones/<insight_zone>.yaml``.

A zone file declares owners and datasets; each dataset declares its source files, its contract
and its freshness SLO. Adding a dataset is a YAML change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from checks.contract import CompiledContract, ContractSpec, compile_contract
from resources.environment import PLATFORM_DIR
from resources.yaml_config import ConfigError, Strict, load_model

ZONES_DIR = PLATFORM_DIR / "zones"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
OWNER = re.compile(r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")


class CsvOptions(Strict):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    null_values: list[str] = [""]


class SourceSpec(Strict):
    pattern: str = "*.csv"  # shell-style pattern on the delivered file's name
    format: Literal["csv"] = "csv"
    csv: CsvOptions = CsvOptions()


class FreshnessSpec(Strict):
    # A new file is expected at least this often; older data is stale.
    max_lag_hours: float = Field(gt=0)


class DatasetSpec(Strict):
    description: str = ""
    source: SourceSpec = SourceSpec()
    contract: ContractSpec
    freshness: FreshnessSpec | None = None


class ServingSpec(Strict):
    # A mart exported to the serving database (PostgreSQL locally, Aurora in AWS), upserted on key.
    key: list[str] = Field(min_length=1)
    description: str = ""


class ZoneSpec(Strict):
    description: str = ""
    owners: list[str] = Field(min_length=1)
    datasets: dict[str, DatasetSpec] = Field(min_length=1)
    serving: dict[str, ServingSpec] = {}  # analytics model name → how it is served

    @field_validator("owners")
    @classmethod
    def _owners(cls, v: list[str]) -> list[str]:
        for o in v:
            if not OWNER.match(o):
                raise ValueError(f"owner {o!r} must be an email address or team:<name>")
        return v

    @field_validator("datasets")
    @classmethod
    def _dataset_names(cls, v: dict[str, DatasetSpec]) -> dict[str, DatasetSpec]:
        for name in v:
            if not NAME.match(name):
                raise ValueError(f"dataset name {name!r} must match {NAME.pattern}")
        return v


@dataclass(frozen=True)
class Dataset:
    insight_zone: str
    name: str
    spec: DatasetSpec
    owners: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.insight_zone}__{self.name}"

    @cached_property
    def contract(self) -> CompiledContract:
        return compile_contract(f"{self.insight_zone}.{self.name}", self.spec.contract)


@dataclass(frozen=True)
class InsightZone:
    name: str
    spec: ZoneSpec
    path: Path

    @property
    def datasets(self) -> list[Dataset]:
        return [Dataset(self.name, n, d, tuple(self.spec.owners)) for n, d in self.spec.datasets.items()]


def load_zone(path: Path) -> InsightZone:
    if not NAME.match(path.stem):
        raise ConfigError(f"{path}: insight zone file name must match {NAME.pattern}")
    return InsightZone(path.stem, load_model(path, ZoneSpec), path)


@lru_cache(maxsize=4)
def load_zones(directory: Path = ZONES_DIR) -> tuple[InsightZone, ...]:
    files = sorted(Path(directory).glob("*.yaml"))
    if not files:
        raise ConfigError(f"{directory}: no insight zone declarations (*.yaml)")
    return tuple(load_zone(p) for p in files)


def all_datasets(directory: Path = ZONES_DIR) -> list[Dataset]:
    return [d for z in load_zones(directory) for d in z.datasets]
