"""Faults a real deployment sees, injected into a real ``dagster dev`` (webserver, daemon, code
server, run workers): afterwards every delivered row is in staging or quarantine exactly once,
nothing partial is visible, and the error said what happened.

- a run's process killed with SIGKILL in the middle of writing staging;
- dagster dev itself (daemon, code server, run workers) killed with SIGKILL while runs are queued
  and in progress, then started again;
- (the serving PostgreSQL stopped in the middle of an export, and the warehouse never shared by two
  runs, are injected in test_e2e_automation, which has the modelled zones running already);
- a user holding the catalog open for writing; a landed object whose bytes changed; the disk
  under staging filling up (a small tmpfs).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_dev import TERMINAL, DagsterDev, drop_file, wait_until

from cli.generate import trips
from core.names import partition_key
from resources.environment import ENVIRONMENTS_DIR
from resources.serving import stop_local

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
TRIPS_DIR = ("mobility", "yellow_trips")

pytestmark = pytest.mark.slow


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="flt", dir="/tmp"))  # short: PostgreSQL's socket lives under it
    try:
        yield path
    finally:
        stop_local(path / "h")
        subprocess.run(["umount", "-l", str(path / "h" / "lake" / "staging")], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def started(dev: DagsterDev) -> DagsterDev:
    dev.start()
    # The modelled zones are not under test here (test_e2e_automation injects their faults): their
    # dbt runs would only take run slots and CPU from the ingest runs these tests break.
    dev.stop_sensor("modelled_zones_automation")
    return dev


def ingest_runs(dev: DagsterDev, name: str) -> list[dict]:
    return [r for r in dev.runs() if r["jobName"].startswith("ingest__") and r["tags"].get("platform/source_file")
            == name]


def key_of(path: Path) -> str:
    import hashlib

    return partition_key(path.name, hashlib.sha256(path.read_bytes()).hexdigest())


def records_of(home: Path, name: str, table: str = "yellow_trips", zone: str = "mobility") -> tuple[int, int]:
    """(rows of ``name`` in staging + quarantine, distinct lines among them), read as a user would."""
    con = duckdb.connect(str(home / "catalog.duckdb"), read_only=True)
    try:
        return con.execute(
            f"select count(*), count(distinct _source_line) from (select _source_line from staging_{zone}.{table} "
            f"where _source_file = ? union all select _source_line from quarantine_{zone}.{table} "
            "where _source_file = ?)", [name, name]).fetchone()
    finally:
        con.close()


def tmp_leftovers(home: Path) -> list[Path]:
    return [p for zone in ("staging", "quarantine") for p in (home / "lake" / zone / "_tmp").glob("*")]


def generated(tmp: Path, rows: int, seed: int, name: str) -> Path:
    return trips(tmp / name, rows, seed=seed)


def retry_of(dev: DagsterDev, run_id: str) -> dict | None:
    return next((r for r in dev.runs() if r["tags"].get("dagster/parent_run_id") == run_id), None)


# ----------------------------------------------------------------------------------------------


def test_a_run_process_killed_mid_write_is_found_retried_and_stages_the_file_once(base: Path) -> None:
    dev = started(DagsterDev(base / "h", base / "d"))
    try:
        src = generated(base, 1_000_000, 3, "yellow_tripdata_2024-05.csv")
        key = key_of(src)
        drop_file(dev.platform_home / "ingress" / "/".join(TRIPS_DIR), src.name, src)
        tmp_dir = dev.platform_home / "lake" / "staging" / "_tmp"
        writing = wait_until(lambda: [p for p in tmp_dir.glob(f"{key}.*") if p.stat().st_size > 1 << 20],
                             timeout_s=120, interval_s=0.05, what="staging being written")
        [run] = ingest_runs(dev, src.name)
        pid = dev.run_worker_pid(run["runId"])
        assert pid, "the run worker's pid is in its engine events"
        os.kill(pid, signal.SIGKILL)
        print(f"\n[fault] killed run process {pid} while {writing[0].name} held {writing[0].stat().st_size:,} bytes")

        wait_until(lambda: next(r for r in dev.runs() if r["runId"] == run["runId"])["status"] == "FAILURE",
                   timeout_s=60, what="the killed run marked failed")
        said = "\n".join(m for _, m in dev.run_messages(run["runId"]))
        assert f"pid: {pid}" in said or str(pid) in said, said[-3000:]
        retry = wait_until(lambda: (r := retry_of(dev, run["runId"])) and r["status"] in TERMINAL and r,
                           timeout_s=180, what="the run retried to the end")
        assert retry["status"] == "SUCCESS", dev.failure_reason(retry["runId"])
        print(f"[fault] retried as {retry['runId']}: SUCCESS")
        assert records_of(dev.platform_home, src.name) == (1_000_000, 1_000_000)
        assert tmp_leftovers(dev.platform_home) == []
    finally:
        dev.stop()


def test_dagster_dev_killed_with_runs_queued_and_in_progress_loses_nothing_after_a_restart(base: Path) -> None:
    rows = 300_000
    files = [generated(base, rows, seed, f"yellow_tripdata_2024-0{seed}.csv") for seed in range(1, 5)]
    dev = started(DagsterDev(base / "h", base / "d"))
    try:
        for f in files:
            drop_file(dev.platform_home / "ingress" / "/".join(TRIPS_DIR), f.name, f)

        def mid_flight() -> bool:
            statuses = [r["status"] for r in dev.runs() if r["jobName"].startswith("ingest__")]
            return "STARTED" in statuses and "QUEUED" in statuses

        wait_until(mid_flight, timeout_s=120, interval_s=0.1, what="runs queued and in progress")
        os.kill(dev.daemon_pid(), signal.SIGKILL)
        dev.kill_all()  # and everything else of it, run workers included: a crash, not a shutdown
    except BaseException:
        dev.stop()
        raise
    crashed = time.monotonic()
    # The storage says what the crash left behind (read without a server).
    with dg.DagsterInstance.from_config(str(base / "d")) as instance:
        left = {r.run_id: r.status.value for r in instance.get_runs() if r.job_name.startswith("ingest__")}
    interrupted = {run_id: status for run_id, status in left.items() if status in ("STARTED", "STARTING")}
    print(f"\n[fault] the crash left {sorted(left.values())}")
    assert "STARTED" in interrupted.values() and "QUEUED" in left.values()
    dev = started(DagsterDev(base / "h", base / "d"))
    try:

        def all_done() -> bool:
            return all(any(r["status"] == "SUCCESS" for r in ingest_runs(dev, f.name)) for f in files)

        wait_until(all_done, timeout_s=300, interval_s=1, what="every file staged after the restart")
        print(f"[fault] every file staged {time.monotonic() - crashed:.0f} s after the crash")
        for f in files:
            assert records_of(dev.platform_home, f.name) == (rows, rows), f.name
            assert [r["status"] for r in ingest_runs(dev, f.name)].count("SUCCESS") == 1, f.name
        for run_id, status in interrupted.items():
            # Run monitoring found the dead run and run retries ran it again: a started run by the local
            # launcher's health check (its process is gone), a half-launched one by the start timeout.
            detail = "\n".join(m for _, m in dev.run_messages(run_id))
            assert ("is gone" if status == "STARTED" else "seconds to start") in detail, (status, detail[-2000:])
            assert retry_of(dev, run_id) is not None
        assert tmp_leftovers(dev.platform_home) == []
    finally:
        dev.stop()


def run_of(dev: DagsterDev, name: str) -> dict:
    return wait_until(lambda: next(iter(ingest_runs(dev, name)), None), timeout_s=60, what=f"a run for {name}")


def finished(dev: DagsterDev, run_id: str, timeout_s: float = 180) -> dict:
    return wait_until(lambda: (r := next(x for x in dev.runs() if x["runId"] == run_id))["status"] in TERMINAL and r,
                      timeout_s=timeout_s, what=f"run {run_id} finished")


def test_a_held_catalog_a_changed_landed_object_and_a_full_disk(base: Path) -> None:
    home = base / "h"
    staging = home / "lake" / "staging"
    staging.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(staging)], capture_output=True,
                             text=True)
    assert mounted.returncode == 0, f"this test mounts a small tmpfs under staging (needs root): {mounted.stderr}"
    envs = base / "environments"
    shutil.copytree(ENVIRONMENTS_DIR, envs)
    local = envs / "local.yaml"
    local.write_text(local.read_text().replace("lock_timeout_seconds: 30", "lock_timeout_seconds: 2"))
    dev = started(DagsterDev(home, base / "d", extra_env={"PLATFORM_ENVIRONMENTS_DIR": str(envs)}))
    try:
        zones = SAMPLES / "mobility" / "taxi_zones" / "taxi_zone_lookup.csv"
        drop_file(home / "ingress" / "mobility" / "taxi_zones", zones.name, zones)
        assert finished(dev, run_of(dev, zones.name)["runId"])["status"] == "SUCCESS"
        assert records_of(home, zones.name, "taxi_zones") == (265, 265)

        # 1. A user holds the catalog open for writing: the publish waits, says who holds it, and is
        #    retried; once the user lets go, the file is staged, once.
        expenses = SAMPLES / "finance" / "expense_reports" / "expenses_2026-11-16.csv"
        lines = expenses.read_bytes().count(b"\n") - 1
        user = duckdb.connect(str(home / "catalog.duckdb"))
        try:
            drop_file(home / "ingress" / "finance" / "expense_reports", expenses.name, expenses)
            run = run_of(dev, expenses.name)
            said = wait_until(lambda: [m for kind, m in dev.run_messages(run["runId"])
                                       if kind == "ExecutionStepUpForRetryEvent"], timeout_s=120, what="a retry")
        finally:
            user.close()
        print(f"\n[fault] catalog held: {said[0].splitlines()[0][:300]}")
        assert f"is locked by process {os.getpid()}" in said[0] and "Close that DuckDB session" in said[0]
        assert str(home / "catalog.duckdb") in said[0]
        assert finished(dev, run["runId"])["status"] == "SUCCESS"
        assert records_of(home, expenses.name, "expense_reports", "finance") == (lines, lines)

        # 2. A landed object whose bytes changed is refused, naming it, and not retried.
        key = key_of(zones)
        landed = home / "lake" / "landing" / "mobility" / "taxi_zones" / key / zones.name
        landed.chmod(0o640)
        with landed.open("ab") as f:
            f.write(b"266,Queens,Tampered,Boro Zone\n")
        rerun = finished(dev, dev.launch_partition("ingest__mobility__taxi_zones", key))
        assert rerun["status"] == "FAILURE"
        reason = dev.failure_reason(rerun["runId"])
        assert f"landing object {landed} no longer matches its partition's hash" in reason, reason
        assert not [k for k, _ in dev.run_messages(rerun["runId"]) if k == "ExecutionStepUpForRetryEvent"]
        assert records_of(home, zones.name, "taxi_zones") == (265, 265)

        # 3. The disk under staging fills up: retried, then a clear failure; what was published is
        #    intact and nothing partial is left; with space again, the same run goes through.
        big = generated(base, 100_000, 5, "yellow_tripdata_2024-06.csv")
        drop_file(home / "ingress" / "/".join(TRIPS_DIR), big.name, big)
        full = finished(dev, run_of(dev, big.name)["runId"], timeout_s=240)
        assert full["status"] == "FAILURE"
        reason = dev.failure_reason(full["runId"])
        print(f"[fault] disk full: {reason[:300]}")
        assert "no space left on the device" in reason and "previous version is intact" in reason, reason
        assert len([k for k, _ in dev.run_messages(full["runId"]) if k == "ExecutionStepUpForRetryEvent"]) == 3
        assert records_of(home, zones.name, "taxi_zones") == (265, 265)
        assert records_of(home, expenses.name, "expense_reports", "finance") == (lines, lines)
        assert tmp_leftovers(home) == []
        subprocess.run(["mount", "-o", "remount,size=64m", str(staging)], check=True)
        again = finished(dev, dev.reexecute(full["runId"]), timeout_s=240)
        assert again["status"] == "SUCCESS", dev.failure_reason(again["runId"])
        assert records_of(home, big.name) == (100_000, 100_000)
    finally:
        dev.stop()
