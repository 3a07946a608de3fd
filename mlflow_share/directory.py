"""Writes to identity and policy: users, teams, memberships, tokens, owners and grants.

Each function is one transaction that also bumps the version counter every worker watches,
so a change is visible on every process at its next request, and appends its audit event, so
a permission change and its record commit together or not at all. Inputs are validated here,
before anything reaches casbin or SQL.
"""

from __future__ import annotations

import secrets
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mlflow_share import db
from mlflow_share.config import MIN_PASSWORD_LENGTH
from mlflow_share.audit.log import audited_write
from mlflow_share.auth.identity import TOKEN_PREFIX, hash_password, new_token
from mlflow_share.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from mlflow_share.policy.enforcer import (
    ADMIN_ROLE,
    ORG_DOMAIN,
    PERMISSIONS,
    ROLES,
    validate_choice,
    validate_identifier,
)

MODEL = "registered_model"
EXPERIMENT = "experiment"
RESOURCE_KINDS = (MODEL, EXPERIMENT)
_DAY_MS = 86_400_000
T = TypeVar("T")


@dataclass(frozen=True)
class IssuedToken:
    token_id: str
    token: str
    user: str
    expires_at: int | None


def _maintainers(conn: sa.Connection, team: str) -> set[str]:
    r = db.casbin_rules.c
    return set(conn.execute(sa.select(r.v0).where(
        r.ptype == "g", r.v2 == team, r.v1 == "maintainer")).scalars().all())


POLICY_LOCK_KEY = 7219350002  # PostgreSQL advisory lock of policy writes (unique to mlflow-share)


