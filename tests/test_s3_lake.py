"""The S3 backend of the lake storage against the moto server (real HTTP, boto3 through
AWS_ENDPOINT_URL only): SSE-KMS on every write, write-once landing, no partial objects,
pagination, server-side landing with its hash, and a seekable reader pyarrow can use."""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import InvalidName
from resources.aws import AwsSession
from resources.lake.base import ContentMismatch, Lake
from resources.lake.local import LocalStore
from resources.lake.s3 import META_DELIVERED, S3Store

REGION = "eu-west-1"
BUCKET = "lake-test-bucket"
MiB = 1 << 20


class Boom(Exception):
    pass


@pytest.fixture
def s3env(aws):
    """A bucket without default encryption (so SSE on an object can only come from the request)
    and a KMS key with an alias."""
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    kms = boto3.client("kms", region_name=REGION)
    key_id = kms.create_key(Description="lake")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/lake-test", TargetKeyId=key_id)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return s3, key_id


def store(key_id: str, prefix: str = "lake/landing", **kw) -> S3Store:
    return S3Store(f"s3://{BUCKET}/{prefix}", AwsSession(REGION), key_id, **kw)


def body(s3, key: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def all_keys(s3) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def test_uris_keep_their_scheme_and_parts_are_validated(s3env) -> None:
    _, key_id = s3env
    st = store(key_id)
    assert st.uri() == f"s3://{BUCKET}/lake/landing"
    assert st.uri("mobility", "trips", "a.csv") == f"s3://{BUCKET}/lake/landing/mobility/trips/a.csv"
    assert S3Store(f"s3://{BUCKET}", AwsSession(REGION), key_id).uri("a") == f"s3://{BUCKET}/a"
    for bad in ("", ".", "..", "a/b", "a\0b"):
        with pytest.raises(InvalidName):
            st.uri("x", bad)
    lake = Lake({"landing": st, "staging": store(key_id, "lake/staging")})
    assert lake.parts_of(st.uri("z", "d", "f.csv")) == ("z", "d", "f.csv")
    assert st.info("nothing", "here") is None
    st.delete("nothing", "here")  # no error
    assert st.list("nothing") == [] and st.folders("nothing") == [] and list(st.walk("nothing", limit=5)) == []


def test_every_object_written_by_every_method_carries_sse_kms(s3env, tmp_path: Path) -> None:
    s3, key_id = s3env
    st = store(key_id, upload_threshold=5 * MiB, upload_part_size=5 * MiB,
               multipart_copy_threshold=6 * MiB, copy_part_size=5 * MiB)
    big = os.urandom(11 * MiB)
    with st.open_output("_tmp", "small.parquet") as f:
        f.write(b"small")
    with st.open_output("_tmp", "big.bin") as f:  # multipart through upload_fileobj
        f.write(big)
    assert s3.head_object(Bucket=BUCKET, Key="lake/landing/_tmp/big.bin")["ETag"].strip('"').endswith("-3")
    st.publish(("_tmp", "small.parquet"), ("z", "d", "v1.parquet"))
    st.publish(("_tmp", "big.bin"), ("z", "d", "big.bin"))  # multipart copy
    with st.write_once(("land", "a.csv"), 1) as f:
        f.write(b"a,b\n1,2\n")
    with st.write_once(("land", "big.csv"), 2) as f:  # multipart, completed with If-None-Match
        f.write(big)
    st.move_aside(("land", "a.csv"), ("aside",))
    st.land_from(st, ("land", "big.csv"), ("landed", "big.csv"), 3, hashlib.sha256(big).hexdigest()[:16])
    st.land_from(st, ("z", "d", "v1.parquet"), ("landed", "v1.parquet"), 4, hashlib.sha256(b"small").hexdigest())
    local = LocalStore(tmp_path)
    with local.open_output("in", "x.csv") as f:
        f.write(b"x\n")
    st.land_from(local, ("in", "x.csv"), ("landed", "x.csv"), 5, hashlib.sha256(b"x\n").hexdigest())
    keys = all_keys(s3)
    assert sorted(keys) == sorted(f"lake/landing/{k}" for k in (
        "z/d/v1.parquet", "z/d/big.bin", "land/big.csv", "aside/a.csv", "landed/big.csv", "landed/v1.parquet",
        "landed/x.csv"))
    for key in keys:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert key_id in head["SSEKMSKeyId"], key  # moto echoes the id sent; real S3 the key's ARN
    assert body(s3, "lake/landing/z/d/big.bin") == big == body(s3, "lake/landing/landed/big.csv")


def test_a_landing_key_cannot_be_overwritten(s3env) -> None:
    s3, key_id = s3env
    st = store(key_id)
    with st.write_once(("z", "d", "p", "a.csv"), 1_700_000_000_123_456_789) as f:
        f.write(b"first")
    with pytest.raises(FileExistsError), st.write_once(("z", "d", "p", "a.csv"), 5) as f:
        f.write(b"second")
    assert body(s3, "lake/landing/z/d/p/a.csv") == b"first"
    assert st.delivered_at_ns("z", "d", "p", "a.csv") == 1_700_000_000_123_456_789
    head = s3.head_object(Bucket=BUCKET, Key="lake/landing/z/d/p/a.csv")
    assert head["Metadata"] == {META_DELIVERED: "1700000000123456789"}
    info = st.info("z", "d", "p", "a.csv")
    assert info is not None and info.size == 5 and info.etag == hashlib.md5(b"first").hexdigest()
    assert abs(info.mtime_ns - time.time_ns()) < 120 * 10**9
    # an object written without the metadata falls back to its LastModified
    s3.put_object(Bucket=BUCKET, Key="lake/landing/plain.csv", Body=b"x")
    assert st.delivered_at_ns("plain.csv") == st.info("plain.csv").mtime_ns


def test_a_large_write_once_is_multipart_and_still_written_only_once(s3env) -> None:
    s3, key_id = s3env
    st = store(key_id, upload_threshold=5 * MiB, upload_part_size=5 * MiB)
    data = os.urandom(12 * MiB)
    with st.write_once(("big.csv",), 7) as f:
        f.write(data)
    head = s3.head_object(Bucket=BUCKET, Key="lake/landing/big.csv")
    assert head["ETag"].strip('"').endswith("-3")  # three parts: the multipart path ran
    with pytest.raises(FileExistsError), st.write_once(("big.csv",), 8) as f:
        f.write(b"other" * MiB * 2)
    assert body(s3, "lake/landing/big.csv") == data and st.delivered_at_ns("big.csv") == 7
    uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert uploads == []  # the refused upload was aborted
    # below the default threshold one conditional PutObject, from a spool that went to disk (> 8 MiB)
    mid = os.urandom(10 * MiB)
    with store(key_id).write_once(("mid.csv",), 11) as f:
        f.write(mid)
    head = s3.head_object(Bucket=BUCKET, Key="lake/landing/mid.csv")
    assert "-" not in head["ETag"] and body(s3, "lake/landing/mid.csv") == mid
    with pytest.raises(FileExistsError), store(key_id).write_once(("mid.csv",), 12) as f:
        f.write(b"x" * (10 * MiB))
    assert body(s3, "lake/landing/mid.csv") == mid


def test_an_exception_mid_write_leaves_no_object_and_the_previous_version_intact(s3env) -> None:
    s3, key_id = s3env
    st = store(key_id)
    with pytest.raises(Boom), st.open_output("staging", "new.parquet") as f:
        f.write(b"partial")
        raise Boom
    assert st.info("staging", "new.parquet") is None
    with st.open_output("staging", "v.parquet") as f:
        f.write(b"version 1")
    with pytest.raises(Boom), st.open_output("staging", "v.parquet") as f:
        f.write(b"version 2, half")
        raise Boom
    assert body(s3, "lake/landing/staging/v.parquet") == b"version 1"
    with pytest.raises(Boom), st.write_once(("land", "a.csv"), 1) as f:
        f.write(b"partial")
        raise Boom
    assert st.info("land", "a.csv") is None
    # a writer dropped without closing uploads nothing either
    f = st.open_output("staging", "dropped.parquet")
    f.write(b"partial")
    del f
    assert st.info("staging", "dropped.parquet") is None
    assert all_keys(s3) == ["lake/landing/staging/v.parquet"]


def test_list_walk_and_folders_paginate_past_a_thousand_keys(s3env) -> None:
    s3, key_id = s3env

    def put(i: int) -> None:
        s3.put_object(Bucket=BUCKET, Key=f"lake/landing/in/many/f{i:05d}.csv", Body=b"x")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(1100)))
    for i in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"lake/landing/in/many/sub{i}/deep/g.csv", Body=b"yy")
    s3.put_object(Bucket=BUCKET, Key="lake/landing/in/many/sub0/", Body=b"")  # a console "folder" marker
    for st in (store(key_id), store(key_id, page_size=250)):
        files = st.list("in", "many")
        assert len(files) == 1100 and {f.parts[:2] for f in files} == {("in", "many")}
        assert all(f.size == 1 and f.etag for f in files)
        walked = list(st.walk("in", limit=10_000))
        assert len(walked) == 1103
        assert ("in", "many", "sub2", "deep", "g.csv") in {f.parts for f in walked}
        assert len(list(st.walk("in", limit=1050))) == 1050
        assert st.folders("in", "many") == ["sub0", "sub1", "sub2"]
        assert st.folders("in") == ["many"]


