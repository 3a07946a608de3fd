"""Sharing packages across three teams, validation, semantic versions, lineage and webhooks,
on a real server with the stock MLflow client and real ONNX models built here."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import sqlalchemy as sa

from tests.conftest import ShareServer
from tests.integration.test_gateway import _gateway, within_freshness

pytestmark = pytest.mark.integration
API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
SHARE = "/api/2.0/mlflow-share"
X = np.random.default_rng(11).random((40, 4)).astype(np.float32)


def _classifier() -> Any:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    labels = (X[:, 0] + X[:, 2] > 1.0).astype(np.int64)
    return to_onnx(LogisticRegression().fit(X, labels), X[:1], options={"zipmap": False})


def _log_onnx(server: ShareServer, user: str, name: str, *, params: dict[str, Any]) -> str:
    """Log and register an ONNX model with the stock client, as ``user``; returns its version."""
    import mlflow
    from mlflow.models import infer_signature

    onx = _classifier()
    import onnxruntime as ort

    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    labels = session.run(None, {session.get_inputs()[0].name: X})[0]
    before = os.environ.get("MLFLOW_TRACKING_TOKEN")
    os.environ["MLFLOW_TRACKING_TOKEN"] = server.tokens[user]
    try:
        mlflow.set_tracking_uri(server.url)
        experiment = f"sharing-{name}"
        if mlflow.get_experiment_by_name(experiment) is None:
            mlflow.create_experiment(experiment)
        mlflow.set_experiment(experiment)
        with mlflow.start_run():
            mlflow.log_params(params)
            mlflow.log_metric("accuracy", 0.9 + 0.01 * len(params))
            mlflow.set_tag("mlflow.source.git.commit", "0123456789abcdef")
            mlflow.log_input(mlflow.data.from_numpy(X, name="churn-train"), context="training")
            info = mlflow.onnx.log_model(onx, name="model", input_example=X[:2],
                                         signature=infer_signature(X, labels),
                                         registered_model_name=name)
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = before
    return str(info.registered_model_version)


@pytest.fixture
def stock(share_server: ShareServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The stock MlflowClient as a given user: ``stock("bea").get_registered_model(...)``."""
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", share_server.url)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)

    def as_user(user: str) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", share_server.tokens[user])
        return MlflowClient(share_server.url)

    yield as_user
    mlflow.set_tracking_uri(None)


def _cli(server: ShareServer, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url,
           "MLFLOW_TRACKING_TOKEN": server.tokens[user]}
    return subprocess.run([sys.executable, "-m", "mlflow_share.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _denied(call: Any) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        call()
    except MlflowException as exc:
        return exc.error_code == "PERMISSION_DENIED"
    return False


def _invoke(gateway: str, server: ShareServer, user: str, name: str) -> int:
    return requests.post(f"{gateway}/v1/models/{name}/versions/1/invocations",
                         json={"inputs": X[:3].tolist()}, timeout=30,
                         headers={"Authorization": f"Bearer {server.tokens[user]}"}).status_code


def test_package_workflow_across_three_teams(share_server: ShareServer, stock: Any,
                                             unique: str, tmp_path: Path) -> None:
    import mlflow

    name = f"churn-{unique}"
    assert _log_onnx(share_server, "aaron", name, params={"C": 1.0}) == "1"
    created = _cli(share_server, "aaron", "share", "create", name, "--version", "1",
                   "--team", "team-b:execute", "--team", "team-b:read", "--semver", "1.0.0",
                   "--description", "Churn classifier for the retention team",
                   "--intended-use", "weekly churn scoring")
    assert created.returncode == 0, created.stdout + created.stderr
    package_id = created.stdout.strip().splitlines()[-1]
    assert "[validated]" in created.stdout and "ok  onnx v1" in created.stdout
    assert "metrics v1: accuracy=0.91" in created.stdout  # the run's metrics, snapshotted

    with _gateway(share_server, tmp_path) as gateway:
        # Before publish: team B (and team C) can neither read nor execute.
        assert _denied(lambda: stock("bea").get_registered_model(name))
        assert name not in [m.name for m in stock("bea").search_registered_models()]
        assert _invoke(gateway, share_server, "bea", name) == 403
        # An engineer of the owner team may package but not publish.
        refused = _cli(share_server, "aaron", "share", "publish", package_id)
        assert refused.returncode != 0 and "PERMISSION_DENIED" in refused.stderr
        published = _cli(share_server, "alice", "share", "publish", package_id)
        assert published.returncode == 0, published.stderr

        # After publish: team B finds, reads, downloads and executes it.
        found = _cli(share_server, "bea", "search", "--semver", "^1")
        assert found.returncode == 0 and name in found.stdout, found.stderr
        assert stock("bea").get_registered_model(name).name == name
        downloaded = mlflow.artifacts.download_artifacts(f"models:/{name}/1",
                                                         dst_path=str(tmp_path / "b"))
        assert (Path(downloaded) / "model.onnx").is_file()
        assert _invoke(gateway, share_server, "bea", name) == 200
        shown = _cli(share_server, "bert", "share", "show", package_id)  # a team-b viewer
        assert shown.returncode == 0 and "[published]" in shown.stdout, shown.stderr
        # Team C still gets nothing.
        assert _denied(lambda: stock("carl").get_registered_model(name))
        assert _invoke(gateway, share_server, "carl", name) == 403
        assert _cli(share_server, "carl", "share", "show", package_id).returncode != 0
        resolved = _cli(share_server, "bea", "semver", "resolve", name, "^1.0")
        assert resolved.stdout.strip() == f"1.0.0  models:/{name}/1", resolved.stderr

        # The package pins version 1: team A's next version stays theirs until packaged.
        assert _log_onnx(share_server, "aaron", name, params={"C": 2.0}) == "2"
        stock("bea")  # the stock client's identity: bea
        with pytest.raises(Exception, match="403|PERMISSION_DENIED|Permission denied"):
            mlflow.artifacts.download_artifacts(f"models:/{name}/2", dst_path=str(tmp_path / "c"))
        got = share_server.api("GET", "/model-versions/get-artifact",
                               token=share_server.tokens["bea"],
                               params={"name": name, "version": "2", "path": "MLmodel"})
        assert got.status_code == 403, got.text
        assert share_server.api("GET", "/model-versions/get-artifact",
                                token=share_server.tokens["bea"], params={
                                    "name": name, "version": "1", "path": "MLmodel"}).ok
        # Nor through where the versions came from: the logged model's files and its run.
        for version, allowed in (("1", True), ("2", False)):
            mv = share_server.api("GET", f"{API}/model-versions/get", token=share_server.tokens[
                "bea"], params={"name": name, "version": version}).json()["model_version"]
            logged = share_server.api("GET", f"{API}/logged-models/{mv['source'][8:]}",
                                      token=share_server.tokens["aaron"]).json()["model"]
            files = logged["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/")
            read = share_server.api("GET", f"{ARTIFACTS}/{files}/model.onnx",
                                    token=share_server.tokens["bea"])
            run = share_server.api("GET", f"{API}/runs/get", token=share_server.tokens["bea"],
                                   params={"run_id": mv["run_id"]})
            assert (read.status_code, run.status_code) == ((200, 200) if allowed else
                                                           (403, 403)), (version, read.text)
        second = requests.post(f"{gateway}/v1/models/{name}/versions/2/invocations",
                               json={"inputs": X[:3].tolist()}, timeout=30, headers={
                                   "Authorization": f"Bearer {share_server.tokens['bea']}"})
        assert second.status_code == 403, second.text
        assert _invoke(gateway, share_server, "bea", name) == 200  # version 1 still runs
        assert _invoke(gateway, share_server, "aaron", name) == 200

        # Revoke: team B loses access at once, and on the gateway within its freshness bound.
        assert _cli(share_server, "alice", "share", "revoke", package_id).returncode == 0
        assert _denied(lambda: stock("bea").get_registered_model(name))
        within_freshness(lambda: _invoke(gateway, share_server, "bea", name) == 403)

    tags = stock("alice").get_model_version(name, "1").tags
    assert tags["mlflow_share.semver"] == "1.0.0"
    engine = sa.create_engine(share_server.backend_uri)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT principal, details FROM share_audit_events WHERE details LIKE :p "
            "ORDER BY seq"), {"p": f"%{package_id}%"}).all()
    engine.dispose()
    ops = [(principal, change["op"]) for principal, details in rows
           for change in json.loads(details).get("changes") or []
           if str(change.get("op", "")).startswith("package.")]
    assert ops == [("aaron", "package.create"), ("alice", "package.publish"),
                   ("alice", "package.revoke")]


