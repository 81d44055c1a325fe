"""The environment's secret store: Secrets Manager in AWS (``aws``), process environment variables
locally (``local``). Values come back as ``SecretStr`` and never reach a message, a repr or a log."""

from resources.secrets.aws import AwsSecretStore
from resources.secrets.base import SecretStore, parse_fields
from resources.secrets.local import LocalSecretStore, env_var

__all__ = ["AwsSecretStore", "LocalSecretStore", "SecretStore", "env_var", "parse_fields"]
