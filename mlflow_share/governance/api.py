"""``/api/2.0/mlflow-share/aliases/...``: protect, move (compare-and-set), roll back, history,
and moves that need a second maintainer (``/requests``: request -> approve or reject).

Reading needs read on the model; moving an alias needs write, or manage when it is protected;
protecting and unprotecting need manage. Moves go through MLflow's own registry store, so
they are audited and recorded in the alias history like any stock ``set_registered_model_alias``.

Views are module-level functions of the services they use (``AliasServices``, given first);
``create_alias_blueprint`` only binds them to their URLs (``ROUTES``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify, request
from sqlalchemy.engine import Engine

from mlflow_share import db
from mlflow_share.http import (
    PREFIX,
    bind_routes,
    current_principal,
    json_body,
    json_errors,
    require_model,
    string_field,
)
from mlflow_share.audit.log import AUDIT_CONTEXT
from mlflow_share.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from mlflow_share.governance import aliases
from mlflow_share.policy.enforcer import PolicyEngine
from mlflow_share.request_state import ALIAS_MOVE, AliasMove


@dataclass(frozen=True)
class AliasServices:
    """What the alias views work with: the policy engine decides on the model, the engine
    holds the protections, the alias history and the move requests."""

    policy: PolicyEngine
    engine: Engine


# -- request fields ----------------------------------------------------------------------------
def _version(value: Any, key: str, *, required: bool = True) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not str(value).isascii() or not str(value).isdigit() \
            or len(str(value)) > 9:
        raise InvalidInput(f"{key!r} must be a version number.")
    return int(value)


def _required_version(data: dict[str, Any], key: str) -> int:
    version = _version(data.get(key), key)
    assert version is not None
    return version


def _model_alias(data: dict[str, Any]) -> tuple[str, str]:
    """The request's ``model`` and ``alias`` (400 unless both are non-empty strings)."""
    name, alias = string_field(data, "model"), string_field(data, "alias")
    assert name is not None and alias is not None
    return name, alias


# -- decisions and moves -----------------------------------------------------------------------
def _allowed(policy: PolicyEngine, name: str, action: str) -> str:
    model_id = require_model(policy, name, action)
    if model_id is None:  # an admin asking about a model mlflow-share does not own
        raise NotFound(f"Registered model {name!r} has no owner team in mlflow-share.")
    return model_id


def _move(name: str, alias: str, version: int, expected: int | None,
          reason: str | None, request_id: str | None = None) -> None:
    from mlflow_share.mlflow_compat import private

    _get_model_registry_store = private("mlflow.server.handlers",
                                        "_get_model_registry_store")

    ctx = AUDIT_CONTEXT.get()
    if ctx is not None:  # the request's event says what was asked
        ctx.extra.update({"alias_expected": expected, "alias_reason": reason,
                          "alias_request": request_id})
    token = ALIAS_MOVE.set(AliasMove(expected, reason, request_id))
    try:
        _get_model_registry_store().set_registered_model_alias(name, alias, str(version))
    finally:
        ALIAS_MOVE.reset(token)


def _guard(services: AliasServices, name: str, alias: str) -> str:
    model_id = _allowed(services.policy, name, "write")
    with services.engine.connect() as conn:
        if aliases.is_protected(conn, model_id, alias):
            _allowed(services.policy, name, "manage")
    return model_id


def _loosening(engine: Engine, model_id: str, alias: str, keeps_approval: bool) -> None:
    """Dropping a second maintainer's approval is for org admins only (else one
    maintainer could switch it off, move the alias, and switch it on again)."""
    with engine.connect() as conn:
        rule = aliases.protection(conn, model_id, alias)
    if rule is not None and rule.require_approval and not keeps_approval and \
            not current_principal().is_admin:
        raise PermissionDenied(f"Alias {alias!r} needs a second maintainer's approval to "
                               "move; only an org admin may lift that.")


def _request_for(services: AliasServices, request_id: str, action: str
                 ) -> tuple[dict[str, Any], str]:
    found = aliases.get_request(services.engine, request_id)
    with services.engine.connect() as conn:
        name = conn.execute(sa.select(db.resources.c.name).where(
            db.resources.c.resource_id == found["model_id"])).scalar()
    if name is None:
        raise NotFound(f"The model of request {request_id!r} no longer exists.")
    _allowed(services.policy, str(name), action)
    return found, str(name)


# -- protections, moves, history ---------------------------------------------------------------
def list_aliases(services: AliasServices) -> Response:
    name = request.args.get("model") or ""
    model_id = _allowed(services.policy, name, "read")
    found = aliases.protected(services.engine, model_id)
    with services.engine.connect() as conn:  # where each points now (None: not set)
        for entry in found:
            entry["version"] = aliases.current_version(conn, name, entry["alias"])
    return jsonify({"model": name, "protected": found})


