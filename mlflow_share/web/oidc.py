"""OpenID Connect login: authorization code flow with PKCE (authlib) and ID-token checks
(joserfc), then the claims mapped to an mlflow-share user and team memberships.

Configured by environment (all read at start-up):

- ``MLFLOW_SHARE_OIDC_ISSUER`` (enables SSO), ``MLFLOW_SHARE_OIDC_CLIENT_ID``,
  ``MLFLOW_SHARE_OIDC_CLIENT_SECRET`` (empty for a public client: PKCE alone);
- ``MLFLOW_SHARE_OIDC_SCOPES`` (default ``openid profile email``);
- ``MLFLOW_SHARE_OIDC_USERNAME_CLAIM`` (default ``preferred_username``): the mlflow-share
  user name; no other claim stands in for a missing one, and ``email`` counts only with
  ``email_verified``. The user stays bound to the issuer's ``sub`` seen at provisioning;
- ``MLFLOW_SHARE_OIDC_GROUPS_CLAIM`` (default ``groups``): a list of ``team`` or
  ``team:role`` entries (role ``viewer``, ``engineer`` or ``maintainer``; a bare team means
  ``viewer``). Teams must exist in mlflow-share: unknown ones (and groups that are no team
  name, such as Keycloak's ``/paths``) are ignored and logged;
- ``MLFLOW_SHARE_OIDC_ADMIN_GROUP``: a group whose members are org administrators.

Refused (the login fails, nothing is provisioned): an ID token that is unsigned (``alg:
none``), signed with an algorithm or key the issuer does not publish, from another issuer, for
another audience, expired or not yet valid, or with a nonce other than the one this login
sent; a callback whose state is unknown, used or older than ten minutes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from mlflow_share import config
from mlflow_share.errors import InvalidInput, PermissionDenied
from mlflow_share.policy.enforcer import ROLES, validate_identifier

_logger = logging.getLogger(__name__)
_TIMEOUT = 10
_LEEWAY_S = 60
# What an issuer may sign ID tokens with; "none" and the HMAC family are never accepted.
_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
               "EdDSA")


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    client_id: str
    client_secret: str
    scopes: str = "openid profile email"
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    admin_group: str = ""

    @classmethod
    def from_env(cls) -> OidcSettings | None:
        settings = config.options()
        issuer = settings.oidc_issuer.rstrip("/")
        if not issuer:
            return None
        if not settings.oidc_client_id:
            raise InvalidInput("MLFLOW_SHARE_OIDC_ISSUER is set: set MLFLOW_SHARE_OIDC_CLIENT_ID too.")
        return cls(
            issuer=issuer, client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret,
            scopes=settings.oidc_scopes or cls.scopes,
            username_claim=settings.oidc_username_claim or cls.username_claim,
            groups_claim=settings.oidc_groups_claim or cls.groups_claim,
            admin_group=settings.oidc_admin_group,
        )


@dataclass(frozen=True)
class Identity:
    """Who logged in, as the issuer says: user name, team → role, org admin."""

    username: str
    subject: str  # "<issuer> <sub>"
    teams: dict[str, str]
    admin: bool


class OidcClient:
    """The relying party: discovery and keys are fetched once and cached (keys again when a
    token names a key id not seen yet, for key rotation)."""

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._lock = threading.Lock()

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None:
                url = f"{self.settings.issuer}/.well-known/openid-configuration"
                response = requests.get(url, timeout=_TIMEOUT)
                response.raise_for_status()
                data = response.json()
                if data.get("issuer", "").rstrip("/") != self.settings.issuer:
                    raise PermissionDenied("The identity provider's discovery document names "
                                           "another issuer.")
                self._metadata = data
            return self._metadata

    def _key_set(self, refresh: bool = False) -> KeySet:
        with self._lock:
            if self._keys is None or refresh:
                assert self._metadata is not None
                response = requests.get(self._metadata["jwks_uri"], timeout=_TIMEOUT)
                response.raise_for_status()
                self._keys = KeySet.import_key_set(response.json())
            return self._keys

    def _session(self, redirect_uri: str) -> OAuth2Session:
        return OAuth2Session(
            self.settings.client_id, self.settings.client_secret or None,
            scope=self.settings.scopes, redirect_uri=redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic" if self.settings.client_secret
            else "none",
        )

    def authorization_url(self, redirect_uri: str) -> tuple[str, str, str, str]:
        """(URL to send the browser to, state, nonce, PKCE verifier)."""
        state, nonce, verifier = generate_token(43), generate_token(43), generate_token(64)
        url, _ = self._session(redirect_uri).create_authorization_url(
            self.metadata()["authorization_endpoint"], state=state, nonce=nonce,
            code_verifier=verifier)
        return url, state, nonce, verifier

    def complete(self, redirect_uri: str, code: str, verifier: str, nonce: str) -> dict[str, Any]:
        """Exchange the code (with the PKCE verifier) and return the ID token's checked claims,
        with the userinfo claims the token lacks."""
        with self._session(redirect_uri) as session:
            token = session.fetch_token(self.metadata()["token_endpoint"], code=code,
                                        code_verifier=verifier, timeout=_TIMEOUT)
            id_token = token.get("id_token")
            if not id_token:
                raise PermissionDenied("The identity provider returned no ID token.")
            claims = self.verify_id_token(id_token, nonce)
            userinfo_url = self.metadata().get("userinfo_endpoint")
            if userinfo_url:
                response = session.get(userinfo_url, timeout=_TIMEOUT)
                if response.ok:
                    info = response.json()
                    if info.get("sub") == claims["sub"]:
                        claims = {**info, **claims}
        return claims

    def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        self.metadata()
        try:
            try:
                decoded = jwt.decode(id_token, self._key_set(), algorithms=_ALGORITHMS)
            except (JoseError, ValueError):
                # A key id we have not seen: the issuer may have rotated its keys.
                decoded = jwt.decode(id_token, self._key_set(refresh=True), algorithms=_ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise PermissionDenied(f"The ID token is not validly signed by the issuer ({exc}).") \
                from None
        claims = dict(decoded.claims)
        now = time.time()
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        problems = []
        if str(claims.get("iss", "")).rstrip("/") != self.settings.issuer:
            problems.append("it comes from another issuer")
        if self.settings.client_id not in audiences:
            problems.append("it is for another audience")
        if len(audiences) > 1 and claims.get("azp") != self.settings.client_id:
            problems.append("its authorized party is another client")
        if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < now - _LEEWAY_S:
            problems.append("it has expired")
        if isinstance(claims.get("nbf"), (int, float)) and claims["nbf"] > now + _LEEWAY_S:
            problems.append("it is not valid yet")
        if isinstance(claims.get("iat"), (int, float)) and claims["iat"] > now + _LEEWAY_S:
            problems.append("it was issued in the future")
        if claims.get("nonce") != nonce:
            problems.append("its nonce is not this login's")
        if not claims.get("sub"):
            problems.append("it names no subject")
        if problems:
            raise PermissionDenied("The ID token was refused: " + "; ".join(problems) + ".")
        return claims

    def identity(self, claims: dict[str, Any]) -> Identity:
        return identity_from_claims(self.settings, claims)


def identity_from_claims(settings: OidcSettings, claims: dict[str, Any]) -> Identity:
    username = claims.get(settings.username_claim)
    if not isinstance(username, str) or not username:
        raise PermissionDenied(f"The identity provider sent no {settings.username_claim!r} "
                               "claim to name the user by.")
    if settings.username_claim == "email" and claims.get("email_verified") is not True:
        raise PermissionDenied("The identity provider has not verified this email address.")
    groups = claims.get(settings.groups_claim) or []
    if isinstance(groups, str):
        groups = [groups]
    teams: dict[str, str] = {}
    admin = False
    for group in groups:
        if not isinstance(group, str):
            continue
        if settings.admin_group and group == settings.admin_group:
            admin = True
            continue
        team, _, role = group.partition(":")
        role = role or "viewer"
        if role not in ROLES:
            _logger.warning("OIDC group %r names an unknown role; ignored", group)
            continue
        try:
            validate_identifier("team name", team)
        except InvalidInput:
            _logger.info("OIDC group %r is not an mlflow-share team; ignored", group)
            continue
        # A user in several groups of one team gets the strongest role.
        if ROLES.index(role) >= ROLES.index(teams.get(team, role)):
            teams[team] = role
    return Identity(username, f"{settings.issuer} {claims['sub']}", teams, admin)
