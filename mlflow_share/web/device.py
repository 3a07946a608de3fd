"""The browser side of device logins: ``/share/device``, where a signed-in user confirms the
code a device (``mlflow-share login --device``, a notebook) shows, and the token lifetime.

The page is a static file and a script like the other ``/share/`` pages (strict CSP, text
only). Its script reads and decides through three JSON routes that accept a browser session
only: a device login hands out a token of the approving user, so it needs the user at a
browser (SSO or local login), the session's CSRF token on every change, and a person's click;
an API token cannot approve one (nor, so, mint itself a longer-lived sibling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_from_directory
from mlflow.exceptions import MlflowException

from mlflow_share.auth.device import DeviceGrants, display_code
from mlflow_share.auth.identity import Principal
from mlflow_share.errors import InvalidInput, PermissionDenied
from mlflow_share.http import PREFIX, bind_routes, current_principal, json_body, string_field
from mlflow_share.web import error_page
from mlflow_share.web.pages import STATIC

PAGE = "device.html"


@dataclass(frozen=True)
class DeviceServices:
    devices: DeviceGrants


def _browser_user() -> Principal:
    principal = current_principal()
    if not principal.via.startswith("session:"):
        raise PermissionDenied("Device logins are approved in a browser: open /share/device "
                               "signed in, not with an API token.")
    return principal


def page(services: DeviceServices) -> Response:
    current_principal()  # the interceptor sends a browser without a session to log in first
    return send_from_directory(STATIC, PAGE, max_age=0)


def show_device_request(services: DeviceServices) -> Response:
    _browser_user()
    code = request.args.get("user_code", "")
    found = services.devices.pending(code)
    # RFC 8628 section 5.4 (remote phishing): a login asked from elsewhere than this browser
    # is worth a second look; the page says so.
    return jsonify({"request": found.to_dict(), "max_days": found.requested_days,
                    "from_this_address": found.client_address == request.remote_addr})


def _decision(services: DeviceServices, approve: bool) -> Response:
    principal = _browser_user()
    data = json_body()
    code = string_field(data, "user_code")
    assert code is not None
    days = data.get("expires_in_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))):
        raise InvalidInput("'expires_in_days' must be a number.")
    found = services.devices.decide(code, principal.name, approve=approve,
                                    days=float(days) if days is not None else None)
    return jsonify({"id": found.grant_id, "user_code": display_code(found.user_code),
                    "status": "approved" if approve else "denied", "user": principal.name})


def approve_device_request(services: DeviceServices) -> Response:
    return _decision(services, True)


def reject_device_request(services: DeviceServices) -> Response:
    return _decision(services, False)


def _error(exc: MlflowException) -> Response:
    """A page for a browser navigating here, else MLflow's JSON envelope."""
    status = exc.get_http_status_code()
    if error_page.wants_page(request.method, request.path,
                             {k.lower(): v for k, v in request.headers.items()}):
        return Response(error_page.render(status, exc.message), status=status,
                        mimetype="text/html")
    return Response(exc.serialize_as_json(), status=status, mimetype="application/json")


def _security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = error_page.CSP
    response.headers["X-Frame-Options"] = "DENY"  # no clickjacking of the Approve button
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"  # the page's URL carries the code
    response.headers["Cache-Control"] = "no-store"
    return response


Route = tuple[str, str, Callable[..., Any], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/share/device", "page", page, ("GET",)),
    (f"{PREFIX}/device/requests", "show_device_request", show_device_request, ("GET",)),
    (f"{PREFIX}/device/approve", "approve_device_request", approve_device_request, ("POST",)),
    (f"{PREFIX}/device/reject", "reject_device_request", reject_device_request, ("POST",)),
)


def create_device_blueprint(devices: DeviceGrants) -> Blueprint:
    blueprint = Blueprint("mlflow_share_device", __name__)
    blueprint.register_error_handler(MlflowException, _error)
    blueprint.after_request(_security_headers)
    bind_routes(blueprint, ROUTES, DeviceServices(devices))
    return blueprint
