"""What SCIM provisioning stores: its bearer tokens, its users and groups under stable ids,
and the team memberships its groups give (``share_scim_*``; ``db.py``).

Users are mlflow-share users (``Directory.provision_user``, ``set_disabled``,
``delete_user``), provisioned without a password: they log in through SSO. A group is a
team and a role; a provisioned user's role in a team is the strongest role among the
team's groups it is a member of, and it leaves the team when it leaves the last of them.
The identity provider decides: its deactivations, deletions and removals are not refused
for leaving a team without a maintainer (an org admin still manages the team), only for
leaving the org without an active admin. Every write is one audited transaction.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_share import db
from mlflow_share.audit.log import audited_write
from mlflow_share.auth.identity import hash_token
from mlflow_share.directory import Directory, lock_policy
from mlflow_share.errors import Conflict, InvalidInput, NotFound
from mlflow_share.policy.enforcer import ROLES
from mlflow_share.scim.protocol import InvalidValue, Mutability, Uniqueness

TOKEN_PREFIX = "mshscim_"  # not the API tokens' "msh_": nothing but /scim/v2/ knows it
_DAY_MS = 86_400_000
_CHUNK = 500  # names per IN (...): well under every driver's parameter limit


@dataclass(frozen=True)
class IssuedScimToken:
    token_id: str
    token: str
    expires_at: int | None


@dataclass(frozen=True)
class ScimUser:
    scim_id: str
    user_name: str
    external_id: str | None
    attributes: dict[str, Any]
    active: bool
    created_at: int
    updated_at: int
    groups: tuple[tuple[str, str], ...] = ()  # (group id, displayName)


@dataclass(frozen=True)
class ScimGroup:
    scim_id: str
    display_name: str
    team: str
    role: str
    external_id: str | None
    created_at: int
    updated_at: int
    members: tuple[tuple[str, str], ...] = ()  # (user id, userName)


def _chunks(items: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == _CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


class ScimStore:
    """Reads and audited writes of SCIM's tables, users through ``Directory``."""

    def __init__(self, engine: Engine, directory: Directory) -> None:
        self.engine = engine
        self.directory = directory

    @contextmanager
    def _write(self, change: dict[str, Any]) -> Iterator[sa.Connection]:
        with audited_write(self.engine, change) as conn:
            lock_policy(conn)
            yield conn

    # -- tokens ----------------------------------------------------------------------
    def create_token(self, *, by: str, description: str | None = None,
                     expires_in_days: float | None = None) -> IssuedScimToken:
        """A new provisioning token; the token itself is returned once, never stored."""
        if expires_in_days is not None and not 0 < expires_in_days <= 3650:
            raise InvalidInput("expires_in_days must be between 0 and 3650.")
        token_id = secrets.token_hex(8)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        expires_at = (db.now_ms() + int(expires_in_days * _DAY_MS)
                      if expires_in_days is not None else None)
        change = {"op": "scim_create_token", "token_id": token_id, "expires_at": expires_at}
        with audited_write(self.engine, change) as conn:
            conn.execute(db.scim_tokens.insert().values(
                token_id=token_id, token_hash=hash_token(token),
                description=(description or "")[:256], created_by=by[:160],
                created_at=db.now_ms(), expires_at=expires_at))
        return IssuedScimToken(token_id, token, expires_at)

    def list_tokens(self) -> list[dict[str, Any]]:
        t = db.scim_tokens.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t.token_id, t.description, t.created_by, t.created_at,
                                          t.expires_at, t.revoked_at)
                                .order_by(t.created_at)).all()
        return [dict(row._mapping) for row in rows]

    def revoke_token(self, token_id: str) -> None:
        t = db.scim_tokens.c
        with audited_write(self.engine, {"op": "scim_revoke_token", "token_id": token_id}) as conn:
            revoked = conn.execute(db.scim_tokens.update().where(
                t.token_id == token_id, t.revoked_at.is_(None)).values(revoked_at=db.now_ms())
            ).rowcount
            if not revoked:
                if token_id.startswith(TOKEN_PREFIX):  # the secret itself: never echo it
                    raise InvalidInput("That is a token, not its id: revoke takes the id that "
                                       "`mlflow-share scim token list` shows.")
                raise NotFound(f"No active SCIM token has the id {token_id[:64]!r}.")

    def token_id_of(self, secret: str) -> str | None:
        """The id of the active, unexpired provisioning token ``secret``, else ``None``.
        Read on every request: a revoked token stops at once, on every worker."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        t = db.scim_tokens.c
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.token_id, t.expires_at).where(
                t.token_hash == hash_token(secret), t.revoked_at.is_(None))).first()
        if row is None or (row.expires_at is not None and row.expires_at <= db.now_ms()):
            return None
        return str(row.token_id)

    # -- users -----------------------------------------------------------------------
    def users(self, *, where: tuple[str, str] | None = None) -> list[ScimUser]:
        """Provisioned users, oldest first; ``where``: ``(attribute, value)`` for
        ``username`` (any case), ``externalid`` or ``id``."""
        s, u = db.scim_users.c, db.users.c
        query = (sa.select(s.scim_id, s.user_name, s.external_id, s.attributes, s.created_at,
                           s.updated_at, u.disabled_at)
                 .join(db.users, sa.and_(u.name == s.user_name, u.provisioned_by == "scim"))
                 .order_by(s.created_at, s.scim_id))
        if where is not None:
            attribute, value = where
            column = {"username": sa.func.lower(s.user_name), "externalid": s.external_id,
                      "id": s.scim_id}[attribute]
            query = query.where(column == (value.lower() if attribute == "username" else value))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            names = [row.user_name for row in rows]
            groups: dict[str, list[tuple[str, str]]] = {}
            m, g = db.scim_members.c, db.scim_groups.c
            for batch in ([names] if where is None else _chunks(names)):
                member_query = (sa.select(m.user_name, g.scim_id, g.display_name)
                                .join(db.scim_groups, g.scim_id == m.group_id)
                                .order_by(g.display_name))
                if where is not None:
                    member_query = member_query.where(m.user_name.in_(batch))
                for name, group_id, display in conn.execute(member_query):
                    groups.setdefault(str(name), []).append((str(group_id), str(display)))
        return [ScimUser(row.scim_id, row.user_name, row.external_id, json.loads(row.attributes),
                         row.disabled_at is None, row.created_at, row.updated_at,
                         tuple(groups.get(row.user_name, ()))) for row in rows]

    def user(self, scim_id: str) -> ScimUser:
        found = self.users(where=("id", scim_id))
        if not found:
            raise NotFound(f"No provisioned user has the id {scim_id[:64]!r}.")
        return found[0]

    def create_user(self, user_name: str, *, external_id: str | None,
                    attributes: dict[str, Any], active: bool | None, by: str) -> ScimUser:
        """Provision ``user_name`` (or take over the SSO user of that name).

        Raises:
            Uniqueness: the name is provisioned already, or belongs to a local account or
                service account, or differs only in case from an existing user's.
        """
        with self.engine.connect() as conn:
            clash = conn.execute(sa.select(db.users.c.name).where(
                sa.func.lower(db.users.c.name) == user_name.lower(),
                db.users.c.name != user_name)).scalar()
        if clash is not None:
            raise Uniqueness(f"User {user_name!r} differs only in case from the existing "
                             f"user {clash!r}.")
        self._forget_deleted(user_name)
        scim_id, now = str(uuid.uuid4()), db.now_ms()

        def record(conn: sa.Connection) -> None:
            s = db.scim_users.c
            if conn.execute(sa.select(s.scim_id).where(s.user_name == user_name)).first():
                raise Uniqueness(f"User {user_name!r} is provisioned already.")
            conn.execute(db.scim_users.insert().values(
                scim_id=scim_id, user_name=user_name, external_id=external_id,
                attributes=json.dumps(attributes), created_at=now, updated_at=now))

        try:
            self.directory.provision_user(user_name, disabled=active is False, then=record)
        except Conflict as exc:  # a local account or service account of that name
            raise Uniqueness(exc.message) from None
        except InvalidInput as exc:
            raise InvalidValue(exc.message) from None
        user = self.user(scim_id)
        if active is not None and user.active != active:  # an SSO user taken over
            self.directory.set_disabled(user_name, not active, by=by, keep_maintainers=False)
            user = self.user(scim_id)
        return user

    def _forget_deleted(self, user_name: str) -> None:
        """Drop what SCIM kept of a user deleted outside SCIM (``mlflow-share user delete``):
        its id and group memberships must not come back with a new user of that name."""
        s = db.scim_users.c
        with self.engine.connect() as conn:
            stale = conn.execute(sa.select(s.scim_id).where(
                s.user_name == user_name,
                ~sa.exists().where(db.users.c.name == user_name))).first()
        if stale is None:
            return
        with self._write({"op": "scim_forget_deleted_user", "name": user_name}) as conn:
            if conn.execute(sa.select(db.users.c.name).where(
                    db.users.c.name == user_name)).first() is None:
                conn.execute(db.scim_members.delete().where(
                    db.scim_members.c.user_name == user_name))
                conn.execute(db.scim_users.delete().where(s.user_name == user_name))

    def update_user(self, scim_id: str, *, user_name: str, external_id: str | None,
                    attributes: dict[str, Any], active: bool | None, by: str) -> ScimUser:
        """Replace a user's attributes; ``active`` (if given) disables or enables them.

        Raises:
            Mutability: ``user_name`` is not the user's (names are not changed: every
                membership, token and audit event keys by it).
        """
        current = self.user(scim_id)
        if user_name.lower() != current.user_name.lower():
            raise Mutability(f"userName cannot change ({current.user_name!r}): deprovision the "
                             "user and provision the new name.")
        changed = [name for name, before, after in (
            ("externalId", current.external_id, external_id),
            ("attributes", current.attributes, attributes)) if before != after]

        def write(conn: sa.Connection) -> None:
            if not conn.execute(db.scim_users.update().where(
                    db.scim_users.c.scim_id == scim_id).values(
                    external_id=external_id, attributes=json.dumps(attributes),
                    updated_at=db.now_ms())).rowcount:
                raise NotFound(f"No provisioned user has the id {scim_id[:64]!r}.")

        if active is not None and active != current.active:
            self.directory.set_disabled(current.user_name, not active, by=by,
                                        keep_maintainers=False, then=write)
        elif changed:
            with self._write({"op": "scim_update_user", "name": current.user_name,
                              "changed": changed}) as conn:
                write(conn)
        return self.user(scim_id)

    def delete_user(self, scim_id: str, *, by: str) -> None:
        """Delete the user with their tokens, sessions, memberships and group memberships."""
        current = self.user(scim_id)

        def forget(conn: sa.Connection) -> None:
            conn.execute(db.scim_members.delete().where(
                db.scim_members.c.user_name == current.user_name))
            conn.execute(db.scim_users.delete().where(db.scim_users.c.scim_id == scim_id))

        self.directory.delete_user(current.user_name, by=by, keep_maintainers=False, then=forget)

    # -- groups ----------------------------------------------------------------------
    def groups(self, *, where: tuple[str, str] | None = None) -> list[ScimGroup]:
        """Groups, oldest first, with their members; ``where`` as for ``users``
        (``displayname`` in any case, ``externalid``, ``id``)."""
        g, m, s = db.scim_groups.c, db.scim_members.c, db.scim_users.c
        query = sa.select(db.scim_groups).order_by(g.created_at, g.scim_id)
        if where is not None:
            attribute, value = where
            column = {"displayname": sa.func.lower(g.display_name), "externalid": g.external_id,
                      "id": g.scim_id}[attribute]
            query = query.where(column == (value.lower() if attribute == "displayname" else value))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            ids = [row.scim_id for row in rows]
            members: dict[str, list[tuple[str, str]]] = {}
            for batch in ([ids] if where is None else _chunks(ids)):
                member_query = (sa.select(m.group_id, s.scim_id, s.user_name)
                                .join(db.scim_users, s.user_name == m.user_name)
                                .join(db.users, db.users.c.name == m.user_name)
                                .order_by(s.user_name))
                if where is not None:
                    member_query = member_query.where(m.group_id.in_(batch))
                for group_id, user_id, name in conn.execute(member_query):
                    members.setdefault(str(group_id), []).append((str(user_id), str(name)))
        return [ScimGroup(row.scim_id, row.display_name, row.team, row.role, row.external_id,
                          row.created_at, row.updated_at, tuple(members.get(row.scim_id, ())))
                for row in rows]

    def group(self, scim_id: str) -> ScimGroup:
        found = self.groups(where=("id", scim_id))
        if not found:
            raise NotFound(f"No group has the id {scim_id[:64]!r}.")
        return found[0]

    def create_group(self, display_name: str, *, team: str, role: str,
                     external_id: str | None, member_ids: list[str]) -> ScimGroup:
        """Create a group (and its team, if missing) with its members, who become members
        of the team with the group's role (or a stronger one another group gives)."""
        scim_id, now = str(uuid.uuid4()), db.now_ms()
        change: dict[str, Any] = {"op": "scim_create_group", "group": display_name,
                                  "id": scim_id, "team": team, "role": role}
        with self._write(change) as conn:
            self._unique_name(conn, display_name, None)
            names = self._member_names(conn, member_ids)
            self._ensure_team(conn, team, change)
            conn.execute(db.scim_groups.insert().values(
                scim_id=scim_id, display_name=display_name, team=team, role=role,
                external_id=external_id, created_at=now, updated_at=now))
            self._add_members(conn, scim_id, names)
            change["members"] = sorted(names)
            self._sync(conn, change, names, {team})
            db.bump(conn, db.POLICY_VERSION)
        return self.group(scim_id)

    def update_group(self, scim_id: str, *, display_name: str, team: str, role: str,
                     external_id: str | None, member_ids: list[str]) -> ScimGroup:
        """Replace a group's name (so its team or role may change) and members."""
        change: dict[str, Any] = {"op": "scim_update_group", "group": display_name,
                                  "id": scim_id}
        with self._write(change) as conn:
            row = conn.execute(sa.select(db.scim_groups).where(
                db.scim_groups.c.scim_id == scim_id)).first()
            if row is None:
                raise NotFound(f"No group has the id {scim_id[:64]!r}.")
            if display_name != row.display_name:
                self._unique_name(conn, display_name, scim_id)
                change["renamed"] = {"before": row.display_name, "after": display_name}
            names = self._member_names(conn, member_ids)
            before: set[str] = set(conn.execute(sa.select(db.scim_members.c.user_name).where(
                db.scim_members.c.group_id == scim_id)).scalars())
            added, removed = names - before, before - names
            if team != row.team:
                self._ensure_team(conn, team, change)
            conn.execute(db.scim_groups.update().where(db.scim_groups.c.scim_id == scim_id)
                         .values(display_name=display_name, team=team, role=role,
                                 external_id=external_id, updated_at=db.now_ms()))
            for batch in _chunks(sorted(removed)):
                conn.execute(db.scim_members.delete().where(
                    db.scim_members.c.group_id == scim_id,
                    db.scim_members.c.user_name.in_(batch)))
            self._add_members(conn, scim_id, added)
            change.update(added=sorted(added), removed=sorted(removed))
            moved = (team, role) != (row.team, row.role)
            self._sync(conn, change, (before | names) if moved else (added | removed),
                       {row.team, team})
            db.bump(conn, db.POLICY_VERSION)
        return self.group(scim_id)

    def delete_group(self, scim_id: str) -> None:
        """Delete a group; its members keep the team only through its other groups. The team
        stays (it owns models and grants)."""
        change: dict[str, Any] = {"op": "scim_delete_group", "id": scim_id}
        with self._write(change) as conn:
            row = conn.execute(sa.select(db.scim_groups).where(
                db.scim_groups.c.scim_id == scim_id)).first()
            if row is None:
                raise NotFound(f"No group has the id {scim_id[:64]!r}.")
            change["group"] = row.display_name
            members: set[str] = set(conn.execute(sa.select(db.scim_members.c.user_name).where(
                db.scim_members.c.group_id == scim_id)).scalars())
            conn.execute(db.scim_members.delete().where(db.scim_members.c.group_id == scim_id))
            conn.execute(db.scim_groups.delete().where(db.scim_groups.c.scim_id == scim_id))
            self._sync(conn, change, members, {row.team})
            db.bump(conn, db.POLICY_VERSION)

    @staticmethod
    def _unique_name(conn: sa.Connection, display_name: str, scim_id: str | None) -> None:
        g = db.scim_groups.c
        query = sa.select(g.scim_id).where(sa.func.lower(g.display_name) == display_name.lower())
        if scim_id is not None:
            query = query.where(g.scim_id != scim_id)
        if conn.execute(query).first() is not None:
            raise Uniqueness(f"A group named {display_name!r} exists already.")

    @staticmethod
    def _member_names(conn: sa.Connection, member_ids: list[str]) -> set[str]:
        s = db.scim_users.c
        found: dict[str, str] = {}
        for batch in _chunks(member_ids):
            found.update((str(i), str(n)) for i, n in conn.execute(
                sa.select(s.scim_id, s.user_name).join(db.users, sa.and_(
                    db.users.c.name == s.user_name, db.users.c.provisioned_by == "scim"))
                .where(s.scim_id.in_(batch))))
        missing = [member for member in member_ids if member not in found]
        if missing:
            raise InvalidValue(f"No provisioned user has the id {missing[0][:64]!r}"
                               + (f" (and {len(missing) - 1} more)." if len(missing) > 1 else "."))
        return set(found.values())

    @staticmethod
    def _ensure_team(conn: sa.Connection, team: str, change: dict[str, Any]) -> None:
        if conn.execute(sa.select(db.teams.c.name).where(db.teams.c.name == team)).first():
            return
        conn.execute(db.teams.insert().values(name=team, created_at=db.now_ms()))
        change["created_team"] = team

    @staticmethod
    def _add_members(conn: sa.Connection, group_id: str, names: Iterable[str]) -> None:
        rows = [{"group_id": group_id, "user_name": name} for name in sorted(names)]
        if rows:
            conn.execute(db.scim_members.insert(), rows)

    @staticmethod
    def _sync(conn: sa.Connection, change: dict[str, Any], users: Iterable[str],
              teams: Iterable[str]) -> None:
        """Make each user's role in each team what its groups of that team give: the
        strongest of their roles, or no membership when it is in none of them."""
        r, m, g = db.casbin_rules.c, db.scim_members.c, db.scim_groups.c
        moves: list[dict[str, Any]] = change.setdefault("memberships", [])
        for team in sorted(set(teams)):
            for batch in _chunks(sorted(set(users))):
                given: dict[str, str] = {}
                for name, role in conn.execute(
                        sa.select(m.user_name, g.role).join(db.scim_groups, g.scim_id == m.group_id)
                        .join(db.users, db.users.c.name == m.user_name)
                        .where(g.team == team, m.user_name.in_(batch))):
                    if ROLES.index(str(role)) >= ROLES.index(given.get(str(name), str(role))):
                        given[str(name)] = str(role)
                held: dict[str, str] = {str(v0): str(v1) for v0, v1 in conn.execute(
                    sa.select(r.v0, r.v1).where(r.ptype == "g", r.v2 == team, r.v0.in_(batch)))}
                for name in batch:
                    wanted, current = given.get(name), held.get(name)
                    if wanted == current:
                        continue
                    conn.execute(db.casbin_rules.delete().where(
                        r.ptype == "g", r.v0 == name, r.v2 == team))
                    if wanted is not None:
                        conn.execute(db.casbin_rules.insert().values(
                            ptype="g", v0=name, v1=wanted, v2=team))
                    moves.append({"user": name, "team": team, "before": current,
                                  "after": wanted})
