"""Adoption: owner teams for what existed before mlflow-share, planned for review, then applied.

Experiments and registered models made before mlflow-share (and MLflow's ``Default``
experiment) have no owner team, so only org admins see them. ``make_plan`` proposes an owner
for each and writes a reviewable YAML plan (first match wins: basic-auth's MANAGE holder, a
tag naming the team, the rules in order, the creator's only team, a default team); the
``Default`` experiment always waits for an explicit decision. ``apply_plan`` validates a
whole plan and applies it in one audited transaction, or applies nothing. Ownership rows are
made by ``directory.record_owner_in``, exactly as for a resource created through the server.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine

from mlflow_share import db
from mlflow_share.adopt.basic_auth import AuthDatabase, AuthGrant, carried_password_hash
from mlflow_share.audit.log import audited_write
from mlflow_share.directory import EXPERIMENT, MODEL, lock_policy, record_owner_in
from mlflow_share.errors import InvalidInput, InvalidPolicy
from mlflow_share.mlflow_compat import tables as mt
from mlflow_share.policy.enforcer import (
    ADMIN_ROLE,
    ORG_DOMAIN,
    PERMISSIONS,
    ROLES,
    validate_choice,
    validate_identifier,
)

FORMAT_VERSION = 1
ADMINS_ONLY = "admins-only"
DEFAULT_EXPERIMENT_ID = "0"
PASSWORD_FROM_BASIC_AUTH = "from-basic-auth"
NO_PASSWORD = "none"
_MLFLOW_USER_TAG = "mlflow.user"  # mlflow.utils.mlflow_tags.MLFLOW_USER
_RULE_KINDS = {"experiment:": EXPERIMENT, "model:": MODEL, "registered_model:": MODEL}
# What a grant already gives: a lesser grant of the same team on the same resource is dropped.
_COVERS = {"manage": {"read", "write", "execute"}, "write": {"read"}}


@dataclass(frozen=True)
class Resource:
    """An experiment (``key`` is its ID) or a registered model (``key`` is its name)."""

    kind: str
    key: str
    name: str
    owner: str | None = None
    deleted: bool = False

    @property
    def label(self) -> str:
        if self.kind == EXPERIMENT:
            return f"experiment {self.key} ({self.name!r})"
        return f"registered model {self.name!r}"

    @property
    def is_default_experiment(self) -> bool:
        return self.kind == EXPERIMENT and self.key == DEFAULT_EXPERIMENT_ID


@dataclass(frozen=True)
class Rule:
    """``GLOB=TEAM``: resources whose name matches GLOB (fnmatch, case-sensitive) go to TEAM;
    ``experiment:GLOB=TEAM`` or ``model:GLOB=TEAM`` match one kind only."""

    pattern: str
    team: str
    kind: str | None
    text: str

    @classmethod
    def parse(cls, text: str) -> Rule:
        """Raises ``InvalidInput`` on anything but ``[KIND:]GLOB=TEAM`` with a valid team."""
        glob, sep, team = text.strip().rpartition("=")
        glob, team = glob.strip(), team.strip()
        if not sep or not glob or not team:
            raise InvalidInput(f"Rule {text!r}: expected GLOB=TEAM, e.g. 'fraud-*=team-a'.")
        validate_identifier("team name", team)
        kind = None
        for prefix, prefixed_kind in _RULE_KINDS.items():
            if glob.startswith(prefix) and len(glob) > len(prefix):
                kind, glob = prefixed_kind, glob[len(prefix):]
                break
        return cls(glob, team, kind, f"{text.strip()}")

    def matches(self, resource: Resource) -> bool:
        return (self.kind in (None, resource.kind)
                and fnmatch.fnmatchcase(resource.name, self.pattern))


def read_rules(text: str, origin: str = "rules file") -> list[Rule]:
    """One ``GLOB=TEAM`` rule a line, in order; blank lines and ``#`` comments are ignored."""
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            try:
                rules.append(Rule.parse(line))
            except InvalidInput as exc:
                raise InvalidInput(f"{origin}, line {number}: {exc.message}") from None
    return rules


@dataclass(frozen=True)
class PlanOptions:
    """How owners are proposed.

    Attributes:
        rules: in order; the first that matches a name wins.
        default_team: for what nothing else matched.
        by_tag: an experiment or model tag whose value names the owner team.
        by_creator: propose the team of the user who made it (first run, first version),
            when that user is a member of exactly one team.
        default_experiment: the ``Default`` experiment's owner, or ``admins-only``.
    """

    rules: tuple[Rule, ...] = ()
    default_team: str | None = None
    by_tag: str | None = None
    by_creator: bool = False
    default_experiment: str | None = None


