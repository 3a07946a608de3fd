"""mlflow-share's OAuth 2.0 endpoints under ``/api/2.0/mlflow-share/oauth/``.

- ``POST device_authorization`` (RFC 8628 section 3.1): a device asks to log in; it gets a
  device code to poll with and a user code its user confirms at ``/share/device``.
- ``POST token`` (RFC 6749 section 3.2) with ``grant_type`` either
  ``urn:ietf:params:oauth:grant-type:device_code`` (the device polls; RFC 8628 section 3.4) or
  ``urn:ietf:params:oauth:grant-type:token-exchange`` (a workload's JWT for a service
  account's token; RFC 8693).

Callers have no credentials yet, so the decision point lets them through (``LOGIN`` rule) and
these views check what they receive. Bodies are form-encoded, parameters appear once, answers
are never cached, and errors come in OAuth's form (``error``, ``error_description``), not in
MLflow's envelope. Every call is an audit event naming the device login or the workload's
issuer and subject, and the user or service account once it is known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request
from mlflow.exceptions import MlflowException
from werkzeug.exceptions import HTTPException

from mlflow_share.audit.log import AUDIT_CONTEXT
from mlflow_share.auth import oauth
from mlflow_share.auth.device import DeviceGrants, display_code
from mlflow_share.auth.oauth import OAuthError
from mlflow_share.auth.workload import ExchangeRefused, WorkloadIdentity
from mlflow_share.errors import Unavailable
from mlflow_share.http import PREFIX, bind_routes

_logger = logging.getLogger(__name__)
DEVICE_PAGE = "/share/device"
CLIENT_NAME = "client_name"  # not in RFC 8628: how the device describes itself to its user
LIFETIME = "expires_in_days"  # not in RFC 8628: the token lifetime the device asks for
_DENIALS = frozenset({oauth.ACCESS_DENIED, oauth.INVALID_GRANT})


@dataclass(frozen=True)
class OAuthServices:
    """The device logins and the workload identity exchange."""

    devices: DeviceGrants
    workloads: WorkloadIdentity


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 section 5.1: tokens are secrets
    response.headers["Pragma"] = "no-cache"
    return response


def _form() -> dict[str, str]:
    """The form-encoded body's parameters, each at most once (RFC 6749 section 3.2)."""
    if request.mimetype != "application/x-www-form-urlencoded":
        raise OAuthError(oauth.INVALID_REQUEST, "Send the parameters form-encoded "
                         "(Content-Type: application/x-www-form-urlencoded).")
    form = request.form
    repeated = sorted(key for key, values in form.lists() if len(values) > 1)
    if repeated:
        raise OAuthError(oauth.INVALID_REQUEST, f"Parameters sent more than once: "
                         f"{', '.join(repeated)[:200]}.")
    return {key: value for key, value in form.items()}


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise OAuthError(oauth.INVALID_REQUEST, f"The {name} parameter is required.")
    return value


