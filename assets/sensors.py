"""The sensors over the ingress area, and the job that sets deliveries aside.

- one file-arrival sensor per dataset, over ``ingress/<insight_zone>/<dataset>/``: runs of the
  dataset's ingest job for the new files (the decision is ``core.arrival.plan_tick``), one file
  or, where a tick finds several, a range of their partitions per run (``batches``);
- ``ingress__strays``: files anywhere else in the ingress area (an unknown folder, a subfolder of a
  dataset's folder, the ingress root itself), which no dataset sensor would ever see;
- ``set_aside_deliveries``: moves files the platform will not process to
  ``ingress/_set_aside/...`` (never deletes them), records an observation on the dataset's landing
  asset, and fails with a message naming each file, its dataset and the reason, so the delivery is
  visible in Runs and on the asset, and alerting sees it. A byte-identical re-delivery is set
  aside without failing the run: nothing is wrong, there is just nothing new.
"""

import hashlib
import math
import time
from collections.abc import Iterable

import dagster as dg

from assets.ingest import BatchFile, DatasetDefs, LandingConfig, landing_parts
from assets.policies import RETRY, platform_errors
from core.arrival import (
    SET_ASIDE_DIR,
    STALE_TEMPORARY_S,
    Cursor,
    FileEntry,
    Request,
    SetAside,
    TickPlan,
    is_temporary,
    plan_tick,
)
from core.names import asset_path
from core.zones import Dataset
from resources.environment import SensorConfig
from resources.platform import PlatformResource

# Ingress is listed at every round of Dagster's sensor daemon (a local folder, or an S3 prefix
# without events: one LIST a tick). The daemon goes round every 5 s whatever this says (Dagster
# 1.13), so 2 s means "every round"; 5 s would skip a round whenever one came early.
SENSOR_INTERVAL_S = 2
# A run over a range of partitions (Dagster's own tags for it).
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
STRAYS_INTERVAL_S = 30
STRAYS_SCAN_LIMIT = 10_000  # files looked at per tick outside the dataset folders
SET_ASIDE_JOB, SET_ASIDE_OP = "set_aside_deliveries", "set_aside"


class AsideFile(dg.Config):
    folder: list[str]  # the folder holding the file, relative to the ingress root
    name: str
    size: int
    mtime_ns: int
    reason: str  # name | duplicate | temporary | location
    message: str
    dataset: str = ""  # <insight_zone>.<dataset>, when the file was in a dataset's folder


class SetAsideConfig(dg.Config):
    files: list[AsideFile]


@dg.op(name=SET_ASIDE_OP, retry_policy=RETRY,
       description="Move deliveries the platform will not process to ingress/_set_aside/ and say why.")
def set_aside_op(context: dg.OpExecutionContext, config: SetAsideConfig, platform: PlatformResource) -> None:
    problems = []
    with platform_errors("setting deliveries aside"):
        ingress = platform.ingress()
        for f in config.files:
            src = (*f.folder, f.name)
            info = ingress.info(*src)
            if info is None or (info.size, info.mtime_ns) != (f.size, f.mtime_ns):
                context.log.info(f"{ingress.uri(*src)} changed or left since the sensor saw it: left for its next tick")
                continue
            dest = ingress.move_aside(src, (SET_ASIDE_DIR, *f.folder))
            text = f"{f.message} Moved to {ingress.uri(*dest)}."
            (context.log.info if f.reason == "duplicate" else context.log.warning)(text)
            if f.dataset:
                zone, dataset = f.dataset.split(".")
                context.log_event(dg.AssetObservation(
                    asset_key=dg.AssetKey(asset_path("landing", zone, dataset)),
                    metadata={"set_aside": f.name, "reason": f.reason, "moved_to": ingress.uri(*dest),
                              "message": f.message}))
            if f.reason != "duplicate":
                problems.append(text)
    if problems:
        raise dg.Failure(
            description=f"{len(problems)} delivered file(s) set aside, not processed:\n" + "\n".join(problems),
            metadata={"error": "SetAside", "error_kind": "terminal", "files": len(problems)},
            allow_retries=False,
        )


@dg.job(name=SET_ASIDE_JOB, description="Set aside deliveries the platform will not process, and say why.")
def set_aside_job() -> None:
    set_aside_op()


