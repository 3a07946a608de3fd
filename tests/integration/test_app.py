"""The installed package: entry points, route coverage, every server MLflow offers, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import requests

from tests.conftest import ADMIN_PASSWORD, USER_PASSWORD, populate, running_server

pytestmark = pytest.mark.integration


def test_every_entry_point_loads() -> None:
    groups = {"mlflow.app": "mlflow-share", "mlflow.app.client": "mlflow-share",
              "console_scripts": "mlflow-share"}
    for group, name in groups.items():
        found = [ep for ep in entry_points(group=group) if ep.name == name]
        assert len(found) == 1, (group, name)
        assert callable(found[0].load())
    # MLflow finds the app the way `mlflow server --app-name` does.
    from mlflow.server import _find_app

    assert _find_app("mlflow-share") == "mlflow_share.app:create_app"


_COVERAGE_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = sys.argv[1]
    os.environ["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = sys.argv[2]
    os.environ["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
    os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = "mlflow-artifacts:/"
    os.environ["MLFLOW_SHARE_ADMIN_PASSWORD"] = "coverage-admin-password"
    os.environ["_MLFLOW_SGI_NAME"] = sys.argv[3]
    from mlflow.server import app as flask_app
    from mlflow_share.app import create_app
    from mlflow_share.auth.interceptor import IncomingRequest
    from mlflow_share.policy.routes import RouteTable
    from werkzeug.datastructures import MultiDict
    app = create_app()
    interceptor = app.interceptor if hasattr(app, "interceptor") else app.wsgi_app.interceptor
    report = {"rules": len(interceptor.routes.rules), "undecided": interceptor.routes.undecided()}
    # A route added after start-up (a future MLflow's) has no decision and is denied.
    flask_app.add_url_rule("/api/2.0/mlflow/canary", "canary", lambda: "open", methods=["GET"])
    fastapi_app = getattr(app, "app", None)
    table = RouteTable(flask_app, fastapi_app if sys.argv[3] == "uvicorn" else None)
    interceptor.routes = table
    request = IncomingRequest("GET", "/api/2.0/mlflow/canary", "/api/2.0/mlflow/canary",
                              MultiDict(), {"authorization": "Basic YWRtaW46Y292ZXJhZ2UtYWRtaW4tcGFzc3dvcmQ="})
    match = interceptor.match(request)
    decision = interceptor.decide(request, match)
    report["canary_undecided"] = "flask:canary|GET" in table.undecided()
    report["canary_status"] = decision.status
    print(json.dumps(report))
""")


@pytest.mark.parametrize("server_kind", ["uvicorn", "gunicorn"])
def test_every_route_has_a_decision(tmp_path: Path, server_kind: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _COVERAGE_SCRIPT, f"sqlite:///{tmp_path / 'db.sqlite'}",
         str(tmp_path / "artifacts"), server_kind],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["rules"] > 200  # distinct (endpoint, method) pairs of MLflow 3.17
    assert report["undecided"] == []
    assert report["canary_undecided"] is True
    assert report["canary_status"] == 403  # even for the org admin


