"""Device logins (OAuth 2.0 device authorization grant, RFC 8628): start, approve or deny in a
browser, poll, and redeem exactly once for an API token.

State lives in ``share_device_grants`` so that every worker sees it. A login is *pending*
until the signed-in user approves it (choosing a lifetime no longer than the device asked
for) or denies it; an approved login becomes *issued* on the poll that receives the token.
The device code is a bearer secret kept only as its SHA-256; the user code is 8 letters from
an alphabet without vowels or look-alikes (no 0/O, 1/I), about 34 bits, valid for minutes
and once. Transitions are audited with the change they make; polls are audited as requests.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mlflow_share import db
from mlflow_share.audit.log import AUDIT_CONTEXT, audited_write, begin_write, note_principal, \
    writer_lock
from mlflow_share.auth import oauth
from mlflow_share.auth.issuance import DEVICE, issue_token_in
from mlflow_share.auth.oauth import OAuthError
from mlflow_share.directory import IssuedToken
from mlflow_share.errors import InvalidInput, NotFound

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 section 6.1's example: no vowels
USER_CODE_LENGTH = 8
SLOW_DOWN_STEP_S = 5  # RFC 8628 section 3.5: each slow_down adds 5 s to the interval
DEFAULT_REQUESTED_DAYS = 30.0
MAX_PENDING = 1000  # device logins waiting at once, server-wide
MAX_PENDING_PER_ADDRESS = 20
KEEP_EXPIRED_MS = 3_600_000  # an expired login still answers expired_token for an hour
_DAY_MS = 86_400_000
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")

PENDING, APPROVED, DENIED, ISSUED = "pending", "approved", "denied", "issued"


@dataclass(frozen=True)
class DeviceAuthorization:
    """What the device receives: its secret code, the code its user types, timings."""

    grant_id: str
    device_code: str
    user_code: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class DeviceRequest:
    """A pending login as the approving user sees it."""

    grant_id: str
    user_code: str
    client_id: str
    client_name: str | None
    client_address: str | None
    requested_days: float
    created_at: int
    expires_at: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.grant_id, "user_code": display_code(self.user_code),
                "client_id": self.client_id, "client_name": self.client_name,
                "client_address": self.client_address, "requested_days": self.requested_days,
                "created_at": self.created_at, "expires_at": self.expires_at}


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_user_code() -> str:
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def normalize_user_code(typed: str) -> str:
    """What a person typed, as stored: case, spaces and dashes do not matter (RFC 8628 6.1)."""
    return "".join(c for c in typed.upper() if c.isalnum())[:32]


def display_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def _note(**details: Any) -> None:
    """Details of the request's audit event (never a code)."""
    audit = AUDIT_CONTEXT.get()
    if audit is not None:
        audit.extra.update({k: v for k, v in details.items() if v is not None})


@contextmanager
def _write(engine: Engine) -> Iterator[sa.Connection]:
    """A short write transaction holding the database's write lock (no event of its own:
    the request's event records it)."""
    with writer_lock(engine), engine.connect() as conn:
        begin_write(conn)
        yield conn
        conn.commit()


