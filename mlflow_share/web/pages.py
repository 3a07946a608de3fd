"""The browser side: login (local and SSO), logout, the ``/share/`` pages and the
Permissions tab injected into MLflow's UI.

The pages are static HTML and scripts served by the plugin (no CDN: they work offline); they
read and change everything through mlflow-share's JSON API with the session cookie and the
CSRF header, so the interceptor decides and audits each of their calls like any client's.
Every response under ``/share/`` carries a strict Content-Security-Policy (scripts and styles
from this server only, no inline code, no framing).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, update_wrapper
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    jsonify,
    redirect,
    render_template_string,
    request,
    send_from_directory,
)
from mlflow.exceptions import MlflowException

from mlflow_share.http import bind_routes, current_principal
from mlflow_share.audit.log import AUDIT_CONTEXT, note_principal
from mlflow_share.auth.identity import Credentials
from mlflow_share.directory import Directory
from mlflow_share.errors import InvalidInput, PermissionDenied
from mlflow_share.policy.enforcer import PolicyEngine
from mlflow_share.web import error_page
from mlflow_share.web.error_page import CSP
from mlflow_share.web.oidc import OidcClient
from mlflow_share.web.sessions import (
    LOGIN_MINUTES,
    OIDC_COOKIE,
    SESSION_COOKIE,
    SessionStore,
    cookie_header,
    read_cookie,
)

_logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
LOGIN_CSRF_COOKIE = "mlflow_share_login"
PAGES = {"": "portal.html", "access": "access.html", "monitoring": "monitoring.html"}
# MLflow's UI keeps its own scripts; it may not be framed either.
UI_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
              "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}
TAB_TAGS = ('<link rel="stylesheet" href="/share/static/permissions-tab.css">'
            '<link rel="stylesheet" href="/share/static/ui-nav.css">'
            '<script src="/share/static/share.js" defer></script>'
            '<script src="/share/static/permissions-tab.js" defer></script>'
            '<script src="/share/static/ui-nav.js" defer></script>')

_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in · mlflow-share</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/static-files/favicon.ico">
<link rel="stylesheet" href="/share/static/share.css">
<script src="/share/static/login.js" defer></script></head>
<body class="login"><main class="card">
<h1>mlflow-share</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
{% if sso %}<p><a class="button primary" id="sso" href="/share/login/sso?next={{ next | urlencode }}">
Sign in with SSO</a></p><p class="muted">or with a local account:</p>{% endif %}
<form method="post" action="/share/login">
<input type="hidden" name="csrf_token" value="{{ csrf }}">
<input type="hidden" name="next" value="{{ next }}">
<label>User name <input name="username" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button class="primary" type="submit">Log in</button>
</form></main></body></html>
"""


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this server, never another origin."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in value):
        return "/"
    return value


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _with_session(response: Any, session_id: str, max_age: int) -> Response:
    # One cookie per response: MLflow 3.17's security-headers middleware keeps only one
    # Set-Cookie (it turns the headers into a dict). The login form's cookie expires by itself.
    response.headers["Set-Cookie"] = cookie_header(SESSION_COOKIE, session_id, max_age=max_age)
    return response


@dataclass(frozen=True)
class WebServices:
    """What the pages work with: the policy (passwords), the directory (logins), the session
    store, and the SSO client when single sign-on is configured."""

    policy: PolicyEngine
    directory: Directory
    sessions: SessionStore
    oidc: OidcClient | None


def login_page(sso: bool, error: str | None = None, status: int = 200) -> Response:
    """The login form, with a fresh login-CSRF token in the form and in a cookie."""
    token = secrets.token_urlsafe(32)
    html = render_template_string(_LOGIN_PAGE, error=error, sso=sso, csrf=token,
                                  next=safe_next(request.values.get("next")))
    response = Response(html, status=status, mimetype="text/html")
    response.headers.add("Set-Cookie", cookie_header(LOGIN_CSRF_COOKIE, token, max_age=900))
    return response


