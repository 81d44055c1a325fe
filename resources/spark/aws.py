"""The Spark job on EMR Serverless or Glue, through Dagster Pipes.

The same ``engine/spark/job.py`` runs there (uploaded to ``spark.script_uri`` by the deployment):
it reads the landed object from S3 and writes Spark's part files under the staging and
quarantine zones' ``_tmp``; the driver gathers them into the published files as it does locally.
Context and messages go through ``spark.pipes_bucket`` (``PipesS3ContextInjector`` and
``PipesS3MessageReader``); the job's result is its one custom message.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from resources.spark.local import results_of, step_keeps_its_own_outputs


def _pipes(s3: Any, bucket: str) -> dict[str, Any]:
    from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

    return {"context_injector": PipesS3ContextInjector(bucket=bucket, client=s3, key_prefix="pipes"),
            "message_reader": PipesS3MessageReader(bucket=bucket, client=s3, interval=5)}


class EmrServerlessJobs:
    local_files = False  # the job reads and writes S3 itself

    def __init__(self, context: dg.AssetExecutionContext, *, emr: Any, s3: Any, application_id: str,
                 execution_role_arn: str, script_uri: str, pipes_bucket: str, timeout_minutes: int,
                 poll_interval: float = 5.0):
        self.context, self.emr, self.s3 = context, emr, s3
        self.application_id, self.role, self.script = application_id, execution_role_arn, script_uri
        self.bucket, self.timeout, self.poll = pipes_bucket, timeout_minutes, poll_interval

    def start_params(self, requests: list[dict]) -> dict[str, Any]:
        names = ", ".join(r["source_name"] for r in requests)
        return {
            "applicationId": self.application_id,
            "executionRoleArn": self.role,
            "name": f"stage {names}"[:256],
            "executionTimeoutMinutes": self.timeout,
            "jobDriver": {"sparkSubmit": {"entryPoint": self.script, "entryPointArguments": ["--pipes", "s3"],
                                          "sparkSubmitParameters": "--conf spark.sql.session.timeZone=UTC"}},
            "tags": {"dagster/run_id": self.context.run.run_id},
        }

    def run(self, requests: list[dict]) -> list[dict]:
        from dagster_aws.pipes import PipesEMRServerlessClient

        client = PipesEMRServerlessClient(client=self.emr, poll_interval=self.poll, **_pipes(self.s3, self.bucket))
        with step_keeps_its_own_outputs(self.context):
            done = client.run(context=self.context, start_job_run_params=self.start_params(requests),  # type: ignore[arg-type]
                              extras={"requests": requests})
        return results_of(done.get_custom_messages(), requests, f"EMR Serverless application {self.application_id}")


class GlueJobs:
    local_files = False

    def __init__(self, context: dg.AssetExecutionContext, *, glue: Any, s3: Any, job_name: str, pipes_bucket: str,
                 timeout_minutes: int):
        self.context, self.glue, self.s3 = context, glue, s3
        self.job_name, self.bucket, self.timeout = job_name, pipes_bucket, timeout_minutes

    def start_params(self, requests: list[dict]) -> dict[str, Any]:
        return {"JobName": self.job_name, "Arguments": {"--pipes": "s3"}, "Timeout": self.timeout}

    def run(self, requests: list[dict]) -> list[dict]:
        from dagster_aws.pipes import PipesGlueClient

        client = PipesGlueClient(client=self.glue, **_pipes(self.s3, self.bucket))
        with step_keeps_its_own_outputs(self.context):
            done = client.run(context=self.context, start_job_run_params=self.start_params(requests),  # type: ignore[arg-type]
                              extras={"requests": requests})
        return results_of(done.get_custom_messages(), requests, f"Glue job {self.job_name}")