def _aside_request(source: str, entries: list[tuple[tuple[str, ...], SetAside, str]], where: str
                   ) -> dg.RunRequest:
    files = [AsideFile(folder=list(folder), name=s.file.name, size=s.file.size, mtime_ns=s.file.mtime_ns,
                       reason=s.reason, message=s.message(where if dataset else "/".join(["ingress", *folder])),
                       dataset=dataset)
             for folder, s, dataset in entries]
    ident = hashlib.sha256("|".join(f"{f.folder}/{f.name}:{f.size}:{f.mtime_ns}" for f in files).encode())
    return dg.RunRequest(
        job_name=SET_ASIDE_JOB,
        run_key=f"{source}:set-aside:{ident.hexdigest()[:16]}",
        run_config=dg.RunConfig(ops={SET_ASIDE_OP: SetAsideConfig(files=files)}),
        tags={"platform/set_aside": str(len(files)), "platform/source": source},
    )


def _plan(context: dg.SensorEvaluationContext, defs: DatasetDefs, platform: PlatformResource,
          listing: list[FileEntry], cursor: Cursor, *, settle_seconds: float) -> TickPlan:
    """What to do with ``listing`` (files of the dataset's ingress folder): the one decision both
    the listing and the event sensor take (``core.arrival.plan_tick``)."""
    ds = defs.dataset
    ingress, landing = platform.ingress(), platform.lake().zone("landing")
    folder = (ds.insight_zone, ds.name)
    return plan_tick(
        listing, cursor, now_ns=time.time_ns(), settle_seconds=settle_seconds,
        max_files=platform.env().sensors.max_files_per_tick, pattern=ds.spec.source.pattern,
        known_keys=context.instance.get_dynamic_partitions(defs.partitions.name),
        hash_file=lambda f: ingress.sha256(*folder, f.name),
        landed=lambda key: landing.exists(*landing_parts(ds, key)),
    )


RUN_SLOTS = 2  # runs at a time on the local instance (cli's dagster.yaml): a backlog is spread over both


def batches(requests: list[Request], files_per_run: int, batch_above: int) -> list[list[Request]]:
    """The new files of a tick as runs. Up to ``batch_above`` files get a run each (each its own
    run status, re-execution and run-failure alert; the run slots start them within seconds);
    a backlog goes in runs of up to ``files_per_run``, in the order the files were found (and
    their partitions added), so that each run is one contiguous range of partitions, spread over
    at least RUN_SLOTS runs so that no run slot idles while it lasts."""
    if len(requests) <= batch_above:
        return [[r] for r in requests]
    size = max(1, min(files_per_run, math.ceil(len(requests) / RUN_SLOTS)))
    return [requests[i:i + size] for i in range(0, len(requests), size)]


def _requests(defs: DatasetDefs, plan: TickPlan, source: str, sensors: SensorConfig
              ) -> tuple[list[dg.RunRequest], list]:
    """Ingest runs for the new files (one file, or a range of partitions: several; keyed by
    their content, so the same files are never run twice by either sensor), a set-aside run for
    the rest; and the partitions to add, in one request so that each run's range is contiguous."""
    ds = defs.dataset
    where = f"ingress/{ds.insight_zone}/{ds.name}"
    runs = []
    for batch in batches(plan.requests, sensors.files_per_run, sensors.batch_above):
        common = {"platform/dataset": ds.label, "platform/announced_by": source}
        if len(batch) == 1:
            r = batch[0]
            runs.append(dg.RunRequest(
                job_name=defs.job.name,  # type: ignore[attr-defined]
                run_key=f"{ds.id}:{r.sha256}",
                partition_key=r.partition_key,
                run_config=defs.run_config(LandingConfig(ingress_file=r.file.name, delivered_at_ns=r.file.mtime_ns)),
                tags={"platform/source_file": r.file.name, "platform/sha256": r.sha256, **common},
            ))
            continue
        ident = hashlib.sha256("|".join(r.sha256 for r in batch).encode()).hexdigest()[:16]
        runs.append(dg.RunRequest(
            job_name=defs.job.name,  # type: ignore[attr-defined]
            run_key=f"{ds.id}:batch:{ident}",
            run_config=defs.run_config(LandingConfig(batch=[
                BatchFile(partition_key=r.partition_key, ingress_file=r.file.name, delivered_at_ns=r.file.mtime_ns)
                for r in batch])),
            tags={RANGE_START: batch[0].partition_key, RANGE_END: batch[-1].partition_key,
                  "platform/files": str(len(batch)), "platform/first_file": batch[0].file.name, **common},
        ))
    if plan.set_aside:
        runs.append(_aside_request(ds.id, [((ds.insight_zone, ds.name), s, ds.label) for s in plan.set_aside], where))
    adds = [defs.partitions.build_add_request([r.partition_key for r in plan.requests])] if plan.requests else []
    return runs, adds


