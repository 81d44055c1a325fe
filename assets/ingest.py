"""Each declared dataset as Dagster definitions:

- ``[landing, <zone>, <dataset>]``: the exact bytes of each delivered file, one dynamic partition
  per file (``<file name>@<sha256 prefix>``), immutable once written;
- ``[staging, <zone>, <dataset>]`` and ``[quarantine, <zone>, <dataset>]``: one multi-asset step
  that runs the dataset's staging engine over the landed file and publishes both outputs together
  through the catalog, with two blocking checks (``checks.staging``);
- an ingest job (its sensor is in ``assets.sensors``).

Thin on purpose: the engine (``engine/``), the checks (``checks/``) and the systems
(``resources/``) do the work; this module wires them and reports what happened.
"""

import time
from collections.abc import Generator
from dataclasses import dataclass

import dagster as dg
import pyarrow.parquet as pq

from assets.policies import RETRY, failure, platform_errors
from checks.freshness import (
    DATA_FRESHNESS_CHECK,
    data_freshness_result,
    data_freshness_spec,
    delivery_contract,
    freshness_policy,
)
from checks.staging import check_evaluation, check_specs, contract_result, reconciliation_result, rejected_result
from core.errors import FileRejected, IntegrityError, TerminalError
from core.names import SOURCE_FILE, SOURCE_LINE, asset_path, split_partition_key, table_name
from core.zones import Dataset
from engine import StagingRequest, engine_for
from resources.catalog.base import PartitionVersion
from resources.lake.base import TMP_DIR, ContentMismatch, FileStore, Lake
from resources.platform import PlatformResource

SUPERSEDED_VERSION_RETENTION_S = 3600  # unreferenced versions of a partition older than this are removed
# A run of several files publishes what it has staged in one catalog transaction, at least this
# often, so each file is queryable (and its verdict shown) seconds after it was staged, while a
# run of many files rewrites the views a few times, not once per file.
PUBLISH_EVERY_S = 3.0
PUBLISH_MAX_FILES = 100


class BatchFile(dg.Config):
    partition_key: str
    ingress_file: str  # its name in ingress/<zone>/<dataset>/
    delivered_at_ns: int = 0


class LandingConfig(dg.Config):
    ingress_file: str = ""  # the file's name in ingress/<zone>/<dataset>/ (the sensor passes it); empty: re-run
    delivered_at_ns: int = 0  # when it was delivered (its modification time as the sensor saw it)
    # A run over a range of partitions (several files at once, see assets.sensors): each file of
    # the range. The fields above are for a run of one partition.
    batch: list[BatchFile] = []


@dataclass(frozen=True)
class DatasetDefs:
    dataset: Dataset
    assets: dg.AssetsDefinition  # landing, staging and quarantine: one step that lands and stages each file
    job: object  # the unresolved asset job returned by define_asset_job
    partitions: dg.DynamicPartitionsDefinition

    @property
    def op_name(self) -> str:
        return self.assets.node_def.name

    def run_config(self, config: LandingConfig) -> dg.RunConfig:
        return dg.RunConfig(ops={self.op_name: config})


def keys(ds: Dataset) -> tuple[dg.AssetKey, dg.AssetKey, dg.AssetKey]:
    return (
        dg.AssetKey(asset_path("landing", ds.insight_zone, ds.name)),
        dg.AssetKey(asset_path("staging", ds.insight_zone, ds.name)),
        dg.AssetKey(asset_path("quarantine", ds.insight_zone, ds.name)),
    )


def column_schema(ds: Dataset) -> dg.TableSchema:
    cols = [
        dg.TableColumn(
            name,
            col.type,
            description=col.description or None,
            constraints=dg.TableColumnConstraints(nullable=col.nullable, other=_constraints(col)),
            tags={"pii": ""} if col.pii else None,
        )
        for name, col in ds.spec.contract.columns.items()
    ]
    cols += [dg.TableColumn(SOURCE_FILE, "string"), dg.TableColumn(SOURCE_LINE, "int64")]
    return dg.TableSchema(columns=cols)


