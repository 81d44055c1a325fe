"""The serving database in AWS: Aurora PostgreSQL, reached with the credentials of an RDS secret
in Secrets Manager and TLS verified against a CA bundle (``sslmode=verify-full``: the server's
certificate must chain to the bundle and name the host).

The secret has the format RDS writes for a managed master password or a rotated user:
``{"host", "port", "dbname", "username", "password"}`` (``dbname`` optional). It is read when the
database is built, i.e. at run time, never at import; build a new one per run so that a rotated
password is picked up. The password lives only in the DSN held by ``ServingDatabase``, which
shows and logs ``dsn_for_humans()`` (no password) and redacts it from connection errors; every
message raised here is built from the secret's name and the field names, never from values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2.extensions

from core.errors import ConfigError
from core.paths import REPO_ROOT
from resources.secrets.base import SecretStore
from resources.serving.postgres import RETRY_DELAYS_S, ServingDatabase

if TYPE_CHECKING:
    from resources.environment import ServingConfig

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("host", "port", "username", "password")
DEFAULT_DBNAME = "postgres"
_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


def ca_bundle_path(ca_bundle: str | Path | None) -> Path:
    """The CA bundle as an absolute path (relative ones are relative to the repository), checked to
    be a readable PEM file of certificates: TLS is never downgraded to unverified."""
    if not ca_bundle:
        raise ConfigError("aurora serving needs ca_bundle (a PEM file of CA certificates): TLS is always verified")
    path = Path(ca_bundle).expanduser()
    if not path.is_absolute():
        path = REPO_ROOT / path
    try:
        head = path.read_bytes()[:1 << 20]
    except OSError as e:
        reason = e.strerror or type(e).__name__
    else:
        reason = None if _PEM_CERTIFICATE in head else "it holds no PEM certificate"
    if reason is not None:
        raise ConfigError(f"serving CA bundle {path}: {reason}; Aurora's TLS certificate is verified against it "
                          "(sslmode=verify-full), so the serving database cannot be used without it")
    return path


def _dsn_params(secrets: SecretStore, secret_name: str, ca_bundle: str | Path | None) -> dict[str, str]:
    """The libpq parameters (the password among them) for the secret's database, TLS verified."""
    ca = ca_bundle_path(ca_bundle)  # first: no secret is read for a database that cannot be used
    fields = secrets.get_fields(secret_name)
    if missing := [f for f in REQUIRED_FIELDS if not fields.get(f, None) or not fields[f].get_secret_value()]:
        raise ConfigError(f"secret {secret_name!r} lacks field(s) {', '.join(missing)}: an RDS secret has "
                          f"{', '.join(REQUIRED_FIELDS)} and optionally dbname")
    port = fields["port"].get_secret_value()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"secret {secret_name!r}: field port is not a TCP port number (its value is not shown)")
    dbname = fields["dbname"].get_secret_value() if "dbname" in fields else DEFAULT_DBNAME
    return {
        "host": fields["host"].get_secret_value(),
        "port": port,
        "dbname": dbname or DEFAULT_DBNAME,
        "user": fields["username"].get_secret_value(),
        "password": fields["password"].get_secret_value(),
        "sslmode": "verify-full",
        "sslrootcert": str(ca),
        # The cluster endpoint follows the writer, but its DNS lags a failover by seconds: refuse
        # a demoted (read-only) instance rather than fail the export half-way.
        "target_session_attrs": "read-write",
    }


def aurora_serving(secrets: SecretStore, secret_name: str, ca_bundle: str | Path | None, *,
                   lock_timeout_s: float = 60.0, retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S) -> ServingDatabase:
    """The Aurora serving database of ``secret_name`` (read now from ``secrets``), TLS verified
    against ``ca_bundle``. ConfigError for a missing/invalid CA bundle or secret field,
    SecretMissing for a missing secret."""
    params = _dsn_params(secrets, secret_name, ca_bundle)
    db = ServingDatabase(psycopg2.extensions.make_dsn(**params), lock_timeout_s=lock_timeout_s,
                         retry_delays_s=retry_delays_s)
    log.info("serving database from secret %r: %s", secret_name, db.dsn_for_humans())
    return db


def from_config(serving: ServingConfig, secrets: SecretStore, **options: Any) -> ServingDatabase:
    """The serving database an ``aurora_postgres`` environment declares (``serving.secret_name``,
    ``serving.ca_bundle``); ``options`` go to ``aurora_serving``."""
    if serving.kind != "aurora_postgres" or not serving.secret_name:
        raise ConfigError(f"serving kind {serving.kind!r} is not aurora_postgres with a secret_name")
    return aurora_serving(secrets, serving.secret_name, serving.ca_bundle, **options)
