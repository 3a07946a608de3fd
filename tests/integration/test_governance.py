"""Protected aliases, compare-and-set moves, rollback, history and branches, on a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import USER_PASSWORD, ShareServer
from tests.integration.test_sharing import X, _onnx_files, _register_files

pytestmark = pytest.mark.integration
API = "/api/2.0/mlflow"
SHARE = "/api/2.0/mlflow-share"


def _model_with_versions(server: ShareServer, name: str, count: int, *,
                         validated: bool = True) -> None:
    """``count`` versions of a real ONNX model, each validated by a (unpublished) package."""
    files = _onnx_files(X[:2].tolist())
    for _ in range(count):
        version = _register_files(server, name, files)
        if validated:
            package = server.api("POST", f"{SHARE}/packages", token=server.tokens["alice"],
                                 json={"model": name, "versions": [version],
                                       "description": "governance test",
                                       "teams": [{"team": "team-b", "permission": "read"}]})
            assert package.json()["package"]["status"] == "validated", package.text


def _second_maintainer(server: ShareServer, unique: str) -> str:
    """Another maintainer of team-a (alice is the first)."""
    second = f"amy-{unique}"
    server.admin("POST", "/users", json={"name": second, "password": USER_PASSWORD})
    server.admin("POST", "/teams/members", json={"team": "team-a", "user": second,
                                                 "role": "maintainer"})
    server.tokens[second] = server.admin("POST", "/tokens", json={"user": second}).json()["token"]
    return second


def _alias(server: ShareServer, user: str, name: str, alias: str, version: str) -> Any:
    return server.api("POST", f"{API}/registered-models/alias", token=server.tokens[user],
                      json={"name": name, "alias": alias, "version": version})


def _cli(server: ShareServer, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url,
           "MLFLOW_TRACKING_TOKEN": server.tokens[user]}
    return subprocess.run([sys.executable, "-m", "mlflow_share.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_protected_alias_moves_only_by_maintainers_and_rolls_back(share_server: ShareServer,
                                                                   unique: str) -> None:
    name = f"gov-{unique}"
    _model_with_versions(share_server, name, 3)
    assert _alias(share_server, "aaron", name, "production", "1").ok  # not protected yet
    protect = _cli(share_server, "aaron", "alias", "protect", name, "production")
    assert protect.returncode != 0 and "PERMISSION_DENIED" in protect.stderr  # engineer
    assert _cli(share_server, "alice", "alias", "protect", name, "production").returncode == 0
    # The stock MLflow call: refused to the engineer, allowed to the maintainer.
    denied = _alias(share_server, "aaron", name, "production", "2")
    assert denied.status_code == 403 and denied.json()["error_code"] == "PERMISSION_DENIED"
    deleted = share_server.api("DELETE", f"{API}/registered-models/alias",
                               token=share_server.tokens["aaron"],
                               json={"name": name, "alias": "production"})
    assert deleted.status_code == 403
    for route, body in (("move", {"version": "2"}), ("rollback", {"reason": "x"})):
        ours = share_server.api("POST", f"{SHARE}/aliases/{route}",
                                token=share_server.tokens["aaron"],
                                json={"model": name, "alias": "production", **body})
        assert ours.status_code == 403, ours.text  # mlflow-share's own API: the same rule
    # Deleting the version it points at would drop the alias with it: refused.
    dropped = share_server.api("DELETE", f"{API}/model-versions/delete",
                               token=share_server.tokens["alice"],
                               json={"name": name, "version": "1"})
    assert dropped.status_code == 409 and "protected alias" in dropped.json()["message"]
    assert _alias(share_server, "alice", name, "production", "2").ok
    assert _alias(share_server, "alice", name, "production", "3").ok
    rolled = _cli(share_server, "alice", "alias", "rollback", name, "production",
                  "--reason", "v3 drifts on the March data")
    assert rolled.returncode == 0, rolled.stderr
    assert "3 -> 2" in rolled.stdout
    got = share_server.api("GET", f"{API}/registered-models/alias", token=share_server.tokens[
        "alice"], params={"name": name, "alias": "production"}).json()
    assert got["model_version"]["version"] == "2"
    history = _cli(share_server, "ava", "alias", "history", name, "--alias", "production")
    assert history.returncode == 0, history.stderr  # readers may see the history
    lines = history.stdout.strip().splitlines()
    assert lines[0].split() == ["WHEN", "ALIAS", "FROM", "TO", "BY", "REASON"]
    assert [line.split()[1:4] for line in lines[1:]] == [
        ["production", "-", "1"], ["production", "1", "2"], ["production", "2", "3"],
        ["production", "3", "2"]]
    assert lines[1].split()[0].endswith("+00:00")  # ISO 8601 times, not epoch milliseconds
    assert "aaron" in lines[1] and "alice" in lines[-1]
    assert "v3 drifts on the March data" in lines[-1]
    as_json = json.loads(_cli(share_server, "ava", "alias", "history", name, "--alias",
                              "production", "--json").stdout)
    assert [(m["from_version"], m["to_version"]) for m in as_json] == [
        (None, 1), (1, 2), (2, 3), (3, 2)]


def test_concurrent_moves_one_wins_the_other_gets_409(share_server: ShareServer,
                                                      unique: str) -> None:
    name = f"gov-race-{unique}"
    _model_with_versions(share_server, name, 3)
    second = _second_maintainer(share_server, unique)
    assert _alias(share_server, "alice", name, "production", "1").ok
    share_server.api("POST", f"{SHARE}/aliases/protect", token=share_server.tokens["alice"],
                     json={"model": name, "alias": "production"})
    results: dict[str, int] = {}
    start = threading.Barrier(2)

    def move(user: str, version: str) -> None:
        start.wait()
        response = share_server.api("POST", f"{SHARE}/aliases/move",
                                    token=share_server.tokens[user],
                                    json={"model": name, "alias": "production",
                                          "version": version, "expected_version": "1"})
        results[user] = response.status_code

    threads = [threading.Thread(target=move, args=(u, v))
               for u, v in (("alice", "2"), (second, "3"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results.values()) == [200, 409], results
    engine = sa.create_engine(share_server.backend_uri)
    with engine.connect() as conn:
        attempts = conn.execute(sa.text(
            "SELECT principal, status FROM share_audit_events WHERE source = 'request' "
            "AND route = :r AND resource_name = :n"),
            {"r": f"{SHARE}/aliases/move", "n": name}).all()
    engine.dispose()
    assert sorted(status for _, status in attempts) == [200, 409]
    assert {principal for principal, _ in attempts} == {"alice", second}


def test_branches_are_free_for_engineers_and_never_protected(share_server: ShareServer,
                                                             unique: str) -> None:
    name = f"gov-branch-{unique}"
    _model_with_versions(share_server, name, 2)
    for version in ("1", "2", "1"):
        assert _alias(share_server, "aaron", name, "branch-lr-sweep", version).ok
    refused = share_server.api("POST", f"{SHARE}/aliases/protect",
                               token=share_server.tokens["alice"],
                               json={"model": name, "alias": "branch-lr-sweep"})
    assert refused.status_code == 400 and "branch" in refused.json()["message"]
    listed = share_server.api("GET", f"{SHARE}/aliases", token=share_server.tokens["ava"],
                              params={"model": name}).json()
    assert listed["protected"] == []
    assert share_server.api("GET", f"{SHARE}/aliases", token=share_server.tokens["carl"],
                            params={"model": name}).status_code == 403


def test_a_move_can_require_a_second_maintainer(share_server: ShareServer, unique: str) -> None:
    name = f"gov-4eyes-{unique}"
    _model_with_versions(share_server, name, 3)
    second = _second_maintainer(share_server, unique)
    assert _alias(share_server, "alice", name, "production", "1").ok
    protect = _cli(share_server, "alice", "alias", "protect", name, "production",
                   "--require-approval")
    assert protect.returncode == 0 and "second maintainer" in protect.stdout, protect.stderr
    # Nobody moves it directly any more, maintainers included, through stock MLflow or ours.
    direct = _alias(share_server, "alice", name, "production", "2")
    assert direct.status_code == 403 and "approval" in direct.json()["message"]
    assert share_server.api("POST", f"{SHARE}/aliases/move", token=share_server.tokens["alice"],
                            json={"model": name, "alias": "production",
                                  "version": "2"}).status_code == 403
    # One maintainer cannot lift the approval (or the protection) to move it alone.
    for route, body in (("protect", {"require_approval": False}), ("unprotect", {})):
        lifted = share_server.api("POST", f"{SHARE}/aliases/{route}",
                                  token=share_server.tokens["alice"],
                                  json={"model": name, "alias": "production", **body})
        assert lifted.status_code == 403, lifted.text
    # An engineer cannot even ask.
    assert _cli(share_server, "aaron", "alias", "request", name, "production", "2",
                "--reason", "x").returncode != 0
    asked = _cli(share_server, "alice", "alias", "request", name, "production", "2",
                 "--reason", "v2 wins the A/B test")
    assert asked.returncode == 0, asked.stderr
    request_id = asked.stdout.strip().splitlines()[-1]
    own = _cli(share_server, "alice", "alias", "approve", request_id)
    assert own.returncode != 0 and "your own request" in own.stderr
    approved = _cli(share_server, second, "alias", "approve", request_id)
    assert approved.returncode == 0, approved.stderr
    again = _cli(share_server, second, "alias", "approve", request_id)
    assert again.returncode != 0 and "approved" in again.stderr
    got = share_server.api("GET", f"{API}/registered-models/alias", token=share_server.tokens[
        "ava"], params={"name": name, "alias": "production"}).json()
    assert got["model_version"]["version"] == "2"
    # A second request, rejected: the alias stays.
    second_ask = _cli(share_server, "alice", "alias", "request", name, "production", "3",
                      "--reason", "try v3")
    rejected = _cli(share_server, second, "alias", "reject",
                    second_ask.stdout.strip().splitlines()[-1], "--reason", "not yet")
    assert rejected.returncode == 0, rejected.stderr
    listed = json.loads(_cli(share_server, "ava", "alias", "requests", name, "--json").stdout)
    assert [r["status"] for r in listed] == ["approved", "rejected"]
    assert listed[0]["decided_by"] == second
    table = _cli(share_server, "ava", "alias", "requests", name).stdout.strip().splitlines()
    assert table[0].split()[:5] == ["ID", "ALIAS", "FROM", "TO", "STATUS"]
    assert [line.split()[4] for line in table[1:]] == ["approved", "rejected"]
    history = json.loads(_cli(share_server, "ava", "alias", "history", name, "--alias",
                              "production", "--json").stdout)
    assert (history[-1]["from_version"], history[-1]["to_version"]) == (1, 2)
    assert history[-1]["principal"] == second


def test_a_protected_alias_only_points_at_validated_versions(share_server: ShareServer,
                                                            unique: str) -> None:
    name = f"gov-valid-{unique}"
    _model_with_versions(share_server, name, 1)
    _model_with_versions(share_server, name, 1, validated=False)
    assert _alias(share_server, "alice", name, "production", "1").ok
    assert _cli(share_server, "alice", "alias", "protect", name, "production").returncode == 0
    refused = _alias(share_server, "alice", name, "production", "2")
    assert refused.status_code == 409 and "not passed validation" in refused.json()["message"]
    assert _alias(share_server, "alice", name, "branch-try-v2", "2").ok  # branches: free