def test_land_from_s3_copies_server_side_and_returns_the_sha256(s3env) -> None:
    s3, key_id = s3env
    ingress = store(key_id, "ingress")
    landing = store(key_id, "lake/landing")
    data = b"a,b\n" + b"1,2\n" * 10_000
    s3.put_object(Bucket=BUCKET, Key="ingress/z/d/a.csv", Body=data)
    digest = hashlib.sha256(data).hexdigest()
    assert landing.land_from(ingress, ("z", "d", "a.csv"), ("z", "d", "p", "a.csv"), 42, digest[:16]) == digest
    assert body(s3, "lake/landing/z/d/p/a.csv") == data
    assert landing.delivered_at_ns("z", "d", "p", "a.csv") == 42
    with pytest.raises(FileExistsError):
        landing.land_from(ingress, ("z", "d", "a.csv"), ("z", "d", "p", "a.csv"), 43, digest[:16])
    assert landing.delivered_at_ns("z", "d", "p", "a.csv") == 42
    # the source changed after it was picked up: refused, nothing left behind
    with pytest.raises(ContentMismatch) as e:
        landing.land_from(ingress, ("z", "d", "a.csv"), ("z", "d", "q", "a.csv"), 44, "0" * 16)
    assert e.value.actual_sha256 == digest
    assert landing.info("z", "d", "q", "a.csv") is None
    assert ingress.info("z", "d", "a.csv") is not None  # the source stays where it was


