from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh PLATFORM_HOME for the local environment."""
    h = tmp_path / "platform_home"
    h.mkdir()
    return h


@pytest.fixture
def dev():
    """A real ``dagster dev`` (webserver, daemon, code server) on a free loopback port, with fresh
    PLATFORM_HOME and DAGSTER_HOME; stopped afterwards with the embedded PostgreSQL it may start."""
    import tempfile

    from dagster_dev import DagsterDev

    from resources.serving import stop_local

    base = Path(tempfile.mkdtemp(prefix="e2e", dir="/tmp"))  # short: PostgreSQL's socket lives under it
    d = DagsterDev(base / "h", base / "d")
    try:
        d.start()
        yield d
    finally:
        d.stop()
        stop_local(base / "h")
        print(f"\n[e2e] dagster dev log: {d.log_path}")


@pytest.fixture(scope="session")
def moto_server():
    """One moto server (S3, KMS, Glue, Secrets Manager, SNS/SQS, CloudFormation, IAM, STS) for the
    whole test session, on a free loopback port."""
    from aws_stand_in import MotoServer

    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch: pytest.MonkeyPatch):
    """The stand-in, reset, with boto3 pointed at it through the environment only."""
    moto_server.reset()
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    return moto_server


@pytest.fixture(scope="module")
def one_spark_at_a_time():
    """Spark sessions take both cores: the test modules that start one take turns across xdist
    workers (a file lock), so the other workers' dagster dev tests keep some CPU."""
    import fcntl

    with open("/tmp/lake-platform-tests-spark.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def pytest_collection_modifyitems(config, items) -> None:
    """The Spark tests first: they take turns on one lock for minutes, and at the end of a worker's
    queue they would be the suite's tail; first, the other workers' tests overlap them."""
    items.sort(key=lambda item: 0 if "one_spark_at_a_time" in getattr(item, "fixturenames", ()) else 1)
