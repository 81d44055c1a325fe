"""The access the generated stack must grant and refuse, as requests with their expected outcome.

``expectations`` states them from the declarations; ``check`` evaluates them with ``infra.policy`` against
policy documents: those of the rendered template (``python -m cli infra check``) or those read back from a
deployed stack (the tests), so both reviews ask the same questions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError
from core.names import schema_name
from core.zones import InsightZone
from infra.cloudformation import (
    KEY,
    bucket_logical_id,
    pii_datasets,
    render,
    resolve_intrinsics,
    role_logical_id,
)
from infra.policy import Decision, Request, evaluate
from resources.environment import Environment, split_s3_uri

__all__ = ["Expectation", "check", "check_template", "expectations", "template_policies"]

Policies = list[tuple[str, Mapping[str, Any]]]


@dataclass(frozen=True)
class Expectation:
    what: str
    role: str  # logical id of the caller's role
    bucket: str | None  # logical id of the bucket whose policy also applies
    request: Request
    allowed: bool


def expectations(env: Environment, zones: Iterable[InsightZone], key_arn: str) -> list[Expectation]:
    """The requests to review, for the environment's buckets, databases, secrets and roles."""
    if env.aws is None or not env.catalog.database_prefix:
        raise ConfigError(f"environment {env.name!r}: infra check needs an AWS environment with a glue catalog")
    zones = tuple(zones)
    acct, region, prefix, db_prefix = (env.aws.account_id, env.aws.region, env.aws.resource_prefix,
                                       env.catalog.database_prefix)
    loc = {z: split_s3_uri(u) for z, u in env.lake.zones.items()} | {"ingress": split_s3_uri(env.ingress.root)}
    tls_kms = {"aws:SecureTransport": "true", "s3:x-amz-server-side-encryption": "aws:kms",
               "s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn}
    tls = {"aws:SecureTransport": "true", "kms:ViaService": f"s3.{region}.amazonaws.com"}
    glue = f"arn:aws:glue:{region}:{acct}"

    def obj(zone: str, *parts: str) -> str:
        bucket, base = loc[zone]
        return "arn:aws:s3:::" + "/".join([bucket, *(p for p in (base, *parts) if p)])

    def arn(role: str) -> str:
        return f"arn:aws:iam::{acct}:role/{role}"

    out: list[Expectation] = []

    def expect(what: str, role: str, action: str, resource: str, allowed: bool, bucket: str | None = None,
               context: Mapping[str, Any] | None = None, caller: str = "") -> None:
        out.append(Expectation(what, role, bucket and bucket_logical_id(bucket), Request(
            action, resource, caller, tls if context is None else context), allowed))

    platform = arn(f"{prefix}-platform")
    for z in zones:
        first = z.datasets[0].name
        expect(f"platform writes landing/{z.name}", "PlatformRole", "s3:PutObject",
               obj("landing", z.name, first, "f.csv"), True, "landing", tls_kms, platform)
        expect(f"platform writes quarantine/{z.name}", "PlatformRole", "s3:PutObject",
               obj("quarantine", z.name, first, "v.parquet"), True, "quarantine", tls_kms, platform)
        expect(f"platform creates tables in {db_prefix}staging_{z.name}", "PlatformRole", "glue:CreateTable",
               f"{glue}:table/{db_prefix + schema_name('staging', z.name)}/{first}", True)
    landing_key = obj("landing", zones[0].name, zones[0].datasets[0].name, "f.csv") if zones else obj("landing", "x")
    expect("a PutObject without SSE-KMS is denied", "PlatformRole", "s3:PutObject", landing_key, False,
           "landing", {"aws:SecureTransport": "true"}, platform)
    expect("a PutObject with another key is denied", "PlatformRole", "s3:PutObject", landing_key, False, "landing",
           {**tls_kms, "s3:x-amz-server-side-encryption-aws-kms-key-id":
            f"arn:aws:kms:{region}:{acct}:key/00000000-0000-0000-0000-000000000000"}, platform)
    expect("a PutObject over plain HTTP is denied", "PlatformRole", "s3:PutObject", landing_key, False, "landing",
           {**tls_kms, "aws:SecureTransport": "false"}, platform)
    expect("the platform reads the PII key", "PlatformRole", "secretsmanager:GetSecretValue",
           f"arn:aws:secretsmanager:{region}:{acct}:secret:{env.secrets.pii_key}-AbCdEf", True)
    expect("the platform decrypts with the lake key", "PlatformRole", "kms:Decrypt", key_arn, True)
    for name, c in env.alerts.channels.items():
        if c.topic_arn:
            expect(f"the platform publishes alerts to {c.topic_arn}", "PlatformRole", "sns:Publish", c.topic_arn, True)
            for z in zones:
                expect(f"{z.name} analysts cannot publish to the alert topic of {name}",
                       role_logical_id("analyst", z.name), "sns:Publish", c.topic_arn, False)
        for secret in c.secret_names:
            resource = f"arn:aws:secretsmanager:{region}:{acct}:secret:{secret}-AbCdEf"
            expect(f"the platform reads the secret of alert channel {name}", "PlatformRole",
                   "secretsmanager:GetSecretValue", resource, True)
            for z in zones:
                expect(f"{z.name} analysts cannot read the secret of alert channel {name}",
                       role_logical_id("analyst", z.name), "secretsmanager:GetSecretValue", resource, False)
    if env.ingress.events is not None:
        queue = f"arn:aws:sqs:{region}:{acct}:{env.ingress.events.queue_name}"
        for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage"):
            expect(f"the platform reads the ingress events ({action})", "PlatformRole", action, queue, True)
        for z in zones:
            expect(f"{z.name} analysts cannot read the ingress events", role_logical_id("analyst", z.name),
                   "sqs:ReceiveMessage", queue, False)
    expect("Redshift COPY reads staging", "RedshiftCopyRole", "s3:GetObject", obj("staging", "z", "d", "p.parquet"),
           True, "staging")
    expect("Redshift COPY cannot read landing", "RedshiftCopyRole", "s3:GetObject", landing_key, False, "landing")

    for z in zones:
        role = role_logical_id("analyst", z.name)
        dbt = role_logical_id("dbt", z.name)
        caller = arn(f"{prefix}-{z.name}-analyst".replace("_", "-"))
        pii = set(pii_datasets(z))
        db = db_prefix + schema_name("staging", z.name)
        for zone in ("landing", "quarantine", "ingress"):
            expect(f"{z.name} analysts cannot read {zone}", role, "s3:GetObject",
                   obj(zone, z.name, z.datasets[0].name, "f.csv"), False, zone, caller=caller)
        for d in z.datasets:
            expect(f"{z.name} analysts {'cannot' if d.name in pii else 'can'} read staging {d.label}"
                   + (" (raw PII columns)" if d.name in pii else ""), role, "s3:GetObject",
                   obj("staging", z.name, d.name, "p", "v.parquet"), d.name not in pii, "staging", caller=caller)
            expect(f"{z.name} analysts {'cannot' if d.name in pii else 'can'} read the Glue table {db}.{d.name}",
                   role, "glue:GetTable", f"{glue}:table/{db}/{d.name}", d.name not in pii)
            expect(f"dbt of {z.name} reads staging {d.label}", dbt, "s3:GetObject",
                   obj("staging", z.name, d.name, "p", "v.parquet"), True, "staging")
        expect(f"{z.name} analysts cannot write staging", role, "s3:PutObject",
               obj("staging", z.name, z.datasets[0].name, "x"), False, "staging", tls_kms, caller)
        expect(f"{z.name} analysts cannot read the Glue quarantine tables", role, "glue:GetTable",
               f"{glue}:table/{db_prefix + schema_name('quarantine', z.name)}/{z.datasets[0].name}", False)
        expect(f"{z.name} analysts cannot read the PII key", role, "secretsmanager:GetSecretValue",
               f"arn:aws:secretsmanager:{region}:{acct}:secret:{env.secrets.pii_key}-AbCdEf", False)
        expect(f"dbt of {z.name} reads the PII key", dbt, "secretsmanager:GetSecretValue",
               f"arn:aws:secretsmanager:{region}:{acct}:secret:{env.secrets.pii_key}-AbCdEf", True)
        for other in zones:
            if other.name != z.name:
                expect(f"{z.name} analysts cannot read staging/{other.name}", role, "s3:GetObject",
                       obj("staging", other.name, other.datasets[0].name, "p", "v.parquet"), False, "staging",
                       caller=caller)
                expect(f"{z.name} analysts cannot read the Glue tables of {other.name}", role, "glue:GetTable",
                       f"{glue}:table/{db_prefix + schema_name('staging', other.name)}/{other.datasets[0].name}",
                       False)
    return out


def check(cases: Iterable[Expectation], roles: Mapping[str, Policies],
          buckets: Mapping[str, Mapping[str, Any]]) -> list[tuple[Expectation, Decision]]:
    """Evaluate each expectation: the role's policies (logical id → named documents) and the bucket's policy
    (logical id → document). Returns every case with its decision; a case failed if the outcomes differ."""
    results = []
    for case in cases:
        resource = [(f"{case.bucket} policy", buckets[case.bucket])] if case.bucket in buckets else []
        results.append((case, evaluate(case.request, roles.get(case.role, []), resource)))
    return results


def template_policies(template: Mapping[str, Any], refs: Mapping[str, Any], attrs: Mapping[tuple[str, str], Any]
                      ) -> tuple[dict[str, Policies], dict[str, Mapping[str, Any]]]:
    """The roles' inline policies and the buckets' policies of a template, intrinsics resolved."""
    roles: dict[str, Policies] = {}
    buckets: dict[str, Mapping[str, Any]] = {}
    for lid, res in template["Resources"].items():
        props = resolve_intrinsics(res.get("Properties", {}), refs, attrs)
        if res["Type"] == "AWS::IAM::Role":
            roles[lid] = [(f"{lid}/{p['PolicyName']}", p["PolicyDocument"]) for p in props.get("Policies", [])]
        elif res["Type"] == "AWS::S3::BucketPolicy":
            bucket_lid = res["Properties"]["Bucket"]["Ref"]
            buckets[bucket_lid] = props["PolicyDocument"]
    return roles, buckets


def check_template(env: Environment, zones: Iterable[InsightZone]) -> list[tuple[Expectation, Decision]]:
    """Render the environment's template and review its policies offline (a placeholder key ARN)."""
    zones = tuple(zones)
    template = render(env, zones)  # refuses an environment without aws
    assert env.aws is not None
    key_arn = f"arn:aws:kms:{env.aws.region}:{env.aws.account_id}:key/11111111-2222-3333-4444-555555555555"
    refs = {lid: res["Properties"].get("BucketName", lid) for lid, res in template["Resources"].items()}
    refs |= {KEY: key_arn.rsplit("/", 1)[1], "AWS::AccountId": env.aws.account_id, "AWS::Region": env.aws.region}
    roles, buckets = template_policies(template, refs, {(KEY, "Arn"): key_arn})
    return check(expectations(env, zones, key_arn), roles, buckets)
