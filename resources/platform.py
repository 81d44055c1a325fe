"""``PlatformResource``: the Dagster resource through which assets and sensors reach the
environment's systems, and the one place that chooses each system's backend from the environment.

The environment is resolved when a run or tick first asks for it (see resources.environment), so
loading definitions never reads the process environment or touches the network. Nothing outside
this module knows which backend is in use: asset code asks for ``lake()``, ``ingress()``,
``catalog()``, ``warehouse()`` or ``serving()`` and gets the typed interface.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import dagster as dg
from pydantic import Field, SecretStr

from core.errors import ConfigError, NotAvailable, SecretMissing
from core.names import LAKE_ZONES
from core.process_env import environ
from resources.alerts.base import AlertChannel
from resources.aws import AwsSession
from resources.catalog.base import Catalog
from resources.environment import Environment, load_environment, resolve
from resources.ingress_events.base import IngressEvents
from resources.lake.base import FileStore, Lake
from resources.secrets import SecretStore
from resources.serving.postgres import ServingDatabase
from resources.warehouse.base import Warehouse


def _aws(env: Environment) -> AwsSession:
    if env.aws is None:
        raise NotAvailable(f"environment {env.name!r} declares no aws section (region, account_id, resource_prefix)")
    # The endpoint is part of the key: clients keep the endpoint they were made with, so a process
    # that switches endpoints (tests with several stand-ins) must not reuse them.
    return _session(env.aws.region, env.aws.platform_role_arn, os.environ.get("AWS_ENDPOINT_URL"),
                    os.environ.get("AWS_CA_BUNDLE"))


@lru_cache(maxsize=8)
def _session(region: str, role_arn: str | None, endpoint: str | None, ca_bundle: str | None) -> AwsSession:
    # One session (and its clients, connection pools and assumed-role credentials) per process.
    return AwsSession(region, role_arn)


def _store(env: Environment, uri: str, what: str) -> FileStore:
    if uri.startswith("s3://"):
        from resources.lake.s3 import S3Store

        assert env.lake.kms_key_id  # validated: an S3 lake has a key
        return S3Store(uri, _aws(env), env.lake.kms_key_id)
    if "://" in uri:
        raise NotAvailable(f"{what}: no storage backend for {uri}")
    from resources.lake.local import LocalStore

    return LocalStore(uri)


class PlatformResource(dg.ConfigurableResource):
    environment: str | None = Field(
        default=None, description="Environment name; default: $PLATFORM_ENV, else 'local'."
    )
    home: str | None = Field(
        default=None, description="PLATFORM_HOME for the local environment; default: $PLATFORM_HOME, else .platform/."
    )

    # The one stand-in seam of the AWS path: offline, the Redshift warehouse is a PostgreSQL, which
    # cannot run `COPY ... FROM 's3://...'`; "postgres_stdin" streams the staged object instead
    # (resources.warehouse.redshift.PostgresStdinCopy). Everything around the COPY is unchanged.
    warehouse_copy: str | None = Field(
        default=None, description="How staged files are copied into the warehouse; default: "
        "$PLATFORM_WAREHOUSE_COPY, else redshift (postgres_stdin: the offline stand-in only).")

    def location(self) -> tuple[str, Path]:
        """(environment name, PLATFORM_HOME)."""
        return resolve(self.environment, self.home)

    def env(self) -> Environment:
        name, home = self.location()
        return load_environment(name, str(home))

    @contextlib.contextmanager
    def environment_variables(self, **extra: str) -> Iterator[None]:
        """Export the resolved environment (and ``extra``) to subprocesses; dbt reads it."""
        name, home = self.location()
        with environ({"PLATFORM_ENV": name, "PLATFORM_HOME": str(home), **extra}):
            yield

    # -- the systems ----------------------------------------------------------------------------
    def lake(self) -> Lake:
        env = self.env()
        return Lake({z: _store(env, env.lake.zones[z], f"the {z} zone") for z in LAKE_ZONES})

    def ingress(self) -> FileStore:
        env = self.env()
        return _store(env, env.ingress.root, "the ingress area")

    def ingress_events(self) -> IngressEvents | None:
        """The announcements of new ingress files, where the environment has them (S3 → SQS)."""
        env = self.env()
        if env.ingress.events is None:
            return None
        from resources.ingress_events.sqs import SqsIngressEvents

        return SqsIngressEvents(_aws(env), env.ingress.events.queue_name, env.ingress.root)

    def catalog(self) -> Catalog:
        env = self.env()
        cfg = env.catalog
        if cfg.kind == "duckdb":
            from resources.catalog.duckdb import DuckDBCatalog

            assert cfg.path
            return DuckDBCatalog(cfg.path, lock_timeout_s=cfg.lock_timeout_seconds)
        import pyarrow.parquet as pq

        from resources.catalog.glue import GlueCatalog

        lake = self.lake()

        def schema_of(uri: str):  # the Parquet footer of a staged file, read through the lake
            with lake.open_input(uri) as f:
                return pq.read_schema(f)

        assert cfg.database_prefix
        return GlueCatalog(_aws(env), cfg.database_prefix, schema_of)

    def warehouse(self) -> Warehouse:
        env = self.env()
        cfg = env.warehouse
        if cfg.kind == "duckdb":
            from resources.catalog.duckdb import DuckDBCatalog
            from resources.warehouse.duckdb import DuckDBWarehouse

            catalog = self.catalog()
            if not isinstance(catalog, DuckDBCatalog):
                raise NotAvailable("a duckdb warehouse reads the staging tables from a duckdb catalog")
            assert cfg.path
            return DuckDBWarehouse(cfg.path, catalog, cfg.dbt_target, lock_timeout_s=cfg.lock_timeout_seconds)
        from resources.warehouse.redshift import PostgresStdinCopy, RedshiftCopy, RedshiftWarehouse, secret_credentials

        assert cfg.host and cfg.database and cfg.secret_name and cfg.copy_role_arn  # validated
        return RedshiftWarehouse(host=cfg.host, port=cfg.port, database=cfg.database, dbt_target=cfg.dbt_target,
                                 copy_role_arn=cfg.copy_role_arn, ca_bundle=cfg.ca_bundle,
                                 credentials=secret_credentials(self.secrets(), cfg.secret_name),
                                 pii_key=(lambda: self.secrets().get(pii_secret)) if (pii_secret := env.secrets.pii_key)
                                 else None,
                                 copy_runner=RedshiftCopy(cfg.copy_role_arn) if self._copy() == "redshift"
                                 else PostgresStdinCopy(self.lake().open_input))

    def spark_jobs(self, context: dg.AssetExecutionContext):
        """Where a Spark dataset's staging job runs (the environment's ``spark:``), through Dagster
        Pipes with this run's context: ``engine.spark.SparkJobs``."""
        env = self.env()
        cfg = env.spark
        if cfg.kind == "local":
            from resources.spark.local import PipesSubprocessJobs

            s3 = _aws(env).client("s3") if cfg.pipes_bucket else None
            return PipesSubprocessJobs(context, python=cfg.python, s3_client=s3, pipes_bucket=cfg.pipes_bucket)
        from resources.spark.aws import EmrServerlessJobs, GlueJobs

        aws = _aws(env)
        assert cfg.pipes_bucket  # validated
        if cfg.kind == "emr_serverless":
            assert cfg.application_id and cfg.execution_role_arn and cfg.script_uri  # validated
            return EmrServerlessJobs(context, emr=aws.client("emr-serverless"), s3=aws.client("s3"),
                                     application_id=cfg.application_id, execution_role_arn=cfg.execution_role_arn,
                                     script_uri=cfg.script_uri, pipes_bucket=cfg.pipes_bucket,
                                     timeout_minutes=cfg.timeout_minutes)
        assert cfg.job_name  # validated
        return GlueJobs(context, glue=aws.client("glue"), s3=aws.client("s3"), job_name=cfg.job_name,
                        pipes_bucket=cfg.pipes_bucket, timeout_minutes=cfg.timeout_minutes)

    def _copy(self) -> str:
        copy = self.warehouse_copy or os.environ.get("PLATFORM_WAREHOUSE_COPY") or "redshift"
        if copy not in ("redshift", "postgres_stdin"):
            raise ConfigError(f"warehouse copy {copy!r} (PlatformResource.warehouse_copy or PLATFORM_WAREHOUSE_COPY): "
                              "must be redshift or postgres_stdin")
        return copy

    def alert_channels(self) -> list[AlertChannel]:
        """Where alerts go: the local alert file always (under PLATFORM_HOME, so ``make run`` shows
        alerts with no setup), then one channel per entry of the environment's ``alerts.channels``,
        in the file's order. Nothing is connected or read here: a channel reads its secret when it
        first delivers, so a missing one fails that channel (ChannelFailed, retried), not the tick."""
        from resources.alerts import JsonLinesChannel, SmtpChannel, SnsChannel, WebhookChannel

        channels: list[AlertChannel] = [JsonLinesChannel(self.location()[1] / "alerts" / "alerts.jsonl")]
        env = self.env()
        for name, cfg in env.alerts.channels.items():
            if cfg.kind == "smtp":
                assert cfg.host and cfg.sender and cfg.port  # validated
                channels.append(SmtpChannel(name, cfg.host, cfg.port, cfg.sender, username=cfg.username,
                                            password=self._secret(cfg.password_secret, cfg.password_env),
                                            starttls=bool(cfg.starttls), timeout_s=cfg.timeout_seconds or 5.0,
                                            ca_bundle=cfg.ca_bundle))
            elif cfg.kind == "webhook":
                url = self._secret(cfg.url_secret, cfg.url_env)
                assert url is not None  # validated: one of url_secret, url_env
                channels.append(WebhookChannel(name, url, timeout_s=cfg.timeout_seconds or 5.0,
                                               ca_bundle=cfg.ca_bundle))
            else:
                assert cfg.topic_arn  # validated, and only with an aws section
                channels.append(SnsChannel(name, cfg.topic_arn, _aws(env)))
        return channels

    def _secret(self, secret: str | None, variable: str | None) -> Callable[[], SecretStr] | None:
        """How to read a channel's secret when it delivers: from the environment's secret store, or
        from an environment variable of the running process."""
        if secret:
            return lambda: self.secrets().get(secret)
        if variable:
            def from_variable() -> SecretStr:
                value = os.environ.get(variable, "")
                if not value:
                    raise SecretMissing(f"the environment variable {variable} is not set")
                return SecretStr(value)

            return from_variable
        return None

    def ui_url(self) -> str:
        """The Dagster UI's base URL, for links in alerts: $PLATFORM_UI_URL, else make run's address."""
        return (os.environ.get("PLATFORM_UI_URL") or "http://127.0.0.1:3000").rstrip("/")

    def secrets(self) -> SecretStore:
        """Secrets by name: Secrets Manager in an AWS environment, the process environment locally
        (``PLATFORM_SECRET_<NAME>``)."""
        env = self.env()
        if env.aws is not None:
            from resources.secrets import AwsSecretStore

            return AwsSecretStore(_aws(env))
        from resources.secrets import LocalSecretStore

        return LocalSecretStore()

    def serving(self) -> ServingDatabase:
        cfg = self.env().serving
        if cfg.kind == "embedded_postgres":
            from resources.serving.embedded import start

            assert cfg.data_dir
            return start(Path(cfg.data_dir).expanduser().resolve())
        from resources.serving.aurora import from_config

        return from_config(cfg, self.secrets())  # credentials fetched now, at run time, never stored