@dataclass
class Plan:
    """A plan's text and what it proposes, for the command's summary."""

    text: str
    proposed: int = 0
    unmatched: int = 0
    default_undecided: bool = False
    users: int = 0
    teams: int = 0
    grants: int = 0
    skipped: int = 0
    grants_without_owner: int = 0
    missing_teams: list[str] = field(default_factory=list)


# -- the database as it is ---------------------------------------------------------------------
@dataclass
class _State:
    experiments: dict[str, Resource]
    models: dict[str, Resource]
    model_ids: dict[str, str]  # registered model name -> mlflow-share's ID for it
    teams: set[str]
    users: set[str]
    admins: set[str]
    memberships: dict[str, dict[str, str]]  # user -> {team: role}
    grants: set[tuple[str, str, str, str]]  # (kind, resource_id, team, permission)

    def resource_id(self, resource: Resource) -> str | None:
        return resource.key if resource.kind == EXPERIMENT else self.model_ids.get(resource.name)


def _read_state(conn: sa.Connection) -> _State:
    r = db.resources.c
    owners: dict[tuple[str, str], str] = {}
    model_ids: dict[str, str] = {}
    for kind, resource_id, name, owner in conn.execute(
            sa.select(r.kind, r.resource_id, r.name, r.owner_team)):
        owners[(str(kind), str(resource_id))] = str(owner)
        if kind == MODEL and name is not None:
            model_ids[str(name)] = str(resource_id)
    e = mt.experiments.c
    experiments = {}
    for experiment_id, name, stage in conn.execute(
            sa.select(e.experiment_id, e.name, e.lifecycle_stage).order_by(e.experiment_id)):
        key = str(experiment_id)
        experiments[key] = Resource(EXPERIMENT, key, str(name), owners.get((EXPERIMENT, key)),
                                    deleted=stage == "deleted")
    models = {}
    for (name,) in conn.execute(sa.select(mt.registered_models.c.name).distinct()
                                .order_by(mt.registered_models.c.name)):
        model_id = model_ids.get(str(name))
        models[str(name)] = Resource(MODEL, str(name), str(name),
                                     owners.get((MODEL, model_id)) if model_id else None)
    c = db.casbin_rules.c
    admins: set[str] = set()
    memberships: dict[str, dict[str, str]] = {}
    for user, role, domain in conn.execute(sa.select(c.v0, c.v1, c.v2).where(c.ptype == "g")):
        if domain == ORG_DOMAIN and role == ADMIN_ROLE:
            admins.add(str(user))
        else:
            memberships.setdefault(str(user), {})[str(domain)] = str(role)
    g = db.grants.c
    return _State(
        experiments=experiments, models=models, model_ids=model_ids,
        teams=set(conn.execute(sa.select(db.teams.c.name)).scalars()),
        users=set(conn.execute(sa.select(db.users.c.name)).scalars()),
        admins=admins, memberships=memberships,
        grants={(str(k), str(i), str(t), str(p)) for k, i, t, p in conn.execute(
            sa.select(g.kind, g.resource_id, g.team, g.permission))})


def _tags(conn: sa.Connection, key: str) -> dict[tuple[str, str], str]:
    et, mt_tags = mt.experiment_tags.c, mt.registered_model_tags.c
    found = {(EXPERIMENT, str(i)): str(v) for i, v in conn.execute(
        sa.select(et.experiment_id, et.value).where(et.key == key)) if v}
    found.update({(MODEL, str(n)): str(v) for n, v in conn.execute(
        sa.select(mt_tags.name, mt_tags.value).where(mt_tags.key == key)) if v})
    return found


def _creators(conn: sa.Connection) -> dict[tuple[str, str], str]:
    """Who made each experiment (its first run's user) and model (its first version's)."""
    runs, tags, versions = mt.runs.c, mt.tags.c, mt.model_versions.c
    user_tag = sa.and_(tags.run_uuid == runs.run_uuid, tags.key == _MLFLOW_USER_TAG)
    found: dict[tuple[str, str], str] = {}
    for experiment_id, user_id, tagged in conn.execute(
            sa.select(runs.experiment_id, runs.user_id, tags.value)
            .outerjoin(mt.tags, user_tag).order_by(runs.start_time, runs.run_uuid)):
        user = tagged or user_id
        if user:
            found.setdefault((EXPERIMENT, str(experiment_id)), str(user))
    for name, version_user, run_user, tagged in conn.execute(
            sa.select(versions.name, versions.user_id, runs.user_id, tags.value)
            .outerjoin(mt.runs, runs.run_uuid == versions.run_id)
            .outerjoin(mt.tags, user_tag).order_by(versions.name, versions.version)):
        user = version_user or tagged or run_user
        if user:
            found.setdefault((MODEL, str(name)), str(user))
    return found


