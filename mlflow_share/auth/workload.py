"""Workload identity: a JWT from an issuer the admin trusts (a Kubernetes service account
token, a CI provider's OIDC token) is exchanged for a short-lived token of the service account
a trust rule maps it to (OAuth 2.0 token exchange, RFC 8693).

Refused: anything but a compact JWS; ``alg: none`` and the HMAC family (a shared secret proves
nothing about an issuer); an issuer no rule names (nothing is fetched for it); a key the issuer
does not publish; a signature that does not verify; an expired, not-yet-valid or future-issued
token; another audience; a subject or claim no rule matches; rules of several service accounts
at once; a service account that is disabled or gone.

Keys come only from the addresses of the matching rules: the issuer's discovery document
(``<issuer>/.well-known/openid-configuration`` → ``jwks_uri``) or the rule's ``jwks_uri``.
Fetches follow no redirects, read at most 256 KiB and wait at most 5 s. Each key source is
cached per worker and re-read when a token names a key id it lacks, at most ``burst`` times and
then once per ``refill_seconds`` (a flood of made-up key ids costs the issuer almost nothing).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import sqlalchemy as sa
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import JWKRegistry, KeySet
from sqlalchemy.engine import Engine

from mlflow_share import db
from mlflow_share.audit.log import AUDIT_CONTEXT, audited_write, note_principal
from mlflow_share.auth import oauth
from mlflow_share.auth.issuance import TOKEN_EXCHANGE, issue_token_in
from mlflow_share.auth.oauth import OAuthError
from mlflow_share.auth.trust import TrustRule, TrustRules, checked_url
from mlflow_share.directory import IssuedToken
from mlflow_share.errors import InvalidInput

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "EdDSA", "Ed25519")
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
LEEWAY_S = 30
MAX_TOKEN_CHARS = 16_384
MAX_DOCUMENT_BYTES = 256 * 1024
FETCH_TIMEOUT_S = 5.0
DISCOVERY_PATH = "/.well-known/openid-configuration"
NO_RULE = "No trust rule accepts this token."


class ExchangeRefused(OAuthError):
    """A subject token refused (RFC 8693 section 2.2.2: ``invalid_request``). ``reason`` is
    what the audit log records; the client reads ``description``."""

    def __init__(self, reason: str, description: str | None = None) -> None:
        super().__init__(oauth.INVALID_REQUEST,
                         description or f"The subject token was refused: {reason}.")
        self.reason = reason


class KeysUnavailable(Exception):
    """An issuer's keys could not be fetched (down, refused, not a key set)."""


