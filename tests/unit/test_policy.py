"""Policy decisions on a real SQLite database: the decision table, casbin equivalence, reloads."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.auth.identity import Credentials
from mlflow_share.directory import MODEL, Directory
from mlflow_share.errors import Conflict, InvalidInput, NotFound
from mlflow_share.policy.enforcer import ACTIONS, PolicyEngine, SqlPolicyAdapter, new_enforcer

PASSWORD = "a-long-enough-password"


@pytest.fixture
def world(tmp_path: Path) -> tuple[Directory, PolicyEngine]:
    engine = db.get_engine(f"sqlite:///{tmp_path / 'policy.db'}")
    db.create_schema(engine)
    directory = Directory(engine)
    for team in ("team-a", "team-b"):
        directory.create_team(team)
    for user, team, role in (("vi", "team-a", "viewer"), ("en", "team-a", "engineer"),
                             ("ma", "team-a", "maintainer"), ("bv", "team-b", "viewer"),
                             ("be", "team-b", "engineer"), ("bm", "team-b", "maintainer")):
        directory.create_user(user, PASSWORD)
        directory.add_member(team, user, role)
    directory.create_user("root", PASSWORD, admin=True)
    directory.create_user("loner", PASSWORD)
    return directory, PolicyEngine(engine, password_cache_seconds=0)


# (user, action) -> allowed, on a model owned by team-a with `read` granted to team-b.
EXPECTED = {
    **{(u, a): a in {"read", "execute"} for u in ("vi", "bv", "bm", "be") for a in ACTIONS},
    **{("en", a): a in {"read", "execute", "write", "create"} for a in ACTIONS},
    **{("ma", a): True for a in ACTIONS},
    **{("root", a): True for a in ACTIONS},
    **{("loner", a): False for a in ACTIONS},
}
# team-b's grant is `read` only: execute is not implied.
EXPECTED.update({(u, "execute"): False for u in ("bv", "be", "bm")})


def test_decision_table(world) -> None:  # type: ignore[no-untyped-def]
    directory, policy = world
    model_id = directory.record_owner(MODEL, None, "team-a", "ma", name="m")
    directory.grant(MODEL, model_id, "team-b", "read", by="ma")
    policy.refresh()
    observed = {
        (user, action): policy.is_allowed(policy.principal(user), MODEL, model_id, "team-a", action)
        for user, action in EXPECTED
    }
    assert observed == EXPECTED


def test_grant_is_capped_by_the_member_role(world) -> None:  # type: ignore[no-untyped-def]
    directory, policy = world
    model_id = directory.record_owner(MODEL, None, "team-a", "ma", name="m")
    directory.grant(MODEL, model_id, "team-b", "write", by="ma")
    policy.refresh()
    allowed = {u: policy.is_allowed(policy.principal(u), MODEL, model_id, "team-a", "write")
               for u in ("bv", "be", "bm")}
    assert allowed == {"bv": False, "be": True, "bm": True}


def test_compiled_decisions_equal_casbin_enforce(world) -> None:  # type: ignore[no-untyped-def]
    _, policy = world
    snapshot = policy.refresh()
    users = ["vi", "en", "ma", "bv", "be", "bm", "root", "loner"]
    for user, team, action in itertools.product(users, ["team-a", "team-b", "org"],
                                                [*ACTIONS, "admin"]):
        assert policy.enforce(user, team, action) == bool(
            snapshot.enforcer.enforce(user, team, action)), (user, team, action)


def test_policy_in_memory_equals_policy_reloaded_from_sql(world) -> None:  # type: ignore[no-untyped-def]
    directory, policy = world
    snapshot = policy.refresh()
    reloaded = new_enforcer(directory.engine)
    assert sorted(snapshot.enforcer.get_policy()) == sorted(reloaded.get_policy())
    assert sorted(snapshot.enforcer.get_grouping_policy()) == sorted(reloaded.get_grouping_policy())
    with directory.engine.connect() as conn:
        rows = conn.execute(sa.select(db.casbin_rules.c.v0, db.casbin_rules.c.v1,
                                      db.casbin_rules.c.v2)).all()
    assert sorted(map(list, rows)) == sorted(snapshot.enforcer.get_grouping_policy())
    with pytest.raises(NotImplementedError):
        SqlPolicyAdapter(directory.engine).save_policy(snapshot.enforcer.get_model())


@pytest.mark.parametrize("bad", ["viewer, team-b", "a)", "(a", "a#b", " a", "a ", "", "a" * 129,
                                 "a b", "a\nb", "admin\n", "a;b", "a'b", 'a"b', "a,b", "*"])
def test_identifiers_are_validated_before_casbin(world, bad) -> None:  # type: ignore[no-untyped-def]
    directory, policy = world
    before = policy.refresh().enforcer.get_grouping_policy()
    for call in (lambda: directory.create_team(bad), lambda: directory.create_user(bad, PASSWORD),
                 lambda: directory.add_member("team-a", bad, "viewer"),
                 lambda: directory.add_member(bad, "vi", "viewer"),
                 lambda: directory.add_member("team-a", "vi", bad)):
        with pytest.raises(InvalidInput):
            call()
    assert new_enforcer(directory.engine).get_grouping_policy() == before


def test_reserved_team_names(world) -> None:  # type: ignore[no-untyped-def]
    directory, _ = world
    for name in ("org", "admin", "viewer", "ORG"):
        with pytest.raises(InvalidInput):
            directory.create_team(name)
    with pytest.raises(Conflict):
        directory.create_team("team-a")
    with pytest.raises(NotFound):
        directory.add_member("no-team", "vi", "viewer")


def test_changes_are_seen_through_the_version_counter(world) -> None:  # type: ignore[no-untyped-def]
    directory, policy = world
    first = policy.refresh()
    assert policy.refresh() is first  # nothing changed: the snapshot is kept
    directory.add_member("team-b", "vi", "engineer")
    second = policy.refresh()
    assert second is not first
    assert policy.principal("vi").teams == {"team-a": "viewer", "team-b": "engineer"}


def test_authentication(world) -> None:  # type: ignore[no-untyped-def]
    directory, policy = world
    policy.refresh()
    assert policy.authenticate(Credentials("basic", "vi", PASSWORD), 0).name == "vi"
    assert policy.authenticate(Credentials("basic", "vi", "wrong"), 0) is None
    assert policy.authenticate(Credentials("basic", "ghost", PASSWORD), 0) is None
    issued = directory.create_token("be", expires_in_days=1)
    policy.refresh()
    assert policy.authenticate(Credentials("bearer", secret=issued.token), 0).name == "be"
    assert policy.authenticate(Credentials("bearer", secret=issued.token),
                               issued.expires_at or 0) is None  # expired at that instant
    directory.revoke_token(issued.token_id)
    policy.refresh()
    assert policy.authenticate(Credentials("bearer", secret=issued.token), 0) is None


def test_a_disabled_user_is_no_user_for_anything(world) -> None:  # type: ignore[no-untyped-def]
    """Password, tokens, teams and the admin role stop together (so does anything asked on
    the user's behalf later, such as a webhook subscription's read check); enabled again,
    all come back; the last maintainer of a team is not disabled."""
    directory, policy = world
    issued = directory.create_token("en")
    directory.create_user("root2", PASSWORD, admin=True)
    for user in ("en", "root2"):
        directory.set_disabled(user, True, by="root")
    policy.refresh()
    assert policy.authenticate(Credentials("basic", "en", PASSWORD), 0) is None
    assert policy.authenticate(Credentials("bearer", secret=issued.token), 0) is None
    assert policy.principal("en").teams == {} and not policy.principal("root2").is_admin
    directory.set_disabled("en", False, by="root")
    policy.refresh()
    assert policy.principal("en").teams == {"team-a": "engineer"}
    assert policy.authenticate(Credentials("bearer", secret=issued.token), 0).name == "en"
    with pytest.raises(Conflict, match="last active maintainer"):
        directory.set_disabled("ma", True, by="root")


def test_a_disabled_maintainer_does_not_keep_a_team_led(world) -> None:  # type: ignore[no-untyped-def]
    """The last-maintainer rule counts active maintainers: with its co-maintainer disabled,
    a team's one active maintainer is not disabled, deleted, removed or demoted."""
    directory, _ = world
    directory.create_team("duo")
    for user in ("d1", "d2"):
        directory.create_user(user, PASSWORD)
        directory.add_member("duo", user, "maintainer")
    directory.set_disabled("d2", True, by="root")
    for attempt in (lambda: directory.set_disabled("d1", True, by="root"),
                    lambda: directory.delete_user("d1", by="root"),
                    lambda: directory.remove_member("duo", "d1"),
                    lambda: directory.add_member("duo", "d1", "engineer")):
        with pytest.raises(Conflict, match="last active maintainer of team 'duo'"):
            attempt()
    directory.set_disabled("d2", False, by="root")
    directory.remove_member("duo", "d1")  # d2 leads again