def _constraints(col) -> list[str]:
    out = []
    if col.min is not None:
        out.append(f">= {col.min}")
    if col.max is not None:
        out.append(f"<= {col.max}")
    if col.allowed is not None:
        out.append(f"in {col.allowed}")
    if col.pattern is not None:
        out.append(f"matches {col.pattern}")
    return out


def landing_parts(ds: Dataset, key: str) -> tuple[str, ...]:
    name, _ = split_partition_key(key)
    return (ds.insight_zone, ds.name, key, name)


STAGED_FILE = "part-0.parquet"


def partition_parts(ds: Dataset, key: str, version: str) -> tuple[str, ...]:
    """Where one version of a partition's staged (or quarantined) rows lives in its zone: one file
    per folder (prefix), so a catalog partition that points at the folder (Glue, Athena, Spark)
    holds exactly that version."""
    return (ds.insight_zone, ds.name, key, version, STAGED_FILE)


# ----------------------------------------------------------------------------------------------
# Landing


def _land(platform: PlatformResource, ds: Dataset, key: str, cfg: BatchFile | None, log) -> dict:
    """Land one file (``cfg``: where it is in ingress; None: it must be in landing already)."""
    ingress_file = cfg.ingress_file if cfg is not None else ""
    name, digest = split_partition_key(key)
    landing = platform.lake().zone("landing")
    parts = landing_parts(ds, key)
    landed_now = False
    if not landing.exists(*parts):
        if not ingress_file:
            raise TerminalError(
                f"partition {key} of {ds.label} is not in landing and no ingress_file was given: the sensor passes "
                "it; deliver the file to ingress again to land it")
        ingress = platform.ingress()
        src = (ds.insight_zone, ds.name, ingress_file)
        before = ingress.info(*src)
        if before is None:
            raise TerminalError(f"{ingress.uri(*src)} is no longer in ingress and partition {key} was never landed: "
                                "deliver the file again")
        try:
            sha = landing.land_from(ingress, src, parts, (cfg.delivered_at_ns if cfg else 0) or before.mtime_ns, digest)
            landed_now = True
        except ContentMismatch as e:
            raise TerminalError(
                f"{ingress.uri(*src)} changed after it was picked up (hash {e.actual_sha256[:16]}, expected "
                f"{digest}); it stays in ingress and will be picked up again as a new delivery") from None
        except FileExistsError:
            pass  # another run landed the same bytes meanwhile: verified below like any landed object
    if not landed_now:
        sha = landing.sha256(*parts)
    if not sha.startswith(digest):
        raise IntegrityError(f"landing object {landing.uri(*parts)} no longer matches its partition's hash {digest} "
                             f"(it hashes to {sha[:16]}): landed objects are immutable, so it was changed by hand. "
                             "Nothing was staged; deliver the file again to land it anew.")
    if ingress_file:
        # The bytes are safe in landing, so the file leaves ingress (which holds pending files
        # only), unless it changed meanwhile: then it stays, to be picked up as a new delivery.
        ingress = platform.ingress()
        src = (ds.insight_zone, ds.name, ingress_file)
        now = ingress.info(*src)
        if now is not None:
            unchanged = ((now.size, now.mtime_ns) == (before.size, before.mtime_ns) if landed_now
                         else ingress.sha256(*src) == sha)
            if unchanged:
                ingress.delete(*src)
                log.info(f"removed {ingress.uri(*src)} from ingress: its bytes are in landing")
    info = landing.info(*parts)
    assert info is not None
    return {"sha": sha, "size": info.size, "name": name, "landed_now": landed_now, "uri": landing.uri(*parts),
            "delivered_at_ns": landing.delivered_at_ns(*parts)}


# ----------------------------------------------------------------------------------------------
# Staging + quarantine


def _parquet_rows(lake: Lake, uri: str) -> int:
    with lake.open_input(uri) as f:
        return pq.ParquetFile(f).metadata.num_rows


