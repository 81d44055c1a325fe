"""The interface of a secret store. A secret is a string, often a JSON object of fields (the RDS
format ``{"host", "port", "dbname", "username", "password"}``); both come back wrapped in
``SecretStr`` so that ``str``/``repr`` show asterisks. Errors name the secret, never its value."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod

from pydantic import SecretStr

from core.errors import ConfigError


class SecretStore(ABC):
    @abstractmethod
    def get(self, name: str) -> SecretStr:
        """The value of secret ``name``; SecretMissing (naming it) if the store has no such secret."""

    def get_fields(self, name: str) -> dict[str, SecretStr]:
        """The fields of a JSON-object secret, each a SecretStr (numbers as their JSON text)."""
        return parse_fields(name, self.get(name))


def parse_fields(name: str, value: SecretStr) -> dict[str, SecretStr]:
    try:
        parsed = json.loads(value.get_secret_value())
    except ValueError:
        parsed = None  # the decoder's exception holds the document: it must not travel as __context__
    if not isinstance(parsed, dict):
        raise ConfigError(f"secret {name!r} is not a JSON object of fields (its value is not shown)")
    return {str(k): SecretStr(v if isinstance(v, str) else json.dumps(v)) for k, v in parsed.items()}