# -- the plan ----------------------------------------------------------------------------------
@dataclass
class _Entry:
    resource: Resource
    team: str | None
    rule: str | None
    comment: str | None = None


@dataclass
class _Grant:
    resource: Resource
    team: str
    permission: str
    rule: str
    comment: str | None = None


def make_plan(engine: Engine, options: PlanOptions, *, basic_auth: AuthDatabase | None = None,
              source: str = "") -> Plan:
    """Propose an owner for every experiment and registered model that has none.

    Args:
        engine: the server's database (MLflow's tables and mlflow-share's).
        options: how owners are proposed.
        basic_auth: MLflow basic-auth's users, teams and permissions to carry over.
        source: where the database is, for the plan's header (no password).

    Returns:
        The plan, as YAML text with review comments.
    """
    with engine.connect() as conn:
        state = _read_state(conn)
        tags = _tags(conn, options.by_tag) if options.by_tag else {}
        creators = _creators(conn) if options.by_creator else {}
    skipped = list(basic_auth.skipped) if basic_auth else []
    auth_owners, auth_grants = (_from_basic_auth(basic_auth, state, skipped)
                                if basic_auth else ({}, []))
    planned_teams = set(basic_auth.teams) if basic_auth else set()
    entries: list[_Entry] = []
    for resource in [*state.experiments.values(), *state.models.values()]:
        if resource.owner is None:
            entries.append(_propose(resource, options, state, tags, creators, auth_owners))
    owner_after = {(e.resource.kind, e.resource.key): e.team for e in entries}
    grants = []
    for grant in auth_grants:
        owner = owner_after.get((grant.resource.kind, grant.resource.key), grant.resource.owner)
        if owner == grant.team:
            continue  # the owner team's members' roles decide already
        if owner in (None, ADMINS_ONLY):
            grant.comment = (f"{grant.resource.label} has no owner team in this plan: "
                             "give it one, or delete this grant")
        grants.append(grant)
    named = {e.team for e in entries if e.team not in (None, ADMINS_ONLY)} | {
        g.team for g in grants}
    plan = Plan(text="")
    plan.missing_teams = sorted(t for t in named if t and t not in state.teams | planned_teams)
    decided = [e for e in entries if e.team is not None or e.resource.is_default_experiment]
    unmatched = [e for e in entries if e not in decided]
    plan.proposed = sum(1 for e in decided if e.team not in (None, ADMINS_ONLY))
    plan.unmatched = len(unmatched)
    plan.default_undecided = any(e.resource.is_default_experiment and e.team is None
                                 for e in entries)
    plan.grants = len(grants)
    plan.grants_without_owner = sum(1 for g in grants if g.comment)
    plan.skipped = len(skipped)
    lines = _header(options, source, basic_auth, plan.missing_teams)
    lines.append(f"version: {FORMAT_VERSION}")
    if basic_auth is not None:
        plan.users = sum(1 for name in basic_auth.users if name not in state.users)
        plan.teams = sum(1 for name in basic_auth.teams if name not in state.teams)
        lines += _render_users(basic_auth, state)
        lines += _render_teams(basic_auth, state)
    lines += _render_entries("owners", decided)
    if grants or basic_auth is not None:
        lines += _render_grants(grants)
    lines += _render_entries("unmatched", unmatched)
    if skipped:
        lines.append("skipped:  # not carried over from basic-auth (apply ignores this list)")
        lines += [f"- {_scalar(note)}" for note in skipped]
    plan.text = "\n".join(lines) + "\n"
    return plan


def _propose(resource: Resource, options: PlanOptions, state: _State,
             tags: dict[tuple[str, str], str], creators: dict[tuple[str, str], str],
             auth_owners: dict[tuple[str, str], tuple[str, str]]) -> _Entry:
    key = (resource.kind, resource.key)
    if resource.is_default_experiment:
        if options.default_experiment:
            return _Entry(resource, options.default_experiment, "--default-experiment")
        return _Entry(resource, None, "MLflow's Default experiment",
                      f"decide: a team, or {ADMINS_ONLY}")
    if key in auth_owners:
        return _Entry(resource, *auth_owners[key])
    tagged = tags.get(key)
    if tagged is not None and _is_team_name(tagged):
        return _Entry(resource, tagged, f"tag {options.by_tag}={tagged}")
    for rule in options.rules:
        if rule.matches(resource):
            return _Entry(resource, rule.team, f"rule {rule.text}")
    creator = creators.get(key)
    if creator is not None:
        teams = state.memberships.get(creator, {})
        if len(teams) == 1:
            team = next(iter(teams))
            return _Entry(resource, team, f"made by {creator}, a member of {team} only")
    if options.default_team:
        return _Entry(resource, options.default_team, "--default-team")
    return _Entry(resource, None, None, f"no rule matched: a team, or {ADMINS_ONLY}")


