"""The AWS stand-in: moto in server mode, over TLS, on a free loopback port, reached over real
HTTP(S) by endpoint only (``AWS_ENDPOINT_URL``, ``AWS_CA_BUNDLE``), and the environment's stack
deployed into it; with :func:`demo`, also the PostgreSQL stand-in for Redshift and Aurora
(infra/pg_stand_in.py). The tests use them, and ``python -m cli stand-in`` starts them for a demo.

It needs moto (installed with the pinned requirements); nothing in the platform's run path
imports this module.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from core.errors import ConfigError
from core.process_env import environ

STAND_IN_ENV = {
    # Fake, static credentials: moto accepts any; nothing here is a real account's.
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), trusted by the clients through AWS_CA_BUNDLE."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aws stand-in")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "stand-in.pem", directory / "stand-in.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class MotoServer:
    """moto's server over TLS (the buckets' policies deny requests that are not, and moto enforces
    bucket policies), on a free loopback port, in a thread of the test process."""

    def __init__(self) -> None:
        import ssl
        import tempfile
        import threading

        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        self._dir = Path(tempfile.mkdtemp(prefix="aws-stand-in-"))
        self.ca_bundle, key = _self_signed(self._dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_bundle, key)
        self._server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), True,
                                   request_handler=MotoRequestHandler, ssl_context=context)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.endpoint = f"https://{host}:{port}"
        self._client_context = ssl.create_default_context(cafile=str(self.ca_bundle))

    def env(self) -> dict[str, str]:
        return {**STAND_IN_ENV, "AWS_ENDPOINT_URL": self.endpoint, "AWS_CA_BUNDLE": str(self.ca_bundle)}

    def reset(self) -> None:
        """Forget every resource (``POST /moto-api/reset``)."""
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"),
                               timeout=10, context=self._client_context)

    def stop(self) -> None:
        import shutil

        self._server.shutdown()
        self._thread.join()
        shutil.rmtree(self._dir, ignore_errors=True)


# -- the platform's stack, deployed into the stand-in ------------------------------------------------
def clients(region: str, account: str):
    """boto3 clients of the stand-in, in the environment's account (moto's ``x-moto-account-id``
    header), so that ARNs match the declaration (e.g. ``warehouse.copy_role_arn``)."""
    import boto3

    session = boto3.session.Session(region_name=region)

    def client(service: str):
        c = session.client(service)
        c.meta.events.register("before-sign", lambda request, **_: request.headers.__setitem__(
            "x-moto-account-id", account))
        return c

    return client


def secret_string(generate: dict, sm) -> str:
    """What GenerateSecretString would store, generated by Secrets Manager's own API."""
    password = sm.get_random_password(PasswordLength=generate["PasswordLength"],
                                      ExcludePunctuation=generate.get("ExcludePunctuation", False))["RandomPassword"]
    if "SecretStringTemplate" not in generate:
        return password
    return json.dumps(json.loads(generate["SecretStringTemplate"]) | {generate["GenerateStringKey"]: password})



def create_skipped_resources(template: dict, refs: dict, attrs: dict, client, *, bucket_policies: bool = True) -> None:
    """Create what moto's CloudFormation skips (Glue databases, bucket policies, secrets, bucket
    settings) from the same template's resource Properties, through each service's own API.

    ``bucket_policies=False`` leaves the bucket policies out: moto 5.2 enforces them, but reads a
    Deny statement whose condition does not match as a denial (``IAMPolicyStatement.
    is_action_permitted``), so the template's deny-unless-TLS-and-KMS statements would refuse every
    request. Tests that run the platform evaluate those policies with ``infra.policy`` instead."""
    from infra.cloudformation import resolve_intrinsics

    glue, s3, sm, sqs = client("glue"), client("s3"), client("secretsmanager"), client("sqs")
    for r in template["Resources"].values():
        props = resolve_intrinsics(r.get("Properties", {}), refs, attrs)
        if r["Type"] == "AWS::Glue::Database":
            glue.create_database(CatalogId=props["CatalogId"], DatabaseInput=props["DatabaseInput"])
        elif r["Type"] == "AWS::S3::BucketPolicy" and bucket_policies:
            s3.put_bucket_policy(Bucket=props["Bucket"], Policy=json.dumps(props["PolicyDocument"]))
        elif r["Type"] == "AWS::SecretsManager::Secret":
            sm.create_secret(Name=props["Name"], Description=props["Description"], KmsKeyId=props["KmsKeyId"],
                             SecretString=secret_string(props["GenerateSecretString"], sm))
        elif r["Type"] == "AWS::S3::Bucket":
            s3.put_bucket_versioning(Bucket=props["BucketName"],
                                     VersioningConfiguration=props["VersioningConfiguration"])
            s3.put_public_access_block(Bucket=props["BucketName"],
                                       PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"])
            s3.put_bucket_ownership_controls(Bucket=props["BucketName"], OwnershipControls=props["OwnershipControls"])
            for q in props.get("NotificationConfiguration", {}).get("QueueConfigurations", []):
                # CloudFormation's shape of the notification, in the API's.
                s3.put_bucket_notification_configuration(Bucket=props["BucketName"], NotificationConfiguration={
                    "QueueConfigurations": [{"QueueArn": q["Queue"], "Events": [q["Event"]], "Filter": {"Key": {
                        "FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in q["Filter"]["S3Key"]["Rules"]]
                    }}}]})
        elif r["Type"] == "AWS::SQS::QueuePolicy":
            for url in props["Queues"]:
                sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(props["PolicyDocument"])})