def _remove_leftovers(store: FileStore, key: str) -> None:
    """Temporary outputs of this partition left by a run that died (runs of one partition never
    overlap: see cli's instance settings), so they do not pile up."""
    for f in store.list(TMP_DIR):
        if f.name.startswith(f"{key}."):
            store.delete(*f.parts)


def _remove_old_versions(store: FileStore, ds: Dataset, key: str, referenced: set[str], now_ns: int) -> None:
    """Versions of this partition the catalog no longer points at, once they are old enough that no
    reader (a dbt run's catalog snapshot) can still be reading them."""
    for f in store.walk(ds.insight_zone, ds.name, key, limit=10_000):
        if store.uri(*f.parts) not in referenced and now_ns - f.mtime_ns > SUPERSEDED_VERSION_RETENTION_S * 10**9:
            store.delete(*f.parts)


def _landing_metadata(info: dict) -> dict:
    return {
        "source_file": info["name"],
        "sha256": info["sha"],
        "size_bytes": info["size"],
        "dagster/uri": info["uri"],
        "landed_in_this_run": info["landed_now"],
        "delivered_at": dg.MetadataValue.timestamp(info["delivered_at_ns"] / 1e9),
    }


@dataclass
class _Verdict:
    """What became of one file of the run, for the run's own outcome."""

    key: str
    failure: dg.Failure | None = None  # it could not be landed or staged (rejected, vanished, ...)
    held: str = ""  # it was staged, but a blocking check failed: which, and where the file is now


def _files_of(context: dg.AssetExecutionContext, config: LandingConfig) -> tuple[list[str], dict[str, BatchFile]]:
    """The partitions this run handles and, for each delivered now, its file in ingress."""
    keys_ = list(context.partition_keys)
    if config.batch:
        files = {f.partition_key: f for f in config.batch}
        outside = [k for k in keys_ if k not in files]
        if outside:  # added between this run's files by someone else: their own runs handle them
            context.log.info(f"{len(outside)} partition(s) of the range are not files of this run, left to their "
                             f"own runs: {', '.join(outside[:10])}")
        return [k for k in keys_ if k in files], files
    if config.ingress_file:
        if len(keys_) != 1:
            raise dg.Failure(description="ingress_file names one file, but this run covers "
                             f"{len(keys_)} partitions: list them under batch", allow_retries=False)
        return keys_, {keys_[0]: BatchFile(partition_key=keys_[0], ingress_file=config.ingress_file,
                                           delivered_at_ns=config.delivered_at_ns)}
    return keys_, {}  # a re-run: every partition from landing