def _register_files(server: ShareServer, name: str, files: dict[str, bytes]) -> str:
    token = server.tokens["alice"]
    experiment = server.api("GET", f"{API}/experiments/get-by-name", token=token,
                            params={"experiment_name": f"sharing-{name}"})
    if experiment.ok:
        experiment_id = experiment.json()["experiment"]["experiment_id"]
    else:
        experiment_id = server.api("POST", f"{API}/experiments/create", token=token, json={
            "name": f"sharing-{name}"}).json()["experiment_id"]
        assert server.api("POST", f"{API}/registered-models/create", token=token,
                          json={"name": name}).ok
    run = server.api("POST", f"{API}/runs/create", token=token, json={
        "experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
    for relative, data in files.items():
        assert server.api("PUT", f"{ARTIFACTS}/{experiment_id}/{run}/artifacts/model/"
                          f"{relative}", token=token, data=data).ok
    created = server.api("POST", f"{API}/model-versions/create", token=token, json={
        "name": name, "source": f"runs:/{run}/model", "run_id": run})
    assert created.status_code == 200, created.text
    return str(created.json()["model_version"]["version"])


def _onnx_files(example: list[list[float]]) -> dict[str, bytes]:
    signature = {"inputs": json.dumps([{"type": "tensor", "tensor-spec": {
        "dtype": "float32", "shape": [-1, 4]}}]),
        "outputs": json.dumps([{"type": "tensor", "tensor-spec": {
            "dtype": "int64", "shape": [-1]}}])}
    mlmodel = {"flavors": {"onnx": {"data": "model.onnx", "onnx_version": "1.17.0"},
                           "python_function": {"loader_module": "mlflow.onnx",
                                               "data": "model.onnx"}},
               "signature": signature,
               "saved_input_example_info": {"artifact_path": "input_example.json",
                                            "serving_input_path": "serving_input_example.json",
                                            "type": "ndarray"}}
    import yaml

    return {"MLmodel": yaml.safe_dump(mlmodel).encode(),
            "model.onnx": _classifier().SerializeToString(),
            "input_example.json": json.dumps(example).encode(),
            "serving_input_example.json": json.dumps({"inputs": example}).encode()}


def _create(server: ShareServer, name: str, version: str, **extra: Any) -> dict[str, Any]:
    body = {"model": name, "versions": [version],
            "teams": [{"team": "team-b", "permission": "execute"}],
            "description": "a model", **extra}
    response = server.api("POST", f"{SHARE}/packages", token=server.tokens["alice"], json=body)
    assert response.status_code == 200, response.text
    return dict(response.json()["package"])


def _problems(package: dict[str, Any], check: str) -> list[str]:
    return [p for c in package["report"]["checks"] if c["check"] == check
            for p in c["problems"]]


def test_validation_rejects_with_a_clear_report(share_server: ShareServer, unique: str) -> None:
    name = f"val-{unique}"
    good = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    assert _create(share_server, name, good, semver="0.1.0")["status"] == "validated"

    # Missing metadata.
    bare = _create(share_server, name, good, description=None, semver="not-semver")
    assert bare["status"] == "rejected"
    assert any("description" in p for p in _problems(bare, "metadata"))
    assert any("not-semver" in p for p in _problems(bare, "metadata"))

    # An input example that does not fit the model (3 features, the model takes 4).
    wrong = _register_files(share_server, name, _onnx_files([[0.1, 0.2, 0.3]]))
    failing = _create(share_server, name, wrong)
    assert failing["status"] == "rejected"
    assert any("expects size 4" in p for p in _problems(failing, "input_example")), failing
    assert not _problems(failing, "onnx")

    # A model that is not ONNX (a pickled scikit-learn model).
    pickled = _register_files(share_server, name, {
        "MLmodel": b"flavors:\n  sklearn:\n    pickled_model: model.pkl\n"
                   b"  python_function:\n    loader_module: mlflow.sklearn\n",
        "model.pkl": b"\x80\x04not really a pickle"})
    not_onnx = _create(share_server, name, pickled)
    assert not_onnx["status"] == "rejected"
    assert any("ONNX" in p for p in _problems(not_onnx, "onnx")), not_onnx

    # A corrupted artifact: bytes changed on disk after registration.
    corrupt = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    location = share_server.api("GET", f"{API}/model-versions/get-download-uri",
                                token=share_server.tokens["alice"],
                                params={"name": name, "version": corrupt}).json()[
        "artifact_uri"].removeprefix("mlflow-artifacts:/")
    target = share_server.artifacts / location / "model.onnx"
    target.write_bytes(target.read_bytes()[:-8] + b"tampered")
    tampered = _create(share_server, name, corrupt)
    assert tampered["status"] == "rejected"
    assert any("model.onnx does not match the manifest" in p
               for p in _problems(tampered, "manifest")), tampered
    # A rejected package cannot be published.
    publish = share_server.api("POST", f"{SHARE}/packages/{tampered['id']}/publish",
                               token=share_server.tokens["alice"])
    assert publish.status_code == 409, publish.text


def test_semver_is_unique_and_ranges_pick_the_newest_published(share_server: ShareServer,
                                                                 unique: str) -> None:
    name = f"sem-{unique}"
    files = _onnx_files(X[:2].tolist())
    versions = [_register_files(share_server, name, files) for _ in range(4)]
    token = share_server.tokens["alice"]
    for version, semver in zip(versions, ("1.2.0", "1.3.0-rc.1", "1.3.0", "2.0.0")):
        package = _create(share_server, name, version, semver=semver)
        assert package["status"] == "validated", package
        assert share_server.api("POST", f"{SHARE}/packages/{package['id']}/publish",
                                token=token).ok
    taken = _create(share_server, name, versions[0], semver="2.0.0")
    assert taken["status"] == "rejected"
    assert any("already names version" in p for p in _problems(taken, "metadata"))

    def resolve(text: str) -> Any:
        response = share_server.api("GET", f"{SHARE}/semver/resolve", token=token,
                                    params={"model": name, "range": text})
        return response.json().get("semver") if response.ok else response.status_code

    assert resolve("^1.2") == "1.3.0"
    assert resolve("~1.2.0") == "1.2.0"
    assert resolve("^2") == "2.0.0"
    assert resolve(">=1.3.0-rc.0 <1.3.0") == "1.3.0-rc.1"
    assert resolve("^3") == 404
    assert resolve("^x.y") == 400
    listed = share_server.api("GET", f"{SHARE}/semver", token=token,
                              params={"model": name}).json()["versions"]
    assert [v["semver"] for v in listed] == ["2.0.0", "1.3.0", "1.3.0-rc.1", "1.2.0"]


def test_lineage_and_diff(share_server: ShareServer, unique: str,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"lin-{unique}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", share_server.url)
    _log_onnx(share_server, "alice", name, params={"C": 1.0})
    _log_onnx(share_server, "alice", name, params={"C": 0.5, "penalty": "l2"})
    shown = _cli(share_server, "alice", "lineage", f"models:/{name}/2", "--json")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    assert found["run"]["params"] == {"C": "0.5", "penalty": "l2"}
    assert found["run"]["code_commit"] == "0123456789abcdef"
    assert found["run"]["experiment"] == f"sharing-{name}"
    assert found["parent"] == {"version": "1", "basis": "previous version"}
    [dataset] = found["run"]["datasets"]
    assert dataset["name"] == "churn-train" and dataset["context"] == "training"
    assert len(dataset["digest"]) >= 8
    assert len(found["manifest"]["identity"]) == 64
    assert [t["team"] for t in found["consuming_teams"]] == []
    changed = _cli(share_server, "alice", "diff", f"models:/{name}/1", f"models:/{name}/2")
    assert changed.returncode == 0, changed.stderr
    assert "param C: 1.0 -> 0.5" in changed.stdout
    assert "param penalty: None -> l2" in changed.stdout
    assert "metric accuracy: 0.91 -> 0.92" in changed.stdout
    assert "file ~ MLmodel" in changed.stdout  # run ids differ; model.onnx is the same model
    # Someone who cannot read the model gets 403; lineage needs read.
    assert _cli(share_server, "carl", "lineage", f"models:/{name}/1").returncode != 0


def test_an_expired_package_stops_granting_at_once(share_server: ShareServer, stock: Any,
                                                  unique: str) -> None:
    name = f"exp-{unique}"
    version = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    expires_at = int(time.time() * 1000) + 4000
    package = _create(share_server, name, version, expires_at=expires_at,
                      teams=[{"team": "team-b", "permission": "read"}])
    assert share_server.api("POST", f"{SHARE}/packages/{package['id']}/publish",
                            token=share_server.tokens["alice"]).ok
    assert stock("bea").get_registered_model(name).name == name
    time.sleep(max(0.0, expires_at / 1000 - time.time()) + 0.2)
    assert _denied(lambda: stock("bea").get_registered_model(name))
    assert name not in [m.name for m in stock("bea").search_registered_models()]
    shown = share_server.api("GET", f"{SHARE}/packages/{package['id']}",
                             token=share_server.tokens["alice"]).json()["package"]
    assert shown["status"] == "expired"
    past = share_server.api("POST", f"{SHARE}/packages", token=share_server.tokens["alice"],
                            json={"model": name, "versions": [version], "expires_at": 1,
                                  "teams": [{"team": "team-b", "permission": "read"}]})
    assert past.status_code == 400 and "past" in past.json()["message"]


def test_bad_package_requests_are_refused_whole(share_server: ShareServer, unique: str) -> None:
    name = f"bad-{unique}"
    version = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    token = share_server.tokens["alice"]
    for body, status in (
            ({"model": name, "versions": [version], "teams": [{"team": "team-z",
                                                              "permission": "read"}]}, 404),
            ({"model": name, "versions": [version], "teams": [{"team": "team-b",
                                                              "permission": "manage"}]}, 400),
            ({"model": name, "versions": ["99"], "teams": [{"team": "team-b",
                                                           "permission": "read"}]}, 404),
            ({"model": name, "alias": "nope", "teams": [{"team": "team-b",
                                                        "permission": "read"}]}, 404),
            ({"model": name, "teams": [{"team": "team-b", "permission": "read"}]}, 400),
            ({"model": name, "versions": [version], "teams": "team-b:read"}, 400),
            ({"model": name, "versions": [version], "description": 5,
              "teams": [{"team": "team-b", "permission": "read"}]}, 400)):
        response = share_server.api("POST", f"{SHARE}/packages", token=token, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error_code"] in ("INVALID_PARAMETER_VALUE",
                                                 "RESOURCE_DOES_NOT_EXIST")
    # Team B's engineer cannot package team A's model; nothing was stored by the above.
    assert share_server.api("POST", f"{SHARE}/packages", token=share_server.tokens["bea"], json={
        "model": name, "versions": [version],
        "teams": [{"team": "team-b", "permission": "read"}]}).status_code in (403, 404)
    assert share_server.api("GET", f"{SHARE}/packages", token=token,
                            params={"model": name}).json()["packages"] == []
    assert share_server.api("GET", f"{SHARE}/packages/../../x", token=token).status_code == 404


def test_discovery_filters_what_the_caller_may_read(share_server: ShareServer,
                                                   unique: str) -> None:
    name = f"disc-{unique}"
    version = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    alice, bea = share_server.tokens["alice"], share_server.tokens["bea"]
    assert share_server.api("POST", f"{API}/registered-models/set-tag", token=alice, json={
        "name": name, "key": "domain", "value": f"churn-{unique}"}).ok

    def search(token: str, **filters: str) -> list[str]:
        response = share_server.api("GET", f"{SHARE}/models/search", token=token,
                                    params=filters)
        assert response.status_code == 200, response.text
        return [m["name"] for m in response.json()["models"]]

    tag = f"domain=churn-{unique}"
    assert search(alice, tag=tag) == [name]
    assert search(alice, tag=tag, owner_team="team-b") == []
    assert search(alice, tag=tag, status="none") == [name]
    assert search(bea, tag=tag) == []  # team B cannot read it (yet)
    package = _create(share_server, name, version, semver="3.1.0",
                      teams=[{"team": "team-b", "permission": "read"}])
    assert search(alice, tag=tag, status="validated") == [name]
    assert share_server.api("POST", f"{SHARE}/packages/{package['id']}/publish",
                            token=alice).ok
    assert search(bea, tag=tag, semver="^3", status="published") == [name]
    assert search(bea, tag=tag, semver="^4") == []
    assert share_server.api("GET", f"{SHARE}/models/search", token=bea,
                            params={"metric": "accuracy>>1"}).status_code == 400


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhooks_are_signed_and_private_addresses_refused(share_server: ShareServer,
                                                           unique: str) -> None:
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    _Receiver.received = []
    try:
        name = f"hook-{unique}"
        version = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
        token = share_server.tokens["bob"]  # a team-b maintainer, subscribing for team-b
        refused = share_server.api("POST", f"{SHARE}/subscriptions", token=token,
                                   json={"model": name, "url": "http://10.1.2.3/hook"})
        assert refused.status_code == 403  # bob cannot read the model yet
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        alice = share_server.tokens["alice"]
        for private in ("http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data",
                        "http://[::ffff:192.168.0.1]/", "http://0x7f000001/", "http://2130706433/",
                        "file:///etc/passwd"):
            response = share_server.api("POST", f"{SHARE}/subscriptions", token=alice,
                                        json={"model": name, "url": private})
            assert response.status_code == 400, (private, response.text)
            assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        subscription = share_server.api("POST", f"{SHARE}/subscriptions", token=alice, json={
            "model": name, "url": url, "team": "team-a"})
        assert subscription.status_code == 200, subscription.text
        secret = subscription.json()["subscription"]["secret"]
        package = _create(share_server, name, version, semver="1.0.0")
        assert share_server.api("POST", f"{SHARE}/packages/{package['id']}/publish",
                                token=alice).ok
        deadline = time.monotonic() + 20
        while not _Receiver.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _Receiver.received, "no webhook delivery arrived"
        headers, body = _Receiver.received[0]
        signed = f"{headers['X-MLflow-Delivery-Id']}.{headers['X-MLflow-Timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
        assert headers["X-MLflow-Signature"] == "v1," + expected.decode()
        event = json.loads(body)
        assert event["event"] == "package.published"
        assert event["data"]["id"] == package["id"] and event["data"]["semver"] == "1.0.0"
        deliveries = share_server.api("GET", f"{SHARE}/subscriptions/deliveries", token=alice,
                                      params={"model": name}).json()["deliveries"]
        assert [(d["status"], d["attempts"]) for d in deliveries] == [("delivered", 1)]

        # A protected alias's move is announced too; a branch's is not.
        for alias in ("production", "branch-x"):
            assert share_server.api("POST", f"{API}/registered-models/alias", token=alice, json={
                "name": name, "alias": alias, "version": version}).ok
        share_server.api("POST", f"{SHARE}/aliases/protect", token=alice,
                         json={"model": name, "alias": "production"})
        second = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
        assert _create(share_server, name, second)["status"] == "validated"
        for alias in ("production", "branch-x"):
            assert share_server.api("POST", f"{API}/registered-models/alias", token=alice, json={
                "name": name, "alias": alias, "version": second}).ok
        deadline = time.monotonic() + 20
        while len(_Receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        events = [json.loads(body) for _, body in _Receiver.received[1:]]
        assert [(e["event"], e["data"]["alias"], e["data"]["from_version"],
                 e["data"]["to_version"]) for e in events] == [
            ("alias.moved", "production", int(version), int(second))]
    finally:
        receiver.shutdown()


def test_effective_access_is_one_answer_with_its_routes(share_server: ShareServer,
                                                        unique: str) -> None:
    """After a package is published: the JSON API, `mlflow-share grants` and `access
    explain` name the same routes (owner, direct grant, package with its id, versions and
    expiry), and explain agrees with what the server then does."""
    name = f"eff-{unique}"
    first = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    second = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    package = _create(share_server, name, first)  # team-b: execute, version 1 only
    alice = share_server.tokens["alice"]
    assert share_server.api("POST", f"{SHARE}/packages/{package['id']}/publish",
                            token=alice).ok
    assert share_server.api("POST", f"{SHARE}/grants", token=alice, json={
        "model": name, "team": "team-c", "permission": "read"}).ok

    found = share_server.api("GET", f"{SHARE}/access", token=alice,
                             params={"model": name}).json()
    routes = {(t["team"], t["via"]): t for t in found["teams"]}
    assert set(routes) == {("team-a", "owner"), ("team-b", "package"), ("team-c", "grant")}
    assert routes[("team-b", "package")]["package_id"] == package["id"]
    assert routes[("team-b", "package")]["versions"] == [int(first)]
    assert routes[("team-b", "package")]["actions"] == ["execute"]
    assert routes[("team-c", "grant")]["actions"] == ["read"]
    assert "admin" in found["admins"]
    # A consuming team sees the owner and its own route, not the other consumers.
    carl_view = share_server.api("GET", f"{SHARE}/access", token=share_server.tokens["carl"],
                                 params={"model": name}).json()
    assert {(t["team"], t["via"]) for t in carl_view["teams"]} == {
        ("team-a", "owner"), ("team-c", "grant")}
    assert carl_view["admins"] == []
    # For version 2 the package does not count.
    later = share_server.api("GET", f"{SHARE}/access", token=alice,
                             params={"model": name, "version": second}).json()
    assert ("team-b", "package") not in {(t["team"], t["via"]) for t in later["teams"]}

    listed = _cli(share_server, "alice", "grants", "--model", name)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["TEAM", "MAY", "THROUGH"]
    assert any(line.startswith("team-b") and f"package {package['id']}" in line
               for line in lines)
    assert json.loads(_cli(share_server, "alice", "grants", "--model", name, "--json")
                      .stdout)["teams"] == found["teams"]

    cases = [("bea", "execute", first, True), ("bea", "execute", second, False),
             ("bea", "write", first, False), ("carl", "read", None, True),
             ("carl", "execute", None, False), ("bert", "execute", first, True),
             ("ava", "manage", None, False), ("alice", "manage", None, True)]
    for user, action, version, allowed in cases:
        args = ["access", "explain", user, name, "--action", action, "--json"]
        if version is not None:
            args += ["--version", version]
        done = _cli(share_server, "alice", *args)
        answer = json.loads(done.stdout)
        assert (answer["allowed"], done.returncode) == (allowed, 0 if allowed else 3), \
            (user, action, version, answer)
        assert answer["reasons"], answer
    why = _cli(share_server, "alice", "access", "explain", "bea", name, "--action", "write")
    assert why.returncode == 3 and "may NOT write" in why.stdout and package["id"] in why.stdout
    # The explanation matches what the server does.
    for user in ("bea", "carl"):
        said = json.loads(_cli(share_server, "alice", "access", "explain", user, name,
                               "--json").stdout)["allowed"]
        done = share_server.api("GET", f"{API}/registered-models/get",
                                token=share_server.tokens[user], params={"name": name})
        assert done.ok == said, (user, said, done.status_code)
    assert share_server.api("PATCH", f"{API}/registered-models/update",
                            token=share_server.tokens["carl"],
                            json={"name": name, "description": "no"}).status_code == 403
    bea = share_server.tokens["bea"]
    # Only managers of the model and the user themselves may ask why.
    assert share_server.api("GET", f"{SHARE}/access/explain", token=bea, params={
        "model": name, "user": "carl", "action": "read"}).status_code == 403
    assert share_server.api("GET", f"{SHARE}/access/explain", token=bea, params={
        "model": name, "user": "bea", "action": "read"}).status_code == 200
    # Asking about a model one may not read names no team that reaches it.
    outsider = share_server.api("GET", f"{SHARE}/access/explain",
                                token=share_server.tokens["nobody"],
                                params={"model": name, "user": "nobody"}).json()
    assert not outsider["allowed"] and "team-a" not in " ".join(outsider["reasons"])


def test_consuming_teams_see_only_packages_published_to_them(share_server: ShareServer,
                                                            unique: str) -> None:
    """A draft (or rejected) package is its authors' (write on the model); a reader of the
    model, or the team it targets, sees it only once it is published to them."""
    name = f"drafts-{unique}"
    version = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    alice = share_server.tokens["alice"]
    assert share_server.api("POST", f"{SHARE}/grants", token=alice, json={
        "model": name, "team": "team-c", "permission": "read"}).ok
    draft = _create(share_server, name, version)  # to team-b, not published
    rejected = share_server.api("POST", f"{SHARE}/packages", token=alice, json={
        "model": name, "versions": [version], "teams": [{"team": "team-c",
                                                         "permission": "read"}],
        "description": "a model", "semver": "not-a-semver"})

    def listed(user: str, **params: str) -> set[str]:
        found = share_server.api("GET", f"{SHARE}/packages", token=share_server.tokens[user],
                                 params=params)
        assert found.status_code == 200, found.text
        return {p["id"] for p in found.json()["packages"]}

    assert draft["id"] not in listed("carl", model=name)  # a reader of the model
    for user in ("bob", "bea", "carl"):
        assert draft["id"] not in listed(user), user
        shown = share_server.api("GET", f"{SHARE}/packages/{draft['id']}",
                                 token=share_server.tokens[user])
        assert shown.status_code in (403, 404), (user, shown.status_code)
    if rejected.ok:
        assert rejected.json()["package"]["id"] not in listed("carl")
    assert draft["id"] in listed("aaron") and draft["id"] in listed("alice", model=name)
    assert draft["id"] not in listed("ava", model=name)  # a viewer of the owner team reads

    # Nor through the other lists: the CLI, a search's status, a version's lineage.
    for user in ("bea", "carl"):
        shown = _cli(share_server, user, "share", "list", "--json")
        assert shown.returncode == 0, shown.stderr
        assert draft["id"] not in shown.stdout
    assert draft["id"] in _cli(share_server, "aaron", "share", "list", "--json").stdout

    def status_of(user: str, **filters: str) -> str | None:
        found = share_server.api("GET", f"{SHARE}/models/search",
                                 token=share_server.tokens[user], params=filters)
        assert found.status_code == 200, found.text
        return next((m["validation_status"] for m in found.json()["models"]
                     if m["name"] == name), None)

    assert status_of("alice") == "validated" and status_of("alice", status="validated")
    assert status_of("carl") == "none" and status_of("carl", status="validated") is None
    assert status_of("carl", status="rejected") is None
    lineage_of = _cli(share_server, "carl", "lineage", f"models:/{name}/{version}", "--json")
    assert lineage_of.returncode == 0, lineage_of.stderr
    seen = json.loads(lineage_of.stdout)
    assert seen["packages"] == []
    assert {t["team"] for t in seen["consuming_teams"]} == {"team-c"}
    authored = json.loads(_cli(share_server, "alice", "lineage", f"models:/{name}/{version}",
                               "--json").stdout)
    assert draft["id"] in {p["id"] for p in authored["packages"]}

    assert share_server.api("POST", f"{SHARE}/packages/{draft['id']}/publish", token=alice).ok
    assert draft["id"] in listed("bea") and draft["id"] not in listed("carl")
    assert share_server.api("GET", f"{SHARE}/packages/{draft['id']}",
                            token=share_server.tokens["bea"]).ok
    assert draft["id"] in _cli(share_server, "bea", "share", "list", "--json").stdout
    assert draft["id"] not in _cli(share_server, "carl", "share", "list", "--json").stdout
    assert status_of("carl") == "published"  # a published package is news to its readers
    seen = json.loads(_cli(share_server, "carl", "lineage", f"models:/{name}/{version}",
                           "--json").stdout)
    assert seen["packages"] == []  # published, but to team-b: not carl's
    assert {t["team"] for t in seen["consuming_teams"]} == {"team-c"}


def _audited(server: ShareServer, package_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(principal, change) of every package.* change the audit log holds for a package."""
    engine = sa.create_engine(server.backend_uri)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT principal, details FROM share_audit_events WHERE details LIKE :p "
                "ORDER BY seq"), {"p": f"%{package_id}%"}).all()
    finally:
        engine.dispose()
    return [(principal, change) for principal, details in rows
            for change in json.loads(details).get("changes") or []
            if str(change.get("op", "")).startswith("package.")
            and change.get("package") == package_id]


def test_a_rejected_package_is_edited_until_it_validates(share_server: ShareServer,
                                                         unique: str) -> None:
    """Writers of the model edit what create took; each edit validates again; a refused edit
    changes nothing; a published package is not edited (revoke it)."""
    name = f"edit-{unique}"
    first = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    second = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    rejected = _create(share_server, name, first, description=None, semver="1.0")
    assert rejected["status"] == "rejected"
    url = f"{SHARE}/packages/{rejected['id']}"

    def edit(user: str, body: dict[str, Any]) -> requests.Response:
        return share_server.api("PATCH", url, token=share_server.tokens[user], json=body)

    # Only writers of the model: not its viewers (ava), nor the target or another team.
    for user in ("ava", "bea", "bob", "carl", "nobody"):
        refused = edit(user, {"description": "mine now"})
        assert refused.status_code in (403, 404), (user, refused.text)
    # Refused whole, in MLflow's envelope, and nothing half-written: each refused edit also
    # carries a good change (a description), which must not be stored either.
    for body, status, words in (
            ({}, 400, "Nothing to change"),
            ({"colour": "red"}, 400, "Unknown field(s) ['colour']"),
            ({"model": "another-model"}, 400, "cannot change"),
            ({"teams": [{"team": "team-a", "permission": "read"}]}, 400, "owns"),
            ({"teams": []}, 400, "'teams'"),
            ({"teams": [{"team": "team-z", "permission": "read"}]}, 404, "team-z"),
            ({"versions": ["99"]}, 404, "99"),
            ({"versions": [first], "alias": "champion"}, 400, "either"),
            ({"expires_at": 1}, 400, "past"),
            ({"description": 5}, 400, "'description'")):
        response = edit("aaron", {"description": "half", **body} if body and
                        "description" not in body else body)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["message"], (body, response.json())
        assert response.json()["error_code"] in ("INVALID_PARAMETER_VALUE",
                                                 "RESOURCE_DOES_NOT_EXIST")
    stored = share_server.api("GET", url, token=share_server.tokens["alice"]).json()["package"]
    assert (stored["status"], stored["description"], stored["semver"]) == ("rejected", None, "1.0")

    # An engineer of the owner team fixes it: validated at once, the rest kept.
    fixed = edit("aaron", {"description": "Churn scores", "semver": "1.0.0"})
    assert fixed.status_code == 200, fixed.text
    package = fixed.json()["package"]
    # What was read before the edit is stale now: a validation or publish of it would apply
    # to another content, so the write that stores it refuses (409) in its transaction.
    from mlflow_share.errors import Conflict
    from mlflow_share.governance import packages as store

    engine = sa.create_engine(share_server.backend_uri)
    try:
        with engine.connect() as conn, pytest.raises(Conflict, match="changed while"):
            store._unchanged(conn, stored, "published")
        with engine.connect() as conn:
            store._unchanged(conn, package, "published")  # the current one passes
    finally:
        engine.dispose()
    assert package["status"] == "validated", package["report"]
    assert package["report"]["ok"] and package["versions"] == [first]
    assert package["teams"] == [{"team": "team-b", "permission": "execute"}]
    assert (package["may_write"], package["may_manage"]) == (True, False)
    # Versions, teams and expiry change too; null clears an optional field.
    moved = edit("alice", {"versions": [second], "semver": None,
                           "teams": [{"team": "team-c", "permission": "read"}],
                           "limitations": "EU only"}).json()["package"]
    assert (moved["status"], moved["versions"], moved["semver"], moved["limitations"]) == (
        "validated", [second], None, "EU only")
    assert moved["teams"] == [{"team": "team-c", "permission": "read"}]
    broken = edit("alice", {"description": None}).json()["package"]
    assert broken["status"] == "rejected"
    assert any("description" in p for p in _problems(broken, "metadata"))
    assert edit("alice", {"description": "Churn scores"}).json()["package"]["status"] == \
        "validated"

    # Published: neither edited nor withdrawn (409), and team-c got what the edit said.
    assert share_server.api("POST", f"{url}/publish", token=share_server.tokens["alice"]).ok
    for method, body in (("PATCH", {"description": "later"}), ("DELETE", None)):
        late = share_server.api(method, url, token=share_server.tokens["alice"], json=body)
        assert late.status_code == 409, late.text
        assert "Revoke it instead" in late.json()["message"]
    assert share_server.api("GET", f"{API}/registered-models/get", params={"name": name},
                            token=share_server.tokens["carl"]).ok
    assert not share_server.api("GET", f"{API}/registered-models/get", params={"name": name},
                                token=share_server.tokens["bea"]).ok
    ops = [(who, change["op"]) for who, change in _audited(share_server, rejected["id"])]
    assert ops == [("alice", "package.create"), ("aaron", "package.edit"),
                   ("alice", "package.edit"), ("alice", "package.edit"),
                   ("alice", "package.edit"), ("alice", "package.publish")]
    first_edit = _audited(share_server, rejected["id"])[1][1]
    assert first_edit["changed"] == ["description", "semver"]
    assert (first_edit["before"]["semver"], first_edit["after"]["semver"]) == ("1.0", "1.0.0")
    assert (first_edit["previous_status"], first_edit["status"]) == ("rejected", "validated")


def test_an_unpublished_package_is_withdrawn_and_stays_in_the_audit_log(
        share_server: ShareServer, unique: str) -> None:
    name = f"withdraw-{unique}"
    version = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    validated = _create(share_server, name, version, semver="4.0.0",
                        intended_use="weekly scoring")
    rejected = _create(share_server, name, version, description=None)
    assert (validated["status"], rejected["status"]) == ("validated", "rejected")

    def listed(user: str) -> set[str]:
        found = share_server.api("GET", f"{SHARE}/packages", token=share_server.tokens[user],
                                 params={"model": name})
        assert found.status_code == 200, found.text
        return {p["id"] for p in found.json()["packages"]}

    for package in (validated, rejected):
        url = f"{SHARE}/packages/{package['id']}"
        for user in ("ava", "bea", "carl"):
            refused = share_server.api("DELETE", url, token=share_server.tokens[user])
            assert refused.status_code in (403, 404), (user, refused.text)
        assert package["id"] in listed("aaron")
        done = share_server.api("DELETE", url, token=share_server.tokens["aaron"])
        assert done.status_code == 200 and done.json() == {"withdrawn": package["id"]}
        assert package["id"] not in listed("aaron") and package["id"] not in listed("alice")
        gone = share_server.api("GET", url, token=share_server.tokens["alice"])
        assert gone.status_code == 404 and gone.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        again = share_server.api("DELETE", url, token=share_server.tokens["aaron"])
        assert again.status_code == 404
        assert share_server.api("PATCH", url, token=share_server.tokens["aaron"],
                                json={"description": "x"}).status_code == 404
    # The semantic version it claimed is free again.
    assert _create(share_server, name, version, semver="4.0.0")["status"] == "validated"
    # The model's search status no longer counts it.
    found = share_server.api("GET", f"{SHARE}/models/search", token=share_server.tokens["aaron"],
                             params={"status": "rejected"}).json()["models"]
    assert name not in [m["name"] for m in found]

    history = _audited(share_server, validated["id"])
    assert [(who, change["op"]) for who, change in history] == [
        ("alice", "package.create"), ("aaron", "package.withdraw")]
    record = history[1][1]["record"]
    assert record["id"] == validated["id"] and record["semver"] == "4.0.0"
    assert record["intended_use"] == "weekly scoring" and record["versions"] == [version]
    assert record["teams"] == validated["teams"] and record["report"]["ok"] is True
    assert history[1][1]["status"] == "validated"


def _tty_cli(server: ShareServer, user: str, answer: str, *args: str
             ) -> tuple[int, str]:
    """The CLI with a terminal on standard input (so it asks), answering ``answer``."""
    import pty

    controller, terminal = pty.openpty()
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url,
           "MLFLOW_TRACKING_TOKEN": server.tokens[user]}
    try:
        process = subprocess.Popen([sys.executable, "-m", "mlflow_share.cli", *args], env=env,
                                   stdin=terminal, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        os.write(controller, answer.encode() + b"\n")
        out, _ = process.communicate(timeout=120)
    finally:
        os.close(terminal)
        os.close(controller)
    return process.returncode, out


def test_the_cli_edits_and_withdraws(share_server: ShareServer, unique: str) -> None:
    name = f"cli-edit-{unique}"
    version = _register_files(share_server, name, _onnx_files(X[:2].tolist()))
    created = _cli(share_server, "aaron", "share", "create", name, "--version", version,
                   "--team", "team-b:read")
    assert created.returncode == 1 and "[rejected]" in created.stdout  # no description
    package_id = created.stdout.strip().splitlines()[-1]

    fixed = _cli(share_server, "aaron", "share", "edit", package_id, "--description",
                 "Churn scores", "--team", "team-c:execute", "--team", "team-c:read",
                 "--semver", "5.0.0")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "[validated]" in fixed.stdout and "teams: team-c:execute, team-c:read" in fixed.stdout
    assert "validation: passed" in fixed.stdout
    cleared = _cli(share_server, "aaron", "package", "edit", package_id, "--clear", "semver")
    assert cleared.returncode == 0 and "semver" not in cleared.stdout.splitlines()[0]
    nothing = _cli(share_server, "aaron", "share", "edit", package_id)
    assert nothing.returncode == 2 and "Nothing to change" in nothing.stderr
    refused = _cli(share_server, "bea", "share", "edit", package_id, "--description", "x")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().startswith("Error: PERMISSION_DENIED (403)")
    assert len(refused.stderr.strip().splitlines()) == 1

    # Withdraw asks at a terminal: "no" keeps it, "yes" withdraws it; --yes does not ask.
    code, out = _tty_cli(share_server, "aaron", "n", "share", "withdraw", package_id)
    assert code == 1 and "Withdraw package" in out and "Aborted" in out, out
    assert _cli(share_server, "aaron", "share", "show", package_id).returncode == 0
    code, out = _tty_cli(share_server, "aaron", "y", "package", "withdraw", package_id)
    assert code == 0 and f"package {package_id}: withdrawn" in out, out
    gone = _cli(share_server, "aaron", "share", "show", package_id)
    assert gone.returncode == 1 and "RESOURCE_DOES_NOT_EXIST (404)" in gone.stderr

    other = _cli(share_server, "alice", "share", "create", name, "--version", version,
                 "--team", "team-b:read", "--description", "Churn scores")
    other_id = other.stdout.strip().splitlines()[-1]
    assert _cli(share_server, "alice", "share", "publish", other_id).returncode == 0
    late = _cli(share_server, "alice", "share", "withdraw", other_id, "--yes")
    assert late.returncode == 1 and "Traceback" not in late.stderr
    assert late.stderr.strip().splitlines() == [
        f"Error: RESOURCE_CONFLICT (409): Sharing package {other_id} is published: only a "
        "package that is not published yet (validated or rejected) can be withdrawn. "
        "Revoke it instead."]
