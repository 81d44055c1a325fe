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


def test_dbt_sources_are_generated_from_the_zone_declarations() -> None:
    from core.dbt_sources import SOURCES_FILE, render_sources

    assert SOURCES_FILE.read_text() == render_sources(), "run `python -m cli dbt-sources` and commit the result"


def test_sources_name_every_declared_column_with_its_type() -> None:
    import yaml

    from core.dbt_sources import SOURCES_FILE
    from core.zones import all_datasets

    raw = yaml.safe_load(SOURCES_FILE.read_text())["sources"]
    sources = {s["name"]: {t["name"]: t for t in s["tables"]} for s in raw}
    for ds in all_datasets():
        table = sources[f"staging_{ds.insight_zone}"][ds.name]
        assert table["meta"]["dagster"]["asset_key"] == ["staging", ds.insight_zone, f"staging_{ds.name}"]
        cols = {c["name"]: c for c in table["columns"]}
        assert set(ds.spec.contract.columns) <= set(cols)
        for name, col in ds.spec.contract.columns.items():
            assert cols[name].get("meta", {}).get("pii", False) == col.pii
