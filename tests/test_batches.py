"""Several delivered files in one run (a range of partitions): what the sensor requests, and that
every file keeps its own verdicts, materialisations, catalog state and alerts, on a real Dagster
instance (the SQLite storage ``make run`` uses) and the real local lake."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest
from support import SAMPLES, dataset_defs, execute_request, file_verdicts, load_definitions_module, query

import engine
from assets.sensors import RANGE_END, RANGE_START, batches
from cli.generate import expenses
from core.arrival import FileEntry, Request
from core.errors import ResourceBusy
from resources.platform import PlatformResource

DATASET = "finance__expense_reports"
REJECTED = SAMPLES / "finance" / "expense_reports" / "expenses_2026-11-19.csv"  # lost its currency column


def _requests(n: int) -> list[Request]:
    return [Request(FileEntry(f"f{i}.csv", f"f{i}.csv", 1, i), f"{i:064x}", f"f{i}.csv@{i:016x}") for i in range(n)]


@pytest.mark.parametrize(("files", "per_run", "above", "sizes"), [
    (0, 50, 8, []),
    (1, 50, 8, [1]),
    (8, 50, 8, [1] * 8),             # a few files: a run each
    (9, 50, 8, [5, 4]),              # a backlog: both run slots
    (5, 50, 0, [3, 2]),
    (500, 50, 8, [50] * 10),
    (101, 50, 8, [50, 50, 1]),
    (7, 1, 0, [1] * 7),              # files_per_run 1: a run per file
])
def test_batches_keep_the_order_and_use_both_run_slots(files: int, per_run: int, above: int, sizes: list[int]) -> None:
    requests = _requests(files)
    out = batches(requests, per_run, above)
    assert [len(b) for b in out] == sizes
    assert [r for b in out for r in b] == requests  # contiguous and in the order the partitions are added


@pytest.fixture
def instance():
    with tempfile.TemporaryDirectory() as d, dg.instance_for_test(temp_dir=d) as inst:
        yield inst


def _deliver(home: Path) -> tuple[Path, dict[str, int]]:
    """Nine good files, one held (a third of its lines broken), one rejected, settled in ingress;
    returns the folder and the good files' line counts."""
    ingress = home / "ingress" / "finance" / "expense_reports"
    ingress.mkdir(parents=True)
    good = {}
    for n in range(9):
        path = expenses(ingress / f"expenses_2026-10-{n + 1:02d}.csv", reports=3, seed=100 + n, error_rate=0)
        good[path.name] = len(path.read_text().splitlines()) - 1
    expenses(ingress / "expenses_2026-10-20.csv", reports=6, seed=7, error_rate=0.35)
    (ingress / REJECTED.name).write_bytes(REJECTED.read_bytes())
    old = time.time() - 60
    for p in ingress.iterdir():
        os.utime(p, (old, old))
    return ingress, good