def _is_team_name(value: str) -> bool:
    try:
        validate_identifier("team name", value)
    except InvalidInput:
        return False
    return True


def _from_basic_auth(auth: AuthDatabase, state: _State, skipped: list[str]
                     ) -> tuple[dict[tuple[str, str], tuple[str, str]], list[_Grant]]:
    """Owner proposals (a MANAGE holder) and grants, on the resources that exist now."""
    holders: dict[tuple[str, str], list[AuthGrant]] = {}
    found: list[tuple[Resource, AuthGrant]] = []
    for grant in auth.grants:
        resource = (state.experiments if grant.kind == EXPERIMENT else state.models).get(grant.key)
        if resource is None:
            what = "experiment" if grant.kind == EXPERIMENT else "registered model"
            skipped.append(f"{grant.via}: {grant.permission} on {what} {grant.key!r}, which "
                           "does not exist any more")
            continue
        found.append((resource, grant))
        if grant.permission == "MANAGE":
            holders.setdefault((resource.kind, resource.key), []).append(grant)
    owners: dict[tuple[str, str], tuple[str, str]] = {}
    for (kind, key), managing in holders.items():
        resource = (state.experiments if kind == EXPERIMENT else state.models)[key]
        if resource.owner is not None or resource.is_default_experiment:
            continue
        # Personal teams first: basic-auth gives MANAGE to whoever made the resource.
        chosen = sorted(managing, key=lambda g: (g.via.startswith("role "), g.via))[0]
        others = sorted({g.via for g in managing} - {chosen.via})
        also = f" (also MANAGE: {', '.join(others)})" if others else ""
        owners[(kind, key)] = (chosen.team, f"basic-auth: {chosen.via} holds MANAGE{also}")
    grants: dict[tuple[str, str, str], dict[str, _Grant]] = {}
    for resource, grant in found:
        for permission in grant.permissions():
            held = grants.setdefault((resource.kind, resource.key, grant.team), {})
            held.setdefault(permission, _Grant(resource, grant.team, permission,
                                               f"basic-auth: {grant.via} {grant.permission}"))
    flat = []
    for held in grants.values():
        covered = set().union(*(_COVERS.get(p, set()) for p in held))
        flat += [g for p, g in sorted(held.items()) if p not in covered]
    flat.sort(key=lambda g: (g.resource.kind != EXPERIMENT, _order(g.resource), g.team,
                             g.permission))
    return owners, flat


def _order(resource: Resource) -> tuple[int, str]:
    return (int(resource.key), "") if resource.key.isdigit() else (0, resource.key)


# -- YAML with review comments -----------------------------------------------------------------
def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True,
                          width=1 << 30).rstrip("\n")
    return text[:-4] if text.endswith("\n...") else text


def _header(options: PlanOptions, source: str, basic_auth: AuthDatabase | None,
            missing_teams: list[str]) -> list[str]:
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    order = []
    if basic_auth is not None:
        order.append("basic-auth's MANAGE holder")
    if options.by_tag:
        order.append(f"tag {options.by_tag!r}")
    order += [f"rule {rule.text}" for rule in options.rules]
    if options.by_creator:
        order.append("the creator's only team")
    if options.default_team:
        order.append(f"--default-team {options.default_team}")
    lines = [
        f"# mlflow-share adoption plan, made {made}" + (f" from {source}" if source else "") + ".",
        "# What is listed under owners: and unmatched: has no owner team yet: only org admins",
        "# see it. Review the plan: change any `team:` to another team, or to admins-only to",
        "# leave it to org admins; fill in the `team: null` ones you want owned. Then",
        "#   mlflow-share adopt apply FILE --dry-run   # what would change",
        "#   mlflow-share adopt apply FILE             # all of it in one audited transaction",
        "# Proposals, first match wins: " + (", then ".join(order) or "none given") + ".",
    ]
    if basic_auth is not None:
        lines += [
            f"# From basic-auth ({basic_auth.layout}): users, teams (user-NAME is a user's own",
            "# permissions; other teams are basic-auth roles) and grants. basic-auth's",
            "# default_permission (its .ini, not its database) is not carried: in mlflow-share",
            "# a team sees only what it owns, is granted or is shared in a published package.",
        ]
    if missing_teams:
        lines.append("# Teams named here that do not exist yet (create them before applying): "
                     + ", ".join(missing_teams))
    return lines


