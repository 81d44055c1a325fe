"""The local alert file: one JSON object per line, always on (``<PLATFORM_HOME>/alerts/alerts.jsonl``),
so ``make run`` shows alerts with no setup. An alert whose id is already in the file is not
written again (a restart between delivery and the sensor's cursor commit repeats nothing)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from resources.alerts.base import AlertChannel, ChannelFailed

if TYPE_CHECKING:
    from checks.alerting import Alert


class JsonLinesChannel(AlertChannel):
    name = "alert_file"

    def __init__(self, path: Path):
        self.path = Path(path)
        self._ids: set[str] | None = None

    def _known(self) -> set[str]:
        if self._ids is None:
            self._ids = set()
            if self.path.exists():
                for line in self.path.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        self._ids.add(json.loads(line)["id"])
        return self._ids

    def deliver(self, alert: Alert) -> None:
        try:
            if alert.id in self._known():
                return
        except OSError as e:  # e.g. a folder where the file should be: this channel fails, not the sensor
            self._ids = None
            raise ChannelFailed(f"alert file {self.path}: {e.strerror or e}") from None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(alert.to_json() + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise ChannelFailed(f"alert file {self.path}: {e.strerror or e}") from None
        self._ids.add(alert.id)  # type: ignore[union-attr]
