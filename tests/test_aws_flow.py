"""``PLATFORM_ENV=test`` against the AWS stand-in (moto server over HTTP): the bundled samples put
into the S3 ingress prefix are picked up by the same sensors, landed by a server-side copy, staged
by the same engine into S3 and registered in Glue, with the same staged and quarantined rows as
the local environment. Nothing in the asset code changes between the two: only the environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import boto3
import dagster as dg
import pyarrow.parquet as pq
import pytest
from aws_stand_in import deploy_stack
from support import SAMPLES, dataset_defs, execute_request, ingest, request_files
from test_aurora_serving import PASSWORD, tls_server

from core.zones import all_datasets, load_zones
from infra.stand_in import point_at_stand_in, provision
from resources.environment import ENVIRONMENTS_DIR, load_environment, split_s3_uri
from resources.platform import PlatformResource

pytestmark = pytest.mark.slow
PII_KEY = "Pl4nted-pii-key-of-the-test-environment"

DATASETS = ("mobility__yellow_trips", "mobility__taxi_zones", "finance__expense_reports")


def _samples(dataset_id: str) -> list[Path]:
    zone, name = dataset_id.split("__")
    return sorted(p for p in (SAMPLES / zone / name).iterdir() if p.is_file())


@pytest.fixture
def test_env(aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The shipped test.yaml on the stand-in, its resources created by deploying the stack that
    ``cli infra render --env test`` generates (so the template and the code cannot disagree)."""
    d = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS_DIR, d)
    # Files are put whole, so the test need not wait for them to settle.
    (d / "test.yaml").write_text((d / "test.yaml").read_text().replace("settle_seconds: 30", "settle_seconds: 0"))
    monkeypatch.setenv("PLATFORM_ENVIRONMENTS_DIR", str(d))
    monkeypatch.setenv("PLATFORM_ENV", "test")
    # The platform's clients act in the environment's account (moto keeps accounts apart).
    monkeypatch.setenv("MOTO_ACCOUNT_ID", "222222222222")
    load_environment.cache_clear()
    env = load_environment("test", str(tmp_path / "home"), str(d))
    # Bucket policies: see aws_stand_in.create_skipped_resources (evaluated in test_infra instead).
    stack = deploy_stack(env, load_zones(), "lake-test", bucket_policies=False)
    yield env, stack
    load_environment.cache_clear()


def _put_into_ingress(env, dataset_id: str, path: Path) -> None:
    zone, name = dataset_id.split("__")
    bucket, prefix = split_s3_uri(env.ingress.root)
    boto3.client("s3", region_name=env.aws.region).put_object(
        Bucket=bucket, Key=f"{prefix}/{zone}/{name}/{path.name}", Body=path.read_bytes(),
        ServerSideEncryption="aws:kms", SSEKMSKeyId=env.lake.kms_key_id)


def _run_sensor(dataset_id: str, instance: dg.DagsterInstance, platform: PlatformResource, cursor: str | None):
    defs = dataset_defs(dataset_id)
    sensor = next(s for s in load_sensors() if s.name == f"{dataset_id}__ingress")
    if cursor:  # every tick here lists the folder, as when the sweep is due (ingress events aside)
        cursor = json.dumps(json.loads(cursor) | {"swept_at_ns": 1})
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"platform": platform})
    result = sensor(ctx)
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return defs, result


def load_sensors():
    from support import load_definitions_module

    return list(load_definitions_module().defs.sensors)


def _objects(env) -> dict[str, dict]:
    s3 = boto3.client("s3", region_name=env.aws.region)
    out = {}
    for uri in (env.ingress.root, *env.lake.zones.values()):
        bucket, _ = split_s3_uri(uri)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                out[f"s3://{bucket}/{o['Key']}"] = s3.head_object(Bucket=bucket, Key=o["Key"])
    return out


