"""The blocking check of every served table: it holds exactly its mart's rows."""

from __future__ import annotations

import dagster as dg

ROW_COUNT_CHECK = "row_count_matches_mart"


def check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(ROW_COUNT_CHECK, asset=key, blocking=True,
                              description="The served table has exactly the mart's rows.")]


def row_count_result(mart_rows: int, served_rows: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=ROW_COUNT_CHECK, passed=served_rows == mart_rows, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"mart_rows": mart_rows, "served_rows": served_rows},
        description=None if served_rows == mart_rows else
        f"the served table holds {served_rows} rows, the mart {mart_rows}",
    )
