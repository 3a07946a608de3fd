"""Who is calling: credentials from a request, password and token hashing. Nothing about permissions.

Passwords are hashed with scrypt (slow on purpose) and verified once, then remembered for a
short while under an HMAC of the credentials, so a request never pays for the KDF twice.
API tokens are 256 random bits: a plain SHA-256 is enough to store them and cheap to check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

TOKEN_PREFIX = "msh_"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        name: user or service-account name.
        is_admin: org admin (above every team).
        teams: team name → role (``viewer``, ``engineer`` or ``maintainer``).
    """

    name: str
    is_admin: bool = False
    teams: dict[str, str] = field(default_factory=dict)
    via: str = "password"


@dataclass(frozen=True)
class Credentials:
    kind: str  # "basic" or "bearer"
    username: str = ""
    secret: str = ""


def parse_authorization(header: str | None) -> Credentials | None:
    """Parse an ``Authorization`` header; ``None`` when absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return Credentials("bearer", secret=value)
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            return None
        return Credentials("basic", username=username, secret=password)
    return None


# The largest scrypt cost (n·r·p) a stored hash may ask for: werkzeug's default (MLflow
# basic-auth's hashes, adopted as they are: 32768·8·1, 32 MiB) and this module's own.
MAX_SCRYPT_COST = 32768 * 8 * 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    return "scrypt${}${}${}${}${}".format(
        _SCRYPT_N,
        _SCRYPT_R,
        _SCRYPT_P,
        base64.b64encode(salt).decode(),
        base64.b64encode(digest).decode(),
    )


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        algo, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if algo != "scrypt":
            return False
        cost = int(n) * int(r) * int(p)
        if not 0 < cost <= MAX_SCRYPT_COST:
            return False  # a stored cost no login should pay for
        digest = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt_b64),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
            maxmem=132 * cost + 1024 * 1024,  # scrypt needs ~128·n·r·p bytes
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def new_token() -> tuple[str, str, str]:
    """Return ``(token_id, token, token_hash)``; the token itself is shown once, never stored."""
    token_id = secrets.token_hex(8)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    return token_id, token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class PasswordCache:
    """Remembers successful password checks for ``ttl`` seconds.

    Keys are an HMAC of (user, password, stored hash) under a per-process random key: a
    changed password or hash misses the cache, and memory never holds a reusable secret.
    """

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def _digest(self, user: str, password: str, stored: str) -> bytes:
        message = b"\0".join((user.encode(), password.encode(), stored.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def verify(self, user: str, password: str, stored: str | None) -> bool:
        if not stored:
            return False
        key = self._digest(user, password, stored)
        now = time.monotonic()
        with self._lock:
            expires = self._entries.get(key)
        if expires is not None and expires > now:
            return True
        if not verify_password(password, stored):
            return False
        if self._ttl > 0:
            with self._lock:
                if len(self._entries) > 10_000:
                    self._entries.clear()
                self._entries[key] = now + self._ttl
        return True
