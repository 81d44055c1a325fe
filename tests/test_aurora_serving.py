"""Aurora serving against real stand-ins, no mocks: a real PostgreSQL server listening on
127.0.0.1 with TLS only (infra/pg_stand_in.py: a CA made there signs its certificate, pg_hba
rejects every unencrypted TCP connection, passwords are SCRAM), and the credentials in an
RDS-format secret in moto's Secrets Manager, read over HTTP by the production code. Skips, saying
why, where no PostgreSQL built with OpenSSL exists.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import re
import secrets
import traceback
from collections.abc import Iterator

import psycopg2
import pyarrow as pa
import pytest

from core.errors import ConfigError, SecretMissing
from infra import pg_stand_in
from infra.pg_stand_in import TlsServer
from resources.aws import AwsSession
from resources.environment import ServingConfig
from resources.secrets import AwsSecretStore, LocalSecretStore, env_var
from resources.serving import ServingDatabase, ServingUnavailable
from resources.serving.aurora import aurora_serving, from_config

pytestmark = pytest.mark.slow  # starts a PostgreSQL server (about 3 s)

ROLE = "serving_app"
DBNAME = "serving"
SECRET = "acme/serving"
REGION = "eu-west-1"
PASSWORD = f"Pl4nted-S3cret-{secrets.token_hex(8)}"
TYPES = {"trip_date": "date", "zone": "integer", "trips": "bigint"}


@pytest.fixture(scope="module")
def server() -> Iterator[TlsServer]:
    with tls_server() as s:
        yield s


@contextlib.contextmanager
def tls_server() -> Iterator[TlsServer]:
    """The TLS-only PostgreSQL stand-in (infra/pg_stand_in.py), skipping where none can run."""
    try:
        with pg_stand_in.tls_server(role=ROLE, database=DBNAME, password=PASSWORD) as s:
            yield s
    except pg_stand_in.NoTlsPostgres as e:
        pytest.skip(str(e))


@pytest.fixture
def store(aws, server: TlsServer) -> AwsSecretStore:
    """Moto's Secrets Manager holding the RDS-format secret of the server's login role."""
    session = AwsSession(REGION)
    session.client("secretsmanager").create_secret(Name=SECRET, SecretString=server.secret())
    return AwsSecretStore(session)


@pytest.fixture
def capture(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def _full_text(e: BaseException) -> str:
    """An exception as a user could see it: message, chained causes and traceback."""
    return "".join(traceback.format_exception(e))


def _chain(e: BaseException | None) -> Iterator[BaseException]:
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def _table() -> pa.Table:
    d = datetime.date(2024, 1, 1)
    return pa.table({"trip_date": pa.array([d, d, d]), "zone": pa.array([1, 2, 3], pa.int32()),
                     "trips": pa.array([10, 20, 30], pa.int64())})


# -- tests -------------------------------------------------------------------------------------


def test_the_database_built_from_the_secret_exports_over_verified_tls(store, server, capture, capsys) -> None:
    db = aurora_serving(store, SECRET, server.ca_bundle)
    result = db.export(_table(), schema="mobility", name="daily", key=["trip_date", "zone"], column_types=TYPES)
    assert (result.rows, result.inserted) == (3, 3)
    assert db.row_count("mobility", "daily") == 3
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ssl, version = cur.fetchone()
        cur.execute("SELECT current_user, current_database()")
        assert cur.fetchone() == (ROLE, DBNAME)
        assert conn.get_dsn_parameters()["sslmode"] == "verify-full"
    assert ssl is True and version.startswith("TLS")
    # Re-exporting the same rows writes nothing.
    again = db.export(_table(), schema="mobility", name="daily", key=["trip_date", "zone"], column_types=TYPES)
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)

    assert "holding a secret value: not logged" in capture.text  # botocore's DEBUG dump of the response
    shown = db.dsn_for_humans()
    assert "sslmode=verify-full" in shown and f"sslrootcert={server.ca_bundle}" in shown
    for text in (repr(db), str(db), shown, repr(store), str(store), repr(store.get(SECRET)),
                 str(store.get_fields(SECRET)), capture.text, *capsys.readouterr()):
        assert PASSWORD not in text


def test_an_unencrypted_connection_is_refused_by_the_server(server) -> None:
    with pytest.raises(psycopg2.OperationalError) as e:
        psycopg2.connect(host="127.0.0.1", port=server.port, dbname=DBNAME, user=ROLE, password=PASSWORD,
                         sslmode="disable", connect_timeout=10)
    assert "pg_hba.conf rejects connection" in str(e.value) and "no encryption" in str(e.value)


def test_a_certificate_not_signed_by_the_ca_bundle_is_refused(store, server, capture, capsys) -> None:
    db = aurora_serving(store, SECRET, server.rogue_ca_bundle, retry_delays_s=())
    with pytest.raises(ServingUnavailable) as e:
        db.export(_table(), schema="mobility", name="daily", key=["trip_date", "zone"], column_types=TYPES)
    message = str(e.value)
    assert "certificate verify failed" in message
    assert f"host=localhost port={server.port}" in message and "sslmode=verify-full" in message
    assert not any(isinstance(c, psycopg2.Error) for c in _chain(e.value))  # psycopg2's error does not travel along
    for text in (_full_text(e.value), repr(db), capture.text, *capsys.readouterr()):
        assert PASSWORD not in text


def test_a_wrong_password_fails_without_showing_it(aws, server, capture, capsys) -> None:
    wrong = f"Wr0ng-S3cret-{secrets.token_hex(8)}"
    session = AwsSession(REGION)
    session.client("secretsmanager").create_secret(Name="acme/stale", SecretString=server.secret(password=wrong))
    db = aurora_serving(AwsSecretStore(session), "acme/stale", server.ca_bundle, retry_delays_s=())
    with pytest.raises(ServingUnavailable) as e:
        db.row_count("mobility", "daily")
    assert "password authentication failed" in str(e.value)
    for text in (_full_text(e.value), repr(db), capture.text, *capsys.readouterr()):
        assert wrong not in text and PASSWORD not in text


def test_a_missing_secret_is_named(aws, server) -> None:
    store = AwsSecretStore(AwsSession(REGION))
    with pytest.raises(SecretMissing, match="'acme/absent'") as e:
        aurora_serving(store, "acme/absent", server.ca_bundle)
    assert e.value.__context__ is None
    with pytest.raises(SecretMissing, match=env_var("acme/absent")):
        LocalSecretStore({}).get("acme/absent")


def test_no_ca_bundle_no_database(store, tmp_path) -> None:
    absent = tmp_path / "rds-ca.pem"
    with pytest.raises(ConfigError, match=f"serving CA bundle {absent}: No such file"):
        aurora_serving(store, SECRET, absent)
    absent.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        aurora_serving(store, SECRET, absent)
    with pytest.raises(ConfigError, match="needs ca_bundle"):
        aurora_serving(store, SECRET, None)


def test_malformed_secrets_are_refused_without_their_values(aws, server) -> None:
    session = AwsSession(REGION)
    client = session.client("secretsmanager")
    client.create_secret(Name="acme/text", SecretString=PASSWORD)
    client.create_secret(Name="acme/partial", SecretString=json.dumps({"host": "localhost", "password": PASSWORD}))
    client.create_secret(Name="acme/port", SecretString=server.secret(port=f"5432{PASSWORD}"))
    store = AwsSecretStore(session)
    for name, message in (("acme/text", "not a JSON object"), ("acme/partial", "lacks field(s) port, username"),
                          ("acme/port", "port is not a TCP port")):
        with pytest.raises(ConfigError, match=re.escape(message)) as e:
            aurora_serving(store, name, server.ca_bundle)
        assert name in str(e.value) and PASSWORD not in _full_text(e.value)


def test_local_secrets_come_from_the_process_environment(server, monkeypatch, capture) -> None:
    monkeypatch.setenv(env_var(SECRET), server.secret(host="127.0.0.1"))  # the IP is in the certificate too
    assert env_var(SECRET) == "PLATFORM_SECRET_ACME_SERVING"
    config = ServingConfig(kind="aurora_postgres", secret_name=SECRET, ca_bundle=str(server.ca_bundle))
    db = from_config(config, LocalSecretStore())
    assert isinstance(db, ServingDatabase)
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (True,)
    assert PASSWORD not in repr(LocalSecretStore().get(SECRET)) and PASSWORD not in capture.text
