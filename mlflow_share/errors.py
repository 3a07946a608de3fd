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
          ├── EndpointNotFound       ENDPOINT_NOT_FOUND          404
          ├── MethodNotAllowed       METHOD_NOT_ALLOWED          405
          ├── TooLarge               INVALID_PARAMETER_VALUE     413
          ├── TooMany                REQUEST_LIMIT_EXCEEDED      429
          ├── InternalError          INTERNAL_ERROR              500
          ├── Unavailable            TEMPORARILY_UNAVAILABLE     503
          │    ├── AuditUnavailable  TEMPORARILY_UNAVAILABLE     503
          │    └── DatabaseUnavailable TEMPORARILY_UNAVAILABLE   503
          ├── AuditChainBroken       DATA_LOSS                   500
          └── DataLoss               DATA_LOSS                   500

Messages name the resource and the rule, never SQL, file paths or policy internals.
"""

from __future__ import annotations

import json
from http import HTTPStatus
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


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached: nothing can be decided or served; try again."""


class EndpointNotFound(MlflowShareError):
    error_code_value = databricks_pb2.ENDPOINT_NOT_FOUND


class MethodNotAllowed(MlflowShareError):
    """A path called with a method it does not serve (MLflow's ErrorCode has no name for it:
    the envelope carries the name HTTP gives it)."""

    def get_http_status_code(self) -> int:
        return 405

    def serialize_as_json(self) -> str:
        return json.dumps({"error_code": "METHOD_NOT_ALLOWED", "message": self.message})


class TooLarge(MlflowShareError):
    error_code_value = databricks_pb2.INVALID_PARAMETER_VALUE

    def get_http_status_code(self) -> int:
        return 413


class TooMany(MlflowShareError):
    error_code_value = databricks_pb2.REQUEST_LIMIT_EXCEEDED


class InternalError(MlflowShareError):
    """An unexpected failure, answered in the envelope (the details go to the server log)."""


class AuditChainBroken(MlflowShareError):
    error_code_value = databricks_pb2.DATA_LOSS


class DataLoss(MlflowShareError):
    """Stored bytes do not match their recorded size and SHA-256."""

    error_code_value = databricks_pb2.DATA_LOSS


def envelope(error: MlflowException) -> tuple[int, bytes]:
    """Return ``(http_status, json_body)`` for an error, exactly as MLflow serializes it."""
    return error.get_http_status_code(), error.serialize_as_json().encode()


# What a database driver, SQLAlchemy or Python put in an exception's text. MLflow's stores
# raise ``MlflowException(str(error))`` in places, so such text can reach a response.
_INTERNAL_MARKERS = (b"[SQL:", b"sqlalche.me", b"(sqlite3.", b"(psycopg", b"psycopg.",
                     b"SQLAlchemy", b"sqlalchemy.", b"Traceback (most recent call last)",
                     b"Python int too large", b"OperationalError", b"IntegrityError")
_STATUS_CODES = {400: "INVALID_PARAMETER_VALUE", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "RESOURCE_CONFLICT",
                 413: "INVALID_PARAMETER_VALUE", 503: "TEMPORARILY_UNAVAILABLE"}
_HTTP_STATUSES = frozenset(int(s) for s in HTTPStatus)
# Error bodies of API routes are rewritten into the envelope; pages keep theirs.
API_PREFIXES = ("/api/", "/ajax-api/", "/graphql", "/get-artifact", "/model-versions/")


def clean_error_body(status: int, content_type: str, body: bytes) -> bytes | None:
    """The body an error response of an API route should have, or None to keep it.

    Rules: an error is MLflow's JSON envelope, and it names no database, driver, SQL or
    Python internals. A plain-text or HTML error becomes the envelope for its status; an
    envelope whose message carries internals keeps its code and gets a plain message.
    """
    internals = any(marker in body for marker in _INTERNAL_MARKERS)
    if content_type.startswith("application/json"):
        if not internals:
            return None
        try:
            code = str(json.loads(body).get("error_code") or "")
        except (ValueError, AttributeError, RecursionError):
            code = ""
        message = ("The server's database refused this request; check the names and IDs it "
                   "carries (a name may already be in use).")
    else:
        code, message = "", HTTPStatus(status).phrase if status in _HTTP_STATUSES else "Error"
        if internals or status >= 500:
            message = "The request failed on the server."
    code = code or _STATUS_CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "BAD_REQUEST")
    return json.dumps({"error_code": code, "message": message}).encode()