def start_session(sessions: SessionStore, user: str, via: str, login: Any,
                  next_path: str) -> Any:
    """Log ``user`` in through ``login`` (the directory's, which runs ``opened`` in its
    transaction) and go to ``next_path`` with the new session's cookie."""
    def opened(conn: Any) -> tuple[str, Any]:
        # Inside the login's transaction, once its checks passed: the event names the user.
        note_principal(user)
        return sessions.create(conn, user, via)

    session_id, _ = login(opened)
    return _with_session(redirect(safe_next(next_path), 303), session_id,
                         sessions.lifetime_ms // 1000)


def _note_claimed(username: str) -> None:
    """Name the user a refused or SSO login claimed in the request's audit event."""
    audit = AUDIT_CONTEXT.get()
    if audit is not None:
        audit.extra["claimed"] = username[:128]


def _sso(services: WebServices) -> OidcClient:
    if services.oidc is None:
        raise InvalidInput("Single sign-on is not configured on this server.")
    return services.oidc


def _callback_uri() -> str:
    """Where the identity provider sends the browser back (the same in both legs)."""
    return request.url_root.rstrip("/") + "/share/oidc/callback"


def login_form(services: WebServices) -> Response:
    return login_page(services.oidc is not None)


def login_submit(services: WebServices) -> Any:
    # Login CSRF: the form's token must match the cookie set with the form.
    supplied = request.form.get("csrf_token", "")
    expected = read_cookie(request.headers.get("Cookie"), LOGIN_CSRF_COOKIE) or ""
    if not supplied or not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise PermissionDenied("The login form expired or came from another site: "
                               "load the login page and try again.")
    username = request.form.get("username", "")[:128]
    password = request.form.get("password", "")
    services.policy.refresh()  # a password changed through another worker counts here too
    principal = services.policy.authenticate(Credentials("basic", username, password), 0) \
        if username and password else None
    if principal is None:
        _note_claimed(username)
        return login_page(services.oidc is not None, "Wrong user name or password.", 401)
    return start_session(services.sessions, principal.name, "password",
                         lambda then: services.directory.password_login(principal.name, then),
                         request.form.get("next", "/"))


def sso_start(services: WebServices) -> Any:
    url, state, nonce, verifier = _sso(services).authorization_url(_callback_uri())
    binding = secrets.token_urlsafe(32)
    services.sessions.begin_login(state, nonce, verifier, safe_next(request.args.get("next")),
                                  binding)
    response = redirect(url, 302)
    response.headers["Set-Cookie"] = cookie_header(
        OIDC_COOKIE, binding, max_age=LOGIN_MINUTES * 60, path="/share/oidc")
    return response


def _claims(oidc: OidcClient, code: str, verifier: str, nonce: str) -> dict[str, Any]:
    """The ID token's checked claims for ``code``: a refused token keeps its own message, any
    other failure of the provider is a refusal (logged, its details not shown)."""
    try:
        return oidc.complete(_callback_uri(), code, verifier, nonce)
    except MlflowException:  # a refused ID token: its own message
        raise
    except Exception as exc:  # noqa: BLE001 - the provider's error, as a refusal
        _logger.warning("OIDC code exchange failed: %s", exc)
        raise PermissionDenied("The identity provider did not complete the login.") from None


def sso_callback(services: WebServices) -> Any:
    oidc = _sso(services)
    if request.args.get("error"):
        raise PermissionDenied(f"The identity provider refused the login: "
                               f"{request.args.get('error', '')[:200]}.")
    state, code = request.args.get("state", ""), request.args.get("code", "")
    binding = read_cookie(request.headers.get("Cookie"), OIDC_COOKIE)
    pending = services.sessions.finish_login(state, binding) if state else None
    if pending is None:
        raise PermissionDenied("Unknown, used or expired login state, or a login started "
                               "in another browser: start the login again.")
    if not code:
        raise InvalidInput("The identity provider sent no authorization code.")
    nonce, verifier, next_path = pending
    identity = oidc.identity(_claims(oidc, code, verifier, nonce))
    _note_claimed(identity.username)
    return start_session(
        services.sessions, identity.username, "oidc",
        lambda then: services.directory.sso_login(identity.username, identity.subject,
                                                  identity.teams, identity.admin, then),
        next_path)


def logout(services: WebServices) -> Any:
    principal = current_principal()
    session_id = read_cookie(request.headers.get("Cookie"), SESSION_COOKIE)
    if session_id:
        services.directory.end_session(
            principal.name, lambda conn: services.sessions.end(conn, session_id))
    response = redirect("/share/login", 303)
    response.headers["Set-Cookie"] = cookie_header(SESSION_COOKIE, "", max_age=0)
    return response


def session_info(services: WebServices) -> Response:
    """Who is logged in and the session's CSRF token, for the pages' and the injected
    tab's scripts (same-origin reads only; never cached)."""
    principal = current_principal()  # the interceptor let only this origin's scripts in
    session_id = read_cookie(request.headers.get("Cookie"), SESSION_COOKIE)
    session = services.sessions.get(session_id) if session_id else None
    return jsonify({"user": principal.name, "is_admin": principal.is_admin,
                    "teams": principal.teams, "via": principal.via,
                    "csrf_token": session.csrf if session is not None else None,
                    "sso": services.oidc is not None})


def _send_page(name: str) -> Response:
    """The page ``name``, to an authenticated browser only (the interceptor sends others to
    log in; ``current_principal`` refuses one that reached here without it)."""
    current_principal()
    return send_from_directory(STATIC, PAGES[name], max_age=0)


def page(services: WebServices) -> Response:
    return _send_page("")


def page_access(services: WebServices) -> Response:
    return _send_page("access")


def page_monitoring(services: WebServices) -> Response:
    return _send_page("monitoring")


def static_file(services: WebServices, filename: str) -> Response:
    return send_from_directory(STATIC, filename, max_age=300)


# (rule, endpoint, view, methods): the endpoints are what the policy (``mlflow_share_web.*``
# in policy/routes.py) and the audit log name.
Route = tuple[str, str, Callable[..., Any], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/login", "login_form", login_form, ("GET",)),
    ("/login", "login_submit", login_submit, ("POST",)),
    ("/login/sso", "sso_start", sso_start, ("GET",)),
    ("/oidc/callback", "sso_callback", sso_callback, ("GET",)),
    ("/logout", "logout", logout, ("POST",)),
    ("/session", "session_info", session_info, ("GET",)),
    ("/", "page", page, ("GET",)),
    ("/access", "page_access", page_access, ("GET",)),
    ("/monitoring", "page_monitoring", page_monitoring, ("GET",)),
    ("/static/<path:filename>", "static_file", static_file, ("GET",)),
)


def _error(exc: MlflowException) -> Response:
    """An error as a page for a browser navigating here, else in MLflow's JSON envelope."""
    status = exc.get_http_status_code()
    if error_page.wants_page(request.method, request.path,
                             {k.lower(): v for k, v in request.headers.items()}):
        return Response(error_page.render(status, exc.message), status=status,
                        mimetype="text/html")
    return Response(exc.serialize_as_json(), status=status, mimetype="application/json")


def create_web_blueprint(policy: PolicyEngine, directory: Directory, sessions: SessionStore,
                         oidc: OidcClient | None) -> Blueprint:
    blueprint = Blueprint("mlflow_share_web", __name__, url_prefix="/share")
    blueprint.register_error_handler(MlflowException, _error)
    blueprint.after_request(_security_headers)
    services = WebServices(policy, directory, sessions, oidc)
    bind_routes(blueprint, ROUTES, services)
    return blueprint


def serve_with_tab(index: Path, original: Callable[[], Any]) -> Any:
    """MLflow's page with the Permissions tab's tags before ``</head>`` (unchanged without
    one), never framed nor cached; MLflow's own view while there is no built page."""
    if not index.is_file():
        return original()
    html = index.read_text(encoding="utf-8")
    if "</head>" in html:
        html = html.replace("</head>", TAB_TAGS + "</head>", 1)
    response = Response(html, mimetype="text/html")
    response.headers.update(UI_HEADERS)
    response.headers["Cache-Control"] = "no-store"
    return response


def install_ui_tab(flask_app: Flask) -> None:
    """Serve MLflow's ``index.html`` with the Permissions tab's script and style added.

    MLflow has no UI extension API: the two tags go before ``</head>`` of the page MLflow
    built, so an upgrade that changes the page still gets them (and without ``</head>`` the
    page is served unchanged, without the tab)."""
    from mlflow_share.mlflow_compat import replace_view

    static_folder = flask_app.static_folder
    if static_folder is None:
        _logger.warning("mlflow-share: MLflow's UI has no static folder; no Permissions tab.")
        return
    index = Path(static_folder) / "index.html"
    if index.is_file() and "</head>" not in index.read_text(encoding="utf-8"):
        _logger.warning("mlflow-share: MLflow's page has no </head>; no Permissions tab.")
    replace_view(flask_app, "serve", lambda original: update_wrapper(
        partial(serve_with_tab, index, original), serve_with_tab))
    # MLflow also serves its build folder as static files: not the page itself, which only
    # sessions get (with the tab and the headers above).
    for endpoint in ("serve_static_file", "static"):
        replace_view(flask_app, endpoint, _without_index)


def _without_index(view: Any) -> Any:
    from werkzeug.exceptions import NotFound as NotFoundHttp

    def guarded(*args: Any, **kwargs: Any) -> Any:
        path = str(kwargs.get("path") or kwargs.get("filename") or (args[0] if args else ""))
        if Path(path.replace("\\", "/")).name.lower() == "index.html":
            raise NotFoundHttp()
        return view(*args, **kwargs)

    guarded.__name__ = getattr(view, "__name__", "static")
    return guarded

