"""Compaction of the per-delivery staging and quarantine files (engine.compaction, the compact_lake
job) on the real local flow: the tables read exactly the same before and after, traceability,
supersede, the steward's decisions and the nothing-lost accounting survive it, and a compaction
that cannot add up changes nothing."""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest
from support import catalog_states, ingest, load_definitions_module, query, view_files

from cli.generate import expenses
from core.errors import IntegrityError, NotAvailable
from engine.compaction import Member, compact_table, plan
from resources.catalog.duckdb import DuckDBCatalog
from resources.platform import PlatformResource

DATASET = "finance__expense_reports"
STAGING, QUARANTINE = "staging_finance.expense_reports", "quarantine_finance.expense_reports"
NOV = int(dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp() * 1e9)  # the reports are of 19 November
OCT = int(dt.datetime(2026, 10, 20, tzinfo=dt.UTC).timestamp() * 1e9)
HOUR = 3600 * 10**9


def _m(key: str, rows: int, at: int) -> Member:
    return Member(key, f"/lake/{key}", rows, at)


def test_plan_groups_small_deliveries_per_month_up_to_the_target() -> None:
    nov = [_m(f"n{i}", 100, NOV + i) for i in range(25)]
    octo = [_m(f"o{i}", 100, OCT + i) for i in range(3)]  # too few in October
    big = [_m("big", 10_000, NOV + 100)]  # already worth a file of its own
    groups = plan([*reversed(nov), *octo, *big], target_rows=1_000, min_files=4)
    assert [(month, [m.partition_key for m in g]) for month, g in groups] == [
        ("2026-11", [f"n{i}" for i in range(10)]),
        ("2026-11", [f"n{i}" for i in range(10, 20)]),
        ("2026-11", [f"n{i}" for i in range(20, 25)]),
    ]
    assert plan(nov[:3], target_rows=1_000, min_files=4) == []


@pytest.fixture
def instance():
    with tempfile.TemporaryDirectory() as d, dg.instance_for_test(temp_dir=d) as inst:
        yield inst


def _table(home: Path, table: str) -> list[tuple]:
    return query(home, f"select * from {table} order by _partition_key, _source_line")


def _compact(home: Path, instance: dg.DagsterInstance, **config) -> dg.ExecuteInProcessResult:
    return load_definitions_module().defs.get_job_def("compact_lake").execute_in_process(
        instance=instance, resources={"platform": PlatformResource(environment="local", home=str(home))},
        run_config={"ops": {"compact": {"config": {"min_files": 4, **config}}}})


def _deliver(home: Path, instance: dg.DagsterInstance, tmp: Path) -> dict[str, str]:
    """Ten good November files (some rows quarantined), one held, three in October: name → key."""
    keys = {}
    for n in range(10):
        path = expenses(tmp / f"expenses_2026-11-{n + 1:02d}.csv", reports=30, seed=300 + n, error_rate=0.004)
        r = ingest(home, DATASET, path, instance=instance, delivered_at_ns=NOV + n * HOUR)
        assert r.success, r.failure_message()
        keys[path.name] = r.partition_key
    held = expenses(tmp / "expenses_2026-11-20.csv", reports=4, seed=9, error_rate=0.5)
    r = ingest(home, DATASET, held, instance=instance, delivered_at_ns=NOV + 20 * HOUR)
    assert not r.success
    keys[held.name] = r.partition_key
    for n in range(3):
        path = expenses(tmp / f"expenses_2026-10-{n + 20:02d}.csv", reports=3, seed=400 + n, error_rate=0,
                        day=dt.date(2026, 10, 19))
        keys[path.name] = ingest(home, DATASET, path, instance=instance, delivered_at_ns=OCT + n * HOUR).partition_key
    return keys


