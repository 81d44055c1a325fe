"""The Spark engine's driver side: the same StagingEngine interface as the Arrow engine.

The driver (this process, the project's environment) reads and checks the header exactly as the
Arrow engine does, so a file is refused for the same reasons with the same words; it then runs
``engine/spark/job.py`` in the Spark environment with the contract as JSON
(``CompiledContract.portable``) and gathers Spark's part files into the one staging and one
quarantine Parquet file the caller publishes, in the exact schemas the Arrow engine writes. The
job itself never imports this package: on EMR Serverless or Glue it is the same file, started
through Dagster Pipes.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import ContractError, FileRejected, IntegrityError, ResourceUnavailable
from engine.arrow.records import HEADER_LIMIT, read_header
from engine.arrow.stager import MAX_EXAMPLES, check_header, quarantine_schema, staging_schema
from engine.base import FileIO, StagingRequest, StagingResult, check_landed_bytes, check_not_empty

JOB = Path(__file__).with_name("job.py")
ROOT = Path(__file__).resolve().parents[2]


def spark_python() -> str:
    """The Spark environment's interpreter: ``SPARK_PYTHON``, else the repo's ``.venv-spark``."""
    return os.environ.get("SPARK_PYTHON") or str(ROOT / ".venv-spark" / "bin" / "python")


def job_request(request: StagingRequest, header: list[str], staging_dir: str, quarantine_dir: str) -> dict:
    """The job's input: everything it needs as JSON, nothing it would have to import."""
    contract = request.contract
    match = check_header(contract, header, request.source_name)
    positions = {match.mapping[h]: i for i, h in enumerate(header) if h in match.mapping}
    return {
        "source_uri": request.source_uri, "source_name": request.source_name,
        "contract": contract.portable(), "csv": request.csv.model_dump(),
        "positions": positions, "absent": match.absent_optional, "n_fields": len(header),
        "unique_key": list(contract.spec.unique_key), "event_time": request.event_time,
        "staging_uri": staging_dir, "quarantine_uri": quarantine_dir, "pii_labels": contract.pii_labels(),
        "max_examples": MAX_EXAMPLES,
    }


def _gather(io_: FileIO, parts_dir: str, schema: pa.Schema, out, order: list[str]) -> int:
    """Spark's part files, in order, as one Parquet file in ``schema`` (row group by row group);
    part files a cluster wrote to the lake are deleted once read."""
    local = os.path.isdir(parts_dir)
    if local:
        parts = sorted(glob.glob(os.path.join(parts_dir, "part-*.parquet")))
    else:
        listed = io_.list(parts_dir)  # type: ignore[attr-defined]  # the Lake lists; local dirs need not
        parts = sorted(u for u in listed if u.rsplit("/", 1)[-1].startswith("part-") and u.endswith(".parquet"))
    rows = 0
    with pq.ParquetWriter(out, schema) as w:
        for part in parts:
            with (open(part, "rb") if local else io_.open_input(part)) as src:
                f = pq.ParquetFile(src)
                for i in range(f.num_row_groups):
                    t = f.read_row_group(i).select(order)
                    w.write_table(t.cast(schema))
                    rows += t.num_rows
    if not local:
        for uri in listed:
            with contextlib.suppress(FileNotFoundError, OSError):
                io_.delete(uri)
    return rows


class SparkJobs(Protocol):
    """Runs the Spark staging job over requests (``job_request``), one result dict per request, in
    order. ``SubprocessJobs`` here; Dagster Pipes launchers (local subprocess, EMR Serverless,
    Glue) in ``resources.spark``."""

    local_files: bool  # whether the job runs here (local files) or on a cluster (S3 URIs)

    def run(self, requests: list[dict]) -> list[dict]: ...


class SubprocessJobs:
    """The job as a local subprocess in the Spark environment, requests and results as JSON files
    (benchmarks, tools, tests without Dagster)."""

    local_files = True

    def __init__(self, python: str | None = None):
        self.python = python or spark_python()

    def run(self, requests: list[dict]) -> list[dict]:
        work = tempfile.mkdtemp(prefix="spark-job-")
        try:
            req_path, result_path = os.path.join(work, "request.json"), os.path.join(work, "result.json")
            with open(req_path, "w") as f:
                json.dump({"requests": requests}, f)
            done = subprocess.run([self.python, str(JOB), "--request", req_path, "--result", result_path],
                                  capture_output=True, text=True, env=job_env())
            if done.returncode != 0:
                tail = "\n".join(done.stderr.strip().splitlines()[-40:])
                names = ", ".join(r["source_name"] for r in requests)
                raise ResourceUnavailable(f"the Spark job failed (exit {done.returncode}) on {names}; "
                                          f"nothing was staged:\n{tail}")
            with open(result_path) as f:
                return json.load(f)["results"]
        finally:
            shutil.rmtree(work, ignore_errors=True)


