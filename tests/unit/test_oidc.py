"""ID-token checks of the OIDC login and the claims → team mapping (no network: the issuer's
discovery document and keys are set on the client as if fetched)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from mlflow_share.errors import PermissionDenied
from mlflow_share.web.oidc import OidcClient, OidcSettings, identity_from_claims

ISSUER = "https://idp.example.test"
CLIENT = "mlflow-share"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})


@pytest.fixture
def client() -> OidcClient:
    oidc = OidcClient(OidcSettings(issuer=ISSUER, client_id=CLIENT, client_secret="s",
                                   admin_group="admins"))
    oidc._metadata = {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"}
    oidc._keys = KeySet([RSAKey.import_key(KEY.as_dict(private=False))])
    oidc._key_set = lambda refresh=False: oidc._keys  # type: ignore[method-assign]
    return oidc


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "u1", "iat": now, "exp": now + 300,
              "nonce": "n1", "preferred_username": "ann", "groups": ["team-a:maintainer"]}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(claims: dict[str, Any], key: Any = KEY, alg: str = "RS256") -> str:
    return jwt.encode({"alg": alg, "kid": "k1"}, claims, key)


def _part(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unsigned(claims: dict[str, Any]) -> str:
    return f"{_part({'alg': 'none', 'typ': 'JWT'})}.{_part(claims)}."


def _hmac_with_public_key(claims: dict[str, Any]) -> str:
    """Algorithm confusion: HS256 keyed with the issuer's public key (PEM)."""
    head = f"{_part({'alg': 'HS256', 'kid': 'k1'})}.{_part(claims)}"
    signature = hmac.new(KEY.as_pem(private=False), head.encode(), hashlib.sha256).digest()
    return f"{head}.{_part(signature)}"


def test_a_valid_token_is_accepted(client: OidcClient) -> None:
    claims = client.verify_id_token(_signed(_claims()), "n1")
    assert claims["sub"] == "u1"
    assert client.identity(claims).teams == {"team-a": "maintainer"}


@pytest.mark.parametrize("token, reason", [
    (lambda: _unsigned(_claims()), "not validly signed"),
    (lambda: _signed(_claims(), OTHER_KEY), "not validly signed"),
    # Algorithm confusion: HMAC keyed with the issuer's public key.
    (lambda: _hmac_with_public_key(_claims()), "not validly signed"),
    (lambda: _signed(_claims(iss="https://evil.example.test")), "another issuer"),
    (lambda: _signed(_claims(aud="someone-else")), "another audience"),
    (lambda: _signed(_claims(aud=[CLIENT, "other"], azp="other")), "authorized party"),
    (lambda: _signed(_claims(exp=int(time.time()) - 3600)), "expired"),
    (lambda: _signed(_claims(exp=None)), "expired"),
    (lambda: _signed(_claims(nbf=int(time.time()) + 3600)), "not valid yet"),
    (lambda: _signed(_claims(nonce="replayed")), "nonce"),
    (lambda: _signed(_claims(nonce=None)), "nonce"),
    (lambda: "not-a-jwt", "not validly signed"),
])
def test_bad_tokens_are_refused(client: OidcClient, token: Any, reason: str) -> None:
    with pytest.raises(PermissionDenied, match=reason):
        client.verify_id_token(token(), "n1")


def test_groups_map_to_teams_roles_and_admin() -> None:
    settings = OidcSettings(issuer=ISSUER, client_id=CLIENT, client_secret="",
                            admin_group="admins")
    identity = identity_from_claims(settings, {
        "sub": "x", "preferred_username": "ann", "email": "e@x.test",
        "groups": ["team-a", "team-a:engineer", "team-b:viewer", "team-c:owner", "admins", 7,
                   "/keycloak/path", "org", "admin\n"]})
    assert identity.username == "ann" and identity.subject == f"{ISSUER} x"
    # Unknown roles and groups that are no team name are ignored, not fatal.
    assert identity.teams == {"team-a": "engineer", "team-b": "viewer"}
    assert identity.admin
    assert identity_from_claims(settings, {"sub": "s", "preferred_username": "s"}).teams == {}


def test_the_user_name_comes_from_the_configured_claim_only() -> None:
    settings = OidcSettings(issuer=ISSUER, client_id=CLIENT, client_secret="")
    with pytest.raises(PermissionDenied, match="preferred_username"):
        identity_from_claims(settings, {"sub": "s", "email": "admin"})  # no stand-in
    by_email = OidcSettings(issuer=ISSUER, client_id=CLIENT, client_secret="",
                            username_claim="email")
    with pytest.raises(PermissionDenied, match="not verified"):
        identity_from_claims(by_email, {"sub": "s", "email": "boss@x.test"})
    assert identity_from_claims(by_email, {"sub": "s", "email": "boss@x.test",
                                           "email_verified": True}).username == "boss@x.test"
