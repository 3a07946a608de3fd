"""MLflow's basic-auth database, read once and said in mlflow-share's terms (nothing written).

basic-auth gives permissions to users, mlflow-share to teams. A user's own permissions (the
hidden ``__user_<id>__`` role of MLflow's role-based permissions, or the per-user tables of a
database from before them) go to a personal team ``user-NAME`` (or a team the admin names);
a named role becomes a team of the users assigned to it. MANAGE proposes the owner team, the
other permissions grants (READ -> read, USE -> read and, on models, execute, EDIT -> write,
MANAGE -> manage). Everything lands in the adoption plan, to be reviewed before it is applied.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mlflow_share.auth.identity import verify_password
from mlflow_share.directory import EXPERIMENT, MODEL
from mlflow_share.errors import InvalidInput
from mlflow_share.mlflow_compat import tables as mt
from mlflow_share.policy.enforcer import RESERVED_TEAM_NAMES

PERSONAL_TEAM_PREFIX = "user-"
DEFAULT_WORKSPACE = "default"
_SYNTHETIC_ROLE = re.compile(r"__user_(\d+)__")
_NOT_IN_TEAM_NAMES = re.compile(r"[^A-Za-z0-9._@+-]+")
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")

# basic-auth resource types mlflow-share owns: prompts are registered models in MLflow.
_KINDS = {"experiment": EXPERIMENT, "registered_model": MODEL, "prompt": MODEL}
_RANK = {"READ": 1, "USE": 2, "EDIT": 3, "MANAGE": 4}
_GRANTS = {"READ": ("read",), "USE": ("read",), "EDIT": ("write",), "MANAGE": ("manage",)}
_MODEL_GRANTS = {**_GRANTS, "USE": ("read", "execute")}  # using a model is calling it


@dataclass(frozen=True)
class AuthUser:
    """A basic-auth user (``password_hash`` is werkzeug's, never written to the plan)."""

    name: str
    is_admin: bool
    password_hash: str | None


@dataclass(frozen=True)
class AuthGrant:
    """One basic-auth permission on one experiment or registered model, and its new home.

    Attributes:
        team: the mlflow-share team it goes to.
        via: where it came from, as the plan says it (``alice`` or ``role analysts``).
        kind: ``experiment`` or ``registered_model``.
        key: the experiment ID, or the registered model's name.
        permission: basic-auth's: READ, USE, EDIT or MANAGE.
    """

    team: str
    via: str
    kind: str
    key: str
    permission: str

    def permissions(self) -> tuple[str, ...]:
        """mlflow-share's permissions for it (a MANAGE holder that becomes the owner needs none)."""
        return (_MODEL_GRANTS if self.kind == MODEL else _GRANTS)[self.permission]


@dataclass
class AuthDatabase:
    """What a basic-auth database holds, mapped to mlflow-share's users, teams and grants.

    Attributes:
        users: every user by name.
        teams: team -> {user: role} (personal teams and the named roles' teams).
        grants: permissions on experiments and registered models.
        skipped: what is not carried, and why (for the plan's ``skipped:`` list).
        layout: ``roles`` (MLflow's role-based permissions) or ``per-user tables``.
    """

    users: dict[str, AuthUser] = field(default_factory=dict)
    teams: dict[str, dict[str, str]] = field(default_factory=dict)
    grants: list[AuthGrant] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    layout: str = "roles"


def personal_team(user: str) -> str:
    return f"{PERSONAL_TEAM_PREFIX}{user}"


def role_team(role: str, workspace: str) -> str:
    """A team name for a named basic-auth role (roles live in workspaces; teams do not)."""
    name = role if workspace in ("", DEFAULT_WORKSPACE) else f"{workspace}-{role}"
    name = _NOT_IN_TEAM_NAMES.sub("-", name).strip("-._@+")[:128]
    if not name or name.lower() in RESERVED_TEAM_NAMES:
        name = f"role-{name}"[:128]
    return name


def read_basic_auth(uri: str, *, team_of: Mapping[str, str] | None = None) -> AuthDatabase:
    """Read the basic-auth database at ``uri``.

    Args:
        uri: its SQLAlchemy URI (basic-auth's ``database_uri``).
        team_of: user -> team their own permissions go to, instead of ``user-NAME``.

    Raises:
        InvalidInput: not a basic-auth database, or not one this can read.
    """
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise InvalidInput(f"No basic-auth database at {_shown(uri)}: pass basic-auth's "
                           "database_uri (its basic_auth.ini).")
    try:
        engine = sa.create_engine(uri)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise InvalidInput(f"Cannot open {_shown(uri)}: {exc}") from None
    try:
        found, gone = mt.reflect_basic_auth(engine)
        if "users" not in found:
            raise InvalidInput(f"{_shown(uri)} is not an MLflow basic-auth database (it lacks "
                               f"{', '.join(g for g in gone if g.startswith('users'))}).")
        with engine.connect() as conn:
            return _read(conn, found, dict(team_of or {}), _shown(uri))
    finally:
        engine.dispose()


def _rows(conn: sa.Connection, query: Any) -> list[Any]:
    return list(conn.execute(query).all())


def _shown(uri: str) -> str:
    try:
        return sa.engine.make_url(uri).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "the given URI"


def _read(conn: sa.Connection, tables: dict[str, sa.Table], team_of: dict[str, str],
          shown: str) -> AuthDatabase:
    u = tables["users"].c
    by_id = {int(row.id): AuthUser(str(row.username), bool(row.is_admin), row.password_hash)
             for row in _rows(conn, sa.select(u.id, u.username, u.password_hash, u.is_admin))}
    found = AuthDatabase(users={user.name: user for user in by_id.values()})
    for name in sorted(found.users):
        if not _IDENTIFIER.fullmatch(name):
            found.skipped.append(f"user {name!r}: not a valid mlflow-share user name "
                                 "(letters, digits, . _ @ + -), not carried")
    roles = all(name in tables for name in mt.BASIC_AUTH_ROLES)
    legacy = all(name in tables for name in mt.BASIC_AUTH_LEGACY)
    synthetic: dict[int, int] = {}  # role id -> user id
    if roles:
        r = tables["roles"].c
        for role_id, name in _rows(conn, sa.select(r.id, r.name)):
            match = _SYNTHETIC_ROLE.fullmatch(str(name))
            if match:
                synthetic[int(role_id)] = int(match.group(1))
    # Before MLflow's role-based permissions (or before its migration copied them into
    # roles), a user's own permissions are in the per-user tables; after it those tables
    # are a snapshot MLflow no longer reads.
    if roles and (synthetic or not legacy):
        own = _own_from_roles(conn, tables, synthetic, by_id)
    elif legacy:
        found.layout = "per-user tables"
        own = _own_from_legacy(conn, tables, by_id)
    else:
        raise InvalidInput(f"{shown} has neither MLflow's role tables nor its per-user "
                           "permission tables: it is not a basic-auth database this can read.")
    for user_name, kind, key, permission in own:
        user = found.users[user_name]
        if user.is_admin or not _IDENTIFIER.fullmatch(user_name):
            continue  # an org admin sees everything; an invalid name is not carried
        team = team_of.get(user_name) or personal_team(user_name)
        _carry(found, team, user_name, kind, key, permission)
    for user in found.users.values():
        if user.is_admin or not _IDENTIFIER.fullmatch(user.name):
            continue
        mapped = team_of.get(user.name)
        if mapped is None:  # their own team: they own (and create) what is theirs
            found.teams.setdefault(personal_team(user.name), {})[user.name] = "maintainer"
        else:
            manages = any(g.permission == "MANAGE" for g in found.grants if g.via == user.name)
            found.teams.setdefault(mapped, {})[user.name] = "maintainer" if manages else "engineer"
    if roles:
        _named_roles(conn, tables, synthetic, by_id, found)
    return found


def _own_from_roles(conn: sa.Connection, tables: dict[str, sa.Table],
                    synthetic: dict[int, int], by_id: dict[int, AuthUser]
                    ) -> list[tuple[str, str, str, str]]:
    if not synthetic:
        return []
    p = tables["role_permissions"].c
    rows = _rows(conn, sa.select(p.role_id, p.resource_type, p.resource_pattern, p.permission)
                        .where(p.role_id.in_(list(synthetic))).order_by(p.role_id, p.id))
    return [(by_id[synthetic[int(role_id)]].name, str(kind), str(pattern), str(permission))
            for role_id, kind, pattern, permission in rows
            if synthetic.get(int(role_id)) in by_id]


def _own_from_legacy(conn: sa.Connection, tables: dict[str, sa.Table],
                     by_id: dict[int, AuthUser]) -> list[tuple[str, str, str, str]]:
    e = tables["experiment_permissions"].c
    m = tables["registered_model_permissions"].c
    own = [(by_id[int(user_id)].name, "experiment", str(key), str(permission))
           for key, user_id, permission in _rows(conn, 
               sa.select(e.experiment_id, e.user_id, e.permission)) if int(user_id) in by_id]
    own += [(by_id[int(user_id)].name, "registered_model", str(key), str(permission))
            for key, user_id, permission in _rows(conn, 
                sa.select(m.name, m.user_id, m.permission)) if int(user_id) in by_id]
    return own


def _named_roles(conn: sa.Connection, tables: dict[str, sa.Table], synthetic: dict[int, int],
                 by_id: dict[int, AuthUser], found: AuthDatabase) -> None:
    r, p = tables["roles"].c, tables["role_permissions"].c
    a = tables["user_role_assignments"].c
    assigned: dict[int, list[str]] = {}
    for role_id, user_id in _rows(conn, sa.select(a.role_id, a.user_id)):
        user = by_id.get(int(user_id))
        if user is not None and not user.is_admin and _IDENTIFIER.fullmatch(user.name):
            assigned.setdefault(int(role_id), []).append(user.name)
    permissions: dict[int, list[tuple[str, str, str]]] = {}
    for role_id, kind, pattern, permission in _rows(conn, 
            sa.select(p.role_id, p.resource_type, p.resource_pattern, p.permission)):
        permissions.setdefault(int(role_id), []).append((str(kind), str(pattern), str(permission)))
    for role_id, name, workspace in _rows(conn, sa.select(r.id, r.name, r.workspace)
                                                 .order_by(r.workspace, r.name)):
        if int(role_id) in synthetic:
            continue
        team, via = role_team(str(name), str(workspace)), f"role {name}"
        before = len(found.grants)
        for kind, pattern, permission in permissions.get(int(role_id), []):
            _carry(found, team, via, kind, pattern, permission)
        carried = found.grants[before:]
        members = sorted(assigned.get(int(role_id), []))
        if not carried:
            found.skipped.append(f"{via} (workspace {workspace}): nothing on an experiment or "
                                 "registered model to carry; no team made")
            continue
        best = max(_RANK[g.permission] for g in carried)
        member_role = "maintainer" if best >= _RANK["MANAGE"] else (
            "engineer" if best >= _RANK["EDIT"] else "viewer")
        team_members = found.teams.setdefault(team, {})
        for member in members:
            team_members.setdefault(member, member_role)


def _carry(found: AuthDatabase, team: str, via: str, resource_type: str, pattern: str,
           permission: str) -> None:
    """Turn one basic-auth permission into a grant, or say why it is not carried."""
    said = f"{via}: {permission} on {resource_type} {pattern!r}"
    kind = _KINDS.get(resource_type)
    if permission == "NO_PERMISSIONS":
        return  # no access: what mlflow-share gives without a grant
    if kind is None:
        found.skipped.append(f"{said}: mlflow-share has no such resource, not carried")
    elif pattern == "*":
        found.skipped.append(f"{said}: mlflow-share grants on one resource at a time, not "
                             "carried (grant the team each resource, or make it the owner)")
    elif permission == "DENY":
        found.skipped.append(f"{said}: mlflow-share denies what is not granted, nothing to "
                             "carry")
    elif permission not in _RANK:
        found.skipped.append(f"{said}: unknown permission, not carried")
    else:
        found.grants.append(AuthGrant(team, via, kind, pattern, permission))


# -- passwords ---------------------------------------------------------------------------------
_WERKZEUG_SCRYPT = re.compile(
    r"scrypt:(?P<n>\d{1,10}):(?P<r>\d{1,4}):(?P<p>\d{1,4})\$(?P<salt>[A-Za-z0-9]{1,64})"
    r"\$(?P<digest>[0-9a-f]{64,128})")
_PROBE = "mlflow-share probe"


def carried_password_hash(werkzeug_hash: str | None) -> str | None:
    """basic-auth's password hash in mlflow-share's format, if mlflow-share can verify it.

    basic-auth stores werkzeug's ``scrypt:N:r:p$salt$hex`` (64 bytes of scrypt output);
    mlflow-share verifies 32 bytes of scrypt output. scrypt ends in PBKDF2-HMAC-SHA256, whose
    output is a sequence of 32-byte blocks each computed on its own, so the first 32 bytes of
    the 64 are exactly what scrypt gives for 32: the same password verifies, no weaker and
    with no password ever seen. werkzeug's older ``pbkdf2:`` hashes have no such form.

    Returns:
        The hash for ``share_users.password_hash``, or ``None`` when it cannot be carried
        (the user then needs a new password or a token).
    """
    match = _WERKZEUG_SCRYPT.fullmatch(werkzeug_hash or "")
    if match is None or len(match["digest"]) % 2:
        return None
    n, r, p = int(match["n"]), int(match["r"]), int(match["p"])
    salt = match["salt"].encode()
    if not _verifiable(n, r, p):
        return None
    digest = bytes.fromhex(match["digest"])[:32]
    return "scrypt${}${}${}${}${}".format(n, r, p, base64.b64encode(salt).decode(),
                                          base64.b64encode(digest).decode())


@functools.cache
def _verifiable(n: int, r: int, p: int) -> bool:
    """Whether mlflow-share's own verifier accepts scrypt at this cost (it may refuse one
    that needs more memory than it allows): a hash made here of a known probe must verify."""
    if n < 2 or n & (n - 1) or n > 2**20 or r * p >= 2**30 or r < 1 or p < 1:
        return False
    salt = b"probe-salt"
    try:
        digest = hashlib.scrypt(_PROBE.encode(), salt=salt, n=n, r=r, p=p, dklen=32,
                                maxmem=132 * n * r * p + 2**20)
    except ValueError:
        return False
    stored = "scrypt${}${}${}${}${}".format(n, r, p, base64.b64encode(salt).decode(),
                                            base64.b64encode(digest).decode())
    return verify_password(_PROBE, stored)