def lock_policy(conn: sa.Connection) -> None:
    """Serialize the transactions that change who may do what. Their guards (a team keeps a
    maintainer, the org keeps an admin) read rows other transactions may be deleting: two
    maintainers leaving a team at once must not both see the other still there. SQLite's
    writer lock already serializes them; PostgreSQL takes a transaction-level advisory lock."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({POLICY_LOCK_KEY})")


class Directory:
    """Transactional writes (and a few reads) on mlflow-share's tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _write(self, change: dict[str, Any]) -> Iterator[sa.Connection]:
        """One audited write transaction that holds the policy lock (``lock_policy``)."""
        with audited_write(self.engine, change) as conn:
            lock_policy(conn)
            yield conn

    # -- users and teams -------------------------------------------------------------
    def create_user(
        self, name: str, password: str | None = None, *, service_account: bool = False,
        admin: bool = False,
    ) -> None:
        validate_identifier("user name", name)
        if service_account and password:
            raise InvalidInput("A service account has no password; create a token for it.")
        if not service_account and not password:
            raise InvalidInput(f"User {name!r} needs a password.")
        if password is not None and len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(f"Passwords must be at least {MIN_PASSWORD_LENGTH} characters long.")
        change = {"op": "create_user", "name": name, "admin": admin,
                  "service_account": service_account}
        with self._write(change) as conn:
            try:
                conn.execute(db.users.insert().values(
                    name=name,
                    password_hash=hash_password(password) if password else None,
                    is_admin=admin,
                    is_service_account=service_account,
                    created_at=db.now_ms(),
                ))
            except IntegrityError:
                raise Conflict(f"User {name!r} already exists.") from None
            if admin:
                self._add_rule(conn, name, ADMIN_ROLE, ORG_DOMAIN)
            db.bump(conn, db.POLICY_VERSION)

    def sso_login(self, name: str, subject: str, teams: dict[str, str], admin: bool,
                  then: Callable[[sa.Connection], T]) -> T:
        """Provision or update an SSO user from the identity provider's claims, then run
        ``then`` (which opens the session) in the same audited transaction.

        The claims are the truth for an SSO user: memberships of teams the claims do not name
        are removed, roles follow the claims, org admin follows the admin group (a user
        provisioned through SCIM keeps the teams its SCIM groups give it; it has no password,
        so it logs in here). Teams that do not exist are ignored (and named in the event).
        A local account of the same name
        (with a password) or a service account is never taken over by an SSO login, nor an
        SSO user by another identity at the provider (``subject``, bound at provisioning) that
        claims the same name. Two first logins at once: one provisions, the other retries.
        """
        validate_identifier("user name", name)
        for team, role in teams.items():
            validate_identifier("team name", team)
            validate_choice("role", role, ROLES)
        try:
            return self._sso_login(name, subject, teams, admin, then)
        except IntegrityError:  # another worker provisioned the same user meanwhile
            return self._sso_login(name, subject, teams, admin, then)

    def _sso_login(self, name: str, subject: str, teams: dict[str, str], admin: bool,
                   then: Callable[[sa.Connection], T]) -> T:
        change: dict[str, Any] = {"op": "sso_login", "user": name, "subject": subject}
        with self._write(change) as conn:
            row = conn.execute(sa.select(db.users).where(db.users.c.name == name)).first()
            if row is not None and (row.password_hash or row.is_service_account):
                raise PermissionDenied(f"{name!r} is a local account: it cannot log in "
                                       "through the identity provider.")
            if row is not None and row.disabled_at is not None:
                raise PermissionDenied(f"{name!r} is disabled: an org admin enables it again.")
            if row is not None and row.sso_subject not in (None, subject):
                raise PermissionDenied(f"{name!r} belongs to another identity at the identity "
                                       "provider.")
            changed = row is None
            if row is None:
                conn.execute(db.users.insert().values(
                    name=name, password_hash=None, is_admin=admin, is_service_account=False,
                    created_at=db.now_ms(), sso_subject=subject))
                change["provisioned"] = True
            elif row.sso_subject is None:
                conn.execute(db.users.update().where(db.users.c.name == name)
                             .values(sso_subject=subject))
            known: set[str] = set(conn.execute(sa.select(db.teams.c.name).where(
                db.teams.c.name.in_(list(teams)))).scalars())
            wanted = {team: role for team, role in teams.items() if team in known}
            if len(wanted) < len(teams):
                change["unknown_teams"] = sorted(set(teams) - known)
            rules = db.casbin_rules
            current = {r.v2: r.v1 for r in conn.execute(sa.select(rules.c.v1, rules.c.v2).where(
                rules.c.ptype == "g", rules.c.v0 == name, rules.c.v2 != ORG_DOMAIN))}
            if row is not None and row.provisioned_by == "scim":
                # The identity provider's SCIM groups decide this user's teams: a login
                # whose ID token carries no (or other) groups must not undo them.
                change["teams"] = "scim"
                wanted = current
            if wanted != current:
                change["teams"] = {"before": current, "after": wanted}
                conn.execute(rules.delete().where(rules.c.ptype == "g", rules.c.v0 == name,
                                                  rules.c.v2 != ORG_DOMAIN))
                for team, role in sorted(wanted.items()):
                    self._add_rule(conn, name, role, team)
                changed = True
            was_admin = conn.execute(sa.select(rules.c.id).where(
                rules.c.ptype == "g", rules.c.v0 == name, rules.c.v1 == ADMIN_ROLE,
                rules.c.v2 == ORG_DOMAIN)).first() is not None
            if was_admin != admin:
                change["admin"] = {"before": was_admin, "after": admin}
                conn.execute(db.users.update().where(db.users.c.name == name)
                             .values(is_admin=admin))
                if admin:
                    self._add_rule(conn, name, ADMIN_ROLE, ORG_DOMAIN)
                else:
                    conn.execute(rules.delete().where(
                        rules.c.ptype == "g", rules.c.v0 == name, rules.c.v1 == ADMIN_ROLE,
                        rules.c.v2 == ORG_DOMAIN))
                changed = True
            if changed:
                db.bump(conn, db.POLICY_VERSION)
            return then(conn)

    def password_login(self, name: str, then: Callable[[sa.Connection], T]) -> T:
        """Record a successful local login and run ``then`` (which opens the session) in the
        same audited transaction."""
        with self._write({"op": "login", "user": name, "via": "password"}) as conn:
            return then(conn)

    def end_session(self, user: str, then: Callable[[sa.Connection], T]) -> T:
        with self._write({"op": "logout", "user": user}) as conn:
            return then(conn)

    def set_password(self, name: str, password: str) -> None:
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(f"Passwords must be at least {MIN_PASSWORD_LENGTH} characters long.")
        with self._write({"op": "set_password", "name": name}) as conn:
            updated = conn.execute(
                db.users.update().where(db.users.c.name == name, ~db.users.c.is_service_account)
                .values(password_hash=hash_password(password))
            ).rowcount
            if not updated:
                raise NotFound(f"User {name!r} does not exist or is a service account.")
            # A new password ends the user's browser sessions (a compromised one's too).
            conn.execute(db.web_sessions.delete().where(db.web_sessions.c.user_name == name))
            db.bump(conn, db.POLICY_VERSION)

    def list_users(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(db.users).order_by(db.users.c.name)).all()
        return [
            {"name": r.name, "is_admin": bool(r.is_admin),
             "is_service_account": bool(r.is_service_account), "created_at": r.created_at,
             "disabled_at": r.disabled_at}
            for r in rows
        ]

    def set_disabled(self, name: str, disabled: bool, *, by: str, keep_maintainers: bool = True,
                     then: Callable[[sa.Connection], object] | None = None) -> None:
        """Disable a user (their passwords, tokens and browser sessions stop authenticating
        on every worker at its next request; their sessions end) or enable them again.

        ``keep_maintainers=False``: the identity provider deprovisions (SCIM): a team's last
        maintainer leaving is not refused (org admins still manage the team). ``then`` runs
        in the same transaction."""
        if disabled and name == by:
            raise InvalidInput("You cannot disable yourself.")
        op = "disable_user" if disabled else "enable_user"
        with self._write({"op": op, "name": name}) as conn:
            self._require(conn, db.users, name, "User")
            if disabled:
                self._keep_an_admin(conn, name)
                if keep_maintainers:
                    self._keep_maintainers_of(conn, name)
            conn.execute(db.users.update().where(db.users.c.name == name)
                         .values(disabled_at=db.now_ms() if disabled else None))
            conn.execute(db.web_sessions.delete().where(db.web_sessions.c.user_name == name))
            if then is not None:
                then(conn)
            db.bump(conn, db.POLICY_VERSION)

    def provision_user(self, name: str, *, disabled: bool,
                       then: Callable[[sa.Connection], T]) -> T:
        """Create a user of the identity provider (SCIM: no password, logs in by SSO), or
        take over the SSO user of that name, then run ``then`` in the same transaction.

        A local account (with a password) or a service account is never taken over, as an
        SSO login never takes one over. An SSO user taken over leaves the teams its groups
        claim gave it (its SCIM groups decide them from now on) and keeps its state
        (``disabled`` is for new users; the caller disables one through ``set_disabled``).
        """
        validate_identifier("user name", name)
        change: dict[str, Any] = {"op": "provision_user", "name": name, "via": "scim"}
        with self._write(change) as conn:
            row = conn.execute(sa.select(db.users).where(db.users.c.name == name)).first()
            if row is not None and (row.password_hash or row.is_service_account):
                raise Conflict(f"User {name!r} exists as a local account or service account: "
                               "the identity provider cannot take it over.")
            if row is None:
                conn.execute(db.users.insert().values(
                    name=name, password_hash=None, is_admin=False, is_service_account=False,
                    created_at=db.now_ms(), disabled_at=db.now_ms() if disabled else None,
                    provisioned_by="scim"))
                change["created"] = True
            elif row.provisioned_by != "scim":
                # From now on its SCIM groups decide its teams: what its last SSO login's
                # groups claim gave it must not outlive a group the provider never sends.
                rules = db.casbin_rules
                change["teams_cleared"] = sorted(conn.execute(sa.select(rules.c.v2).where(
                    rules.c.ptype == "g", rules.c.v0 == name, rules.c.v2 != ORG_DOMAIN
                )).scalars().all())
                conn.execute(rules.delete().where(rules.c.ptype == "g", rules.c.v0 == name,
                                                  rules.c.v2 != ORG_DOMAIN))
                conn.execute(db.users.update().where(db.users.c.name == name)
                             .values(provisioned_by="scim"))
            result = then(conn)
            db.bump(conn, db.POLICY_VERSION)
            return result

    def delete_user(self, name: str, *, by: str, keep_maintainers: bool = True,
                    then: Callable[[sa.Connection], object] | None = None) -> None:
        """Delete a user with their tokens, sessions and memberships (the audit log keeps
        what they did). A team's last maintainer must be replaced first, unless
        ``keep_maintainers=False`` (as for ``set_disabled``); ``then`` runs in the same
        transaction."""
        if name == by:
            raise InvalidInput("You cannot delete yourself.")
        with self._write({"op": "delete_user", "name": name}) as conn:
            self._require(conn, db.users, name, "User")
            self._keep_an_admin(conn, name)
            if keep_maintainers:
                self._keep_maintainers_of(conn, name)
            if then is not None:
                then(conn)
            conn.execute(db.casbin_rules.delete().where(
                db.casbin_rules.c.ptype == "g", db.casbin_rules.c.v0 == name))
            conn.execute(db.tokens.delete().where(db.tokens.c.user_name == name))
            conn.execute(db.web_sessions.delete().where(db.web_sessions.c.user_name == name))
            # What SCIM knew of the user goes too: a later account of the same name (local,
            # a service account) is not that identity provider's record.
            conn.execute(db.scim_members.delete().where(db.scim_members.c.user_name == name))
            conn.execute(db.scim_users.delete().where(db.scim_users.c.user_name == name))
            conn.execute(db.users.delete().where(db.users.c.name == name))
            db.bump(conn, db.POLICY_VERSION)

    @classmethod
    def _keep_maintainers_of(cls, conn: sa.Connection, leaving: str) -> None:
        led: list[str] = list(conn.execute(sa.select(db.casbin_rules.c.v2).where(
            db.casbin_rules.c.ptype == "g", db.casbin_rules.c.v0 == leaving,
            db.casbin_rules.c.v1 == "maintainer")).scalars().all())
        for team in led:
            cls._keep_a_maintainer(conn, team, leaving)

    @staticmethod
    def _keep_an_admin(conn: sa.Connection, leaving: str) -> None:
        admins: set[str] = set(conn.execute(sa.select(db.users.c.name).where(
            db.users.c.is_admin, db.users.c.disabled_at.is_(None))).scalars().all())
        if admins == {leaving}:
            raise Conflict(f"{leaving!r} is the last active org admin: make another admin first.")

    @staticmethod
    def _keep_a_maintainer(conn: sa.Connection, team: str, leaving: str) -> None:
        """A team always keeps a maintainer once it has one: someone must be able to manage
        its members and grants."""
        r, u = db.casbin_rules.c, db.users.c
        active: set[str] = set(conn.execute(
            sa.select(r.v0).join(db.users, u.name == r.v0)
            .where(r.ptype == "g", r.v2 == team, r.v1 == "maintainer",
                   u.disabled_at.is_(None))).scalars().all())
        if active <= {leaving} and leaving in _maintainers(conn, team):
            raise Conflict(f"{leaving!r} is the last active maintainer of team {team!r}: "
                           "make another member maintainer (or enable one) first.")

    def has_admin(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(db.users).where(db.users.c.is_admin)
            ).scalar_one() > 0

    def create_team(self, name: str) -> None:
        validate_identifier("team name", name)
        with self._write({"op": "create_team", "name": name}) as conn:
            try:
                conn.execute(db.teams.insert().values(name=name, created_at=db.now_ms()))
            except IntegrityError:
                raise Conflict(f"Team {name!r} already exists.") from None
            db.bump(conn, db.POLICY_VERSION)

    def list_teams(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            teams = conn.execute(sa.select(db.teams).order_by(db.teams.c.name)).all()
            rules = conn.execute(
                sa.select(db.casbin_rules).where(db.casbin_rules.c.ptype == "g",
                                                 db.casbin_rules.c.v2 != ORG_DOMAIN)
            ).all()
        members: dict[str, list[dict[str, str]]] = {}
        for rule in rules:
            members.setdefault(rule.v2, []).append({"user": rule.v0, "role": rule.v1})
        return [
            {"name": t.name, "created_at": t.created_at,
             "members": sorted(members.get(t.name, []), key=lambda m: m["user"])}
            for t in teams
        ]

    def add_member(self, team: str, user: str, role: str) -> None:
        validate_identifier("team name", team)
        validate_identifier("user name", user)
        validate_choice("role", role, ROLES)
        change: dict[str, Any] = {"op": "add_member", "team": team, "user": user, "role": role}
        with self._write(change) as conn:
            self._require(conn, db.teams, team, "Team")
            self._require(conn, db.users, user, "User")
            change["before"] = conn.execute(sa.select(db.casbin_rules.c.v1).where(
                db.casbin_rules.c.ptype == "g", db.casbin_rules.c.v0 == user,
                db.casbin_rules.c.v2 == team)).scalar()
            if change["before"] == "maintainer" and role != "maintainer":
                self._keep_a_maintainer(conn, team, user)
            # One role per user and team: replace any previous one.
            conn.execute(db.casbin_rules.delete().where(
                db.casbin_rules.c.ptype == "g", db.casbin_rules.c.v0 == user,
                db.casbin_rules.c.v2 == team,
            ))
            self._add_rule(conn, user, role, team)
            db.bump(conn, db.POLICY_VERSION)

    def remove_member(self, team: str, user: str) -> None:
        with self._write({"op": "remove_member", "team": team, "user": user}) as conn:
            self._keep_a_maintainer(conn, team, user)
            removed = conn.execute(db.casbin_rules.delete().where(
                db.casbin_rules.c.ptype == "g", db.casbin_rules.c.v0 == user,
                db.casbin_rules.c.v2 == team,
            )).rowcount
            if not removed:
                raise NotFound(f"User {user!r} is not a member of team {team!r}.")
            db.bump(conn, db.POLICY_VERSION)

    @staticmethod
    def _add_rule(conn: sa.Connection, v0: str, v1: str, v2: str) -> None:
        conn.execute(db.casbin_rules.insert().values(ptype="g", v0=v0, v1=v1, v2=v2))

    @staticmethod
    def _require(conn: sa.Connection, table: sa.Table, name: str, what: str) -> None:
        if conn.execute(sa.select(table.c.name).where(table.c.name == name)).first() is None:
            raise NotFound(f"{what} {name!r} does not exist.")

    # -- tokens ----------------------------------------------------------------------
    def create_token(
        self, user: str, expires_in_days: float | None = None, description: str | None = None
    ) -> IssuedToken:
        if expires_in_days is not None and not 0 < expires_in_days <= 3650:
            raise InvalidInput("expires_in_days must be between 0 and 3650.")
        token_id, token, token_hash = new_token()
        expires_at = (
            db.now_ms() + int(expires_in_days * _DAY_MS) if expires_in_days is not None else None
        )
        change = {"op": "create_token", "user": user, "token_id": token_id,
                  "expires_at": expires_at}
        with self._write(change) as conn:
            self._require(conn, db.users, user, "User")
            conn.execute(db.tokens.insert().values(
                token_id=token_id, token_hash=token_hash, user_name=user,
                description=(description or "")[:256], created_at=db.now_ms(),
                expires_at=expires_at,
            ))
            db.bump(conn, db.POLICY_VERSION)
        return IssuedToken(token_id, token, user, expires_at)

    def revoke_token(self, token_id: str, *, owner: str | None = None) -> None:
        with self._write({"op": "revoke_token", "token_id": token_id}) as conn:
            query = db.tokens.update().where(
                db.tokens.c.token_id == token_id, db.tokens.c.revoked_at.is_(None)
            )
            if owner is not None:
                query = query.where(db.tokens.c.user_name == owner)
            if not conn.execute(query.values(revoked_at=db.now_ms())).rowcount:
                if token_id.startswith(TOKEN_PREFIX):  # the secret itself: never echo it back
                    raise InvalidInput("That is a token, not its id: revoke takes the token "
                                       "id that `mlflow-share token list` shows.")
                raise NotFound(f"No active token has the id {token_id!r} (see `mlflow-share "
                               "token list`; a revoked token stays revoked).")
            db.bump(conn, db.POLICY_VERSION)

    def list_tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(db.tokens).order_by(db.tokens.c.created_at)
        if user is not None:
            query = query.where(db.tokens.c.user_name == user)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {"token_id": r.token_id, "user": r.user_name, "description": r.description,
             "created_at": r.created_at, "expires_at": r.expires_at, "revoked_at": r.revoked_at}
            for r in rows
        ]

    # -- ownership -------------------------------------------------------------------
    def record_owner(
        self, kind: str, resource_id: str | None, owner_team: str, created_by: str,
        name: str | None = None,
    ) -> str:
        """Record the owner team of a new resource; returns its mlflow-share ID."""
        change = {"op": "record_owner", "kind": kind, "name": name, "owner_team": owner_team}
        with self._write(change) as conn:
            return record_owner_in(conn, kind, resource_id, owner_team, created_by, name)

    def rename_model(self, old_name: str, new_name: str) -> None:
        with self._write({"op": "rename_model", "before": old_name, "after": new_name}) as conn:
            rename_model_in(conn, old_name, new_name)

    def forget_model(self, name: str) -> None:
        with self._write({"op": "forget_model", "name": name}) as conn:
            forget_model_in(conn, name)

    def resource(self, kind: str, resource_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(db.resources).where(
                db.resources.c.kind == kind, db.resources.c.resource_id == resource_id)).first()
        return dict(row._mapping) if row else None

    # -- grants ----------------------------------------------------------------------
    def grant(self, kind: str, resource_id: str, team: str, permission: str, by: str) -> bool:
        validate_choice("resource kind", kind, RESOURCE_KINDS)
        validate_identifier("team name", team)
        validate_choice("permission", permission, PERMISSIONS)
        change = {"op": "grant", "kind": kind, "resource_id": resource_id, "team": team,
                  "permission": permission}
        with self._write(change) as conn:
            self._require(conn, db.teams, team, "Team")
            owner = conn.execute(sa.select(db.resources.c.owner_team).where(
                db.resources.c.kind == kind, db.resources.c.resource_id == resource_id)).scalar()
            if owner == team:
                raise InvalidInput(f"Team {team!r} owns this {kind.replace('_', ' ')}: its "
                                   "members' roles already decide what they may do.")
            try:
                with conn.begin_nested():
                    conn.execute(db.grants.insert().values(
                        kind=kind, resource_id=resource_id, team=team, permission=permission,
                        granted_by=by, granted_at=db.now_ms(),
                    ))
            except IntegrityError:
                return False  # already granted: idempotent
            db.bump(conn, db.POLICY_VERSION)
        return True

    def revoke(self, kind: str, resource_id: str, team: str, permission: str) -> bool:
        validate_choice("permission", permission, PERMISSIONS)
        change = {"op": "revoke", "kind": kind, "resource_id": resource_id, "team": team,
                  "permission": permission}
        with self._write(change) as conn:
            removed = conn.execute(db.grants.delete().where(
                db.grants.c.kind == kind, db.grants.c.resource_id == resource_id,
                db.grants.c.team == team, db.grants.c.permission == permission,
            )).rowcount
            if removed:
                db.bump(conn, db.POLICY_VERSION)
        return bool(removed)

    def list_grants(self, kind: str | None = None, resource_id: str | None = None
                    ) -> list[dict[str, Any]]:
        query = sa.select(db.grants, db.resources.c.name).join(
            db.resources,
            sa.and_(db.resources.c.kind == db.grants.c.kind,
                    db.resources.c.resource_id == db.grants.c.resource_id),
            isouter=True,
        )
        if kind is not None:
            query = query.where(db.grants.c.kind == kind)
        if resource_id is not None:
            query = query.where(db.grants.c.resource_id == resource_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(db.grants.c.granted_at)).all()
        return [
            {"kind": r.kind, "resource_id": r.resource_id, "name": r.name, "team": r.team,
             "permission": r.permission, "granted_by": r.granted_by, "granted_at": r.granted_at}
            for r in rows
        ]


