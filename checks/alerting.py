"""Incidents from check results and freshness states: one alert when an incident opens, one
"resolved" message when it closes, nothing on the ticks between.

An incident is keyed by (asset, check, delivered file): a partition is one delivery, and a
re-delivery of the same file name is a new partition, so keying by the file lets the corrected
delivery close the incident its predecessor opened. Arrival freshness is an incident per asset
(check ``freshness``, no file): opened at WARN or FAIL, raised again once if WARN becomes FAIL,
resolved when the asset is fresh again. The planner is pure: it gets the open
incidents (the sensor's cursor) and the latest check executions, and returns the new open set and
the alerts. Execution records are ordered by their id in Dagster's check-execution index, which is
unique across runs (event storage ids are not, on SQLite)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from core.errors import InvalidName
from core.names import split_partition_key
from core.zones import AlertRoute

OPENED, RESOLVED = "opened", "resolved"
FRESHNESS = "freshness"
RUN_FAILURE = "run_failure"  # incidents of runs: asset ("runs", <insight zone>, <job>)
SENSOR_HEALTH = "sensor_health"  # incidents of sensors: asset ("sensors", <insight zone>, <sensor>)
_RANK = {"WARN": 1, "ERROR": 2}


@dataclass(frozen=True)
class CheckOutcome:
    """One completed execution of an asset check, as the check-execution index holds it."""

    asset: tuple[str, ...]
    check: str
    partition: str | None
    record_id: int  # the index's id: increases with every execution
    run_id: str
    passed: bool
    severity: str  # ERROR | WARN
    at: float  # seconds since the epoch
    description: str | None = None
    metadata: Mapping[str, object] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        """The delivered file (partitions are ``<file>@<sha256 prefix>``), else the partition."""
        if self.partition is None:
            return "-"
        try:
            return split_partition_key(self.partition)[0]
        except InvalidName:
            return self.partition

    @property
    def incident_id(self) -> str:
        return f"{'/'.join(self.asset)}:{self.check}:{self.subject}"


@dataclass(frozen=True)
class Alert:
    id: str  # stable: a channel that already has it skips it (no duplicate after a restart)
    kind: str  # opened | resolved
    incident: str
    asset: str
    check: str
    source_file: str
    partition: str | None
    severity: str
    title: str
    body: str
    owners: tuple[str, ...]
    run_url: str
    asset_url: str
    at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def insight_zone(self) -> str:
        """The zone whose owners and routes the alert goes to ('' for platform-wide ones)."""
        return self.asset.split("/")[1] if self.asset.count("/") else ""


def _what_failed(o: CheckOutcome) -> str:
    """Counts and rules, never values (a row's values could be PII; examples are not copied)."""
    m = o.metadata
    if isinstance(m.get("violations"), Mapping) and m.get("rows_read"):
        rows = int(m["rows_read"])  # type: ignore[arg-type]
        parts = [f"{n} rows ({n / rows:.1%}) violated `{rule}`"
                 for rule, n in sorted(m["violations"].items(), key=lambda kv: -int(kv[1]))]  # type: ignore[union-attr]
        head = f"{m.get('rows_quarantined')} of {rows} rows quarantined; " if "rows_quarantined" in m else ""
        return head + "; ".join(parts)
    return o.description or "the check failed"


def _alert(kind: str, o: CheckOutcome, owners: tuple[str, ...], ui_url: str) -> Alert:
    asset = "/".join(o.asset)
    where = f"{asset} ({o.subject})"
    if o.check == SENSOR_HEALTH:
        title = (f"[{o.severity}] sensor {o.asset[-1]} is failing" if kind == OPENED
                 else f"[resolved] sensor {o.asset[-1]} ticks again")
        body = (o.description or "") if kind == OPENED else "its latest tick did not fail"
    elif o.check == RUN_FAILURE:
        job = o.asset[-1]
        title = (f"[{o.severity}] {job} failed" + (f" for {o.subject}" if o.partition else "") if kind == OPENED
                 else f"[resolved] {job} succeeds again" + (f" for {o.subject}" if o.partition else ""))
        body = (o.description or "") if kind == OPENED else f"run {o.run_id[:8]} succeeded"
    elif o.check == FRESHNESS:
        where = asset
        title = f"[{o.severity}] {asset} is stale" if kind == OPENED else f"[resolved] {asset} is fresh again"
        body = o.description or ""
    elif kind == OPENED:
        title = f"[{o.severity}] {o.check} failed on {where}"
        body = _what_failed(o)
    else:
        title = f"[resolved] {o.check} passes again on {where}"
        body = f"partition {o.partition} passed {o.check}"
    return Alert(id=f"{o.incident_id}:{kind}:{o.record_id}", kind=kind, incident=o.incident_id, asset=asset,
                 check=o.check, source_file=o.subject, partition=o.partition, severity=o.severity, title=title,
                 body=body, owners=owners, run_url=f"{ui_url}/runs/{o.run_id}" if o.run_id else "",
                 asset_url="" if o.check in (RUN_FAILURE, SENSOR_HEALTH) else f"{ui_url}/assets/{asset}", at=o.at)


def plan(open_incidents: Mapping[str, Mapping], outcomes: Iterable[CheckOutcome],
         owners_of: Callable[[tuple[str, ...]], tuple[str, ...]], ui_url: str) -> tuple[dict[str, dict], list[Alert]]:
    """(open incidents after these outcomes, alerts to deliver). The latest execution of each
    incident's key decides: failing opens it (once), passing closes it (once)."""
    latest: dict[str, CheckOutcome] = {}
    for o in outcomes:
        if o.incident_id not in latest or o.record_id > latest[o.incident_id].record_id:
            latest[o.incident_id] = o
    now_open = {k: dict(v) for k, v in open_incidents.items()}
    alerts = []
    for iid, o in sorted(latest.items(), key=lambda kv: kv[1].record_id):
        known = now_open.get(iid)
        if known is not None and o.record_id <= int(known["record_id"]):
            continue  # nothing newer than what opened (or last updated) the incident
        if known is not None and known.get("closed"):
            # Closed by a steward's decision: a newer execution (a re-delivery) starts afresh.
            del now_open[iid]
            known = None
        if not o.passed:
            # Opened once; raised once more only if it got worse (a freshness WARN that became FAIL).
            if known is None or _RANK.get(o.severity, 0) > _RANK.get(str(known.get("severity", o.severity)), 0):
                alerts.append(_alert(OPENED, o, owners_of(o.asset), ui_url))
            now_open[iid] = {"record_id": o.record_id, "partition": o.partition, "run_id": o.run_id,
                             "severity": o.severity}
        elif known is not None:
            alerts.append(_alert(RESOLVED, o, owners_of(o.asset), ui_url))
            del now_open[iid]
    return now_open, alerts


ALWAYS_ON = ("alert_file",)  # the local alert file receives every alert (as does the sensor's log)


def route(alert: Alert, routes: Sequence[AlertRoute], configured: Sequence[str]
          ) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """Which channels deliver ``alert``, each to which recipients (the zone's routes for the
    alert's severity), and which channels a matching route names that this environment does not
    configure (the caller says so: nothing is dropped silently). A route without channels means
    every configured channel; the always-on channels get every alert, addressed to its owners."""
    out: dict[str, list[str]] = {c: list(alert.owners) for c in configured if c in ALWAYS_ON}
    missing: list[str] = []
    for r in routes:
        if alert.severity not in r.severities:
            continue
        for channel in r.channels if r.channels is not None else [c for c in configured if c not in ALWAYS_ON]:
            if channel not in configured:
                missing.append(channel)
                continue
            rcpt = out.setdefault(channel, [])
            rcpt += [t for t in r.to if t not in rcpt]
    return {c: tuple(r) for c, r in out.items()}, sorted(set(missing))


def close_decided(open_incidents: Mapping[str, Mapping], decided: Mapping[tuple[str, str], Mapping[str, str]],
                  owners_of: Callable[[tuple[str, ...]], tuple[str, ...]], ui_url: str
                  ) -> tuple[dict[str, dict], list[Alert]]:
    """Close each open incident whose failing partition a steward released or rejected
    (``decided``: (asset, partition) → the decision), with one resolved message. The incident stays
    in the cursor as closed, so the same failed execution does not open it again."""
    now_open = {k: dict(v) for k, v in open_incidents.items()}
    alerts = []
    for iid, inc in sorted(now_open.items()):
        asset, check, _ = iid.split(":", 2)
        d = decided.get((asset, str(inc.get("partition"))))
        if inc.get("closed") or d is None:
            continue
        o = CheckOutcome(asset=tuple(asset.split("/")), check=check, partition=inc.get("partition"),
                         record_id=int(inc["record_id"]), run_id=str(inc.get("run_id", "")), passed=True,
                         severity=str(inc.get("severity", "ERROR")), at=0.0)
        a = _alert(RESOLVED, o, owners_of(o.asset), ui_url)
        verb = d.get("steward_decision", "decided")
        alerts.append(dataclasses.replace(
            a, id=f"{a.id}:{verb}", title=f"[resolved] {verb} by the steward: {asset} ({o.subject})",
            body=f"partition {o.partition} {verb} by {d.get('steward')} on {d.get('decided_at')}: {d.get('reason')}"
            + (" (published to staging; automation builds what reads it)" if verb == "released"
               else " (kept out of staging for good; a re-delivery is checked anew)")))
        inc["closed"] = True
    return now_open, alerts
