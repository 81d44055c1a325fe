"""``PlatformResource``: the Dagster resource through which assets and sensors reach the
environment's lake storage, ingress area and catalog.

The environment is resolved when a run or tick first asks for it (see resources.environment),
so loading definitions never reads the process environment or touches the network.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.catalog import DuckDBCatalog
from resources.environment import Environment, load_environment, resolve
from resources.lake import LakeStorage, filesystem_for


class PlatformResource(dg.ConfigurableResource):
    environment: str | None = Field(
        default=None, description="Environment name; default: $PLATFORM_ENV, else 'local'."
    )
    home: str | None = Field(
        default=None, description="PLATFORM_HOME for the local environment; default: $PLATFORM_HOME, else .platform/."
    )

    def location(self) -> tuple[str, Path]:
        """(environment name, PLATFORM_HOME)."""
        return resolve(self.environment, self.home)

    @contextlib.contextmanager
    def environment_variables(self, **extra: str) -> Iterator[None]:
        """Export the resolved environment (and ``extra``) to subprocesses; dbt reads it."""
        name, home = self.location()
        values = {"PLATFORM_ENV": name, "PLATFORM_HOME": str(home), **extra}
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def env(self) -> Environment:
        name, home = resolve(self.environment, self.home)
        return load_environment(name, str(home))

    def lake(self) -> LakeStorage:
        return LakeStorage(dict(self.env().lake.zones))

    def catalog(self) -> DuckDBCatalog:
        cfg = self.env().catalog
        if cfg.kind != "duckdb":
            raise NotImplementedError(
                f"environment {self.env().name!r}: the {cfg.kind} catalog is not wired yet "
                "(the AWS wiring is a later issue); use the local environment"
            )
        assert cfg.path
        return DuckDBCatalog(cfg.path)

    def serving(self):  # -> resources.serving.ServingDatabase
        from resources.serving import ServingDatabase

        name, home = self.location()
        if name != "local":
            raise NotImplementedError(
                f"environment {name!r}: Aurora (credentials from Secrets Manager) is wired in the AWS issue; "
                "use the local environment"
            )
        return ServingDatabase.local(home)

    def ingress_dir(self, insight_zone: str, dataset: str) -> str:
        return "/".join([self.env().ingress.root.rstrip("/"), insight_zone, dataset])

    def ingress_fs(self, insight_zone: str, dataset: str):  # -> (FileSystem, path)
        return filesystem_for(self.ingress_dir(insight_zone, dataset))
