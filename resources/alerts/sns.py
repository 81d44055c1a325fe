"""Amazon SNS: one ``Publish`` per alert to the environment's topic (created by its stack, encrypted
with the environment's key), through the session every AWS backend shares. Subscribers (email,
SQS, chat integrations, PagerDuty) filter on the ``severity`` and ``kind`` message attributes.

On a FIFO topic (``.fifo``) the alert id is the ``MessageDeduplicationId``, so SNS drops a repeat
within its deduplication window, and the incident is the message group (its opened and resolved
messages stay in order); a standard topic refuses both parameters, so they are only sent to FIFO."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from resources.alerts.base import AlertChannel, ChannelFailed, digest, plain_text
from resources.aws import AwsSession, translate

if TYPE_CHECKING:
    from checks.alerting import Alert

SUBJECT_CHARS = 100  # SNS's limit
_NOT_SUBJECT = re.compile(r"[^\x20-\x7e]+")  # SNS subjects: printable ASCII, no line breaks


def subject(title: str) -> str:
    """``title`` as an SNS subject: printable ASCII (anything else becomes ``?``), at most 100
    characters, starting with a letter, digit or punctuation (not a space)."""
    text = _NOT_SUBJECT.sub("?", title.replace("\r", " ").replace("\n", " ")).strip() or "alert"
    return text if len(text) <= SUBJECT_CHARS else text[: SUBJECT_CHARS - 3].rstrip() + "..."


class SnsChannel(AlertChannel):
    def __init__(self, name: str, topic_arn: str, session: AwsSession) -> None:
        self.name, self.topic_arn, self._session = name, topic_arn, session
        self.fifo = topic_arn.endswith(".fifo")
        self._sent: set[str] = set()

    def __repr__(self) -> str:
        return f"SnsChannel(name={self.name!r}, topic_arn={self.topic_arn!r})"

    def request(self, alert: Alert) -> dict[str, object]:
        """The Publish parameters."""
        attributes = {key: {"DataType": "String", "StringValue": value}
                      for key, value in (("severity", alert.severity), ("kind", alert.kind), ("alert_id", alert.id))
                      if value}
        params: dict[str, object] = {"TopicArn": self.topic_arn, "Subject": subject(alert.title),
                                     "Message": plain_text(alert), "MessageAttributes": attributes}
        if self.fifo:  # both at most 128 characters: digests, not the (unbounded) ids themselves
            params |= {"MessageDeduplicationId": digest(alert.id, 64), "MessageGroupId": digest(alert.incident, 64)}
        return params

    def deliver(self, alert: Alert) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if alert.id in self._sent:
            return
        failure = None
        try:
            self._session.client("sns").publish(**self.request(alert))
        except (BotoCoreError, ClientError) as e:
            failure = translate(e, f"{self.name} channel: publishing to SNS topic {self.topic_arn}")
        if failure is not None:
            raise ChannelFailed(str(failure))  # outside the handler: the botocore error stays out of __context__
        self._sent.add(alert.id)
