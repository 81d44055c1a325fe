"""Helpers for engine-level contract tests: a dataset built from a zone YAML written by the test,
and one file staged through ``engine.stage_local_file`` with both outputs read back.

Every staging checks the row accounting: rows read = rows staged + rows quarantined, and both
Parquet files hold exactly as many rows as the result says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from core.names import Q_RAW, Q_RULES, SOURCE_LINE
from core.zones import Dataset, load_zone
from engine import StagingResult, stage_local_file


def make_dataset(tmp_path: Path, contract: dict, *, csv: dict | None = None, zone: str = "shapes",
                 name: str = "d") -> Dataset:
    """Write ``<zone>.yaml`` with one dataset and load it as ``python -m cli validate`` does:
    loading validates the declaration, compiling the contract probes every rule."""
    dataset: dict = {"contract": contract}
    if csv is not None:
        dataset["source"] = {"csv": csv}
    path = tmp_path / f"{zone}.yaml"
    path.write_text(yaml.safe_dump({"owners": ["team:x"], "datasets": {name: dataset}}, sort_keys=False))
    ds = load_zone(path).datasets[0]
    ds.contract  # noqa: B018 - compiling probes every expression
    return ds


@dataclass
class Staged:
    result: StagingResult
    staged: pl.DataFrame
    quarantined: pl.DataFrame

    def staged_values(self, column: str) -> list:
        return self.staged.sort(SOURCE_LINE)[column].to_list()

    def rules_by_line(self) -> dict[int, list[str]]:
        return dict(self.quarantined.select(SOURCE_LINE, Q_RULES).rows())

    def quarantined_text(self, column: str) -> dict[int, str | None]:
        """The original text of ``column`` in each quarantined row, by line."""
        return dict(self.quarantined.select(SOURCE_LINE, column).rows())

    def raw_records(self) -> dict[int, str | None]:
        return dict(self.quarantined.select(SOURCE_LINE, Q_RAW).rows())


def stage(tmp_path: Path, ds: Dataset, content: str | bytes, file_name: str = "f.csv") -> Staged:
    src = tmp_path / file_name
    src.write_bytes(content.encode() if isinstance(content, str) else content)
    staging, quarantine = tmp_path / f"{file_name}.staging.parquet", tmp_path / f"{file_name}.quarantine.parquet"
    result = stage_local_file(ds, src, str(staging), str(quarantine))
    staged, quarantined = pl.read_parquet(staging), pl.read_parquet(quarantine)
    assert result.rows_read == result.rows_staged + result.rows_quarantined, result
    assert (staged.height, quarantined.height) == (result.rows_staged, result.rows_quarantined), result
    lines = staged[SOURCE_LINE].to_list() + quarantined[SOURCE_LINE].to_list()
    assert len(lines) == len(set(lines)), f"a line is both staged and quarantined, or twice in one: {sorted(lines)}"
    return Staged(result, staged, quarantined)
