"""The infrastructure generated from the declarations: linted (cfn-lint), deployed into the moto
stand-in's CloudFormation, its policies evaluated with ``infra.policy``; and the promotion diff.

moto's CloudFormation skips some resource types (Glue databases, bucket policies, secrets) and some
bucket properties (versioning, public access block, ownership); the test creates those through their
own APIs from the SAME template's Properties, so template and deployment cannot disagree. moto does not
enforce IAM or bucket policies: those are evaluated with ``infra.policy`` on the documents read back.
"""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml
from aws_stand_in import clients, create_skipped_resources

from cli.__main__ import main
from core.zones import load_zones
from infra.check import check, check_template, expectations, template_policies
from infra.cloudformation import (
    KEY,
    bucket_logical_id,
    glue_databases,
    render,
    role_logical_id,
    to_json,
    to_yaml,
)
from infra.diff import diff
from infra.policy import Request, evaluate
from resources.environment import ENVIRONMENTS_DIR, load_environment, split_s3_uri

AWS_ENVS = ["dev", "test", "prod"]


def _template(name: str) -> tuple:
    env = load_environment(name)
    zones = load_zones()
    return env, zones, render(env, zones)


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


# -- the template, offline ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", AWS_ENVS)
def test_template_passes_cfn_lint(name: str) -> None:
    from cfnlint.api import ManualArgs, lint

    env, _, template = _template(name)
    for text in (to_json(template), to_yaml(template)):
        matches = lint(text, config=ManualArgs(regions=[env.aws.region]))
        found = [f"{m.rule.id} {m.message} at {'/'.join(map(str, m.path))}" for m in matches
                 if m.rule.id.startswith("E") or m.rule.id == "W1101"]  # W1101: YAML aliases CloudFormation rejects
        assert found == []


@pytest.mark.parametrize("name", AWS_ENVS)
def test_template_names_come_from_the_declaration(name: str) -> None:
    env, zones, template = _template(name)
    res = template["Resources"]
    assert res[KEY]["Properties"]["EnableKeyRotation"] is True
    assert res["LakeKeyAlias"]["Properties"]["AliasName"] == env.lake.kms_key_id
    buckets = {split_s3_uri(u)[0] for u in [*env.lake.zones.values(), env.ingress.root]}
    declared = {r["Properties"]["BucketName"]: r["Properties"] for r in res.values() if r["Type"] == "AWS::S3::Bucket"}
    assert set(declared) == buckets and len(buckets) == 4
    for props in declared.values():
        (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms",
                                                          "KMSMasterKeyID": {"Fn::GetAtt": [KEY, "Arn"]}},
                        "BucketKeyEnabled": True}
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    copy_role = res["RedshiftCopyRole"]["Properties"]
    assert env.warehouse.copy_role_arn.endswith(f":role{copy_role['Path']}{copy_role['RoleName']}")
    secrets = {r["Properties"]["Name"]: r["Properties"] for r in res.values()
               if r["Type"] == "AWS::SecretsManager::Secret"}
    alert_secrets = {n for c in env.alerts.channels.values() for n in c.secret_names}
    assert alert_secrets and set(secrets) == {env.warehouse.secret_name, env.serving.secret_name, env.secrets.pii_key,
                                              *alert_secrets}
    topics = {r["Properties"]["TopicName"]: r["Properties"] for r in res.values() if r["Type"] == "AWS::SNS::Topic"}
    assert {f"arn:aws:sns:{env.aws.region}:{env.aws.account_id}:{t}" for t in topics} == \
        {c.topic_arn for c in env.alerts.channels.values() if c.topic_arn} != set()
    assert all(p["KmsMasterKeyId"] == {"Ref": KEY} for p in topics.values())
    assert all("GenerateSecretString" in p and "SecretString" not in p for p in secrets.values())
    dbs = [r["Properties"]["DatabaseInput"]["Name"] for r in res.values() if r["Type"] == "AWS::Glue::Database"]
    prefix = env.catalog.database_prefix
    assert sorted(dbs) == sorted([f"{prefix}platform", *(f"{prefix}{z}_{iz.name}" for iz in zones
                                                         for z in ("staging", "quarantine"))])


