"""The AWS session every AWS backend shares: region from the environment, credentials from the
default chain (never from code or configuration), optionally a role to assume, botocore's
standard retry mode (exponential backoff with jitter on throttling and 5xx), and the translation
of botocore's errors into the platform's vocabulary.

Endpoints are botocore's: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_<SERVICE>``) points every
client at a stand-in, so the tests exercise exactly the production code path.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from core.errors import PlatformError, ResourceUnavailable, TerminalError

RETRIES = {"mode": "standard", "max_attempts": 5}
REFRESH_BEFORE_S = 300
_TRANSIENT_CODES = {"Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
                    "ServiceUnavailable", "SlowDown", "InternalError", "InternalFailure",
                    "ConcurrentModificationException", "OperationTimeoutException"}


@dataclass
class AwsSession:
    region: str
    role_arn: str | None = None
    session_name: str = "lake-platform"
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _expires_at: float | None = field(default=None, repr=False)  # of assumed-role credentials

    def _session(self) -> Any:
        import boto3

        base = boto3.session.Session(region_name=self.region)
        if not self.role_arn:
            return base  # the default chain refreshes its own credentials
        creds = base.client("sts", config=self._config()).assume_role(
            RoleArn=self.role_arn, RoleSessionName=self.session_name)["Credentials"]
        self._expires_at = creds["Expiration"].timestamp()
        return boto3.session.Session(region_name=self.region, aws_access_key_id=creds["AccessKeyId"],
                                     aws_secret_access_key=creds["SecretAccessKey"],
                                     aws_session_token=creds["SessionToken"])

    @staticmethod
    def _config(**extra: Any) -> Any:
        from botocore.config import Config

        return Config(retries=RETRIES, **extra)

    def client(self, service: str, **config: Any) -> Any:
        """One client per service and configuration (boto3 clients are thread-safe)."""
        key = f"{service}:{sorted(config.items())}"
        with self._lock:
            # Assumed-role credentials last an hour; a long-lived process (the daemon's sensors)
            # assumes the role again, with new clients, five minutes before they expire.
            if self._expires_at is not None and time.time() > self._expires_at - REFRESH_BEFORE_S:
                self._clients.clear()
                self._expires_at = None
            if key not in self._clients:
                if "session" not in self._clients:
                    self._clients["session"] = self._session()
                self._clients[key] = self._clients["session"].client(service, config=self._config(**config))
            return self._clients[key]


def error_code(e: BaseException) -> str:
    response = getattr(e, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def status_code(e: BaseException) -> int:
    response = getattr(e, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def translate(e: BaseException, doing: str) -> PlatformError:
    """A botocore error met while ``doing`` something, in the platform's vocabulary. The message
    carries the service's error code and message, never request parameters or credentials."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(e, NoCredentialsError):
        return TerminalError(f"{doing}: no AWS credentials (the default chain found none: set a role, SSO "
                             "or profile for the platform)")
    if isinstance(e, ClientError):
        code, status = error_code(e), status_code(e)
        text = e.response.get("Error", {}).get("Message", "")
        cls = ResourceUnavailable if code in _TRANSIENT_CODES or status >= 500 else TerminalError
        return cls(f"{doing}: {code or status}: {text}".rstrip(": "))
    if isinstance(e, BotoCoreError):  # connection errors, timeouts: the retries are spent
        return ResourceUnavailable(f"{doing}: {type(e).__name__}: {e}")
    return TerminalError(f"{doing}: {type(e).__name__}: {e}")
