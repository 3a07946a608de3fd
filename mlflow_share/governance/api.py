"""``/api/2.0/mlflow-share/aliases/...``: protect, move (compare-and-set), roll back, history,
and moves that need a second maintainer (``/requests``: request -> approve or reject).

Reading needs read on the model; moving an alias needs write, or manage when it is protected;
protecting and unprotecting need manage. Moves go through MLflow's own registry store, so
they are audited and recorded in the alias history like any stock ``set_registered_model_alias``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify, request
from sqlalchemy.engine import Engine

from mlflow_share import db
from mlflow_share.http import (
    PREFIX,
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


def create_alias_blueprint(policy: PolicyEngine, engine: Engine) -> Blueprint:
    api = json_errors(Blueprint("mlflow_share_aliases", __name__,
                                url_prefix=PREFIX + "/aliases"))

    def allowed(name: str, action: str) -> str:
        model_id = require_model(policy, name, action)
        if model_id is None:  # an admin asking about a model mlflow-share does not own
            raise NotFound(f"Registered model {name!r} has no owner team in mlflow-share.")
        return model_id

    def move(name: str, alias: str, version: int, expected: int | None,
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

    def guard(name: str, alias: str) -> str:
        model_id = allowed(name, "write")
        with engine.connect() as conn:
            if aliases.is_protected(conn, model_id, alias):
                allowed(name, "manage")
        return model_id

    def loosening(model_id: str, alias: str, keeps_approval: bool) -> None:
        """Dropping a second maintainer's approval is for org admins only (else one
        maintainer could switch it off, move the alias, and switch it on again)."""
        with engine.connect() as conn:
            rule = aliases.protection(conn, model_id, alias)
        if rule is not None and rule.require_approval and not keeps_approval and \
                not current_principal().is_admin:
            raise PermissionDenied(f"Alias {alias!r} needs a second maintainer's approval to "
                                   "move; only an org admin may lift that.")

    @api.get("")
    def list_aliases() -> Response:
        name = request.args.get("model") or ""
        model_id = allowed(name, "read")
        return jsonify({"model": name, "protected": aliases.protected(engine, model_id)})

    @api.post("/protect")
    def protect() -> Response:
        data = json_body()
        name, alias = _model_alias(data)
        approval = data.get("require_approval", False)
        if not isinstance(approval, bool):
            raise InvalidInput("'require_approval' must be true or false.")
        model_id = allowed(name, "manage")
        loosening(model_id, alias, approval)
        aliases.protect(engine, model_id, alias, current_principal().name, approval)
        return jsonify({"model": name, "alias": alias, "protected": True,
                        "require_approval": approval})

    @api.post("/unprotect")
    def unprotect() -> Response:
        data = json_body()
        name, alias = _model_alias(data)
        model_id = allowed(name, "manage")
        loosening(model_id, alias, False)
        removed = aliases.unprotect(engine, model_id, alias)
        return jsonify({"model": name, "alias": alias, "protected": False, "changed": removed})

    @api.post("/move")
    def move_alias() -> Response:
        data = json_body()
        name, alias = _model_alias(data)
        version = _required_version(data, "version")
        guard(name, alias)
        move(name, alias, version, _version(data.get("expected_version"), "expected_version",
                                            required=False),
             string_field(data, "reason", required=False))
        return jsonify({"model": name, "alias": alias, "version": str(version)})

    @api.post("/rollback")
    def rollback() -> Response:
        data = json_body()
        name, alias = _model_alias(data)
        reason = string_field(data, "reason")
        model_id = guard(name, alias)
        with engine.connect() as conn:
            current = aliases.current_version(conn, name, alias)
        target = _version(data.get("to_version"), "to_version", required=False)
        if target is None:
            target = aliases.previous_version(engine, model_id, name, alias)
        move(name, alias, target, current, reason)
        return jsonify({"model": name, "alias": alias, "version": str(target),
                        "from_version": str(current) if current is not None else None})

    # -- moves that need a second maintainer ---------------------------------------------------
    def request_for(request_id: str, action: str) -> tuple[dict[str, Any], str]:
        found = aliases.get_request(engine, request_id)
        with engine.connect() as conn:
            name = conn.execute(sa.select(db.resources.c.name).where(
                db.resources.c.resource_id == found["model_id"])).scalar()
        if name is None:
            raise NotFound(f"The model of request {request_id!r} no longer exists.")
        allowed(str(name), action)
        return found, str(name)

    @api.post("/requests")
    def request_move() -> Response:
        data = json_body()
        name, alias = _model_alias(data)
        version = _required_version(data, "version")
        model_id = allowed(name, "manage")
        return jsonify({"request": aliases.request_move(
            engine, model_id=model_id, name=name, alias=alias, version=version,
            reason=string_field(data, "reason", required=False), by=current_principal().name)})

    @api.get("/requests")
    def list_requests() -> Response:
        name = request.args.get("model") or ""
        return jsonify({"requests": aliases.list_requests(
            engine, allowed(name, "read"), request.args.get("status"))})

    @api.post("/requests/<request_id>/approve")
    def approve(request_id: str) -> Response:
        found, name = request_for(request_id, "manage")
        if found["status"] != "pending":
            raise Conflict(f"Request {request_id} is {found['status']}.")
        move(name, found["alias"], int(found["to_version"]), found["from_version"],
             found["reason"], request_id)
        return jsonify({"request": aliases.get_request(engine, request_id)})

    @api.post("/requests/<request_id>/reject")
    def reject(request_id: str) -> Response:
        found, _ = request_for(request_id, "manage")
        data = request.get_json(silent=True) or {}
        reason = data.get("reason") if isinstance(data, dict) else None
        aliases.reject(engine, found, current_principal().name,
                       reason if isinstance(reason, str) else None)
        return jsonify({"request": aliases.get_request(engine, request_id)})

    @api.get("/history")
    def alias_history() -> Response:
        name = request.args.get("model") or ""
        model_id = allowed(name, "read")
        return jsonify({"model": name, "history": aliases.history(
            engine, model_id, name, request.args.get("alias"))})

    return api