@pytest.mark.parametrize("name", AWS_ENVS)
def test_infra_check_holds_offline(name: str) -> None:
    env, zones, _ = _template(name)
    failed = [(c.what, d.effect, d.reason) for c, d in check_template(env, zones) if c.allowed != d.allowed]
    assert failed == []
    code, out = _cli("infra", "check", "--env", name)
    assert code == 0 and "every expectation holds" in out


def test_render_refuses_a_local_environment() -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="environment 'local'.*AWS environment"):
        render(load_environment("local"), load_zones())


def test_cli_render_json_and_yaml(tmp_path: Path) -> None:
    _, _, template = _template("prod")
    code, out = _cli("infra", "render", "--env", "prod")
    assert code == 0 and json.loads(out) == template
    target = tmp_path / "prod.yaml"
    assert _cli("infra", "render", "--env", "prod", "--format", "yaml", "--out", str(target))[0] == 0
    assert yaml.safe_load(target.read_text()) == template


def test_grants_follow_the_zones() -> None:
    """The administrator's SQL: a group per zone, its schemas, future ods/analytics tables readable,
    no schema-wide read of staging (the warehouse grants it column by column, without PII)."""
    from infra.grants import grants

    env, zones = load_environment("prod"), load_zones()
    code, out = _cli("infra", "grants", "--env", "prod", "--database", "warehouse", "--platform-user", "lake_platform")
    assert code == 0
    statements = grants(env, zones, "warehouse", "lake_platform")
    assert out.splitlines()[2:] == [f"{s};" for s in statements]
    for z in zones:
        assert f'CREATE GROUP "analyst_{z.name}"' in statements
        for zone in ("ods", "analytics"):
            assert (f'ALTER DEFAULT PRIVILEGES FOR USER "lake_platform" IN SCHEMA "{zone}_{z.name}" GRANT SELECT '
                    f'ON TABLES TO GROUP "analyst_{z.name}"') in statements
        assert not [s for s in statements if f'SCHEMA "staging_{z.name}" TO' in s and "SELECT" in s]
    assert not [s for s in statements if "quarantine" in s or "landing" in s]
    serving = grants(env, zones, "serving", "lake_platform")
    served = [z.name for z in zones if z.spec.serving]
    assert served and all(f'ALTER DEFAULT PRIVILEGES FOR USER "lake_platform" IN SCHEMA "{n}" GRANT SELECT ON '
                          f'TABLES TO "analyst_{n}"' in serving for n in served)


def test_grants_refuse_a_local_environment_and_an_injected_user() -> None:
    from core.errors import ConfigError, InvalidName
    from infra.grants import grants

    with pytest.raises(ConfigError, match="not redshift"):
        grants(load_environment("local"), load_zones(), "warehouse", "lake_platform")
    with pytest.raises(ConfigError, match="not aurora_postgres"):
        grants(load_environment("local"), load_zones(), "serving", "lake_platform")
    with pytest.raises(InvalidName):
        grants(load_environment("prod"), load_zones(), "warehouse", 'x"; drop table y; --')


# -- the evaluator itself ----------------------------------------------------------------------------
def test_policy_evaluator_rules() -> None:
    allow = {"Statement": [{"Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b/a/*"}]}
    deny = {"Statement": [{"Effect": "Deny", "Action": "S3:GETOBJECT", "Resource": "arn:aws:s3:::b/a/secret/*"}]}
    get = Request("s3:GetObject", "arn:aws:s3:::b/a/x/y.csv")
    assert evaluate(get, [("allow", allow)]).allowed
    assert evaluate(Request("s3:PutObject", get.resource), [("allow", allow)]).effect == "ImplicitDeny"
    assert evaluate(Request("s3:GetObject", "arn:aws:s3:::b/A/x"), [("allow", allow)]).effect == "ImplicitDeny"
    secret = Request("s3:GetObject", "arn:aws:s3:::b/a/secret/k")
    assert evaluate(secret, [("allow", allow), ("deny", deny)]).reason == "explicit deny by deny#0"
    # A negated operator is true when the key is absent; Null tests presence; Bool compares text.
    cond = {"Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": "*",
                           "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}}]}
    put = Request("s3:PutObject", "arn:aws:s3:::b/k")
    assert evaluate(put, [("allow", {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})],
                    [("bucket", cond)]).effect == "Deny"
    assert evaluate(Request(put.action, put.resource, context={"s3:x-amz-server-side-encryption": "aws:kms"}),
                    [], [("bucket", cond)]).effect == "ImplicitDeny"
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="NumericLessThan"):
        evaluate(put, [("p", {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
                                             "Condition": {"NumericLessThan": {"a": "1"}}}]})])


