"""Device login: the OAuth 2.0 device authorization grant (RFC 8628) against an mlflow-share
server, for a terminal or a notebook that has no browser of its own.

The device asks for a code, shows its user a short code and the address to confirm it at
(``<server>/share/device``, where they are signed in with SSO or a local account), and polls
the token endpoint at the interval the server gives (slower when told ``slow_down``) until the
user approves or denies, or the code expires. Depends on ``requests`` only.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import requests

OAUTH = "/api/2.0/mlflow-share/oauth"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CLIENT_ID = "mlflow-share-client"
_TIMEOUT = 30


class DeviceLoginError(Exception):
    """The login did not complete: denied, expired, or refused by the server."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _say_to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _post(url: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        response = requests.post(url, data=data, timeout=_TIMEOUT,
                                 headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise DeviceLoginError(f"Cannot reach the mlflow-share server ({type(exc).__name__}).") \
            from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, body if isinstance(body, dict) else {}


def _refusal(status: int, body: dict[str, Any]) -> DeviceLoginError:
    description = body.get("error_description") or body.get("message") or f"HTTP {status}"
    return DeviceLoginError(f"{body.get('error') or body.get('error_code') or status}: "
                            f"{description}")


def device_login(tracking_uri: str, *, expires_in_days: float | None = None,
                 client_id: str = CLIENT_ID, client_name: str | None = None,
                 say: Callable[[str], None] = _say_to_stderr,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Log in through the browser; returns the token endpoint's answer (``access_token``,
    ``token_id``, ``user``, ``expires_at``, ``expires_in``).

    Args:
        tracking_uri: the mlflow-share server.
        expires_in_days: the token lifetime to ask for (the user may shorten it; the server
            caps it); the server's default without it.
        client_id: how the client names itself to the server.
        client_name: how it describes itself to the approving user (default: this host).
        say: where the instructions go (standard error).

    Raises:
        DeviceLoginError: denied, expired, or refused.
    """
    base = tracking_uri.rstrip("/")
    data = {"client_id": client_id,
            "client_name": client_name or f"{client_id} on {socket.gethostname()}"[:128]}
    if expires_in_days is not None:
        data["expires_in_days"] = repr(float(expires_in_days))
    status, started = _post(f"{base}{OAUTH}/device_authorization", data)
    if status != 200 or "device_code" not in started:
        raise _refusal(status, started)
    say(f"To log in, open {started['verification_uri']} in a browser where you are signed in "
        f"to mlflow-share and enter the code\n\n    {started['user_code']}\n\n"
        f"(or open {started.get('verification_uri_complete') or started['verification_uri']}).\n"
        f"Waiting for approval; the code expires in {int(started['expires_in']) // 60 or 1} "
        "minute(s)...")
    interval = max(float(started.get("interval") or 5), 1.0)
    deadline = clock() + float(started["expires_in"])
    poll = {"grant_type": DEVICE_CODE_GRANT, "device_code": str(started["device_code"]),
            "client_id": client_id}
    while True:
        sleep(interval)
        status, answer = _post(f"{base}{OAUTH}/token", poll)
        if status == 200 and answer.get("access_token"):
            return answer
        error = answer.get("error")
        if error == "authorization_pending":
            pass
        elif error == "slow_down":  # RFC 8628 section 3.5: 5 s more, or what the server says
            interval = max(float(answer.get("interval") or interval + 5), interval + 5)
        elif error == "access_denied":
            raise DeviceLoginError("The login was denied in the browser.")
        elif error == "expired_token":
            raise DeviceLoginError("The code expired before it was approved: log in again.")
        else:
            raise _refusal(status, answer)
        if clock() >= deadline:
            raise DeviceLoginError("The code expired before it was approved: log in again.")