@pytest.mark.parametrize("server_option", [("--gunicorn-opts", "--timeout 60"), ("waitress",)])
def test_wsgi_servers_enforce_the_same_policy(tmp_path: Path, server_option) -> None:  # type: ignore[no-untyped-def]
    with running_server(tmp_path, extra=server_option) as server:
        populate(server)
        alice, bob = server.tokens["alice"], server.tokens["bob"]
        created = server.api("POST", "/api/2.0/mlflow/registered-models/create", token=alice,
                             json={"name": "wsgi-model"})
        assert created.status_code == 200, created.text
        got = server.api("GET", "/api/2.0/mlflow/registered-models/get", token=bob,
                         params={"name": "wsgi-model"})
        assert got.status_code == 403 and got.json()["error_code"] == "PERMISSION_DENIED"
        assert server.api("GET", "/api/2.0/mlflow/registered-models/get",
                          params={"name": "wsgi-model"}).status_code == 401
        search = server.api("GET", "/api/2.0/mlflow/registered-models/search", token=bob)
        assert search.json().get("registered_models", []) == []
        # A name in use: MLflow's message carries the driver's SQL; the client gets none.
        again = server.api("POST", "/api/2.0/mlflow/registered-models/create", token=alice,
                           json={"name": "wsgi-model"})
        assert again.status_code >= 400 and "error_code" in again.json()
        assert "SQL" not in again.text and "sqlite3" not in again.text, again.text
        for name in ("wsgi-dup", "wsgi-dup"):
            dup = server.api("POST", "/api/2.0/mlflow/experiments/create", token=alice,
                             json={"name": name})
        assert dup.status_code == 400 and "SQL" not in dup.text, dup.text
        # Artifacts are Flask routes under WSGI servers: still decided.
        exp = server.api("POST", "/api/2.0/mlflow/experiments/create", token=alice,
                         json={"name": "wsgi-exp"}).json()["experiment_id"]
        path = f"/api/2.0/mlflow-artifacts/artifacts/{exp}/run/artifacts/f.txt"
        assert server.api("PUT", path, token=alice, data=b"hello").status_code == 200
        assert server.api("GET", path, token=bob).status_code == 403
        assert server.api("GET", path, token=alice).content == b"hello"
        # ... and checked: declared digests, streamed large files, tampered bytes.
        import base64
        import hashlib

        other = "sha-256=:" + base64.b64encode(hashlib.sha256(b"x").digest()).decode() + ":"
        refused = server.api("PUT", path + ".2", token=alice, data=b"hello",
                             headers={"Content-Digest": other})
        assert refused.status_code == 400, refused.text
        big = os.urandom(9 * 1024 * 1024)
        assert server.api("PUT", path + ".big", token=alice, data=big).status_code == 200
        fetched = server.api("GET", path + ".big", token=alice)
        assert fetched.content == big
        assert fetched.headers["Content-Digest"].startswith("sha-256=:")
        (server.artifacts / f"{exp}/run/artifacts/f.txt").write_bytes(b"hellO")
        tampered = server.api("GET", path, token=alice)
        assert tampered.status_code == 500 and tampered.json()["error_code"] == "DATA_LOSS"


def test_policy_changes_reach_every_worker_at_once(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=3) as server:
        populate(server)
        alice, bob = server.tokens["alice"], server.tokens["bob"]
        server.api("POST", "/api/2.0/mlflow/registered-models/create", token=alice,
                   json={"name": "multi"})
        get = "/api/2.0/mlflow/registered-models/get"
        # New connections land on different workers; every one must see each change at once.
        for permission_state in ("granted", "revoked") * 2:
            method = "POST" if permission_state == "granted" else "DELETE"
            server.api(method, "/api/2.0/mlflow-share/grants", token=alice,
                       json={"model": "multi", "team": "team-b", "permission": "read"})
            expected = 200 if permission_state == "granted" else 403
            statuses = {server.api("GET", get, token=bob, params={"name": "multi"}).status_code
                        for _ in range(30)}
            assert statuses == {expected}, permission_state
        issued = server.admin("POST", "/tokens", json={"user": "bob"}).json()
        server.admin("DELETE", "/tokens", json={"token_id": issued["token_id"]})
        statuses = {server.api("GET", "/api/2.0/mlflow-share/whoami",
                               token=issued["token"]).status_code for _ in range(30)}
        assert statuses == {401}