def _days(raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        days = float(raw)
    except ValueError:
        raise OAuthError(oauth.INVALID_REQUEST, f"{LIFETIME} must be a number.") from None
    if days != days or days in (float("inf"), float("-inf")):
        raise OAuthError(oauth.INVALID_REQUEST, f"{LIFETIME} must be a finite number.")
    return days


def device_authorization(services: OAuthServices) -> Response:
    form = _form()
    started = services.devices.start(form.get("client_id", ""), form.get(CLIENT_NAME),
                                     _days(form.get(LIFETIME)), request.remote_addr)
    page = request.url_root.rstrip("/") + DEVICE_PAGE
    return _no_store(jsonify({
        "device_code": started.device_code,
        "user_code": display_code(started.user_code),
        "verification_uri": page,
        "verification_uri_complete": f"{page}?user_code={display_code(started.user_code)}",
        "expires_in": started.expires_in,
        "interval": started.interval,
    }))


def _token_response(token: str, expires_at: int | None, extra: dict[str, Any]) -> Response:
    expires_in = max(int((expires_at or 0) / 1000 - time.time()), 0) if expires_at else None
    body = {"access_token": token, "token_type": "Bearer", **extra}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return _no_store(jsonify(body))


def _device_token(services: OAuthServices, form: dict[str, str]) -> Response:
    issued = services.devices.redeem(_required(form, "device_code"), _required(form, "client_id"))
    return _token_response(issued.token, issued.expires_at, {
        "token_id": issued.token_id, "user": issued.user, "expires_at": issued.expires_at})


def _exchange(services: OAuthServices, form: dict[str, str]) -> Response:
    subject_token = _required(form, "subject_token")
    token_type = _required(form, "subject_token_type")
    if token_type not in (oauth.JWT_TOKEN_TYPE, oauth.ID_TOKEN_TYPE):
        raise OAuthError(oauth.INVALID_REQUEST, "subject_token_type must be "
                         f"{oauth.JWT_TOKEN_TYPE} or {oauth.ID_TOKEN_TYPE}.")
    if form.get("requested_token_type", oauth.ACCESS_TOKEN_TYPE) != oauth.ACCESS_TOKEN_TYPE:
        raise OAuthError(oauth.INVALID_REQUEST, "Only access tokens are issued "
                         f"(requested_token_type {oauth.ACCESS_TOKEN_TYPE}).")
    if form.get("actor_token") or form.get("actor_token_type"):
        raise OAuthError(oauth.INVALID_REQUEST, "Delegation (actor_token) is not supported.")
    issued, verified = services.workloads.exchange(subject_token)
    return _token_response(issued.token, issued.expires_at, {
        "issued_token_type": oauth.ACCESS_TOKEN_TYPE, "token_id": issued.token_id,
        "service_account": verified.rule.service_account, "expires_at": issued.expires_at})


_GRANTS: dict[str, Callable[[OAuthServices, dict[str, str]], Response]] = {
    oauth.DEVICE_CODE_GRANT: _device_token,
    oauth.TOKEN_EXCHANGE_GRANT: _exchange,
}


def token(services: OAuthServices) -> Response:
    form = _form()
    grant_type = _required(form, "grant_type")
    audit = AUDIT_CONTEXT.get()
    if audit is not None:
        audit.extra["grant_type"] = grant_type[:100]
    handler = _GRANTS.get(grant_type)
    if handler is None:
        raise OAuthError(oauth.UNSUPPORTED_GRANT_TYPE, "grant_type must be "
                         f"{oauth.DEVICE_CODE_GRANT} or {oauth.TOKEN_EXCHANGE_GRANT}.")
    return handler(services, form)


def _oauth_error(exc: OAuthError) -> Response:
    audit = AUDIT_CONTEXT.get()
    if audit is not None:
        refused = isinstance(exc, ExchangeRefused) or exc.error in _DENIALS
        audit.decision = "deny" if refused else audit.decision
        reason = exc.reason if isinstance(exc, ExchangeRefused) else exc.description
        audit.reason = f"{exc.error}: {reason}"[:1000]
    response = jsonify(exc.to_dict())
    response.status_code = exc.status
    return _no_store(response)


def _mlflow_error(exc: MlflowException) -> Response:
    """mlflow-share's own errors met on the way (the audit log unavailable), in OAuth's form."""
    if isinstance(exc, Unavailable):
        return _oauth_error(OAuthError(oauth.TEMPORARILY_UNAVAILABLE, exc.message, status=503))
    _logger.error("mlflow-share OAuth endpoint failed: %s", exc.message)
    return _oauth_error(OAuthError(oauth.SERVER_ERROR, "The request failed on the server.",
                                   status=500))


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 400
    error = oauth.SERVER_ERROR if status >= 500 else oauth.INVALID_REQUEST
    return _oauth_error(OAuthError(error, exc.description or exc.name, status=status))


Route = tuple[str, str, Callable[..., Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/device_authorization", "device_authorization", device_authorization, ("POST",)),
    ("/token", "token", token, ("POST",)),
)


def create_oauth_blueprint(devices: DeviceGrants, workloads: WorkloadIdentity) -> Blueprint:
    """The OAuth endpoints, bound to the device logins and the workload exchange."""
    blueprint = Blueprint("mlflow_share_oauth", __name__, url_prefix=f"{PREFIX}/oauth")
    blueprint.register_error_handler(OAuthError, _oauth_error)
    blueprint.register_error_handler(MlflowException, _mlflow_error)
    blueprint.register_error_handler(HTTPException, _http_error)
    bind_routes(blueprint, ROUTES, OAuthServices(devices, workloads))
    return blueprint