# -- fetching keys ---------------------------------------------------------------------------
def fetch_json(url: str) -> dict[str, Any]:
    """The JSON object at ``url``: no redirects, bounded size and time.

    Raises:
        KeysUnavailable: anything else than 200 with a JSON object.
    """
    try:
        with requests.get(url, timeout=FETCH_TIMEOUT_S, allow_redirects=False, stream=True,
                          headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise KeysUnavailable(f"{url} answered {response.status_code}")
            body = b""
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise KeysUnavailable(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
    except requests.RequestException as exc:
        raise KeysUnavailable(f"{url} could not be read ({type(exc).__name__})") from None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise KeysUnavailable(f"{url} did not send JSON") from None
    if not isinstance(data, dict):
        raise KeysUnavailable(f"{url} did not send a JSON object")
    return data


def import_keys(document: dict[str, Any]) -> KeySet:
    """The public signing keys of a JWKS; symmetric keys and keys for encryption are dropped
    (an issuer proves itself with its private key only)."""
    keys = []
    for entry in document.get("keys") or []:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP") \
                or entry.get("use") not in (None, "sig"):
            continue
        public = {k: v for k, v in entry.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        try:
            keys.append(JWKRegistry.import_key(public))
        except (JoseError, ValueError, TypeError, KeyError):
            continue  # one key this server cannot read does not spoil the others
    return KeySet(keys)


@dataclass
class _Source:
    """One cached key source; ``allowance`` is how many fetches it may make now."""

    allowance: float
    refilled_at: float
    keys: KeySet | None = None
    fetched_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksCache:
    """Key sets per (issuer, JWKS URL) for one worker, with a bounded fetch rate.

    Args:
        fetch: reads a JSON document (``fetch_json``).
        burst: fetches a source may make at once (the first one included).
        refill_seconds: one more fetch allowed per this many seconds.
        max_age_seconds: cached keys are re-read after this long (when allowed).
    """

    def __init__(self, fetch: Callable[[str], dict[str, Any]] = fetch_json, *, burst: int = 3,
                 refill_seconds: float = 60.0, max_age_seconds: float = 3600.0) -> None:
        self._fetch = fetch
        self._burst = burst
        self._refill = refill_seconds
        self._max_age = max_age_seconds
        self._sources: dict[tuple[str, str | None], _Source] = {}
        self._lock = threading.Lock()

    def keys(self, issuer: str, jwks_uri: str | None, *, refresh: bool = False) -> KeySet:
        """The issuer's keys (fetched when missing, stale, or ``refresh`` is asked, as far as
        the fetch rate allows).

        Raises:
            KeysUnavailable: there are none and they cannot be fetched now.
        """
        with self._lock:
            source = self._sources.setdefault((issuer, jwks_uri),
                                              _Source(self._burst, time.monotonic()))
        with source.lock:
            now = time.monotonic()
            source.allowance = min(self._burst, source.allowance
                                   + (now - source.refilled_at) / self._refill)
            source.refilled_at = now
            due = source.keys is None or refresh or now - source.fetched_at > self._max_age
            if due and source.allowance >= 1:
                source.allowance -= 1
                try:
                    source.keys = self._load(issuer, jwks_uri)
                    source.fetched_at = now
                except KeysUnavailable:
                    if source.keys is None:
                        raise
            if source.keys is None:
                raise KeysUnavailable(f"the keys of {issuer} could not be fetched recently")
            return source.keys

    def _load(self, issuer: str, jwks_uri: str | None) -> KeySet:
        if jwks_uri is None:
            document = self._fetch(issuer + DISCOVERY_PATH)
            if str(document.get("issuer", "")).rstrip("/") != issuer:
                raise KeysUnavailable(f"the discovery document of {issuer} names another issuer")
            try:  # the trusted issuer names its keys; still https (or loopback) only
                jwks_uri = checked_url("JWKS URL", document.get("jwks_uri"))
            except InvalidInput as exc:
                raise KeysUnavailable(exc.message) from None
        return import_keys(self._fetch(jwks_uri))


# -- verifying a subject token ---------------------------------------------------------------
def _json_part(part: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise ExchangeRefused("it is not a JWT") from None
    if not isinstance(data, dict):
        raise ExchangeRefused("it is not a JWT")
    return data


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) as the token states them, before anything is trusted."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii() or token.count(".") != 2:
        raise ExchangeRefused("it is not a signed JWT (compact JWS)")
    header_part, claims_part, _signature = token.split(".")
    return _json_part(header_part), _json_part(claims_part)


def _check_algorithm(header: dict[str, Any]) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise ExchangeRefused("it is unsigned (alg none)")
    if alg.upper().startswith("HS"):
        raise ExchangeRefused("it is signed with a shared secret (HMAC), which proves nothing "
                              "about the issuer")
    if alg not in ALGORITHMS:
        raise ExchangeRefused(f"its algorithm {alg[:20]!r} is not accepted")
    return alg


def _usable(key: Any, alg: str, kid: str | None) -> bool:
    if kid is not None and key.kid != kid:
        return False
    if key.key_type != _KEY_TYPES.get(alg[:2]):
        return False
    return key.get("alg") in (None, alg)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_times(claims: dict[str, Any], now: float) -> None:
    if not _number(claims.get("exp")):
        raise ExchangeRefused("it has no expiry")
    if claims["exp"] <= now - LEEWAY_S:
        raise ExchangeRefused("it has expired")
    if _number(claims.get("nbf")) and claims["nbf"] > now + LEEWAY_S:
        raise ExchangeRefused("it is not valid yet")
    if _number(claims.get("iat")) and claims["iat"] > now + LEEWAY_S:
        raise ExchangeRefused("it was issued in the future")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise ExchangeRefused("it names no subject")


@dataclass(frozen=True)
class VerifiedWorkload:
    """A subject token that verified, and the rule that maps it."""

    rule: TrustRule
    issuer: str
    subject: str


def _note(**details: Any) -> None:
    audit = AUDIT_CONTEXT.get()
    if audit is not None:
        audit.extra.update({k: v for k, v in details.items() if v is not None})


class WorkloadIdentity:
    """Verifies subject tokens against the trust rules and issues service-account tokens.

    Args:
        rules: the trust rules.
        cache: the issuers' key sets.
        engine: mlflow-share's database (the issued tokens).
        token_minutes: lifetime of an issued token.
    """

    def __init__(self, rules: TrustRules, cache: JwksCache, engine: Engine,
                 token_minutes: float) -> None:
        self.rules = rules
        self.cache = cache
        self.engine = engine
        self.lifetime_ms = int(token_minutes * 60_000)

    def verify(self, token: str) -> VerifiedWorkload:
        """The rule that maps a valid subject token.

        Raises:
            ExchangeRefused: the token is refused (see the module's list).
            OAuthError: temporarily_unavailable, the issuer's keys cannot be fetched.
        """
        header, stated = _unverified(token)
        issuer = str(stated.get("iss") or "").rstrip("/")
        # As the token states them (checked below): who the refusal or the exchange was for.
        _note(issuer=issuer[:256] or None, subject=str(stated.get("sub") or "")[:256] or None)
        alg = _check_algorithm(header)
        rules = self.rules.for_issuer(issuer) if issuer else []
        if not rules:  # decided before any fetch: a token's iss never makes us reach out
            raise ExchangeRefused("no trust rule names its issuer", NO_RULE)
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        by_source: dict[str | None, list[TrustRule]] = {}
        for rule in rules:
            by_source.setdefault(rule.jwks_uri, []).append(rule)
        refusal: ExchangeRefused | None = None
        for jwks_uri, source_rules in by_source.items():
            try:
                claims = self._verified_claims(token, issuer, jwks_uri, alg, kid)
            except ExchangeRefused as exc:
                refusal = refusal or exc
                continue
            return self._match(issuer, claims, source_rules)
        assert refusal is not None
        raise refusal

    def _verified_claims(self, token: str, issuer: str, jwks_uri: str | None, alg: str,
                         kid: str | None) -> dict[str, Any]:
        try:
            keys = self.cache.keys(issuer, jwks_uri)
            candidates = [k for k in keys.keys if _usable(k, alg, kid)]
            if not candidates:  # a new key id: the issuer may have rotated its keys
                keys = self.cache.keys(issuer, jwks_uri, refresh=True)
                candidates = [k for k in keys.keys if _usable(k, alg, kid)]
        except KeysUnavailable as exc:
            _note(keys_unavailable=str(exc)[:300])
            raise OAuthError(oauth.TEMPORARILY_UNAVAILABLE, "The issuer's keys cannot be "
                             "fetched now; try again later.", status=503) from None
        if not candidates:
            raise ExchangeRefused("it is signed with a key the issuer does not publish")
        for key in candidates[:8]:
            try:
                decoded = jwt.decode(token, key, algorithms=[alg])
            except BadSignatureError:
                continue
            except (JoseError, ValueError, TypeError) as exc:
                raise ExchangeRefused(f"it is not a valid JWT ({type(exc).__name__})") from None
            claims = dict(decoded.claims)
            if str(claims.get("iss", "")).rstrip("/") != issuer:
                raise ExchangeRefused("it comes from another issuer")
            _check_times(claims, time.time())
            return claims
        raise ExchangeRefused("its signature does not verify with the issuer's keys")

    @staticmethod
    def _match(issuer: str, claims: dict[str, Any], rules: list[TrustRule]) -> VerifiedWorkload:
        subject = str(claims["sub"])
        matched, reasons = [], []
        for rule in rules:
            mismatches = rule.mismatches(claims)
            if mismatches:
                reasons.append(f"rule {rule.id}: {', '.join(mismatches)}")
            else:
                matched.append(rule)
        if not matched:
            raise ExchangeRefused("no trust rule matches it (" + "; ".join(reasons) + ")",
                                  NO_RULE)
        accounts = sorted({rule.service_account for rule in matched})
        if len(accounts) > 1:
            raise ExchangeRefused(f"it matches rules of several service accounts "
                                  f"({', '.join(accounts)})", "The trust rules are ambiguous "
                                  "for this token: an org admin must make them distinct.")
        return VerifiedWorkload(matched[0], issuer, subject)

    def exchange(self, token: str) -> tuple[IssuedToken, VerifiedWorkload]:
        """A short-lived token of the service account a trust rule maps ``token`` to.

        Raises:
            ExchangeRefused, OAuthError: see ``verify``; also a service account that is
                disabled, gone, or not a service account.
        """
        verified = self.verify(token)
        account = verified.rule.service_account
        _note(service_account=account, trust_rule=verified.rule.id)
        note_principal(account)
        change: dict[str, Any] = {"op": "token_exchange", "issuer": verified.issuer,
                                  "subject": verified.subject[:256], "service_account": account,
                                  "trust_rule": verified.rule.id}
        with audited_write(self.engine, change) as conn:
            row = conn.execute(sa.select(db.users).where(db.users.c.name == account)).first()
            if row is None or not row.is_service_account or row.disabled_at is not None:
                raise ExchangeRefused(f"service account {account!r} is disabled or gone",
                                      NO_RULE)
            issued = issue_token_in(conn, account, self.lifetime_ms,
                                    f"workload identity: {verified.subject}", TOKEN_EXCHANGE,
                                    f"{verified.issuer} {verified.subject}")
            change["token_id"] = issued.token_id
        return issued, verified
