"""The inference gateway against a real server and real ONNX models built here (skl2onnx)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.conftest import USER_PASSWORD, ShareServer, free_port

pytestmark = pytest.mark.integration
API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
SHARE = "/api/2.0/mlflow-share"
ONNX_MLMODEL = (b"flavors:\n  onnx:\n    onnx_version: 1.17.0\n    data: model.onnx\n"
                b"  python_function:\n    loader_module: mlflow.onnx\n    data: model.onnx\n")
X = np.random.default_rng(7).random((30, 4)).astype(np.float32)
FRESHNESS = 0.5  # MLFLOW_SHARE_GATEWAY_FRESHNESS_SECONDS, the default
SLACK = 1.0  # a loaded CI machine's scheduling and the caller's own requests


def within_freshness(check: Any) -> float:
    """Seconds until ``check()`` holds; fails unless that is within the gateway's bound for
    a revocation or an alias move to reach it (plus slack for a loaded machine)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < FRESHNESS + SLACK, "the change never reached it"
        time.sleep(0.02)
    return time.monotonic() - started


def _onnx(flip: bool = False) -> bytes:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    labels = (X[:, 0] + X[:, 1] > 1.0).astype(np.int64)
    model = LogisticRegression().fit(X, 1 - labels if flip else labels)
    return bytes(to_onnx(model, X[:1], options={"zipmap": False}).SerializeToString())


def _in_process(model_bytes: bytes, rows: np.ndarray) -> list[Any]:
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return list(session.run(None, {session.get_inputs()[0].name: rows}))


@contextmanager
def _gateway(server: ShareServer, tmp: Path, **env: str) -> Iterator[str]:
    port = free_port()
    log = tmp / f"gateway-{port}.log"
    command = [sys.executable, "-m", "mlflow_share.cli", "gateway", "--backend-store-uri",
               server.backend_uri, "--artifacts-destination", f"checksum+file://{server.artifacts}",
               "--port", str(port)]
    with open(log, "wb") as out:
        # No rate limit unless a test sets one: the flood test checks the limiter.
        env = {"MLFLOW_SHARE_GATEWAY_RATE_PER_TEAM": "0",
               "MLFLOW_SHARE_GATEWAY_FRESHNESS_SECONDS": str(FRESHNESS), **env}
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **env}, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if requests.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            raise RuntimeError(log.read_text()[-3000:])
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


class World:
    def __init__(self, server: ShareServer, name: str) -> None:
        self.server, self.name = server, name
        self.token = server.tokens["alice"]
        self.experiment = server.api("POST", f"{API}/experiments/create", token=self.token,
                                     json={"name": f"gw-{name}"}).json()["experiment_id"]
        assert server.api("POST", f"{API}/registered-models/create", token=self.token,
                          json={"name": name}).ok

    def register(self, files: dict[str, bytes]) -> str:
        run = self.server.api("POST", f"{API}/runs/create", token=self.token, json={
            "experiment_id": self.experiment}).json()["run"]["info"]["run_id"]
        for relative, data in files.items():
            assert self.server.api("PUT", f"{ARTIFACTS}/{self.experiment}/{run}/artifacts/model/"
                                   f"{relative}", token=self.token, data=data).ok
        created = self.server.api("POST", f"{API}/model-versions/create", token=self.token,
                                  json={"name": self.name, "source": f"runs:/{run}/model",
                                        "run_id": run})
        assert created.status_code == 200, created.text
        return str(created.json()["model_version"]["version"])

    def alias(self, alias: str, version: str) -> None:
        assert self.server.api("POST", f"{API}/registered-models/alias", token=self.token,
                               json={"name": self.name, "alias": alias, "version": version}).ok

    def grant(self, team: str, permission: str, revoke: bool = False) -> None:
        response = self.server.api("DELETE" if revoke else "POST", f"{SHARE}/grants",
                                   token=self.token, json={"model": self.name, "team": team,
                                                           "permission": permission})
        assert response.status_code == 200, response.text