def build_sensor(defs: DatasetDefs) -> dg.SensorDefinition:
    ds = defs.dataset
    where = f"ingress/{ds.insight_zone}/{ds.name}"

    @dg.sensor(
        name=f"{ds.id}__ingress",
        jobs=[defs.job, set_aside_job],  # type: ignore[list-item]
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts one ingest run per new file in {where}/; sets aside files it will not process. "
                    "Where the environment has ingress events, it lists only every sensors.sweep_seconds "
                    "(ingress__events announces files in between).",
    )
    def ingress_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
        cursor = Cursor.load(context.cursor)
        with platform_errors(f"listing {where}"):
            env = platform.env()
            now = time.time_ns()
            if env.ingress.events is not None and now - cursor.swept_at_ns < env.sensors.sweep_seconds * 1e9:
                due_s = (cursor.swept_at_ns + env.sensors.sweep_seconds * 1e9 - now) / 1e9
                return dg.SkipReason(f"ingress events announce new files in {where}; the next sweep (listing) "
                                     f"is due in {due_s:.0f} s")
            listing = [FileEntry("/".join(f.parts), f.name, f.size, f.mtime_ns, f.etag)
                       for f in platform.ingress().list(ds.insight_zone, ds.name)]
            plan = _plan(context, defs, platform, listing, cursor, settle_seconds=env.sensors.settle_seconds)
        for line in plan.log_lines(where):
            context.log.info(line)
        runs, adds = _requests(defs, plan, "listing", env.sensors)
        if env.ingress.events is not None and plan.requests:
            context.log.warning(f"the sweep found {len(plan.requests)} file(s) in {where} no event announced "
                                "(a notification lost or late): requested now")
        plan.cursor.swept_at_ns = now
        return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=adds, cursor=plan.cursor.dump())

    return ingress_sensor


EVENTS_INTERVAL_S = 2
EVENTS_PER_TICK = 500


def build_events_sensor(all_defs: list[DatasetDefs]) -> dg.SensorDefinition:
    by_folder = {(d.dataset.insight_zone, d.dataset.name): d for d in all_defs}

    @dg.sensor(
        name="ingress__events",
        jobs=[*(d.job for d in all_defs), set_aside_job],  # type: ignore[list-item]
        minimum_interval_seconds=EVENTS_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts one ingest run per file that S3 announces in a dataset's ingress folder "
                    "(event notifications through SQS), where the environment has them (ingress.events).",
    )
    def events_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
        with platform_errors("reading the ingress events"):
            events = platform.ingress_events()
            if events is None:
                return dg.SkipReason("this environment has no ingress events (ingress.events): the ingress "
                                     "sensors list the dataset folders")
            messages = events.receive(EVENTS_PER_TICK)
            if not messages:
                return dg.SkipReason("no new ingress events")
            announced: dict[tuple[str, str], set[str]] = {}
            for m in messages:
                if m.note:
                    context.log.info(f"ingress event: {m.note}")
                for parts in m.objects:
                    if len(parts) == 3 and parts[:2] in by_folder:
                        announced.setdefault(parts[:2], set()).add(parts[2])
                    else:  # a stray or a set-aside file: ingress__strays looks after those
                        context.log.debug(f"ingress event for ingress/{'/'.join(parts)}: not a dataset's file")
            ingress = platform.ingress()
            runs, adds = [], []
            for folder, names in sorted(announced.items()):
                defs = by_folder[folder]
                # What the store says now: a file already landed (and gone) or replaced is what it is.
                infos = [i for i in (ingress.info(*folder, n) for n in sorted(names)) if i is not None]
                listing = [FileEntry(i.name, i.name, i.size, i.mtime_ns, i.etag) for i in infos]
                # An S3 object is whole when it is announced: nothing to wait for.
                plan = _plan(context, defs, platform, listing, Cursor(), settle_seconds=0)
                for line in plan.log_lines(f"ingress/{'/'.join(folder)}"):
                    context.log.info(line)
                if plan.waiting:  # acknowledged all the same: the sweep requests them
                    context.log.info(f"ingress/{'/'.join(folder)}: {len(plan.waiting)} announced file(s) left for "
                                     "the next sweep (over this tick's budget, or dated ahead of this clock)")
                r, a = _requests(defs, plan, "event", platform.env().sensors)
                runs += r
                adds += a
            # Acknowledged once decided. Should the tick's result then be lost, the sweep finds the files.
            events.acknowledge(messages)
        return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=adds)

    return events_sensor


