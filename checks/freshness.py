"""Freshness, both kinds, from a dataset's ``freshness:`` declaration (core.zones):

- *arrival*: Dagster's ``FreshnessPolicy`` (``time_window`` or ``cron``) on the staging table, and
  derived on every modelled and served asset downstream of it, so a mart is stale when its inputs
  are. Dagster's freshness daemon evaluates it per asset, from materialisations;
- *data*: a rule on the event-time column, evaluated by pandera with the contract. Rows dated
  after the file's arrival (beyond a tolerance) are quarantined by a rule added to the contract
  for that delivery; a delivery whose newest event is older than ``max_age_hours`` at arrival
  fails the ``data_freshness`` check (blocking when its severity is ``error``).

Event times are wall-clock values in the declared time zone; the arrival (an instant) is turned
into that zone's wall clock before comparing, so New York pickups are not five hours "early".
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import dagster as dg
import pandera.polars as pa
import polars as pl

from checks.contract import CompiledContract, Rule
from core.errors import ConfigError
from core.rules import RuleSpec
from core.zones import ArrivalFreshness, DataFreshness, Dataset

DATA_FRESHNESS_CHECK = "data_freshness"


def _window(policy: dg.FreshnessPolicy) -> timedelta:
    """How stale an asset under ``policy`` can be at most: what "strictest" compares."""
    # The policy classes are not exported by Dagster 1.13; pinned with it.
    from dagster._core.definitions.freshness import CronFreshnessPolicy, TimeWindowFreshnessPolicy

    if isinstance(policy, TimeWindowFreshnessPolicy):
        return policy.fail_window.to_timedelta()
    assert isinstance(policy, CronFreshnessPolicy)
    return _cron_interval(policy.deadline_cron)


@lru_cache(maxsize=64)
def _cron_interval(cron: str) -> timedelta:
    # Dagster's helper walks a year of ticks (~10 ms); every dbt model asks while definitions load.
    from dagster._utils.schedules import get_smallest_cron_interval

    return get_smallest_cron_interval(cron)


def describe_policy(policy: dg.FreshnessPolicy) -> str:
    """The policy in words, for alerts."""
    from dagster._core.definitions.freshness import CronFreshnessPolicy, TimeWindowFreshnessPolicy

    if isinstance(policy, TimeWindowFreshnessPolicy):
        warn = policy.warn_window.to_timedelta() if policy.warn_window else None
        text = f"a new materialisation at least every {policy.fail_window.to_timedelta().total_seconds() / 3600:g} h"
        return text + (f" (warning after {warn.total_seconds() / 3600:g} h)" if warn else "")
    assert isinstance(policy, CronFreshnessPolicy)
    return (f"a materialisation within the {policy.lower_bound_delta.total_seconds() / 3600:g} h before each "
            f"`{policy.deadline_cron}` deadline ({policy.timezone})")


def arrival_policy(arrival: ArrivalFreshness) -> dg.FreshnessPolicy:
    if arrival.every_hours is not None:
        warn = timedelta(hours=arrival.warn_after_hours) if arrival.warn_after_hours else None
        return dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=arrival.every_hours), warn_window=warn)
    assert arrival.deadline_cron is not None
    policy = dg.FreshnessPolicy.cron(deadline_cron=arrival.deadline_cron, lower_bound_delta=timedelta(minutes=1),
                                     timezone=arrival.timezone)
    window = timedelta(hours=arrival.window_hours) if arrival.window_hours else _window(policy)
    return dg.FreshnessPolicy.cron(deadline_cron=arrival.deadline_cron, lower_bound_delta=window,
                                   timezone=arrival.timezone)


def freshness_policy(ds: Dataset) -> dg.FreshnessPolicy | None:
    """The staging table's arrival policy. What only Dagster can judge (a cron string, a window
    longer than the cron's interval) is refused here, naming the dataset, rather than as Dagster's
    bare invariant error when the code location loads."""
    arrival = ds.spec.freshness.arrival if ds.spec.freshness else None
    if arrival is None:
        return None
    try:
        return arrival_policy(arrival)
    except dg.DagsterInvariantViolationError as e:
        raise ConfigError(f"dataset {ds.label}: freshness.arrival: {e}") from None
    except Exception as e:  # dagster's check module raises its own CheckError types
        if type(e).__module__.startswith("dagster"):
            raise ConfigError(f"dataset {ds.label}: freshness.arrival: {str(e).splitlines()[0]}") from None
        raise


def derived_policy(upstream: Iterable[dg.FreshnessPolicy | None]) -> dg.FreshnessPolicy | None:
    """A downstream asset's policy: the strictest of its inputs' (the one that allows the least
    staleness), so it turns stale no later than the first input that does."""
    policies = [p for p in upstream if p is not None]
    return min(policies, key=_window) if policies else None


# -- data freshness -------------------------------------------------------------------------------


def _wall_clock(arrival_ns: int, timezone: str) -> datetime:
    return datetime.fromtimestamp(arrival_ns / 1e9, UTC).astimezone(ZoneInfo(timezone)).replace(tzinfo=None)


def future_rule_name(data: DataFreshness) -> str:
    return f"not_after_arrival(+{data.future_tolerance_minutes:g} min)"


def delivery_contract(ds: Dataset, arrival_ns: int) -> CompiledContract:
    """The contract one delivery is staged with: the dataset's, plus (when declared) the rule that
    no event time is later than the file's arrival plus the tolerance. The rule goes through the
    same path as every other rule: the engine's row split and pandera's verdict."""
    contract = ds.contract
    data = ds.spec.freshness.data if ds.spec.freshness else None
    if data is None or data.future_tolerance_minutes is None:
        return contract
    limit = _wall_clock(arrival_ns, data.timezone) + timedelta(minutes=data.future_tolerance_minutes)
    col = pl.col(data.event_time)
    spec = RuleSpec(future_rule_name(data), "at_most", (data.event_time,), (limit,))  # what Spark compiles
    rule = Rule(spec.name, spec.columns, (col <= pl.lit(limit, dtype=pl.Datetime("us"))) | col.is_null(), spec=spec)

    def check(frame: pa.PolarsData, _ok: pl.Expr = rule.ok) -> pl.LazyFrame:
        return frame.lazyframe.select(_ok.alias("passed"))

    column = contract.schema.columns[data.event_time]
    schema = contract.schema.update_column(data.event_time, checks=[*column.checks, pa.Check(check, name=rule.name)])
    return dataclasses.replace(contract, schema=schema, rules=[*contract.rules, rule])


def data_freshness_spec(staging_key: dg.AssetKey, partitions: dg.PartitionsDefinition,
                        ds: Dataset) -> dg.AssetCheckSpec | None:
    data = ds.spec.freshness.data if ds.spec.freshness else None
    if data is None or data.max_age_hours is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            DATA_FRESHNESS_CHECK, asset=staging_key, blocking=data.severity == "error", partitions_def=partitions,
            description=f"The newest `{data.event_time}` of a delivery is at most {data.max_age_hours:g} h older "
            f"than the file's arrival ({data.timezone} wall clock)"
            + ("; a stale delivery is held." if data.severity == "error" else "; a stale delivery only warns."),
        )


def data_freshness_result(ds: Dataset, staging_key: dg.AssetKey, newest: datetime | None,
                          arrival_ns: int) -> dg.AssetCheckResult:
    """pandera's verdict on the delivery's newest event time against its arrival."""
    data = ds.spec.freshness.data if ds.spec.freshness else None
    assert data is not None and data.max_age_hours is not None
    arrival = _wall_clock(arrival_ns, data.timezone)
    oldest_allowed = arrival - timedelta(hours=data.max_age_hours)
    rule = f"newest_within({data.max_age_hours:g} h of arrival)"
    schema = pa.DataFrameSchema({"newest": pa.Column(pl.Datetime("us"), nullable=True, checks=[pa.Check(
        lambda d: d.lazyframe.select(pl.col("newest").is_null() | (pl.col("newest") >= oldest_allowed)),
        name=rule)])})
    frame = pl.DataFrame({"newest": [newest]}, schema={"newest": pl.Datetime("us")})
    try:
        schema.validate(frame)
        passed = True
    except pa.errors.SchemaError:
        passed = False
    age_h = (arrival - newest).total_seconds() / 3600 if newest is not None else None
    severity = dg.AssetCheckSeverity.ERROR if data.severity == "error" else dg.AssetCheckSeverity.WARN
    description = None if passed else (
        f"stale data: the newest `{data.event_time}` is {newest:%Y-%m-%d %H:%M:%S}, {age_h:,.1f} h before the "
        f"file arrived ({arrival:%Y-%m-%d %H:%M:%S} {data.timezone}); the rule `{rule}` allows "
        f"{data.max_age_hours:g} h" + (". The delivery is held." if data.severity == "error" else "."))
    return dg.AssetCheckResult(
        asset_key=staging_key, check_name=DATA_FRESHNESS_CHECK, passed=passed, severity=severity,
        description=description,
        metadata={
            "event_time_column": data.event_time,
            "newest_event_time": newest.isoformat(sep=" ") if newest is not None else "no staged rows",
            "arrival": arrival.isoformat(sep=" ", timespec="seconds"),
            "timezone": data.timezone,
            **({"age_hours": round(age_h, 2)} if age_h is not None else {}),
            "max_age_hours": data.max_age_hours,
            "rule": rule,
        },
    )