def _onnx_other() -> bytes:
    """A third model whose predictions differ from both of ``_onnx``'s."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    labels = (X[:, 2] > 0.5).astype(np.int64)
    model = LogisticRegression().fit(X, labels)
    return bytes(to_onnx(model, X[:1], options={"zipmap": False}).SerializeToString())


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {"v1": _onnx(), "v2": _onnx(flip=True), "v3": _onnx_other()}


@pytest.fixture(scope="module")
def gateway(share_server: ShareServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[str]:
    with _gateway(share_server, tmp_path_factory.mktemp("gateway")) as url:
        yield url


def _call(url: str, server: ShareServer, user: str | None, target: str, body: Any,
          **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {server.tokens[user]}"} if user else {}
    if isinstance(body, (bytes, str)):
        return requests.post(f"{url}/v1/models/{target}/invocations", data=body,
                             headers={**headers, **kwargs.pop("headers", {})}, timeout=30)
    return requests.post(f"{url}/v1/models/{target}/invocations", json=body, headers=headers,
                         timeout=30)


def test_every_body_format_predicts_like_onnxruntime(share_server: ShareServer, gateway: str,
                                                     models: dict[str, bytes],
                                                     unique: str) -> None:
    world = World(share_server, f"gw-formats-{unique}")
    world.alias("champion", world.register({"model.onnx": models["v1"], "MLmodel": ONNX_MLMODEL}))
    rows = X[:5]
    labels, probabilities = _in_process(models["v1"], rows)
    columns = ["a", "b", "c", "d"]
    bodies: list[Any] = [
        {"dataframe_split": {"columns": columns, "data": rows.tolist()}},
        {"dataframe_records": [dict(zip(columns, r)) for r in rows.tolist()]},
        {"instances": rows.tolist()},
        {"inputs": rows.tolist()},
        {"inputs": {"X": rows.tolist()}},
    ]
    for body in bodies:
        response = _call(gateway, share_server, "alice", f"{world.name}@champion", body)
        assert response.status_code == 200, (body, response.text)
        predictions = response.json()["predictions"]
        assert predictions["label"] == labels.tolist()
        assert np.allclose(predictions["probabilities"], probabilities, atol=1e-6)
    csv = "a,b,c,d\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in rows)
    response = _call(gateway, share_server, "alice", f"{world.name}/versions/1", csv,
                     headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"]["label"] == labels.tolist()


def test_only_teams_allowed_to_execute_can_call(share_server: ShareServer, gateway: str,
                                                models: dict[str, bytes], unique: str) -> None:
    world = World(share_server, f"gw-authz-{unique}")
    world.alias("champion", world.register({"model.onnx": models["v1"], "MLmodel": ONNX_MLMODEL}))
    body = {"inputs": X[:2].tolist()}
    target = f"{world.name}@champion"
    assert _call(gateway, share_server, None, target, body).status_code == 401
    assert _call(gateway, share_server, "ava", target, body).status_code == 200  # owner viewer
    for user in ("bob", "carl"):
        denied = _call(gateway, share_server, user, target, body)
        assert denied.status_code == 403 and denied.json()["error_code"] == "PERMISSION_DENIED"
    world.grant("team-b", "read")
    assert _call(gateway, share_server, "bob", target, body).status_code == 403  # read only
    world.grant("team-b", "execute")
    assert _call(gateway, share_server, "bob", target, body).status_code == 200
    assert _call(gateway, share_server, "carl", target, body).status_code == 403
    listed = requests.get(f"{gateway}/v1/models", timeout=10, headers={
        "Authorization": f"Bearer {share_server.tokens['bob']}"}).json()["models"]
    assert {"name": world.name, "aliases": {"champion": "1"}} in listed
    world.grant("team-b", "execute", revoke=True)  # denied within the freshness bound
    within_freshness(lambda: _call(gateway, share_server, "bob", target, body).status_code == 403)
    assert _call(gateway, share_server, "bob", target, body).status_code == 403


def test_alias_move_switches_versions_without_failing_a_request(
        share_server: ShareServer, gateway: str, models: dict[str, bytes], unique: str) -> None:
    world = World(share_server, f"gw-move-{unique}")
    first = world.register({"model.onnx": models["v1"], "MLmodel": ONNX_MLMODEL})
    second = world.register({"model.onnx": models["v2"], "MLmodel": ONNX_MLMODEL})
    world.alias("champion", first)
    rows = X[:8]
    expected = {tuple(_in_process(models[v], rows)[0].tolist()): v for v in ("v1", "v2")}
    seen: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {share_server.tokens['alice']}"
        while not stop.is_set():
            response = session.post(f"{gateway}/v1/models/{world.name}@champion/invocations",
                                    json={"inputs": rows.tolist()}, timeout=30)
            if response.status_code != 200:
                failures.append(response.text)
                continue
            seen.append(expected[tuple(response.json()["predictions"]["label"])])

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    world.alias("champion", second)
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert seen[0] == "v1" and seen[-1] == "v2"
    assert len(seen) - seen.index("v2") > 30
    assert "v1" not in seen[seen.index("v2") + 30:]  # settled on the new version


def test_tampered_version_is_refused_and_the_previous_one_keeps_serving(
        share_server: ShareServer, gateway: str, models: dict[str, bytes], unique: str) -> None:
    world = World(share_server, f"gw-tamper-{unique}")
    good = world.register({"model.onnx": models["v1"], "MLmodel": ONNX_MLMODEL})
    bad = world.register({"model.onnx": models["v2"], "MLmodel": ONNX_MLMODEL})
    world.alias("champion", good)
    body = {"inputs": X[:6].tolist()}
    before = _call(gateway, share_server, "alice", f"{world.name}@champion", body).json()
    location = share_server.api("GET", f"{API}/model-versions/get-download-uri",
                                token=world.token, params={"name": world.name, "version": bad}
                                ).json()["artifact_uri"]
    onnx_file = share_server.artifacts / location[len("mlflow-artifacts:/"):] / "model.onnx"
    os.chmod(onnx_file, 0o644)
    onnx_file.write_bytes(models["v3"])  # a valid model, not the registered bytes
    assert _in_process(models["v3"], X[:6])[0].tolist() != before["predictions"]["label"]
    world.alias("champion", bad)
    time.sleep(FRESHNESS + 0.3)  # the refresher has moved the alias: no fast path on 'good'
    after = _call(gateway, share_server, "alice", f"{world.name}@champion", body)
    assert after.status_code == 200 and after.json() == before  # still the verified version
    direct = _call(gateway, share_server, "alice", f"{world.name}/versions/{bad}", body)
    assert direct.status_code == 500 and direct.json()["error_code"] == "DATA_LOSS"
    assert "model.onnx" in direct.json()["message"]


def test_models_that_need_code_are_refused(share_server: ShareServer, gateway: str,
                                           models: dict[str, bytes], unique: str) -> None:
    world = World(share_server, f"gw-pickle-{unique}")
    pickled = world.register({"model.onnx": models["v1"], "model.pkl": b"\x80\x04N.",
                              "MLmodel": b"flavors:\n  sklearn:\n    pickled_model: model.pkl\n"})
    custom = world.register({"model.onnx": models["v1"], "MLmodel": (
        b"flavors:\n  python_function:\n    loader_module: evil.loader\n")})
    for version in (pickled, custom):
        response = _call(gateway, share_server, "alice", f"{world.name}/versions/{version}",
                         {"inputs": X[:1].tolist()})
        assert response.status_code == 400, response.text
        assert "refused" in response.json()["message"] or "ONNX models only" in \
            response.json()["message"]


def test_bad_input_oversized_bodies_and_floods(share_server: ShareServer,
                                               models: dict[str, bytes], unique: str,
                                               tmp_path: Path) -> None:
    world = World(share_server, f"gw-bad-{unique}")
    world.alias("champion", world.register({"model.onnx": models["v1"], "MLmodel": ONNX_MLMODEL}))
    with _gateway(share_server, tmp_path, MLFLOW_SHARE_GATEWAY_RATE_PER_TEAM="20",
                  MLFLOW_SHARE_GATEWAY_MAX_BODY_BYTES="4096") as url:
        target = f"{world.name}@champion"
        shape = _call(url, share_server, "alice", target, {"inputs": [[1.0, 2.0, 3.0]]})
        assert shape.status_code == 400 and "'X'" in shape.json()["message"]
        assert "4" in shape.json()["message"]
        dtype = _call(url, share_server, "alice", target, {"inputs": [["a", "b", "c", "d"]]})
        assert dtype.status_code == 400 and "tensor(float)" in dtype.json()["message"]
        columns = _call(url, share_server, "alice", target,
                        {"dataframe_split": {"columns": ["a"], "data": [[1.0]]}})
        assert columns.status_code == 400 and "columns" in columns.json()["message"]
        garbage = _call(url, share_server, "alice", target, b"{not json",
                        headers={"Content-Type": "application/json"})
        assert garbage.status_code == 400
        big = _call(url, share_server, "alice", target, {"inputs": X.tolist() * 20})
        assert big.status_code == 413
        statuses = [_call(url, share_server, "alice", target, {"inputs": X[:1].tolist()})
                    .status_code for _ in range(60)]
        assert 429 in statuses and statuses.count(200) >= 15
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{url}/metrics", timeout=10, headers={
            "Authorization": f"Bearer {share_server.tokens['alice']}"}).status_code == 403
        metrics = requests.get(f"{url}/metrics", timeout=10,
                               auth=share_server.admin_auth()).text
        assert f'model="{world.name}"' in metrics and 'status="429"' in metrics
        # Callers who are not allowed never get a model's name into the metrics.
        for _ in range(3):
            _call(url, share_server, None, f"made-up-{unique}@x", {"inputs": [[1.0]]})
        assert f"made-up-{unique}" not in requests.get(
            f"{url}/metrics", timeout=10, auth=share_server.admin_auth()).text
    # Stopped: the gateway wrote its usage and audited the load and the counts.
    usage = share_server.api("GET", f"{SHARE}/usage", token=world.token,
                             params={"model": world.name}).json()["usage"]
    # A version's usage counts the calls that reached it; the 429s are in the metrics and
    # the audit log, not a version's usage.
    assert sum(row["requests"] for row in usage if row["team"] == "team-a") >= \
        statuses.count(200)
    assert all(row["version"] != "-" for row in usage)
    assert all(row["p50_ms"] is None or 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
               for row in usage)
    denied = share_server.api("GET", f"{SHARE}/usage", token=share_server.tokens["carl"],
                              params={"model": world.name})
    assert denied.status_code == 403
    import sqlalchemy as sa

    engine = sa.create_engine(share_server.backend_uri)
    with engine.connect() as conn:
        actions = [row[0] for row in conn.execute(sa.text(
            "SELECT action FROM share_audit_events WHERE source = 'gateway' "
            "AND (resource_name = :n OR details LIKE :d)"),
            {"n": world.name, "d": f'%"{world.name}"%'}).all()]
    engine.dispose()
    assert "gateway.load" in actions and "gateway.usage" in actions


def test_mlflow_models_serve_works_for_readers_only(share_server: ShareServer, tmp_path: Path,
                                                     models: dict[str, bytes],
                                                     unique: str) -> None:
    """Stock `mlflow models serve` pointed at the server: the model's readers can serve it."""
    import mlflow
    import onnx

    name = f"gw-serve-{unique}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": share_server.url,
           "MLFLOW_TRACKING_TOKEN": share_server.tokens["alice"],
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    script = (
        "import mlflow, onnx, sys\n"
        f"mlflow.set_experiment('gw-serve-{unique}')\n"
        "with mlflow.start_run():\n"
        f"    mlflow.onnx.log_model(onnx.load_model(sys.argv[1]), name='model', "
        f"registered_model_name='{name}')\n"
        f"mlflow.MlflowClient().set_registered_model_alias('{name}', 'champion', '1')\n")
    (tmp_path / "model.onnx").write_bytes(models["v1"])
    logged = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.onnx")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert logged.returncode == 0, logged.stderr[-2000:]
    assert mlflow and onnx  # (imported for the subprocess's sake: both must be installed)

    def serve(user: str) -> tuple[subprocess.Popen[bytes], str, Path]:
        port = free_port()
        log = tmp_path / f"serve-{user}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "models", "serve", "-m",
                 f"models:/{name}@champion", "--env-manager", "local", "-h", "127.0.0.1",
                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**env, "MLFLOW_TRACKING_TOKEN": share_server.tokens[user]})
        return process, f"http://127.0.0.1:{port}", log

    process, url, log = serve("ava")  # a viewer of the owner team: may read
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise AssertionError(log.read_text()[-3000:])
            try:
                if requests.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        response = requests.post(url + "/invocations", json={"inputs": X[:3].tolist()},
                                 timeout=30)
        assert response.status_code == 200, response.text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    refused, _, log = serve("carl")
    assert refused.wait(timeout=300) != 0
    assert "403" in log.read_text() or "PERMISSION_DENIED" in log.read_text()


