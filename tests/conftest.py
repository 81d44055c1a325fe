from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh PLATFORM_HOME for the local environment."""
    h = tmp_path / "platform_home"
    h.mkdir()
    return h
