"""Freshness SLOs: a dataset's ``freshness: {max_lag_hours}`` as Dagster's freshness policy on its
staging table (evaluated by the freshness daemon from materialisations)."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from core.zones import Dataset


def freshness_policy(ds: Dataset) -> dg.FreshnessPolicy | None:
    if ds.spec.freshness is None:
        return None
    return dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=ds.spec.freshness.max_lag_hours))
