"""The one exception hierarchy of mlflow-share and its ErrorCode/HTTP mapping.

Every error is an ``MlflowException``, so MLflow's own handlers serialize it into the
JSON envelope (``error_code``, ``message``) with the mapped status::

    MlflowException
     └── MlflowShareError
          ├── Unauthenticated        UNAUTHENTICATED             401
          ├── PermissionDenied       PERMISSION_DENIED           403
          ├── InvalidInput           INVALID_PARAMETER_VALUE     400
          │    └── InvalidPolicy     INVALID_PARAMETER_VALUE     400
          ├── NotFound               RESOURCE_DOES_NOT_EXIST     404
          ├── Conflict               RESOURCE_CONFLICT           409
          ├── Unavailable            TEMPORARILY_UNAVAILABLE     503
          │    └── AuditUnavailable  TEMPORARILY_UNAVAILABLE     503
          ├── AuditChainBroken       DATA_LOSS                   500
          └── DataLoss               DATA_LOSS                   500

Messages name the resource and the rule, never SQL, file paths or policy internals.
"""

from __future__ import annotations

from typing import ClassVar

from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2


class MlflowShareError(MlflowException):
    """Base class: each subclass fixes one MLflow ``ErrorCode``."""

    error_code_value: ClassVar[int] = databricks_pb2.INTERNAL_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=self.error_code_value)


class Unauthenticated(MlflowShareError):
    error_code_value = databricks_pb2.UNAUTHENTICATED


class PermissionDenied(MlflowShareError):
    error_code_value = databricks_pb2.PERMISSION_DENIED


class InvalidInput(MlflowShareError):
    error_code_value = databricks_pb2.INVALID_PARAMETER_VALUE


class InvalidPolicy(InvalidInput):
    pass


class NotFound(MlflowShareError):
    error_code_value = databricks_pb2.RESOURCE_DOES_NOT_EXIST


class Conflict(MlflowShareError):
    error_code_value = databricks_pb2.RESOURCE_CONFLICT


class Unavailable(MlflowShareError):
    error_code_value = databricks_pb2.TEMPORARILY_UNAVAILABLE


class AuditUnavailable(Unavailable):
    """The audit event could not be committed, so neither was the change it records."""


class AuditChainBroken(MlflowShareError):
    error_code_value = databricks_pb2.DATA_LOSS


class DataLoss(MlflowShareError):
    """Stored bytes do not match their recorded size and SHA-256."""

    error_code_value = databricks_pb2.DATA_LOSS


def envelope(error: MlflowException) -> tuple[int, bytes]:
    """Return ``(http_status, json_body)`` for an error, exactly as MLflow serializes it."""
    return error.get_http_status_code(), error.serialize_as_json().encode()