# -- deployed into the moto stand-in -----------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Tried to parse .* not supported by moto.s CloudFormation:UserWarning")
def test_stack_deploys_and_its_policies_hold(aws) -> None:
    from resources.aws import AwsSession
    from resources.catalog.glue import GlueCatalog

    env, zones, template = _template("dev")
    region, account = env.aws.region, env.aws.account_id
    client = clients(region, account)
    cf, s3, kms, iam, glue, sm = (client(s) for s in ("cloudformation", "s3", "kms", "iam", "glue", "secretsmanager"))

    cf.create_stack(StackName="lake-dev", TemplateBody=to_json(template), Capabilities=["CAPABILITY_NAMED_IAM"])
    cf.get_waiter("stack_create_complete").wait(StackName="lake-dev", WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    stack = cf.describe_stacks(StackName="lake-dev")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                for r in cf.describe_stack_resources(StackName="lake-dev")["StackResources"]
                if "LogicalResourceId" in r}  # moto lists the skipped resources without ids

    # KMS: the alias names the stack's key, rotation on.
    key_arn = outputs["LakeKeyArn"]
    key_id = key_arn.rsplit("/", 1)[1]
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    assert aliases[env.lake.kms_key_id] == key_id == physical[KEY]
    assert kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"] is True

    # Buckets: default encryption SSE-KMS with the key; an object put without headers is encrypted with it.
    buckets = {zone: split_s3_uri(uri)[0] for zone, uri in [*env.lake.zones.items(), ("ingress", env.ingress.root)]}
    for zone, bucket in buckets.items():
        assert outputs[bucket_logical_id(zone)] == bucket
        (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
    s3.put_object(Bucket=buckets["landing"], Key="landing/probe.txt", Body=b"x")
    head = s3.head_object(Bucket=buckets["landing"], Key="landing/probe.txt")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == key_arn

    # Roles: the COPY role is the one the warehouse declares; every role's inline policy as in the template.
    refs = {**physical, "AWS::AccountId": account, "AWS::Region": region}
    roles, bucket_policies = template_policies(template, refs, {(KEY, "Arn"): key_arn})
    assert outputs["RedshiftCopyRoleArn"] == env.warehouse.copy_role_arn
    deployed_roles = {}
    for lid in roles:
        name = physical[lid]
        assert iam.get_role(RoleName=name)["Role"]["Arn"] == outputs[f"{lid}Arn"]
        docs = []
        for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
            raw = iam.get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]
            # moto returns the inline policies of a stack's role as Python's repr of the dict.
            docs.append((f"{lid}/{policy}", raw if isinstance(raw, dict) else ast.literal_eval(raw)))
        assert docs == roles[lid]
        deployed_roles[lid] = docs
    assert {role_logical_id("analyst", z.name) for z in zones} <= set(deployed_roles)

    # What moto's CloudFormation skips, created from the same template's Properties through its own API.
    create_skipped_resources(template, refs, {(KEY, "Arn"): key_arn}, client)
    for bucket in buckets.values():
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        assert set(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values()) == {True}
    for name in (env.warehouse.secret_name, env.serving.secret_name, env.secrets.pii_key):
        assert sm.describe_secret(SecretId=name)["KmsKeyId"] == physical[KEY]

    # The Glue databases are the ones the Glue catalog backend names.
    catalog = GlueCatalog(AwsSession(region), env.catalog.database_prefix, schema_of=lambda table: None)
    wanted = {catalog.records_database} | {catalog.database(z, iz.name) for iz in zones
                                           for z in ("staging", "quarantine")}
    assert {d["Name"] for d in glue.get_databases()["DatabaseList"]} == wanted == set(glue_databases(env, zones))

    # The policies, read back from the stand-in, evaluated.
    deployed_buckets = {bucket_logical_id(zone): json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
                        for zone, bucket in buckets.items()}
    assert deployed_buckets == bucket_policies
    results = check(expectations(env, zones, key_arn), deployed_roles, deployed_buckets)
    assert [(c.what, d.reason) for c, d in results if c.allowed != d.allowed] == []

    def decide(role: str, bucket_zone: str | None, action: str, resource: str, context: dict) -> str:
        resource_policies = [("bucket", deployed_buckets[bucket_logical_id(bucket_zone)])] if bucket_zone else []
        return evaluate(Request(action, resource, context=context), deployed_roles[role], resource_policies).effect

    tls = {"aws:SecureTransport": "true", "kms:ViaService": f"s3.{region}.amazonaws.com"}
    sse = {"aws:SecureTransport": "true", "s3:x-amz-server-side-encryption": "aws:kms",
           # what resources/lake/s3.py sends: the declared alias
           "s3:x-amz-server-side-encryption-aws-kms-key-id": env.lake.kms_key_id}
    landing, staging, quarantine = (split_s3_uri(env.lake.zones[z]) for z in ("landing", "staging", "quarantine"))
    analyst = role_logical_id("analyst", "mobility")
    obj = lambda loc, *p: "arn:aws:s3:::" + "/".join([loc[0], loc[1], *p])  # noqa: E731
    assert decide(analyst, "landing", "s3:GetObject", obj(landing, "mobility/yellow_trips/p/f.csv"), tls) == "Deny"
    assert decide(analyst, "quarantine", "s3:GetObject", obj(quarantine, "mobility/yellow_trips/p/v.parquet"),
                  tls) == "Deny"
    assert decide(analyst, "staging", "s3:GetObject", obj(staging, "mobility/yellow_trips/p/v.parquet"),
                  tls) == "Allow"
    assert decide(analyst, "staging", "s3:GetObject", obj(staging, "finance/expense_reports/p/v.parquet"),
                  tls) == "ImplicitDeny"
    assert decide(analyst, None, "kms:Decrypt", key_arn, tls) == "Allow"
    assert decide(analyst, None, "kms:Decrypt", key_arn, {}) == "ImplicitDeny"  # only through S3
    platform = "PlatformRole"
    landing_key = obj(landing, "mobility/yellow_trips/p/f.csv")
    assert decide(platform, "landing", "s3:PutObject", landing_key, sse) == "Allow"
    assert decide(platform, "landing", "s3:PutObject", landing_key, {"aws:SecureTransport": "true"}) == "Deny"
    assert decide(platform, "landing", "s3:PutObject", landing_key, {**sse, "aws:SecureTransport": "false"}) == "Deny"
    other_key = {**sse, "s3:x-amz-server-side-encryption-aws-kms-key-id": "alias/someone-elses"}
    assert decide(platform, "landing", "s3:PutObject", landing_key, other_key) == "Deny"