def test_land_from_s3_above_the_threshold_is_a_multipart_copy(s3env) -> None:
    s3, key_id = s3env
    ingress = store(key_id, "ingress")
    landing = store(key_id, "lake/landing", multipart_copy_threshold=6 * MiB, copy_part_size=5 * MiB)
    data = os.urandom(13 * MiB)
    s3.put_object(Bucket=BUCKET, Key="ingress/big.csv", Body=data)
    digest = hashlib.sha256(data).hexdigest()
    assert landing.land_from(ingress, ("big.csv",), ("p", "big.csv"), 9, digest[:16]) == digest
    head = s3.head_object(Bucket=BUCKET, Key="lake/landing/p/big.csv")
    assert head["ETag"].strip('"').endswith("-3") and head["Metadata"] == {META_DELIVERED: "9"}
    assert body(s3, "lake/landing/p/big.csv") == data
    with pytest.raises(ContentMismatch):
        landing.land_from(ingress, ("big.csv",), ("q", "big.csv"), 9, "f" * 16)
    assert landing.info("q", "big.csv") is None
    with pytest.raises(FileExistsError):
        landing.land_from(ingress, ("big.csv",), ("p", "big.csv"), 10, digest[:16])


def test_publish_and_move_aside(s3env) -> None:
    s3, key_id = s3env
    st = store(key_id)
    for version in (b"v1", b"v2"):
        with st.open_output("_tmp", "x.tmp") as f:
            f.write(version)
        st.publish(("_tmp", "x.tmp"), ("z", "d", "p", "x.parquet"), read_only=True)
        assert body(s3, "lake/landing/z/d/p/x.parquet") == version and st.info("_tmp", "x.tmp") is None
    for i, content in enumerate((b"one", b"two", b"three")):
        s3.put_object(Bucket=BUCKET, Key="lake/landing/in/a.csv", Body=content)
        dest = st.move_aside(("in", "a.csv"), ("_set_aside", "z"))
        assert dest == ("_set_aside", "z", "a.csv" if i == 0 else f"a.{i}.csv")
        assert body(s3, "lake/landing/" + "/".join(dest)) == content and st.info("in", "a.csv") is None
    assert body(s3, "lake/landing/_set_aside/z/a.csv") == b"one"  # never overwritten


