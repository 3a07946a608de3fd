"""Adoption plans on a real SQLite database made by MLflow's own stores: rules and their order,
the Default experiment's decision, YAML that survives any name, whole-plan validation, and
what is carried from basic-auth (passwords, per-user permissions before and after MLflow's
role-based permissions)."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

import mlflow_share
from mlflow_share import db
from mlflow_share.adopt import basic_auth
from mlflow_share.adopt.owners import (
    PlanOptions,
    Rule,
    apply_plan,
    make_plan,
    parse_plan,
    read_rules,
)
from mlflow_share.auth.identity import verify_password
from mlflow_share.directory import EXPERIMENT, MODEL, Directory
from mlflow_share.errors import InvalidInput, InvalidPolicy
from mlflow_share.mlflow_compat import tables as mt

PASSWORD = "a-long-enough-password"
# Names a YAML writer could get wrong: booleans, nulls, numbers, comments, colons, quotes.
ODD_NAMES = ("yes", "null", "0123", "#hash", "it's", "[list]", "- dash", "fraud-é")
ODD_EXPERIMENTS = ("a: b", "off", "{x}")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow database made by the stock client, with mlflow-share's tables and teams."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("adopt-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name, user in (("fraud-a", "alice"), ("fraud-b", "bob"), ("churn", "bob"),
                       ("tagged", "alice"), *((odd, "nobody") for odd in ODD_EXPERIMENTS)):
        experiment_id = client.create_experiment(name)
        client.create_run(experiment_id, tags={"mlflow.user": user})
    client.set_experiment_tag(client.get_experiment_by_name("tagged").experiment_id,
                              "team", "team-b")
    for name in ("fraud-model", "churn-model", *ODD_NAMES):
        client.create_registered_model(name)
    db.create_schema(db.get_engine(uri))
    directory = Directory(db.get_engine(uri))
    for team in ("team-a", "team-b"):
        directory.create_team(team)
    directory.create_user("alice", PASSWORD)
    directory.add_member("team-a", "alice", "engineer")
    directory.create_user("bob", PASSWORD)
    directory.add_member("team-a", "bob", "viewer")
    directory.add_member("team-b", "bob", "engineer")
    return path


@pytest.fixture
def engine(template: Path, tmp_path: Path) -> sa.Engine:
    copy = tmp_path / "mlflow.db"
    shutil.copy(template, copy)
    engine = db.get_engine(f"sqlite:///{copy}")
    db.install_audit_triggers(engine)
    return engine


def _entries(plan: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in plan[section] or []}


def _owners(engine: sa.Engine) -> dict[tuple[str, str], str]:
    r = db.resources.c
    with engine.connect() as conn:
        return {(k, n if k == MODEL else i): o for k, i, n, o in conn.execute(
            sa.select(r.kind, r.resource_id, r.name, r.owner_team))}


# -- rules --------------------------------------------------------------------------------------
def test_rules_parse_and_match() -> None:
    rule = Rule.parse(" fraud-* = team-a ")
    assert (rule.pattern, rule.team, rule.kind) == ("fraud-*", "team-a", None)
    assert Rule.parse("model:churn*=team-b").kind == MODEL
    assert Rule.parse("experiment:x=team-b").kind == EXPERIMENT
    assert Rule.parse("a=b=team-c").pattern == "a=b"  # the team is after the last '='
    for bad in ("fraud-*", "=team-a", "fraud-*=", "x=bad team", "x=admin", "x=maintainer"):
        with pytest.raises(InvalidInput):
            Rule.parse(bad)
    assert [r.team for r in read_rules("# ours\n\nfraud-*=team-a\n  churn*=team-b\n")] == [
        "team-a", "team-b"]
    with pytest.raises(InvalidInput, match="line 2"):
        read_rules("a=team-a\nnonsense\n", "rules.txt")


def test_first_match_wins_in_the_documented_order(engine: sa.Engine) -> None:
    options = PlanOptions(rules=(Rule.parse("fraud-*=team-b"), Rule.parse("f*=team-a"),
                                 Rule.parse("model:churn*=team-a")),
                          by_tag="team", by_creator=True, default_team="team-a")
    plan = yaml.safe_load(make_plan(engine, options).text)
    owners = _entries(plan, "owners")
    assert owners["fraud-a"]["team"] == "team-b"  # the first rule, not the second
    assert owners["fraud-a"]["rule"] == "rule fraud-*=team-b"
    assert owners["tagged"]["team"] == "team-b"  # the tag before the rules and the creator
    assert owners["tagged"]["rule"] == "tag team=team-b"
    assert owners["churn"]["team"] == "team-a"  # experiment: the model rule does not apply;
    assert owners["churn"]["rule"] == "--default-team"  # bob is in two teams: no creator team
    assert owners["churn-model"]["team"] == "team-a"
    assert plan["unmatched"] == []


def test_the_default_experiment_always_waits_for_a_decision(engine: sa.Engine) -> None:
    made = make_plan(engine, PlanOptions(rules=(Rule.parse("*=team-a"),)))
    assert made.default_undecided
    default = next(e for e in yaml.safe_load(made.text)["owners"] if e.get("id") == "0")
    assert default["team"] is None and default["name"] == "Default"
    assert re.search(r"^  team: null  # decide: a team, or admins-only$", made.text, re.M)
    with pytest.raises(InvalidPolicy, match="Default experiment"):
        apply_plan(engine, made.text, by="test")
    assert _owners(engine) == {}
    decided = make_plan(engine, PlanOptions(rules=(Rule.parse("*=team-a"),),
                                            default_experiment="admins-only"))
    assert not decided.default_undecided
    result = apply_plan(engine, decided.text, by="test")
    assert result.applied and (EXPERIMENT, "0") not in _owners(engine)
    assert "  experiment 0 ('Default'): left to org admins" in result.left


def test_any_name_survives_the_plan_and_its_application(engine: sa.Engine) -> None:
    made = make_plan(engine, PlanOptions(default_experiment="admins-only",
                                         rules=(Rule.parse("*=team-a"),)))
    owners = _entries(yaml.safe_load(made.text), "owners")
    assert set(ODD_NAMES) | set(ODD_EXPERIMENTS) <= set(owners)
    apply_plan(engine, made.text, by="test")
    owned = _owners(engine)
    assert {name for (kind, name), team in owned.items()
            if kind == MODEL and team == "team-a"} >= set(ODD_NAMES)
    assert all(owned[(EXPERIMENT, _experiment(engine, name))] == "team-a"
               for name in ODD_EXPERIMENTS)


def test_dry_run_and_a_second_run_change_nothing(engine: sa.Engine) -> None:
    text = make_plan(engine, PlanOptions(default_team="team-a",
                                         default_experiment="team-b")).text
    dry = apply_plan(engine, text, by="test", dry_run=True)
    assert dry.changes and not dry.applied and _owners(engine) == {}
    done = apply_plan(engine, text, by="test")
    assert done.applied and done.changes == dry.changes
    assert _owners(engine)[(EXPERIMENT, "0")] == "team-b"
    again = apply_plan(engine, text, by="test")
    assert not again.changes and not again.applied and len(again.unchanged) == len(done.changes)
    with engine.connect() as conn:
        actions = conn.execute(sa.select(db.audit_events.c.action)).scalars().all()
    assert actions.count("share.adopt") == 1


def _plan(**sections: Any) -> str:
    return yaml.safe_dump({"version": 1, **sections}, sort_keys=False)


def _experiment(engine: sa.Engine, name: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.select(mt.experiments.c.experiment_id)
                                .where(mt.experiments.c.name == name)).scalar_one())


@pytest.mark.parametrize("text,problem", [
    ("version: 2\n", "version: 1"),
    ("- a list\n", "version: 1"),
    ("version: 1\nowners: {}\n", "must be a list"),
    (_plan(owners=[{"kind": "notebook", "name": "x", "team": "team-a"}]), "kind"),
    (_plan(owners=[{"kind": "registered_model", "name": "nope", "team": "team-a"}]),
     "'nope' does not exist"),
    (_plan(owners=[{"kind": "registered_model", "name": "fraud-model", "team": "team-z"}]),
     "'team-z'"),
    (_plan(owners=[{"kind": "registered_model", "name": "fraud-model", "team": "team-a",
                    "colour": "red"}]), "unknown keys colour"),
    (_plan(grants=[{"kind": "registered_model", "name": "fraud-model", "team": "team-a",
                    "permission": "read"}]), "no owner team"),
    (_plan(owners=[{"kind": "registered_model", "name": "fraud-model", "team": "team-a"}],
           grants=[{"kind": "registered_model", "name": "fraud-model", "team": "team-b",
                    "permission": "admin"}]), "permission"),
    (_plan(users=[{"name": "zed", "password": "from-basic-auth"}]), "--auth-db"),
    (_plan(teams=[{"name": "team-new", "members": [{"user": "ghost", "role": "viewer"}]}]),
     "'ghost'"),
])
def test_a_wrong_plan_is_refused_whole_in_one_line(engine: sa.Engine, text: str,
                                                    problem: str) -> None:
    good = {"kind": "registered_model", "name": "churn-model", "team": "team-a"}
    if text.startswith("version: 1\n") and "owners" not in yaml.safe_load(text):
        text = yaml.safe_dump({**yaml.safe_load(text), "owners": [good]})
    with pytest.raises(InvalidPolicy) as refused:
        apply_plan(engine, text, by="test")
    assert problem in refused.value.message and "\n" not in refused.value.message
    assert _owners(engine) == {}


def test_every_problem_is_named_at_once(engine: sa.Engine) -> None:
    text = _plan(owners=[
        {"kind": "registered_model", "name": "fraud-model", "team": "team-a"},
        {"kind": "registered_model", "name": "fraud-model", "team": "team-b"},
        {"kind": "experiment", "id": "424242", "team": "team-a"},
    ])
    with pytest.raises(InvalidPolicy) as refused:
        apply_plan(engine, text, by="test")
    assert "(2 problems)" in refused.value.message
    assert "listed twice" in refused.value.message and "'424242'" in refused.value.message


def test_users_teams_and_grants_from_a_plan(engine: sa.Engine) -> None:
    fraud = _experiment(engine, "fraud-a")
    text = _plan(
        users=[{"name": "zed", "admin": False, "password": "none"},
               {"name": "alice", "admin": True, "password": "none"}],
        teams=[{"name": "user-zed", "members": [{"user": "zed", "role": "maintainer"}]},
               {"name": "team-a", "members": [{"user": "alice", "role": "maintainer"}]}],
        owners=[{"kind": "experiment", "id": fraud, "team": "user-zed"}],
        grants=[{"kind": "experiment", "id": fraud, "team": "team-a", "permission": "read"}])
    result = apply_plan(engine, text, by="test")
    assert "+ user zed, no password yet (mlflow-share user reset-password zed, or a token)" \
        in result.changes
    assert "+ org admin alice" in result.changes
    assert "= member alice of team-a keeps role engineer (the plan says maintainer)" \
        in result.unchanged
    directory = Directory(engine)
    users = {u["name"]: u for u in directory.list_users()}
    assert users["alice"]["is_admin"] and not users["zed"]["is_admin"]
    teams = {t["name"]: t["members"] for t in directory.list_teams()}
    assert teams["user-zed"] == [{"user": "zed", "role": "maintainer"}]
    assert [(g["team"], g["permission"]) for g in directory.list_grants(EXPERIMENT, fraud)] == [
        ("team-a", "read")]
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.users.c.password_hash)
                            .where(db.users.c.name == "zed")).scalar() is None


def test_a_model_is_owned_under_an_id_of_its_own(engine: sa.Engine) -> None:
    apply_plan(engine, _plan(owners=[{"kind": "registered_model", "name": "fraud-model",
                                      "team": "team-a"}]), by="system:test")
    r = db.resources.c
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.resources).where(r.name == "fraud-model")).one()
    assert row.kind == MODEL and re.fullmatch(r"[0-9a-f]{32}", row.resource_id)
    assert (row.owner_team, row.created_by) == ("team-a", "system:test")


# -- basic-auth -----------------------------------------------------------------------------------
def test_a_werkzeug_scrypt_hash_carries_the_same_password() -> None:
    from werkzeug.security import generate_password_hash

    cheap = generate_password_hash("the-old-password", method="scrypt:16384:8:1")
    carried = basic_auth.carried_password_hash(cheap)
    assert carried is not None and carried.startswith("scrypt$16384$8$1$")
    assert verify_password("the-old-password", carried)
    assert not verify_password("another-password", carried)
    default = basic_auth.carried_password_hash(generate_password_hash("the-old-password"))
    assert default is not None and verify_password("the-old-password", default)
    assert basic_auth.carried_password_hash(
        generate_password_hash("x" * 12, method="pbkdf2:sha256:1000")) is None
    for junk in (None, "", "scrypt:16384:8:1$salt", "scrypt:3:8:1$abc$" + "00" * 64,
                 "scrypt:16384:8:1$a$b$c"):
        assert basic_auth.carried_password_hash(junk) is None


def test_team_names_for_roles() -> None:
    assert basic_auth.role_team("analysts", "default") == "analysts"
    assert basic_auth.role_team("analysts", "ws1") == "ws1-analysts"
    assert basic_auth.role_team("Data Science!", "default") == "Data-Science"
    assert basic_auth.role_team("viewer", "default") == "role-viewer"


@pytest.fixture
def auth_store(tmp_path: Path) -> Any:
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth needs mlflow[auth]")
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{tmp_path / 'auth.db'}")
    return store


def test_basic_auth_with_roles(auth_store: Any, tmp_path: Path) -> None:
    for name in ("carol", "dave", "erin"):
        auth_store.create_user(name, f"{name}-password-123")
    auth_store.create_user("root", "root-password-123", is_admin=True)
    auth_store.create_experiment_permission("1", "carol", "MANAGE")
    auth_store.create_experiment_permission("1", "root", "MANAGE")
    auth_store.create_registered_model_permission("fraud-model", "dave", "USE")
    auth_store.create_registered_model_permission("gone-model", "dave", "READ")
    role = auth_store.create_role("reviewers", "default")
    auth_store.add_role_permission(role.id, "registered_model", "fraud-model", "EDIT")
    auth_store.add_role_permission(role.id, "gateway_endpoint", "*", "USE")
    auth_store.assign_role_to_user(auth_store.get_user("erin").id, role.id)
    found = basic_auth.read_basic_auth(f"sqlite:///{tmp_path / 'auth.db'}",
                                       team_of={"dave": "team-a"})
    assert found.layout == "roles"
    assert found.teams == {"user-carol": {"carol": "maintainer"},
                           "user-erin": {"erin": "maintainer"},
                           "team-a": {"dave": "engineer"}, "reviewers": {"erin": "engineer"}}
    assert {(g.team, g.kind, g.key, g.permission, g.permissions()) for g in found.grants} == {
        ("user-carol", EXPERIMENT, "1", "MANAGE", ("manage",)),
        ("team-a", MODEL, "fraud-model", "USE", ("read", "execute")),
        ("team-a", MODEL, "gone-model", "READ", ("read",)),
        ("reviewers", MODEL, "fraud-model", "EDIT", ("write",)),
    }
    assert any("gateway_endpoint" in note for note in found.skipped)
    assert found.users["root"].is_admin and "user-root" not in found.teams


def test_basic_auth_before_role_based_permissions(auth_store: Any, tmp_path: Path) -> None:
    from mlflow.server.auth.db.utils import migrate

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'legacy.db'}")
    migrate(engine, "2ed73881770d")  # MLflow's own schema, before its role tables
    tables = {name: sa.Table(name, sa.MetaData(), autoload_with=engine)
              for name in ("users", "experiment_permissions", "registered_model_permissions")}
    with engine.begin() as conn:
        conn.execute(tables["users"].insert(), [
            {"id": 1, "username": "carol", "password_hash": "pbkdf2:sha256:1$x$y",
             "is_admin": False},
            {"id": 2, "username": "dave", "password_hash": None, "is_admin": False}])
        conn.execute(tables["experiment_permissions"].insert(), [
            {"experiment_id": "1", "user_id": 1, "permission": "MANAGE"},
            {"experiment_id": "1", "user_id": 2, "permission": "NO_PERMISSIONS"}])
        conn.execute(tables["registered_model_permissions"].insert().values(
            name="fraud-model", user_id=2, permission="READ"))
    engine.dispose()
    found = basic_auth.read_basic_auth(f"sqlite:///{tmp_path / 'legacy.db'}")
    assert found.layout == "per-user tables"
    assert {(g.team, g.kind, g.key, g.permission) for g in found.grants} == {
        ("user-carol", EXPERIMENT, "1", "MANAGE"), ("user-dave", MODEL, "fraud-model", "READ")}


def test_basic_auth_plan_proposes_owners_and_grants(auth_store: Any, engine: sa.Engine,
                                                    tmp_path: Path) -> None:
    fraud = _experiment(engine, "fraud-a")
    auth_store.create_user("carol", "carol-password-123")
    auth_store.create_user("dave", "dave-password-123")
    auth_store.create_experiment_permission(fraud, "carol", "MANAGE")
    auth_store.create_experiment_permission(fraud, "dave", "MANAGE")
    auth_store.create_registered_model_permission("fraud-model", "dave", "READ")
    found = basic_auth.read_basic_auth(f"sqlite:///{tmp_path / 'auth.db'}")
    made = make_plan(engine, PlanOptions(default_experiment="admins-only"), basic_auth=found)
    plan = yaml.safe_load(made.text)
    owner = _entries(plan, "owners")["fraud-a"]
    assert owner["team"] == "user-carol" and "also MANAGE: dave" in owner["rule"]
    grants = {(g["name"], g["team"], g["permission"]) for g in plan["grants"]}
    assert grants == {("fraud-a", "user-dave", "manage"), ("fraud-model", "user-dave", "read")}
    assert made.grants_without_owner == 1  # fraud-model has no owner in this plan
    assert "no owner team in this plan" in made.text
    # werkzeug's default scrypt hashes carry: apply takes them from the basic-auth database.
    carried = {user["name"] for user in plan["users"] if user["password"] == "from-basic-auth"}
    assert carried == {"carol", "dave"}
    passwords = {name: basic_auth.carried_password_hash(found.users[name].password_hash)
                 for name in carried}
    with pytest.raises(InvalidPolicy, match="fraud-model.*no owner team"):
        apply_plan(engine, made.text, by="test", passwords=passwords)
    fixed = parse_plan(made.text)
    for entry in fixed["unmatched"]:
        if entry["name"] == "fraud-model":
            entry["team"] = "team-a"
    result = apply_plan(engine, yaml.safe_dump(fixed), by="test", passwords=passwords)
    assert "+ grant manage on experiment %s ('fraud-a') to user-dave" % fraud in result.changes


# -- the fence ------------------------------------------------------------------------------------
def test_no_sql_text_names_a_basic_auth_table_outside_the_fence() -> None:
    names = "|".join(sorted(mt.BASIC_AUTH_DECLARED, key=len, reverse=True))
    sql = re.compile(rf"\b(FROM|JOIN|INTO|UPDATE)\s+({names})\b", re.IGNORECASE)
    package = Path(mlflow_share.__file__).parent
    offenders = [f"{path.relative_to(package)}:{node.lineno}"
                 for path in sorted(package.rglob("*.py")) if "mlflow_compat" not in path.parts
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)
                 and sql.search(node.value)]
    assert offenders == []


def test_the_declared_basic_auth_tables_are_mlflows() -> None:
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth needs mlflow[auth]")
    assert mt.basic_auth_model_drift() == []
