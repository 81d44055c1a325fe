"""The serving database: one PostgreSQL implementation (``postgres``) for Aurora in AWS and for the
embedded server of the local environment (``embedded``)."""

from resources.serving.embedded import local_bin, local_status, start, stop_local
from resources.serving.postgres import (
    DuplicateKeyError,
    ExportResult,
    NullKeyError,
    SchemaChangeError,
    ServingBusy,
    ServingDatabase,
    ServingDeclarationError,
    ServingError,
    ServingRefused,
    ServingUnavailable,
    normalize_type,
)

__all__ = ["DuplicateKeyError", "ExportResult", "NullKeyError", "SchemaChangeError", "ServingBusy", "ServingDatabase",
           "ServingDeclarationError", "ServingError", "ServingRefused", "ServingUnavailable", "local_bin",
           "local_status", "normalize_type", "start", "stop_local"]
