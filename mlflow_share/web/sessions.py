"""Server-side browser sessions and the CSRF token each one carries.

The session cookie holds 256 random bits; the database keeps only their SHA-256, so a copy of
the database opens no session. Every worker reads the same table, so logging out (or an
administrator ending a user's sessions) takes effect on the next request everywhere.

CSRF: a request authenticated by the session cookie that changes state must send the
session's token in the ``X-CSRF-Token`` header. A cross-site page can make a browser send the
cookie (were it not ``SameSite``), but cannot read the token nor set the header; an HTML form
cannot set headers at all. Same-origin scripts (the pages, the tab injected into MLflow's UI)
read the token from ``GET /share/session``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_share import config, db

SESSION_COOKIE = "mlflow_share_session"
OIDC_COOKIE = "mlflow_share_oidc"  # binds an OIDC login to the browser that started it
CSRF_HEADER = "x-csrf-token"
LOGIN_MINUTES = 10  # an OIDC login must come back within this
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class WebSession:
    user: str
    csrf: str
    via: str
    expires_at: int


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def read_cookie(header: str | None, name: str) -> str | None:
    """One cookie's value from a ``Cookie`` header; ``None`` if absent or unparsable."""
    if not header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None and morsel.value else None


def csrf_matches(session: WebSession, supplied: str | None) -> bool:
    return supplied is not None and supplied != "" and hmac.compare_digest(
        session.csrf.encode(), supplied.encode())


def cookie_header(name: str, value: str, *, max_age: int, http_only: bool = True,
                  path: str = "/") -> str:
    """A ``Set-Cookie`` value: ``Secure`` unless the installation opted out (plain HTTP on a
    host other than localhost), ``SameSite=Lax`` (the OIDC redirect back is a top-level GET)."""
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max_age}", "SameSite=Lax"]
    if not config.options().insecure_cookies:
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    return "; ".join(parts)


class SessionStore:
    """Browser sessions and pending OIDC logins, in mlflow-share's tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lifetime_ms = int(config.options().session_hours * 3_600_000)

    def create(self, conn: sa.Connection, user: str, via: str) -> tuple[str, WebSession]:
        """A new session for ``user`` in the caller's (audited) transaction; returns the cookie
        value and the session."""
        session_id = secrets.token_urlsafe(32)
        now = db.now_ms()
        session = WebSession(user, secrets.token_urlsafe(32), via, now + self.lifetime_ms)
        conn.execute(db.web_sessions.insert().values(
            id_hash=_digest(session_id), user_name=user, csrf=session.csrf, via=via,
            created_at=now, expires_at=session.expires_at))
        # Expired sessions of anyone go with each new one: the table stays small.
        conn.execute(db.web_sessions.delete().where(db.web_sessions.c.expires_at < now))
        return session_id, session

    def get(self, session_id: str) -> WebSession | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(
                db.web_sessions.c.user_name, db.web_sessions.c.csrf, db.web_sessions.c.via,
                db.web_sessions.c.expires_at,
            ).where(db.web_sessions.c.id_hash == _digest(session_id))).first()
        if row is None or row.expires_at <= db.now_ms():
            return None
        return WebSession(row.user_name, row.csrf, row.via, row.expires_at)

    def end(self, conn: sa.Connection, session_id: str) -> bool:
        return bool(conn.execute(db.web_sessions.delete().where(
            db.web_sessions.c.id_hash == _digest(session_id))).rowcount)

    # -- OIDC logins under way ---------------------------------------------------------
    def begin_login(self, state: str, nonce: str, verifier: str, next_path: str,
                    binding: str) -> None:
        """``binding``: a random value also set as a cookie in the browser that starts the
        login; the callback must come back with it (no login forced onto another browser)."""
        now = db.now_ms()
        with self.engine.begin() as conn:
            conn.execute(db.web_logins.delete().where(
                db.web_logins.c.created_at < now - LOGIN_MINUTES * 60_000))
            conn.execute(db.web_logins.insert().values(
                state_hash=_digest(state), nonce=nonce, verifier=verifier,
                next_path=next_path[:512], binding_hash=_digest(binding), created_at=now))

    def finish_login(self, state: str, binding: str | None) -> tuple[str, str, str] | None:
        """(nonce, verifier, next path) of a login under way, consumed: a state works once,
        and only in the browser that started the login."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(db.web_logins).where(
                db.web_logins.c.state_hash == _digest(state))).first()
            if row is None or not conn.execute(db.web_logins.delete().where(
                    db.web_logins.c.state_hash == _digest(state))).rowcount:
                return None
        if row.created_at < db.now_ms() - LOGIN_MINUTES * 60_000 or binding is None \
                or not hmac.compare_digest(row.binding_hash, _digest(binding)):
            return None
        return row.nonce, row.verifier, row.next_path


def from_this_origin(method: str, headers: Mapping[str, str]) -> bool:
    """Whether a cookie-carrying request may use the session: a page load, or a request of
    this server's own pages.

    MLflow's CORS settings let pages on other localhost ports (and configured origins) read
    credentialed answers; a session cookie travels to them (same site). So a request that
    is not a top-level navigation must come from this origin: ``Sec-Fetch-Site`` says so,
    and where a browser does not send it, ``Origin`` must be this server's. ``headers``
    keys are lower case.
    """
    if method in ("GET", "HEAD") and headers.get("sec-fetch-mode") == "navigate":
        return True  # a page load: nothing another origin could read
    site, origin = headers.get("sec-fetch-site"), headers.get("origin")
    if site is not None and site not in ("same-origin", "none"):
        return False
    return origin is None or urlsplit(origin).netloc == headers.get("host", "")
