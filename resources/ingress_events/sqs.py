"""S3 event notifications of the ingress bucket, read from the SQS queue the environment's stack
creates (``infra/cloudformation.py``: ``ObjectCreated`` under the ingress prefix).

A message's body is S3's event (``{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket":
{"name": …}, "object": {"key": …}}}]}``, keys URL-encoded) or, once, S3's ``s3:TestEvent`` when
the notification is configured. Both are acknowledged; a body that is neither is acknowledged too,
with a note the sensor logs: the periodic sweep still finds every file."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from core.errors import TransientError
from resources.aws import AwsSession, translate
from resources.environment import split_s3_uri
from resources.ingress_events.base import IngressEvents, IngressMessage

BATCH = 10  # ReceiveMessage returns at most 10 messages


class SqsIngressEvents(IngressEvents):
    def __init__(self, session: AwsSession, queue_name: str, ingress_root: str):
        self.session, self.queue_name = session, queue_name
        self.bucket, self.prefix = split_s3_uri(ingress_root)
        self._url: str | None = None

    def __repr__(self) -> str:
        return f"SqsIngressEvents({self.queue_name!r})"

    @property
    def client(self) -> Any:
        return self.session.client("sqs")

    def _call(self, doing: str, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(**kwargs)
        except Exception as e:
            raise translate(e, doing) from e

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self._call(f"finding the ingress event queue {self.queue_name}", "get_queue_url",
                                   QueueName=self.queue_name)["QueueUrl"]
        return self._url

    def receive(self, max_messages: int) -> list[IngressMessage]:
        out: list[IngressMessage] = []
        while len(out) < max_messages:
            got = self._call(f"receiving from the ingress event queue {self.queue_name}", "receive_message",
                             QueueUrl=self.url, MaxNumberOfMessages=min(BATCH, max_messages - len(out)),
                             WaitTimeSeconds=0).get("Messages", [])
            out += [self.parse(m["ReceiptHandle"], m.get("Body", "")) for m in got]
            if len(got) < BATCH:
                break
        return out

    def acknowledge(self, messages: list[IngressMessage]) -> None:
        for i in range(0, len(messages), BATCH):
            batch = messages[i:i + BATCH]
            out = self._call(f"acknowledging ingress events on {self.queue_name}", "delete_message_batch",
                             QueueUrl=self.url,
                             Entries=[{"Id": str(n), "ReceiptHandle": m.handle} for n, m in enumerate(batch)])
            if out.get("Failed"):  # the message comes back after its visibility timeout: announced twice
                codes = sorted({f.get("Code", "?") for f in out["Failed"]})
                raise TransientError(f"acknowledging ingress events on {self.queue_name}: {len(out['Failed'])} "
                                     f"not deleted ({', '.join(codes)}); they will be announced again")

    def parse(self, handle: str, body: str) -> IngressMessage:
        try:
            event = json.loads(body)
        except ValueError:
            return IngressMessage(handle, note="a message that is not an S3 event (not JSON)")
        if not isinstance(event, dict):
            return IngressMessage(handle, note="a message that is not an S3 event")
        if event.get("Event") == "s3:TestEvent":
            return IngressMessage(handle, note="S3's test event (the notification was just configured)")
        objects, outside = [], 0
        for record in event.get("Records") or []:
            s3 = record.get("s3", {}) if isinstance(record, dict) else {}
            bucket, key = s3.get("bucket", {}).get("name"), s3.get("object", {}).get("key")
            if not str(record.get("eventName", "")).startswith("ObjectCreated") or not isinstance(key, str):
                outside += 1
                continue
            key = unquote_plus(key)
            root = f"{self.prefix}/" if self.prefix else ""
            if bucket != self.bucket or not key.startswith(root):
                outside += 1
                continue
            objects.append(tuple(key[len(root):].split("/")))
        note = f"{outside} record(s) not about an object created under the ingress root" if outside else None
        if not objects and note is None:
            note = "an event without records"
        return IngressMessage(handle, tuple(objects), note)