def test_samples_flow_end_to_end_on_the_stand_ins_as_they_do_locally(test_env, tls_stand_ins, tls_postgres,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``PLATFORM_ENV=test`` end to end: every bundled sample from the S3 ingress prefix through
    landing and staging (S3, Glue), with the same staged and quarantined rows as ``local``; then
    the warehouse (the Redshift code; dbt's postgres target on the stand-in), ods and analytics, and
    the serving tables, reached with Secrets Manager credentials over verified TLS; each zone's
    analysts read their own zone only, and no raw PII column (the grants of ``cli infra grants``
    and the warehouse's column grants)."""
    from test_modelled_zones import modelled_assets

    from resources.pii import postgres_options

    _, stack = test_env
    env = tls_stand_ins
    # The stand-in's PII key reaches PostgreSQL sessions as on the postgres target (resources/pii.py);
    # Redshift reads it from its key table instead.
    monkeypatch.setenv("PGOPTIONS", postgres_options("aws-stand-in-key"))
    platform = PlatformResource(environment="test", warehouse_copy="postgres_stdin")
    instance = dg.DagsterInstance.ephemeral()
    local_home = tmp_path / "local"
    local_home.mkdir()
    staged_here: dict[str, dict[str, tuple[int, int]]] = {}
    for dataset_id in DATASETS:
        for path in _samples(dataset_id):
            _put_into_ingress(env, dataset_id, path)
        defs, result = _run_sensor(dataset_id, instance, platform, None)
        requests = [r for r in result.run_requests if r.job_name == defs.job.name]
        # The sensor lands several new files per run (a range of partitions), each with its own verdicts.
        files = {f["partition_key"]: f["ingress_file"] for r in requests
                 for f in r.run_config["ops"][defs.op_name]["config"].get("batch") or []}
        files |= {r.partition_key: r.tags["platform/source_file"] for r in requests if r.partition_key}
        assert sorted(files.values()) == sorted(p.name for p in _samples(dataset_id)), [r.tags for r in requests]
        staged_here[dataset_id] = {}
        runs = [execute_request(defs, req, instance, platform) for req in requests]
        by_key: dict[str, dict] = {}
        passed: dict[str, bool] = {}
        for run in runs:
            for e in run.get_asset_materialization_events():
                m = e.event_specific_data.materialization
                by_key.setdefault(m.partition, {})[m.asset_key.path[0]] = m
            for c in run.get_asset_check_evaluations():
                passed[c.partition] = passed.get(c.partition, True) and (c.passed or not c.blocking)
        for key, name in files.items():
            local = ingest(local_home, dataset_id, SAMPLES / dataset_id.replace("__", "/") / name)
            ok = "staging" in by_key.get(key, {}) and passed.get(key, False)
            assert ok == local.success, name
            if not ok:
                continue
            m_aws = by_key[key]
            m_local = {e.event_specific_data.materialization.asset_key.path[0]: e.event_specific_data.materialization
                       for e in local.result.get_asset_materialization_events()}
            for zone in ("staging", "quarantine"):
                aws_uri = str(m_aws[zone].metadata["dagster/uri"].value)
                assert aws_uri.startswith("s3://acme-lake-test-"), aws_uri
                with platform.lake().open_input(aws_uri) as f:
                    aws_rows = pq.read_table(f)
                local_rows = pq.read_table(str(m_local[zone].metadata["dagster/uri"].value))
                assert aws_rows.num_rows == local_rows.num_rows, (name, zone)
                assert aws_rows.equals(local_rows), (name, zone)
            staged_here[dataset_id][name] = (int(m_aws["staging"].metadata["rows_staged"].value),
                                             int(m_aws["quarantine"].metadata["dagster/row_count"].value))

    # The same samples the local flow stages: trips 1776 staged / 4 quarantined, and so on.
    assert sum(s for s, _ in staged_here["mobility__yellow_trips"].values()) > 0
    # Every object in every bucket is encrypted with the environment's key; every delivered file
    # left ingress once its bytes were in landing.
    objects = _objects(env)
    assert objects
    key_arn = stack["outputs"]["LakeKeyArn"]
    for uri, head in objects.items():
        assert head.get("ServerSideEncryption") == "aws:kms", uri
        assert head.get("SSEKMSKeyId", "").endswith(env.lake.kms_key_id) or head.get("SSEKMSKeyId") == key_arn, uri
    ingress_bucket = split_s3_uri(env.ingress.root)[0]
    assert [u for u in objects if u.startswith(f"s3://{ingress_bucket}/")] == []
    # Registered in Glue: one table per dataset and zone, a partition per published file.
    glue = boto3.client("glue", region_name=env.aws.region)
    for dataset_id, files in staged_here.items():
        zone, name = dataset_id.split("__")
        table = glue.get_table(DatabaseName=f"{env.catalog.database_prefix}staging_{zone}", Name=name)["Table"]
        assert table["StorageDescriptor"]["Location"].startswith("s3://acme-lake-test-staging/")
        parts = glue.get_partitions(DatabaseName=f"{env.catalog.database_prefix}staging_{zone}", TableName=name)
        assert len(parts["Partitions"]) == len(files), dataset_id

    # The modelled zones on the warehouse, and serving.
    built = dg.materialize(modelled_assets(), instance=instance, resources={"platform": platform},
                           raise_on_error=False)
    failures = [e.message for e in built.all_events if e.event_type_value == "STEP_FAILURE"]
    assert built.success, failures
    warehouse = platform.warehouse()
    for dataset_id, files in staged_here.items():
        zone, name = dataset_id.split("__")
        rows = warehouse.row_counts({name: (f"staging_{zone}", name)})[name]
        assert rows == sum(s for s, _ in files.values()), dataset_id
    db = platform.serving()
    served = {(zone.name, model): _rows(db, zone.name, model) for zone in load_zones() for model in zone.spec.serving}
    assert served and all(served.values()), served
    events = [str(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id)]
    assert not [e for e in events if PASSWORD in e]
    # Analysts read their own zone's staging (never a raw PII column), ods, analytics and serving.
    server = tls_postgres
    readable = {
        ("analyst_finance", 'SELECT "expense_date", "amount", "_source_line" FROM staging_finance.expense_reports'),
        ("analyst_finance", "SELECT * FROM ods_finance.expense_lines"),
        ("analyst_finance", "SELECT * FROM ods_finance.base_finance__expense_reports"),  # a view: hashed keys
        ("analyst_finance", "SELECT * FROM analytics_finance.monthly_spend_by_cost_centre"),
        ("analyst_finance", "SELECT * FROM finance.monthly_spend_by_cost_centre"),
        ("analyst_mobility", "SELECT * FROM staging_mobility.yellow_trips"),  # no PII column
        ("analyst_mobility", "SELECT * FROM ods_mobility.trips"),
        ("analyst_mobility", "SELECT * FROM mobility.daily_trips_by_borough"),
    }
    refused = {
        ("analyst_finance", "SELECT employee_email FROM staging_finance.expense_reports"),
        ("analyst_finance", "SELECT employee_id FROM staging_finance.expense_reports"),
        ("analyst_finance", "SELECT * FROM staging_finance.expense_reports"),
        ("analyst_finance", "SELECT * FROM staging_finance._platform_loads"),
        ("analyst_finance", "SELECT * FROM platform_secrets.pii_key"),
        ("analyst_finance", "SELECT * FROM ods_mobility.trips"),
        ("analyst_finance", "SELECT * FROM staging_mobility.yellow_trips"),
        ("analyst_finance", "SELECT * FROM mobility.daily_trips_by_borough"),
        ("analyst_mobility", "SELECT * FROM ods_finance.expense_lines"),
        ("analyst_mobility", "SELECT * FROM finance.monthly_spend_by_cost_centre"),
    }
    assert {q: _as_analyst(server, *q) for q in readable} == {q: "ok" for q in readable}
    outcomes = {q: _as_analyst(server, *q) for q in refused}
    assert all(o.startswith("permission denied") for o in outcomes.values()), outcomes
    # The same served rows as the local environment's build of the same samples.
    local = PlatformResource(environment="local", home=str(local_home))
    try:
        assert dg.materialize(modelled_assets(), resources={"platform": local}).success
        local_db = local.serving()
        for key, rows in served.items():
            here = _rows(local_db, *key)
            assert len(here) == len(rows), key
            for a, b in zip(here, rows, strict=True):
                # Float sums differ in the last bits between DuckDB and PostgreSQL (summation order).
                assert [pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for v in a] == list(b), key
    finally:
        from resources.serving import stop_local

        stop_local(local_home)


def _roles_exist(cur) -> bool:
    cur.execute("SELECT count(*) FROM pg_roles WHERE rolname IN ('analyst_mobility', 'analyst_finance')")
    return cur.fetchone()[0] == 2


def _as_analyst(server, group: str, query: str) -> str:
    """``ok`` if the zone's analysts may run ``query``, else PostgreSQL's refusal."""
    import psycopg2

    conn = server.admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET ROLE {group}")
            cur.execute(query)
            cur.fetchall()
        return "ok"
    except psycopg2.errors.InsufficientPrivilege as e:
        return str(e).splitlines()[0]
    finally:
        conn.close()


def _rows(db, schema: str, table: str) -> list[tuple]:
    from core.names import quote_ident

    with db.connect() as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {quote_ident(schema)}.{quote_ident(table)}")
        # modelled_at is when the mart was built: the one column two builds of the same rows differ in.
        keep = [i for i, c in enumerate(cur.description) if c.name != "modelled_at"]
        return sorted((tuple(row[i] for i in keep) for row in cur.fetchall()),
                      key=lambda r: tuple(str(v) for v in r if not isinstance(v, float)))


@pytest.fixture(scope="module")
def tls_postgres():
    with tls_server() as s:
        yield s


@pytest.fixture
def tls_stand_ins(test_env, tls_postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The warehouse and the serving database of test.yaml pointed at one real PostgreSQL that
    requires verified TLS, their credentials in the stand-in's Secrets Manager (the secrets the
    stack created as placeholders get their values, as an operator would)."""

    server = tls_postgres
    d = Path(os.environ["PLATFORM_ENVIRONMENTS_DIR"])
    point_at_stand_in(d / "test.yaml", server)
    monkeypatch.setenv("PGSSLROOTCERT", str(server.ca_bundle))  # dbt-postgres's verify-full trust (the stand-in target)
    load_environment.cache_clear()
    environment = load_environment("test")
    admin = server.admin()
    with admin.cursor() as cur:
        if _roles_exist(cur):  # an earlier test of this module made them (the server is shared)
            cur.execute("DROP OWNED BY analyst_mobility, analyst_finance")
            cur.execute("DROP ROLE analyst_mobility, analyst_finance")
    admin.close()
    # The secrets and the administrator's one-time SQL, as the demo does them (infra/stand_in.py).
    provision(environment, server, PII_KEY)
    yield environment
    load_environment.cache_clear()


def test_staged_partitions_reach_the_warehouse_and_serving_over_tls(test_env, tls_stand_ins, capsys,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A delivery on S3 → landing → staging (Glue) → the warehouse through the Redshift code (COPY
    replaced by the stand-in seam only) → serving, credentials from Secrets Manager, TLS verified;
    the planted password appears in no event, log or output."""
    import logging

    caplog.set_level(logging.DEBUG)
    env = tls_stand_ins
    os.environ.pop("PGSSLROOTCERT")  # the warehouse's own ca_bundle is what verify-full checks against
    platform = PlatformResource(environment="test", warehouse_copy="postgres_stdin")
    instance = dg.DagsterInstance.ephemeral()
    for path in _samples("mobility__taxi_zones"):
        _put_into_ingress(env, "mobility__taxi_zones", path)
    defs, result = _run_sensor("mobility__taxi_zones", instance, platform, None)
    staged = 0
    for req in result.run_requests:
        run = execute_request(defs, req, instance, platform, raise_on_error=True)
        m = {e.event_specific_data.materialization.asset_key.path[0]: e.event_specific_data.materialization
             for e in run.get_asset_materialization_events()}
        staged += int(m["staging"].metadata["rows_staged"].value)
    assert staged > 0
    warehouse = platform.warehouse()
    ds = next(d for d in all_datasets() if d.id == "mobility__taxi_zones")
    warehouse.sync_staging(platform.catalog(), [ds])
    table = warehouse.read_table("staging_mobility", "taxi_zones")
    assert table.num_rows == staged
    # The PII key table redshift__keyed_hash reads, provisioned from Secrets Manager.
    assert warehouse.read_table("platform_secrets", "pii_key").column("pii_key").to_pylist() == [PII_KEY]
    warehouse.sync_staging(platform.catalog(), [ds])  # idempotent
    assert warehouse.read_table("staging_mobility", "taxi_zones").num_rows == staged
    db = platform.serving()
    served = db.export(table.select(["location_id", "borough"]), schema="mobility", name="zones_probe",
                       key=["location_id"], column_types={"location_id": "integer", "borough": "text"})
    assert served.rows == staged
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone()[0] is True
    events = [str(e) for run_id in [r.run_id for r in instance.get_runs()] for e in instance.all_logs(run_id)]
    out = capsys.readouterr()
    for text in (*events, caplog.text, out.out, out.err, repr(warehouse), repr(db)):
        assert PASSWORD not in text and PII_KEY not in text


def test_landing_is_a_server_side_copy_with_the_content_hash(test_env) -> None:
    env, _ = test_env
    path = _samples("mobility__taxi_zones")[0]
    _put_into_ingress(env, "mobility__taxi_zones", path)
    platform = PlatformResource(environment="test")
    ingress, landing = platform.ingress(), platform.lake().zone("landing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    sha = landing.land_from(ingress, ("mobility", "taxi_zones", path.name), ("x", path.name), 1, digest[:16])
    assert sha == digest
    with landing.open_input("x", path.name) as f:
        assert f.read() == path.read_bytes()


def test_the_sensor_sees_every_object_across_listing_pages(test_env) -> None:
    """1,050 objects (more than one ListObjectsV2 page) are all requested, 500 a tick, none twice;
    the ones uploaded with a SHA256 checksum are identified without being downloaded."""
    from concurrent.futures import ThreadPoolExecutor

    env, _ = test_env
    bucket, prefix = split_s3_uri(env.ingress.root)
    s3 = boto3.client("s3", region_name=env.aws.region)

    def put(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/mobility/yellow_trips/yellow_tripdata_2024-03_part{i:05d}.csv",
                      Body=f"VendorID\n{i}\n".encode(), ServerSideEncryption="aws:kms",
                      SSEKMSKeyId=env.lake.kms_key_id, **({"ChecksumAlgorithm": "SHA256"} if i % 2 else {}))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(1050)))
    platform = PlatformResource(environment="test")
    instance = dg.DagsterInstance.ephemeral()
    gets: list[str] = []
    platform.ingress().client.meta.events.register(  # the platform's own (shared) S3 client
        "before-call.s3.GetObject", lambda params, **_: gets.append(params["url_path"]))
    cursor, seen, ticks = None, [], 0
    while ticks < 5:
        _, result = _run_sensor("mobility__yellow_trips", instance, platform, None if ticks == 0 else cursor)
        cursor = result.cursor
        ticks += 1
        batch = [f for r in result.run_requests for f in request_files(r)]
        if not batch:
            break
        assert len(batch) <= env.sensors.max_files_per_tick
        seen += batch
    assert ticks == 4  # 500 + 500 + 50, then nothing new
    assert len(seen) == len(set(seen)) == 1050
    assert len(gets) == 525  # only the objects without a checksum were read, each once
