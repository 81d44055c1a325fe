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


def _is_time_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(name)
    except Exception:  # ValueError, ZoneInfoNotFoundError, or a path-like name
        return False
    return True


class ArrivalFreshness(Strict):
    """When a new file is due: ``every_hours`` (a time window since the last published delivery)
    or ``deadline_cron`` (by each cron tick, in ``timezone``, a delivery within the ``window_hours``
    before it). Evaluated by Dagster's freshness daemon from materialisations, per asset."""

    every_hours: float | None = Field(default=None, gt=0)
    warn_after_hours: float | None = Field(default=None, gt=0)  # every_hours only: WARN before FAIL
    deadline_cron: str | None = None
    timezone: str = "UTC"
    window_hours: float | None = Field(default=None, gt=0)  # deadline_cron only; default: the cron's interval

    @model_validator(mode="after")
    def _one_kind(self) -> ArrivalFreshness:
        if (self.every_hours is None) == (self.deadline_cron is None):
            raise ValueError("declare exactly one of every_hours or deadline_cron")
        if self.every_hours is not None:
            if self.window_hours is not None or self.timezone != "UTC":
                raise ValueError("window_hours and timezone apply to deadline_cron only")
            if self.warn_after_hours is not None and self.warn_after_hours >= self.every_hours:
                raise ValueError("warn_after_hours must be less than every_hours")
        elif self.warn_after_hours is not None:
            raise ValueError("warn_after_hours applies to every_hours only")
        if self.every_hours is not None and self.every_hours * 60 < 1:
            raise ValueError("every_hours is under a minute, which Dagster cannot evaluate")
        if not _is_time_zone(self.timezone):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA time zone (e.g. Europe/Zurich)")
        return self


class DataFreshness(Strict):
    """A rule on an event-time column, evaluated with the contract against the file's arrival:
    rows whose event time is later than arrival + ``future_tolerance_minutes`` are quarantined
    (rule ``not_after_arrival``), and a delivery whose newest event time is more than
    ``max_age_hours`` before its arrival fails the ``data_freshness`` check (a file of last year's
    data delivered today)."""

    event_time: str  # a timestamp column of the contract
    timezone: str = "UTC"  # the zone the event time's wall-clock values are in
    max_age_hours: float | None = Field(default=None, gt=0)
    future_tolerance_minutes: float | None = Field(default=None, ge=0)
    # error: a stale delivery is held (a blocking check); warn: it is published, the check warns.
    severity: Literal["error", "warn"] = "error"

    @model_validator(mode="after")
    def _something(self) -> DataFreshness:
        if self.max_age_hours is None and self.future_tolerance_minutes is None:
            raise ValueError("declare max_age_hours, future_tolerance_minutes or both")
        if not _is_time_zone(self.timezone):
            raise ValueError(f"timezone {self.timezone!r} is not an IANA time zone (e.g. Europe/Zurich)")
        return self


class FreshnessSpec(Strict):
    arrival: ArrivalFreshness | None = None
    data: DataFreshness | None = None


class DatasetSpec(Strict):
    description: str = ""
    source: SourceSpec = SourceSpec()
    contract: ContractSpec
    freshness: FreshnessSpec | None = None
    # A file delivered again under the same name, with other bytes: by default it supersedes the
    # earlier delivery downstream (a corrected export). `append` keeps both, for sources whose
    # file names legitimately repeat with new content.
    redelivery: Literal["supersede", "append"] = "supersede"
    # The staging engine: arrow (one machine, the default) or spark (engine/spark: the same contract
    # and output on Spark, for files one machine cannot take).
    engine: Literal["arrow", "spark"] = "arrow"

    @model_validator(mode="after")
    def _event_time_column(self) -> DatasetSpec:
        data = self.freshness.data if self.freshness else None
        if data is not None:
            col = self.contract.columns.get(data.event_time)
            if col is None or col.type != "timestamp":
                raise ValueError(f"freshness.data.event_time {data.event_time!r} must be a timestamp column of "
                                 "the contract")
        return self


class ServingSpec(Strict):
    # A mart exported to the serving database (PostgreSQL locally, Aurora in AWS), upserted on key.
    key: list[str] = Field(min_length=1)
    description: str = ""


class AlertRoute(Strict):
    """Who hears of the zone's incidents of these severities, on which of the environment's
    channels (``alerts.channels`` in platform/environments/<env>.yaml; none listed: all of them)."""

    to: list[str] = Field(min_length=1)
    severities: list[Literal["ERROR", "WARN"]] = ["ERROR", "WARN"]
    channels: list[str] | None = None

    @field_validator("to")
    @classmethod
    def _recipients(cls, v: list[str]) -> list[str]:
        for o in v:
            if not OWNER.match(o):
                raise ValueError(f"recipient {o!r} must be an email address or team:<name>")
        return v

    @field_validator("channels")
    @classmethod
    def _channel_names(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if not NAME.match(name):
                raise ValueError(f"channel name {name!r} must match {NAME.pattern}")
        return v


class ZoneSpec(Strict):
    description: str = ""
    owners: list[str] = Field(min_length=1)
    datasets: dict[str, DatasetSpec] = Field(min_length=1)
    serving: dict[str, ServingSpec] = {}  # analytics model name → how it is served
    # Routing of the zone's alerts; default: every owner, both severities, every channel. The
    # local alert file and the sensor's log always receive every alert.
    alerts: list[AlertRoute] | None = None

    @property
    def routes(self) -> list[AlertRoute]:
        return self.alerts if self.alerts is not None else [AlertRoute(to=list(self.owners))]

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