def build_ingest(ds: Dataset, partitions: dg.DynamicPartitionsDefinition) -> dg.AssetsDefinition:
    """Landing, staging and quarantine of the dataset as one step, run over one partition (a
    file) or a range of them (several files in one run, ``BackfillPolicy.single_run``): each file
    is landed and staged in turn and gets its own materialisations and check verdicts, recorded
    against its partition, so a run of fifty files shows fifty verdicts."""
    landing_key, staging_key, quarantine_key = keys(ds)
    contract = ds.spec.contract
    supersede = ds.spec.redelivery == "supersede"
    data_freshness = data_freshness_spec(staging_key, partitions, ds)
    specs = [*check_specs(staging_key, partitions, ds), *filter(None, [data_freshness])]
    blocking = {s.name: s.blocking for s in specs}

    @dg.multi_asset(
        name=f"land_and_stage__{ds.id}",
        partitions_def=partitions,
        group_name=ds.insight_zone,
        specs=[
            dg.AssetSpec(
                landing_key,
                owners=list(ds.owners),
                kinds={"csv", "file"},
                description=f"Exact bytes of each delivered {ds.name} file, one partition per file. Immutable; "
                "not readable by analysts.",
                metadata={"zone": "landing", "insight_zone": ds.insight_zone, "file_pattern": ds.spec.source.pattern},
                skippable=True,
            ),
            dg.AssetSpec(
                staging_key,
                deps=[landing_key],
                owners=list(ds.owners),
                kinds={"parquet", "pandera", "duckdb", *(["spark"] if ds.spec.engine == "spark" else [])},
                description=ds.spec.description or f"Typed, contract-validated {ds.name}.",
                metadata={"dagster/column_schema": column_schema(ds),
                          "dagster/table_name": table_name("staging", ds.insight_zone, ds.name),
                          "redelivery": ds.spec.redelivery},
                freshness_policy=freshness_policy(ds),
                # A held delivery is not materialised in staging: its partition shows as failed, not
                # green, until a corrected re-delivery or a steward's release (assets.steward).
                skippable=True,
            ),
            dg.AssetSpec(
                quarantine_key,
                deps=[landing_key],
                owners=list(ds.owners),
                kinds={"parquet", "duckdb"},
                description=f"Rows of {ds.name} that broke the contract: original values, failed rules "
                "and columns, source file and line.",
                metadata={"dagster/table_name": table_name("quarantine", ds.insight_zone, ds.name)},
                skippable=True,
            ),
        ],
        check_specs=specs,
        retry_policy=RETRY,
        # Several files in one run: the sensor requests a range of the partitions it just added.
        backfill_policy=dg.BackfillPolicy.single_run(),
        # Outputs (and checks) are reported per partition below, never as the step's outputs; and
        # landing can be selected without staging (or the other way round, from landing).
        can_subset=True,
    )
    def land_and_stage(context: dg.AssetExecutionContext, config: LandingConfig, platform: PlatformResource):
        selected = context.selected_asset_keys
        land, stage = landing_key in selected, bool({staging_key, quarantine_key} & selected)
        todo, files = _files_of(context, config)
        # Outputs the step reports as outputs: a run of one partition, the selected assets.
        outputs = set() if len(context.partition_keys) > 1 else set(selected)
        done = _staged_in_this_run(platform, ds, context.run.run_id) if context.retry_number else set()
        verdicts: list[_Verdict] = []
        pending: list[_Staged] = []  # staged, not yet published: published together (one catalog write)
        since = time.monotonic()

        def publish_pending():
            held = yield from _publish(context, platform, ds, pending, supersede=supersede, blocking=blocking,
                                       outputs=outputs)
            for v in verdicts:
                v.held = held.get(v.key, v.held)
            pending.clear()

        for key in todo:
            if key in done:  # a retry of this step: this file's events were recorded by the earlier attempt
                context.log.info(f"{key} was staged by an earlier attempt of this step")
                continue
            verdict = _Verdict(key)
            try:
                if land:
                    with platform_errors(f"landing {key}", partition=key):
                        info = _land(platform, ds, key, files.get(key), context.log)
                    yield _materialized(landing_key, key, _landing_metadata(info), outputs)
                if stage:
                    staged = yield from _stage(context, platform, ds, key, contract=contract, blocking=blocking)
                    if not pending:
                        since = time.monotonic()
                    pending.append(staged)
            except dg.Failure as f:
                if f.allow_retries or len(todo) == 1:
                    # Transient: the step is retried, and files already published are not redone;
                    # so the files staged before this one are published first.
                    yield from publish_pending()
                    raise
                context.log.error(f"{key}: {f.description}")
                verdict.failure = f
            verdicts.append(verdict)
            if len(pending) >= PUBLISH_MAX_FILES or (pending and time.monotonic() - since >= PUBLISH_EVERY_S):
                yield from publish_pending()
        yield from publish_pending()
        _raise_for(verdicts, ds)

    return land_and_stage


def _materialized(asset_key: dg.AssetKey, key: str, metadata: dict, outputs: set[dg.AssetKey]
                  ) -> dg.MaterializeResult | dg.AssetMaterialization:
    """A run of one partition reports the step's output (so assets downstream of it in the same run
    go ahead); a ranged run reports each partition's materialisation by itself, as its output would
    stand for the whole range (and downstream steps of such a run, which only the sensor starts
    and which holds none, are skipped)."""
    if asset_key not in outputs:  # ranged, or not selected (staging and quarantine are written together)
        return dg.AssetMaterialization(asset_key=asset_key, partition=key, metadata=metadata)
    return dg.MaterializeResult(asset_key=asset_key, metadata=metadata)


