"""Secrets from AWS Secrets Manager, fetched at call time (so a rotated secret is picked up by the
next connection). Only the secret's name reaches an error message or a log line."""

from __future__ import annotations

import logging

from pydantic import SecretStr

from core.errors import SecretMissing, TerminalError
from resources.aws import AwsSession, error_code, translate
from resources.secrets.base import SecretStore

log = logging.getLogger(__name__)
_MISSING_CODES = {"ResourceNotFoundException"}
# botocore logs every response body at DEBUG level: a GetSecretValue one holds the secret.
_BODY_LOGGERS = ("botocore.parsers", "botocore.endpoint")
_SECRET_KEYS = ("SecretString", "SecretBinary")


class _RedactSecretResponses(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(k in text for k in _SECRET_KEYS):
            record.msg, record.args = "%s", ("<a Secrets Manager response holding a secret value: not logged>",)
        return True


_REDACT = _RedactSecretResponses()


def _guard_botocore_logs() -> None:
    for name in _BODY_LOGGERS:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)


class AwsSecretStore(SecretStore):
    def __init__(self, session: AwsSession) -> None:
        self._session = session
        _guard_botocore_logs()

    def __repr__(self) -> str:
        return f"AwsSecretStore(region={self._session.region!r})"

    def get(self, name: str) -> SecretStr:
        from botocore.exceptions import BotoCoreError, ClientError

        doing = f"reading secret {name!r} from Secrets Manager"
        try:
            response = self._session.client("secretsmanager").get_secret_value(SecretId=name)
        except (BotoCoreError, ClientError) as e:
            missing = error_code(e) in _MISSING_CODES
            failure = translate(e, doing)
        else:
            missing, failure = False, None
        # Raised outside the handler: the botocore exception stays out of __context__.
        if missing:
            raise SecretMissing(f"secret {name!r} does not exist in Secrets Manager (region {self._session.region})")
        if failure is not None:
            raise failure
        if "SecretString" in response:
            value = response["SecretString"]
        elif "SecretBinary" in response:
            try:
                value = bytes(response["SecretBinary"]).decode("utf-8")
            except UnicodeDecodeError:
                value = None
            if value is None:
                raise TerminalError(f"{doing}: the binary secret is not UTF-8 text (its value is not shown)")
        else:
            raise SecretMissing(f"secret {name!r} has no current value in Secrets Manager")
        log.debug("read secret %r (version %s)", name, response.get("VersionId", "?"))
        return SecretStr(value)