def test_mlflow_deployments_target(share_server: ShareServer, gateway: str, tmp_path: Path,
                                   models: dict[str, bytes], unique: str) -> None:
    world = World(share_server, f"gw-deploy-{unique}")
    first = world.register({"model.onnx": models["v1"], "MLmodel": ONNX_MLMODEL})
    second = world.register({"model.onnx": models["v2"], "MLmodel": ONNX_MLMODEL})
    world.alias("champion", first)
    env = {**os.environ, "MLFLOW_SHARE_GATEWAY_URI": gateway,
           "MLFLOW_TRACKING_URI": share_server.url,
           "MLFLOW_TRACKING_TOKEN": share_server.tokens["alice"]}

    def deployments(*args: str, user: str = "alice") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlflow", "deployments", *args, "-t",
                               "mlflow-share"], capture_output=True, text=True, timeout=120,
                              env={**env, "MLFLOW_TRACKING_TOKEN": share_server.tokens[user]})

    name = f"dep-{unique}"
    created = deployments("create", "--name", name, "-m", f"models:/{world.name}@champion")
    assert created.returncode == 0, created.stderr[-2000:]
    refused = deployments("create", "--name", f"{name}-c", "-m",
                          f"models:/{world.name}@champion", user="carl")
    assert refused.returncode != 0 and "PERMISSION_DENIED" in refused.stderr
    listed = deployments("list")
    assert name in listed.stdout
    (tmp_path / "rows.json").write_text(json.dumps(X[:4].tolist()))  # read as a data frame
    predicted = deployments("predict", "--name", name, "--input-path", str(tmp_path / "rows.json"))
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    labels = _in_process(models["v1"], X[:4])[0].tolist()
    assert str(labels).replace(" ", "") in predicted.stdout.replace(" ", "").replace("\n", "")
    updated = deployments("update", "--name", name, "-m", f"models:/{world.name}/{second}")
    assert updated.returncode == 0, updated.stderr[-2000:]
    got = deployments("get", "--name", name)
    assert f"models:/{world.name}/{second}" in got.stdout
    world.grant("team-b", "execute")  # bob may run the model, but not move alice's deployment
    moved = deployments("update", "--name", name, "-m", f"models:/{world.name}/{first}",
                        user="bob")
    assert moved.returncode != 0 and "PERMISSION_DENIED" in moved.stderr
    assert deployments("delete", "--name", name, user="bob").returncode != 0
    assert deployments("delete", "--name", name).returncode == 0
    assert name not in deployments("list").stdout

    port = free_port()
    local = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "deployments", "run-local", "-t", "mlflow-share",
         "--name", "local", "-m", f"models:/{world.name}/{first}", "-C", f"port={port}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(300):
            try:
                response = requests.post(f"http://127.0.0.1:{port}/invocations",
                                         json={"inputs": X[:4].tolist()}, timeout=2)
                break
            except requests.RequestException:
                assert local.poll() is None, local.stdout.read() if local.stdout else ""
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.json()["predictions"]["label"] == labels
    finally:
        os.killpg(local.pid, signal.SIGTERM)
        local.wait(timeout=30)


