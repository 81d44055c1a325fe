"""The PostgreSQL stand-in for Redshift and Aurora: a real PostgreSQL server on 127.0.0.1 that
accepts only verified TLS (a CA made here signs its certificate for localhost/127.0.0.1; pg_hba
rejects every unencrypted TCP connection; passwords are SCRAM). The platform's login role owns one
database; an administrator reaches it over the server's Unix socket only.

pgserver cannot stand in here: it always starts its server with ``-h ""`` (no TCP), and its
PostgreSQL 16.2 is built without OpenSSL ("SSL is not supported by this build"). So this runs a
PostgreSQL built with OpenSSL (Debian's postgresql-15 on these machines) with its own
``initdb``/``pg_ctl``. Used by the tests and by ``python -m cli stand-in``; nothing in the
platform's run path imports it.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

ADMIN = "postgres"


class NoTlsPostgres(ConfigError):
    """No PostgreSQL built with OpenSSL is installed (the tests skip, saying so)."""


def _name(cn: str):  # noqa: ANN202
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str):  # noqa: ANN202
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_cert(ca_key, ca):  # noqa: ANN001, ANN202
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert) -> bytes:  # noqa: ANN001
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _write_owned(path: Path, data: bytes, owner: Path, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)
    st = owner.stat()
    os.chown(path, st.st_uid, st.st_gid)


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca_bundle: Path  # the CA that signed the server's certificate
    rogue_ca_bundle: Path  # a CA that did not
    socket_dir: Path  # the administrator's way in (trust over the Unix socket only)
    role: str
    database: str
    password: str

    def secret(self, **override: object) -> str:
        """The platform role's credentials as an RDS-format secret (what Aurora's secret holds)."""
        fields = {"engine": "postgres", "host": "localhost", "port": self.port, "dbname": self.database,
                  "username": self.role, "password": self.password, **override}
        return json.dumps(fields)

    def admin(self, database: str | None = None):  # noqa: ANN201
        """An autocommit connection as the administrator (who runs ``cli infra grants``'s SQL)."""
        import psycopg2

        conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, user=ADMIN, dbname=database or self.database)
        conn.autocommit = True
        return conn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssl_bindir() -> Path | None:
    """The bin directory of a PostgreSQL built with OpenSSL: pgserver's if it is (its 16.2 wheel is
    not), else the newest of Debian's ``postgresql-NN`` packages (part of this machine's image)."""
    from resources.serving import local_bin

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
        raise RuntimeError(f"{program} {args}: {done.stdout}{done.stderr}\n{tail}")


def _server_user() -> int | None:
    """PostgreSQL refuses to run as root: as root, run it as pgserver's unprivileged user."""
    if os.geteuid() != 0:
        return None
    import pwd

    from pgserver.utils import ensure_user_exists

    ensure_user_exists("pgserver")
    return pwd.getpwnam("pgserver").pw_uid


@contextlib.contextmanager
def tls_server(*, role: str = "platform", database: str = "lake", password: str | None = None,
               root: Path | None = None) -> Iterator[TlsServer]:
    """A PostgreSQL that accepts only verified-TLS connections; ``role`` (LOGIN, not a superuser)
    owns ``database``. Raises NoTlsPostgres where no PostgreSQL built with OpenSSL exists."""
    import psycopg2
    from cryptography.hazmat.primitives import serialization
    from psycopg2 import sql

    bindir = ssl_bindir()
    if bindir is None:
        raise NoTlsPostgres("no PostgreSQL built with OpenSSL here (pgserver's is not): install Debian's postgresql")
    password = password or secrets.token_urlsafe(24)
    uid = _server_user()
    root = Path(tempfile.mkdtemp(prefix="pgs-", dir=root or "/tmp"))  # short: the Unix socket lives under it
    root.chmod(0o755)  # the server's user reads its files under it
    pgdata = root / "pgdata"
    pgdata.mkdir(mode=0o700)
    if uid is not None:
        os.chown(pgdata, uid, -1)
    started = False
    try:
        _run(bindir, "initdb", "-D", str(pgdata), "-U", ADMIN, "--auth-local=trust", "--auth-host=reject",
             "--encoding=UTF8", "--no-instructions", user=uid)
        ca_key, ca = _ca("lake-platform stand-in CA")
        key, cert = _server_cert(ca_key, ca)
        _, rogue = _ca("some other CA")
        (root / "ca.pem").write_bytes(_pem(ca))
        (root / "rogue-ca.pem").write_bytes(_pem(rogue))
        _write_owned(pgdata / "server.crt", _pem(cert), pgdata, 0o644)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        _write_owned(pgdata / "server.key", key_pem, pgdata, 0o600)  # the server refuses a readable key
        _write_owned(pgdata / "pg_hba.conf", (
            f"local all {ADMIN} trust\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 0.0.0.0/0 reject\n"
        ).encode(), pgdata, 0o600)
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
        conn = psycopg2.connect(host=str(pgdata), port=port, user=ADMIN, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(role)), (password,))
            cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
        conn.close()
        yield TlsServer(port, root / "ca.pem", root / "rogue-ca.pem", pgdata, role, database, password)
    finally:
        try:
            if started and (pgdata / "postmaster.pid").exists():
                _run(bindir, "pg_ctl", "-D", str(pgdata), "-m", "fast", "-w", "-t", "60", "stop", user=uid)
        finally:
            shutil.rmtree(root, ignore_errors=True)
