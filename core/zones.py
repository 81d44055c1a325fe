"""Insight-zone declarations: ``platform/zones/<insight_zone>.yaml``.

A zone file declares owners and datasets; each dataset declares its source files, its contract,
how a re-delivery under the same name is treated, and its freshness SLO. Adding a dataset is a
YAML change.
"""

from __future__ import annotations

import codecs
import fnmatch
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from core.contract_spec import ContractSpec
from core.names import NAME
from core.paths import ZONES_DIR
from core.yaml_config import ConfigError, Strict, load_model

if TYPE_CHECKING:
    from checks.contract import CompiledContract

__all__ = ["ZONES_DIR", "CsvOptions", "Dataset", "DatasetSpec", "InsightZone", "ZoneSpec", "all_datasets",
           "load_zone", "load_zones"]

OWNER = re.compile(r"^(team:[A-Za-z0-9_.-]+|[^@\s]+@[^@\s]+\.[^@\s]+)$")
_ASCII_PROBE = "\r\n,;|\t\"'abcAZ09 "


class CsvOptions(Strict):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    null_values: list[str] = [""]  # matched on quoted values too: an empty field, quoted or not, is null

    @model_validator(mode="after")
    def _readable(self) -> CsvOptions:
        try:
            codec = codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {self.encoding!r}") from None
        # Record boundaries are found in the raw bytes, so the encoding must spell line ends,
        # delimiters and quotes as ASCII does (UTF-8, Latin-1, Windows-1252, ...; not UTF-16).
        encoded = _ASCII_PROBE.encode(codec.name, errors="replace").removeprefix(codecs.BOM_UTF8)
        if encoded != _ASCII_PROBE.encode("ascii"):
            raise ValueError(f"encoding {self.encoding!r} is not ASCII-compatible; deliver UTF-8 or a single-byte "
                             "encoding such as latin-1 or cp1252")
        for ch, what in ((self.delimiter, "delimiter"), (self.quote_char, "quote_char")):
            if ch in "\r\n" or ord(ch) > 127:
                raise ValueError(f"{what} {ch!r} must be a single ASCII character other than a line break")
        if self.delimiter == self.quote_char:
            raise ValueError("delimiter and quote_char must differ")
        return self


class SourceSpec(Strict):
    pattern: str = "*.csv"  # shell-style pattern on the delivered file's name
    format: Literal["csv"] = "csv"
    csv: CsvOptions = CsvOptions()

    def matches(self, file_name: str) -> bool:
        return fnmatch.fnmatchcase(file_name, self.pattern)


class FreshnessSpec(Strict):
    # A new file is expected at least this often; older data is stale.
    max_lag_hours: float = Field(gt=0)


class DatasetSpec(Strict):
    description: str = ""
    source: SourceSpec = SourceSpec()
    contract: ContractSpec
    freshness: FreshnessSpec | None = None
    # A file delivered again under the same name, with other bytes: by default it supersedes the
    # earlier delivery downstream (a corrected export). `append` keeps both, for sources whose
    # file names legitimately repeat with new content.
    redelivery: Literal["supersede", "append"] = "supersede"
    engine: Literal["arrow"] = "arrow"  # the staging engine (Spark comes as a second one)


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

    @field_validator("datasets", "serving")
    @classmethod
    def _names(cls, v: dict) -> dict:
        for name in v:
            if not NAME.match(name):
                raise ValueError(f"name {name!r} must match {NAME.pattern}")
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

    @property
    def label(self) -> str:
        """How messages name the dataset: ``mobility.yellow_trips``."""
        return f"{self.insight_zone}.{self.name}"

    @cached_property
    def contract(self) -> CompiledContract:
        from checks.contract import compile_contract  # compilation is the checks' concern

        return compile_contract(self.label, self.spec.contract)


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