def test_recreated_model_and_hostile_graphs(share_server: ShareServer, gateway: str,
                                            models: dict[str, bytes], unique: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    name = f"gw-recreate-{unique}"
    world = World(share_server, name)
    world.alias("champion", world.register({"model.onnx": models["v1"], "MLmodel": ONNX_MLMODEL}))
    body = {"inputs": X[:6].tolist()}
    first = _call(gateway, share_server, "alice", f"{name}@champion", body).json()
    assert first["predictions"]["label"] == _in_process(models["v1"], X[:6])[0].tolist()
    # A deleted version (MLflow keeps its row and files, stage Deleted_Internal) stops being
    # served by its number within the freshness bound.
    doomed = world.register({"model.onnx": models["v2"], "MLmodel": ONNX_MLMODEL})
    by_number = f"{name}/versions/{doomed}"
    assert _call(gateway, share_server, "alice", by_number, body).status_code == 200
    assert _call(gateway, share_server, "alice", by_number, body).status_code == 200
    assert share_server.api("DELETE", f"{API}/model-versions/delete", token=world.token,
                            json={"name": name, "version": doomed}).ok
    within_freshness(lambda: _call(gateway, share_server, "alice", by_number,
                                   body).status_code == 404)
    assert share_server.api("DELETE", f"{API}/registered-models/delete", token=world.token,
                            json={"name": name}).ok
    within_freshness(lambda: _call(gateway, share_server, "alice", f"{name}@champion",
                                   body).status_code == 404)
    assert share_server.api("POST", f"{API}/registered-models/create", token=world.token,
                            json={"name": name}).ok
    world.alias("champion", world.register({"model.onnx": models["v2"], "MLmodel": ONNX_MLMODEL}))
    again = _call(gateway, share_server, "alice", f"{name}@champion", body)
    assert again.status_code == 200  # the new model's version 1, never the cached old one
    assert again.json()["predictions"]["label"] == _in_process(models["v2"], X[:6])[0].tolist()

    # A sparse initializer whose values live in an external file: never opened.
    values = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1],
                         data_location=TensorProto.EXTERNAL)
    values.external_data.add(key="location", value="../mlflow.db")
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(
        np.array([0], dtype=np.int64), "w_indices"), [4])
    graph = helper.make_graph([helper.make_node("Identity", ["X"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 4])],
                              sparse_initializer=[sparse])
    hostile = helper.make_model(graph).SerializeToString()
    assert onnx  # built with the onnx package's helpers
    version = world.register({"model.onnx": hostile, "MLmodel": ONNX_MLMODEL})
    refused = _call(gateway, share_server, "alice", f"{name}/versions/{version}", body)
    assert refused.status_code == 400 and "external data" in refused.json()["message"]
    garbage = world.register({"model.onnx": b"not a model", "MLmodel": ONNX_MLMODEL})
    broken = _call(gateway, share_server, "alice", f"{name}/versions/{garbage}", body)
    assert broken.status_code == 400 and "not an ONNX model" in broken.json()["message"]
    nan = _call(gateway, share_server, "alice", f"{name}@champion",
                {"dataframe_split": {"columns": list("abcd"), "data": [[None, 1, 2, 3]]}})
    assert nan.status_code in (200, 400), nan.text  # never a 500


