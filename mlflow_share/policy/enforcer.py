"""The policy decision: casbin (RBAC with domains) plus an index of owners and grants.

Memberships and org roles are casbin grouping rules stored in SQL; role capabilities are the
few fixed ``p`` rules of ``policy.csv``. Owners and grants are an index keyed by MLflow's IDs.
A decision asks casbin ``(user, team, action)`` for the owner team and for each team whose
grant implies the action, so its cost does not grow with the number of grants.

Every worker holds this state in memory and compares two version counters with the database
on each request; a change made anywhere is seen by every process on its next request.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from typing import Any

import casbin
import sqlalchemy as sa
from casbin import persist
from sqlalchemy.engine import Engine

from mlflow_share import db
from mlflow_share.auth.identity import Credentials, PasswordCache, Principal, hash_token
from mlflow_share.errors import InvalidInput

ROLES = ("viewer", "engineer", "maintainer")
PERMISSIONS = ("read", "execute", "write", "manage")
ACTIONS = ("read", "execute", "write", "create", "manage")
ORG_DOMAIN = "org"
ADMIN_ROLE = "admin"
# A team named like the org domain or a role would blur casbin's domains and roles.
RESERVED_TEAM_NAMES = frozenset({ORG_DOMAIN, ADMIN_ROLE, *ROLES})

# What a grant of a permission lets the grantee team's members do (still capped by their
# own role in that team: a viewer of a team granted `write` only reads).
IMPLIED_ACTIONS: Mapping[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "execute": frozenset({"execute"}),
    "write": frozenset({"read", "write"}),
    "manage": frozenset({"read", "write", "execute", "manage"}),
}

# Letters, digits and . _ @ + - only: nothing casbin's CSV/SQL loader would split on or
# strip (`,` `(` `)` `#`, spaces), no empty or over-long names.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")  # fullmatch: no trailing \n


def validate_identifier(what: str, value: object) -> str:
    """Return ``value`` if it is a safe identifier, else raise ``InvalidInput`` (400)."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise InvalidInput(
            f"Invalid {what} {value!r}: use 1-128 letters, digits or . _ @ + -, "
            "starting with a letter or digit."
        )
    if what == "team name" and value.lower() in RESERVED_TEAM_NAMES:
        raise InvalidInput(f"Invalid {what} {value!r}: the name is reserved.")
    return value


def validate_choice(what: str, value: object, choices: Iterable[str]) -> str:
    allowed = tuple(choices)
    if value not in allowed:
        raise InvalidInput(f"Invalid {what} {value!r}: expected one of {', '.join(allowed)}.")
    return str(value)