class DeviceGrants:
    """The device logins of one server: every worker reads and writes the same table.

    Args:
        engine: mlflow-share's database.
        code_minutes: how long a login waits for its user.
        poll_seconds: the least interval between polls.
        max_days: the longest token lifetime a login may ask for.
    """

    def __init__(self, engine: Engine, *, code_minutes: float, poll_seconds: int,
                 max_days: float) -> None:
        self.engine = engine
        self.code_ms = max(int(code_minutes * 60_000), 1)
        self.poll_seconds = poll_seconds
        self.max_days = max_days

    # -- the device ------------------------------------------------------------------
    def start(self, client_id: str, client_name: str | None, requested_days: float | None,
              client_address: str | None) -> DeviceAuthorization:
        """A new pending login (RFC 8628 section 3.1-3.2).

        Raises:
            OAuthError: invalid_request (bad parameters), temporarily_unavailable (too many
                logins waiting).
        """
        if not _CLIENT_ID.fullmatch(client_id):
            raise OAuthError(oauth.INVALID_REQUEST,
                             "client_id is required: 1-64 letters, digits or . _ : @ -.")
        days = (min(DEFAULT_REQUESTED_DAYS, self.max_days) if requested_days is None
                else requested_days)
        if not 0 < days <= self.max_days:
            raise OAuthError(oauth.INVALID_REQUEST,
                             f"expires_in_days must be more than 0 and at most {self.max_days:g}.")
        name = " ".join((client_name or "").split())[:128] or None
        grant_id = uuid.uuid4().hex
        device_code = secrets.token_urlsafe(32)
        now = db.now_ms()
        _note(device_login=grant_id, client_id=client_id)
        for _attempt in range(5):  # a user code already in use: draw another
            user_code = new_user_code()
            change = {"op": "device_authorization", "device_login": grant_id,
                      "client_id": client_id, "requested_days": days}
            try:
                with audited_write(self.engine, change) as conn:
                    self._make_room(conn, now, client_address)
                    conn.execute(db.device_grants.insert().values(
                        id=grant_id, device_code_hash=_digest(device_code), user_code=user_code,
                        client_id=client_id, client_name=name,
                        client_address=(client_address or "")[:64] or None,
                        requested_days=days, status=PENDING, interval_s=self.poll_seconds,
                        created_at=now, expires_at=now + self.code_ms))
            except IntegrityError:
                continue
            return DeviceAuthorization(grant_id, device_code, user_code, self.code_ms // 1000
                                       or 1, self.poll_seconds)
        raise OAuthError(oauth.TEMPORARILY_UNAVAILABLE, "Try again.", status=503)

    @staticmethod
    def _make_room(conn: sa.Connection, now: int, address: str | None) -> None:
        g = db.device_grants.c
        conn.execute(db.device_grants.delete().where(g.expires_at < now - KEEP_EXPIRED_MS))
        waiting = sa.select(sa.func.count()).select_from(db.device_grants).where(
            g.status == PENDING, g.expires_at > now)
        if conn.execute(waiting).scalar_one() >= MAX_PENDING or (
                address and conn.execute(waiting.where(g.client_address == address[:64]))
                .scalar_one() >= MAX_PENDING_PER_ADDRESS):
            # An unauthenticated endpoint that writes: bounded, so it cannot fill the table.
            raise OAuthError(oauth.TEMPORARILY_UNAVAILABLE, "Too many device logins are "
                             "waiting for approval; try again in a few minutes.", status=503)

    def redeem(self, device_code: str, client_id: str) -> IssuedToken:
        """One poll of the token endpoint (RFC 8628 section 3.4-3.5): the token once the user
        approved, else why not.

        Raises:
            OAuthError: authorization_pending, slow_down, access_denied, expired_token,
                invalid_grant (unknown, used, or another client's code).
        """
        now = db.now_ms()
        refusal: OAuthError | None = None
        with _write(self.engine) as conn:
            row = conn.execute(sa.select(db.device_grants).where(
                db.device_grants.c.device_code_hash == _digest(device_code))).first()
            if row is None:
                raise OAuthError(oauth.INVALID_GRANT, "Unknown device code.")
            _note(device_login=row.id, client_id=row.client_id)
            if row.user_name:
                note_principal(row.user_name)  # known once someone approved or denied it
            if client_id != row.client_id:
                raise OAuthError(oauth.INVALID_GRANT, "This device code was issued to another "
                                 "client.")
            if row.status == ISSUED:
                raise OAuthError(oauth.INVALID_GRANT, "This device code has been used.")
            if row.status == DENIED:
                raise OAuthError(oauth.ACCESS_DENIED, "The user denied this device login.")
            if row.expires_at <= now:
                raise OAuthError(oauth.EXPIRED_TOKEN, "The device code has expired: start "
                                 "the login again.")
            if row.status == PENDING:
                values: dict[str, Any] = {"last_poll_at": now}
                if row.last_poll_at is not None and now - row.last_poll_at < row.interval_s * 1000:
                    values["interval_s"] = row.interval_s + SLOW_DOWN_STEP_S
                    refusal = OAuthError(oauth.SLOW_DOWN, "Polling too fast: wait at least "
                                         f"{values['interval_s']} s between polls.",
                                         extra={"interval": values["interval_s"]})
                else:
                    refusal = OAuthError(oauth.AUTHORIZATION_PENDING,
                                         "The user has not approved this device login yet.")
                conn.execute(db.device_grants.update().where(db.device_grants.c.id == row.id)
                             .values(**values))
        if refusal is not None:  # raised once the poll's bookkeeping has committed
            raise refusal
        return self._issue(row.id, row.user_name, row.approved_days, row.client_id)

    def _issue(self, grant_id: str, user: str, days: float, client_id: str) -> IssuedToken:
        change: dict[str, Any] = {"op": "device_token", "device_login": grant_id, "user": user,
                                  "expires_in_days": days}
        with audited_write(self.engine, change) as conn:
            active = conn.execute(sa.select(db.users.c.name).where(
                db.users.c.name == user, db.users.c.disabled_at.is_(None))).first()
            if active is None:
                raise OAuthError(oauth.ACCESS_DENIED, "The approving user is disabled or gone.")
            issued = issue_token_in(conn, user, int(days * _DAY_MS),
                                    f"device login ({client_id})", DEVICE, f"login {grant_id}")
            # Single use: only the poll that moves the login from approved to issued gets it
            # (a concurrent poll finds no approved row, and its token is rolled back).
            if not conn.execute(db.device_grants.update().where(
                    db.device_grants.c.id == grant_id, db.device_grants.c.status == APPROVED)
                    .values(status=ISSUED, token_id=issued.token_id)).rowcount:
                raise OAuthError(oauth.INVALID_GRANT, "This device code has been used.")
            change["token_id"] = issued.token_id
        return issued

    # -- the approving user ----------------------------------------------------------
    def pending(self, user_code: str) -> DeviceRequest:
        """The pending, unexpired login with this user code.

        Raises:
            NotFound: none (never was, expired, or already decided).
        """
        code = normalize_user_code(user_code)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(db.device_grants).where(
                db.device_grants.c.user_code == code)).first() if code else None
        if row is None or row.status != PENDING or row.expires_at <= db.now_ms():
            raise NotFound("No device login waits for this code: check it, or start the login "
                           "again on the device (codes expire after a few minutes and work once).")
        _note(device_login=row.id, client_id=row.client_id)
        return DeviceRequest(row.id, row.user_code, row.client_id, row.client_name,
                             row.client_address, row.requested_days, row.created_at,
                             row.expires_at)

    def decide(self, user_code: str, user: str, *, approve: bool,
               days: float | None = None) -> DeviceRequest:
        """Approve the login for ``user`` with a token of ``days`` (at most what it asked for;
        by default that), or deny it.

        Raises:
            NotFound: no pending login has this code.
            InvalidInput: a lifetime out of range.
        """
        found = self.pending(user_code)
        if days is None:
            days = found.requested_days
        if approve and not 0 < days <= found.requested_days:
            raise InvalidInput(f"The token's lifetime must be more than 0 and at most the "
                               f"{found.requested_days:g} days the device asked for.")
        change = {"op": "device_approve" if approve else "device_deny",
                  "device_login": found.grant_id, "user": user,
                  "expires_in_days": days if approve else None}
        with audited_write(self.engine, change) as conn:
            g = db.device_grants.c
            if not conn.execute(db.device_grants.update().where(
                    g.id == found.grant_id, g.status == PENDING, g.expires_at > db.now_ms())
                    .values(status=APPROVED if approve else DENIED, user_name=user,
                            approved_days=days if approve else None,
                            decided_at=db.now_ms())).rowcount:
                raise NotFound("This device login was decided meanwhile, or has expired.")
        return found
