"""API tokens issued by an OAuth grant (a device login, a workload identity exchange).

They are ordinary mlflow-share tokens, created as ``Directory.create_token`` creates them
(256 random bits, only the SHA-256 stored, an expiry, the policy version bumped so every
worker knows them at its next request), but inside the caller's audited transaction, so the
grant that is consumed and the token it yields commit together or not at all. Their origin is
recorded: a token from a workload identity exchange lives minutes and must not be turned into
a longer-lived one through the token API.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_share import db
from mlflow_share.auth.identity import TOKEN_PREFIX, new_token, parse_authorization
from mlflow_share.directory import IssuedToken

DEVICE = "device_code"
TOKEN_EXCHANGE = "token_exchange"
_DAY_MS = 86_400_000


def issue_token_in(conn: sa.Connection, user: str, lifetime_ms: int, description: str,
                   grant_type: str, detail: str) -> IssuedToken:
    """A new token of ``user`` that expires ``lifetime_ms`` from now, in ``conn``'s transaction.

    The caller has checked that ``user`` exists and may receive it."""
    token_id, token, token_hash = new_token()
    now = db.now_ms()
    expires_at = now + lifetime_ms
    conn.execute(db.tokens.insert().values(
        token_id=token_id, token_hash=token_hash, user_name=user,
        description=description[:256], created_at=now, expires_at=expires_at))
    conn.execute(db.token_origins.insert().values(
        token_id=token_id, grant_type=grant_type, detail=detail[:512], created_at=now))
    if grant_type == TOKEN_EXCHANGE:
        _prune_exchanged(conn, now)
    db.bump(conn, db.POLICY_VERSION)
    return IssuedToken(token_id, token, user, expires_at)


def _prune_exchanged(conn: sa.Connection, now: int) -> None:
    """Workload tokens that expired a day ago go: a pipeline exchanges one per job, and every
    worker loads the tokens that are not revoked (the audit log keeps their story)."""
    origins = db.token_origins.c
    spent = sa.select(origins.token_id).where(origins.grant_type == TOKEN_EXCHANGE)
    conn.execute(db.tokens.delete().where(db.tokens.c.token_id.in_(spent),
                                          db.tokens.c.expires_at < now - _DAY_MS))
    conn.execute(db.token_origins.delete().where(
        origins.grant_type == TOKEN_EXCHANGE,
        ~origins.token_id.in_(sa.select(db.tokens.c.token_id))))


def _token_id(authorization: str | None) -> str | None:
    credentials = parse_authorization(authorization)
    if credentials is None or credentials.kind != "bearer":
        return None
    parts = credentials.secret.split("_")
    if len(parts) < 3 or parts[0] + "_" != TOKEN_PREFIX:
        return None
    return parts[1]


def minted_by(engine: Engine, authorization: str | None) -> str | None:
    """How the bearer token of an ``Authorization`` header was issued: ``DEVICE``,
    ``TOKEN_EXCHANGE``, or None (created through the API or the CLI)."""
    token_id = _token_id(authorization)
    if token_id is None:
        return None
    with engine.connect() as conn:
        grant = conn.execute(sa.select(db.token_origins.c.grant_type).where(
            db.token_origins.c.token_id == token_id)).scalar()
    return None if grant is None else str(grant)
