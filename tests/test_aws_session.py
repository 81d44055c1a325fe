"""The shared AWS session: the default chain, or a role assumed and assumed again before its
credentials expire; botocore errors in the platform's vocabulary."""

from __future__ import annotations

import time

import botocore.exceptions
import pytest

from core.errors import ResourceUnavailable, TerminalError
from resources.aws import AwsSession, translate

ROLE = "arn:aws:iam::123456789012:role/lake-test-platform"


def test_an_assumed_role_is_assumed_again_before_it_expires(aws) -> None:
    session = AwsSession("eu-west-1", ROLE)
    s3 = session.client("s3")
    assert session.client("s3") is s3  # one client per service while the credentials are fresh
    assert session._expires_at is not None and session._expires_at > time.time()
    identity = session.client("sts").get_caller_identity()
    assert ":assumed-role/lake-test-platform/" in identity["Arn"]
    session._expires_at = time.time() + 60  # four minutes past the refresh point
    assert session.client("s3") is not s3


@pytest.mark.parametrize(("error", "kind"), [
    (botocore.exceptions.ClientError({"Error": {"Code": "SlowDown", "Message": "reduce"},
                                      "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject"), ResourceUnavailable),
    (botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied", "Message": "no"},
                                      "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject"), TerminalError),
    (botocore.exceptions.EndpointConnectionError(endpoint_url="https://s3.invalid"), ResourceUnavailable),
    (botocore.exceptions.NoCredentialsError(), TerminalError),
])
def test_botocore_errors_are_translated(error: Exception, kind: type) -> None:
    e = translate(error, "writing s3://b/k")
    assert type(e) is kind and str(e).startswith("writing s3://b/k: ")
