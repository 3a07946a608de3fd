"""``create_app``: the single ``mlflow.app`` factory; composes every part of mlflow-share.

MLflow calls it in each server worker. Under uvicorn it returns an ASGI app (MLflow's FastAPI
app wrapped by the decision point); under gunicorn or waitress it returns the Flask app with
the decision point around its WSGI callable. Either way every request meets one interceptor.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from mlflow_share import config, db
from mlflow_share.directory import MODEL, Directory, generate_password
from mlflow_share.errors import Conflict

_logger = logging.getLogger(__name__)


def bootstrap_admin(directory: Directory) -> str | None:
    """Create the first org admin if there is none; returns a generated password, if any.

    The password comes from ``MLFLOW_SHARE_ADMIN_PASSWORD``; without it one is generated and
    returned to be printed once. Concurrent workers race on the user's primary key: exactly
    one wins, so exactly one credential ever exists and is shown.
    """
    if directory.has_admin():
        return None
    username = config.options().admin_username or "admin"
    password = config.options().admin_password or None
    generated = None if password else generate_password()
    try:
        directory.create_user(username, password or generated, admin=True)
    except Conflict:  # another worker created it first
        return None
    return generated


def announce_generated_admin(username: str, password: str) -> None:
    print(
        "\n" + "=" * 72 + "\n"
        f"mlflow-share created the org admin {username!r} with this one-time password:\n\n"
        f"    {password}\n\n"
        "It is shown only now. Log in, create an API token (`mlflow-share token create "
        f"{username}`) and change it, or set {config.ADMIN_PASSWORD_ENV} before the first start.\n"
        + "=" * 72 + "\n",
        file=sys.stderr,
        flush=True,
    )


def enable_tcp_nodelay() -> None:
    """Set TCP_NODELAY on every accepted TCP socket, also under ``uvicorn --workers N > 1``.

    With several workers uvicorn binds the listening socket as ``socket.socket(family)``
    (protocol 0); accepted sockets inherit protocol 0 and asyncio's ``_set_nodelay`` skips
    them (it requires ``proto == IPPROTO_TCP``). h11 writes a response's head and body in two
    sends, so Nagle's algorithm waits for the client's delayed ACK: ~40 ms per request on
    every kept-alive connection, which is how the MLflow client talks. Runs in each worker
    before it accepts connections.
    """
    import asyncio.base_events as base_events
    import socket

    original = getattr(base_events, "_set_nodelay", None)
    if original is None or getattr(original, "_mlflow_share", False):
        return

    def _set_nodelay(sock: socket.socket) -> None:
        original(sock)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    _set_nodelay._mlflow_share = True  # type: ignore[attr-defined]
    base_events._set_nodelay = _set_nodelay  # type: ignore[attr-defined]


def _option(argv: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``argv`` (the last one given)."""
    found = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(name + "="):
            found = arg[len(name) + 1:]
    return found


def preflight(argv: list[str], environ: Any) -> str | None:
    """What is wrong with the settings of ``mlflow server --app-name mlflow-share ARGV``
    (None when its workers can start): the same checks as ``mlflow-share server``'s."""
    from mlflow.exceptions import MlflowException

    try:
        options = config.parse_options(environ)
        from mlflow_share.artifacts.oms import SigningKeys

        SigningKeys.from_options(options)  # a signing key that cannot sign stops it here
        uri = _option(argv, "--backend-store-uri") or environ.get("MLFLOW_BACKEND_STORE_URI")
        if uri:
            config.checked_backend_uri(uri)
        if options.gateway:
            config.checked_gateway_destination(
                _option(argv, "--artifacts-destination")
                or environ.get("MLFLOW_ARTIFACTS_DESTINATION") or "./mlartifacts")
    except MlflowException as exc:
        return exc.message
    return None


