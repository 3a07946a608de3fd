"""Adopting an existing MLflow installation: what was made before mlflow-share (by the stock
client straight into SQLite, or through MLflow's own basic-auth server) is seen by org admins
only until `mlflow-share adopt` gives it owner teams; then each team sees, through the stock
client, exactly what it owns or was granted. A plan is applied whole or not at all, again
without change, and never to what was made after it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import sqlalchemy as sa
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from mlflow_share import db
from mlflow_share.adopt.cli import adopt_group
from mlflow_share.audit.verify import verify_chain
from mlflow_share.directory import EXPERIMENT, MODEL
from tests.conftest import (
    ADMIN_PASSWORD,
    ShareServer,
    free_port,
    populate,
    running_server,
)

pytestmark = pytest.mark.integration
T = TypeVar("T")


def _eventually(check: Callable[[], T], what: str, seconds: float = 30) -> T:
    """``check()``'s first truthy answer, polled until a deadline."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            assert found, f"timed out waiting for {what}"
            return found
        time.sleep(0.1)


def _adopt(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(adopt_group, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


class _As:
    """The stock MLflow client against the server, as one identity (token or admin)."""

    def __init__(self, server: ShareServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.server, self.monkeypatch = server, monkeypatch

    def __call__(self, user: str) -> MlflowClient:
        for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                     "MLFLOW_TRACKING_PASSWORD"):
            self.monkeypatch.delenv(name, raising=False)
        if user == "admin":
            self.monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            self.monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        else:
            self.monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", self.server.tokens[user])
        return MlflowClient(tracking_uri=self.server.url, registry_uri=self.server.url)

    def sees(self, user: str) -> tuple[set[str], set[str]]:
        """Names of the experiments and registered models ``user`` finds."""
        client = self(user)
        return ({e.name for e in client.search_experiments(max_results=1000)},
                {m.name for m in client.search_registered_models(max_results=1000)})


# -- an installation made with the stock client, straight into its database --------------------
EXPERIMENTS = {"fraud-detection": "alice", "fraud-v2": "alice", "churn": "bob", "misc": "carl"}
MODELS = ("fraud-model", "churn-classifier", "orphan")


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareServer]:
    tmp = tmp_path_factory.mktemp("adopt")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    stock = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name, user in EXPERIMENTS.items():
        experiment_id = stock.create_experiment(name)
        run = stock.create_run(experiment_id, tags={"mlflow.user": user})
        stock.log_param(run.info.run_id, "alpha", "0.1")
        stock.set_terminated(run.info.run_id)
    for name in MODELS:
        stock.create_registered_model(name)
    with running_server(tmp / "server", uri) as server:
        populate(server)
        yield server


def _stock(server: ShareServer) -> MlflowClient:
    """The stock client straight on the server's database: made there, nothing is owned."""
    return MlflowClient(tracking_uri=server.backend_uri, registry_uri=server.backend_uri)


def _owners(server: ShareServer) -> dict[tuple[str, str], tuple[str, str]]:
    """(kind, name or experiment ID) -> (owner team, mlflow-share resource ID)."""
    r = db.resources.c
    with db.get_engine(server.backend_uri).connect() as conn:
        rows = conn.execute(sa.select(r.kind, r.resource_id, r.name, r.owner_team)).all()
    return {(kind, name if kind == MODEL else rid): (owner, rid)
            for kind, rid, name, owner in rows}


def _section(plan: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    return next(e for e in plan[section] if e["name"] == name)


def test_plan_review_apply_and_only_the_owner_teams_see_their_resources(
        installation: ShareServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server, as_user = installation, _As(installation, monkeypatch)
    made = set(EXPERIMENTS) | {"Default"}
    # Before: nothing made before mlflow-share has an owner, so only org admins see it.
    experiments, models = as_user.sees("admin")
    assert made <= experiments and set(MODELS) <= models
    for user in ("alice", "bob", "carl", "nobody"):
        assert as_user.sees(user) == (set(), set())

    plan_file = tmp_path / "plan.yaml"
    code, output = _adopt("plan", "--backend-store-uri", server.backend_uri, "-o", str(plan_file),
                          "--rule", "fraud-*=team-a", "--rule", "model:churn*=team-b",
                          "--by-creator")
    assert code == 0, output
    assert "The Default experiment needs a decision" in output
    plan = yaml.safe_load(plan_file.read_text())
    assert plan["version"] == 1
    default = next(e for e in plan["owners"] if e["kind"] == EXPERIMENT and e["id"] == "0")
    assert default["team"] is None and "decide" in plan_file.read_text()
    assert _section(plan, "owners", "fraud-detection")["team"] == "team-a"
    assert _section(plan, "owners", "fraud-detection")["rule"] == "rule fraud-*=team-a"
    assert _section(plan, "owners", "fraud-model")["team"] == "team-a"
    assert _section(plan, "owners", "churn-classifier")["team"] == "team-b"
    # No rule for the churn experiment: its first run's user is in one team only.
    churn = _section(plan, "owners", "churn")
    assert churn["team"] == "team-b" and "bob" in churn["rule"]
    assert {e["name"] for e in plan["unmatched"]} >= {"orphan"}
    assert all(e["team"] is None for e in plan["unmatched"])

    # Undecided, the Default experiment stops the whole plan: nothing is applied.
    code, output = _adopt("apply", str(plan_file), "--backend-store-uri", server.backend_uri)
    assert code == 1 and "Default experiment" in output and output.startswith("Error: ")
    assert as_user.sees("alice") == (set(), set())

    # The review: Default stays with the admins, misc goes to team-c, orphan stays unowned.
    plan_file.write_text(plan_file.read_text()
                         .replace("team: null  # decide", "team: admins-only  # decide"))
    edited = yaml.safe_load(plan_file.read_text())
    for entry in edited["unmatched"]:
        if entry["name"] == "misc":
            entry["team"] = "team-c"
    plan_file.write_text(yaml.safe_dump(edited, sort_keys=False))

    code, output = _adopt("apply", str(plan_file), "--backend-store-uri", server.backend_uri,
                          "--dry-run")
    assert code == 0 and "Dry run" in output, output
    assert "+ owner team-a of experiment" in output
    assert as_user.sees("alice") == (set(), set())  # a dry run changes nothing
    assert not any(key[0] == MODEL and key[1] in MODELS for key in _owners(server))

    # Made after the plan: not touched by it, whatever the rules would say.
    late_id = _stock(server).create_experiment("fraud-late")

    code, output = _adopt("apply", str(plan_file), "--backend-store-uri", server.backend_uri)
    assert code == 0 and "Applied" in output, output
    expected = {
        "alice": ({"fraud-detection", "fraud-v2"}, {"fraud-model"}),
        "bob": ({"churn"}, {"churn-classifier"}),
        "carl": ({"misc"}, set()),
        "nobody": (set(), set()),
    }
    for user, sees in expected.items():
        _eventually(lambda: as_user.sees(user) == sees, f"{user} to see {sees}")
    experiments, models = as_user.sees("admin")
    assert made | {"fraud-late"} <= experiments and set(MODELS) <= models
    owners = _owners(server)
    assert (EXPERIMENT, late_id) not in owners and (EXPERIMENT, "0") not in owners
    assert (MODEL, "orphan") not in owners

    # An adopted model's row is the kind a creation through the server makes.
    as_user("alice").create_registered_model("made-through-server")
    adopted = owners[(MODEL, "fraud-model")]
    created = _owners(server)[(MODEL, "made-through-server")]
    assert adopted[0] == created[0] == "team-a"
    assert len(adopted[1]) == len(created[1]) == 32 and adopted[1] != "fraud-model"
    # ... and the model is reached through it: its owner team's engineer may tag it.
    as_user("aaron").set_registered_model_tag("fraud-model", "stage", "adopted")

    # Applying again changes nothing.
    code, output = _adopt("apply", str(plan_file), "--backend-store-uri", server.backend_uri)
    assert code == 0 and "No changes" in output, output
    assert _owners(server) == owners | {(MODEL, "made-through-server"): created}

    # One audit event for the whole adoption, in a chain that still verifies.
    engine = db.get_engine(server.backend_uri)
    with engine.connect() as conn:
        events = conn.execute(sa.select(db.audit_events.c.principal, db.audit_events.c.details)
                              .where(db.audit_events.c.action == "share.adopt")).all()
    assert len(events) == 1 and events[0].principal.startswith("system:")
    assert "fraud-model" in events[0].details
    assert verify_chain(engine).ok


def _plan(*entries: dict[str, Any], **sections: Any) -> str:
    return yaml.safe_dump({"version": 1, "owners": list(entries), **sections}, sort_keys=False)


def test_a_bad_plan_applies_nothing(installation: ShareServer, monkeypatch: pytest.MonkeyPatch,
                                    tmp_path: Path) -> None:
    server, as_user = installation, _As(installation, monkeypatch)
    stock = _stock(server)
    good_id = stock.create_experiment("bad-plan-good")
    stock.create_registered_model("bad-plan-model")
    before = _owners(server)
    good = {"kind": "experiment", "id": good_id, "name": "bad-plan-good", "team": "team-a"}
    cases = {
        "no-such-team": _plan(good, {"kind": "registered_model", "name": "bad-plan-model",
                                     "team": "team-zzz"}),
        "twice": _plan(good, dict(good, team="team-b")),
        "missing": _plan(good, {"kind": "experiment", "id": "987654", "team": "team-a"}),
        "grant-to-owner": _plan(good, grants=[{"kind": "experiment", "id": good_id,
                                               "team": "team-a", "permission": "read"}]),
        "unknown-section": _plan(good, owner=[good]),
        "not-yaml": "version: 1\nowners: [\n",
    }
    for case, text in cases.items():
        plan_file = tmp_path / f"{case}.yaml"
        plan_file.write_text(text)
        code, output = _adopt("apply", str(plan_file), "--backend-store-uri", server.backend_uri)
        assert code == 1, (case, output)
        assert output.startswith("Error: ") and output.count("\n") == 1, (case, output)
    assert _owners(server) == before
    assert "bad-plan-good" not in as_user.sees("alice")[0]


def test_another_owner_is_moved_only_when_asked(installation: ShareServer,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    server, as_user = installation, _As(installation, monkeypatch)
    _stock(server).create_registered_model("moving-model")
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(_plan({"kind": "registered_model", "name": "moving-model",
                                "team": "team-a"},
                               grants=[{"kind": "registered_model", "name": "moving-model",
                                        "team": "team-b", "permission": "read"}]))
    assert _adopt("apply", str(plan_file), "--backend-store-uri", server.backend_uri)[0] == 0
    _eventually(lambda: "moving-model" in as_user.sees("bea")[1], "team-b's read grant")
    model_id = _owners(server)[(MODEL, "moving-model")][1]

    plan_file.write_text(_plan({"kind": "registered_model", "name": "moving-model",
                                "team": "team-b"}))
    code, output = _adopt("apply", str(plan_file), "--backend-store-uri", server.backend_uri)
    assert code == 1 and "--reassign" in output and "team-a" in output
    code, output = _adopt("apply", str(plan_file), "--backend-store-uri", server.backend_uri,
                          "--reassign")
    assert code == 0 and "~ owner of registered model 'moving-model': team-a -> team-b" in output
    assert "- grant read on registered model 'moving-model' to team-b" in output
    _eventually(lambda: "moving-model" not in as_user.sees("alice")[1], "team-a to lose it")
    assert "moving-model" in as_user.sees("bea")[1]
    assert _owners(server)[(MODEL, "moving-model")] == ("team-b", model_id)  # same ID, grants kept


def test_command_line_failures_are_one_line(installation: ShareServer, tmp_path: Path) -> None:
    command = "from mlflow_share.adopt.cli import adopt_group; adopt_group()"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    cases = [
        ("apply", str(tmp_path / "absent.yaml"), "--backend-store-uri",
         installation.backend_uri),
        ("plan", "--backend-store-uri", f"sqlite:///{tmp_path / 'none.db'}"),
        ("plan", "--backend-store-uri", installation.backend_uri, "--rule", "no-team-here"),
        ("basic-auth", "--backend-store-uri", installation.backend_uri, "--auth-db",
         f"sqlite:///{tmp_path / 'absent-auth.db'}"),
    ]
    for args in cases:
        done = subprocess.run([sys.executable, "-c", command, *args], capture_output=True,
                              text=True, timeout=120, env=env, cwd=tmp_path)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 1, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, done.stderr)
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "absent-auth.db").exists()


# -- from MLflow's basic-auth ---------------------------------------------------------------------
BASIC_AUTH_ADMIN = "admin-password-basic-auth"
PASSWORDS = {name: f"{name}-password-from-basic-auth" for name in ("carol", "dave", "erin",
                                                                    "boss")}


def _basic_auth_server(tmp: Path, backend_uri: str, auth_uri: str
                       ) -> tuple[subprocess.Popen[bytes], str]:
    ini = tmp / "basic_auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = {auth_uri}\nadmin_username = admin\n"
                   f"admin_password = {BASIC_AUTH_ADMIN}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(MLFLOW_AUTH_CONFIG_PATH=str(ini), MLFLOW_FLASK_SERVER_SECRET_KEY="adopt-test",
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with open(tmp / "basic-auth.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
             "--backend-store-uri", backend_uri, "--artifacts-destination",
             str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, (tmp / "basic-auth.log").read_text()[-3000:]
        try:
            return requests.get(url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        _eventually(healthy, "MLflow's basic-auth server", seconds=120)
    except BaseException:
        _stop(process)
        raise
    return process, url


def _stop(process: subprocess.Popen[bytes]) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def basic_auth_installation(tmp_path_factory: pytest.TempPathFactory
                            ) -> Iterator[tuple[ShareServer, str]]:
    """An MLflow server that ran MLflow's own basic-auth, then mlflow-share on its database."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth needs mlflow[auth]")
    from mlflow.server.auth.client import AuthServiceClient

    tmp = tmp_path_factory.mktemp("adopt-basic-auth")
    backend_uri, auth_uri = f"sqlite:///{tmp / 'mlflow.db'}", f"sqlite:///{tmp / 'auth.db'}"
    process, url = _basic_auth_server(tmp, backend_uri, auth_uri)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            patch.setenv("MLFLOW_TRACKING_PASSWORD", BASIC_AUTH_ADMIN)
            admin = AuthServiceClient(url)
            for name, password in PASSWORDS.items():
                admin.create_user(name, password)
            admin.update_user_admin("boss", True)
        for user, experiment, model in (("carol", "carol-exp", "carol-model"),
                                        ("dave", "dave-exp", None)):
            with pytest.MonkeyPatch.context() as patch:  # creators get MANAGE from basic-auth
                patch.setenv("MLFLOW_TRACKING_USERNAME", user)
                patch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORDS[user])
                client = MlflowClient(tracking_uri=url, registry_uri=url)
                experiment_id = client.create_experiment(experiment)
                client.create_run(experiment_id)
                if model:
                    client.create_registered_model(model)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            patch.setenv("MLFLOW_TRACKING_PASSWORD", BASIC_AUTH_ADMIN)
            admin = AuthServiceClient(url)
            carol_exp = MlflowClient(url).get_experiment_by_name("carol-exp")
            assert carol_exp is not None
            admin.grant_user_permission("dave", "experiment", carol_exp.experiment_id, "READ")
            admin.grant_user_permission("dave", "registered_model", "carol-model", "EDIT")
            role = admin.create_role("default", "analysts")
            admin.add_role_permission(role.id, "registered_model", "carol-model", "READ")
            admin.add_role_permission(role.id, "experiment", "*", "READ")
            admin.assign_role("erin", role.id)
    finally:
        _stop(process)
    with running_server(tmp / "share", backend_uri) as server:
        yield server, auth_uri


def test_basic_auth_users_teams_and_grants_arrive(
        basic_auth_installation: tuple[ShareServer, str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    server, auth_uri = basic_auth_installation
    as_user = _As(server, monkeypatch)
    plan_file = tmp_path / "plan.yaml"
    code, output = _adopt("basic-auth", "--auth-db", auth_uri, "--backend-store-uri",
                          server.backend_uri, "--default-experiment", "admins-only",
                          "-o", str(plan_file))
    assert code == 0, output
    plan = yaml.safe_load(plan_file.read_text())
    users = {u["name"]: u for u in plan["users"]}
    assert set(users) == {"admin", *PASSWORDS}
    assert users["boss"]["admin"] is True and users["carol"]["admin"] is False
    teams = {t["name"]: {m["user"]: m["role"] for m in t["members"]} for t in plan["teams"]}
    assert teams["user-carol"] == {"carol": "maintainer"}
    assert teams["analysts"] == {"erin": "viewer"}
    assert "user-boss" not in teams and "user-admin" not in teams  # org admins see everything
    assert _section(plan, "owners", "carol-exp")["team"] == "user-carol"
    assert _section(plan, "owners", "carol-model")["team"] == "user-carol"
    assert _section(plan, "owners", "dave-exp")["team"] == "user-dave"
    grants = {(g["name"], g["team"], g["permission"]) for g in plan["grants"]}
    assert grants == {("carol-exp", "user-dave", "read"), ("carol-model", "user-dave", "write"),
                      ("carol-model", "analysts", "read")}
    assert any("'*'" in note for note in plan["skipped"])  # a wildcard is named, not carried

    code, output = _adopt("apply", str(plan_file), "--backend-store-uri", server.backend_uri,
                          "--auth-db", auth_uri)
    assert code == 0, output
    listed = {u["name"]: u for u in server.admin("GET", "/users").json()["users"]}
    assert {"carol", "dave", "erin", "boss"} <= set(listed)
    assert listed["boss"]["is_admin"] and not listed["carol"]["is_admin"]
    members = {t["name"]: {m["user"]: m["role"] for m in t["members"]}
               for t in server.admin("GET", "/teams").json()["teams"]}
    assert members["user-dave"] == {"dave": "maintainer"} and members["analysts"] == {
        "erin": "viewer"}

    # basic-auth's passwords (werkzeug's scrypt) carry over: the same password logs in.
    for name in ("carol", "dave", "erin"):
        assert users[name]["password"] == "from-basic-auth"
        answer = server.api("GET", "/api/2.0/mlflow-share/whoami", auth=(name, PASSWORDS[name]))
        assert answer.status_code == 200, (name, answer.text)
        assert server.api("GET", "/api/2.0/mlflow-share/whoami",
                          auth=(name, "not-" + PASSWORDS[name])).status_code == 401
        server.tokens[name] = server.admin("POST", "/tokens", json={"user": name}).json()["token"]
    server.tokens["boss"] = server.admin("POST", "/tokens", json={"user": "boss"}).json()["token"]
    assert server.api("GET", "/api/2.0/mlflow-share/whoami",
                      token=server.tokens["boss"]).json()["is_admin"] is True

    expected = {
        "carol": ({"carol-exp"}, {"carol-model"}),
        "dave": ({"dave-exp", "carol-exp"}, {"carol-model"}),
        "erin": (set(), {"carol-model"}),
    }
    for user, sees in expected.items():
        _eventually(lambda: as_user.sees(user) == sees, f"{user} to see {sees}")
    # dave's EDIT became write: he may tag carol's model; erin (READ) may not.
    as_user("dave").set_registered_model_tag("carol-model", "reviewed", "yes")
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as refused:
        as_user("erin").set_registered_model_tag("carol-model", "reviewed", "no")
    assert refused.value.error_code == "PERMISSION_DENIED"

    code, output = _adopt("apply", str(plan_file), "--backend-store-uri", server.backend_uri,
                          "--auth-db", auth_uri)
    assert code == 0 and "No changes" in output, output
