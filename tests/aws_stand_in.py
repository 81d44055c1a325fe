"""The AWS stand-in of the tests: one moto server per test session, in server mode on a free
loopback port, reached over real HTTP. The code under test is the production path: boto3 finds
the server through ``AWS_ENDPOINT_URL`` only.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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

    glue, s3, sm = client("glue"), client("s3"), client("secretsmanager")
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