def _render_users(auth: AuthDatabase, state: _State) -> list[str]:
    lines = ["users:  # password: from-basic-auth (the same password works) or none (set one "
             "with `mlflow-share user reset-password`, or issue a token)"]
    for name in sorted(auth.users):
        user = auth.users[name]
        if not _is_user_name(name):
            continue
        carried = carried_password_hash(user.password_hash) is not None
        lines += [f"- name: {_scalar(name)}" + ("  # an mlflow-share user already: kept as it is"
                                                if name in state.users else ""),
                  f"  admin: {_scalar(user.is_admin)}",
                  f"  password: {PASSWORD_FROM_BASIC_AUTH if carried else NO_PASSWORD}"
                  + ("" if carried else "  # basic-auth's hash cannot be verified here")]
    return lines


def _is_user_name(value: str) -> bool:
    try:
        validate_identifier("user name", value)
    except InvalidInput:
        return False
    return True


def _render_teams(auth: AuthDatabase, state: _State) -> list[str]:
    lines = ["teams:"]
    for name in sorted(auth.teams):
        lines.append(f"- name: {_scalar(name)}" + ("  # exists: members are added"
                                                   if name in state.teams else ""))
        lines.append("  members:")
        lines += [f"  - {{user: {_scalar(user)}, role: {role}}}"
                  for user, role in sorted(auth.teams[name].items())]
    return lines if len(lines) > 1 else ["teams: []"]


def _resource_lines(resource: Resource, indent: str = "  ") -> list[str]:
    lines = [f"- kind: {resource.kind}"]
    if resource.kind == EXPERIMENT:
        lines.append(f"{indent}id: {_scalar(resource.key)}")
    lines.append(f"{indent}name: {_scalar(resource.name)}")
    if resource.deleted:
        lines.append(f"{indent}deleted: true")
    return lines


def _render_entries(section: str, entries: list[_Entry]) -> list[str]:
    if not entries:
        return [f"{section}: []"]
    lines = [f"{section}:"]
    for entry in entries:
        lines += _resource_lines(entry.resource)
        team = f"  team: {_scalar(entry.team)}"
        lines.append(team + (f"  # {entry.comment}" if entry.comment else ""))
        if entry.rule:
            lines.append(f"  rule: {_scalar(entry.rule)}")
    return lines


def _render_grants(grants: list[_Grant]) -> list[str]:
    if not grants:
        return ["grants: []"]
    lines = ["grants:"]
    for grant in grants:
        lines += _resource_lines(grant.resource)
        lines.append(f"  team: {_scalar(grant.team)}")
        lines.append(f"  permission: {grant.permission}"
                     + (f"  # {grant.comment}" if grant.comment else ""))
        lines.append(f"  rule: {_scalar(grant.rule)}")
    return lines


# -- applying a plan ---------------------------------------------------------------------------
_SECTIONS = {"version", "users", "teams", "owners", "grants", "unmatched", "skipped"}
_ENTRY_KEYS = {"kind", "id", "name", "team", "rule", "deleted"}
_GRANT_KEYS = _ENTRY_KEYS | {"permission"}


@dataclass
class AdoptionResult:
    """What applying a plan changes (``+``/``~``/``-`` lines), leaves as it is, and leaves
    to org admins; ``applied`` is false for a dry run or when nothing changes."""

    changes: list[str]
    unchanged: list[str]
    left: list[str]
    applied: bool


@dataclass
class _Work:
    changes: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    users: list[tuple[str, bool, str | None]] = field(default_factory=list)
    admins: list[str] = field(default_factory=list)  # existing users made org admins
    teams: list[str] = field(default_factory=list)
    members: list[tuple[str, str, str]] = field(default_factory=list)  # (team, user, role)
    owners: list[tuple[Resource, str]] = field(default_factory=list)
    moves: list[tuple[Resource, str]] = field(default_factory=list)  # (resource, new owner)
    grants: list[tuple[Resource, str, str]] = field(default_factory=list)


def parse_plan(text: str) -> dict[str, Any]:
    """The plan document, checked for its shape only.

    Raises:
        InvalidPolicy: not YAML, not a plan of this version, or unknown sections.
    """
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise InvalidPolicy(f"The plan is not valid YAML{at}.") from None
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise InvalidPolicy(f"The plan must be a mapping with 'version: {FORMAT_VERSION}' "
                            "(made by `mlflow-share adopt plan`).")
    unknown = set(document) - _SECTIONS
    if unknown:
        raise InvalidPolicy(f"Unknown plan sections: {', '.join(sorted(map(str, unknown)))}.")
    return document


