"""Ingress events on the AWS stand-in: the environment's stack makes S3 announce every object
created under the ingress prefix on an SQS queue (moto in server mode sends the notifications), the
``ingress__events`` sensor starts one ingest run per announced file, and the dataset sensors' sweep
(a listing every ``sensors.sweep_seconds``) catches what a lost notification would have announced.
Lost, duplicated and reordered notifications change when a file is requested, never whether or how
often."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import dagster as dg
import pytest
from support import SAMPLES, load_definitions_module, request_files
from test_aws_flow import test_env  # noqa: F401 - the fixture: the shipped test.yaml, its stack deployed

from resources.environment import load_environment, split_s3_uri
from resources.ingress_events.sqs import SqsIngressEvents
from resources.platform import PlatformResource

TRIPS = SAMPLES / "mobility/yellow_trips"
FILES = ["yellow_tripdata_2019-06_sample.csv", "yellow_tripdata_2021-01_sample.csv"]


def put(env, name: str, body: bytes, folder: str = "mobility/yellow_trips") -> str:
    bucket, prefix = split_s3_uri(env.ingress.root)
    key = f"{prefix}/{folder}/{name}"
    boto3.client("s3", region_name=env.aws.region).put_object(
        Bucket=bucket, Key=key, Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId=env.lake.kms_key_id)
    return key


def queue_url(env) -> str:
    return boto3.client("sqs", region_name=env.aws.region).get_queue_url(
        QueueName=env.ingress.events.queue_name)["QueueUrl"]


def lose_notifications(env) -> int:
    """Take every waiting message off the queue unseen (as if S3's notifications were lost)."""
    sqs, url, lost = boto3.client("sqs", region_name=env.aws.region), queue_url(env), 0
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            lost += "s3:TestEvent" not in m["Body"]
    return lost


def sensor(name: str) -> dg.SensorDefinition:
    return next(s for s in load_definitions_module().defs.sensors if s.name == name)


def tick(name: str, instance: dg.DagsterInstance, cursor: str | None = None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                  resources={"platform": PlatformResource(environment="test")})
    result = sensor(name)(ctx)
    if isinstance(result, dg.SkipReason):
        return result
    for req in result.dynamic_partitions_requests:  # as the daemon does with the tick's result
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def requested(result) -> list[str]:
    if isinstance(result, dg.SkipReason):
        return []
    return sorted(f for r in result.run_requests for f in request_files(r))


@pytest.fixture
def env(test_env):  # noqa: F811
    e, stack = test_env
    assert "IngressEventsQueueUrl" in stack["outputs"]
    return e


def test_the_stack_makes_s3_announce_ingress_files_on_the_queue(env) -> None:
    key = put(env, "yellow_tripdata_2019-06 copy.csv", b"VendorID\n1\n")  # a space: URL-encoded in the event
    events = PlatformResource(environment="test").ingress_events()
    assert isinstance(events, SqsIngressEvents)
    messages = events.receive(100)
    announced = [o for m in messages for o in m.objects]
    assert announced == [("mobility", "yellow_trips", "yellow_tripdata_2019-06 copy.csv")], (key, messages)
    events.acknowledge(messages)
    assert events.receive(100) == []


def test_each_announced_file_is_requested_once_whatever_the_order_or_repeats(env) -> None:
    instance = dg.DagsterInstance.ephemeral()
    sqs = boto3.client("sqs", region_name=env.aws.region)
    url = queue_url(env)
    # S3's own notifications, then the same ones again in reverse order (SQS delivers at least once).
    for name in FILES:
        put(env, name, (TRIPS / name).read_bytes())
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
              if "s3:TestEvent" not in m["Body"]]  # S3 sends one when the notification is configured
    assert len(bodies) == 2
    for body in reversed(bodies):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    first = tick("ingress__events", instance)
    assert requested(first) == FILES  # four messages, two files, one run each
    assert {r.run_key for r in first.run_requests} == {f"mobility__yellow_trips:{r.tags['platform/sha256']}"
                                                       for r in first.run_requests}
    assert all(r.tags["platform/announced_by"] == "event" for r in first.run_requests)
    # The repeats still in flight (the messages S3 sent first became visible again) change nothing,
    # and the sweep that lists the folder while the runs wait leaves the requested files alone.
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    assert requested(tick("ingress__events", instance)) == []
    sweep = tick("mobility__yellow_trips__ingress", instance)
    assert requested(sweep) == [] and not sweep.run_requests


