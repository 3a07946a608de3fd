"""Provisioning tokens for org admins, under ``/api/2.0/mlflow-share/scim/tokens``: create
(the token is in the answer, once), list (ids, never values), revoke. The route table lets
only org admins in; each view checks again."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from mlflow_share.directory import Directory
from mlflow_share.errors import InvalidInput
from mlflow_share.http import (
    PREFIX,
    Route,
    bind_routes,
    current_principal,
    json_body,
    json_errors,
    require_admin,
    string_field,
)
from mlflow_share.scim.store import ScimStore


def create_token(store: ScimStore) -> Response:
    principal = current_principal()
    require_admin(principal)
    data = json_body() if request.content_length else {}
    expires = data.get("expires_in_days")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))):
        raise InvalidInput("'expires_in_days' must be a number of days.")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidInput("'description' must be a string.")
    issued = store.create_token(by=principal.name, description=description,
                                expires_in_days=expires)
    return jsonify({"token_id": issued.token_id, "token": issued.token,
                    "expires_at": issued.expires_at})


def list_tokens(store: ScimStore) -> Response:
    require_admin(current_principal())
    return jsonify({"tokens": store.list_tokens()})


def revoke_token(store: ScimStore) -> Response:
    require_admin(current_principal())
    token_id = string_field(json_body(), "token_id")
    assert token_id is not None
    store.revoke_token(token_id)
    return jsonify({})


ROUTES: tuple[Route, ...] = (
    ("/scim/tokens", "create_scim_token", create_token, ("POST",)),
    ("/scim/tokens", "list_scim_tokens", list_tokens, ("GET",)),
    ("/scim/tokens", "revoke_scim_token", revoke_token, ("DELETE",)),
)


def create_scim_admin_blueprint(directory: Directory) -> Blueprint:
    blueprint = json_errors(Blueprint("mlflow_share_scim_admin", __name__, url_prefix=PREFIX))
    return bind_routes(blueprint, ROUTES, ScimStore(directory.engine, directory))
