"""One authorisation decision: ``PolicyEngine.is_allowed`` at 10, 1,000 and 100,000 grants.

    .venv/bin/python bench/decision.py [--quick]

Builds a temp SQLite database per scenario (1,000 teams, 2,000 users in 3 teams each, grants
spread over resources at 10 per resource) by bulk inserts, then ``PolicyEngine(engine)`` and
``refresh()``. Times ``is_allowed`` for three kinds of lookups, each checked against an
independent oracle:
  owner     the caller is a member of the owner team (allowed)
  grant     the caller is only in a grantee team whose permission implies the action (allowed)
  denied    the caller is in none of the resource's teams, or its role does not permit it
Decisions are compiled from the casbin policy at load time (memberships x role capabilities),
so there is no cache to warm: every timed call is a full decision. The 100,000-grant scenario
also has one model shared with every team (999 grants on one resource); ``is_allowed`` looks
up only the caller's own teams among a resource's grants.
Target (DESIGN.md): <= 50 us median at 1,000 teams and 100,000 grants.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from _common import percentile, table, temp_dir

from mlflow_share import db
from mlflow_share.policy.enforcer import IMPLIED_ACTIONS, ROLES, PolicyEngine

N_TEAMS = 1000
N_USERS = 2000
TEAMS_PER_USER = 3
GRANTS_PER_RESOURCE = 10
HOT_TEAMS = N_TEAMS - 1  # the one "hot" model is shared with every team but its owner
MODEL, EXPERIMENT = "registered_model", "experiment"
ROLE_ACTIONS = {
    "viewer": {"read", "execute"},
    "engineer": {"read", "execute", "write", "create"},
    "maintainer": {"read", "execute", "write", "create", "manage"},
}
LOOKUP_ACTIONS = ("read", "read", "read", "execute", "write", "manage")


@dataclass
class World:
    memberships: dict[str, dict[str, str]]  # user -> {team: role}
    owners: dict[tuple[str, str], str]  # (kind, id) -> owner team
    grants: dict[tuple[str, str], dict[str, set[str]]]  # (kind, id) -> {team: perms}
    hot: tuple[str, str] | None


def oracle(world: World, user: str, key: tuple[str, str], action: str) -> bool:
    teams = world.memberships.get(user, {})

    def can(team: str) -> bool:
        return team in teams and action in ROLE_ACTIONS[teams[team]]

    if can(world.owners[key]):
        return True
    return any(can(team) and any(action in IMPLIED_ACTIONS[p] for p in perms)
               for team, perms in world.grants.get(key, {}).items())


def build(engine: sa.Engine, n_grants: int, with_hot: bool, rng: random.Random) -> World:
    db.create_schema(engine)
    now = db.now_ms()
    teams = [f"team-{i:04d}" for i in range(N_TEAMS)]
    users = [f"user-{i:05d}" for i in range(N_USERS)]
    memberships: dict[str, dict[str, str]] = {}
    rules = [{"ptype": "g", "v0": "admin", "v1": "admin", "v2": "org"}]
    for user in users:
        for team in rng.sample(teams, TEAMS_PER_USER):
            role = rng.choice(ROLES)
            memberships.setdefault(user, {})[team] = role
            rules.append({"ptype": "g", "v0": user, "v1": role, "v2": team})
    hot_grants = HOT_TEAMS if with_hot else 0
    n_resources = max(1, -(-(n_grants - hot_grants) // GRANTS_PER_RESOURCE))
    owners: dict[tuple[str, str], str] = {}
    grants: dict[tuple[str, str], dict[str, set[str]]] = {}
    resource_rows, grant_rows = [], []

    def add_resource(kind: str, name: str | None) -> tuple[str, str]:
        rid = uuid.UUID(int=rng.getrandbits(128)).hex if kind == MODEL else str(len(owners) + 1)
        key = (kind, rid)
        owners[key] = rng.choice(teams)
        resource_rows.append({"kind": kind, "resource_id": rid, "name": name,
                              "owner_team": owners[key], "created_by": "admin", "created_at": now})
        return key

    def add_grants(key: tuple[str, str], count: int) -> None:
        others = [t for t in rng.sample(teams, min(count + 1, N_TEAMS)) if t != owners[key]]
        assert len(others) >= count
        for team in others[:count]:
            perm = rng.choice(("read", "read", "execute", "write", "manage"))
            grants.setdefault(key, {}).setdefault(team, set()).add(perm)
            grant_rows.append({"kind": key[0], "resource_id": key[1], "team": team,
                               "permission": perm, "granted_by": "admin", "granted_at": now})

    remaining = n_grants - hot_grants
    for i in range(n_resources):
        kind = MODEL if i % 2 == 0 else EXPERIMENT
        key = add_resource(kind, f"model-{i}" if kind == MODEL else None)
        add_grants(key, min(GRANTS_PER_RESOURCE, remaining))
        remaining -= min(GRANTS_PER_RESOURCE, remaining)
    hot = None
    if with_hot:
        hot = add_resource(MODEL, "hot-model")
        add_grants(hot, HOT_TEAMS)
    with engine.begin() as conn:
        conn.execute(db.teams.insert(), [{"name": t, "created_at": now} for t in teams])
        conn.execute(db.users.insert(), [
            {"name": u, "password_hash": None, "is_admin": False, "is_service_account": False,
             "created_at": now} for u in ["admin", *users]])
        conn.execute(db.casbin_rules.insert(), rules)
        conn.execute(db.resources.insert(), resource_rows)
        for start in range(0, len(grant_rows), 20_000):
            conn.execute(db.grants.insert(), grant_rows[start:start + 20_000])
        db.bump(conn, db.POLICY_VERSION)
        db.bump(conn, db.RESOURCE_VERSION)
    return World(memberships, owners, grants, hot)


def make_lookups(world: World, category: str, count: int, rng: random.Random,
                 resources: list[tuple[str, str]]) -> list[tuple[str, tuple[str, str], str, bool]]:
    """(user, resource key, action, expected) lookups of one category."""
    by_team: dict[str, list[str]] = {}
    for user, teams in world.memberships.items():
        for team in teams:
            by_team.setdefault(team, []).append(user)
    all_users = list(world.memberships)
    out = []
    while len(out) < count:
        key = rng.choice(resources)
        action = rng.choice(LOOKUP_ACTIONS)
        if category == "owner":
            members = by_team.get(world.owners[key], [])
            if not members:
                continue
            user = rng.choice(members)
        elif category == "grant":
            teams = [t for t, perms in world.grants.get(key, {}).items()
                     if any(action in IMPLIED_ACTIONS[p] for p in perms) and by_team.get(t)]
            if not teams:
                continue
            user = rng.choice(by_team[rng.choice(teams)])
            if world.owners[key] in world.memberships[user]:
                continue
        else:
            user = rng.choice(all_users)
        expected = oracle(world, user, key, action)
        if expected != (category != "denied"):
            continue
        out.append((user, key, action, expected))
    return out


def time_lookups(policy: PolicyEngine, lookups: list, principals: dict, world: World,
                 repeat: int) -> list[float]:
    policy.refresh()
    ns: list[float] = []
    perf = time.perf_counter_ns
    for _ in range(repeat):
        for user, key, action, expected in lookups:
            principal = principals[user]
            owner = world.owners[key]
            t0 = perf()
            allowed = policy.is_allowed(principal, key[0], key[1], owner, action)
            t1 = perf()
            if allowed != expected:
                raise AssertionError(f"{user} {action} {key}: got {allowed}, expected {expected}")
            ns.append((t1 - t0) / 1000.0)
    ns.sort()
    return ns


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer lookups (< 90 s)")
    args = parser.parse_args()
    t_start = time.monotonic()
    per_category = 300 if args.quick else 2000
    warm_repeat = 3 if args.quick else 5
    hot_count = 10 if args.quick else 40
    root = temp_dir("mlflow-share-decision-")
    rows = []
    setup_rows = []
    for n_grants in (10, 1_000, 100_000):
        rng = random.Random(n_grants)
        with_hot = n_grants >= 100_000
        engine = db.get_engine(f"sqlite:///{root / f'g{n_grants}.db'}")
        t0 = time.perf_counter()
        world = build(engine, n_grants, with_hot, rng)
        t1 = time.perf_counter()
        policy = PolicyEngine(engine)
        policy.refresh()
        t2 = time.perf_counter()
        policy.refresh()  # versions unchanged: the per-request check
        t3 = time.perf_counter()
        total_grants = sum(len(p) for by_team in world.grants.values() for p in by_team.values())
        setup_rows.append([f"{total_grants:,}", f"{len(world.owners):,}", f"{t1 - t0:.2f}",
                           f"{(t2 - t1) * 1000:.0f}", f"{(t3 - t2) * 1e6:.0f}"])
        principals = {u: policy.principal(u) for u in world.memberships}
        typical = [k for k in world.owners if k != world.hot]
        cases = [(c, c, typical, per_category) for c in ("owner", "grant", "denied")]
        if world.hot:
            cases += [(f"{c}, hot model ({HOT_TEAMS:,} grants)", c, [world.hot], hot_count)
                      for c in ("grant", "denied")]
        for label, category, resources, count in cases:
            lookups = make_lookups(world, category, count, rng, resources)
            timed = time_lookups(policy, lookups, principals, world, repeat=warm_repeat)
            rows.append([f"{total_grants:,}", label, len(timed),
                         statistics.median(timed), percentile(timed, 99)])
            print(f"  {total_grants:>7,} grants  {label:32s} p50 {rows[-1][3]:8.2f} us",
                  flush=True)
        engine.dispose()

    print()
    print(f"Setup: {N_TEAMS:,} teams, {N_USERS:,} users x {TEAMS_PER_USER} teams "
          f"({N_USERS * TEAMS_PER_USER:,} casbin g rules), {GRANTS_PER_RESOURCE} grants per resource")
    print(table(["grants", "resources", "bulk insert s", "refresh() load ms",
                 "refresh() unchanged us"], setup_rows))
    print()
    base = {r[1]: r for r in rows if r[0] == "10"}
    out = []
    for r in rows:
        ref = base.get(r[1])
        out.append([r[0], r[1], r[2], r[3], r[4], f"{r[3] / ref[3]:.2f}x" if ref else "-"])
    print("is_allowed, microseconds per decision")
    print(table(["grants", "lookup", "n", "p50", "p99", "p50 vs 10 grants"], out))
    big = [r for r in rows if r[0] == f"{100_000:,}"]
    if big:
        worst = max(r[3] for r in big)
        print(f"\ntarget <= 50 us median at 100,000 grants: worst lookup kind {worst:.2f} us "
              f"({'ok' if worst <= 50 else 'MISSED'})")
    print(f"total {time.monotonic() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