def _strays(ingress, datasets: Iterable[Dataset]) -> Iterable[tuple[tuple[str, ...], FileEntry, str]]:
    """(folder, file, why) of every file outside the dataset folders."""
    known = {(d.insight_zone, d.name) for d in datasets}
    zones = {z for z, _ in known}
    hint = "files go directly into ingress/<insight_zone>/<dataset>/; known: " + ", ".join(
        "/".join(k) for k in sorted(known))
    budget = STRAYS_SCAN_LIMIT

    def files_below(*parts: str) -> Iterable:
        nonlocal budget
        for f in ingress.walk(*parts, limit=max(budget, 0)):
            budget -= 1
            yield f

    for f in ingress.list():
        yield (), FileEntry(f.name, f.name, f.size, f.mtime_ns), f"it is at the top of the ingress area; {hint}"
    for zone in ingress.folders():
        if zone == SET_ASIDE_DIR:
            continue
        if zone not in zones:
            for f in files_below(zone):
                yield f.parts[:-1], FileEntry(f.name, f.name, f.size, f.mtime_ns), \
                    f"there is no insight zone {zone!r}; {hint}"
            continue
        for f in ingress.list(zone):
            yield (zone,), FileEntry(f.name, f.name, f.size, f.mtime_ns), f"it is not in a dataset's folder; {hint}"
        for dataset in ingress.folders(zone):
            inside = (zone, dataset) in known
            for sub in ingress.folders(zone, dataset) if inside else [None]:
                parts = (zone, dataset, sub) if sub else (zone, dataset)
                why = (f"it is in a subfolder of ingress/{zone}/{dataset}/; files go directly into the dataset's folder"
                       if inside else f"insight zone {zone!r} has no dataset {dataset!r}; {hint}")
                for f in files_below(*parts):
                    yield f.parts[:-1], FileEntry(f.name, f.name, f.size, f.mtime_ns), why


def build_strays_sensor(datasets: list[Dataset]) -> dg.SensorDefinition:
    @dg.sensor(
        name="ingress__strays",
        job=set_aside_job,
        minimum_interval_seconds=STRAYS_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sets aside files in the ingress area that are in no dataset's folder, and says why.",
    )
    def strays_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource):
        with platform_errors("listing the ingress area"):
            env = platform.env()
            ingress = platform.ingress()
            cursor = Cursor.load(context.cursor)
            now = time.time_ns()
            settle_ns = int(env.sensors.settle_seconds * 1e9)
            seen: dict[str, list] = {}
            entries = []
            for folder, f, why in _strays(ingress, datasets):
                path = "/".join((*folder, f.name))
                if cursor.files.get(path) == [f.size, f.mtime_ns]:
                    seen[path] = [f.size, f.mtime_ns]
                    continue
                age = now - f.mtime_ns
                young_temporary = is_temporary(f.name) and age < STALE_TEMPORARY_S * 10**9
                if young_temporary or age < settle_ns:
                    continue
                seen[path] = [f.size, f.mtime_ns]
                entries.append((folder, SetAside(f, "location", why), ""))
        for folder, s, _ in entries:
            context.log.info(f"setting aside ingress/{'/'.join((*folder, s.file.name))}: {s.detail}")
        return dg.SensorResult(
            run_requests=[_aside_request("ingress", entries, "ingress")] if entries else [],
            cursor=Cursor(files=seen).dump(),
        )

    return strays_sensor
