"""The interface of an ingress event source: messages that announce objects created in the
ingress area, each acknowledged (deleted) once the sensor has decided about its objects.

A source only announces: the sensors still decide from what the store says about each object
(exists, size, hash), and still list the area now and then, so a lost, duplicated or reordered
message changes when a file is processed, never whether or how often."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass(frozen=True)
class IngressMessage:
    handle: str  # acknowledges the message
    objects: tuple[tuple[str, ...], ...] = field(default=())  # announced objects, as parts under the ingress root
    note: str | None = None  # why a message announces nothing (a test event, an object outside the root, ...)


class IngressEvents(ABC):
    @abstractmethod
    def receive(self, max_messages: int) -> list[IngressMessage]:
        """Up to ``max_messages`` messages waiting now (never blocks for long)."""

    @abstractmethod
    def acknowledge(self, messages: list[IngressMessage]) -> None:
        """Remove handled messages from the source."""
