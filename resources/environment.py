"""Environment declarations (``platform/environments/<env>.yaml``) and the one place that resolves
which environment a run is in.

``PLATFORM_ENV`` picks the file (default ``local``); ``PLATFORM_HOME`` is the root of the embedded
default (default ``<repo>/.platform``); ``PLATFORM_ENVIRONMENTS_DIR`` may point at another folder
of environment files (default ``platform/environments``). They are read when a run or sensor
tick needs them, never when definitions load, so definitions load fast and offline.

At run time only the selected environment is validated: a typo in ``prod.yaml`` does not stop a
local run. The others are only read for the locations they claim, so that an environment that
points at another one's buckets or databases is refused. ``python -m cli validate`` (and the
tests) validate every file.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from core.names import (
    AWS_ACCOUNT,
    AWS_REGION,
    ENV_NAME,
    HOSTNAME,
    IDENT,
    KMS_ALIAS,
    LAKE_ZONES,
    NAME,
    RESOURCE_PREFIX,
    ROLE_ARN,
    S3_BUCKET,
    S3_PREFIX,
    SECRET_NAME,
    SQS_QUEUE_NAME,
)
from core.paths import ENVIRONMENTS_DIR, REPO_ROOT
from core.yaml_config import ConfigError, Strict, load_model

__all__ = ["DEFAULT_ENV", "ENVIRONMENTS_DIR", "RESERVED_CHANNELS", "AlertChannelConfig", "AlertsConfig", "AwsConfig",
           "Environment", "SensorConfig", "available_environments", "default_home", "load_environment", "resolve",
           "split_s3_uri", "validate_all"]

DEFAULT_ENV = "local"


def _match(pattern: Any, value: str | None, what: str) -> str | None:
    if value is not None and not pattern.match(value):
        raise ConfigError(f"{what} {value!r} must match {pattern.pattern}")
    return value


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → (``bucket``, ``a/b``), both validated."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    _match(S3_BUCKET, bucket, "S3 bucket")
    if prefix.strip("/"):
        _match(S3_PREFIX, prefix.strip("/"), f"S3 prefix of {uri}")
    return bucket, prefix.strip("/")


def _check_location(uri: str, what: str) -> str:
    if uri.startswith("s3://"):
        split_s3_uri(uri)
    elif "://" in uri:
        raise ConfigError(f"{what} {uri!r}: only local paths and s3:// URIs are supported")
    return uri


class AwsConfig(Strict):
    """The AWS account an environment lives in. Credentials are never declared: the default
    credential chain provides them (instance/task role, SSO, profile), optionally assuming
    ``platform_role_arn``."""

    region: str
    account_id: str
    # Prefix of the names of everything the environment's stack creates (roles, key alias, secrets).
    resource_prefix: str
    platform_role_arn: str | None = None

    @model_validator(mode="after")
    def _patterns(self) -> AwsConfig:
        _match(AWS_REGION, self.region, "aws.region")
        _match(AWS_ACCOUNT, self.account_id, "aws.account_id")
        _match(RESOURCE_PREFIX, self.resource_prefix, "aws.resource_prefix")
        _match(ROLE_ARN, self.platform_role_arn, "aws.platform_role_arn")
        if self.platform_role_arn and f":{self.account_id}:" not in self.platform_role_arn:
            raise ValueError(f"aws.platform_role_arn {self.platform_role_arn!r} is not in account {self.account_id}")
        return self


class LakeConfig(Strict):
    # One URI per zone: a local path or s3://bucket/prefix. One bucket per zone in AWS so that
    # access (e.g. landing not readable by analysts) is granted per bucket.
    zones: dict[Literal["landing", "staging", "quarantine"], str]
    # The environment's KMS key (an alias): every S3 write sets SSE-KMS with it.
    kms_key_id: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> LakeConfig:
        missing = [z for z in LAKE_ZONES if z not in self.zones]
        if missing:
            raise ValueError(f"lake.zones is missing {', '.join(missing)}")
        for zone, uri in self.zones.items():
            _check_location(uri, f"lake.zones.{zone}")
        s3 = [u.startswith("s3://") for u in self.zones.values()]
        if any(s3) and not all(s3):
            raise ValueError("lake.zones: either every zone is on S3 or none is")
        if all(s3):
            if not self.kms_key_id:
                raise ValueError("an S3 lake needs kms_key_id: every S3 write sets SSE-KMS")
            _match(KMS_ALIAS, self.kms_key_id, "lake.kms_key_id")
            buckets = [split_s3_uri(u)[0] for u in self.zones.values()]
            if len(set(buckets)) != len(buckets):
                raise ValueError("lake.zones: one bucket per zone (access is granted per bucket)")
        return self

    @property
    def kind(self) -> str:
        return "s3" if any(u.startswith("s3://") for u in self.zones.values()) else "local"


class IngressEventsConfig(Strict):
    """S3 event notifications of the ingress bucket, through an SQS queue the environment's stack
    creates (``ObjectCreated`` under the ingress prefix). The ingress sensors then list ingress only
    every ``sensors.sweep_seconds``, to catch what a lost notification would have announced."""

    queue_name: str

    @model_validator(mode="after")
    def _patterns(self) -> IngressEventsConfig:
        _match(SQS_QUEUE_NAME, self.queue_name, "ingress.events.queue_name")
        return self


class IngressConfig(Strict):
    root: str
    events: IngressEventsConfig | None = None

    @field_validator("root")
    @classmethod
    def _location(cls, v: str) -> str:
        return _check_location(v, "ingress.root")

    @model_validator(mode="after")
    def _events_on_s3(self) -> IngressConfig:
        if self.events is not None and not self.root.startswith("s3://"):
            raise ValueError("ingress.events (S3 event notifications) needs an S3 ingress root")
        return self


class CatalogConfig(Strict):
    kind: Literal["duckdb", "glue"]
    path: str | None = None  # duckdb
    lock_timeout_seconds: float = Field(default=30.0, gt=0)  # duckdb: how long to wait for a user's lock
    database_prefix: str | None = None  # glue: databases are <prefix><zone>_<insight_zone>

    @model_validator(mode="after")
    def _kind_fields(self) -> CatalogConfig:
        if self.kind == "duckdb" and not self.path:
            raise ValueError("a duckdb catalog needs path")
        if self.kind == "glue":
            if not self.database_prefix:
                raise ValueError("a glue catalog needs database_prefix")
            if not IDENT.match(self.database_prefix + "staging_x") or not self.database_prefix.endswith("_"):
                raise ValueError(f"catalog.database_prefix {self.database_prefix!r}: lower snake_case ending in _")
        return self


class WarehouseConfig(Strict):
    kind: Literal["duckdb", "redshift"]
    dbt_target: str  # the target in dbt_project/profiles.yml
    path: str | None = None  # duckdb
    lock_timeout_seconds: float = Field(default=30.0, gt=0)
    # redshift: the cluster (or serverless workgroup) endpoint, its database, the secret with the
    # loader's user and password, and the role Redshift assumes to COPY from the staging bucket.
    host: str | None = None
    port: int = Field(default=5439, ge=1, le=65535)
    database: str | None = None
    secret_name: str | None = None
    copy_role_arn: str | None = None
    ca_bundle: str | None = None  # redshift: the CA bundle TLS (verify-full) is checked against

    @model_validator(mode="after")
    def _kind_fields(self) -> WarehouseConfig:
        if self.kind == "duckdb" and not self.path:
            raise ValueError("a duckdb warehouse needs path")
        if self.kind == "redshift":
            missing = [f for f in ("host", "database", "secret_name", "copy_role_arn") if not getattr(self, f)]
            if missing:
                raise ValueError(f"a redshift warehouse needs {', '.join(missing)}")
            _match(HOSTNAME, self.host, "warehouse.host")
            _match(IDENT, self.database, "warehouse.database")
            _match(SECRET_NAME, self.secret_name, "warehouse.secret_name")
            _match(ROLE_ARN, self.copy_role_arn, "warehouse.copy_role_arn")
        return self


class ServingConfig(Strict):
    kind: Literal["embedded_postgres", "aurora_postgres"]
    data_dir: str | None = None  # embedded: where the server keeps its data (and its socket)
    secret_name: str | None = None  # aurora: the Secrets Manager secret with host, user and password
    # aurora: TLS is always verified (sslmode=verify-full) against this CA bundle (the RDS one).
    ca_bundle: str | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> ServingConfig:
        if self.kind == "embedded_postgres" and not self.data_dir:
            raise ValueError("an embedded_postgres serving database needs data_dir")
        if self.kind == "aurora_postgres":
            if not self.secret_name:
                raise ValueError("an aurora_postgres serving database needs secret_name "
                                 "(secrets are named, never written)")
            if not self.ca_bundle:
                raise ValueError("an aurora_postgres serving database needs ca_bundle: TLS is verified")
            _match(SECRET_NAME, self.secret_name, "serving.secret_name")
        return self


class SecretsConfig(Strict):
    # Names of secrets in the environment's secret store (Secrets Manager in AWS).
    pii_key: str | None = None  # the keyed-hash key for PII columns

    @model_validator(mode="after")
    def _patterns(self) -> SecretsConfig:
        _match(SECRET_NAME, self.pii_key, "secrets.pii_key")
        return self


class SparkConfig(Strict):
    """Where a dataset with ``engine: spark`` runs its staging job (engine/spark/job.py), through
    Dagster Pipes: ``local`` starts it as a subprocess in the Spark environment (a local[2]
    session); ``emr_serverless`` and ``glue`` submit the same script to AWS."""

    kind: Literal["local", "emr_serverless", "glue"] = "local"
    python: str | None = None  # local: the Spark environment's interpreter; default: .venv-spark/bin/python
    # Pipes context and messages through this bucket (required in AWS); local default: temporary files.
    pipes_bucket: str | None = None
    script_uri: str | None = None  # emr_serverless, glue: where the job script is (s3://…/job.py)
    application_id: str | None = None  # emr_serverless
    execution_role_arn: str | None = None  # emr_serverless
    job_name: str | None = None  # glue: a Glue job whose script is script_uri
    timeout_minutes: int = Field(default=120, ge=1)

    @model_validator(mode="after")
    def _complete(self) -> SparkConfig:
        _match(S3_BUCKET, self.pipes_bucket, "spark.pipes_bucket")
        _match(ROLE_ARN, self.execution_role_arn, "spark.execution_role_arn")
        if self.script_uri is not None and not self.script_uri.startswith("s3://"):
            raise ValueError(f"spark.script_uri {self.script_uri!r} must be an s3:// URI")
        need = {"emr_serverless": ("pipes_bucket", "script_uri", "application_id", "execution_role_arn"),
                "glue": ("pipes_bucket", "job_name")}.get(self.kind, ())
        missing = [f"spark.{n}" for n in need if getattr(self, n) is None]
        if missing:
            raise ValueError(f"spark.kind {self.kind} needs {', '.join(missing)}")
        return self


class SensorConfig(Strict):
    # A file is picked up once its size and mtime have not changed for this long.
    settle_seconds: float = Field(default=2.0, ge=0)
    max_files_per_tick: int = Field(default=500, ge=1)
    # A tick that finds more new files than batch_above lands and stages them up to files_per_run
    # per run (one run start for many small files); each file keeps its own partition and
    # verdicts. Fewer get a run each. files_per_run 1: always a run per file.
    files_per_run: int = Field(default=50, ge=1, le=500)
    batch_above: int = Field(default=8, ge=0)
    # With ingress.events, how often the ingress sensors still list ingress (the reconciliation
    # sweep: a lost notification delays a file by at most this, never loses it).
    sweep_seconds: float = Field(default=300.0, gt=0)


# -- alerts: the channels besides the always-on alert file and sensor log ---------------------------
RESERVED_CHANNELS = ("alert_file", "log")  # the channels that are always on
ENV_VAR = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
EMAIL = re.compile(r"^[^@\s:]+@[^@\s]+\.[^@\s]+$")
SNS_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:(?P<region>[a-z]{2}(-gov)?-[a-z]+-[0-9]):(?P<account>[0-9]{12}):"
                           r"(?P<name>[A-Za-z0-9_-]{1,256}|[A-Za-z0-9_-]{1,251}\.fifo)$")
# Which settings belong to which kind; a setting of another kind is refused, not ignored.
_CHANNEL_FIELDS = {
    "smtp": {"host", "port", "sender", "starttls", "username", "password_secret", "password_env", "ca_bundle",
             "timeout_seconds"},
    "webhook": {"url_secret", "url_env", "ca_bundle", "timeout_seconds"},
    "sns": {"topic_arn"},
}
_SECRET_LITERALS = {"url": "a webhook URL is a secret: store it in the secret store and name it with url_secret, "
                           "or name an environment variable with url_env; never write it in this file",
                    "password": "a password is a secret: name it with password_secret (the secret store) or "
                                "password_env (an environment variable); never write it in this file"}


def _secret_ref(value: str | None, what: str) -> str | None:
    """Why ``value`` is no secret's or variable's name (it must never be the secret itself), or
    None; the value is not echoed. The validator raises."""
    if value is None:
        return None
    looks_like_url = "://" in value or value.lower().startswith(("http:", "https:")) or \
        bool(re.match(r"^[^/]*\.[^/]*/", value))  # hooks.slack.com/services/...
    if what.startswith("url") and looks_like_url:
        return f"{what} looks like a URL: name the secret that holds it (the value is not shown)"
    pattern = ENV_VAR if what.endswith("_env") else SECRET_NAME
    if not pattern.match(value):
        return f"{what} must match {pattern.pattern} (the value is not shown)"
    return None


class AlertChannelConfig(Strict):
    """One alert channel: ``kind`` and that kind's settings. Secrets (an SMTP password, a webhook
    URL) are named, never written: ``*_secret`` is a name in the environment's secret store
    (Secrets Manager in AWS, ``PLATFORM_SECRET_<NAME>`` locally), ``*_env`` an environment
    variable; both are read when the channel first delivers."""

    kind: Literal["smtp", "webhook", "sns"]
    # smtp
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)  # smtp: 587
    sender: str | None = None
    starttls: bool | None = None  # smtp: true
    username: str | None = None
    password_secret: str | None = None
    password_env: str | None = None
    # smtp and webhook
    ca_bundle: str | None = None  # TLS is verified against this bundle instead of the system's CAs
    timeout_seconds: float | None = Field(default=None, gt=0, le=60)  # 5
    # webhook
    url_secret: str | None = None
    url_env: str | None = None
    # sns
    topic_arn: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_literal_secrets_and_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key, why in _SECRET_LITERALS.items():
            if key in data:
                raise ValueError(f"{key}: {why}")
        data = dict(data)
        if data.get("kind") == "smtp":
            data.setdefault("port", 587)
            data.setdefault("starttls", True)
        if data.get("kind") in ("smtp", "webhook"):
            data.setdefault("timeout_seconds", 5.0)
        return data

    @model_validator(mode="after")
    def _kind_fields(self) -> AlertChannelConfig:
        foreign = sorted(f for f in self.model_fields_set - {"kind"} - _CHANNEL_FIELDS[self.kind]
                         if getattr(self, f) is not None)
        if foreign:
            raise ValueError(f"{', '.join(foreign)}: not a setting of a{'n' if self.kind == 'sns' else ''} "
                             f"{self.kind} channel ({', '.join(sorted(_CHANNEL_FIELDS[self.kind]))})")
        if self.kind == "smtp":
            missing = [f for f in ("host", "sender") if not getattr(self, f)]
            if missing:
                raise ValueError(f"an smtp channel needs {', '.join(missing)}")
            _match(HOSTNAME, self.host, "host")
            if not EMAIL.match(self.sender or ""):
                raise ValueError(f"sender {self.sender!r} is not an email address")
            for problem in (_secret_ref(self.password_secret, "password_secret"),
                            _secret_ref(self.password_env, "password_env")):
                if problem:
                    raise ValueError(problem)
            if self.password_secret and self.password_env:
                raise ValueError("password_secret or password_env, not both")
            has_password = bool(self.password_secret or self.password_env)
            if has_password != bool(self.username):
                raise ValueError("username and a password (password_secret or password_env) go together")
            if has_password and not self.starttls:
                raise ValueError("an smtp channel that logs in needs starttls: true (the password would travel "
                                 "in clear)")
        elif self.kind == "webhook":
            for problem in (_secret_ref(self.url_secret, "url_secret"), _secret_ref(self.url_env, "url_env")):
                if problem:
                    raise ValueError(problem)
            if bool(self.url_secret) == bool(self.url_env):
                raise ValueError("a webhook channel needs one of url_secret or url_env (the URL is a secret)")
        else:
            if not self.topic_arn:
                raise ValueError("an sns channel needs topic_arn")
            if not SNS_TOPIC_ARN.match(self.topic_arn):
                raise ValueError(f"topic_arn {self.topic_arn!r} is not an SNS topic ARN "
                                 "(arn:aws:sns:<region>:<account id>:<topic name>[.fifo])")
        return self

    @property
    def secret_names(self) -> list[str]:
        """The secret-store names this channel reads."""
        return [n for n in (self.password_secret, self.url_secret) if n]


class AlertsConfig(Strict):
    # Channel name → channel. Names are what the sensor's cursor keeps pending deliveries under.
    channels: dict[str, AlertChannelConfig] = {}

    @field_validator("channels")
    @classmethod
    def _names(cls, v: dict[str, AlertChannelConfig]) -> dict[str, AlertChannelConfig]:
        for name in v:
            if name in RESERVED_CHANNELS:
                raise ValueError(f"channel name {name!r} is reserved (the always-on channels: "
                                 f"{', '.join(RESERVED_CHANNELS)})")
            if not NAME.match(name):
                raise ValueError(f"channel name {name!r} must match {NAME.pattern}")
        return v


class Environment(Strict):
    name: str
    description: str = ""
    ingress: IngressConfig
    lake: LakeConfig
    catalog: CatalogConfig
    warehouse: WarehouseConfig
    serving: ServingConfig
    sensors: SensorConfig = SensorConfig()
    spark: SparkConfig = SparkConfig()
    aws: AwsConfig | None = None
    secrets: SecretsConfig = SecretsConfig()
    alerts: AlertsConfig = AlertsConfig()

    @model_validator(mode="after")
    def _aws_when_used(self) -> Environment:
        sns = [n for n, c in self.alerts.channels.items() if c.kind == "sns"]
        uses = [what for what, used in (
            ("an S3 lake", self.lake.kind == "s3"), ("S3 ingress", self.ingress.root.startswith("s3://")),
            ("a glue catalog", self.catalog.kind == "glue"),
            ("a redshift warehouse", self.warehouse.kind == "redshift"),
            ("aurora serving", self.serving.kind == "aurora_postgres"),
            (f"spark on {self.spark.kind}", self.spark.kind != "local"),
            ("a pipes bucket", self.spark.pipes_bucket is not None),
            (f"an sns alert channel ({', '.join(sns)})", bool(sns))) if used]
        if uses and self.aws is None:
            raise ValueError(f"an aws section (region, account_id, resource_prefix) is needed for {', '.join(uses)}")
        if self.aws and self.lake.kind == "s3":
            for what, arn in (("warehouse.copy_role_arn", self.warehouse.copy_role_arn),):
                if arn and f":{self.aws.account_id}:" not in arn:
                    raise ValueError(f"{what} {arn!r} is not in account {self.aws.account_id}")
        if self.aws:
            # The environment's stack creates the topic (encrypted with its key): same account and region.
            for name in sns:
                arn = self.alerts.channels[name].topic_arn
                m = SNS_TOPIC_ARN.match(arn or "")
                if m and (m["account"], m["region"]) != (self.aws.account_id, self.aws.region):
                    raise ValueError(f"alerts.channels.{name}.topic_arn {arn!r} is not in the environment's account "
                                     f"and region ({self.aws.account_id}, {self.aws.region})")
        return self

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not ENV_NAME.match(v):
            raise ValueError(f"environment name {v!r} must match {ENV_NAME.pattern}")
        return v

    def locations(self) -> set[str]:
        """Buckets / roots / databases this environment writes to (for cross-env checks)."""
        return _locations(self.model_dump())


def _bucket(uri: str) -> str:
    if uri.startswith("s3://"):
        return "s3://" + uri[5:].split("/", 1)[0]
    return uri


def _locations(data: dict[str, Any]) -> set[str]:
    """The places an environment's (possibly invalid) declaration claims, read leniently."""

    def get(*path: str) -> Any:
        node: Any = data
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        return node

    out: set[str] = set()
    for value in [get("ingress", "root"), *((get("lake", "zones") or {}).values()
                                            if isinstance(get("lake", "zones"), dict) else [])]:
        if isinstance(value, str):
            out.add(_bucket(value))
    for value in (get("catalog", "path"), get("warehouse", "path"), get("serving", "data_dir")):
        if isinstance(value, str):
            out.add(value)
    if isinstance(host := get("warehouse", "host"), str):
        out.add(f"host:{host}")
    # Not the account: environments may share one (told apart by prefix, buckets, key and secrets).
    if isinstance(prefix := get("aws", "resource_prefix"), str):
        out.add(f"aws-prefix:{prefix}")
    for key in (("warehouse", "secret_name"), ("secrets", "pii_key"), ("lake", "kms_key_id")):
        if isinstance(value := get(*key), str):
            out.add(f"{key[-1]}:{value}")
    if isinstance(prefix := get("catalog", "database_prefix"), str):
        out.add(f"glue:{prefix}")
    if isinstance(secret := get("serving", "secret_name"), str):
        out.add(f"secret:{secret}")
    channels = get("alerts", "channels")
    for channel in channels.values() if isinstance(channels, dict) else ():
        if isinstance(channel, dict):
            out |= {f"secret:{channel[k]}" for k in ("url_secret", "password_secret")
                    if isinstance(channel.get(k), str)}
            if isinstance(topic := channel.get("topic_arn"), str):
                out.add(f"sns-topic:{topic}")
    return out


