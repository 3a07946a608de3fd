"""The admin JSON API under ``/api/2.0/mlflow-share/``: teams, users, tokens, grants, policy.

The interceptor has authenticated the caller before a view runs; each view decides who may
do what (org admins everything, team maintainers their team's grants, users their tokens).

Views are module-level functions of the services they use (``AdminServices``, given first),
so each can be read, and called in a test, without building the blueprint;
``create_blueprint`` only binds them to their URLs (``ROUTES``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request

from mlflow_share.audit.log import note_resource
from mlflow_share.auth.authorizer import Authorizer
from mlflow_share.auth.identity import Principal
from mlflow_share.auth.issuance import DEVICE, TOKEN_EXCHANGE, minted_by
from mlflow_share.directory import EXPERIMENT, MODEL, Directory
from mlflow_share.errors import (
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from mlflow_share.http import (
    PREFIX,
    bind_routes,
    current_principal,
    json_body,
    json_errors,
    require_admin,
    string_field,
)
from mlflow_share.policy import access
from mlflow_share.policy import io as policy_io
from mlflow_share.policy.enforcer import PolicyEngine


@dataclass(frozen=True)
class AdminServices:
    """What the admin views work with: the policy engine answers who owns what and decides
    (through ``Authorizer``), the directory stores teams, users, tokens and grants."""

    policy: PolicyEngine
    directory: Directory


MAX_NAME = 256  # MLflow's longest registered model name (its column)


# -- helpers -----------------------------------------------------------------------------------
def _resource_of(policy: PolicyEngine, data: dict[str, Any]) -> tuple[str, str, str]:
    """(kind, resource_id, label) from ``model`` (a name) or ``experiment_id``."""
    model, experiment_id = data.get("model"), data.get("experiment_id")
    if (model is None) == (experiment_id is None):
        raise InvalidInput("Name exactly one of 'model' or 'experiment_id'.")
    if model is not None:
        if not isinstance(model, str) or not model or len(model) > MAX_NAME:
            raise InvalidInput("'model' must be a registered model name.")
        model_id = policy.model_id(model)
        if model_id is None:
            raise NotFound(f"Registered model {model!r} has no owner team in mlflow-share.")
        note_resource(MODEL, model_id, model, policy.owner_of(MODEL, model_id))
        return MODEL, model_id, f"registered model {model!r}"
    if isinstance(experiment_id, bool) or not isinstance(experiment_id, (str, int)) \
            or not str(experiment_id).isascii() or not str(experiment_id).isdigit() \
            or len(str(experiment_id)) > 19:
        raise InvalidInput("'experiment_id' must be an experiment ID (digits).")
    experiment_id = str(experiment_id)
    owner = policy.owner_of(EXPERIMENT, experiment_id)
    if owner is None:
        raise NotFound(f"Experiment {experiment_id!r} has no owner team in mlflow-share.")
    note_resource(EXPERIMENT, experiment_id, None, owner)
    return EXPERIMENT, experiment_id, f"experiment {experiment_id!r}"


def _require_manage(policy: PolicyEngine, principal: Principal, kind: str, resource_id: str,
                    label: str) -> None:
    Authorizer(policy).check(principal, kind, resource_id, policy.owner_of(kind, resource_id),
                             "manage", label)


def _require_team_maintainer(principal: Principal, team: str) -> None:
    if not principal.is_admin and principal.teams.get(team) != "maintainer":
        raise PermissionDenied(f"Only org admins and maintainers of {team!r} manage its members.")


# -- identity, teams, users --------------------------------------------------------------------
def whoami(services: AdminServices) -> Response:
    principal = current_principal()
    return jsonify({"user": principal.name, "is_admin": principal.is_admin,
                    "teams": principal.teams, "authenticated_by": principal.via})


def create_team(services: AdminServices) -> Response:
    require_admin(current_principal())
    name = string_field(json_body(), "name")
    assert name is not None
    services.directory.create_team(name)
    return jsonify({"team": {"name": name}})


def list_teams(services: AdminServices) -> Response:
    principal = current_principal()
    teams = services.directory.list_teams()
    if not principal.is_admin:
        teams = [t for t in teams if t["name"] in principal.teams]
    return jsonify({"teams": teams})


def add_member(services: AdminServices) -> Response:
    principal = current_principal()
    data = json_body()
    team, user, role = (string_field(data, k) for k in ("team", "user", "role"))
    assert team and user and role
    _require_team_maintainer(principal, team)
    services.directory.add_member(team, user, role)
    return jsonify({"member": {"team": team, "user": user, "role": role}})


def remove_member(services: AdminServices) -> Response:
    principal = current_principal()
    data = json_body()
    team, user = string_field(data, "team"), string_field(data, "user")
    assert team and user
    _require_team_maintainer(principal, team)
    services.directory.remove_member(team, user)
    return jsonify({})


def create_user(services: AdminServices) -> Response:
    require_admin(current_principal())
    data = json_body()
    name = string_field(data, "name")
    assert name is not None
    service_account = bool(data.get("service_account", False))
    password = string_field(data, "password", required=False)
    services.directory.create_user(name, password, service_account=service_account,
                                   admin=bool(data.get("admin", False)))
    return jsonify({"user": {"name": name, "service_account": service_account}})


def list_users(services: AdminServices) -> Response:
    require_admin(current_principal())
    return jsonify({"users": services.directory.list_users()})


def _user_named(data: dict[str, Any]) -> str:
    name = string_field(data, "name")
    assert name is not None
    return name


def _set_disabled(services: AdminServices, disabled: bool) -> Response:
    principal = current_principal()
    require_admin(principal)
    name = _user_named(json_body())
    services.directory.set_disabled(name, disabled, by=principal.name)
    return jsonify({"user": {"name": name, "disabled": disabled}})


def disable_user(services: AdminServices) -> Response:
    return _set_disabled(services, True)


def enable_user(services: AdminServices) -> Response:
    return _set_disabled(services, False)


def delete_user(services: AdminServices) -> Response:
    principal = current_principal()
    require_admin(principal)
    services.directory.delete_user(_user_named(json_body()), by=principal.name)
    return jsonify({})


def reset_password(services: AdminServices) -> Response:
    """An org admin sets a user's password (their browser sessions end)."""
    require_admin(current_principal())
    data = json_body()
    password = string_field(data, "password")
    assert password is not None
    services.directory.set_password(_user_named(data), password)
    return jsonify({})


