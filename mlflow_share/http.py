"""What every mlflow-share blueprint shares at the HTTP edge: its URL prefix, the caller,
JSON bodies and fields, the model check, and errors in MLflow's envelope."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial, update_wrapper
from typing import Any

from flask import Blueprint, Response, request
from mlflow.exceptions import MlflowException

from mlflow_share.auth.authorizer import Authorizer
from mlflow_share.auth.identity import Principal
from mlflow_share.errors import InvalidInput, PermissionDenied, Unauthenticated
from mlflow_share.policy.enforcer import PolicyEngine
from mlflow_share.request_state import CURRENT_PRINCIPAL

PREFIX = "/api/2.0/mlflow-share"


def current_principal() -> Principal:
    principal = CURRENT_PRINCIPAL.get()
    if principal is None:  # only reachable if the interceptor were bypassed
        raise Unauthenticated("Authentication required.")
    return principal


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDenied("Only org administrators may do this.")


def json_body() -> dict[str, Any]:
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        raise InvalidInput("The request body nests too deeply to be read.") from None
    if not isinstance(data, dict):
        raise InvalidInput("The request body must be a JSON object.")
    return data


def string_field(data: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"Missing or invalid string parameter {name!r}.")
    return value


def require_model(policy: PolicyEngine, name: str, action: str,
                  version: int | None = None) -> str | None:
    """mlflow-share's ID of registered model ``name`` if the caller may ``action`` it (on
    ``version``: a sharing package covers only the versions it pins);
    404 for a model that does not exist (admins: one with no owner team gives ``None``),
    403 otherwise. Names the model in the request's audit event."""
    return Authorizer(policy).check_model(current_principal(), name, action, version)


def json_errors(blueprint: Blueprint) -> Blueprint:
    """Answer the blueprint's errors in MLflow's JSON envelope with the mapped status."""

    @blueprint.errorhandler(MlflowException)
    def _error(exc: MlflowException) -> Response:
        response = Response(exc.serialize_as_json(), mimetype="application/json")
        response.status_code = exc.get_http_status_code()
        return response

    return blueprint


Route = tuple[str, str, Callable[..., Response], tuple[str, ...]]  # rule, endpoint, view, methods


def bind_routes(blueprint: Blueprint, routes: Iterable[Route], services: Any) -> Blueprint:
    """Register module-level views on ``blueprint``, each bound to ``services`` (its first
    parameter) and still named as its function (tracebacks, guards that read views). The
    endpoint is what the policy and the audit log call the view."""
    for rule, endpoint, view, methods in routes:
        view_func = update_wrapper(partial(view, services), view)
        blueprint.add_url_rule(rule, endpoint=endpoint, view_func=view_func, methods=methods)
    return blueprint