def test_compaction_changes_how_many_files_are_read_not_what_is_read(home: Path, tmp_path: Path, instance) -> None:
    keys = _deliver(home, instance, tmp_path)
    held = keys["expenses_2026-11-20.csv"]
    staged, quarantined = _table(home, STAGING), _table(home, QUARANTINE)
    records = query(home, "select partition_key, rows_staged, rows_quarantined, state from meta.partitions order by 1")
    assert len(view_files(home, STAGING)) == 13 and len(view_files(home, QUARANTINE)) == 14
    assert sum(q for _, _, q, state in records if state == "published") > 0  # some published rows quarantined

    result = _compact(home, instance)
    assert result.success
    # The same rows, with the same delivery, file and line, in both tables; the counts unchanged.
    assert _table(home, STAGING) == staged and _table(home, QUARANTINE) == quarantined
    assert query(home, "select partition_key, rows_staged, rows_quarantined, state from meta.partitions order by 1") \
        == records
    # November's ten published deliveries come from one file per table now; October's three (fewer
    # than min_files) and the held one are untouched.
    [compacted] = [f for f in view_files(home, STAGING) if "_compacted" in f.parts]
    assert compacted.parts[-3] == "2026-11" and len(view_files(home, STAGING)) == 4
    assert len(view_files(home, QUARANTINE)) == 5
    uris = dict(query(home, "select partition_key, staging_uri from meta.partitions"))
    november = [k for n, k in keys.items() if n.startswith("expenses_2026-11-") and k != held]
    assert {uris[k] for k in november} == {str(compacted)}
    assert "_compacted" not in uris[held]
    # Nothing lost: the compacted file holds each delivery's rows exactly as recorded.
    per_key = dict(query(home, f"select _partition_key, count(*) from read_parquet('{compacted}') group by 1"))
    assert per_key == {k: s for k, s, _, state in records if k in november}
    [obs] = [e.asset_observation for e in instance.get_event_records(
        dg.EventRecordsFilter(dg.DagsterEventType.ASSET_OBSERVATION,
                              asset_key=dg.AssetKey(["staging", "finance", "staging_expense_reports"])))
        if "compacted_month" in e.asset_observation.metadata]
    assert obs.metadata["deliveries"].value == 10 and obs.metadata["served_from_it"].value == 10
    # Run again: nothing left to compact, nothing changes.
    assert _compact(home, instance).success and _table(home, STAGING) == staged

    # A re-delivery of a compacted file supersedes its rows inside the compacted file.
    name = "expenses_2026-11-03.csv"
    again = expenses(tmp_path / "again.csv", reports=2, seed=999, error_rate=0)
    r = ingest(home, DATASET, again, name=name, instance=instance, delivered_at_ns=NOV + 30 * HOUR)
    assert r.success and catalog_states(home, DATASET)[keys[name]] == "superseded"
    new_rows = len(again.read_text().splitlines()) - 1
    assert query(home, f"select count(*) from {STAGING} where _source_file = ?", [name]) == [(new_rows,)]
    assert query(home, f"select count(*) from {STAGING} where _partition_key = ?", [keys[name]]) == [(0,)]
    assert query(home, f"select count(*) from {QUARANTINE} where _partition_key = ?", [keys[name]]) == [(0,)]
    others = [row for row in staged if row[-1] != keys[name]]
    assert [row for row in _table(home, STAGING) if row[-1] != r.partition_key] == others

    # The steward releases the held delivery: its rows join the table, the compacted file unchanged.
    steward = load_definitions_module().defs.get_job_def("steward__finance__expense_reports").execute_in_process(
        partition_key=held, instance=instance,
        resources={"platform": PlatformResource(environment="local", home=str(home))},
        run_config={"ops": {"decide__finance__expense_reports": {"config": {
            "decision": "release", "reason": "checked by hand", "steward": "ada@example.com"}}}})
    assert steward.success and catalog_states(home, DATASET)[held] == "published"
    held_rows = [row for (row,) in query(home, "select rows_staged from meta.partitions where partition_key = ?",
                                         [held])]
    assert query(home, f"select count(*) from {STAGING} where _partition_key = ?", [held]) == [(held_rows[0],)]


def test_replaced_files_are_removed_only_after_the_retention(home: Path, tmp_path: Path, instance) -> None:
    keys = _deliver(home, instance, tmp_path)
    before = set(view_files(home, STAGING))
    catalog, lake = DuckDBCatalog(home / "catalog.duckdb"), PlatformResource(environment="local", home=str(home)).lake()
    done, removed = compact_table(lake, catalog, "finance", "expense_reports", version="v1", sort_by="submitted_at",
                                  min_files=4, retention_s=3600, now_ns=time.time_ns())
    assert [c.files for c in done] == [10] and removed == []
    replaced = before - set(view_files(home, STAGING))
    assert len(replaced) == 10 and all(p.exists() for p in replaced)  # a reader may still be reading them
    table = _table(home, STAGING)
    done, removed = compact_table(lake, catalog, "finance", "expense_reports", version="v2", sort_by="submitted_at",
                                  min_files=4, retention_s=3600, now_ns=time.time_ns() + 2 * 3600 * 10**9)
    assert done == [] and len(removed) == 20  # staging and quarantine
    assert not any(p.exists() for p in replaced) and _table(home, STAGING) == table
    assert all(Path(u).exists() for (u,) in query(home, "select staging_uri from meta.partitions"))
    assert catalog_states(home, DATASET)[keys["expenses_2026-11-20.csv"]] == "held"


def test_a_compaction_that_does_not_add_up_changes_nothing(home: Path, tmp_path: Path, instance) -> None:
    _deliver(home, instance, tmp_path)
    catalog = DuckDBCatalog(home / "catalog.duckdb")
    lake = PlatformResource(environment="local", home=str(home)).lake()
    records = catalog.partitions("finance", "expense_reports")
    views = query(home, "select sql from duckdb_views() where not internal order by all")
    # The catalog's record of one delivery says one row more than its file holds.
    victim = next(r for r in records if r.state == "published" and r.version.source_file.startswith("expenses_2026-11"))

    class Miscounting(DuckDBCatalog):
        def partitions(self, insight_zone, dataset):
            out = super().partitions(insight_zone, dataset)
            return [replace(r, version=replace(r.version, rows_staged=r.version.rows_staged + 1))
                    if r.version.partition_key == victim.version.partition_key else r for r in out]

    with pytest.raises(IntegrityError, match=victim.version.partition_key):
        compact_table(lake, Miscounting(catalog.path), "finance", "expense_reports", version="v1", sort_by=None,
                      min_files=4, retention_s=3600, now_ns=time.time_ns())
    assert catalog.partitions("finance", "expense_reports") == records
    assert query(home, "select sql from duckdb_views() where not internal order by all") == views
    assert not list((home / "lake" / "staging").rglob("_compacted"))
    assert not [p for p in (home / "lake").rglob("*") if p.is_file() and "_compacted" in p.name]


def test_a_catalog_that_cannot_serve_deliveries_from_one_file_refuses_clearly(home: Path) -> None:
    from resources.catalog.glue import GlueCatalog

    assert GlueCatalog.can_compact is False and DuckDBCatalog.can_compact is True

    class OnePerDelivery(DuckDBCatalog):
        can_compact = False

    lake = PlatformResource(environment="local", home=str(home)).lake()
    with pytest.raises(NotAvailable, match="compaction is not available on this catalog"):
        compact_table(lake, OnePerDelivery(home / "catalog.duckdb"), "finance", "expense_reports", version="v",
                      sort_by=None, retention_s=0, now_ns=0)