def users_with_carried_passwords(document: Mapping[str, Any]) -> list[str]:
    """Users the plan gives basic-auth's password (apply needs basic-auth's database)."""
    return [str(entry.get("name")) for entry in document.get("users") or []
            if isinstance(entry, dict) and entry.get("password") == PASSWORD_FROM_BASIC_AUTH]


def apply_plan(engine: Engine, text: str, *, by: str, dry_run: bool = False,
               reassign: bool = False, passwords: Mapping[str, str | None] | None = None
               ) -> AdoptionResult:
    """Validate the whole plan, then apply it in one audited transaction (unless ``dry_run``).

    Args:
        engine: the server's database.
        text: the plan (YAML).
        by: who applies it (recorded as the owners' and grants' maker).
        dry_run: compute and return the changes, write nothing.
        reassign: move a resource whose owner differs from the plan's (else an error).
        passwords: user -> mlflow-share password hash carried from basic-auth.

    Raises:
        InvalidPolicy: every problem found, in one message; nothing is applied then.
    """
    document = parse_plan(text)
    with engine.connect() as conn:
        work = _resolve(conn, document, reassign=reassign, passwords=passwords)
    if dry_run or not work.changes:
        return AdoptionResult(work.changes, work.unchanged, work.left, applied=False)
    change: dict[str, Any] = {"op": "adopt"}
    with audited_write(engine, change) as conn:
        lock_policy(conn)
        # Again under the write lock: what is true now is what gets applied.
        work = _resolve(conn, document, reassign=reassign, passwords=passwords)
        _write(conn, work, by)
        change.update(changes=work.changes, unchanged=len(work.unchanged),
                      left_to_admins=len(work.left))
    return AdoptionResult(work.changes, work.unchanged, work.left, applied=True)