# -- the promotion diff ------------------------------------------------------------------------------
@pytest.fixture
def env_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "environments"
    shutil.copytree(ENVIRONMENTS_DIR, d)
    monkeypatch.setenv("PLATFORM_ENVIRONMENTS_DIR", str(d))
    return d


def test_diff_lists_a_planted_difference(env_dir: Path) -> None:
    prod = env_dir / "prod.yaml"
    text = prod.read_text()
    text = text.replace("settle_seconds: 30", "settle_seconds: 5")
    text = re.sub(r"\nsecrets:\n  pii_key: [^\n]*", "\n", text)  # a section dropped
    prod.write_text(text)
    code, out = _cli("infra", "diff", "dev", "prod")
    assert code == 0
    lines = out.splitlines()
    assert "sensors.settle_seconds: 30.0 (dev) → 5.0 (prod)" in lines
    assert "secrets.pii_key: '<prefix>/pii-key' (dev) → absent (prod)" in lines
    assert len(lines) == 2, out


def test_diff_of_a_renamed_copy_is_empty(env_dir: Path) -> None:
    text = (env_dir / "dev.yaml").read_text()
    for old, new in (("acme-lake-dev", "acme-lake-qa"), ("111111111111", "444444444444"), ("dev_", "qa_"),
                     ("dbt_target: dev", "dbt_target: qa"), ("AWS dev account", "AWS qa account")):
        text = text.replace(old, new)
    (env_dir / "qa.yaml").write_text(text)
    dev, qa = (load_environment(n, None, str(env_dir)) for n in ("dev", "qa"))
    assert diff(dev, qa) == []
    code, out = _cli("infra", "diff", "dev", "qa")
    assert code == 0 and "differ only in their names" in out
    assert diff(dev, load_environment("prod", None, str(env_dir))) == []  # the shipped files agree too
    assert "catalog.kind: 'glue' (dev) → 'duckdb' (local)" in diff(dev, load_environment("local", None, str(env_dir)))