class SqlPolicyAdapter(persist.Adapter):  # type: ignore[misc]
    """Loads the fixed ``p`` rules from ``policy.csv`` and the grouping rules from SQL.

    Read-only: mlflow-share writes rules through its own transactions (which also bump the
    policy version), never through casbin's auto-save.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load_policy(self, model: casbin.Model) -> None:
        text = importlib_resources.files("mlflow_share.policy").joinpath("policy.csv").read_text()
        for line in text.splitlines():
            if line.strip():
                persist.load_policy_line(line.strip(), model)
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(db.casbin_rules.c.ptype, db.casbin_rules.c.v0,
                          db.casbin_rules.c.v1, db.casbin_rules.c.v2)
                .order_by(db.casbin_rules.c.id)
            ).all()
        for ptype, *values in rows:
            # Rules were validated on the way in; load them as lists so nothing is re-split.
            kind = str(ptype)
            model.add_policy("g" if kind.startswith("g") else "p", kind, [str(v) for v in values])

    def save_policy(self, model: casbin.Model) -> bool:
        raise NotImplementedError("mlflow-share policy is written through its own API")


def new_enforcer(engine: Engine) -> casbin.SyncedEnforcer:
    model_path = importlib_resources.files("mlflow_share.policy").joinpath("model.conf")
    enforcer = casbin.SyncedEnforcer(str(model_path), SqlPolicyAdapter(engine))
    enforcer.enable_auto_save(False)
    return enforcer


@dataclass
class _Snapshot:
    """Everything that changes with ``policy_version``, swapped in as one object."""

    version: int
    enforcer: casbin.SyncedEnforcer
    users: dict[str, tuple[str | None, bool]]  # name -> (password hash, is_service_account)
    tokens: dict[str, tuple[str, int | None]]  # token hash -> (user, expires_at ms)
    memberships: dict[str, dict[str, str]]  # user -> {team: role}
    admins: frozenset[str]
    grants: dict[tuple[str, str], dict[str, frozenset[str]]]  # (kind, id) -> {team: perms}
    capabilities: dict[str, frozenset[str]]  # role -> actions, compiled from the p rules
    next_expiry: int | None = None  # ms: the earliest package grant to lapse, then reload
    # Grants of published sharing packages: (kind, id) -> {team: {permission: versions}}.
    shared: dict[tuple[str, str], dict[str, dict[str, frozenset[int]]]] = field(
        default_factory=dict)


class PolicyEngine:
    """Identity and authorization state of one process, kept in step with the database."""

    def __init__(self, engine: Engine, password_cache_seconds: int = 300) -> None:
        self.engine = engine
        self._passwords = PasswordCache(password_cache_seconds)
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._resource_version = -1
        self._owners: dict[tuple[str, str], str] = {}
        self._model_ids: dict[str, str] = {}

    # -- synchronisation -------------------------------------------------------------
    def refresh(self) -> _Snapshot:
        """Compare versions with the database and reload what changed."""
        with self.engine.connect() as conn:
            policy_version, resource_version = db.read_versions(conn)
        if resource_version != self._resource_version:
            with self._lock:
                self._owners = {}
                self._model_ids = {}
                self._resource_version = resource_version
        snapshot = self._snapshot
        if self._stale(snapshot, policy_version):
            with self._lock:
                snapshot = self._snapshot
                if self._stale(snapshot, policy_version):
                    snapshot = self._load(policy_version)
                    self._snapshot = snapshot
        assert snapshot is not None
        return snapshot

    @staticmethod
    def _stale(snapshot: _Snapshot | None, version: int) -> bool:
        return snapshot is None or snapshot.version != version or (
            snapshot.next_expiry is not None and db.now_ms() >= snapshot.next_expiry)

    def snapshot(self) -> _Snapshot:
        return self._snapshot or self.refresh()

    def _load(self, version: int) -> _Snapshot:
        enforcer = new_enforcer(self.engine)
        memberships: dict[str, dict[str, str]] = {}
        admins: set[str] = set()
        for user, role, domain in enforcer.get_named_grouping_policy("g"):
            if domain == ORG_DOMAIN and role == ADMIN_ROLE:
                admins.add(user)
            else:
                memberships.setdefault(user, {})[domain] = role
        with self.engine.connect() as conn:
            users = {  # a disabled user is no user: passwords, tokens, sessions stop at once
                row.name: (row.password_hash, bool(row.is_service_account))
                for row in conn.execute(sa.select(db.users).where(db.users.c.disabled_at.is_(None)))
            }
            tokens = {
                row.token_hash: (row.user_name, row.expires_at)
                for row in conn.execute(
                    sa.select(db.tokens).where(db.tokens.c.revoked_at.is_(None))
                )
            }
            grant_rows = [tuple(row) for row in conn.execute(
                sa.select(db.grants.c.kind, db.grants.c.resource_id,
                          db.grants.c.team, db.grants.c.permission)
            )]
            now = db.now_ms()
            pg = db.package_grants.c
            # Only packages still published count, whatever a racing revoke left behind.
            package_rows: Any = conn.execute(
                sa.select(pg.kind, pg.resource_id, pg.team, pg.permission, pg.expires_at,
                          db.packages.c.versions)
                .join(db.packages, db.packages.c.id == pg.package_id)
                .where(db.packages.c.status == "published")).all()
        next_expiry: int | None = None
        shared: dict[tuple[str, str], dict[str, dict[str, set[int]]]] = {}
        for kind, resource_id, team, permission, expires_at, versions in package_rows:
            if expires_at is not None:
                if expires_at <= now:
                    continue
                next_expiry = min(next_expiry or expires_at, expires_at)
            shared.setdefault((str(kind), str(resource_id)), {}).setdefault(
                str(team), {}).setdefault(str(permission), set()).update(
                int(v) for v in json.loads(versions))
        capabilities: dict[str, set[str]] = {}
        for role, action in enforcer.get_policy():
            capabilities.setdefault(role, set()).add(action)
        grants: dict[tuple[str, str], dict[str, set[str]]] = {}
        for kind, resource_id, team, permission in grant_rows:
            grants.setdefault((str(kind), str(resource_id)), {}).setdefault(
                str(team), set()).add(str(permission))
        # A disabled (or deleted) user keeps no team and no admin role for anything that asks
        # on their behalf later (a webhook subscription's read check, say).
        memberships = {user: teams for user, teams in memberships.items() if user in users}
        admins = {user for user in admins if user in users}
        return _Snapshot(
            version=version,
            enforcer=enforcer,
            users=users,
            tokens=tokens,
            memberships=memberships,
            admins=frozenset(admins),
            grants={
                key: {team: frozenset(perms) for team, perms in by_team.items()}
                for key, by_team in grants.items()
            },
            capabilities={role: frozenset(acts) for role, acts in capabilities.items()},
            next_expiry=next_expiry,
            shared={key: {team: {perm: frozenset(vs) for perm, vs in by_perm.items()}
                          for team, by_perm in by_team.items()}
                    for key, by_team in shared.items()},
        )

    # -- identity --------------------------------------------------------------------
    def authenticate(self, credentials: Credentials, now_ms: int) -> Principal | None:
        snapshot = self.snapshot()
        if credentials.kind == "bearer":
            entry = snapshot.tokens.get(hash_token(credentials.secret))
            if entry is None:
                return None
            user, expires_at = entry
            if expires_at is not None and expires_at <= now_ms or user not in snapshot.users:
                return None
            return self.principal(user, via="token")
        stored = snapshot.users.get(credentials.username)
        if stored is None or stored[1]:  # unknown user, or a service account (tokens only)
            return None
        if not self._passwords.verify(credentials.username, credentials.secret, stored[0]):
            return None
        return self.principal(credentials.username)

    def has_user(self, user: str) -> bool:
        return user in self.snapshot().users

    def principal(self, user: str, via: str = "password") -> Principal:
        snapshot = self.snapshot()
        return Principal(
            name=user,
            is_admin=user in snapshot.admins,
            teams=dict(snapshot.memberships.get(user, {})),
            via=via,
        )

    # -- decisions -------------------------------------------------------------------
    def enforce(self, user: str, team: str, action: str) -> bool:
        """One decision of the casbin model ``g(sub, role, team) && act == p.act``.

        The model has no role hierarchy, so it is compiled at load time into
        ``memberships`` (the g rules) and ``capabilities`` (the p rules): a decision is two
        dictionary lookups, whatever the number of rules. ``tests/unit`` checks it against
        ``casbin.Enforcer.enforce`` on the full matrix.
        """
        snapshot = self.snapshot()
        role = snapshot.memberships.get(user, {}).get(team)
        if role is None and team == ORG_DOMAIN and user in snapshot.admins:
            role = ADMIN_ROLE
        return role is not None and action in snapshot.capabilities.get(role, ())

    def is_allowed(
        self, principal: Principal, kind: str, resource_id: str | None,
        owner_team: str | None, action: str, version: int | None = None,
    ) -> bool:
        """May ``principal`` do ``action`` on the resource owned by ``owner_team``?

        ``version``: the model version whose bytes are read or executed. A sharing package's
        grant covers only the versions it pins; with ``version=None`` (the model's metadata:
        finding it, listing its versions) any live package grant counts.
        """
        if principal.is_admin:
            return True
        return self.granting_team(principal, kind, resource_id, owner_team, action,
                                  version) is not None

    def granting_team(
        self, principal: Principal, kind: str, resource_id: str | None,
        owner_team: str | None, action: str, version: int | None = None,
    ) -> str | None:
        """The team through which ``principal`` may ``action`` (the owner team first)."""
        if owner_team is not None and self.enforce(principal.name, owner_team, action):
            return owner_team
        if resource_id is None:
            return None
        snapshot = self.snapshot()
        grants = snapshot.grants.get((kind, resource_id), {})
        shared = snapshot.shared.get((kind, resource_id), {})
        # Only the caller's own teams can carry a grant to it: cost follows its memberships.
        for team in principal.teams:
            permissions = grants.get(team)
            if permissions and any(action in IMPLIED_ACTIONS[p] for p in permissions):
                if self.enforce(principal.name, team, action):
                    return team
            for permission, versions in shared.get(team, {}).items():
                if action in IMPLIED_ACTIONS[permission] and (
                        version is None or version in versions) and \
                        self.enforce(principal.name, team, action):
                    return team
        return None

    def can_create_in(self, principal: Principal, team: str) -> bool:
        return principal.is_admin or self.enforce(principal.name, team, "create")

    # -- resource ownership ----------------------------------------------------------
    def owner_of(self, kind: str, resource_id: str) -> str | None:
        key = (kind, resource_id)
        owners = self._owners  # a refresh that replaces it meanwhile drops this answer
        owner = owners.get(key)
        if owner is None:
            with self.engine.connect() as conn:
                owner = conn.execute(
                    sa.select(db.resources.c.owner_team).where(
                        db.resources.c.kind == kind, db.resources.c.resource_id == resource_id
                    )
                ).scalar()
            if owner is not None:
                owners[key] = owner
        return owner

    def model_id(self, name: str) -> str | None:
        """The mlflow-share ID of a registered model by its current name."""
        model_ids = self._model_ids  # a refresh that replaces it meanwhile drops this answer
        model_id = model_ids.get(name)
        if model_id is None:
            with self.engine.connect() as conn:
                model_id = conn.execute(
                    sa.select(db.resources.c.resource_id).where(
                        db.resources.c.kind == "registered_model", db.resources.c.name == name
                    )
                ).scalar()
            if model_id is not None:
                model_ids[name] = model_id
        return model_id

    def cached_model(self, name: str) -> tuple[str, str] | None:
        """``name``'s ID and owner team if both are cached (deciding on them reads nothing)."""
        model_id = self._model_ids.get(name)
        owner = self._owners.get(("registered_model", model_id)) if model_id else None
        return (model_id, owner) if model_id is not None and owner is not None else None

    def model_ids(self) -> list[str]:
        """mlflow-share's IDs of every registered model it owns."""
        with self.engine.connect() as conn:
            found: Any = conn.execute(sa.select(db.resources.c.resource_id).where(
                db.resources.c.kind == "registered_model")).scalars().all()
        return [str(model_id) for model_id in found]

    def readable_teams(self, principal: Principal) -> list[str]:
        """Teams whose membership lets ``principal`` read (every role reads)."""
        return sorted(team for team in principal.teams if self.enforce(principal.name, team, "read"))