def test_gateway_mounted_in_the_server(tmp_path: Path, models: dict[str, bytes]) -> None:
    from tests.conftest import populate, running_server

    with running_server(tmp_path, env_extra={"MLFLOW_SHARE_GATEWAY": "1"}, workers=2) as server:
        populate(server)
        world = World(server, "mounted")
        world.alias("champion", world.register({"model.onnx": models["v1"],
                                                "MLmodel": ONNX_MLMODEL}))
        body = {"inputs": X[:3].tolist()}
        called = _call(server.url, server, "alice", "mounted@champion", body)
        assert called.status_code == 200, called.text
        assert called.json()["predictions"]["label"] == \
            _in_process(models["v1"], X[:3])[0].tolist()
        event = Refusals(server, server.url).refused(
            "POST", "/v1/models/mounted@champion/invocations", 403, "PERMISSION_DENIED", "bob",
            json=body)
        assert event["action"] == "gateway.invoke" and event["resource_name"] == "mounted"
        assert server.api("GET", f"{API}/registered-models/get", token=server.tokens["bob"],
                          params={"name": "mounted"}).status_code == 403  # the server, as ever
        # The gateway's own /ping and /metrics answer on the server as documented; /health
        # and /version are MLflow's own.
        assert requests.get(f"{server.url}/ping", timeout=30).status_code == 200
        assert requests.get(f"{server.url}/metrics", timeout=30).status_code == 401
        metrics = requests.get(f"{server.url}/metrics", timeout=30, auth=server.admin_auth())
        # (each worker counts its own calls: this one may not have served the call above)
        assert metrics.status_code == 200 and "mlflow_share_gateway_requests" in metrics.text
        for path in ("/health", "/version"):
            assert requests.get(f"{server.url}{path}", timeout=30).status_code == 200, path


