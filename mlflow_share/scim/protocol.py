"""SCIM's message schemas and its errors (RFC 7644 §3.12), within mlflow-share's hierarchy.

Each error here subclasses the ``errors`` class with its status and adds SCIM's ``scimType``::

    InvalidInput (400)      InvalidFilter, InvalidSyntax, InvalidPath, NoTarget,
                            InvalidValue, Mutability
    Conflict (409)          Uniqueness
                            └── PreconditionFailed (412: If-Match does not match)
    MlflowShareError        NotImplementedHere (501: /Me, /Bulk)

Every other mlflow-share error keeps its status and gets no ``scimType``.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from mlflow.exceptions import MlflowException

from mlflow_share.errors import Conflict, InvalidInput, MlflowShareError

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_RESPONSE_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_REQUEST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
SERVICE_PROVIDER_CONFIG_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
CONTENT_TYPE = "application/scim+json"


class ScimInvalid(InvalidInput):
    scim_type: ClassVar[str] = "invalidValue"


class InvalidFilter(ScimInvalid):
    scim_type = "invalidFilter"


class InvalidSyntax(ScimInvalid):
    scim_type = "invalidSyntax"


class InvalidPath(ScimInvalid):
    scim_type = "invalidPath"


class NoTarget(ScimInvalid):
    scim_type = "noTarget"


class InvalidValue(ScimInvalid):
    scim_type = "invalidValue"


class Mutability(ScimInvalid):
    scim_type = "mutability"


class Uniqueness(Conflict):
    scim_type: ClassVar[str] = "uniqueness"


class PreconditionFailed(Conflict):
    """An ``If-Match`` that names another version of the resource."""

    scim_type: ClassVar[str] = ""

    def get_http_status_code(self) -> int:
        return 412


class NotImplementedHere(MlflowShareError):
    def get_http_status_code(self) -> int:
        return 501


def error_body(exc: MlflowException) -> tuple[int, bytes]:
    """``(status, body)`` of an error in SCIM's error schema (``status`` is a string)."""
    status = exc.get_http_status_code()
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status),
                            "detail": exc.message}
    scim_type = getattr(exc, "scim_type", None)
    if scim_type is None and status == 400:
        scim_type = "invalidValue"  # mlflow-share's own refusals of a value (names, roles)
    if scim_type:
        body["scimType"] = scim_type
    return status, json.dumps(body).encode()