def _tick(sensor_name: str, instance: dg.DagsterInstance, platform: PlatformResource, cursor: str | None = None):
    sensor = next(s for s in load_definitions_module().defs.sensors if s.name == sensor_name)
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"platform": platform}))
    for req in getattr(result, "dynamic_partitions_requests", None) or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def test_a_batch_run_gives_every_file_its_own_verdicts_states_and_alerts(home: Path, instance) -> None:
    platform = PlatformResource(environment="local", home=str(home))
    defs = dataset_defs(DATASET)
    ingress, good = _deliver(home)
    result = _tick(f"{DATASET}__ingress", instance, platform)
    runs = [r for r in result.run_requests if r.job_name == defs.job.name]
    # Eleven new files (more than batch_above): two runs (both run slots), each a contiguous range
    # of the partitions the tick added, in order.
    keys = instance.get_dynamic_partitions(defs.partitions.name)
    assert len(keys) == 11 and [r.tags["platform/files"] for r in runs] == ["6", "5"]
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in runs] == [(keys[0], keys[5]), (keys[6], keys[10])]
    assert all(r.partition_key is None for r in runs)
    files = {f["partition_key"]: f["ingress_file"] for r in runs
             for f in r.run_config["ops"][defs.op_name]["config"]["batch"]}
    assert sorted(files.values()) == sorted(p.name for p in ingress.iterdir())

    outcomes = [execute_request(defs, r, instance, platform) for r in runs]
    by_name = {name: key for key, name in files.items()}
    held, rejected = by_name["expenses_2026-10-20.csv"], by_name[REJECTED.name]
    # Every file has its own contract verdict on its own partition, as the UI and alerting read them.
    assert file_verdicts(instance, defs) == {k: k not in (held, rejected) for k in keys}
    assert file_verdicts(instance, defs, "reconciliation") == {k: True for k in keys if k != rejected}
    # No verdict without a partition (what a ranged run's AssetCheckResult would have left).
    staging = dg.AssetKey(["staging", "finance", "staging_expense_reports"])
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(staging, "contract"), limit=100)
    assert sorted(r.partition for r in history) == sorted(keys)
    assert {r.status.value for r in history} == {"SUCCEEDED", "FAILED"}
    # Materialised per partition: landing for all but none lost, staging for the published only.
    assert instance.get_materialized_partitions(staging) == {k for k in keys if k not in (held, rejected)}
    landing = dg.AssetKey(["landing", "finance", "landing_expense_reports"])
    assert instance.get_materialized_partitions(landing) == set(keys)
    assert list(ingress.iterdir()) == []  # every file's bytes are in landing
    # Each row count is the file's own, not the batch's.
    for out in outcomes:
        for ev in out.get_asset_materialization_events():
            m = ev.event_specific_data.materialization
            if m.asset_key == staging:
                assert m.metadata["rows_staged"].value == good[files[m.partition]]
    # Both runs fail, each naming its files that were not published and why; the others were.
    with_bad = [o for o, r in zip(outcomes, runs, strict=True) if {held, rejected} & {
        f["partition_key"] for f in r.run_config["ops"][defs.op_name]["config"]["batch"]}]
    assert [o for o in outcomes if not o.success] == with_bad
    messages = "\n".join(e.event_specific_data.error.message for o in with_bad for e in o.all_events
                         if e.event_type_value == "STEP_FAILURE")
    assert f"{held}: blocking check contract failed" in messages and "Held: a blocking check failed" in messages
    assert f"{rejected}: {REJECTED.name} rejected for dataset finance.expense_reports" in messages
    bad_here = 2 if len(with_bad) == 1 else 1
    in_run = 6 if with_bad[0] is outcomes[0] else 5
    assert f"{bad_here} of {in_run} delivered expense_reports files of this run were not published" in messages
    # The catalog holds exactly the nine good files; nothing lost of the held one.
    states = dict(query(home, "select partition_key, state from meta.partitions"))
    assert states == {**{k: "published" for k in keys if k not in (held, rejected)}, held: "held"}
    assert query(home, "select count(*) from staging_finance.expense_reports") == [(sum(good.values()),)]
    held_rows = query(home, "select rows_staged + rows_quarantined from meta.partitions where partition_key = ?",
                      [held])[0][0]
    assert held_rows == len((home / "lake" / "landing" / "finance" / "expense_reports" / held /
                             "expenses_2026-10-20.csv").read_text().splitlines()) - 1
    # Alerting opens one incident per bad file, naming it.
    _tick("alerts", instance, platform)
    alerts = [json.loads(x) for x in (home / "alerts" / "alerts.jsonl").read_text().splitlines()]
    assert sorted((a["kind"], a["check"], a["source_file"]) for a in alerts) == [
        ("opened", "contract", "expenses_2026-10-20.csv"), ("opened", "contract", REJECTED.name)]


def _settled_expenses(home: Path, month: str, seed: int) -> list[Path]:
    """Nine good expense files of ``month`` in ingress, settled; in name order."""
    ingress = home / "ingress" / "finance" / "expense_reports"
    ingress.mkdir(parents=True)
    for n in range(9):
        expenses(ingress / f"expenses_{month}-{n + 1:02d}.csv", reports=2, seed=seed + n, error_rate=0)
    old = time.time() - 60
    for p in ingress.iterdir():
        os.utime(p, (old, old))
    return sorted(ingress.iterdir())