def test_an_unknown_token_is_refused_before_its_body_is_read(gateway: str) -> None:
    """A 10 MB body is announced and never sent: the 401 comes without waiting for it."""
    import socket

    host, port = gateway.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/models/anything@champion/invocations HTTP/1.1\r\n"
                     b"Host: gateway\r\nAuthorization: Bearer not-a-token\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n")
        answer = b""
        while b"UNAUTHENTICATED" not in answer and len(answer) < 8192:
            chunk = sock.recv(4096)  # times out (fails) if the gateway waits for the body
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"UNAUTHENTICATED" in answer


# -- every refusal is one audit event -----------------------------------------------------------
RATE = 2  # requests per second per team on the strict gateway: a flood meets 429 at once
MAX_BODY = 4096


@pytest.fixture(scope="module")
def strict_gateway(share_server: ShareServer, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[str]:
    """A gateway with a rate limit and a small body limit (the shared one has neither)."""
    with _gateway(share_server, tmp_path_factory.mktemp("strict-gateway"),
                  MLFLOW_SHARE_GATEWAY_RATE_PER_TEAM=str(RATE),
                  MLFLOW_SHARE_GATEWAY_MAX_BODY_BYTES=str(MAX_BODY)) as url:
        yield url


def _request_events(server: ShareServer, request_id: str) -> list[dict[str, Any]]:
    """The audit events of one request, read straight from the database."""
    from tests.integration.test_audit import _events

    return _events(server, "request_id = :r", r=request_id)


def _chain_verifies(server: ShareServer) -> None:
    result = subprocess.run([sys.executable, "-m", "mlflow_share.cli", "audit", "verify",
                             "--backend-store-uri", server.backend_uri],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.startswith("OK: "), result.stderr[-2000:]


class Refusals:
    """Sends requests with an ``X-Request-Id`` of their own and finds their audit events."""

    def __init__(self, server: ShareServer, url: str) -> None:
        self.server, self.url = server, url

    def send(self, method: str, path: str, user: str | None = None, **kwargs: Any
             ) -> tuple[requests.Response, list[dict[str, Any]]]:
        request_id = f"gw-{uuid.uuid4().hex}"
        headers = {"X-Request-Id": request_id, **kwargs.pop("headers", {})}
        if user is not None:
            headers["Authorization"] = f"Bearer {self.server.tokens[user]}"
        response = requests.request(method, self.url + path, headers=headers, timeout=30,
                                    **kwargs)
        # The event is committed before the answer leaves: nothing to wait for.
        return response, _request_events(self.server, request_id)

    def refused(self, method: str, path: str, status: int, error_code: str,
                user: str | None = None, principal: str | None = None, **kwargs: Any
                ) -> dict[str, Any]:
        """Exactly one event, a denial with the answer's status and message, naming
        ``principal`` (by default the caller, or anonymous); returns it."""
        response, events = self.send(method, path, user, **kwargs)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error_code"] == error_code, response.text
        assert len(events) == 1, events
        event = events[0]
        assert event["decision"] == "deny" and event["status"] == status, event
        assert event["source"] == "gateway" and event["method"] == method, event
        assert event["route"] == path and event["client"] == "127.0.0.1", event
        assert event["details"]["reason"] == response.json()["message"], event
        assert event["principal"] == (principal or user or "anonymous"), event
        return event


def test_every_gateway_refusal_is_one_audit_event(share_server: ShareServer, strict_gateway: str,
                                                  models: dict[str, bytes], unique: str) -> None:
    world = World(share_server, f"gw-audit-{unique}")
    world.alias("champion", world.register({"model.onnx": models["v1"], "MLmodel": ONNX_MLMODEL}))
    gw = Refusals(share_server, strict_gateway)
    invocations = f"/v1/models/{world.name}@champion/invocations"
    body = {"inputs": X[:2].tolist()}

    # An allowed call is counted, not logged: no event of its own.
    response, events = gw.send("POST", invocations, "alice", json=body)
    assert response.status_code == 200 and events == [], (response.text, events)

    # 401: no credentials, an unknown token, a wrong password (the user it claimed is kept).
    event = gw.refused("POST", invocations, 401, "UNAUTHENTICATED", json=body)
    assert event["action"] == "gateway.invoke" and event["resource_name"] is None, event
    event = gw.refused("POST", invocations, 401, "UNAUTHENTICATED", json=body,
                       headers={"Authorization": "Bearer msh_not-a-token"})
    assert "claimed" not in event["details"], event
    event = gw.refused("POST", invocations, 401, "UNAUTHENTICATED", json=body,
                       auth=("alice", "not-her-password"))
    assert event["details"]["claimed"] == "alice", event

    # 403: a team with no execute; the event names the model and its owner team.
    event = gw.refused("POST", invocations, 403, "PERMISSION_DENIED", "carl", json=body)
    assert event["resource_name"] == world.name and event["owner_team"] == "team-a", event
    assert event["details"]["reason"] == (
        f"Permission denied: 'carl' may not execute registered model '{world.name}'.")
    event = gw.refused("POST", f"/v1/models/{world.name}/versions/1/invocations", 403,
                       "PERMISSION_DENIED", "carl", json=body)
    assert event["resource_name"] == world.name, event

    # 404 (an unknown model, named nowhere) and malformed paths.
    event = gw.refused("POST", f"/v1/models/made-up-{unique}@champion/invocations", 404,
                       "RESOURCE_DOES_NOT_EXIST", "carl", json=body)
    assert event["resource_name"] is None, event
    gw.refused("POST", f"/v1/models/{world.name}/invocations", 404, "RESOURCE_DOES_NOT_EXIST",
               "alice", json=body)
    gw.refused("POST", f"/v1/models/{world.name}/versions/one/invocations", 400,
               "INVALID_PARAMETER_VALUE", "alice", json=body)

    # 400: an input the model cannot take, from a caller allowed to run it.
    event = gw.refused("POST", invocations, 400, "INVALID_PARAMETER_VALUE", "alice",
                       json={"inputs": [[1.0, 2.0, 3.0]]})
    assert event["resource_name"] == world.name and event["action"] == "gateway.invoke", event

    # 413: a body over the limit (a password is decided on the database, where the body is
    # read before the rate limit is: a token could meet the limit first).
    big = {"inputs": X.tolist() * 20}
    assert len(json.dumps(big)) > MAX_BODY
    gw.refused("POST", invocations, 413, "INVALID_PARAMETER_VALUE", principal="alice",
               json=big, auth=("alice", USER_PASSWORD))

    # 429: the team's rate limit, however the call was decided.
    deadline = time.monotonic() + 30
    while True:
        response, events = gw.send("POST", invocations, "alice", json=body)
        if response.status_code == 429:
            break
        assert response.status_code == 200 and events == [], (response.text, events)
        assert time.monotonic() < deadline, "the rate limit never refused a call"
    assert response.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert len(events) == 1, events
    assert events[0]["decision"] == "deny" and events[0]["status"] == 429, events
    assert events[0]["principal"] == "alice" and events[0]["resource_name"] == world.name

    # Deployments, the model listing, the metrics and paths the gateway does not serve.
    event = gw.refused("GET", "/v1/deployments", 401, "UNAUTHENTICATED")
    assert event["action"] == "gateway.deployment.list", event
    event = gw.refused("POST", "/v1/deployments", 403, "PERMISSION_DENIED", "carl",
                       json={"name": f"dep-{unique}",
                             "model_uri": f"models:/{world.name}@champion"})
    assert event["action"] == "gateway.deployment.create", event
    assert event["resource_name"] == world.name, event
    gw.refused("POST", "/v1/deployments", 400, "INVALID_PARAMETER_VALUE", "alice",
               data=b"{not json", headers={"Content-Type": "application/json"})
    event = gw.refused("GET", f"/v1/deployments/nothing-{unique}", 404,
                       "RESOURCE_DOES_NOT_EXIST", "alice")
    assert event["action"] == "gateway.deployment.get", event
    event = gw.refused("POST", f"/v1/deployments/nothing-{unique}/invocations", 404,
                       "RESOURCE_DOES_NOT_EXIST", "alice", json=body)
    assert event["action"] == "gateway.deployment.invoke", event
    event = gw.refused("GET", "/v1/models", 401, "UNAUTHENTICATED",
                       headers={"Authorization": "Bearer msh_not-a-token"})
    assert event["action"] == "gateway.models.list", event
    event = gw.refused("GET", "/metrics", 401, "UNAUTHENTICATED")
    assert event["action"] == "gateway.metrics", event
    gw.refused("GET", "/metrics", 403, "PERMISSION_DENIED", "alice")
    # Refused before any identity work, as the server refuses paths it does not route.
    event = gw.refused("GET", invocations, 405, "METHOD_NOT_ALLOWED", "alice",
                       principal="anonymous")
    assert event["action"] == "unrouted", event
    gw.refused("POST", f"/v1/models/{world.name}/versions/1/more", 404, "ENDPOINT_NOT_FOUND",
               "alice", principal="anonymous", json=body)
    _chain_verifies(share_server)


def test_a_gateway_refusal_that_cannot_be_audited_is_503(share_server: ShareServer,
                                                         strict_gateway: str) -> None:
    import sqlalchemy as sa

    gw = Refusals(share_server, strict_gateway)
    path = "/v1/models/anything@champion/invocations"
    engine = sa.create_engine(share_server.backend_uri)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TRIGGER share_audit_test_block BEFORE INSERT ON "
                             "share_audit_events BEGIN SELECT RAISE(ABORT, 'blocked'); END")
    try:
        response, events = gw.send("POST", path, json={"inputs": [[1.0]]})
        assert response.status_code == 503, response.text
        assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE" and events == []
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER share_audit_test_block")
        engine.dispose()
    gw.refused("POST", path, 401, "UNAUTHENTICATED", json={"inputs": [[1.0]]})
    _chain_verifies(share_server)