def _refuse_bad_settings_before_workers() -> None:
    """``mlflow server --app-name mlflow-share`` imports this module once in its own process,
    before it starts any worker (to see that ``create_app`` is a factory). There, settings the
    workers would refuse are refused once, in one line and with exit status 1, instead of a
    traceback in every worker and a crash loop. Workers (MLflow passes them the store in
    ``_MLFLOW_SERVER_FILE_STORE``) and other importers are left alone."""
    argv = sys.argv
    if os.environ.get("_MLFLOW_SERVER_FILE_STORE") is not None or len(argv) < 2:
        return
    if os.path.basename(os.path.dirname(argv[0])) != "mlflow" and os.path.basename(argv[0]) != "mlflow":
        return  # not the mlflow CLI (`mlflow ...` or `python -m mlflow ...`)
    if "server" not in argv[1:] or "mlflow-share" not in argv:
        return
    problem = preflight(argv, os.environ)
    if problem is not None:
        print(f"mlflow-share: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(1)


_refuse_bad_settings_before_workers()


def create_app(flask_app: Any = None) -> Any:
    """Build the mlflow-share server app around MLflow's own Flask app."""
    from mlflow.server import app as mlflow_flask_app

    from mlflow_share.admin.api import create_blueprint
    from mlflow_share.artifacts import serving
    from mlflow_share.artifacts.api import create_artifacts_blueprint
    from mlflow_share.artifacts.signing_api import create_signing_blueprint
    from mlflow_share.audit.api import create_audit_blueprint
    from mlflow_share.audit.log import AuditAppender
    from mlflow_share.stores import install_audited_stores
    from mlflow_share.auth.authorizer import Authorizer
    from mlflow_share.auth.contract import Contract
    from mlflow_share.auth.graphql import make_graphql_view
    from mlflow_share.auth.interceptor import Interceptor
    from mlflow_share.auth.middleware import AuditGate, ShareASGIMiddleware, ShareWSGIMiddleware
    from mlflow_share import mlflow_compat
    from mlflow_share.mlflow_compat import replace_view
    from mlflow_share.auth.resolvers import MlflowLookups
    from mlflow_share.gateway.api import create_usage_blueprint
    from mlflow_share.governance import notifications
    from mlflow_share.governance.api import create_alias_blueprint
    from mlflow_share.governance.sharing_api import create_sharing_blueprint
    from mlflow_share.health import create_health_blueprint
    from mlflow_share.scim.admin import create_scim_admin_blueprint
    from mlflow_share.scim.api import create_scim_blueprint
    from mlflow_share.policy.enforcer import PolicyEngine
    from mlflow_share.policy.routes import RouteTable
    from mlflow_share.web.oidc import OidcClient, OidcSettings
    from mlflow_share.web.account import create_account_blueprint
    from mlflow_share.admin.trust_api import create_trust_blueprint
    from mlflow_share.auth.device import DeviceGrants
    from mlflow_share.auth.trust import TrustRules
    from mlflow_share.auth.workload import JwksCache, WorkloadIdentity
    from mlflow_share.oauth_api import create_oauth_blueprint
    from mlflow_share.web.device import create_device_blueprint
    from mlflow_share.web.pages import create_web_blueprint, install_ui_tab
    from mlflow_share.web.sessions import SessionStore

    settings = config.Settings.from_env()
    flask_app = flask_app or mlflow_flask_app

    mlflow_compat.check()  # an MLflow whose internals moved: refuse to start, say what moved
    install_audited_stores()
    # Build MLflow's stores now: this runs MLflow's migrations, then creates mlflow-share's
    # tables and the audit triggers (db.ensure_schema), before anything reads them.
    mlflow_compat.private("mlflow.server.handlers", "_get_tracking_store")()
    mlflow_compat.private("mlflow.server.handlers", "_get_model_registry_store")()

    engine = db.get_engine(settings.backend_store_uri)
    directory = Directory(engine)
    generated = bootstrap_admin(directory)
    if generated is not None:
        announce_generated_admin(config.options().admin_username or "admin", generated)

    policy = PolicyEngine(engine, settings.password_cache_seconds)
    authorizer = Authorizer(policy)
    notifications.install(engine, lambda user, model_id: authorizer.may(
        policy.principal(user), MODEL, model_id, "read"))
    lookups = MlflowLookups(engine)

    gate = AuditGate(AuditAppender(engine))
    sessions = SessionStore(engine)
    oidc_settings = OidcSettings.from_env()
    oidc = OidcClient(oidc_settings) if oidc_settings is not None else None
    if "mlflow_share_api" not in flask_app.blueprints:
        flask_app.register_blueprint(create_blueprint(policy, directory))
        flask_app.register_blueprint(create_audit_blueprint(policy, engine))
        flask_app.register_blueprint(create_artifacts_blueprint(policy, engine))
        flask_app.register_blueprint(create_signing_blueprint(engine))
        flask_app.register_blueprint(create_usage_blueprint(policy, engine))
        flask_app.register_blueprint(create_alias_blueprint(policy, engine))
        flask_app.register_blueprint(create_sharing_blueprint(policy, engine))
        flask_app.register_blueprint(create_health_blueprint(policy, gate.appender))
        flask_app.register_blueprint(create_web_blueprint(policy, directory, sessions, oidc))
        flask_app.register_blueprint(create_account_blueprint(policy, directory, sessions))
        flask_app.register_blueprint(create_scim_blueprint(policy, directory))  # /scim/v2/
        flask_app.register_blueprint(create_scim_admin_blueprint(directory))
        # Identity for organizations: device logins (RFC 8628), workload identity (RFC 8693).
        options = config.options()
        devices = DeviceGrants(engine, code_minutes=options.device_code_minutes,
                               poll_seconds=options.device_poll_seconds,
                               max_days=options.device_token_max_days)
        trust = TrustRules(engine)
        workloads = WorkloadIdentity(trust, JwksCache(), engine, options.workload_token_minutes)
        flask_app.register_blueprint(create_oauth_blueprint(devices, workloads))
        flask_app.register_blueprint(create_device_blueprint(devices))
        flask_app.register_blueprint(create_trust_blueprint(trust))
        install_ui_tab(flask_app)
        flask_app.after_request(gate.flask_after_request)

    wsgi = settings.server_kind in ("gunicorn", "waitress")
    fastapi_app = None
    if not wsgi:
        from mlflow.server.fastapi_app import create_fastapi_app

        enable_tcp_nodelay()
        fastapi_app = create_fastapi_app(flask_app)
    serving.install(flask_app, fastapi_app, gate.appender)
    interceptor = Interceptor(RouteTable(flask_app, fastapi_app), policy, directory, lookups,
                              sessions, Contract(flask_app))
    replace_view(flask_app, "_graphql", lambda _original: make_graphql_view(interceptor))
    if fastapi_app is None:
        flask_app.wsgi_app = ShareWSGIMiddleware(flask_app.wsgi_app, interceptor, gate)
        return flask_app
    server = ShareASGIMiddleware(fastapi_app, interceptor, gate)
    if config.options().gateway:
        return with_gateway(server, settings.backend_store_uri, policy, gate.appender)
    return server


# The gateway's own paths that MLflow's server does not have (its /health and /version are
# MLflow's): the same answers as a standalone gateway's.
GATEWAY_OWN_PATHS = frozenset({"/ping", "/metrics"})


def with_gateway(server: Any, backend_store_uri: str, policy: Any, appender: Any) -> Any:
    """``/v1/models/...``, ``/v1/deployments/...``, ``/ping`` and ``/metrics`` to the
    inference gateway, in each worker; everything else to the server. The gateway authenticates and decides its calls
    itself (``execute`` on the model) and audits loads and usage, with the worker's own
    policy engine and audit appender."""
    from mlflow.server.constants import ARTIFACTS_DESTINATION_ENV_VAR

    from mlflow_share.errors import InvalidInput
    from mlflow_share.gateway.app import create_gateway_app

    destination = os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR, "")
    if not destination.startswith("checksum+"):
        raise InvalidInput("The gateway serves verified versions only: give the server a "
                           "checksum+ --artifacts-destination.")
    gateway = create_gateway_app(backend_store_uri, destination, policy=policy,
                                 appender=appender)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(("/v1/models", "/v1/deployments")) or path in GATEWAY_OWN_PATHS:
            await gateway(scope, receive, send)
        else:
            await server(scope, receive, send)

    return app