def test_a_lost_notification_delays_the_file_until_the_sweep(env) -> None:
    instance = dg.DagsterInstance.ephemeral()
    put(env, FILES[0], (TRIPS / FILES[0]).read_bytes())
    assert lose_notifications(env) == 1
    assert isinstance(tick("ingress__events", instance), dg.SkipReason)
    swept = tick("mobility__yellow_trips__ingress", instance)  # the first tick sweeps
    assert requested(swept) == [FILES[0]]
    assert swept.run_requests[0].tags["platform/announced_by"] == "listing"
    # Until the next sweep is due, the dataset sensor does not list the folder.
    put(env, FILES[1], (TRIPS / FILES[1]).read_bytes())
    assert lose_notifications(env) == 1
    later = tick("mobility__yellow_trips__ingress", instance, swept.cursor)
    assert isinstance(later, dg.SkipReason) and "next sweep" in later.skip_message
    # Overdue (as after sweep_seconds), it lists again: the second file, and the first not again.
    overdue = json.loads(swept.cursor) | {"swept_at_ns": 1}
    assert requested(tick("mobility__yellow_trips__ingress", instance, json.dumps(overdue))) == [FILES[1]]


def test_messages_that_announce_no_file_are_acknowledged_with_a_note(env) -> None:
    events = SqsIngressEvents(None, "unused", env.ingress.root)  # type: ignore[arg-type] - parse only
    bucket, prefix = split_s3_uri(env.ingress.root)

    def record(key: str, bucket_name: str = bucket, event: str = "ObjectCreated:Put") -> str:
        return json.dumps({"Records": [{"eventName": event, "s3": {"bucket": {"name": bucket_name},
                                                                    "object": {"key": key}}}]})

    assert events.parse("h", json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})).note.startswith("S3's test")
    assert events.parse("h", "not json").note == "a message that is not an S3 event (not JSON)"
    assert events.parse("h", record(f"{prefix}/a/b/c.csv", "another-bucket")).objects == ()
    assert events.parse("h", record(f"{prefix}/a/b/c.csv", event="ObjectRemoved:Delete")).objects == ()
    assert events.parse("h", record("elsewhere/a/b/c.csv")).note == \
        "1 record(s) not about an object created under the ingress root"
    assert events.parse("h", record(f"{prefix}/a/b/two+words%2C.csv")).objects == (("a", "b", "two words,.csv"),)


def test_the_local_environment_has_no_ingress_events(tmp_path: Path) -> None:
    platform = PlatformResource(environment="local", home=str(tmp_path))
    assert platform.ingress_events() is None
    result = sensor("ingress__events")(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(),
                                                               resources={"platform": platform}))
    assert isinstance(result, dg.SkipReason) and "no ingress events" in result.skip_message


def test_ingress_events_need_an_s3_ingress_root(tmp_path: Path) -> None:
    from core.yaml_config import ConfigError

    d = tmp_path / "environments"
    d.mkdir()
    local = (Path(__file__).resolve().parent.parent / "platform/environments/local.yaml").read_text()
    (d / "local.yaml").write_text(local.replace("ingress:\n", "ingress:\n  events:\n    queue_name: q\n", 1))
    load_environment.cache_clear()
    try:
        with pytest.raises(ConfigError, match="ingress.events .*needs an S3 ingress root"):
            load_environment("local", str(tmp_path / "home"), str(d))
    finally:
        load_environment.cache_clear()
