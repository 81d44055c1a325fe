"""The CloudFormation template of one AWS environment, generated from its declaration
(``platform/environments/<env>.yaml``) and the insight zones (``platform/zones/*.yaml``).

``python -m cli infra render --env prod`` prints it. Everything the platform's code expects to find is
named here from the same declaration: the buckets from the lake/ingress URIs, the key alias from
``lake.kms_key_id``, the Glue databases as ``<database_prefix><zone>_<insight_zone>`` (``core.names.schema_name``),
the Redshift COPY role from ``warehouse.copy_role_arn``, the secrets from their declared names, the alert
topics from ``alerts.channels.<name>.topic_arn``.

Access model (what the roles may do):

- the platform role reads and writes ingress and every lake bucket, the platform's Glue databases,
  uses the key, reads the secrets (the three of the platform and those its alert channels name) and
  publishes to the alert channels' SNS topics (created here, encrypted with the key);
- the Redshift COPY role reads the staging prefix only, and may decrypt with the key;
- per insight zone, an analyst role reads ``staging/<insight_zone>/`` and the Glue tables of
  ``<prefix>staging_<insight_zone>``, and a dbt role reads the same plus the warehouse and PII-key secrets.
  Every role but the platform's is explicitly denied ingress, landing and quarantine (a Deny wins over
  any Allow a later policy might add).

PII: staging holds the values of PII columns as delivered; they are masked (keyed hash, the ``pii_key``
secret) by dbt before ods. S3 and IAM cannot grant columns, so the analyst roles are given **no** staging
access (S3 prefix and Glue table explicitly denied) to a dataset that declares a PII column: analysts
reach those datasets in the warehouse: through the masked ods/analytics models, and staging through
column grants without the PII columns (core/access.py; infra/grants.py and the Redshift warehouse).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from core.access import pii_datasets
from core.errors import ConfigError
from core.names import LAKE_ZONES, schema_name
from core.zones import InsightZone
from resources.environment import Environment, split_s3_uri

__all__ = ["KEY", "alert_topic_logical_id", "bucket_logical_id", "glue_databases", "pii_datasets", "render",
           "resolve_intrinsics", "role_logical_id", "to_json", "to_yaml"]

KEY = "LakeKey"
INGRESS_QUEUE = "IngressEventsQueue"
# Read access to objects, for every reader role.
_S3_READ = ["s3:GetObject", "s3:GetObjectVersion"]
_GLUE_READ = ["glue:GetDatabase", "glue:GetDatabases", "glue:GetTable", "glue:GetTables", "glue:GetPartition",
              "glue:GetPartitions", "glue:BatchGetPartition"]
_KMS_USE = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", name) if p)


def bucket_logical_id(zone: str) -> str:
    """``landing`` → ``LandingBucket``; ``ingress`` for the ingress bucket."""
    return f"{_camel(zone)}Bucket"


def role_logical_id(kind: str, insight_zone: str | None = None) -> str:
    """``platform`` / ``redshift_copy`` / (``analyst`` | ``dbt``, insight zone) → the role's logical id."""
    return f"{_camel(insight_zone or '')}{_camel(kind)}Role"


def alert_topic_logical_id(channel: str) -> str:
    """Alert channel ``oncall`` → ``AlertOncallTopic``."""
    return f"Alert{_camel(channel)}Topic"


def glue_databases(env: Environment, zones: Iterable[InsightZone]) -> list[str]:
    """The Glue databases of the environment: the platform's own, then staging and quarantine per zone."""
    prefix = _aws_parts(env)["db_prefix"]
    names = [f"{prefix}platform"]
    for z in zones:
        names += [prefix + schema_name("staging", z.name), prefix + schema_name("quarantine", z.name)]
    return names


def _aws_parts(env: Environment) -> dict[str, Any]:
    where = f"environment {env.name!r}"
    if env.aws is None or env.lake.kind != "s3" or not env.ingress.root.startswith("s3://"):
        raise ConfigError(f"{where}: infra render needs an AWS environment (an aws section, an S3 lake and S3 ingress)")
    if env.catalog.kind != "glue" or env.warehouse.kind != "redshift" or not env.warehouse.copy_role_arn:
        raise ConfigError(f"{where}: infra render needs a glue catalog and a redshift warehouse with copy_role_arn")
    locations = {z: split_s3_uri(u) for z, u in env.lake.zones.items()}
    locations["ingress"] = split_s3_uri(env.ingress.root)
    role_path, _, copy_name = env.warehouse.copy_role_arn.split(":role/", 1)[1].rpartition("/")
    return {"account": env.aws.account_id, "region": env.aws.region, "prefix": env.aws.resource_prefix,
            "db_prefix": env.catalog.database_prefix, "locations": locations,
            "copy_role": copy_name, "copy_role_path": f"/{role_path}/" if role_path else "/"}


