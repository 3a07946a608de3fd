"""Role × action × resource, driven through the stock MLflow client against a real server."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

pytestmark = pytest.mark.integration


def _code(call, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    try:
        call(*args, **kwargs)
    except MlflowException as exc:
        return str(exc.error_code)
    return "OK"


@pytest.fixture
def team_a_model(as_user, unique, tmp_path: Path):  # type: ignore[no-untyped-def]
    """alice (maintainer, team-a) logs a run with an artifact and registers it."""
    as_user("alice")
    client = MlflowClient()
    experiment_id = client.create_experiment(f"exp-a-{unique}")
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "alpha", "0.5")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    (model_dir / "weights.bin").write_bytes(b"\x00\x01weights")
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    (tmp_path / "notes.txt").write_text("team-a private notes")
    client.log_artifact(run.info.run_id, str(tmp_path / "notes.txt"))
    name = f"model-a-{unique}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                          run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    return {"experiment_id": experiment_id, "run_id": run.info.run_id, "name": name,
            "version": version.version}


READ_CALLS = {
    "get_experiment": lambda c, r: c.get_experiment(r["experiment_id"]),
    "get_run": lambda c, r: c.get_run(r["run_id"]),
    "search_runs": lambda c, r: c.search_runs([r["experiment_id"]]),
    "get_registered_model": lambda c, r: c.get_registered_model(r["name"]),
    "get_model_version": lambda c, r: c.get_model_version(r["name"], r["version"]),
    "get_alias": lambda c, r: c.get_model_version_by_alias(r["name"], "champion"),
    "download_uri": lambda c, r: c.get_model_version_download_uri(r["name"], r["version"]),
    "list_artifacts": lambda c, r: c.list_artifacts(r["run_id"]),
}
WRITE_CALLS = {
    "log_metric": lambda c, r: c.log_metric(r["run_id"], "m", 1.0),
    "set_experiment_tag": lambda c, r: c.set_experiment_tag(r["experiment_id"], "k", "v"),
    "set_model_tag": lambda c, r: c.set_registered_model_tag(r["name"], "k", "v"),
    "set_version_tag": lambda c, r: c.set_model_version_tag(r["name"], r["version"], "k", "v"),
    "update_model": lambda c, r: c.update_registered_model(r["name"], "desc"),
}

# user → (expected on reads, expected on writes), before any grant.
MATRIX = {
    "admin": ("OK", "OK"),
    "alice": ("OK", "OK"),
    "aaron": ("OK", "OK"),
    "ava": ("OK", "PERMISSION_DENIED"),
    "bob": ("PERMISSION_DENIED", "PERMISSION_DENIED"),
    "carl": ("PERMISSION_DENIED", "PERMISSION_DENIED"),
    "nobody": ("PERMISSION_DENIED", "PERMISSION_DENIED"),
    None: ("UNAUTHENTICATED", "UNAUTHENTICATED"),
}


def test_role_matrix(as_user, team_a_model) -> None:  # type: ignore[no-untyped-def]
    client = MlflowClient()
    observed, expected = {}, {}
    for user, (expected_read, expected_write) in MATRIX.items():
        as_user(user)
        for name, call in READ_CALLS.items():
            observed[(user, name)] = _code(call, client, team_a_model)
            expected[(user, name)] = expected_read
        for name, call in WRITE_CALLS.items():
            observed[(user, name)] = _code(call, client, team_a_model)
            expected[(user, name)] = expected_write
    assert observed == expected


def test_grant_read_then_revoke(share_server, as_user, team_a_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = team_a_model["name"]
    as_user("bob")
    client = MlflowClient()
    assert _code(client.get_registered_model, name) == "PERMISSION_DENIED"

    # bob (maintainer of team-b) cannot grant himself access; alice (maintainer of team-a) can.
    denied = share_server.api("POST", "/api/2.0/mlflow-share/grants", token=share_server.tokens["bob"],
                              json={"model": name, "team": "team-b", "permission": "read"})
    assert denied.status_code == 403
    assert denied.json()["error_code"] == "PERMISSION_DENIED"
    granted = share_server.api("POST", "/api/2.0/mlflow-share/grants",
                               token=share_server.tokens["alice"],
                               json={"model": name, "team": "team-b", "permission": "read"})
    assert granted.status_code == 200, granted.text

    for user in ("bob", "bea", "bert"):
        as_user(user)
        assert client.get_registered_model(name).name == name
        assert [mv.version for mv in client.search_model_versions(f"name='{name}'")] == ["1"]
        # The files of the shared version download, through the proxied artifact routes.
        local = mlflow.artifacts.download_artifacts(f"models:/{name}@champion",
                                                    dst_path=str(tmp_path / user))
        assert (Path(local) / "weights.bin").read_bytes() == b"\x00\x01weights"
        # The source run is lineage and readable; its other files and the experiment are not.
        assert client.get_run(team_a_model["run_id"]).data.params == {"alpha": "0.5"}
        other = (f"/api/2.0/mlflow-artifacts/artifacts/{team_a_model['experiment_id']}/"
                 f"{team_a_model['run_id']}/artifacts/notes.txt")
        assert share_server.api("GET", other, token=share_server.tokens[user]).status_code == 403
        # read is read: no writes, and the rest of team-a's experiment stays closed.
        assert _code(client.set_registered_model_tag, name, "k", "v") == "PERMISSION_DENIED"
        assert _code(client.get_experiment, team_a_model["experiment_id"]) == "PERMISSION_DENIED"
    as_user("carl")
    assert _code(client.get_registered_model, name) == "PERMISSION_DENIED"

    revoked = share_server.api("DELETE", "/api/2.0/mlflow-share/grants",
                               token=share_server.tokens["alice"],
                               json={"model": name, "team": "team-b", "permission": "read"})
    assert revoked.json() == {"revoked": True}
    as_user("bob")
    assert _code(client.get_registered_model, name) == "PERMISSION_DENIED"
    assert client.search_registered_models(f"name='{name}'") == []


def test_write_grant_is_capped_by_role(share_server, as_user, team_a_model) -> None:  # type: ignore[no-untyped-def]
    name = team_a_model["name"]
    share_server.api("POST", "/api/2.0/mlflow-share/grants", token=share_server.tokens["alice"],
                     json={"model": name, "team": "team-b", "permission": "write"})
    client = MlflowClient()
    as_user("bea")  # engineer of team-b: writes
    client.set_registered_model_tag(name, "reviewed-by", "team-b")
    as_user("bert")  # viewer of team-b: reads only
    assert client.get_registered_model(name).tags["reviewed-by"] == "team-b"
    assert _code(client.set_registered_model_tag, name, "k", "v") == "PERMISSION_DENIED"
    as_user("bea")  # write is not manage: no granting onwards
    onward = share_server.api("POST", "/api/2.0/mlflow-share/grants",
                              token=share_server.tokens["bea"],
                              json={"model": name, "team": "team-c", "permission": "read"})
    assert onward.status_code == 403


def test_viewer_cannot_create_and_team_is_chosen(share_server, as_user, unique) -> None:  # type: ignore[no-untyped-def]
    client = MlflowClient()
    as_user("ava")
    assert _code(client.create_experiment, f"v-{unique}") == "PERMISSION_DENIED"
    as_user("nobody")
    assert _code(client.create_registered_model, f"n-{unique}") == "PERMISSION_DENIED"
    # An engineer names a team it is not in: refused.
    as_user("carl")
    assert _code(client.create_registered_model, f"c-{unique}",
                 tags={"mlflow-share.team": "team-a"}) == "PERMISSION_DENIED"
    name = client.create_registered_model(f"c-{unique}").name
    owner = share_server.api("GET", "/api/2.0/mlflow-share/grants", token=share_server.tokens["carl"],
                             params={"model": name}).json()["owner_team"]
    assert owner == "team-c"


def test_rename_does_not_move_or_leak_grants(share_server, as_user, unique) -> None:  # type: ignore[no-untyped-def]
    client = MlflowClient()
    as_user("alice")
    old, new = f"ren-{unique}", f"ren-new-{unique}"
    client.create_registered_model(old)
    share_server.api("POST", "/api/2.0/mlflow-share/grants", token=share_server.tokens["alice"],
                     json={"model": old, "team": "team-b", "permission": "read"})
    client.rename_registered_model(old, new)
    # team-c creates a new model under the old name: team-b's grant must not follow the name.
    as_user("carl")
    client.create_registered_model(old)
    as_user("bob")
    assert client.get_registered_model(new).name == new
    assert _code(client.get_registered_model, old) == "PERMISSION_DENIED"
    # Deleting a model drops its grants: a new model with that name starts closed.
    as_user("alice")
    client.delete_registered_model(new)
    client.create_registered_model(new)
    as_user("bob")
    assert _code(client.get_registered_model, new) == "PERMISSION_DENIED"


def test_tokens_revoked_and_expired_are_refused_at_once(share_server) -> None:  # type: ignore[no-untyped-def]
    import time

    issued = share_server.admin("POST", "/tokens", json={"user": "carl"}).json()
    whoami = "/api/2.0/mlflow-share/whoami"
    assert share_server.api("GET", whoami, token=issued["token"]).status_code == 200
    share_server.admin("DELETE", "/tokens", json={"token_id": issued["token_id"]})
    response = share_server.api("GET", whoami, token=issued["token"])
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"

    short = share_server.admin("POST", "/tokens", json={"user": "carl", "expires_in_days": 2e-5})
    assert share_server.api("GET", whoami, token=short.json()["token"]).status_code == 200
    time.sleep(2.0)
    assert share_server.api("GET", whoami, token=short.json()["token"]).status_code == 401


def test_service_account_uses_tokens_only(share_server, unique) -> None:  # type: ignore[no-untyped-def]
    name = f"svc-{unique}"
    share_server.admin("POST", "/users", json={"name": name, "service_account": True})
    token = share_server.admin("POST", "/tokens", json={"user": name}).json()["token"]
    me = share_server.api("GET", "/api/2.0/mlflow-share/whoami", token=token).json()
    assert me["user"] == name
    response = share_server.api("GET", "/api/2.0/mlflow-share/whoami", auth=(name, ""))
    assert response.status_code == 401


def test_a_consuming_team_sees_its_own_routes_and_the_owner_team_sees_all(
        share_server, unique) -> None:  # type: ignore[no-untyped-def]
    """Grants and effective access of a model: its owner team's members and its managers see
    every team that reaches it; a consuming team sees the owner and its own routes only."""
    share = "/api/2.0/mlflow-share"
    tokens = share_server.tokens
    name = f"seen-{unique}"
    assert share_server.api("POST", "/api/2.0/mlflow/registered-models/create",
                            token=tokens["alice"], json={"name": name}).status_code == 200
    for team in ("team-b", "team-c"):
        assert share_server.api("POST", f"{share}/grants", token=tokens["alice"], json={
            "model": name, "team": team, "permission": "read"}).status_code == 200

    def teams(user: str, route: str) -> set[str]:
        found = share_server.api("GET", f"{share}/{route}", token=tokens[user],
                                 params={"model": name}).json()
        return {entry["team"] for entry in found["grants" if route == "grants" else "teams"]}

    for user in ("alice", "aaron", "ava"):  # team-a: maintainer, engineer, viewer
        assert teams(user, "grants") == {"team-b", "team-c"}
        assert teams(user, "access") == {"team-a", "team-b", "team-c"}
    assert teams("carl", "grants") == {"team-c"}
    assert teams("carl", "access") == {"team-a", "team-c"}
    assert teams("bea", "grants") == {"team-b"}
    assert share_server.api("GET", f"{share}/grants", token=tokens["nobody"],
                            params={"model": name}).status_code == 403