def protect(services: AliasServices) -> Response:
    data = json_body()
    name, alias = _model_alias(data)
    approval = data.get("require_approval", False)
    if not isinstance(approval, bool):
        raise InvalidInput("'require_approval' must be true or false.")
    model_id = _allowed(services.policy, name, "manage")
    _loosening(services.engine, model_id, alias, approval)
    aliases.protect(services.engine, model_id, alias, current_principal().name, approval)
    return jsonify({"model": name, "alias": alias, "protected": True,
                    "require_approval": approval})


def unprotect(services: AliasServices) -> Response:
    data = json_body()
    name, alias = _model_alias(data)
    model_id = _allowed(services.policy, name, "manage")
    _loosening(services.engine, model_id, alias, False)
    removed = aliases.unprotect(services.engine, model_id, alias)
    return jsonify({"model": name, "alias": alias, "protected": False, "changed": removed})


def move_alias(services: AliasServices) -> Response:
    data = json_body()
    name, alias = _model_alias(data)
    version = _required_version(data, "version")
    _guard(services, name, alias)
    _move(name, alias, version, _version(data.get("expected_version"), "expected_version",
                                         required=False),
          string_field(data, "reason", required=False))
    return jsonify({"model": name, "alias": alias, "version": str(version)})


def rollback(services: AliasServices) -> Response:
    data = json_body()
    name, alias = _model_alias(data)
    reason = string_field(data, "reason")
    model_id = _guard(services, name, alias)
    with services.engine.connect() as conn:
        current = aliases.current_version(conn, name, alias)
    target = _version(data.get("to_version"), "to_version", required=False)
    if target is None:
        target = aliases.previous_version(services.engine, model_id, name, alias)
    _move(name, alias, target, current, reason)
    return jsonify({"model": name, "alias": alias, "version": str(target),
                    "from_version": str(current) if current is not None else None})


def alias_history(services: AliasServices) -> Response:
    name = request.args.get("model") or ""
    model_id = _allowed(services.policy, name, "read")
    return jsonify({"model": name, "history": aliases.history(
        services.engine, model_id, name, request.args.get("alias"))})


# -- moves that need a second maintainer -------------------------------------------------------
def request_move(services: AliasServices) -> Response:
    data = json_body()
    name, alias = _model_alias(data)
    version = _required_version(data, "version")
    model_id = _allowed(services.policy, name, "manage")
    return jsonify({"request": aliases.request_move(
        services.engine, model_id=model_id, name=name, alias=alias, version=version,
        reason=string_field(data, "reason", required=False), by=current_principal().name)})


def list_requests(services: AliasServices) -> Response:
    name = request.args.get("model") or ""
    return jsonify({"requests": aliases.list_requests(
        services.engine, _allowed(services.policy, name, "read"), request.args.get("status"))})


def approve(services: AliasServices, request_id: str) -> Response:
    found, name = _request_for(services, request_id, "manage")
    if found["status"] != "pending":
        raise Conflict(f"Request {request_id} is {found['status']}.")
    _move(name, found["alias"], int(found["to_version"]), found["from_version"],
          found["reason"], request_id)
    return jsonify({"request": aliases.get_request(services.engine, request_id)})


def reject(services: AliasServices, request_id: str) -> Response:
    found, _ = _request_for(services, request_id, "manage")
    data = request.get_json(silent=True) or {}
    reason = data.get("reason") if isinstance(data, dict) else None
    aliases.reject(services.engine, found, current_principal().name,
                   reason if isinstance(reason, str) else None)
    return jsonify({"request": aliases.get_request(services.engine, request_id)})


# (rule, endpoint, view, methods): the endpoint is what the policy and the audit log
# name (``flask:mlflow_share_aliases.<endpoint>``), as they did when the views were closures.
Route = tuple[str, str, Callable[..., Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("", "list_aliases", list_aliases, ("GET",)),
    ("/protect", "protect", protect, ("POST",)),
    ("/unprotect", "unprotect", unprotect, ("POST",)),
    ("/move", "move_alias", move_alias, ("POST",)),
    ("/rollback", "rollback", rollback, ("POST",)),
    ("/requests", "request_move", request_move, ("POST",)),
    ("/requests", "list_requests", list_requests, ("GET",)),
    ("/requests/<request_id>/approve", "approve", approve, ("POST",)),
    ("/requests/<request_id>/reject", "reject", reject, ("POST",)),
    ("/history", "alias_history", alias_history, ("GET",)),
)


def create_alias_blueprint(policy: PolicyEngine, engine: Engine) -> Blueprint:
    """The alias API: every view of ``ROUTES``, bound to ``policy`` and ``engine``."""
    api = json_errors(Blueprint("mlflow_share_aliases", __name__,
                                url_prefix=PREFIX + "/aliases"))
    services = AliasServices(policy, engine)
    bind_routes(api, ROUTES, services)
    return api
