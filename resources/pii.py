"""The key of the keyed hash that pseudonymises personal identifiers in the modelled zones.

The key reaches the warehouse as a session value set by the connection, never as SQL text, so it
is in no compiled model, dbt artifact, dbt log, view definition or Dagster event:

- DuckDB (local): the dbt-duckdb plugin ``resources.warehouse.duckdb_session`` sets the variable
  ``platform_pii_key`` on every connection and cursor; SQL reads ``getvariable('platform_pii_key')``.
- PostgreSQL: libpq's ``PGOPTIONS`` carries ``-c platform.pii_key=...`` (``postgres_options``);
  SQL reads ``current_setting('platform.pii_key')``.
- Redshift (no session variables): a one-row key table readable only by the platform's dbt user,
  provisioned from Secrets Manager with the AWS wiring.

The dbt macro ``keyed_hash`` reads the value; both fail loudly when it is not set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import SecretStr

from core.errors import SecretMissing

KEY_VARIABLE = "PLATFORM_PII_KEY"
# Only for the embedded default: every other environment must be given its key.
LOCAL_DEVELOPMENT_KEY = "local-development-key"
DUCKDB_VARIABLE = "platform_pii_key"
POSTGRES_SETTING = "platform.pii_key"


class PiiKeyMissing(SecretMissing):
    pass


def pii_key(environ: Mapping[str, str] | None = None) -> SecretStr:
    """The hashing key from ``PLATFORM_PII_KEY`` (a secret: ``str()`` shows asterisks); the
    development key only in the local environment."""
    environ = os.environ if environ is None else environ
    key = environ.get(KEY_VARIABLE, "")
    if key:
        return SecretStr(key)
    env = environ.get("PLATFORM_ENV") or "local"
    if env == "local":
        return SecretStr(LOCAL_DEVELOPMENT_KEY)
    raise PiiKeyMissing(
        f"{KEY_VARIABLE} is not set: environment {env!r} needs the key that pseudonymises personal identifiers "
        "(in AWS it comes from Secrets Manager); the local development key is refused outside 'local'"
    )


def postgres_options(key: str | SecretStr) -> str:
    """A libpq options string (``PGOPTIONS``) that sets the key for the session. libpq splits options
    on whitespace and takes the character after a backslash literally, so those are escaped."""
    raw = key.get_secret_value() if isinstance(key, SecretStr) else key
    escaped = "".join("\\" + c if c == "\\" or c.isspace() else c for c in raw)
    return f"-c {POSTGRES_SETTING}={escaped}"
