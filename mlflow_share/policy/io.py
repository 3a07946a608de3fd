"""Policy as code: export the whole policy as reviewable YAML, import one as a whole.

An import describes the desired state of teams, memberships, org admins and grants (and,
with a ``trust:`` list, the trust rules of workload identity: ``auth/trust.py``). It is
validated completely before anything is written, the difference is computed and returned,
and it is applied in one transaction (or not at all with ``dry_run``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import yaml

from mlflow_share import db
from mlflow_share.auth.trust import apply_rules, desired_rules, export_rules
from mlflow_share.directory import EXPERIMENT, MODEL, Directory, lock_policy
from mlflow_share.errors import InvalidInput, InvalidPolicy
from mlflow_share.policy.enforcer import (
    ADMIN_ROLE,
    ORG_DOMAIN,
    PERMISSIONS,
    ROLES,
    validate_choice,
    validate_identifier,
)

FORMAT_VERSION = 1

Membership = tuple[str, str, str]  # (team, user, role)
GrantKey = tuple[str, str, str, str]  # (kind, resource_id, team, permission)


def export_policy(directory: Directory) -> str:
    """The current policy as YAML, sorted so that diffs between exports are meaningful."""
    with directory.engine.connect() as conn:
        state = _current(conn)
        names: dict[str, str] = dict(conn.execute(  # type: ignore[arg-type]
            sa.select(db.resources.c.resource_id, db.resources.c.name)
                                  .where(db.resources.c.kind == MODEL)).all())
        trust = export_rules(conn)
    members_by_team: dict[str, list[dict[str, str]]] = {t: [] for t in state["teams"]}
    for team, user, role in sorted(state["members"]):
        members_by_team.setdefault(team, []).append({"user": user, "role": role})
    grants = []
    for kind, resource_id, team, permission in sorted(state["grants"]):
        target = ({"model": names.get(resource_id, resource_id)} if kind == MODEL
                  else {"experiment_id": resource_id})
        grants.append({**target, "team": team, "permission": permission})
    document = {
        "version": FORMAT_VERSION,
        "admins": sorted(state["admins"]),
        "teams": [{"name": t, "members": members_by_team[t]} for t in sorted(members_by_team)],
        "grants": grants,
        "trust": trust,  # workload identity: issuer/audience/subject → service account
    }
    header = "# mlflow-share policy: teams, memberships, org admins and grants.\n"
    return header + yaml.safe_dump(document, sort_keys=False)


def _current(conn: sa.Connection) -> dict[str, Any]:
    rules = conn.execute(sa.select(db.casbin_rules.c.v0, db.casbin_rules.c.v1,
                                   db.casbin_rules.c.v2).where(db.casbin_rules.c.ptype == "g")).all()
    return {
        "teams": set(conn.execute(sa.select(db.teams.c.name)).scalars()),
        "users": set(conn.execute(sa.select(db.users.c.name)).scalars()),
        "admins": {u for u, r, d in rules if d == ORG_DOMAIN and r == ADMIN_ROLE},
        "members": {(d, u, r) for u, r, d in rules if d != ORG_DOMAIN},
        "grants": set(conn.execute(sa.select(db.grants.c.kind, db.grants.c.resource_id,
                                             db.grants.c.team, db.grants.c.permission)).all()),
    }


def _parse(text: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidPolicy(f"The policy is not valid YAML: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise InvalidPolicy(f"The policy must be a mapping with 'version: {FORMAT_VERSION}'.")
    unknown = set(document) - {"version", "admins", "teams", "grants", "trust"}
    if unknown:
        raise InvalidPolicy(f"Unknown policy keys: {', '.join(sorted(unknown))}.")
    return document


def _desired(document: dict[str, Any], model_ids: dict[str, str], experiments: set[str],
             users: set[str]) -> tuple[set[str], set[str], set[Membership], set[GrantKey]]:
    errors: list[str] = []

    def check(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except InvalidInput as exc:  # collect every validation error before failing
            errors.append(exc.message)
            return None

    admins = set()
    for user in document.get("admins") or []:
        if check(validate_identifier, "user name", user) and user not in users:
            errors.append(f"Admin {user!r} is not a user.")
        admins.add(user)
    teams: set[str] = set()
    members: set[Membership] = set()
    for entry in document.get("teams") or []:
        if not isinstance(entry, dict) or "name" not in entry:
            errors.append(f"Team entries need a 'name': {entry!r}.")
            continue
        team = entry["name"]
        check(validate_identifier, "team name", team)
        if team in teams:
            errors.append(f"Team {team!r} is listed twice.")
        teams.add(team)
        seen_users: set[str] = set()
        for member in entry.get("members") or []:
            if not isinstance(member, dict):
                errors.append(f"Members of {team!r} must be mappings with user and role.")
                continue
            user, role = member.get("user"), member.get("role")
            check(validate_identifier, "user name", user)
            check(validate_choice, "role", role, ROLES)
            if user not in users:
                errors.append(f"Member {user!r} of team {team!r} is not a user.")
            if user in seen_users:
                errors.append(f"User {user!r} is listed twice in team {team!r}.")
            seen_users.add(user)
            members.add((str(team), str(user), str(role)))
    grants: set[GrantKey] = set()
    for entry in document.get("grants") or []:
        if not isinstance(entry, dict):
            errors.append(f"Grant entries must be mappings: {entry!r}.")
            continue
        team, permission = entry.get("team"), entry.get("permission")
        check(validate_choice, "permission", permission, PERMISSIONS)
        if team not in teams:
            errors.append(f"Grant to {team!r}: the team is not in the policy.")
        if "model" in entry:
            model_id = model_ids.get(entry["model"])
            if model_id is None:
                errors.append(f"Grant on model {entry['model']!r}: no such owned model.")
                continue
            grants.add((MODEL, model_id, str(team), str(permission)))
        elif "experiment_id" in entry:
            experiment_id = str(entry["experiment_id"])
            if experiment_id not in experiments:
                errors.append(f"Grant on experiment {experiment_id!r}: no such owned experiment.")
                continue
            grants.add((EXPERIMENT, experiment_id, str(team), str(permission)))
        else:
            errors.append(f"Grant entries name a 'model' or an 'experiment_id': {entry!r}.")
    if not admins:
        errors.append("The policy must keep at least one org admin.")
    if errors:
        raise InvalidPolicy("The policy was not applied:\n- " + "\n- ".join(errors))
    return admins, teams, members, grants


def import_policy(directory: Directory, text: str, *, by: str, dry_run: bool = False) -> list[str]:
    """Validate ``text`` as a whole, apply it in one transaction, return the changes.

    Raises:
        InvalidPolicy: on any error; nothing is applied then.
    """
    document = _parse(text)
    with directory.engine.begin() as conn:
        lock_policy(conn)  # the guards below read what other policy writes change
        current = _current(conn)
        resources = conn.execute(sa.select(
            db.resources.c.kind, db.resources.c.resource_id, db.resources.c.name,
            db.resources.c.owner_team)).all()
        model_ids = {str(name): str(rid) for kind, rid, name, _ in resources if kind == MODEL}
        names = {rid: name for name, rid in model_ids.items()}
        experiments = {str(rid) for kind, rid, _, _ in resources if kind == EXPERIMENT}
        owners = {(str(kind), str(rid)): str(owner) for kind, rid, _, owner in resources}
        admins, teams, members, grants = _desired(document, model_ids, experiments,
                                                  {str(u) for u in current["users"]})
        _check_guards(current, teams, members, grants, owners, names)
        changes = _describe(current, admins, teams, members, grants, names)
        # Trust rules: a document without a ``trust:`` list (one exported before there were
        # any) leaves them as they are; with one, they become what it lists.
        trust_errors: list[str] = []
        trust = desired_rules(document["trust"] or [], conn, trust_errors) \
            if "trust" in document else None
        if trust_errors:
            raise InvalidPolicy("The policy was not applied:\n- " + "\n- ".join(trust_errors))
        if trust is not None:
            changes += apply_rules(conn, trust, by=by, dry_run=True)
        if dry_run or not changes:
            conn.rollback()
            return changes
        for team in sorted(teams - current["teams"]):
            conn.execute(db.teams.insert().values(name=team, created_at=db.now_ms()))
        rules = db.casbin_rules.c
        for user in current["admins"] - admins:
            conn.execute(db.casbin_rules.delete().where(
                rules.ptype == "g", rules.v0 == user, rules.v1 == ADMIN_ROLE, rules.v2 == ORG_DOMAIN))
        for user in admins - current["admins"]:
            conn.execute(db.casbin_rules.insert().values(ptype="g", v0=user, v1=ADMIN_ROLE,
                                                         v2=ORG_DOMAIN))
        for team, user, role in current["members"] - members:
            conn.execute(db.casbin_rules.delete().where(
                rules.ptype == "g", rules.v0 == user, rules.v1 == role, rules.v2 == team))
        for team, user, role in members - current["members"]:
            conn.execute(db.casbin_rules.insert().values(ptype="g", v0=user, v1=role, v2=team))
        g = db.grants.c
        for kind, rid, team, permission in current["grants"] - grants:
            conn.execute(db.grants.delete().where(g.kind == kind, g.resource_id == rid,
                                                  g.team == team, g.permission == permission))
        for kind, rid, team, permission in grants - current["grants"]:
            conn.execute(db.grants.insert().values(kind=kind, resource_id=rid, team=team,
                                                   permission=permission, granted_by=by,
                                                   granted_at=db.now_ms()))
        if trust is not None:
            apply_rules(conn, trust, by=by, dry_run=False)
        db.bump(conn, db.POLICY_VERSION)
    return changes


def _maintained(members: set[Membership]) -> set[str]:
    return {team for team, _, role in members if role == "maintainer"}


def _check_guards(current: dict[str, Any], teams: set[str], members: set[Membership],
                  grants: set[GrantKey], owners: dict[tuple[str, str], str],
                  names: dict[str, str]) -> None:
    """The rules every other way of changing the policy keeps, kept by an import too: a team
    that has a maintainer keeps one, and no team is granted what it owns."""
    errors = [f"Team {team!r} would have no maintainer: keep one (or make another member "
              "maintainer)." for team in sorted(_maintained(current["members"]) & teams
                                                - _maintained(members))]
    for kind, rid, team, permission in sorted(grants):
        if owners.get((kind, rid)) == team:
            errors.append(f"Grant of {permission} to {team!r} on "
                          f"{names.get(rid, rid)!r}: the team owns it.")
    if errors:
        raise InvalidPolicy("The policy was not applied:\n- " + "\n- ".join(errors))


def _describe(current: dict[str, Any], admins: set[str], teams: set[str],
              members: set[Membership], grants: set[GrantKey], names: dict[str, str]) -> list[str]:
    def target(kind: str, rid: str) -> str:
        return f"model {names.get(rid, rid)!r}" if kind == MODEL else f"experiment {rid!r}"

    changes = [f"+ team {t}" for t in sorted(teams - current["teams"])]
    changes += [f"+ admin {u}" for u in sorted(admins - current["admins"])]
    changes += [f"- admin {u}" for u in sorted(current["admins"] - admins)]
    changes += [f"- member {u} of {t} ({r})" for t, u, r in sorted(current["members"] - members)]
    changes += [f"+ member {u} of {t} ({r})" for t, u, r in sorted(members - current["members"])]
    changes += [f"- grant {p} on {target(k, rid)} to {t}"
                for k, rid, t, p in sorted(current["grants"] - grants)]
    changes += [f"+ grant {p} on {target(k, rid)} to {t}"
                for k, rid, t, p in sorted(grants - current["grants"])]
    return changes