# -- tokens ------------------------------------------------------------------------------------
def create_token(services: AdminServices) -> Response:
    principal = current_principal()
    data = json_body()
    user = string_field(data, "user", required=False) or principal.name
    if user != principal.name and not principal.is_admin:
        raise PermissionDenied("Only org administrators create tokens for other users.")
    origin = minted_by(services.directory.engine, request.headers.get("Authorization")) \
        if principal.via == "token" else None
    # A workload's token lives minutes, a device login's as long as its approver allowed:
    # neither may outlive itself through a token it creates.
    if origin == TOKEN_EXCHANGE:
        raise PermissionDenied("A token from a workload identity exchange cannot create "
                               "tokens: exchange a new JWT when it expires.")
    if origin == DEVICE:
        raise PermissionDenied("A token from a device login cannot create tokens: log in "
                               "again (`mlflow-share login --device`) when it expires.")
    expires = data.get("expires_in_days")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))):
        raise InvalidInput("'expires_in_days' must be a number.")
    issued = services.directory.create_token(user, expires,
                                             string_field(data, "description", required=False))
    return jsonify({"token": issued.token, "token_id": issued.token_id, "user": issued.user,
                    "expires_at": issued.expires_at})


def list_tokens(services: AdminServices) -> Response:
    principal = current_principal()
    user = request.args.get("user")
    if principal.is_admin:
        return jsonify({"tokens": services.directory.list_tokens(user)})
    return jsonify({"tokens": services.directory.list_tokens(principal.name)})


def revoke_token(services: AdminServices) -> Response:
    principal = current_principal()
    token_id = string_field(json_body(), "token_id")
    assert token_id is not None
    services.directory.revoke_token(token_id, owner=None if principal.is_admin else principal.name)
    return jsonify({})


# -- grants and policy -------------------------------------------------------------------------
def grant(services: AdminServices) -> Response:
    principal = current_principal()
    data = json_body()
    kind, resource_id, label = _resource_of(services.policy, data)
    _require_manage(services.policy, principal, kind, resource_id, label)
    team, permission = string_field(data, "team"), string_field(data, "permission")
    assert team and permission
    created = services.directory.grant(kind, resource_id, team, permission, principal.name)
    return jsonify({"grant": {"team": team, "permission": permission, "created": created}})


def revoke(services: AdminServices) -> Response:
    principal = current_principal()
    data = json_body()
    kind, resource_id, label = _resource_of(services.policy, data)
    _require_manage(services.policy, principal, kind, resource_id, label)
    team, permission = string_field(data, "team"), string_field(data, "permission")
    assert team and permission
    removed = services.directory.revoke(kind, resource_id, team, permission)
    return jsonify({"revoked": removed})


