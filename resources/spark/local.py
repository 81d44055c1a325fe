"""The Spark job as a local subprocess, through Dagster Pipes (``PipesSubprocessClient``).

Its log lines and result come back as Pipes messages: in the run's event log, and read here. By
default context and messages go through temporary files; with a ``pipes_bucket`` they go through
S3, as they do from EMR Serverless or Glue (the same job code path, testable on the stand-in).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dagster as dg

from core.errors import IntegrityError
from engine.spark import JOB, job_env, spark_python


def results_of(messages: list[Any], requests: list[dict], where: str) -> list[dict]:
    """The job's one result message: a result per request, or a clear error naming the files."""
    found = [m["results"] for m in messages if isinstance(m, dict) and "results" in m]
    names = ", ".join(r["source_name"] for r in requests)
    if not found:
        raise IntegrityError(f"the Spark job on {where} reported no result for {names}; nothing was staged "
                           "(its log is in the run's event log)")
    return found[-1]


@contextlib.contextmanager
def step_keeps_its_own_outputs(context: dg.AssetExecutionContext) -> Iterator[None]:
    """Pipes expects an asset step to return Pipes' results as its outputs, and turns a step's
    usual leniency off for that. Here Pipes carries only the job's log and result: the step
    records its own per-file materialisations and check evaluations (assets.ingest), so its mode
    is put back once the job is done. (Dagster has no public switch back: the step context's flag
    is set directly; tests/test_spark_engine.py runs this path.)"""
    step = context.op_execution_context._step_execution_context  # noqa: SLF001
    before = (step.requires_typed_event_stream, step.typed_event_stream_error_message)
    try:
        yield
    finally:
        step._requires_typed_event_stream, step._typed_event_stream_error_message = before  # noqa: SLF001


class PipesSubprocessJobs:
    local_files = True  # a local session: it reads and writes local files

    def __init__(self, context: dg.AssetExecutionContext, python: str | None = None, s3_client: Any = None,
                 pipes_bucket: str | None = None):
        self.context, self.python = context, python or spark_python()
        self.s3_client, self.pipes_bucket = s3_client, pipes_bucket

    def run(self, requests: list[dict]) -> list[dict]:
        kwargs: dict[str, Any] = {}
        mode = "file"
        if self.pipes_bucket:
            from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

            kwargs = {"context_injector": PipesS3ContextInjector(bucket=self.pipes_bucket, client=self.s3_client,
                                                                 key_prefix="pipes"),
                      "message_reader": PipesS3MessageReader(bucket=self.pipes_bucket, client=self.s3_client,
                                                             interval=1)}
            mode = "s3"
        client = dg.PipesSubprocessClient(env=job_env(), **kwargs)
        with step_keeps_its_own_outputs(self.context):
            done = client.run(context=self.context, command=[self.python, str(JOB), "--pipes", mode],
                              extras={"requests": requests})
        return results_of(done.get_custom_messages(), requests, "a local subprocess")
