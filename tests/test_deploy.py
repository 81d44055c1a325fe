"""The prod Dagster instance (deploy/dagster.yaml), loaded by Dagster itself against real stand-ins: a real
PostgreSQL 16 (pgserver) reached over TCP with a password, as RDS is, and the
moto server for S3 (compute logs) and the AWS clients of the ECS run launcher.

ECS cannot run here, so the materialising test swaps only the run launcher for Dagster's DefaultRunLauncher in
a copy of the file (``dg.materialize`` runs in-process and never launches anyway); the launcher's own section
is validated against dagster-aws's schema, and the unmodified file is loaded with a real EcsRunLauncher."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._config import process_config
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from support import REPO

DEPLOY = REPO / "deploy" / "dagster.yaml"
PASSWORD = "not-a-real-secret-1"
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:333333333333:secret:acme-lake-prod/dagster-pg-AbCdEf"
BUCKET = "acme-lake-test-dagster-logs"


def prod() -> dict[str, Any]:
    return yaml.safe_load(DEPLOY.read_text())


def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``python -m cli dagster-home`` writes, by the writer itself."""
    from cli.__main__ import dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert dagster_home() == 0
    return yaml.safe_load((tmp_path / "dagster.yaml").read_text())


def env_names(node: object) -> set[str]:
    """Every environment variable the file reads through ``{env: NAME}``."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_names(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_names(v) for v in node))
    return set()


# --- a PostgreSQL that behaves like RDS here: TCP, TLS with a CA of its own, password authentication ----------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rds() -> Iterator[dict[str, str]]:
    """pgserver initialises the cluster (and starts it on a Unix socket only); it is then restarted with the
    same binaries listening on 127.0.0.1 with scram-sha-256 passwords. pgserver's PostgreSQL is built without
    SSL ("SSL is not supported by this build"), so TLS itself cannot be served here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        import pgserver
    from resources.serving.embedded import local_bin

    base = Path(tempfile.mkdtemp(prefix="pgd", dir="/tmp"))  # short: the socket lives under it
    pgdata = base / "pgdata"
    pgserver.get_server(pgdata, cleanup_mode=None)
    owner = pgdata.stat().st_uid
    user = owner if os.geteuid() == 0 and owner != 0 else None  # as root, pgserver runs postgres as pgdata's owner

    def pg_ctl(*args: str, check: bool = True) -> None:
        done = subprocess.run([str(local_bin("pg_ctl")), "-D", str(pgdata), "-w", "-t", "60", *args], user=user,
                              cwd="/", capture_output=True, text=True, timeout=90)
        if check and done.returncode != 0:
            log = (pgdata / "log").read_text() if (pgdata / "log").exists() else ""
            pytest.fail(f"pg_ctl {args[-1]} failed: {done.stderr.strip()}\n{log[-2000:]}")

    port = _free_port()
    try:
        pg_ctl("-m", "fast", "stop")
        # Over TCP only with a password, as RDS; the Unix socket (trusted) is for setting the password.
        (pgdata / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        os.chown(pgdata / "pg_hba.conf", owner, -1)
        pg_ctl("-l", str(pgdata / "log"), "-o", f"-h 127.0.0.1 -p {port} -k {pgdata}", "start")
        admin = psycopg2.connect(host=str(pgdata), port=port, user="postgres", dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("ALTER USER postgres PASSWORD %s", (PASSWORD,))
            cur.execute("CREATE DATABASE dagster")
        admin.close()
        yield {"host": "127.0.0.1", "port": str(port), "db": "dagster", "user": "postgres"}
    finally:
        pg_ctl("-m", "fast", "stop", check=False)  # not running if it failed to start
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def prod_env(rds: dict[str, str], aws, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment deploy/README.md lists, pointed at the stand-ins."""
    values = {"DAGSTER_PG_HOST": rds["host"], "DAGSTER_PG_PORT": rds["port"], "DAGSTER_PG_DB": rds["db"],
              "DAGSTER_PG_USER": rds["user"], "DAGSTER_PG_PASSWORD": PASSWORD,
              "DAGSTER_PG_PASSWORD_SECRET_ARN": SECRET_ARN, "DAGSTER_COMPUTE_LOG_BUCKET": BUCKET,
              "DAGSTER_COMPUTE_LOG_PREFIX": "dagster/compute-logs", "PLATFORM_ENV": "prod"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "eu-west-1"))
    boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={
        "LocationConstraint": boto3.session.Session().region_name or "eu-west-1"})
    return values


def home_with(tmp_path: Path, settings: dict[str, Any]) -> str:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
    return str(home)


def _testable() -> dict[str, Any]:
    """deploy/dagster.yaml with the two substitutions this machine needs, and nothing else."""
    settings = copy.deepcopy(prod())
    # No ECS here: Dagster's default launcher instead (stated in the module docstring).
    settings["run_launcher"] = {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
    # No TLS in pgserver's build; test_storage_refuses_a_server_without_tls shows the real params insist on it.
    settings["storage"]["postgres"]["postgres_db"]["params"] = {"sslmode": "disable"}
    return settings


@dg.asset
def tiny() -> int:
    print("tiny asset says hello")  # captured by the S3 compute log manager
    return 42


def test_a_materialisation_is_stored_in_postgres_and_read_back(
        prod_env: dict[str, str], rds: dict[str, str], tmp_path: Path) -> None:
    home = home_with(tmp_path, _testable())
    with dg.DagsterInstance.from_config(home) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 2
        assert concurrency.pool_config.default_pool_limit == 1
        assert instance.run_monitoring_enabled and instance.run_retries_max_retries == 2
        result = dg.materialize([tiny], instance=instance)
        assert result.success
        run_id = result.run_id

    # A fresh instance (as the webserver would be) reads the run and its events back from PostgreSQL.
    with dg.DagsterInstance.from_config(home) as instance:
        runs = instance.get_runs(dg.RunsFilter(run_ids=[run_id]))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
        records = instance.get_records_for_run(run_id).records
        types = {r.event_log_entry.dagster_event_type for r in records}
        assert {dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.ASSET_MATERIALIZATION} <= types
        latest = instance.get_latest_materialization_event(dg.AssetKey("tiny"))
        assert latest is not None and latest.run_id == run_id

    # And straight from the tables, over TCP with the password.
    with psycopg2.connect(host=rds["host"], port=int(rds["port"]), user=rds["user"], password=PASSWORD,
                          dbname=rds["db"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,))
        assert cur.fetchone()[0] == len(records)

    # The step's stdout went to S3, encrypted with KMS as the file asks.
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys and all(k.startswith("dagster/compute-logs/storage/") for k in keys)
    out = [k for k in keys if k.endswith(".out")]
    assert out and b"tiny asset says hello" in s3.get_object(Bucket=BUCKET, Key=out[0])["Body"].read()
    assert s3.head_object(Bucket=BUCKET, Key=out[0])["ServerSideEncryption"] == "aws:kms"


def test_storage_refuses_a_server_without_tls(prod_env: dict[str, str], tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    # The storage exactly as deployed (verify-full): a server that cannot do TLS is refused, not used in clear.
    settings = _testable()
    settings["storage"] = prod()["storage"]
    with pytest.raises(Exception, match="too many retries"), \
            dg.DagsterInstance.from_config(home_with(tmp_path, settings)) as instance:
        instance.get_runs()
    assert "server does not support SSL, but SSL was required" in caplog.text  # dagster-postgres logs each try


def test_the_file_as_deployed_loads_with_a_real_ecs_run_launcher(
        prod_env: dict[str, str], rds: dict[str, str], tmp_path: Path) -> None:
    # The launcher as deployed; its boto3 clients are built against the moto server.
    with dg.DagsterInstance.from_config(home_with(tmp_path, _testable() | {"run_launcher": prod()["run_launcher"]})) \
            as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, EcsRunLauncher)
        assert launcher.secrets == [{"name": "DAGSTER_PG_PASSWORD", "valueFrom": SECRET_ARN}]
        assert launcher.secrets_tags == []  # nothing mounted just because it carries a tag
        assert launcher.use_current_ecs_task_config


def test_the_ecs_launcher_section_validates_against_dagster_aws_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_PG_PASSWORD_SECRET_ARN", SECRET_ARN)
    section = prod()["run_launcher"]
    assert (section["module"], section["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
    result = process_config(EcsRunLauncher.config_type(), section["config"])
    assert result.success, result.errors
    assert result.value["secrets"] == [{"name": "DAGSTER_PG_PASSWORD", "valueFrom": SECRET_ARN}]
    assert result.value["container_name"] == "run" and result.value["use_current_ecs_task_config"] is True
    # The validation is live: a misspelt key is rejected.
    assert not process_config(EcsRunLauncher.config_type(), {**section["config"], "use_current_task": True}).success


def test_the_shared_sections_equal_what_dagster_home_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine, theirs = prod(), local(tmp_path, monkeypatch)
    for section in ("concurrency", "run_retries", "sensors", "telemetry"):
        assert mine[section] == theirs[section], section
    # Run monitoring likewise, but for the start timeout: an ECS task takes minutes to start, a local process not.
    assert {k: v for k, v in mine["run_monitoring"].items() if k != "start_timeout_seconds"} == \
        {k: v for k, v in theirs["run_monitoring"].items() if k != "start_timeout_seconds"}
    assert mine["run_monitoring"]["start_timeout_seconds"] > theirs["run_monitoring"]["start_timeout_seconds"]
    # Dagster forbids `run_queue` beside `run_coordinator`: the dequeue interval moves there.
    assert mine["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert mine["run_coordinator"]["config"] == theirs["run_queue"]
    assert mine["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}


def test_no_credential_is_literal_and_every_variable_is_documented() -> None:
    settings = prod()
    db = settings["storage"]["postgres"]["postgres_db"]
    assert {k: v for k, v in db.items() if k not in ("params", "scheme")} == {
        "hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"}, "db_name": {"env": "DAGSTER_PG_DB"},
        "username": {"env": "DAGSTER_PG_USER"}, "password": {"env": "DAGSTER_PG_PASSWORD"}}
    assert db["params"]["sslmode"] in ("require", "verify-full")
    environment = yaml.safe_load((REPO / "platform" / "environments" / "prod.yaml").read_text())
    assert db["params"]["sslrootcert"] == environment["serving"]["ca_bundle"]  # one CA bundle in the image
    extra = settings["compute_logs"]["config"]["upload_extra_args"]
    assert extra == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": environment["lake"]["kms_key_id"]}
    # Run tasks get the connection settings from the daemon, the password only as an ECS secret.
    launcher = settings["run_launcher"]["config"]
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USER"} <= set(launcher["env_vars"])
    assert "DAGSTER_PG_PASSWORD" not in launcher["env_vars"]
    readme = (REPO / "deploy" / "README.md").read_text()
    for name in env_names(settings) | set(launcher["env_vars"]) | {"DAGSTER_HOME"}:
        assert name in readme, name
