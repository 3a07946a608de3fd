"""The admin JSON API under ``/api/2.0/mlflow-share/``: teams, users, tokens, grants, policy.

The interceptor has authenticated the caller before a view runs; each view decides who may
do what (org admins everything, team maintainers their team's grants, users their tokens).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from mlflow_share.audit.log import note_resource
from mlflow_share.auth.authorizer import Authorizer
from mlflow_share.auth.identity import Principal
from mlflow_share.directory import EXPERIMENT, MODEL, Directory
from mlflow_share.errors import (
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from mlflow_share.http import (
    PREFIX,
    current_principal,
    json_body,
    json_errors,
    require_admin,
    string_field,
)
from mlflow_share.policy import io as policy_io
from mlflow_share.policy.enforcer import PolicyEngine


def create_blueprint(policy: PolicyEngine, directory: Directory) -> Blueprint:
    api = json_errors(Blueprint("mlflow_share_api", __name__, url_prefix=PREFIX))

    def resource_of(data: dict[str, Any]) -> tuple[str, str, str]:
        """(kind, resource_id, label) from ``model`` (a name) or ``experiment_id``."""
        model, experiment_id = data.get("model"), data.get("experiment_id")
        if (model is None) == (experiment_id is None):
            raise InvalidInput("Name exactly one of 'model' or 'experiment_id'.")
        if model is not None:
            if not isinstance(model, str):
                raise InvalidInput("'model' must be a registered model name.")
            model_id = policy.model_id(model)
            if model_id is None:
                raise NotFound(f"Registered model {model!r} has no owner team in mlflow-share.")
            note_resource(MODEL, model_id, model, policy.owner_of(MODEL, model_id))
            return MODEL, model_id, f"registered model {model!r}"
        experiment_id = str(experiment_id)
        owner = policy.owner_of(EXPERIMENT, experiment_id)
        if owner is None:
            raise NotFound(f"Experiment {experiment_id!r} has no owner team in mlflow-share.")
        note_resource(EXPERIMENT, experiment_id, None, owner)
        return EXPERIMENT, experiment_id, f"experiment {experiment_id!r}"

    def require_manage(principal: Principal, kind: str, resource_id: str, label: str) -> None:
        Authorizer(policy).check(principal, kind, resource_id, policy.owner_of(kind, resource_id),
                                 "manage", label)

    @api.get("/whoami")
    def whoami() -> Response:
        principal = current_principal()
        return jsonify({"user": principal.name, "is_admin": principal.is_admin,
                        "teams": principal.teams, "authenticated_by": principal.via})

    @api.post("/teams")
    def create_team() -> Response:
        require_admin(current_principal())
        name = string_field(json_body(), "name")
        assert name is not None
        directory.create_team(name)
        return jsonify({"team": {"name": name}})

    @api.get("/teams")
    def list_teams() -> Response:
        principal = current_principal()
        teams = directory.list_teams()
        if not principal.is_admin:
            teams = [t for t in teams if t["name"] in principal.teams]
        return jsonify({"teams": teams})

    @api.post("/teams/members")
    def add_member() -> Response:
        principal = current_principal()
        data = json_body()
        team, user, role = (string_field(data, k) for k in ("team", "user", "role"))
        assert team and user and role
        if not principal.is_admin and principal.teams.get(team) != "maintainer":
            raise PermissionDenied(f"Only org admins and maintainers of {team!r} manage its members.")
        directory.add_member(team, user, role)
        return jsonify({"member": {"team": team, "user": user, "role": role}})

    @api.delete("/teams/members")
    def remove_member() -> Response:
        principal = current_principal()
        data = json_body()
        team, user = string_field(data, "team"), string_field(data, "user")
        assert team and user
        if not principal.is_admin and principal.teams.get(team) != "maintainer":
            raise PermissionDenied(f"Only org admins and maintainers of {team!r} manage its members.")
        directory.remove_member(team, user)
        return jsonify({})

    @api.post("/users")
    def create_user() -> Response:
        require_admin(current_principal())
        data = json_body()
        name = string_field(data, "name")
        assert name is not None
        service_account = bool(data.get("service_account", False))
        password = string_field(data, "password", required=False)
        directory.create_user(name, password, service_account=service_account,
                              admin=bool(data.get("admin", False)))
        return jsonify({"user": {"name": name, "service_account": service_account}})

    @api.get("/users")
    def list_users() -> Response:
        require_admin(current_principal())
        return jsonify({"users": directory.list_users()})

    @api.post("/tokens")
    def create_token() -> Response:
        principal = current_principal()
        data = json_body()
        user = string_field(data, "user", required=False) or principal.name
        if user != principal.name and not principal.is_admin:
            raise PermissionDenied("Only org administrators create tokens for other users.")
        expires = data.get("expires_in_days")
        if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))):
            raise InvalidInput("'expires_in_days' must be a number.")
        issued = directory.create_token(user, expires, string_field(data, "description", required=False))
        return jsonify({"token": issued.token, "token_id": issued.token_id, "user": issued.user,
                        "expires_at": issued.expires_at})

    @api.get("/tokens")
    def list_tokens() -> Response:
        principal = current_principal()
        user = request.args.get("user")
        if principal.is_admin:
            return jsonify({"tokens": directory.list_tokens(user)})
        return jsonify({"tokens": directory.list_tokens(principal.name)})

    @api.delete("/tokens")
    def revoke_token() -> Response:
        principal = current_principal()
        token_id = string_field(json_body(), "token_id")
        assert token_id is not None
        directory.revoke_token(token_id, owner=None if principal.is_admin else principal.name)
        return jsonify({})

    @api.post("/grants")
    def grant() -> Response:
        principal = current_principal()
        data = json_body()
        kind, resource_id, label = resource_of(data)
        require_manage(principal, kind, resource_id, label)
        team, permission = string_field(data, "team"), string_field(data, "permission")
        assert team and permission
        created = directory.grant(kind, resource_id, team, permission, principal.name)
        return jsonify({"grant": {"team": team, "permission": permission, "created": created}})

    @api.delete("/grants")
    def revoke() -> Response:
        principal = current_principal()
        data = json_body()
        kind, resource_id, label = resource_of(data)
        require_manage(principal, kind, resource_id, label)
        team, permission = string_field(data, "team"), string_field(data, "permission")
        assert team and permission
        removed = directory.revoke(kind, resource_id, team, permission)
        return jsonify({"revoked": removed})

    @api.get("/grants")
    def list_grants() -> Response:
        principal = current_principal()
        if request.args.get("model") is None and request.args.get("experiment_id") is None:
            require_admin(principal)
            return jsonify({"grants": directory.list_grants()})
        kind, resource_id, label = resource_of(dict(request.args))
        owner = policy.owner_of(kind, resource_id)
        Authorizer(policy).check(principal, kind, resource_id, owner, "read", label)
        return jsonify({"owner_team": owner, "grants": directory.list_grants(kind, resource_id)})

    @api.get("/policy")
    def export_policy() -> Response:
        require_admin(current_principal())
        return jsonify({"policy": policy_io.export_policy(directory)})

    @api.post("/policy")
    def import_policy() -> Response:
        principal = current_principal()
        require_admin(principal)
        data = json_body()
        text = string_field(data, "policy")
        assert text is not None
        changes = policy_io.import_policy(directory, text, by=principal.name,
                                          dry_run=bool(data.get("dry_run", False)))
        return jsonify({"changes": changes, "applied": not data.get("dry_run", False)})

    return api
