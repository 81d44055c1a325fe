"""The file-arrival sensor, as a table of cursor states, then the real sensor on a real instance."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import dagster as dg
import pytest
from support import dataset_defs

from assets.sensors import SET_ASIDE_JOB, SET_ASIDE_OP, build_sensor
from core.arrival import CURSOR_CAP, Cursor, FileEntry, is_temporary, partition_key, plan_tick, split_partition_key
from resources.lake.local import LocalStore
from resources.platform import PlatformResource

NOW = 1_000_000 * 10**9
OLD = NOW - 60 * 10**9  # settled a minute ago
PATTERN = "yellow_tripdata_*.csv"


def f(name: str, size: int = 10, mtime: int = OLD, etag: str | None = None) -> FileEntry:
    return FileEntry(f"/in/{name}", name, size, mtime, etag)


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def plan(listing, cursor=None, known=(), max_files=500, hashes=None):
    hashes = hashes or {}
    return plan_tick(
        listing, cursor or Cursor(), now_ns=NOW, settle_seconds=5, max_files=max_files, pattern=PATTERN,
        known_keys=known, hash_file=lambda e: hashes.get(e.name, digest(e.name)),
    )


A = "yellow_tripdata_2024-01.csv"
B = "yellow_tripdata_2024-02.csv"

DAYS_AGO_2 = NOW - 2 * 86400 * 10**9

# (case, listing, cursor files, known partition keys, expected requests, expected set-asides, expected waiting)
TABLE = [
    ("empty folder", [], {}, [], [], [], []),
    ("new file", [f(A)], {}, [], [A], [], []),
    ("handled file unchanged", [f(A)], {A: [10, OLD]}, [partition_key(A, digest(A))], [], [], []),
    ("handled file rewritten (new size)", [f(A, size=11)], {A: [10, OLD]}, [], [A], [], []),
    ("hidden temp file", [f(".yellow_tripdata_x.csv.tmp")], {}, [], [], [], []),
    ("partial upload suffix", [f("yellow_tripdata_x.csv.part")], {}, [], [], [], []),
    ("abandoned upload (a day unchanged)", [f("yellow_tripdata_x.csv.part", mtime=DAYS_AGO_2)], {}, [], [],
     [("yellow_tripdata_x.csv.part", "temporary")], []),
    ("still being written", [f(A, mtime=NOW - 10**9)], {}, [], [], [], [A]),
    ("re-delivery under a new name", [f(B)], {}, [partition_key(A, digest(A))], [], [(B, "duplicate")], []),
    ("name not matching the pattern", [f("notes.txt")], {}, [], [], [("notes.txt", "name")], []),
    ("two new files", [f(A), f(B, mtime=OLD + 1)], {}, [], [A, B], [], []),
    # S3: LastModified has one-second resolution, listings are not in time order, and a key can be
    # rewritten in place; the planner compares each object's own signature, never a "since" mark.
    ("equal timestamps", [f(A, etag="a"), f(B, etag="b")], {}, [], [A, B], [], []),
    ("a late arrival older than a handled file", [f(A, etag="a"), f(B, mtime=OLD - 10**9, etag="b")],
     {A: [10, OLD, "a"]}, [partition_key(A, digest(A))], [B], [], []),
    ("rewritten in place within the same second", [f(A, etag="a2")], {A: [10, OLD, "a1"]}, [], [A], [], []),
    ("re-uploaded identical object after it was landed", [f(A, mtime=OLD + 10**9, etag="a")], {},
     [partition_key(A, digest(A))], [], [(A, "duplicate")], []),
    ("handled object unchanged (etag)", [f(A, etag="a")], {A: [10, OLD, "a"]},
     [partition_key(A, digest(A))], [], [], []),
]


@pytest.mark.parametrize(("case", "listing", "cursor", "known", "requests", "set_aside", "waiting"),
                         TABLE, ids=[t[0] for t in TABLE])
def test_tick_table(case, listing, cursor, known, requests, set_aside, waiting) -> None:
    hashes = {B: digest(A)} if case.startswith("re-delivery") else None
    p = plan(listing, Cursor(files=cursor), known, hashes=hashes)
    assert [r.file.name for r in p.requests] == requests
    assert [(s.file.name, s.reason) for s in p.set_aside] == set_aside
    assert [w.name for w in p.waiting] == waiting
    # The cursor remembers exactly the handled files still present; waiting and young temporary
    # files are not remembered (they are looked at again).
    handled = {e.name for e in listing if not is_temporary(e.name)} - set(waiting)
    assert set(p.cursor.files) == handled | {name for name, reason in set_aside if reason == "temporary"}


def test_duplicate_log_line_names_the_earlier_file() -> None:
    p = plan([f(B)], known=[partition_key(A, digest(A))], hashes={B: digest(A)})
    lines = p.log_lines("ingress/mobility/yellow_trips")
    assert any(f"setting aside {B}: ingress/mobility/yellow_trips/{B} is byte-identical to the earlier delivery {A}"
               in line for line in lines), lines


def test_same_bytes_twice_in_one_tick_gives_one_run() -> None:
    p = plan([f(A), f(B, mtime=OLD + 1)], hashes={B: digest(A)})
    assert [r.file.name for r in p.requests] == [A]
    assert [d[0].name for d in p.duplicates] == [B]


def test_pattern_mismatch_is_set_aside_once_with_the_pattern_named() -> None:
    first = plan([f("notes.txt")])
    [aside] = first.set_aside
    assert aside.reason == "name" and aside.detail == PATTERN
    message = aside.message("ingress/mobility/yellow_trips")
    assert "ingress/mobility/yellow_trips/notes.txt does not match the dataset's file pattern" in message
    assert repr(PATTERN) in message and "not landed" in message
    second = plan([f("notes.txt")], first.cursor)  # the run moves it; until then it is not requested twice
    assert second.set_aside == [] and second.requests == []


def test_cursor_forgets_files_that_left_ingress() -> None:
    first = plan([f(A), f(B)])
    second = plan([f(B)], first.cursor, known=[r.partition_key for r in first.requests])
    assert set(second.cursor.files) == {B}


def test_max_files_per_tick_defers_the_rest_in_arrival_order() -> None:
    listing = [f(f"yellow_tripdata_{i:05d}.csv", mtime=OLD + i) for i in range(10)]
    p = plan(listing, max_files=3)
    assert [r.file.name for r in p.requests] == [e.name for e in listing[:3]]
    assert len(p.waiting) == 7
    p2 = plan(listing, p.cursor, known=[r.partition_key for r in p.requests], max_files=3)
    assert [r.file.name for r in p2.requests] == [e.name for e in listing[3:6]]


def test_ten_thousand_files_bounded_cursor_and_no_rehash(tmp_path: Path) -> None:
    listing = [f(f"yellow_tripdata_{i:05d}.csv", mtime=OLD + i) for i in range(10_000)]
    hashed: list[str] = []

    def hash_file(e: FileEntry) -> str:
        hashed.append(e.name)
        return digest(e.name)

    kw = dict(now_ns=NOW, settle_seconds=5, max_files=10_000, pattern=PATTERN, hash_file=hash_file)
    first = plan_tick(listing, Cursor(), known_keys=[], **kw)
    assert len(first.requests) == 10_000 and len(hashed) == 10_000
    assert len({r.partition_key for r in first.requests}) == 10_000
    hashed.clear()
    second = plan_tick(listing, Cursor.load(first.cursor.dump()),
                       known_keys=[r.partition_key for r in first.requests], **kw)
    assert second.requests == [] and second.duplicates == [] and hashed == []  # steady state: no I/O
    assert len(first.cursor.dump()) < 1_500_000
    assert CURSOR_CAP >= 10_000


def test_partition_key_round_trip() -> None:
    key = partition_key("yellow tripdata 2024-01.csv", "ab" * 32)
    assert key == "yellow_tripdata_2024-01.csv@abababababababab"
    assert split_partition_key(key) == ("yellow_tripdata_2024-01.csv", "abababababababab")
    with pytest.raises(ValueError, match="not a landing partition key"):
        split_partition_key("nohash.csv")


# --- the real sensor, on a real instance and real files ------------------------------------------


def _tick(defs, instance, home: Path, cursor: str | None = None) -> dg.SensorResult:
    resource = PlatformResource(environment="local", home=str(home))
    ctx = dg.build_sensor_context(instance=instance, resources={"platform": resource}, cursor=cursor)
    result = build_sensor(defs)(ctx)
    assert isinstance(result, dg.SensorResult)
    return result


def _settle(folder: Path, *names: str) -> None:
    old = time.time() - 60
    for p in folder.iterdir():
        if not names or p.name in names:
            os.utime(p, (old, old))


def test_sensor_on_a_real_folder_and_instance(home: Path) -> None:
    defs = dataset_defs("mobility__yellow_trips")
    ingress = home / "ingress" / "mobility" / "yellow_trips"
    ingress.mkdir(parents=True)
    sample = Path(__file__).resolve().parent.parent / "samples/mobility/yellow_trips/yellow_tripdata_2019-06_sample.csv"
    (ingress / sample.name).write_bytes(sample.read_bytes())
    (ingress / ".upload.tmp").write_bytes(b"partial")
    _settle(ingress)
    with dg.instance_for_test() as instance:
        result = _tick(defs, instance, home)
        [req] = result.run_requests
        sha = hashlib.sha256(sample.read_bytes()).hexdigest()
        assert req.run_key == f"mobility__yellow_trips:{sha}"
        assert req.partition_key == partition_key(sample.name, sha)
        assert req.tags["platform/source_file"] == sample.name
        landing_config = req.run_config["ops"]["land_and_stage__mobility__yellow_trips"]["config"]
        assert landing_config["ingress_file"] == sample.name
        assert landing_config["delivered_at_ns"] == (ingress / sample.name).stat().st_mtime_ns
        assert result.dynamic_partitions_requests[0].partition_keys == [req.partition_key]
        # Apply the partition request as the daemon would, then tick again with the cursor.
        instance.add_dynamic_partitions(defs.partitions.name, [req.partition_key])
        (ingress / "yellow_tripdata_2019-06_copy.csv").write_bytes(sample.read_bytes())
        (ingress / "notes.txt").write_bytes(b"not a delivery")
        _settle(ingress, "yellow_tripdata_2019-06_copy.csv", "notes.txt")
        os.utime(ingress / sample.name)  # touched while its run waits: still its run's, not a duplicate
        result2 = _tick(defs, instance, home, result.cursor)
        # The original is pending; the copy and the misnamed file are set aside, by one run that says why.
        [aside] = result2.run_requests
        assert aside.job_name == SET_ASIDE_JOB
        files = {f["name"]: f for f in aside.run_config["ops"][SET_ASIDE_OP]["config"]["files"]}
        assert {n: f["reason"] for n, f in files.items()} == {"yellow_tripdata_2019-06_copy.csv": "duplicate",
                                                              "notes.txt": "name"}
        assert all(f["dataset"] == "mobility.yellow_trips" for f in files.values())
        assert _tick(defs, instance, home, result2.cursor).run_requests == []  # asked once


def test_set_aside_job_moves_the_files_records_why_and_fails_for_the_misnamed(home: Path) -> None:
    from assets.sensors import set_aside_job

    ingress = home / "ingress" / "mobility" / "yellow_trips"
    ingress.mkdir(parents=True)
    (ingress / "notes.txt").write_bytes(b"not a delivery")
    (ingress / "yellow_tripdata_2019-06_copy.csv").write_bytes(b"same bytes as before")
    (home / "ingress" / "_set_aside" / "mobility" / "yellow_trips").mkdir(parents=True)
    (home / "ingress" / "_set_aside" / "mobility" / "yellow_trips" / "notes.txt").write_bytes(b"an earlier one")
    _settle(ingress)
    defs = dataset_defs("mobility__yellow_trips")
    with dg.instance_for_test() as instance:
        same = hashlib.sha256(b"same bytes as before").hexdigest()
        earlier = partition_key("yellow_tripdata_2019-06_sample.csv", same)
        instance.add_dynamic_partitions(defs.partitions.name, [earlier])
        result = _tick(defs, instance, home)
        [aside] = result.run_requests
        run = set_aside_job.execute_in_process(
            run_config=aside.run_config, instance=instance, raise_on_error=False,
            resources={"platform": PlatformResource(environment="local", home=str(home))})
        observations = instance.fetch_observations(dg.AssetKey(["landing", "mobility", "landing_yellow_trips"]),
                                                   limit=10).records
    assert not run.success
    failure = next(e for e in run.all_events if e.is_step_failure).step_failure_data
    message = failure.error.message
    assert "1 delivered file(s) set aside, not processed" in message
    assert "ingress/mobility/yellow_trips/notes.txt does not match the dataset's file pattern " \
           "'yellow_tripdata_*.csv'" in message
    assert failure.user_failure_data.metadata["error_kind"].value == "terminal"
    assert list(ingress.iterdir()) == []  # nothing left to look at again, nothing deleted:
    aside_dir = home / "ingress" / "_set_aside" / "mobility" / "yellow_trips"
    assert (aside_dir / "notes.txt").read_bytes() == b"an earlier one"
    assert (aside_dir / "notes.1.txt").read_bytes() == b"not a delivery"  # never overwritten
    assert (aside_dir / "yellow_tripdata_2019-06_copy.csv").read_bytes() == b"same bytes as before"
    reasons = {r.asset_observation.metadata["set_aside"].value: r.asset_observation.metadata["reason"].value
               for r in observations}
    assert reasons == {"notes.txt": "name", "yellow_tripdata_2019-06_copy.csv": "duplicate"}


def test_strays_outside_the_dataset_folders_are_set_aside(home: Path) -> None:
    from assets.sensors import build_strays_sensor
    from core.zones import all_datasets

    root = home / "ingress"
    for rel in ("top.csv", "mobility/loose.csv", "mobility/yellow_trip/typo.csv", "sales/orders.csv",
                "mobility/yellow_trips/2024/jan.csv", "mobility/yellow_trips/yellow_tripdata_ok.csv",
                "_set_aside/mobility/yellow_trips/old.txt", "mobility/.partial.tmp"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (time.time() - 60, time.time() - 60))
    sensor = build_strays_sensor(all_datasets())
    resource = PlatformResource(environment="local", home=str(home))
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"platform": resource})
        result = sensor(ctx)
        [req] = result.run_requests
        files = {"/".join([*f["folder"], f["name"]]): f["message"]
                 for f in req.run_config["ops"][SET_ASIDE_OP]["config"]["files"]}
        # The dataset's own file, what is already set aside and a young temporary file are not strays.
        assert set(files) == {"top.csv", "mobility/loose.csv", "mobility/yellow_trip/typo.csv", "sales/orders.csv",
                              "mobility/yellow_trips/2024/jan.csv"}
        assert "there is no insight zone 'sales'" in files["sales/orders.csv"]
        assert "insight zone 'mobility' has no dataset 'yellow_trip'" in files["mobility/yellow_trip/typo.csv"]
        assert "in a subfolder of ingress/mobility/yellow_trips/" in files["mobility/yellow_trips/2024/jan.csv"]
        ctx2 = dg.build_sensor_context(instance=instance, resources={"platform": resource}, cursor=result.cursor)
        assert sensor(ctx2).run_requests == []


def test_local_store_lists_files_not_directories(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.csv").write_text("x")
    store = LocalStore(tmp_path)
    assert [e.name for e in store.list()] == ["a.csv"]
    assert store.list("absent") == []
