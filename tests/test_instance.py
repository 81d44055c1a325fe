"""The Dagster instance `make run` writes (python -m cli dagster-home): valid for Dagster, with run
monitoring, run retries, the warehouse pool and per-file run limits on; and the local run
launcher's health check, which lets run monitoring find a run whose process is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import WorkerStatus
from support import REPO

from cli.__main__ import INSTANCE_HEADER, INSTANCE_YAML
from resources.run_launcher import LocalRunLauncher


def write_home(dagster_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    return subprocess.run([sys.executable, "-m", "cli", "dagster-home"], cwd=REPO, env=env, capture_output=True,
                          text=True, check=True)


def test_the_instance_make_run_writes_is_valid_and_says_what_it_turns_on(tmp_path: Path) -> None:
    write_home(tmp_path)
    settings = yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_launcher, LocalRunLauncher)
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert instance.run_retries_max_retries == settings["run_retries"]["max_retries"] == 2
        assert instance.run_retries_retry_on_asset_or_op_failure is False  # steps have their own policy
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 2
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in \
            concurrency.run_queue_config.tag_concurrency_limits
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity.value == "run"


def test_an_arriving_file_never_queues_behind_the_modelled_zones(tmp_path: Path) -> None:
    """Automation's runs (dbt, serving) hold one of the two run slots at most, as Dagster's own
    queue counts them with the written limits: with one of them in progress, another waits and an
    ingest run goes ahead; two ingest runs of different files go together."""
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    write_home(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits

    def run(job: str, **tags: str) -> DagsterRun:
        return DagsterRun(job_name=job, tags=tags)

    dbt = run("__ASSET_JOB", **{"dagster/from_automation_condition": "true"})
    ingest = run("ingest__mobility__yellow_trips", **{"dagster/partition": "a.csv@0000000000000001"})
    counter = TagConcurrencyLimitsCounter(limits, [dbt])
    assert counter.is_blocked(run("__ASSET_JOB", **{"dagster/from_automation_condition": "true"}))
    assert not counter.is_blocked(ingest)
    other = run("ingest__mobility__yellow_trips", **{"dagster/partition": "b.csv@0000000000000002"})
    assert not TagConcurrencyLimitsCounter(limits, [ingest]).is_blocked(other)
    assert TagConcurrencyLimitsCounter(limits, [ingest]).is_blocked(ingest)  # the same file: never twice at once


def test_it_is_rewritten_when_the_platform_changes_it_but_a_users_own_file_is_left_alone(tmp_path: Path) -> None:
    old = tmp_path / "dagster.yaml"
    old.write_text(INSTANCE_HEADER + "\nrun_queue:\n  max_concurrent_runs: 2\n")  # an earlier version's file
    assert "wrote" in write_home(tmp_path).stdout
    assert old.read_text() == INSTANCE_YAML
    assert "wrote" not in write_home(tmp_path).stdout  # current: untouched
    mine = "telemetry:\n  enabled: false\n"
    old.write_text(mine)
    write_home(tmp_path)
    assert old.read_text() == mine


def _started_process_event(instance: dg.DagsterInstance, run: dg.DagsterRun, pid: int) -> None:
    # Exactly as Dagster's run worker reports itself (dagster._grpc.impl).
    instance.report_engine_event(f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid))


@pytest.fixture
def instance():
    with dg.instance_for_test(overrides={"run_launcher": {"module": "resources.run_launcher",
                                                          "class": "LocalRunLauncher"}}) as inst:
        yield inst


def test_the_launcher_reports_a_live_run_process_as_running(instance: dg.DagsterInstance) -> None:
    run = instance.create_run_for_job(dg.GraphDefinition("g").to_job())
    launcher = instance.run_launcher
    assert launcher.supports_check_run_worker_health
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING  # not reported yet
    _started_process_event(instance, run, os.getpid())
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING


def test_the_launcher_reports_a_dead_run_process_as_failed(instance: dg.DagsterInstance) -> None:
    run = instance.create_run_for_job(dg.GraphDefinition("g").to_job())
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _started_process_event(instance, run, gone.pid)
    health = instance.run_launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.FAILED
    assert f"process {gone.pid} is gone" in (health.msg or "")