def _staged_in_this_run(platform: PlatformResource, ds: Dataset, run_id: str) -> set[str]:
    mark = f"-{run_id[:8]}/"
    return {r.version.partition_key for r in platform.catalog().partitions(ds.insight_zone, ds.name)
            if mark in r.version.staging_uri}


def _raise_for(verdicts: list[_Verdict], ds: Dataset) -> None:
    """The run fails when any of its files was not published, naming each and why (the per-file
    verdicts are on the partitions already)."""
    bad = [v for v in verdicts if v.failure is not None or v.held]
    if not bad:
        return
    if len(verdicts) == 1 and bad[0].failure is not None:
        e = bad[0].failure  # a run of one file fails as that file did
        raise e
    lines = [f"- {v.key}: {v.failure.description if v.failure is not None else v.held}" for v in bad]
    one = bad[0] if len(bad) == 1 else None
    description = (f"{bad[0].key} was not published in staging: {bad[0].held}" if len(verdicts) == 1 else
                   f"{len(bad)} of {len(verdicts)} delivered {ds.name} files of this run were not published in "
                   "staging (the others were):\n" + "\n".join(lines))
    raise dg.Failure(
        description=description,
        metadata={"error": "NotPublished", "error_kind": "terminal", "files": len(bad),
                  "partitions": dg.MetadataValue.json([v.key for v in bad]),
                  **({"partition": one.key, "source_file": split_partition_key(one.key)[0]} if one else {})},
        allow_retries=False,
    )


@dataclass
class _Staged:
    """One file staged and written to its final objects, not yet in the catalog."""

    key: str
    name: str
    result: object  # the engine's StagingResult
    rows_staged: int
    rows_quarantined: int
    contract_ok: bool
    fresh: dg.AssetCheckResult | None  # the data freshness verdict, where the dataset declares one
    version: PartitionVersion


def _stage(context: dg.AssetExecutionContext, platform: PlatformResource, ds: Dataset, key: str, *,
           contract, blocking: dict[str, bool]) -> Generator[object, None, _Staged]:
    """Stage one landed file into its final, versioned objects (not yet in view: see ``_publish``);
    a rejected file yields its verdict and fails."""
    _, staging_key, _ = keys(ds)
    name, digest = split_partition_key(key)
    with platform_errors(f"staging {name} ({ds.label})", source_file=name, partition=key):
        lake = platform.lake()
        landing, s_store, q_store = lake.zone("landing"), lake.zone("staging"), lake.zone("quarantine")
        landed = landing_parts(ds, key)
        if not landing.exists(*landed):
            raise TerminalError(f"{name}: partition {key} has no landed file at {landing.uri(*landed)}")
        version = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{context.run.run_id[:8]}"
        tmp = (TMP_DIR, f"{key}.{version}.parquet")
        for store in (s_store, q_store):
            _remove_leftovers(store, key)
        arrival_ns = landing.delivered_at_ns(*landed)
        request = StagingRequest(
            source_uri=landing.uri(*landed), source_name=name, contract=delivery_contract(ds, arrival_ns),
            csv=ds.spec.source.csv, staging_uri=s_store.uri(*tmp), quarantine_uri=q_store.uri(*tmp),
            expected_sha256=digest, event_time=ds.spec.freshness.data.event_time
            if ds.spec.freshness and ds.spec.freshness.data else None,
        )
        try:
            try:
                result = engine_for(ds, spark_jobs=lambda: platform.spark_jobs(context)).stage(request, lake)
            except FileRejected as e:
                yield check_evaluation(context.instance, rejected_result(staging_key, name, e), key, blocking)
                raise failure(e, note=f"The file stays in landing ({landing.uri(*landed)}): once the contract "
                                      "accepts it (and the definitions are reloaded), re-execute this run "
                                      "to stage it from there; re-executed unchanged, it fails the same way.",
                              source_file=name, partition=key) from None
            assert result.staging_uri and result.quarantine_uri
            staged = _parquet_rows(lake, result.staging_uri)
            quarantined = _parquet_rows(lake, result.quarantine_uri)
            contract_ok = result.quarantine_ratio <= contract.max_quarantine_ratio
            reconciled = staged + quarantined == result.rows_read
            fresh = data_freshness_result(ds, staging_key, result.newest_event_time, arrival_ns) \
                if DATA_FRESHNESS_CHECK in blocking else None
            fresh_ok = fresh is None or fresh.passed or not blocking[DATA_FRESHNESS_CHECK]
            final = partition_parts(ds, key, version)
            s_store.publish(lake.parts_of(result.staging_uri), final)
            q_store.publish(lake.parts_of(result.quarantine_uri), final)
        finally:
            for store in (s_store, q_store):
                _remove_leftovers(store, key)
    return _Staged(key, name, result, staged, quarantined, contract_ok, fresh, PartitionVersion(
        insight_zone=ds.insight_zone, dataset=ds.name, partition_key=key, source_file=name,
        delivered_at_ns=arrival_ns, staging_uri=s_store.uri(*final), quarantine_uri=q_store.uri(*final),
        passed=contract_ok and reconciled and fresh_ok, rows_staged=staged, rows_quarantined=quarantined))