class _Problems:
    """Every problem of a plan, collected before anything is refused."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, message: str) -> None:
        if message not in self.found:
            self.found.append(message)

    def check(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except InvalidInput as exc:
            self.add(exc.message)
            return None

    def entries(self, document: Mapping[str, Any], section: str, keys: set[str]
                ) -> list[dict[str, Any]]:
        value = document.get(section)
        if value is None:
            return []
        if not isinstance(value, list):
            self.add(f"{section}: must be a list.")
            return []
        good = []
        for entry in value:
            if not isinstance(entry, dict):
                self.add(f"{section}: entries are mappings, not {_scalar(entry)}.")
                continue
            unknown = set(entry) - keys
            if unknown:
                self.add(f"{section}: unknown keys {', '.join(sorted(map(str, unknown)))}.")
            good.append(entry)
        return good

    def raise_any(self) -> None:
        if self.found:
            raise InvalidPolicy(f"The plan was not applied ({len(self.found)} problem"
                                f"{'s' if len(self.found) > 1 else ''}): "
                                + "; ".join(m.replace("\n", " ") for m in self.found))


def _resolve(conn: sa.Connection, document: Mapping[str, Any], *, reassign: bool,
             passwords: Mapping[str, str | None] | None) -> _Work:
    state = _read_state(conn)
    problems, work = _Problems(), _Work()
    users = _resolve_users(document, state, problems, work, passwords)
    teams = _resolve_teams(document, state, users, problems, work)
    owners = _resolve_owners(document, state, teams, problems, work, reassign)
    _resolve_grants(document, state, teams, owners, problems, work)
    problems.raise_any()
    return work


def _resolve_users(document: Mapping[str, Any], state: _State, problems: _Problems,
                   work: _Work, passwords: Mapping[str, str | None] | None) -> set[str]:
    planned: set[str] = set()
    for entry in problems.entries(document, "users", {"name", "admin", "password"}):
        admin, password = entry.get("admin", False), entry.get("password", NO_PASSWORD)
        name: str | None = problems.check(validate_identifier, "user name", entry.get("name"))
        if name is None:
            continue
        if name in planned:
            problems.add(f"User {name!r} is listed twice.")
        planned.add(name)
        if not isinstance(admin, bool):
            problems.add(f"User {name!r}: admin is true or false.")
        if password not in (PASSWORD_FROM_BASIC_AUTH, NO_PASSWORD):
            problems.add(f"User {name!r}: password is {PASSWORD_FROM_BASIC_AUTH} or "
                         f"{NO_PASSWORD}.")
        if name in state.users:
            if admin is True and name not in state.admins:
                work.admins.append(name)
                work.changes.append(f"+ org admin {name}")
            else:
                work.unchanged.append(f"= user {name} (exists; kept as it is)")
            continue
        carried = None
        if password == PASSWORD_FROM_BASIC_AUTH:
            if passwords is None:
                problems.add("The plan carries passwords from basic-auth: pass --auth-db, "
                             "the basic-auth database it was made from.")
            else:
                carried = passwords.get(name)
                if carried is None:
                    problems.add(f"User {name!r}: basic-auth holds no password for them that "
                                 f"can be carried; set 'password: {NO_PASSWORD}'.")
        work.users.append((name, admin is True, carried))
        work.changes.append(f"+ user {name}" + (" (org admin)" if admin is True else "") + (
            ", password from basic-auth" if carried else
            f", no password yet (mlflow-share user reset-password {name}, or a token)"))
    return state.users | planned


def _resolve_teams(document: Mapping[str, Any], state: _State, users: set[str],
                   problems: _Problems, work: _Work) -> set[str]:
    planned: set[str] = set()
    for entry in problems.entries(document, "teams", {"name", "members"}):
        team: str | None = problems.check(validate_identifier, "team name", entry.get("name"))
        if team is None:
            continue
        if team in planned:
            problems.add(f"Team {team!r} is listed twice.")
        planned.add(team)
        if team not in state.teams:
            work.teams.append(team)
            work.changes.append(f"+ team {team}")
        members = entry.get("members") or []
        if not isinstance(members, list):
            problems.add(f"Team {team!r}: members must be a list.")
            continue
        seen: set[str] = set()
        for member in members:
            if not isinstance(member, dict) or set(member) - {"user", "role"}:
                problems.add(f"Team {team!r}: members are {{user: NAME, role: ROLE}}.")
                continue
            user: str | None = problems.check(validate_identifier, "user name", member.get("user"))
            role: str | None = problems.check(validate_choice, "role", member.get("role"), ROLES)
            if user is None or role is None:
                continue
            if user not in users:
                problems.add(f"Member {user!r} of team {team!r} is not a user (nor in users:).")
            if user in seen:
                problems.add(f"User {user!r} is listed twice in team {team!r}.")
            seen.add(user)
            current = state.memberships.get(user, {}).get(team)
            if current is None:
                work.members.append((team, user, role))
                work.changes.append(f"+ member {user} of {team} ({role})")
            elif current == role:
                work.unchanged.append(f"= member {user} of {team} ({role})")
            else:
                work.unchanged.append(f"= member {user} of {team} keeps role {current} "
                                      f"(the plan says {role})")
    return state.teams | planned


def _resource_of(entry: Mapping[str, Any], state: _State, problems: _Problems
                 ) -> Resource | None:
    kind = entry.get("kind")
    if kind == EXPERIMENT:
        key = entry.get("id")
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            problems.add(f"An experiment entry needs its id: {_scalar(dict(entry))}.")
            return None
        resource = state.experiments.get(str(key))
        if resource is None:
            problems.add(f"Experiment {str(key)!r} does not exist.")
        return resource
    if kind == MODEL:
        name = entry.get("name")
        resource = state.models.get(name) if isinstance(name, str) else None
        if resource is None:
            problems.add(f"Registered model {name!r} does not exist.")
        return resource
    problems.add(f"Entries have kind {EXPERIMENT} or {MODEL}, not {kind!r}.")
    return None


def _resolve_owners(document: Mapping[str, Any], state: _State, teams: set[str],
                    problems: _Problems, work: _Work, reassign: bool
                    ) -> dict[tuple[str, str], str | None]:
    """Owner of each listed resource once the plan is applied (``None``: org admins only)."""
    owners: dict[tuple[str, str], str | None] = {}
    for section in ("owners", "unmatched"):
        for entry in problems.entries(document, section, _ENTRY_KEYS):
            resource = _resource_of(entry, state, problems)
            if resource is None:
                continue
            key = (resource.kind, resource.key)
            if key in owners:
                problems.add(f"{resource.label} is listed twice.")
                continue
            wanted = entry.get("team")
            owners[key] = resource.owner
            if wanted is None or wanted == ADMINS_ONLY:
                if resource.owner is not None:
                    work.unchanged.append(f"= {resource.label}: owned by {resource.owner}")
                elif wanted is None and resource.is_default_experiment:
                    problems.add(f"The Default experiment (ID {DEFAULT_EXPERIMENT_ID}) needs a "
                                 f"decision: a team, or {ADMINS_ONLY}.")
                else:
                    work.left.append(f"  {resource.label}: left to org admins")
                continue
            team: str | None = problems.check(validate_identifier, "team name", wanted)
            if team is None:
                continue
            if team not in teams:
                problems.add(f"Team {team!r} (owner of {resource.label}) does not exist: "
                             "create it, or add it under teams:.")
            owners[key] = team
            if resource.owner is None:
                work.owners.append((resource, team))
                work.changes.append(f"+ owner {team} of {resource.label}")
            elif resource.owner == team:
                work.unchanged.append(f"= {resource.label}: owned by {team}")
            elif reassign:
                work.moves.append((resource, team))
                work.changes.append(f"~ owner of {resource.label}: {resource.owner} -> {team}")
                resource_id = state.resource_id(resource)
                for permission in sorted(p for k, i, t, p in state.grants
                                         if (k, i, t) == (resource.kind, resource_id, team)):
                    work.changes.append(f"- grant {permission} on {resource.label} to {team} "
                                        "(it owns it now)")
            else:
                problems.add(f"{resource.label} is owned by {resource.owner!r}, not "
                             f"{team!r}: pass --reassign to move it.")
    return owners


def _resolve_grants(document: Mapping[str, Any], state: _State, teams: set[str],
                    owners: dict[tuple[str, str], str | None], problems: _Problems,
                    work: _Work) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for entry in problems.entries(document, "grants", _GRANT_KEYS):
        resource = _resource_of(entry, state, problems)
        team: str | None = problems.check(validate_identifier, "team name", entry.get("team"))
        permission: str | None = problems.check(validate_choice, "permission",
                                                entry.get("permission"), PERMISSIONS)
        if resource is None or team is None or permission is None:
            continue
        said = f"Grant of {permission} on {resource.label} to {team!r}"
        key = (resource.kind, resource.key, team, permission)
        if key in seen:
            problems.add(f"{said} is listed twice.")
            continue
        seen.add(key)
        if team not in teams:
            problems.add(f"{said}: the team does not exist (create it, or add it under teams:).")
        owner = owners.get((resource.kind, resource.key), resource.owner)
        if owner is None:
            problems.add(f"{said}: it has no owner team (give it one, or drop the grant).")
            continue
        if owner == team:
            problems.add(f"{said}: the team owns it.")
            continue
        resource_id = state.resource_id(resource)
        if resource_id is not None and (resource.kind, resource_id, team, permission) \
                in state.grants:
            work.unchanged.append(f"= grant {permission} on {resource.label} to {team}")
            continue
        work.grants.append((resource, team, permission))
        work.changes.append(f"+ grant {permission} on {resource.label} to {team}")


def _write(conn: sa.Connection, work: _Work, by: str) -> None:
    now = db.now_ms()
    rules = db.casbin_rules
    for name, admin, password_hash in work.users:
        conn.execute(db.users.insert().values(name=name, password_hash=password_hash,
                                              is_admin=admin, is_service_account=False,
                                              created_at=now))
        if admin:
            conn.execute(rules.insert().values(ptype="g", v0=name, v1=ADMIN_ROLE, v2=ORG_DOMAIN))
    for name in work.admins:
        conn.execute(db.users.update().where(db.users.c.name == name).values(is_admin=True))
        conn.execute(rules.insert().values(ptype="g", v0=name, v1=ADMIN_ROLE, v2=ORG_DOMAIN))
    for team in work.teams:
        conn.execute(db.teams.insert().values(name=team, created_at=now))
    for team, user, role in work.members:
        conn.execute(rules.insert().values(ptype="g", v0=user, v1=role, v2=team))
    model_ids: dict[str, str] = {}
    for resource, team in work.owners:
        if resource.kind == EXPERIMENT:
            record_owner_in(conn, EXPERIMENT, resource.key, team, by)
        else:
            model_ids[resource.name] = record_owner_in(conn, MODEL, None, team, by,
                                                       resource.name)
    r, g = db.resources.c, db.grants.c
    for resource, team in work.moves:
        resource_id = _id_of(conn, resource, model_ids)
        conn.execute(db.resources.update().where(r.kind == resource.kind,
                                                 r.resource_id == resource_id)
                     .values(owner_team=team))
        conn.execute(db.grants.delete().where(g.kind == resource.kind,
                                              g.resource_id == resource_id, g.team == team))
    for resource, team, permission in work.grants:
        conn.execute(db.grants.insert().values(
            kind=resource.kind, resource_id=_id_of(conn, resource, model_ids), team=team,
            permission=permission, granted_by=by, granted_at=now))
    db.bump(conn, db.RESOURCE_VERSION)  # owners are cached per worker; a move must be seen
    db.bump(conn, db.POLICY_VERSION)


def _id_of(conn: sa.Connection, resource: Resource, model_ids: dict[str, str]) -> str:
    if resource.kind == EXPERIMENT:
        return resource.key
    if resource.name not in model_ids:
        r = db.resources.c
        model_ids[resource.name] = str(conn.execute(sa.select(r.resource_id).where(
            r.kind == MODEL, r.name == resource.name)).scalar_one())
    return model_ids[resource.name]