def _statement(sid: str, effect: str, actions: list[str], resources: list[Any], **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": effect, "Action": actions, "Resource": resources, **extra}


def _doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _prefix_arn(bucket: str, prefix: str, *more: str) -> str:
    return "arn:aws:s3:::" + "/".join([bucket, *(p for p in (prefix, *more) if p)])


def render(env: Environment, zones: Iterable[InsightZone]) -> dict[str, Any]:
    """The environment's CloudFormation template, as a dict (``to_json`` / ``to_yaml`` serialise it)."""
    zones = tuple(zones)
    p = _aws_parts(env)
    acct, region, prefix, db_prefix = p["account"], p["region"], p["prefix"], p["db_prefix"]
    loc: dict[str, tuple[str, str]] = p["locations"]
    key_arn = {"Fn::GetAtt": [KEY, "Arn"]}
    glue = f"arn:aws:glue:{region}:{acct}"
    secret_names = {"warehouse": env.warehouse.secret_name, "serving": env.serving.secret_name,
                    "pii_key": env.secrets.pii_key}

    def secret_arn(name: str) -> str:  # Secrets Manager appends a 6-character suffix to a secret's ARN
        return f"arn:aws:secretsmanager:{region}:{acct}:secret:{name}-??????"

    resources: dict[str, Any] = {
        KEY: {"Type": "AWS::KMS::Key", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain", "Properties": {
            "Description": f"{prefix}: SSE-KMS key of the lake, ingress and secrets",
            "EnableKeyRotation": True,
            # Administered through IAM in this account: the roles below are granted its use.
            "KeyPolicy": _doc(_statement("AccountAdministers", "Allow", ["kms:*"], ["*"],
                                         Principal={"AWS": f"arn:aws:iam::{acct}:root"})),
        }},
        "LakeKeyAlias": {"Type": "AWS::KMS::Alias",
                         "Properties": {"AliasName": env.lake.kms_key_id, "TargetKeyId": {"Ref": KEY}}},
    }
    outputs: dict[str, Any] = {"LakeKeyArn": {"Description": "the lake's KMS key", "Value": key_arn},
                               "LakeKeyAlias": {"Value": env.lake.kms_key_id}}

    # Buckets: the ingress bucket and one per lake zone (access is granted per bucket).
    allowed_key_ids = [key_arn, f"arn:aws:kms:{region}:{acct}:{env.lake.kms_key_id}", env.lake.kms_key_id]
    for zone in ("ingress", *LAKE_ZONES):
        bucket, _ = loc[zone]
        lid = bucket_logical_id(zone)
        resources[lid] = {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                          "Properties": {
            "BucketName": bucket,
            "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
                "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn},
                "BucketKeyEnabled": True}]},
            "VersioningConfiguration": {"Status": "Enabled"},
            "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                               "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "Tags": [{"Key": "lake-zone", "Value": zone}, {"Key": "environment", "Value": env.name}],
        }}
        objects = f"arn:aws:s3:::{bucket}/*"
        resources[f"{lid}Policy"] = {"Type": "AWS::S3::BucketPolicy", "Properties": {
            "Bucket": {"Ref": lid},
            "PolicyDocument": _doc(
                _statement("DenyInsecureTransport", "Deny", ["s3:*"], [f"arn:aws:s3:::{bucket}", objects],
                           Principal="*", Condition={"Bool": {"aws:SecureTransport": "false"}}),
                # A negated operator is true when the header is absent: a PutObject without SSE-KMS is denied.
                _statement("DenyPutWithoutSseKms", "Deny", ["s3:PutObject"], [objects], Principal="*",
                           Condition={"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}),
                # A key id, when given, must be the lake's key (its ARN or its alias); absent, the bucket's
                # default (the lake's key) applies.
                _statement("DenyPutWithOtherKey", "Deny", ["s3:PutObject"], [objects], Principal="*",
                           Condition={"Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"},
                                      "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id":
                                                          allowed_key_ids}}),
            ),
        }}
        outputs[lid] = {"Description": f"the {zone} bucket", "Value": {"Ref": lid}}

    # Ingress events: S3 announces every object created under the ingress prefix on an SQS queue
    # (encrypted by SQS), which the platform's ingress__events sensor reads (resources/ingress_events).
    events = env.ingress.events
    queue_arn = f"arn:aws:sqs:{region}:{acct}:{events.queue_name}" if events else None
    if events:
        ingress_bucket, ingress_prefix = loc["ingress"]
        resources[INGRESS_QUEUE] = {"Type": "AWS::SQS::Queue", "Properties": {
            "QueueName": events.queue_name, "SqsManagedSseEnabled": True,
            "MessageRetentionPeriod": 14 * 24 * 3600,  # the longest SQS keeps a message: an outage of days loses none
            "VisibilityTimeout": 60,
            "Tags": [{"Key": "environment", "Value": env.name}]}}
        resources[f"{INGRESS_QUEUE}Policy"] = {"Type": "AWS::SQS::QueuePolicy", "Properties": {
            "Queues": [{"Ref": INGRESS_QUEUE}],
            "PolicyDocument": _doc(
                _statement("S3AnnouncesIngress", "Allow", ["sqs:SendMessage"], [queue_arn],
                           Principal={"Service": "s3.amazonaws.com"},
                           Condition={"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{ingress_bucket}"},
                                      "StringEquals": {"aws:SourceAccount": acct}}),
                _statement("DenyInsecureTransport", "Deny", ["sqs:*"], [queue_arn], Principal="*",
                           Condition={"Bool": {"aws:SecureTransport": "false"}}))}}
        bucket = resources[bucket_logical_id("ingress")]
        bucket["DependsOn"] = [f"{INGRESS_QUEUE}Policy"]  # S3 checks that it may send before it accepts this
        bucket["Properties"]["NotificationConfiguration"] = {"QueueConfigurations": [{
            "Event": "s3:ObjectCreated:*", "Queue": queue_arn,
            "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": f"{ingress_prefix}/" if ingress_prefix
                                            else ""}]}}}]}
        outputs[f"{INGRESS_QUEUE}Url"] = {"Description": "the queue of the ingress events",
                                          "Value": {"Ref": INGRESS_QUEUE}}

    # Glue databases, named as the Glue catalog backend names them.
    for i, name in enumerate(glue_databases(env, zones)):
        lid = "PlatformDatabase" if i == 0 else f"{_camel(name)}Database"
        resources[lid] = {"Type": "AWS::Glue::Database", "Properties": {
            "CatalogId": {"Ref": "AWS::AccountId"},
            "DatabaseInput": {"Name": name, "Description": f"{prefix}: lake platform catalog"}}}

    # Secrets: placeholders with a generated value; the real values are set out of band, never here.
    templates = {
        "warehouse": ('{"username": "lake_loader"}', "password"),
        "serving": ('{"username": "lake_serving", "engine": "postgres", "port": 5432}', "password"),
    }
    for what, name in secret_names.items():
        generate: dict[str, Any] = {"PasswordLength": 64 if what == "pii_key" else 32, "ExcludePunctuation": True}
        if what in templates:
            generate |= {"SecretStringTemplate": templates[what][0], "GenerateStringKey": templates[what][1]}
        resources[f"{_camel(what)}Secret"] = {"Type": "AWS::SecretsManager::Secret", "DeletionPolicy": "Retain",
                                              "UpdateReplacePolicy": "Retain", "Properties": {
            "Name": name, "Description": f"{prefix}: {what} (placeholder, set the real value out of band)",
            "KmsKeyId": {"Ref": KEY}, "GenerateSecretString": generate}}

    # Alerts: the SNS topics of the sns channels, encrypted with the environment's key (the platform
    # role, which publishes, may use it), and a placeholder for every secret a channel names.
    topics = {name: c.topic_arn for name, c in env.alerts.channels.items() if c.kind == "sns" and c.topic_arn}
    for name, arn in topics.items():
        lid = alert_topic_logical_id(name)
        topic_name = arn.rsplit(":", 1)[1]
        fifo = {"FifoTopic": True, "ContentBasedDeduplication": False} if topic_name.endswith(".fifo") else {}
        resources[lid] = {"Type": "AWS::SNS::Topic", "Properties": {
            "TopicName": topic_name, "DisplayName": f"{prefix} alerts", "KmsMasterKeyId": {"Ref": KEY}, **fifo}}
        outputs[f"{lid}Arn"] = {"Description": f"the topic of alert channel {name}", "Value": {"Ref": lid}}
    alert_secrets = []
    for channel, c in env.alerts.channels.items():
        for name in c.secret_names:  # one per channel: its SMTP password or its webhook URL
            alert_secrets.append(name)
            resources[f"Alert{_camel(channel)}Secret"] = {
                "Type": "AWS::SecretsManager::Secret", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain",
                "Properties": {"Name": name, "KmsKeyId": {"Ref": KEY},
                               "Description": f"{prefix}: alert channel {channel} (placeholder, set the real value "
                                              "out of band)",
                               "GenerateSecretString": {"PasswordLength": 32, "ExcludePunctuation": True}}}

    bucket_arns = {z: f"arn:aws:s3:::{b}" for z, (b, _) in loc.items()}
    restricted = [a for z in ("ingress", "landing", "quarantine") for a in (bucket_arns[z], bucket_arns[z] + "/*")]
    deny_restricted = _statement("DenyIngressLandingQuarantine", "Deny", ["s3:*"], restricted)
    deny_quarantine_catalog = _statement(
        "DenyQuarantineCatalog", "Deny", ["glue:*"],
        [f"{glue}:database/{db_prefix}quarantine_*", f"{glue}:table/{db_prefix}quarantine_*/*"])
    trust_account = _doc({"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{acct}:root"},
                          "Action": "sts:AssumeRole"})

    def role(lid: str, name: str, description: str, trust: dict, policy: dict, path: str = "/") -> None:
        if len(name) > 64:
            raise ConfigError(f"environment {env.name!r}: IAM role name {name!r} is longer than 64 characters")
        resources[lid] = {"Type": "AWS::IAM::Role", "Properties": {
            "RoleName": name, "Path": path, "Description": description, "AssumeRolePolicyDocument": trust,
            "Policies": [{"PolicyName": "access", "PolicyDocument": policy}]}}
        outputs[f"{lid}Arn"] = {"Value": {"Fn::GetAtt": [lid, "Arn"]}}

    role("PlatformRole", f"{prefix}-platform", "the lake platform (Dagster runs): all lake zones", _doc(
        {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"},
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{acct}:root"}, "Action": "sts:AssumeRole"}), _doc(
        _statement("ListLake", "Allow", ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation"],
                   list(bucket_arns.values())),
        _statement("ReadWriteLake", "Allow", [*_S3_READ, "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                                              "s3:ListMultipartUploadParts"], [a + "/*" for a in bucket_arns.values()]),
        _statement("Catalog", "Allow", ["glue:*"], [f"{glue}:catalog", f"{glue}:database/{db_prefix}*",
                                                    f"{glue}:table/{db_prefix}*/*"]),
        _statement("UseKey", "Allow", _KMS_USE, [key_arn]),
        _statement("ReadSecrets", "Allow", ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                   [secret_arn(n) for n in [*secret_names.values(), *alert_secrets]]),
        *([_statement("PublishAlerts", "Allow", ["sns:Publish"], list(topics.values()))] if topics else []),
        *([_statement("ReadIngressEvents", "Allow", ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueUrl",
                                                     "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"],
                      [queue_arn])] if queue_arn else []),
    ))
    staging_bucket, staging_prefix = loc["staging"]
    role("RedshiftCopyRole", p["copy_role"], "Redshift COPY from staging", _doc(
        {"Effect": "Allow", "Principal": {"Service": "redshift.amazonaws.com"}, "Action": "sts:AssumeRole"}), _doc(
        _statement("ListStaging", "Allow", ["s3:ListBucket", "s3:GetBucketLocation"], [bucket_arns["staging"]]),
        _statement("ReadStaging", "Allow", _S3_READ, [_prefix_arn(staging_bucket, staging_prefix, "*")]),
        _statement("DecryptLake", "Allow", ["kms:Decrypt", "kms:DescribeKey"], [key_arn]),
        deny_restricted,
    ), path=p["copy_role_path"])

    for z in zones:
        db = db_prefix + schema_name("staging", z.name)
        zone_objects = _prefix_arn(staging_bucket, staging_prefix, z.name, "*")
        zone_prefix = "/".join(x for x in (staging_prefix, z.name) if x)
        reads = [
            _statement("ListZoneStaging", "Allow", ["s3:ListBucket"], [bucket_arns["staging"]],
                       Condition={"StringLike": {"s3:prefix": [f"{zone_prefix}/*"]}}),
            _statement("ReadZoneStaging", "Allow", _S3_READ, [zone_objects]),
            _statement("ReadZoneCatalog", "Allow", _GLUE_READ,
                       [f"{glue}:catalog", f"{glue}:database/{db}", f"{glue}:table/{db}/*"]),
            # Only S3 may use the key on the analyst's behalf: the role cannot decrypt data fetched elsewhere.
            _statement("DecryptViaS3", "Allow", ["kms:Decrypt", "kms:DescribeKey"], [key_arn],
                       Condition={"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}),
            deny_restricted, deny_quarantine_catalog,
        ]
        pii = pii_datasets(z)
        analyst = list(reads)
        if pii:
            # Raw PII columns: no S3 or Glue access to these datasets at all (see the module's docstring).
            analyst.append(_statement(
                "DenyRawPiiDatasets", "Deny", ["s3:*", "glue:*"],
                [a for d in pii for a in (_prefix_arn(staging_bucket, staging_prefix, z.name, d, "*"),
                                          f"{glue}:table/{db}/{d}")]))
        role(role_logical_id("analyst", z.name), f"{prefix}-{z.name}-analyst".replace("_", "-"),
             f"analysts of {z.name}: staging/{z.name}/ without raw PII datasets", trust_account, _doc(*analyst))
        role(role_logical_id("dbt", z.name), f"{prefix}-{z.name}-dbt".replace("_", "-"),
             f"dbt of {z.name}: reads staging/{z.name}/ (masks PII before ods)", trust_account, _doc(
                 *reads, _statement("ReadDbtSecrets", "Allow", ["secretsmanager:GetSecretValue"],
                                    [secret_arn(secret_names["warehouse"]), secret_arn(secret_names["pii_key"])])))

    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"lake platform, environment {env.name} ({prefix}): generated by `python -m cli infra "
                       f"render --env {env.name}` from the declarations; do not edit",
        "Resources": resources,
        "Outputs": outputs,
    }


def resolve_intrinsics(value: Any, refs: Mapping[str, Any], attrs: Mapping[tuple[str, str], Any] | None = None) -> Any:
    """``value`` with ``Ref`` and ``Fn::GetAtt`` replaced from ``refs`` (logical id or pseudo parameter →
    physical value) and ``attrs`` ((logical id, attribute) → value): how the tests and ``infra check`` read
    a resource's Properties as CloudFormation would pass them. Other intrinsics are not used by ``render``."""
    attrs = attrs or {}
    if isinstance(value, list):
        return [resolve_intrinsics(v, refs, attrs) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        if value["Ref"] not in refs:
            raise ConfigError(f"template: no value for Ref {value['Ref']!r}")
        return refs[value["Ref"]]
    if set(value) == {"Fn::GetAtt"}:
        key = tuple(value["Fn::GetAtt"])
        if key not in attrs:
            raise ConfigError(f"template: no value for Fn::GetAtt {'.'.join(key)!r}")
        return attrs[key]
    if any(k.startswith("Fn::") for k in value):
        raise ConfigError(f"template: unsupported intrinsic {next(k for k in value if k.startswith('Fn::'))!r}")
    return {k: resolve_intrinsics(v, refs, attrs) for k, v in value.items()}


def to_json(template: dict[str, Any]) -> str:
    return json.dumps(template, indent=2) + "\n"


def to_yaml(template: dict[str, Any]) -> str:
    import yaml

    class _NoAliases(yaml.SafeDumper):
        # render() shares objects between resources; CloudFormation rejects YAML anchors and aliases.
        def ignore_aliases(self, data: Any) -> bool:
            return True

    # The long forms (Fn::GetAtt: [...]) are valid CloudFormation YAML; no custom tags needed.
    return yaml.dump(template, Dumper=_NoAliases, sort_keys=False, width=120)
