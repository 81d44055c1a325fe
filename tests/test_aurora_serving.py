"""Aurora serving against real stand-ins, no mocks: a real PostgreSQL server listening on
127.0.0.1 with TLS only (a test CA signs its certificate for localhost/127.0.0.1, pg_hba rejects
every unencrypted TCP connection, passwords are SCRAM), and the credentials in an RDS-format secret
in moto's Secrets Manager, read over HTTP by the production code.

pgserver cannot stand in here: it always starts its server with ``-h ""`` (no TCP), and its
PostgreSQL 16.2 is built without OpenSSL ("SSL is not supported by this build"). So the fixture
runs a PostgreSQL built with OpenSSL (Debian's postgresql-15 on these machines) with its own
``initdb``/``pg_ctl``, and skips, saying why, where there is none.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pyarrow as pa
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from core.errors import ConfigError, SecretMissing
from resources.aws import AwsSession
from resources.environment import ServingConfig
from resources.secrets import AwsSecretStore, LocalSecretStore, env_var
from resources.serving import ServingDatabase, ServingUnavailable, local_bin
from resources.serving.aurora import aurora_serving, from_config

pytestmark = pytest.mark.slow  # starts a PostgreSQL server (about 3 s)

ROLE = "serving_app"
DBNAME = "serving"
SECRET = "acme/serving"
REGION = "eu-west-1"
PASSWORD = f"Pl4nted-S3cret-{secrets.token_hex(8)}"
TYPES = {"trip_date": "date", "zone": "integer", "trips": "bigint"}


# -- certificates ------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_cert(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
                 ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_owned(path: Path, data: bytes, owner: Path, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)
    st = owner.stat()
    os.chown(path, st.st_uid, st.st_gid)


# -- the server --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca_bundle: Path  # the CA that signed the server's certificate
    rogue_ca_bundle: Path  # a CA that did not

    def secret(self, **override: object) -> str:
        fields = {"engine": "postgres", "host": "localhost", "port": self.port, "dbname": DBNAME,
                  "username": ROLE, "password": PASSWORD, **override}
        return json.dumps(fields)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ssl_bindir() -> Path | None:
    """The bin directory of a PostgreSQL built with OpenSSL: pgserver's if it is (its 16.2 wheel is
    not), else the newest of Debian's ``postgresql-NN`` packages (part of this machine's image)."""
    candidates = [local_bin("pg_config").parent]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for bindir in candidates:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            configure = subprocess.run([str(bindir / "pg_config"), "--configure"], capture_output=True, text=True,
                                       timeout=30).stdout
            if ("--with-openssl" in configure or "--with-ssl=openssl" in configure) and (bindir / "pg_ctl").exists():
                return bindir
    return None


def _run(bindir: Path, program: str, *args: str, user: int | None, log_file: Path | None = None) -> None:
    done = subprocess.run([str(bindir / program), *args], user=user, cwd="/", capture_output=True, text=True,
                          timeout=90)
    if done.returncode != 0:
        tail = log_file.read_text()[-4000:] if log_file and log_file.exists() else ""
        pytest.fail(f"{program} {args}: {done.stdout}{done.stderr}\n{tail}")


def _server_user() -> int | None:
    """PostgreSQL refuses to run as root: as root, run it as pgserver's unprivileged user."""
    if os.geteuid() != 0:
        return None
    from pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")
    import pwd

    return pwd.getpwnam("pgserver").pw_uid


@pytest.fixture(scope="module")
def server() -> Iterator[TlsServer]:
    with tls_server() as s:
        yield s


@contextlib.contextmanager
def tls_server() -> Iterator[TlsServer]:
    """A PostgreSQL that accepts only verified-TLS connections (skips the test where no PostgreSQL
    built with OpenSSL exists)."""
    bindir = _ssl_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL built with OpenSSL here (pgserver's is not; install Debian's postgresql)")
    uid = _server_user()
    root = Path(tempfile.mkdtemp(prefix="aur-", dir="/tmp"))  # short: the Unix socket lives under it
    root.chmod(0o755)  # the server's user reads its files under it
    pgdata = root / "pgdata"
    pgdata.mkdir(mode=0o700)
    if uid is not None:
        os.chown(pgdata, uid, -1)
    started = False
    try:
        _run(bindir, "initdb", "-D", str(pgdata), "-U", "postgres", "--auth-local=trust", "--auth-host=reject",
             "--encoding=UTF8", "--no-instructions", user=uid)
        ca_key, ca = _ca("lake-platform test CA")
        key, cert = _server_cert(ca_key, ca)
        _, rogue = _ca("some other CA")
        (root / "ca.pem").write_bytes(_pem(ca))
        (root / "rogue-ca.pem").write_bytes(_pem(rogue))
        _write_owned(pgdata / "server.crt", _pem(cert), pgdata, 0o644)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        _write_owned(pgdata / "server.key", key_pem, pgdata, 0o600)  # the server refuses a readable key
        _write_owned(pgdata / "pg_hba.conf", (
            b"local all postgres trust\n"
            b"hostssl all all 127.0.0.1/32 scram-sha-256\n"
            b"hostnossl all all 0.0.0.0/0 reject\n"
        ), pgdata, 0o600)
        port = _free_port()
        with (pgdata / "postgresql.conf").open("a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{pgdata}'\n"
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                    "password_encryption = 'scram-sha-256'\nfsync = off\n")
        log_file = root / "server.log"
        log_file.touch()
        if uid is not None:
            os.chown(log_file, uid, -1)
        started = True
        _run(bindir, "pg_ctl", "-D", str(pgdata), "-w", "-t", "60", "-l", str(log_file), "start", user=uid,
             log_file=log_file)
        conn = psycopg2.connect(host=str(pgdata), port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD %s", (PASSWORD,))
            cur.execute(f"CREATE DATABASE {DBNAME} OWNER {ROLE}")
        conn.close()
        yield TlsServer(port, root / "ca.pem", root / "rogue-ca.pem")
    finally:
        try:
            if started and (pgdata / "postmaster.pid").exists():
                _run(bindir, "pg_ctl", "-D", str(pgdata), "-m", "fast", "-w", "-t", "60", "stop", user=uid)
        finally:
            shutil.rmtree(root, ignore_errors=True)


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
