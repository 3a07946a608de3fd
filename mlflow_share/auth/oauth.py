"""OAuth 2.0 protocol names and the one error type of mlflow-share's OAuth endpoints.

The device authorization and token endpoints are OAuth endpoints, called by OAuth clients that
read RFC 6749's error form (``{"error": ..., "error_description": ...}``), not MLflow's
envelope. ``OAuthError`` carries that form; it is deliberately not an ``MlflowShareError``, so
it can never reach a client through MLflow's handlers in the wrong shape::

    Exception
     └── OAuthError                 {"error", "error_description"}, status 400 unless given
          └── ExchangeRefused       invalid_request: a subject token refused (auth/workload.py)
"""

from __future__ import annotations

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"

# RFC 6749 section 5.2, RFC 8628 section 3.5 (device polling), and the one of RFC 6749 4.1.2.1
# for a server that cannot answer now.
INVALID_REQUEST = "invalid_request"
INVALID_GRANT = "invalid_grant"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
AUTHORIZATION_PENDING = "authorization_pending"
SLOW_DOWN = "slow_down"
ACCESS_DENIED = "access_denied"
EXPIRED_TOKEN = "expired_token"
TEMPORARILY_UNAVAILABLE = "temporarily_unavailable"
SERVER_ERROR = "server_error"


class OAuthError(Exception):
    """An OAuth error response: ``error`` (a registered code), a description for the person
    reading it, and the HTTP status (400 unless the protocol says otherwise).

    ``extra`` goes into the JSON body too (``interval`` with ``slow_down``).
    """

    def __init__(self, error: str, description: str, status: int = 400,
                 extra: dict[str, object] | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.extra = dict(extra or {})

    def to_dict(self) -> dict[str, object]:
        return {**self.extra, "error": self.error, "error_description": self.description}
