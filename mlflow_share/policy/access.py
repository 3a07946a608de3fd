"""Effective access: who may do what on a registered model or experiment, and through what.

One answer, shown everywhere (the Permissions tab, ``/share/access``, ``mlflow-share access``
and ``grants``, the JSON API): each team that may act, the actions, and the route that gives
them (owning the resource, a direct grant, a published sharing package with its id, pinned
versions and expiry), plus the org admins. ``explain`` says why one user may or may not do
one action: whether it may is the decision point's own answer (``PolicyEngine.is_allowed``), the
routes say why (a test checks both agree on every user, action and route).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.auth.authorizer import Authorizer
from mlflow_share.auth.identity import Principal
from mlflow_share.policy.enforcer import IMPLIED_ACTIONS, PERMISSIONS, PolicyEngine

ACTIONS = ("read", "execute", "write", "manage")  # what a reader of the resource may ask about


@dataclass(frozen=True)
class Route:
    """One way a team reaches a resource."""

    team: str
    via: str  # "owner", "grant" or "package"
    actions: tuple[str, ...]  # what the route allows (each member still capped by their role)
    permission: str | None = None  # the permission granted (grant, package)
    granted_by: str | None = None
    package_id: str | None = None
    versions: tuple[int, ...] | None = None  # a package's pinned versions (None: all)
    expires_at: int | None = None

    def covers(self, action: str, version: int | None) -> bool:
        return action in self.actions and (
            self.versions is None or version is None or version in self.versions)


@dataclass
class Access:
    kind: str
    resource_id: str
    owner_team: str | None
    routes: list[Route] = field(default_factory=list)
    admins: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "resource_id": self.resource_id,
                "owner_team": self.owner_team, "admins": self.admins,
                "teams": [_route_dict(route) for route in self.routes]}


def _route_dict(route: Route) -> dict[str, Any]:
    found = asdict(route)
    found["actions"] = list(route.actions)
    found["versions"] = None if route.versions is None else list(route.versions)
    return found


def _implied(permission: str) -> tuple[str, ...]:
    return tuple(a for a in ACTIONS if a in IMPLIED_ACTIONS[permission])


def effective_access(policy: PolicyEngine, kind: str, resource_id: str,
                     version: int | None = None) -> Access:
    """Every route to the resource (for ``version``: only packages pinning it count)."""
    owner = policy.owner_of(kind, resource_id)
    access = Access(kind, resource_id, owner)
    if owner is not None:
        access.routes.append(Route(owner, "owner", ACTIONS))
    g, pg, p = db.grants.c, db.package_grants.c, db.packages.c
    now = db.now_ms()
    with policy.engine.connect() as conn:
        for row in conn.execute(sa.select(g.team, g.permission, g.granted_by).where(
                g.kind == kind, g.resource_id == resource_id).order_by(g.team, g.permission)):
            access.routes.append(Route(row.team, "grant", _implied(row.permission),
                                       row.permission, row.granted_by))
        for row in conn.execute(
                sa.select(pg.team, pg.permission, pg.package_id, pg.expires_at, p.versions,
                          p.published_by)
                .join(db.packages, p.id == pg.package_id)
                .where(pg.kind == kind, pg.resource_id == resource_id,
                       p.status == "published",
                       sa.or_(pg.expires_at.is_(None), pg.expires_at > now))
                .order_by(pg.team, pg.package_id, pg.permission)):
            versions = tuple(sorted(int(v) for v in json.loads(row.versions)))
            if version is not None and version not in versions:
                continue
            access.routes.append(Route(row.team, "package", _implied(row.permission),
                                       row.permission, row.published_by, row.package_id,
                                       versions, row.expires_at))
    access.admins = sorted(policy.snapshot().admins)
    return access


def sees_every_team(policy: PolicyEngine, principal: Principal, kind: str,
                    resource_id: str) -> bool:
    """Whether the caller may see every team that reaches the resource (its routes, its
    grants, its consumers' usage): its owner team's members and whoever manages it. A
    consuming team sees the owner and its own routes, not the other consumers."""
    owner = policy.owner_of(kind, resource_id)
    return (owner is not None and owner in principal.teams) or principal.is_admin \
        or Authorizer(policy).may(principal, kind, resource_id, "manage")


def explain(policy: PolicyEngine, user: str, kind: str, resource_id: str, action: str,
            version: int | None = None, *, name_teams: bool = True) -> dict[str, Any]:
    """Whether ``user`` may ``action`` on the resource (``version``: its bytes), through
    which route, and why not through each of the others. ``name_teams``: whether the asker
    may learn which teams reach the resource (a reader of it may)."""
    if action not in PERMISSIONS:
        raise ValueError(action)
    if not policy.has_user(user):
        return {"user": user, "action": action, "allowed": False, "via": None,
                "reasons": [f"{user} is not an active user (unknown, or disabled)."]}
    principal = policy.principal(user)
    access = effective_access(policy, kind, resource_id, version)
    allowed = policy.is_allowed(principal, kind, resource_id, access.owner_team, action,
                                version)
    reasons: list[str] = []
    via: dict[str, Any] | None = None
    if principal.is_admin:
        via = {"via": "admin"}
        reasons.append(f"{user} is an org admin: admins may do everything.")
    for route in access.routes:
        role = principal.teams.get(route.team)
        if role is None:
            continue
        member = f"{user} is {role} of {route.team}"
        if not route.covers(action, version):
            reasons.append(f"{member}; {_describe(route)} gives {', '.join(route.actions)}"
                           + (f" on version(s) {_versions(route)}" if route.versions else "")
                           + f", not {action}" + (f" on version {version}" if version else "")
                           + ".")
        elif not policy.enforce(user, route.team, action):
            reasons.append(f"{member}: a {role} may not {action}, whatever "
                           f"{_describe(route)} gives.")
        else:
            via = via or _route_dict(route)
            reasons.append(f"{member}; {_describe(route)} lets its {role}s {action}.")
    if not principal.is_admin and not any(r.team in principal.teams for r in access.routes):
        reaching = ", ".join(sorted({r.team for r in access.routes})) or "none"
        reasons.append(f"{user} is in none of the teams with access"
                       + (f" ({reaching})." if name_teams else "."))
    # The decision point decides; the routes above only say why.
    return {"user": user, "action": action, "version": version, "allowed": allowed,
            "via": via if allowed else None, "reasons": reasons}


def _versions(route: Route) -> str:
    return ", ".join(str(v) for v in route.versions or ())


def _describe(route: Route) -> str:
    """The route as a reader names it."""
    from datetime import datetime, timezone

    if route.via == "owner":
        return "owning the resource"
    if route.via == "grant":
        return f"the {route.permission} grant (by {route.granted_by})"
    until = "" if route.expires_at is None else ", until " + datetime.fromtimestamp(
        route.expires_at / 1000, timezone.utc).isoformat(timespec="seconds")
    return f"sharing package {route.package_id} ({route.permission}{until})"
