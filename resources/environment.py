"""The one place that resolves the environment.

``PLATFORM_ENV`` picks ``platform/environments/<env>.yaml`` (default ``local``); ``PLATFORM_HOME``
is the root of the embedded default (default ``<repo>/.platform``). Both are read when a run or
sensor tick needs them, never at import time, so definitions load fast and offline.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from resources.yaml_config import ConfigError, Strict, load_model

REPO_ROOT = Path(__file__).resolve().parent.parent
PLATFORM_DIR = REPO_ROOT / "platform"
ENVIRONMENTS_DIR = PLATFORM_DIR / "environments"
DEFAULT_ENV = "local"
LAKE_ZONES = ("landing", "staging", "quarantine")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class LakeConfig(Strict):
    # One URI per zone: a local path or s3://bucket/prefix. One bucket per zone in AWS so that
    # access (e.g. landing not readable by analysts) is granted per bucket.
    zones: dict[Literal["landing", "staging", "quarantine"], str]
    kms_key_id: str | None = None
    region: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> LakeConfig:
        missing = [z for z in LAKE_ZONES if z not in self.zones]
        if missing:
            raise ValueError(f"lake.zones is missing {', '.join(missing)}")
        if any(u.startswith("s3://") for u in self.zones.values()) and not self.kms_key_id:
            raise ValueError("an S3 lake needs kms_key_id: every S3 write sets SSE-KMS")
        return self


class IngressConfig(Strict):
    root: str


class CatalogConfig(Strict):
    kind: Literal["duckdb", "glue"]
    path: str | None = None  # duckdb
    database_prefix: str | None = None  # glue: databases are <prefix><zone>_<insight_zone>

    @model_validator(mode="after")
    def _kind_fields(self) -> CatalogConfig:
        if self.kind == "duckdb" and not self.path:
            raise ValueError("a duckdb catalog needs path")
        if self.kind == "glue" and not self.database_prefix:
            raise ValueError("a glue catalog needs database_prefix")
        return self


class SensorConfig(Strict):
    # A file is picked up once its size and mtime have not changed for this long.
    settle_seconds: float = Field(default=2.0, ge=0)
    max_files_per_tick: int = Field(default=500, ge=1)


class Environment(Strict):
    name: str
    description: str = ""
    ingress: IngressConfig
    lake: LakeConfig
    catalog: CatalogConfig
    sensors: SensorConfig = SensorConfig()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"environment name {v!r} must match {_NAME.pattern}")
        return v

    def locations(self) -> set[str]:
        """Buckets / roots / databases this environment writes to (for cross-env checks)."""
        out = {_bucket(self.ingress.root)} | {_bucket(u) for u in self.lake.zones.values()}
        if self.catalog.kind == "duckdb":
            out.add(str(self.catalog.path))
        else:
            out.add(f"glue:{self.catalog.database_prefix}")
        return out


def _bucket(uri: str) -> str:
    if uri.startswith("s3://"):
        return "s3://" + uri[5:].split("/", 1)[0]
    return uri


def default_home() -> Path:
    return REPO_ROOT / ".platform"


def resolve(environment: str | None = None, home: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Return (environment name, PLATFORM_HOME), from arguments, else the process environment."""
    env = environment or os.environ.get("PLATFORM_ENV") or DEFAULT_ENV
    h = home or os.environ.get("PLATFORM_HOME") or default_home()
    return env, Path(h).expanduser().resolve()


def _load_file(path: Path, home: Path) -> Environment:
    # The file name is the environment's name; a `name:` key, if present, may not contradict it.
    env = load_model(path, Environment, substitutions={"PLATFORM_HOME": str(home)}, defaults={"name": path.stem})
    if env.name != path.stem:
        raise ConfigError(f"{path}: name {env.name!r} does not match the file name {path.stem!r}")
    return env


def available_environments(directory: Path = ENVIRONMENTS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


@lru_cache(maxsize=16)
def load_environment(
    name: str | None = None, home: str | None = None, directory: str | None = None
) -> Environment:
    """Load and validate one environment; every other environment file is validated too, and
    an environment that shares a bucket, root or database with another one is rejected."""
    env_name, home_path = resolve(name, home)
    d = Path(directory) if directory else ENVIRONMENTS_DIR
    path = d / f"{env_name}.yaml"
    if not path.exists():
        known = ", ".join(available_environments(d)) or "none"
        raise ConfigError(f"unknown environment {env_name!r}: no {path} (known: {known})")
    envs = {p.stem: _load_file(p, home_path) for p in sorted(d.glob("*.yaml"))}
    target = envs[env_name]
    for other_name, other in envs.items():
        if other_name == env_name:
            continue
        shared = target.locations() & other.locations()
        if shared:
            raise ConfigError(
                f"{path}: environment {env_name!r} points at {', '.join(sorted(shared))}, "
                f"which belongs to environment {other_name!r}"
            )
    return target