def list_grants(services: AdminServices) -> Response:
    principal = current_principal()
    if request.args.get("model") is None and request.args.get("experiment_id") is None:
        require_admin(principal)
        return jsonify({"grants": services.directory.list_grants()})
    kind, resource_id, label = _resource_of(services.policy, dict(request.args))
    owner = services.policy.owner_of(kind, resource_id)
    Authorizer(services.policy).check(principal, kind, resource_id, owner, "read", label)
    grants = services.directory.list_grants(kind, resource_id)
    if not access.sees_every_team(services.policy, principal, kind, resource_id):
        grants = [g for g in grants if g["team"] in principal.teams]
    return jsonify({"owner_team": owner, "grants": grants})


def _version_arg() -> int | None:
    raw = request.args.get("version")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) < 10):
        raise InvalidInput("'version' must be a model version number.")
    return int(raw)


def effective(services: AdminServices) -> Response:
    """Who may do what on a model (a version) or experiment, and through what: for whoever
    may read it."""
    principal = current_principal()
    kind, resource_id, label = _resource_of(services.policy, dict(request.args))
    owner = services.policy.owner_of(kind, resource_id)
    Authorizer(services.policy).check(principal, kind, resource_id, owner, "read", label)
    found = access.effective_access(services.policy, kind, resource_id, _version_arg())
    if not access.sees_every_team(services.policy, principal, kind, resource_id):
        found.routes = [r for r in found.routes
                        if r.via == "owner" or r.team in principal.teams]
        found.admins = []
    return jsonify({**found.to_dict(), "name": request.args.get("model")})


def explain_access(services: AdminServices) -> Response:
    """Why ``user`` may or may not ``action`` it: for org admins, the resource's managers and
    the user themselves."""
    principal = current_principal()
    args = dict(request.args)
    user = string_field(args, "user")
    action = string_field(args, "action", required=False) or "read"
    assert user is not None
    if action not in access.ACTIONS:
        raise InvalidInput(f"'action' must be one of {', '.join(access.ACTIONS)}.")
    kind, resource_id, label = _resource_of(services.policy, args)
    if user != principal.name:
        _require_manage(services.policy, principal, kind, resource_id, label)
    readable = Authorizer(services.policy).may(principal, kind, resource_id, "read")
    return jsonify(access.explain(services.policy, user, kind, resource_id, action,
                                  _version_arg(), name_teams=readable))


def export_policy(services: AdminServices) -> Response:
    require_admin(current_principal())
    return jsonify({"policy": policy_io.export_policy(services.directory)})


def import_policy(services: AdminServices) -> Response:
    principal = current_principal()
    require_admin(principal)
    data = json_body()
    text = string_field(data, "policy")
    assert text is not None
    changes = policy_io.import_policy(services.directory, text, by=principal.name,
                                      dry_run=bool(data.get("dry_run", False)))
    return jsonify({"changes": changes, "applied": not data.get("dry_run", False)})


# (rule, endpoint, view, methods): the endpoint is what the policy (``mlflow_share_api.whoami``
# in policy/routes.py) and the audit log name (``flask:mlflow_share_api.<endpoint>``), as they
# did when the views were closures.
Route = tuple[str, str, Callable[[AdminServices], Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/whoami", "whoami", whoami, ("GET",)),
    ("/teams", "create_team", create_team, ("POST",)),
    ("/teams", "list_teams", list_teams, ("GET",)),
    ("/teams/members", "add_member", add_member, ("POST",)),
    ("/teams/members", "remove_member", remove_member, ("DELETE",)),
    ("/users", "create_user", create_user, ("POST",)),
    ("/users", "list_users", list_users, ("GET",)),
    ("/users", "delete_user", delete_user, ("DELETE",)),
    ("/users/disable", "disable_user", disable_user, ("POST",)),
    ("/users/enable", "enable_user", enable_user, ("POST",)),
    ("/users/password", "reset_password", reset_password, ("POST",)),
    ("/tokens", "create_token", create_token, ("POST",)),
    ("/tokens", "list_tokens", list_tokens, ("GET",)),
    ("/tokens", "revoke_token", revoke_token, ("DELETE",)),
    ("/grants", "grant", grant, ("POST",)),
    ("/grants", "revoke", revoke, ("DELETE",)),
    ("/grants", "list_grants", list_grants, ("GET",)),
    ("/access", "effective_access", effective, ("GET",)),
    ("/access/explain", "explain_access", explain_access, ("GET",)),
    ("/policy", "export_policy", export_policy, ("GET",)),
    ("/policy", "import_policy", import_policy, ("POST",)),
)


def create_blueprint(policy: PolicyEngine, directory: Directory) -> Blueprint:
    """The admin API: every view of ``ROUTES``, bound to ``policy`` and ``directory``."""
    api = json_errors(Blueprint("mlflow_share_api", __name__, url_prefix=PREFIX))
    services = AdminServices(policy, directory)
    bind_routes(api, ROUTES, services)
    return api