def _publish(context: dg.AssetExecutionContext, platform: PlatformResource, ds: Dataset, files: list[_Staged], *,
             supersede: bool, blocking: dict[str, bool], outputs: set[dg.AssetKey]
             ) -> Generator[object, None, dict[str, str]]:
    """Make staged files visible, in one catalog transaction (a file's staged and quarantined rows
    together; a file that failed a blocking check is held: only its quarantine is shown), then
    report each file's events on its own partition. Returns, per file held, why."""
    if not files:
        return {}
    what = files[0].name if len(files) == 1 else f"{len(files)} {ds.name} files"
    with platform_errors(f"publishing {what} ({ds.label})",
                         **({"source_file": files[0].name, "partition": files[0].key} if len(files) == 1 else {})):
        lake = platform.lake()
        catalog = platform.catalog()
        outcomes = catalog.publish_many([f.version for f in files], supersede=supersede)
        records = catalog.partitions(ds.insight_zone, ds.name)
        referenced = {u for r in records for u in (r.version.staging_uri, r.version.quarantine_uri)}
        now_ns = time.time_ns()
        for f in files:
            for zone in ("staging", "quarantine"):
                _remove_old_versions(lake.zone(zone), ds, f.key, referenced, now_ns)
        published_rows = sum(r.version.rows_staged for r in records if r.state == "published")
        query_hint = catalog.query_hint()
    live_names = {r.version.source_file: r.version.partition_key for r in records if r.state == "published"}
    held: dict[str, str] = {}
    for f, outcome in zip(files, outcomes, strict=True):
        earlier = live_names.get(f.name) if supersede and outcome.state == "held" else None
        reason = yield from _report(context, ds, f, outcome, published_rows=published_rows, query_hint=query_hint,
                                    earlier=earlier, blocking=blocking, outputs=outputs)
        if reason:
            held[f.key] = reason
    return held