def test_a_retried_batch_does_not_stage_its_files_twice(home: Path, instance, monkeypatch) -> None:
    """A transient error on the second file of a run retries the step; the file staged before it
    is not staged again. (The error is injected: a lock held by another process, for one call.)"""
    platform = PlatformResource(environment="local", home=str(home))
    defs = dataset_defs(DATASET)
    keys_files = _settled_expenses(home, "2026-09", seed=200)
    real, calls = engine.engine_for, []

    class Flaky:
        def __init__(self, inner):
            self.inner = inner

        def stage(self, request, lake):
            calls.append(request.source_name)
            if len(calls) == 2:
                raise ResourceBusy(f"{request.source_name}: the lake is busy (injected)")
            return self.inner.stage(request, lake)

    monkeypatch.setattr("assets.ingest.engine_for", lambda ds, **kw: Flaky(real(ds, **kw)))
    result = _tick(f"{DATASET}__ingress", instance, platform)
    first, second = [r for r in result.run_requests if r.job_name == defs.job.name]
    out = execute_request(defs, first, instance, platform)
    assert out.success and execute_request(defs, second, instance, platform).success
    names = [p.name for p in keys_files]
    assert calls == [names[0], names[1], names[1], *names[2:]]  # the first was not staged again
    staged = [e.event_specific_data.materialization.partition for e in out.get_asset_materialization_events()
              if e.event_specific_data.materialization.asset_key.path[0] == "staging"]
    assert len(staged) == 5 and len(set(staged)) == 5
    assert query(home, "select count(*) from meta.partitions where state = 'published'") == [(9,)]


@pytest.mark.parametrize(("max_files", "writes"), [(100, [5, 4]), (2, [2, 2, 1, 2, 2])])
def test_a_batch_publishes_its_files_together_and_each_keeps_its_verdict(
        home: Path, instance, monkeypatch, max_files: int, writes: list[int]) -> None:
    """A run of several files writes the catalog once for all of them (rewriting a view per file
    made a run of n files cost n²), or every ``PUBLISH_MAX_FILES``; every file still has its own
    state and verdicts."""
    from resources.catalog.duckdb import DuckDBCatalog

    platform = PlatformResource(environment="local", home=str(home))
    defs = dataset_defs(DATASET)
    _settled_expenses(home, "2026-08", seed=300)
    real, sizes = DuckDBCatalog.publish_many, []

    def counted(self, versions, *, supersede):
        sizes.append(len(versions))
        return real(self, versions, supersede=supersede)

    monkeypatch.setattr(DuckDBCatalog, "publish_many", counted)
    monkeypatch.setattr("assets.ingest.PUBLISH_MAX_FILES", max_files)
    monkeypatch.setattr("assets.ingest.PUBLISH_EVERY_S", 3600.0)
    runs = [r for r in _tick(f"{DATASET}__ingress", instance, platform).run_requests if r.job_name == defs.job.name]
    assert all(execute_request(defs, r, instance, platform).success for r in runs)
    assert sizes == writes
    keys = instance.get_dynamic_partitions(defs.partitions.name)
    assert file_verdicts(instance, defs) == file_verdicts(instance, defs, "reconciliation") == {k: True for k in keys}
    assert dict(query(home, "select partition_key, state from meta.partitions")) == {k: "published" for k in keys}


def test_staging_selected_alone_still_writes_both_tables(home: Path, instance) -> None:
    """Staging and quarantine are one step: selecting one of them (the UI allows it) publishes both
    together; the one not selected is recorded as a materialisation of the partition all the same."""
    from support import ingest

    defs = dataset_defs(DATASET)
    sample = SAMPLES / "finance" / "expense_reports" / "expenses_2026-11-18.csv"
    first = ingest(home, DATASET, sample, instance=instance)
    assert first.success
    staging = next(k for k in defs.assets.keys if k.path[0] == "staging")
    again = dg.materialize([defs.assets], selection=[staging], partition_key=first.partition_key, instance=instance,
                           resources={"platform": PlatformResource(environment="local", home=str(home))},
                           raise_on_error=False)
    assert again.success
    got = {e.event_specific_data.materialization.asset_key.path[0] for e in again.get_asset_materialization_events()}
    assert got == {"staging", "quarantine"}
    assert query(home, "select state from meta.partitions") == [("published",)]
