"""The file-arrival sensor, as a table of cursor states, then the real sensor on a real instance."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import dagster as dg
import pytest
from support import dataset_defs

from assets.sensors import CURSOR_CAP, Cursor, is_temporary, partition_key, plan_tick, split_partition_key
from resources.lake import FileEntry, filesystem_for, list_files, sha256_of
from resources.platform import PlatformResource

NOW = 10_000 * 10**9
OLD = NOW - 60 * 10**9  # settled a minute ago
PATTERN = "yellow_tripdata_*.csv"


def f(name: str, size: int = 10, mtime: int = OLD) -> FileEntry:
    return FileEntry(f"/in/{name}", name, size, mtime)


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

# (case, listing, cursor files, known partition keys, expected requests, expected duplicates, expected waiting)
TABLE = [
    ("empty folder", [], {}, [], [], [], []),
    ("new file", [f(A)], {}, [], [A], [], []),
    ("handled file unchanged", [f(A)], {A: [10, OLD]}, [partition_key(A, digest(A))], [], [], []),
    ("handled file rewritten (new size)", [f(A, size=11)], {A: [10, OLD]}, [], [A], [], []),
    ("hidden temp file", [f(".yellow_tripdata_x.csv.tmp")], {}, [], [], [], []),
    ("partial upload suffix", [f("yellow_tripdata_x.csv.part")], {}, [], [], [], []),
    ("still being written", [f(A, mtime=NOW - 10**9)], {}, [], [], [], [A]),
    ("re-delivery under a new name", [f(B)], {}, [partition_key(A, digest(A))], [], [B], []),
    ("two new files", [f(A), f(B, mtime=OLD + 1)], {}, [], [A, B], [], []),
]


@pytest.mark.parametrize(("case", "listing", "cursor", "known", "requests", "duplicates", "waiting"),
                         TABLE, ids=[t[0] for t in TABLE])
def test_tick_table(case, listing, cursor, known, requests, duplicates, waiting) -> None:
    hashes = {B: digest(A)} if case.startswith("re-delivery") else None
    p = plan(listing, Cursor(files=cursor), known, hashes=hashes)
    assert [r.file.name for r in p.requests] == requests
    assert [d[0].name for d in p.duplicates] == duplicates
    assert [w.name for w in p.waiting] == waiting
    # The cursor remembers exactly the handled files still present; waiting files are not remembered.
    assert set(p.cursor.files) == {e.name for e in listing if not is_temporary(e.name)} - set(waiting)


def test_duplicate_log_line_names_the_earlier_file() -> None:
    p = plan([f(B)], known=[partition_key(A, digest(A))], hashes={B: digest(A)})
    lines = p.log_lines("ingress/mobility/yellow_trips")
    assert any(f"skipping {B}: byte-identical to the earlier delivery {A}" in line for line in lines)


def test_same_bytes_twice_in_one_tick_gives_one_run() -> None:
    p = plan([f(A), f(B, mtime=OLD + 1)], hashes={B: digest(A)})
    assert [r.file.name for r in p.requests] == [A]
    assert [d[0].name for d in p.duplicates] == [B]


def test_pattern_mismatch_is_logged_once() -> None:
    first = plan([f("notes.txt")])
    assert [i[0].name for i in first.ignored] == ["notes.txt"]
    second = plan([f("notes.txt")], first.cursor)
    assert second.ignored == [] and second.requests == []


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


def test_sensor_on_a_real_folder_and_instance(home: Path) -> None:
    defs = dataset_defs("mobility__yellow_trips")
    ingress = home / "ingress" / "mobility" / "yellow_trips"
    ingress.mkdir(parents=True)
    sample = Path(__file__).resolve().parent.parent / "samples/mobility/yellow_trips/yellow_tripdata_2019-06_sample.csv"
    (ingress / sample.name).write_bytes(sample.read_bytes())
    (ingress / ".upload.tmp").write_bytes(b"partial")
    old = time.time() - 60
    for p in ingress.iterdir():
        os.utime(p, (old, old))
    resource = PlatformResource(environment="local", home=str(home))
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"platform": resource})
        result = defs.sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        [req] = result.run_requests
        sha = sha256_of(*_fs(ingress / sample.name))
        assert req.run_key == f"mobility__yellow_trips:{sha}"
        assert req.partition_key == partition_key(sample.name, sha)
        assert req.tags["platform/source_file"] == sample.name
        assert req.run_config["ops"]["landing__mobility__yellow_trips"]["config"]["ingress_path"].endswith(sample.name)
        assert result.dynamic_partitions_requests[0].partition_keys == [req.partition_key]
        # Apply the partition request as the daemon would, then tick again with the cursor.
        instance.add_dynamic_partitions(defs.partitions.name, [req.partition_key])
        (ingress / "yellow_tripdata_2019-06_copy.csv").write_bytes(sample.read_bytes())
        os.utime(ingress / "yellow_tripdata_2019-06_copy.csv", (old, old))
        ctx2 = dg.build_sensor_context(instance=instance, resources={"platform": resource}, cursor=result.cursor)
        result2 = defs.sensor(ctx2)
        assert result2.run_requests == []  # the original is pending, the copy is a duplicate


def _fs(path: Path):
    return filesystem_for(str(path))


def test_list_files_ignores_directories(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.csv").write_text("x")
    assert [e.name for e in list_files(*_fs(tmp_path))] == ["a.csv"]
    assert list_files(*_fs(tmp_path / "absent")) == []
