"""The AWS stand-in of the tests (see infra/stand_in.py): one moto server per test session, in
server mode over TLS on a free loopback port. The code under test is the production path: boto3
finds the server through ``AWS_ENDPOINT_URL`` only."""

from __future__ import annotations

from infra.stand_in import (  # noqa: F401 - re-exported for the tests
    STAND_IN_ENV,
    MotoServer,
    clients,
    create_skipped_resources,
    deploy_stack,
    secret_string,
)
