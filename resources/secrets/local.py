"""Secrets of the local environment: process environment variables, read at call time.

Secret ``acme/serving`` is the variable ``PLATFORM_SECRET_ACME_SERVING`` (upper case, every
character other than a letter or digit becomes ``_``)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from pydantic import SecretStr

from core.errors import SecretMissing
from resources.secrets.base import SecretStore

PREFIX = "PLATFORM_SECRET_"


def env_var(name: str) -> str:
    return PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


class LocalSecretStore(SecretStore):
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ  # None: os.environ at each call

    def __repr__(self) -> str:
        return "LocalSecretStore()"

    def get(self, name: str) -> SecretStr:
        environ = os.environ if self._environ is None else self._environ
        value = environ.get(env_var(name), "")
        if not value:
            raise SecretMissing(f"secret {name!r} is not set: set the environment variable {env_var(name)}")
        return SecretStr(value)
