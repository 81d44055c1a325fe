"""The dbt project is valid for the installed dbt (a real `dbt parse`, no warehouse needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support import REPO


def test_dbt_project_parses(tmp_path: Path) -> None:
    dbt = Path(sys.executable).parent / "dbt"
    env = {**os.environ, "PLATFORM_HOME": str(tmp_path), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    out = subprocess.run(
        [str(dbt), "parse", "--project-dir", str(REPO / "dbt_project"), "--profiles-dir", str(REPO / "dbt_project"),
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "target" / "manifest.json").exists()
