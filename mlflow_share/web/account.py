"""The account routes MLflow's own UI calls, answered as MLflow's basic-auth app answers them.

MLflow's UI asks ``GET /ajax-api/2.0/mlflow/users/current`` on every page: with an answer it
shows who is signed in, their account menu and a Logout entry; without one (404) it shows
none of it. mlflow-share answers it (and the routes that go with it) in basic-auth's format,
so MLflow's UI knows the caller whether they came with a browser session, a token or a
password:

- ``users/current``: ``{"user": {"id", "username", "is_admin"}, "is_basic_auth": true}``;
- ``users/update-password`` (PATCH): a user changes their own password with
  ``current_password``; an org admin sets anyone's;
- ``users/current/permissions`` (3.0): ``is_admin`` and no per-resource rows (mlflow-share's
  access is per team: ``/share/access`` shows it).

MLflow's Logout clears its cookies and asks ``users/current`` with made-up credentials
(``mlflow-logged-out-...``) so that the browser forgets the real ones: here that request
ends the browser session too, and the page it goes to next asks to log in again.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request

from mlflow_share.audit.log import AUDIT_CONTEXT, note_principal
from mlflow_share.auth.identity import Principal, parse_authorization
from mlflow_share.directory import Directory
from mlflow_share.errors import InvalidInput, PermissionDenied, Unauthenticated
from mlflow_share.http import bind_routes, current_principal, json_body, json_errors, string_field
from mlflow_share.policy.enforcer import PolicyEngine
from mlflow_share.web.sessions import (
    SESSION_COOKIE,
    SessionStore,
    cookie_header,
    from_this_origin,
    read_cookie,
)

LOGGED_OUT_PREFIX = "mlflow-logged-out-"  # the made-up user of MLflow UI's Logout


@dataclass(frozen=True)
class AccountServices:
    policy: PolicyEngine
    directory: Directory
    sessions: SessionStore


def _user_id(name: str) -> int:
    """A stable number for the user (MLflow's UI expects one; mlflow-share keys by name)."""
    return zlib.crc32(name.encode("utf-8"))


def _caller(services: AccountServices) -> Principal:
    """The caller by its credentials, else its browser session; 401 without either."""
    import time

    services.policy.refresh()  # a user disabled or a token revoked a moment ago is out
    credentials = parse_authorization(request.headers.get("Authorization"))
    if credentials is not None:
        principal = services.policy.authenticate(credentials, int(time.time() * 1000))
        if principal is None:
            audit = AUDIT_CONTEXT.get()
            if audit is not None and credentials.username:
                audit.extra["claimed"] = credentials.username[:128]
            raise Unauthenticated("Invalid credentials.")
        return principal
    _this_origin_only()
    session_id = read_cookie(request.headers.get("Cookie"), SESSION_COOKIE)
    session = services.sessions.get(session_id) if session_id else None
    if session is None or not services.policy.has_user(session.user):
        raise Unauthenticated("Log in first.")
    return services.policy.principal(session.user, via=f"session:{session.via}")


def current_user(services: AccountServices) -> Response:
    credentials = parse_authorization(request.headers.get("Authorization"))
    if credentials is not None and credentials.username.startswith(LOGGED_OUT_PREFIX):
        return _log_out(services)
    principal = _caller(services)
    note_principal(principal.name)
    return jsonify({"user": {"id": _user_id(principal.name), "username": principal.name,
                             "is_admin": principal.is_admin},
                    "is_basic_auth": True})


def _this_origin_only() -> None:
    headers = {name.lower(): value for name, value in request.headers.items()}
    if not from_this_origin(request.method, headers):
        raise PermissionDenied("A browser session is only for this server's own pages.")


def _log_out(services: AccountServices) -> Response:
    """MLflow UI's Logout: end the browser session, if there is one, and forget its cookie."""
    _this_origin_only()
    session_id = read_cookie(request.headers.get("Cookie"), SESSION_COOKIE)
    session = services.sessions.get(session_id) if session_id else None
    if session_id and session is not None:
        note_principal(session.user)
        services.directory.end_session(
            session.user, lambda conn: services.sessions.end(conn, session_id))
    response = jsonify({"error_code": "UNAUTHENTICATED", "message": "Logged out."})
    response.status_code = 401
    response.headers["Set-Cookie"] = cookie_header(SESSION_COOKIE, "", max_age=0)
    return response


def current_user_permissions(services: AccountServices) -> Response:
    principal = current_principal()
    return jsonify({"is_admin": principal.is_admin, "permissions": []})


def update_password(services: AccountServices) -> Response:
    """Your own password, with the current one; an org admin sets anyone's."""
    import time

    from mlflow_share.auth.identity import Credentials

    principal = current_principal()
    data = json_body()
    username, password = string_field(data, "username"), string_field(data, "password")
    assert username is not None and password is not None
    if username == principal.name:
        current = data.get("current_password")
        if not isinstance(current, str) or not current:
            raise InvalidInput("Current password is required when changing your own password.")
        if services.policy.authenticate(Credentials("basic", username, current),
                                        int(time.time() * 1000)) is None:
            raise PermissionDenied("The current password is not right.")
    elif not principal.is_admin:
        raise PermissionDenied("Only org admins set another user's password.")
    services.directory.set_password(username, password)
    return jsonify({})


Route = tuple[str, str, Callable[..., Any], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/api/2.0/mlflow/users/current", "current_user", current_user, ("GET",)),
    ("/ajax-api/2.0/mlflow/users/current", "ajax_current_user", current_user, ("GET",)),
    ("/api/2.0/mlflow/users/update-password", "update_password", update_password, ("PATCH",)),
    ("/ajax-api/2.0/mlflow/users/update-password", "ajax_update_password", update_password,
     ("PATCH",)),
    ("/api/3.0/mlflow/users/current/permissions", "current_user_permissions",
     current_user_permissions, ("GET",)),
    ("/ajax-api/3.0/mlflow/users/current/permissions", "ajax_current_user_permissions",
     current_user_permissions, ("GET",)),
)


def create_account_blueprint(policy: PolicyEngine, directory: Directory,
                             sessions: SessionStore) -> Blueprint:
    blueprint = json_errors(Blueprint("mlflow_share_account", __name__))
    return bind_routes(blueprint, ROUTES, AccountServices(policy, directory, sessions))