def deploy_stack(env, zones, name: str, *, bucket_policies: bool = True) -> dict:
    """Render the environment's stack, create it in the stand-in (in the environment's account) and
    create what moto skips. Returns the stack's outputs and physical ids."""
    from infra.cloudformation import render, to_json

    template = render(env, zones)
    client = clients(env.aws.region, env.aws.account_id)
    cf = client("cloudformation")
    cf.create_stack(StackName=name, TemplateBody=to_json(template), Capabilities=["CAPABILITY_NAMED_IAM"])
    cf.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    stack = cf.describe_stacks(StackName=name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                for r in cf.describe_stack_resources(StackName=name)["StackResources"] if "LogicalResourceId" in r}
    key_lid = next(lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::KMS::Key")
    refs = {**physical, "AWS::AccountId": env.aws.account_id, "AWS::Region": env.aws.region}
    create_skipped_resources(template, refs, {(key_lid, "Arn"): outputs["LakeKeyArn"]}, client,
                             bucket_policies=bucket_policies)
    return {"outputs": outputs, "physical": physical, "template": template}


# -- the whole demo: every AWS system of an environment, on this machine -----------------------------
STAND_IN_DBT_TARGET = "aws_stand_in"  # dbt-postgres with the warehouse's connection values (profiles.yml)
PLATFORM_USER = "lake_platform"


def point_at_stand_in(path: Path, pg, settle_seconds: int | None = None) -> None:  # noqa: ANN001
    """Rewrite one environment file so that its warehouse and serving point at the PostgreSQL
    stand-in (host, port, database, CA bundle; dbt's stand-in target). Everything else, names of
    buckets, key, secrets and roles included, stays the declaration as shipped."""
    import yaml

    data = yaml.safe_load(path.read_text())
    data["warehouse"] |= {"host": "localhost", "port": pg.port, "database": pg.database,
                          "ca_bundle": str(pg.ca_bundle), "dbt_target": STAND_IN_DBT_TARGET}
    data["serving"] |= {"ca_bundle": str(pg.ca_bundle)}
    if settle_seconds is not None:
        data.setdefault("sensors", {})["settle_seconds"] = settle_seconds
    path.write_text("# Written for the stand-ins (infra/stand_in.py): the shipped declaration, its warehouse and\n"
                    "# serving pointed at the local PostgreSQL stand-in.\n" + yaml.safe_dump(data, sort_keys=False))


def provision(env, pg, pii_key: str) -> None:  # noqa: ANN001
    """What an operator does after deploying the stack: the secrets the stack created as
    placeholders get their values (the platform's database user, the RDS-format serving secret,
    the PII key), and the administrator runs the analysts' grants (``cli infra grants``) in the
    one PostgreSQL that stands in for both databases."""
    from core.zones import load_zones
    from infra.grants import grants

    sm = clients(env.aws.region, env.aws.account_id)("secretsmanager")
    sm.put_secret_value(SecretId=env.warehouse.secret_name,
                        SecretString=json.dumps({"username": pg.role, "password": pg.password}))
    sm.put_secret_value(SecretId=env.serving.secret_name, SecretString=pg.secret())
    sm.put_secret_value(SecretId=env.secrets.pii_key, SecretString=pii_key)
    admin = pg.admin()
    try:
        with admin.cursor() as cur:
            for database in ("warehouse", "serving"):
                for statement in grants(env, load_zones(), database, pg.role):
                    cur.execute(statement)
    finally:
        admin.close()


@contextlib.contextmanager
def demo(env_name: str, home: Path, *, settle_seconds: int | None = None) -> Iterator[dict[str, str]]:
    """moto over TLS with the environment's stack deployed, and one TLS-only PostgreSQL standing in
    for both Redshift and Aurora (the secrets the stack created get their values, the
    administrator's grants of ``cli infra grants`` are applied). Yields the variables a shell
    needs to run the platform against them (``PLATFORM_WAREHOUSE_COPY=postgres_stdin`` is the one
    stand-in seam: PostgreSQL cannot COPY from S3)."""
    import secrets as random

    from core.zones import load_zones
    from infra.pg_stand_in import tls_server
    from resources.environment import environments_dir, load_environment
    from resources.pii import postgres_options

    home.mkdir(parents=True, exist_ok=True)
    server = MotoServer()
    try:
        with environ(server.env()):
            source = environments_dir()
            env = load_environment(env_name, str(home), str(source))
            if env.aws is None:
                raise ConfigError(f"environment {env_name!r} is not an AWS environment")
            # Requests without moto's account header (the platform's) act in the environment's account.
            with environ({"MOTO_ACCOUNT_ID": env.aws.account_id}), \
                    tls_server(role=PLATFORM_USER, database=env.warehouse.database or "lake") as pg:
                deploy_stack(env, load_zones(), f"lake-{env_name}", bucket_policies=False)
                directory = home / "stand-in" / "environments"
                shutil.copytree(source, directory, dirs_exist_ok=True)
                point_at_stand_in(directory / f"{env_name}.yaml", pg, settle_seconds)
                pii_key = random.token_urlsafe(32)
                provision(env, pg, pii_key)
                yield {**server.env(), "MOTO_ACCOUNT_ID": env.aws.account_id, "PLATFORM_ENV": env_name,
                       "PLATFORM_ENVIRONMENTS_DIR": str(directory), "PLATFORM_WAREHOUSE_COPY": "postgres_stdin",
                       # dbt-postgres (the stand-in target): verify-full against the stand-in's CA, and the
                       # PII key as a session setting, as on the postgres target (resources/pii.py).
                       "PGSSLROOTCERT": str(pg.ca_bundle), "PGOPTIONS": postgres_options(pii_key)}
    finally:
        server.stop()