def _report(context: dg.AssetExecutionContext, ds: Dataset, f: _Staged, outcome, *, published_rows: int,
            query_hint: str, earlier: str | None, blocking: dict[str, bool], outputs: set[dg.AssetKey]
            ) -> Generator[object, None, str]:
    """One published file's materialisations and check verdicts; returns why it is held, if it is.
    ``earlier``: the published delivery of the same file name that a held one leaves in view."""
    _, staging_key, quarantine_key = keys(ds)
    key, name, result = f.key, f.name, f.result
    for old in outcome.superseded:
        for asset_key in (staging_key, quarantine_key):
            yield dg.AssetObservation(
                asset_key=asset_key, partition=old,
                metadata={"superseded_by": key, "in_catalog": False,
                          "reason": f"{name} was delivered again; the newer delivery {key} replaces it"})
        context.log.info(f"{key} supersedes {old}: the earlier delivery of {name} left the staging and "
                         "quarantine views (it stays in landing)")
    state_note = {
        "published": "published: in the staging and quarantine views",
        "held": "held: a blocking check failed, only its quarantine is in view"
                + ("" if earlier is None else f"; the earlier delivery of this file name ({earlier}) stays in "
                   "staging until this one is published")
                + f". Deliver it again corrected, or a steward decides with the job steward__{ds.id}",
        "superseded": f"superseded on arrival by the newer delivery {outcome.superseded_by}",
    }[outcome.state]
    common = {"source_file": name, "partition": key, "rows_read": result.rows_read,
              "sha256_prefix": split_partition_key(key)[1]}
    q_table = table_name("quarantine", ds.insight_zone, ds.name)
    ready_query = {  # where to look at this file's quarantined rows, ready to paste
        "quarantine_query": dg.MetadataValue.md(
            f"```sql\nSELECT _source_line, _errors, *\nFROM {q_table}\nWHERE _source_file = {_sql_text(name)}\n"
            f"ORDER BY _source_line;\n```\nRun it with `{query_hint}`."),
    }
    if outcome.state != "held":
        yield _materialized(staging_key, key, outputs=outputs, metadata={
            **common,
            # What the asset shows is the table as published, not this delivery alone.
            "dagster/row_count": published_rows,
            "rows_staged": f.rows_staged,
            "dagster/column_schema": column_schema(ds),
            "rows_quarantined": f.rows_quarantined,
            "rows_duplicate_key": result.duplicates,
            "quarantine_ratio": round(result.quarantine_ratio, 6),
            "published": outcome.state == "published",
            "catalog_state": state_note,
            "supersedes": dg.MetadataValue.json(list(outcome.superseded)),
            "dagster/uri": f.version.staging_uri,
            "read_path": result.read_path,
        })
    yield _materialized(
        quarantine_key, key, outputs=outputs,
        metadata={**common, "dagster/row_count": f.rows_quarantined, "catalog_state": state_note,
                  "violations": dg.MetadataValue.json(dict(result.violations)),
                  "dagster/uri": f.version.quarantine_uri, **ready_query},
    )
    verdicts = [contract_result(ds, staging_key, result, f.contract_ok,
                                extra={"catalog_state": state_note, "rows_staged": f.rows_staged, **ready_query}),
                reconciliation_result(staging_key, result.rows_read, f.rows_staged, f.rows_quarantined),
                *([f.fresh] if f.fresh is not None else [])]
    for v in verdicts:
        yield check_evaluation(context.instance, v, key, blocking)
    failed = [v for v in verdicts if not v.passed and blocking[v.check_name]
              and v.severity == dg.AssetCheckSeverity.ERROR]
    if not failed:
        return ""
    return "; ".join(f"blocking check {v.check_name} failed" + (f": {v.description}" if v.description else "")
                     for v in failed) + f". {state_note[0].upper()}{state_note[1:]}"


def _sql_text(value: str) -> str:
    """A SQL string literal (file names may hold quotes)."""
    return "'" + value.replace("'", "''") + "'"


def build_dataset(ds: Dataset) -> DatasetDefs:
    ds.contract  # noqa: B018 - compile now: a contract that cannot stage fails the code location's load
    partitions = dg.DynamicPartitionsDefinition(name=f"{ds.id}__files")
    assets = build_ingest(ds, partitions)
    job = dg.define_asset_job(
        name=f"ingest__{ds.id}",
        selection=dg.AssetSelection.assets(*keys(ds)),
        description=f"Land delivered {ds.name} files and stage each through its contract (one file a run, or "
                    "several: a range of partitions).",
    )
    return DatasetDefs(ds, assets, job, partitions)
