"""Alert channels: one interface (base.py), one module per kind of channel."""

from resources.alerts.base import AlertChannel, ChannelFailed
from resources.alerts.local import JsonLinesChannel

__all__ = ["AlertChannel", "ChannelFailed", "JsonLinesChannel"]