def default_home() -> Path:
    return REPO_ROOT / ".platform"


def environments_dir() -> Path:
    return Path(os.environ.get("PLATFORM_ENVIRONMENTS_DIR") or ENVIRONMENTS_DIR)


def resolve(environment: str | None = None, home: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Return (environment name, PLATFORM_HOME), from arguments, else the process environment."""
    env = environment or os.environ.get("PLATFORM_ENV") or DEFAULT_ENV
    h = home or os.environ.get("PLATFORM_HOME") or default_home()
    return env, Path(h).expanduser().resolve()


def _substitutions(home: Path) -> dict[str, str]:
    return {"PLATFORM_HOME": str(home)}


def _load_file(path: Path, home: Path) -> Environment:
    # The file name is the environment's name; a `name:` key, if present, may not contradict it.
    env = load_model(path, Environment, substitutions=_substitutions(home), defaults={"name": path.stem})
    if env.name != path.stem:
        raise ConfigError(f"{path}: name {env.name!r} does not match the file name {path.stem!r}")
    return env


def _peek(path: Path, home: Path) -> set[str]:
    """The locations another environment's file claims, without validating it."""
    try:
        text = path.read_text(encoding="utf-8")
        for key, value in _substitutions(home).items():
            text = text.replace("${" + key + "}", value)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return set()  # unreadable: `cli validate` reports it; it claims nothing here
    return _locations(data) if isinstance(data, dict) else set()


def available_environments(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or environments_dir()).glob("*.yaml"))