def generate_password() -> str:
    return secrets.token_urlsafe(18)


# Ownership bookkeeping on a caller's connection: the audited stores run these inside MLflow's
# own transaction, so a registered model or experiment never exists without its owner.
def record_owner_in(conn: sa.Connection, kind: str, resource_id: str | None, owner_team: str,
                    created_by: str, name: str | None = None) -> str:
    resource_id = resource_id or uuid.uuid4().hex
    if name is not None:
        # A leftover row for the same name (a model deleted outside the server) must not
        # hand its grants to the new model: drop it first.
        stale: list[str] = conn.execute(  # type: ignore[assignment]
            sa.select(db.resources.c.resource_id).where(
                db.resources.c.kind == kind, db.resources.c.name == name)).scalars().all()
        for old_id in stale:
            _forget(conn, kind, old_id)
        if stale:
            db.bump(conn, db.RESOURCE_VERSION)
            db.bump(conn, db.POLICY_VERSION)
    conn.execute(db.resources.insert().values(
        kind=kind, resource_id=resource_id, name=name, owner_team=owner_team,
        created_by=created_by, created_at=db.now_ms(),
    ))
    return resource_id


def rename_model_in(conn: sa.Connection, old_name: str, new_name: str) -> None:
    conn.execute(db.resources.update().where(
        db.resources.c.kind == MODEL, db.resources.c.name == old_name
    ).values(name=new_name))
    # Gateway usage is kept by name: it follows the model (a new model of the old name
    # starts with none).
    conn.execute(db.gateway_usage.update().where(db.gateway_usage.c.model == old_name)
                 .values(model=new_name))
    db.bump(conn, db.RESOURCE_VERSION)


def forget_model_in(conn: sa.Connection, name: str) -> None:
    ids: list[str] = conn.execute(  # type: ignore[assignment]
        sa.select(db.resources.c.resource_id).where(
            db.resources.c.kind == MODEL, db.resources.c.name == name)).scalars().all()
    for resource_id in ids:
        _forget(conn, MODEL, resource_id)
    # Its usage goes with it: a later model of the same name must not show who called this one.
    conn.execute(db.gateway_usage.delete().where(db.gateway_usage.c.model == name))
    db.bump(conn, db.RESOURCE_VERSION)
    db.bump(conn, db.POLICY_VERSION)


def _forget(conn: sa.Connection, kind: str, resource_id: str) -> None:
    conn.execute(db.grants.delete().where(
        db.grants.c.kind == kind, db.grants.c.resource_id == resource_id))
    conn.execute(db.resources.delete().where(
        db.resources.c.kind == kind, db.resources.c.resource_id == resource_id))
