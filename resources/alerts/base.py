"""The interface every alert channel implements, and what "not repeated" means for each kind.

The sensor (assets/alerting.py) keeps each (alert, channel) pair pending in its cursor until the
channel's ``deliver`` returns, and drops it from the cursor then. A daemon that crashes between a
delivery and the commit of that cursor delivers the alert once more on its next tick, so:

- the local alert file (``JsonLinesChannel``) is exactly-once: it also skips an alert id that is
  already in the file, so that second delivery writes nothing;
- email (``SmtpChannel``), webhooks (``WebhookChannel``) and SNS (``SnsChannel``) cannot ask their
  receiver whether it has seen an id. For them the sensor's cursor is what prevents repeats, and
  delivery is at-least-once: a crash (or a lost reply) between delivery and cursor commit repeats
  the alert. Each message carries the alert id so that a receiver or a person can tell a repeat:
  ``Message-ID`` (derived from it) and ``X-Alert-Id`` headers on email, ``alert_id`` in the webhook's
  JSON, an ``alert_id`` message attribute on SNS, and on a FIFO topic ``MessageDeduplicationId``,
  with which SNS itself drops a repeat within its five-minute deduplication window.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import SecretStr

from core.errors import PlatformError, TransientError

if TYPE_CHECKING:
    from checks.alerting import Alert

# A secret given as a value, or as how to fetch it when the channel first delivers (so that a
# missing secret fails that channel, on that tick, and not the sensor or the other channels).
SecretSource = SecretStr | Callable[[], SecretStr]


class ChannelFailed(TransientError):
    """A channel could not deliver; the alert stays pending and is tried again on a later tick."""


class AlertChannel(ABC):
    name: str

    @abstractmethod
    def deliver(self, alert: Alert) -> None:
        """Deliver ``alert``, or raise ChannelFailed. Delivering an alert id twice must not repeat it:
        the file channel checks its file; the others skip an id this object delivered, and rely on
        the sensor's cursor across ticks (at-least-once: see the module's docstring)."""


def resolve_secret(channel: str, source: SecretSource, what: str) -> SecretStr:
    """The secret's value; a store that cannot give it fails this channel (the message names the
    secret, never a value)."""
    if isinstance(source, SecretStr):
        return source
    try:
        return source()
    except PlatformError as e:
        failure = ChannelFailed(f"{channel} channel: {what}: {e}")
    raise failure  # outside the handler: nothing of the store's error travels as __context__


def digest(text: str, chars: int = 32) -> str:
    """A stable, opaque token derived from ``text`` (message ids, deduplication ids)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:chars]


def details(alert: Alert) -> list[tuple[str, str]]:
    """The facts every channel shows besides title and body, as (label, value); empty ones left out
    (a freshness alert has no file, partition or run)."""
    rows = [("Asset", alert.asset), ("Check", alert.check),
            ("File", alert.source_file if alert.source_file != "-" else ""), ("Partition", alert.partition or ""),
            ("Severity", alert.severity), ("Owners", ", ".join(alert.owners) or "none declared"),
            ("Run", alert.run_url), ("Asset page", alert.asset_url), ("Alert id", alert.id)]
    return [(label, value) for label, value in rows if value]


def plain_text(alert: Alert) -> str:
    """The alert as plain text (email body, SNS message): counts and rules, never row values."""
    width = max(len(label) for label, _ in details(alert)) + 1
    lines = [alert.title, "", alert.body, ""]
    lines += [f"{label + ':':<{width}} {value}" for label, value in details(alert)]
    return "\n".join(lines) + "\n"