def _check_not_shared(path: Path, target: Environment, others: dict[str, set[str]]) -> None:
    for other_name, claimed in others.items():
        shared = target.locations() & claimed
        if shared:
            raise ConfigError(
                f"{path}: environment {target.name!r} points at {', '.join(sorted(shared))}, "
                f"which belongs to environment {other_name!r}"
            )


@lru_cache(maxsize=16)
def load_environment(name: str | None = None, home: str | None = None, directory: str | None = None) -> Environment:
    """Load and validate one environment, and refuse it if it shares a bucket, root or database
    with another environment's file (read leniently: only the selected file must be valid)."""
    env_name, home_path = resolve(name, home)
    d = Path(directory) if directory else environments_dir()
    path = d / f"{env_name}.yaml"
    if not path.exists():
        known = ", ".join(available_environments(d)) or "none"
        raise ConfigError(f"unknown environment {env_name!r}: no {path} (known: {known})")
    target = _load_file(path, home_path)
    others = {p.stem: _peek(p, home_path) for p in sorted(d.glob("*.yaml")) if p.stem != env_name}
    _check_not_shared(path, target, others)
    return target


def validate_all(home: str | None = None, directory: str | None = None) -> dict[str, Environment | ConfigError]:
    """Every environment file, strictly: name → the environment, or the error naming file/line/field."""
    _, home_path = resolve(None, home)
    d = Path(directory) if directory else environments_dir()
    out: dict[str, Environment | ConfigError] = {}
    for p in sorted(d.glob("*.yaml")):
        try:
            out[p.stem] = load_environment(p.stem, str(home_path), str(d))
        except ConfigError as e:
            out[p.stem] = e
    return out
