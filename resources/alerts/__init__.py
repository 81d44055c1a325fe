"""Alert channels: one interface (base.py), one module per kind of channel."""

from resources.alerts.base import AlertChannel, ChannelFailed
from resources.alerts.local import JsonLinesChannel
from resources.alerts.smtp import SmtpChannel
from resources.alerts.sns import SnsChannel
from resources.alerts.webhook import WebhookChannel

__all__ = ["AlertChannel", "ChannelFailed", "JsonLinesChannel", "SmtpChannel", "SnsChannel", "WebhookChannel"]
