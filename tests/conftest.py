from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

# `make test` runs the suite on two pytest-xdist workers (--dist loadgroup). The tests that start a
# real `dagster dev` mostly wait (sensor intervals, run queues, polling), so they run one after
# the other on one worker, first, while the other worker takes every other module whole (a
# module's fixtures, such as test_modelled_zones' built lake, are then built once).
DAGSTER_DEV_FILES = ("test_e2e_automation.py", "test_e2e_aws_stand_in.py", "test_e2e_dagster_dev.py",
                     "test_faults.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        name = item.path.name
        item.add_marker(pytest.mark.xdist_group("dagster_dev" if name in DAGSTER_DEV_FILES else name))
    items.sort(key=lambda item: item.path.name not in DAGSTER_DEV_FILES)  # stable: file order kept within


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
