"""The Spark job's Dagster Pipes paths against the AWS stand-in (moto in server mode).

- Locally, with a ``pipes_bucket``: the job (a real Spark session in ``.venv-spark``) loads its
  context from S3 and writes its messages there, as it does on EMR Serverless or Glue; the run
  reads them back.
- EMR Serverless: moto accepts and completes a job run but runs no code, so what is tested is the
  submission (application, role, script, arguments, the Pipes bootstrap) and that a job which
  reports no result stages nothing and says so.
"""

import dagster as dg
import pytest
from support import SAMPLES

from core.zones import all_datasets
from engine import StagingRequest
from engine.spark import job_request
from resources.spark.aws import EmrServerlessJobs
from resources.spark.local import PipesSubprocessJobs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_spark_at_a_time")]

REGION = "eu-west-1"
BUCKET = "lake-pipes"
ZONES = SAMPLES / "mobility" / "taxi_zones" / "taxi_zone_lookup.csv"


def _request(tmp_path) -> dict:
    ds = {d.id: d for d in all_datasets()}["mobility__taxi_zones"]
    req = StagingRequest(source_uri=str(ZONES), source_name=ZONES.name, contract=ds.contract, csv=ds.spec.source.csv,
                         staging_uri=str(tmp_path / "s.parquet"), quarantine_uri=str(tmp_path / "q.parquet"))
    header = ZONES.read_text().splitlines()[0].replace('"', "").split(",")
    return job_request(req, header, str(tmp_path / "staging"), str(tmp_path / "quarantine"))


def _run_in_asset(launch) -> tuple[dg.ExecuteInProcessResult, list, dg.DagsterInstance]:
    got: list = []

    @dg.asset
    def staged(context: dg.AssetExecutionContext) -> None:
        got.append(launch(context))

    instance = dg.DagsterInstance.ephemeral()
    return dg.materialize([staged], instance=instance, raise_on_error=False), got, instance


def _s3():
    import boto3

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return s3


def test_the_job_loads_its_context_and_writes_its_messages_through_s3(aws, tmp_path) -> None:
    s3 = _s3()
    req = _request(tmp_path)
    result, got, instance = _run_in_asset(
        lambda context: PipesSubprocessJobs(context, s3_client=s3, pipes_bucket=BUCKET).run([req]))
    assert result.success
    [[out]] = got
    assert (out["rows_read"], out["rows_staged"], out["rows_quarantined"]) == (265, 265, 0)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys, "the job's messages went through the bucket"
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith(f"{ZONES.name}: ") for m in logs)


def test_emr_serverless_gets_the_script_role_arguments_and_pipes_bootstrap_and_a_silent_job_stages_nothing(
        aws, tmp_path) -> None:
    import boto3

    s3 = _s3()
    emr = boto3.client("emr-serverless", region_name=REGION)
    app = emr.create_application(name="lake-spark", releaseLabel="emr-7.5.0", type="SPARK")["applicationId"]
    role = "arn:aws:iam::123456789012:role/lake-test-spark"
    script = f"s3://{BUCKET}/scripts/job.py"
    req = _request(tmp_path)
    result, got, _ = _run_in_asset(lambda context: EmrServerlessJobs(
        context, emr=emr, s3=s3, application_id=app, execution_role_arn=role, script_uri=script,
        pipes_bucket=BUCKET, timeout_minutes=30, poll_interval=0.2).run([req]))
    assert not result.success and not got
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else \
        failure.step_failure_data.error.message
    assert f"EMR Serverless application {app} reported no result for {ZONES.name}; nothing was staged" in message
    [run] = emr.list_job_runs(applicationId=app)["jobRuns"]
    submitted = emr.get_job_run(applicationId=app, jobRunId=run["id"])["jobRun"]
    driver = submitted["jobDriver"]["sparkSubmit"]
    assert submitted["executionRole"] == role and submitted["executionTimeoutMinutes"] == 30
    assert driver["entryPoint"] == script and driver["entryPointArguments"] == ["--pipes", "s3"]
    assert "DAGSTER_PIPES_CONTEXT" in str(submitted) and "DAGSTER_PIPES_MESSAGES" in str(submitted), submitted