def _cli(server, *args: str, token: str | None = None, stdin: str | None = None,  # type: ignore[no-untyped-def]
         admin: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["MLFLOW_TRACKING_URI"] = server.url
    if admin:
        env.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD)
    if token:
        env["MLFLOW_TRACKING_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "mlflow_share.cli", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_administers_the_server(share_server, unique) -> None:  # type: ignore[no-untyped-def]
    team, user = f"cli-{unique}", f"cli-user-{unique}"
    assert _cli(share_server, "team", "create", team, admin=True).returncode == 0
    made = _cli(share_server, "user", "create", user, "--password-stdin", admin=True,
                stdin=USER_PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert _cli(share_server, "team", "add-member", team, user, "--role", "maintainer",
                admin=True).returncode == 0
    issued = _cli(share_server, "token", "create", user, "--expires-in", "1", admin=True)
    token = issued.stdout.strip().splitlines()[-1]
    assert token.startswith("msh_")
    wrong = _cli(share_server, "token", "revoke", token, admin=True)  # the token, not its id
    assert wrong.returncode == 1 and "not its id" in wrong.stderr and token not in wrong.stderr
    me = requests.get(share_server.url + "/api/2.0/mlflow-share/whoami",
                      headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
    assert me["teams"] == {team: "maintainer"}
    # The new maintainer creates a model and shares it with team-b through the CLI.
    requests.post(share_server.url + "/api/2.0/mlflow/registered-models/create",
                  headers={"Authorization": f"Bearer {token}"}, json={"name": f"m-{unique}"},
                  timeout=30).raise_for_status()
    granted = _cli(share_server, "grant", "team-b", "read", "--model", f"m-{unique}", token=token)
    assert granted.returncode == 0 and "Granted" in granted.stdout
    bob = {"Authorization": f"Bearer {share_server.tokens['bob']}"}
    url = share_server.url + "/api/2.0/mlflow/registered-models/get"
    assert requests.get(url, params={"name": f"m-{unique}"}, headers=bob, timeout=30).ok
    revoked = _cli(share_server, "revoke", "team-b", "read", "--model", f"m-{unique}", token=token)
    assert revoked.returncode == 0
    assert requests.get(url, params={"name": f"m-{unique}"}, headers=bob,
                        timeout=30).status_code == 403
    # bob is no maintainer of the model's team: the CLI reports the server's refusal.
    refused = _cli(share_server, "grant", "team-b", "manage", "--model", f"m-{unique}",
                   token=share_server.tokens["bob"])
    assert refused.returncode == 1 and "PERMISSION_DENIED (403)" in refused.stderr


def test_cli_listings_read_as_tables_and_as_json(share_server, unique) -> None:  # type: ignore[no-untyped-def]
    """Aligned columns under headers for people, --json for scripts, ISO times, and a token
    past its expiry listed as expired."""
    import json
    import time

    user = f"lister-{unique}"
    assert _cli(share_server, "user", "create", user, "--service-account",
                admin=True).returncode == 0
    teams = _cli(share_server, "team", "list", admin=True).stdout.splitlines()
    assert teams[0].split() == ["TEAM", "MEMBERS"]
    assert "{" not in "".join(teams) and "None" not in "".join(teams)
    member_column = teams[0].index("MEMBERS")
    assert all(line[member_column - 2:member_column] == "  " for line in teams[1:])
    me = _cli(share_server, "whoami", token=share_server.tokens["alice"]).stdout.splitlines()
    assert me[0].split() == ["USER", "ORG", "ADMIN", "TEAMS"]
    assert me[1].split()[:2] == ["alice", "no"] and "team-a:maintainer" in me[1]
    assert json.loads(_cli(share_server, "whoami", "--json",
                           token=share_server.tokens["alice"]).stdout)[0]["user"] == "alice"
    users = json.loads(_cli(share_server, "user", "list", "--json", admin=True).stdout)
    assert {"name": user, "is_admin": False, "is_service_account": True}.items() <= \
        next(u for u in users if u["name"] == user).items()

    issued = _cli(share_server, "token", "create", user, "--expires-in", "0.00002", admin=True)
    token_id = issued.stderr.split()[1]
    deadline = time.monotonic() + 60
    while True:  # the token lives about 1.7 s
        listed = _cli(share_server, "token", "list", "--user", user, admin=True).stdout
        row = next(line for line in listed.splitlines() if line.startswith(token_id))
        if "expired" in row.split() or time.monotonic() > deadline:
            break
    assert listed.splitlines()[0].split()[:4] == ["TOKEN", "ID", "USER", "STATE"]
    assert row.split()[2] == "expired" and row.split()[3].endswith("+00:00")
    as_json = json.loads(_cli(share_server, "token", "list", "--user", user, "--json",
                              admin=True).stdout)
    assert [(t["token_id"], t["state"]) for t in as_json] == [(token_id, "expired")]


def test_policy_export_and_import_as_code(share_server, tmp_path: Path, unique) -> None:  # type: ignore[no-untyped-def]
    import yaml

    newcomer = f"pol-{unique}"
    share_server.admin("POST", "/users", json={"name": newcomer, "password": USER_PASSWORD})
    exported = _cli(share_server, "policy", "export", "-o", str(tmp_path / "p.yaml"), admin=True)
    assert exported.returncode == 0, exported.stderr
    document = yaml.safe_load((tmp_path / "p.yaml").read_text())
    team_c = next(t for t in document["teams"] if t["name"] == "team-c")
    team_c["members"].append({"user": "ava", "role": "viewer"})
    document["teams"].append({"name": f"new-{unique}", "members": [{"user": newcomer,
                                                                      "role": "maintainer"}]})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(document))

    dry = _cli(share_server, "policy", "import", str(tmp_path / "p.yaml"), "--dry-run", admin=True)
    assert dry.returncode == 0, dry.stderr
    assert f"+ team new-{unique}" in dry.stdout and "+ member ava of team-c (viewer)" in dry.stdout
    ava = {"Authorization": f"Bearer {share_server.tokens['ava']}"}
    whoami = share_server.url + "/api/2.0/mlflow-share/whoami"
    assert "team-c" not in requests.get(whoami, headers=ava, timeout=30).json()["teams"]

    # One bad entry: nothing at all is applied.
    broken = dict(document, grants=document["grants"] + [{"model": "no-such-model",
                                                          "team": "team-c", "permission": "read"}])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(broken))
    refused = _cli(share_server, "policy", "import", str(tmp_path / "bad.yaml"), admin=True)
    assert refused.returncode == 1 and "no-such-model" in refused.stderr
    assert "team-c" not in requests.get(whoami, headers=ava, timeout=30).json()["teams"]
    # An import keeps the rules every other change keeps: a team that has a maintainer keeps
    # one, and no team is granted what it owns.
    leaderless = yaml.safe_load(yaml.safe_dump(document))
    team_b = next(t for t in leaderless["teams"] if t["name"] == "team-b")
    team_b["members"] = [m for m in team_b["members"] if m["role"] != "maintainer"]
    owned = f"owned-{unique}"
    requests.post(share_server.url + "/api/2.0/mlflow/registered-models/create",
                  json={"name": owned}, timeout=30,
                  headers={"Authorization": f"Bearer {share_server.tokens['alice']}"}
                  ).raise_for_status()  # owned by team-a
    leaderless["grants"].append({"model": owned, "team": "team-a", "permission": "read"})
    (tmp_path / "guards.yaml").write_text(yaml.safe_dump(leaderless))
    guarded = _cli(share_server, "policy", "import", str(tmp_path / "guards.yaml"), admin=True)
    assert guarded.returncode == 1 and "'team-b' would have no maintainer" in guarded.stderr
    assert f"'team-a' on '{owned}': the team owns it" in guarded.stderr
    assert "Traceback" not in guarded.stderr

    applied = _cli(share_server, "policy", "import", str(tmp_path / "p.yaml"), admin=True)
    assert applied.returncode == 0, applied.stderr
    assert requests.get(whoami, headers=ava, timeout=30).json()["teams"] == {
        "team-a": "viewer", "team-c": "viewer"}
    again = _cli(share_server, "policy", "import", str(tmp_path / "p.yaml"), admin=True)
    assert "No changes." in again.stdout
    # Restore the default world for the other tests.
    requests.delete(share_server.url + "/api/2.0/mlflow-share/teams/members",
                    auth=share_server.admin_auth(), json={"team": "team-c", "user": "ava"},
                    timeout=30).raise_for_status()


def test_server_command_embedded_default_and_generated_admin(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_SHARE_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["MLFLOW_SHARE_HOME"] = str(tmp_path / "home")
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow_share.cli", "server", "--port", str(port),
             "--workers", "1"], stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.3)
        text = log.read_text()
        lines = text.splitlines()
        password = lines[lines.index(next(ln for ln in lines if "one-time password" in ln)) + 2].strip()
        assert text.count("one-time password") == 1
        assert (tmp_path / "home" / "mlflow.db").exists()
        me = requests.get(f"http://127.0.0.1:{port}/api/2.0/mlflow-share/whoami",
                          auth=("admin", password), timeout=30)
        assert me.json()["is_admin"] is True
        assert requests.get(f"http://127.0.0.1:{port}/api/2.0/mlflow-share/whoami",
                            auth=("admin", "admin"), timeout=30).status_code == 401
    finally:
        import signal

        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_administration_completes(share_server, unique) -> None:  # type: ignore[no-untyped-def]
    """Disable and enable a user (tokens, passwords and sessions stop at once), reset a
    password, delete a user; a team keeps a maintainer; a team is never granted its own
    model; the last org admin stays."""
    import json

    whoami = share_server.url + "/api/2.0/mlflow-share/whoami"
    user, team = f"adm-{unique}", f"adm-team-{unique}"
    assert _cli(share_server, "team", "create", team, admin=True).returncode == 0
    assert _cli(share_server, "user", "create", user, "--password-stdin", admin=True,
                stdin=USER_PASSWORD + "\n").returncode == 0
    token = _cli(share_server, "token", "create", user, admin=True).stdout.strip().splitlines()[-1]
    bearer = {"Authorization": f"Bearer {token}"}
    assert requests.get(whoami, headers=bearer, timeout=30).status_code == 200

    assert _cli(share_server, "user", "disable", user, admin=True).returncode == 0
    assert requests.get(whoami, headers=bearer, timeout=30).status_code == 401
    assert requests.get(whoami, auth=(user, USER_PASSWORD), timeout=30).status_code == 401
    listed = json.loads(_cli(share_server, "user", "list", "--json", admin=True).stdout)
    assert next(u for u in listed if u["name"] == user)["disabled_at"] is not None
    assert _cli(share_server, "user", "enable", user, admin=True).returncode == 0
    assert requests.get(whoami, headers=bearer, timeout=30).status_code == 200

    new_password = "a-new-password-" + unique
    assert _cli(share_server, "user", "reset-password", user, "--password-stdin", admin=True,
                stdin=new_password + "\n").returncode == 0
    assert requests.get(whoami, auth=(user, USER_PASSWORD), timeout=30).status_code == 401
    assert requests.get(whoami, auth=(user, new_password), timeout=30).status_code == 200

    # The team's only maintainer can neither leave nor step down.
    assert _cli(share_server, "team", "add-member", team, user, "--role", "maintainer",
                admin=True).returncode == 0
    for args in (("team", "remove-member", team, user),
                 ("team", "add-member", team, user, "--role", "viewer"),
                 ("user", "delete", user)):
        refused = _cli(share_server, *args, admin=True)
        assert refused.returncode == 1 and "last active maintainer" in refused.stderr, args
    successor = f"adm2-{unique}"  # a user of its own: the shared world's teams stay as they are
    assert _cli(share_server, "user", "create", successor, "--service-account",
                admin=True).returncode == 0
    assert _cli(share_server, "team", "add-member", team, successor, "--role", "maintainer",
                admin=True).returncode == 0
    assert _cli(share_server, "user", "delete", user, admin=True).returncode == 0
    assert requests.get(whoami, headers=bearer, timeout=30).status_code == 401
    assert user not in [u["name"] for u in json.loads(
        _cli(share_server, "user", "list", "--json", admin=True).stdout)]

    # A team is not granted what it owns; the last org admin cannot be disabled.
    requests.post(share_server.url + "/api/2.0/mlflow/registered-models/create",
                  headers={"Authorization": f"Bearer {share_server.tokens['alice']}"},
                  json={"name": f"own-{unique}"}, timeout=30).raise_for_status()
    own = _cli(share_server, "grant", "team-a", "read", "--model", f"own-{unique}",
               token=share_server.tokens["alice"])
    assert own.returncode == 1 and "owns" in own.stderr
    last = share_server.api("POST", "/api/2.0/mlflow-share/users/disable",
                            auth=share_server.admin_auth(), json={"name": "admin"})
    assert last.status_code == 400 and "yourself" in last.json()["message"]