def job_env() -> dict[str, str]:
    """The job's environment: this one without the project's Python path (the job imports nothing
    of it), Spark bound to the loopback interface."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "SPARK_LOCAL_IP": "127.0.0.1"}


class SparkEngine:
    name = "spark"

    def __init__(self, jobs: SparkJobs | None = None):
        self.jobs = jobs or SubprocessJobs()

    def stage(self, request: StagingRequest, io_: FileIO) -> StagingResult:
        [outcome] = self.stage_many([request], io_)
        if isinstance(outcome, StagingResult):
            return outcome
        e = outcome  # the FileRejected or IntegrityError stage_many kept for this file: a re-raise
        raise e

    def stage_many(self, requests: list[StagingRequest], io_: FileIO) -> list[StagingResult | Exception]:
        """Stage several files in one Spark session. Each file gets its result, or the exception
        that refused it (``FileRejected``, ``IntegrityError``), as ``stage`` would raise it; a
        failed job raises for all."""
        work = tempfile.mkdtemp(prefix="spark-stage-")
        outcomes: list[StagingResult | Exception | None] = [None] * len(requests)
        prepared: list[tuple[int, dict, list[str], object, str]] = []
        try:
            for i, request in enumerate(requests):
                try:
                    prepared.append((i, *self._prepare(request, io_, os.path.join(work, str(i)))))
                except (FileRejected, IntegrityError) as e:
                    outcomes[i] = e
            if prepared:
                results = self._results([p[1] for p in prepared])
                for (i, req, header, match, digest), out in zip(prepared, results, strict=True):
                    try:
                        outcomes[i] = self._finish(requests[i], io_, req, out, header, match, digest)
                    except (FileRejected, IntegrityError) as e:
                        outcomes[i] = e
            return outcomes  # type: ignore[return-value]
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _prepare(self, request: StagingRequest, io_: FileIO, work: str) -> tuple[dict, list[str], object, str]:
        contract = request.contract
        with io_.open_input(request.source_uri) as f:
            head = f.read(HEADER_LIMIT)
        header = read_header(head, request.csv, request.source_name, contract.dataset)
        match = check_header(contract, header, request.source_name)
        sha = hashlib.sha256()
        with io_.open_input(request.source_uri) as f:
            while chunk := f.read(8 << 20):
                sha.update(chunk)
        digest = sha.hexdigest()
        check_landed_bytes(request, digest)
        if not self.jobs.local_files:  # a cluster: Spark's part files next to the temporary outputs
            return job_request(request, header, request.staging_uri + ".spark",
                               request.quarantine_uri + ".spark"), header, match, digest
        req = job_request(request, header, os.path.join(work, "staging"), os.path.join(work, "quarantine"))
        if not os.path.isfile(request.source_uri):
            # Not a local file (an S3 lake): the local Spark session reads a copy; a cluster reads
            # the object itself (the Pipes launch).
            os.makedirs(work, exist_ok=True)
            copy = os.path.join(work, "source.csv")
            with io_.open_input(request.source_uri) as f, open(copy, "wb") as out:
                shutil.copyfileobj(f, out, 8 << 20)
            req["source_uri"] = copy
        return req, header, match, digest

    def _results(self, reqs: list[dict]) -> list[dict]:
        results = self.jobs.run(reqs)
        if len(results) != len(reqs):
            raise IntegrityError(f"the Spark job returned {len(results)} results for {len(reqs)} files "
                               f"({', '.join(r['source_name'] for r in reqs)}); nothing was staged")
        return results

    @staticmethod
    def _finish(request: StagingRequest, io_: FileIO, req: dict, out: dict, header: list[str], match,
                digest: str) -> StagingResult:
        contract = request.contract
        if "refused" in out:
            raise FileRejected(request.source_name, contract.dataset, out["refused"], header=header)
        if "inconsistent" in out:
            raise ContractError(f"contract {contract.dataset}: {out['inconsistent']}")
        result = StagingResult(read_path="spark", sha256=digest, header=match,
                               staging_uri=request.staging_uri, quarantine_uri=request.quarantine_uri)
        s_schema, q_schema = staging_schema(contract), quarantine_schema(contract)
        try:
            with io_.open_output(request.staging_uri) as sink:
                staged = _gather(io_, req["staging_uri"], s_schema, sink, s_schema.names)
            with io_.open_output(request.quarantine_uri) as sink:
                quarantined = _gather(io_, req["quarantine_uri"], q_schema, sink, q_schema.names)
            if (staged, quarantined) != (out["rows_staged"], out["rows_quarantined"]):
                raise IntegrityError(f"{contract.dataset}: Spark reported {out['rows_staged']} staged and "
                                     f"{out['rows_quarantined']} quarantined rows, its files hold {staged} and "
                                     f"{quarantined}; nothing was published")
            result.rows_read, result.rows_staged, result.rows_quarantined = out["rows_read"], staged, quarantined
            result.violations = Counter(out["violations"])
            result.duplicates = out["duplicates"]
            result.examples = list(out.get("examples", []))
            if out.get("newest_event_time"):
                result.newest_event_time = datetime.fromisoformat(out["newest_event_time"])
            check_not_empty(request, result, header)
            return result
        except BaseException:
            for uri in (request.staging_uri, request.quarantine_uri):
                with contextlib.suppress(FileNotFoundError, OSError):
                    io_.delete(uri)
            raise
