"""The interface every alert channel implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from core.errors import TransientError

if TYPE_CHECKING:
    from checks.alerting import Alert


class ChannelFailed(TransientError):
    """A channel could not deliver; the alert stays pending and is tried again on the next tick."""


class AlertChannel(ABC):
    name: str

    @abstractmethod
    def deliver(self, alert: Alert) -> None:
        """Deliver ``alert``, or raise ChannelFailed. Delivering an alert id twice must not repeat it."""