def test_sha256_streams_the_object(s3env) -> None:
    s3, key_id = s3env
    data = os.urandom(3 * MiB + 17)
    s3.put_object(Bucket=BUCKET, Key="lake/landing/h.bin", Body=data)
    assert store(key_id).sha256("h.bin") == hashlib.sha256(data).hexdigest()
    with pytest.raises(FileNotFoundError):
        store(key_id).sha256("missing.bin")
    with pytest.raises(FileNotFoundError):
        store(key_id).open_input("missing.bin")


def test_open_input_reads_parquet_and_seeks_anywhere(s3env) -> None:
    s3, key_id = s3env
    st = store(key_id, read_ahead=64 * 1024)
    table = pa.table({"i": pa.array(range(200_000), pa.int64()), "s": [f"row {i}" for i in range(200_000)]})
    with st.open_output("staging", "t.parquet") as f:
        pq.write_table(table, f, row_group_size=30_000)
    with st.open_input("staging", "t.parquet") as f:
        pf = pq.ParquetFile(f)
        assert pf.num_row_groups == 7
        assert pf.read_row_group(3, columns=["s"]).column("s")[0].as_py() == "row 90000"
        assert pf.read().equals(table)
    data = body(s3, "lake/landing/staging/t.parquet")
    rng = random.Random(7)
    with st.open_input("staging", "t.parquet") as f:
        assert f.seekable() and f.readable()
        assert f.seek(0, io.SEEK_END) == len(data)
        assert f.read(10) == b""
        for _ in range(300):
            at, n = rng.randrange(len(data)), rng.choice([1, 7, 100, 5000, 70_000, 300_000])
            f.seek(at)
            assert f.read(n) == data[at: at + n]
            assert f.tell() == min(at + n, len(data))
        f.seek(-8, io.SEEK_END)
        assert f.read() == data[-8:]
        f.seek(100)
        f.seek(50, io.SEEK_CUR)
        buf = bytearray(1000)
        assert f.readinto(buf) == 1000 and bytes(buf) == data[150:1150]
    assert f.closed


def test_reading_fifty_megabytes_is_not_pathologically_slow(s3env) -> None:
    s3, key_id = s3env
    data = os.urandom(50 * MiB)
    s3.put_object(Bucket=BUCKET, Key="lake/landing/fifty.bin", Body=data)
    st = store(key_id)
    h = hashlib.sha256()
    started = time.perf_counter()
    with st.open_input("fifty.bin") as f:
        while chunk := f.read(1 << 20):  # the hashing pattern: 1 MiB reads through the read-ahead
            h.update(chunk)
    small_reads = time.perf_counter() - started
    started = time.perf_counter()
    with st.open_input("fifty.bin") as f:
        while f.read(8 << 20):  # the staging engine's pattern: 8 MiB reads
            pass
    large_reads = time.perf_counter() - started
    print(f"\n[s3] 50 MiB through open_input: {small_reads:.2f} s in 1 MiB reads, {large_reads:.2f} s in 8 MiB reads")
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert small_reads < 30 and large_reads < 30


def test_sha256_comes_from_the_full_object_checksum_without_reading_the_object(aws, tmp_path) -> None:
    """An object uploaded with a SHA256 checksum is identified from HeadObject alone: the sensor
    does not download it. Without one, it is read once."""
    import hashlib

    import boto3

    from resources.aws import AwsSession
    from resources.lake.s3 import S3Store

    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="checksum-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    body = b"VendorID,x\n1,2\n" * 1000
    s3.put_object(Bucket="checksum-bucket", Key="in/with.csv", Body=body, ChecksumAlgorithm="SHA256")
    s3.put_object(Bucket="checksum-bucket", Key="in/without.csv", Body=body)
    store = S3Store("s3://checksum-bucket/in", AwsSession("eu-west-1"), "alias/k")
    gets: list[str] = []
    store.client.meta.events.register("before-call.s3.GetObject", lambda params, **_: gets.append(params["url_path"]))
    assert store.sha256("with.csv") == hashlib.sha256(body).hexdigest()
    assert gets == []
    assert store.sha256("without.csv") == hashlib.sha256(body).hexdigest()
    assert gets == ["/in/without.csv"]
