"""Artifact integrity against a real server: digests, registered copies, manifests, tampering.

The server's artifact root is ``checksum+file://`` (tests.conftest). Files are uploaded with
the stock MLflow client; tampering happens on disk, behind the server's back, the way an
attacker with storage access would do it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import ShareServer

pytestmark = pytest.mark.integration
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
SHARE = "/api/2.0/mlflow-share"


def _digest_header(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def _sql(server: ShareServer, statement: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(server.backend_uri)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def _cli(server: ShareServer, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "mlflow_share.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def _experiment(share_server: ShareServer, user: str, name: str) -> str:
    response = share_server.api("POST", "/api/2.0/mlflow/experiments/create",
                                token=share_server.tokens[user], json={"name": name})
    assert response.status_code == 200, response.text
    return str(response.json()["experiment_id"])


def _register(as_user: Any, share_server: ShareServer, unique: str, tmp_path: Path,
              files: dict[str, bytes], user: str = "alice") -> tuple[str, str, Path]:
    """Log ``files`` under ``model/`` of a new run, register them; (name, version, folder)."""
    import mlflow
    from mlflow import MlflowClient

    as_user(user)
    client = MlflowClient()
    experiment_id = client.create_experiment(f"integrity-{unique}")
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "alpha", "0.5")
    local = tmp_path / f"model-{unique}"
    for relative, data in files.items():
        (local / relative).parent.mkdir(parents=True, exist_ok=True)
        (local / relative).write_bytes(data)
    client.log_artifacts(run.info.run_id, str(local), "model")
    name = f"model-{unique}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                          run_id=run.info.run_id)
    assert version.status == "READY"
    location = client.get_model_version_download_uri(name, version.version)
    assert location.startswith("mlflow-artifacts:/models/")
    mlflow.set_tracking_uri(share_server.url)
    folder = share_server.artifacts / location[len("mlflow-artifacts:/"):]
    return name, str(version.version), folder


FILES = {"MLmodel": b"flavors: {}\n", "model.onnx": os.urandom(50_000),
         "sub/config.json": b'{"a": 1}'}


def test_upload_records_digest_and_download_checks_it(share_server: ShareServer, as_user: Any,
                                                      unique: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    as_user("alice")
    client = MlflowClient()
    run = client.create_run(client.create_experiment(f"digest-{unique}"))
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "weights.bin").write_bytes(data)
    client.log_artifact(run.info.run_id, str(tmp_path / "weights.bin"), "w")
    key = f"{run.info.experiment_id}/{run.info.run_id}/artifacts/w/weights.bin"
    rows = _sql(share_server, "SELECT size, sha256, audit_seq FROM share_artifact_digests "
                              "WHERE path = :p", p=key)
    assert rows == [(len(data), hashlib.sha256(data).hexdigest(), rows[0][2])]
    details = json.loads(_sql(share_server, "SELECT details FROM share_audit_events "
                                            "WHERE seq = :s", s=rows[0][2])[0][0])
    assert {"path": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} in \
        details["changes"][0]["files"]
    response = share_server.api("GET", f"{ARTIFACTS}/{key}", token=share_server.tokens["alice"])
    assert response.status_code == 200 and response.content == data
    assert response.headers["Content-Digest"] == _digest_header(data)
    assert response.headers["X-MLflow-Share-Integrity"] == "verified"
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="w",
                                                dst_path=str(tmp_path / "dl"))
    assert (Path(local) / "weights.bin").read_bytes() == data


def test_registration_copies_files_write_once_with_manifest_and_identity(
        share_server: ShareServer, as_user: Any, unique: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    name, version, folder = _register(as_user, share_server, unique, tmp_path, FILES)
    client = MlflowClient()
    mv = client.get_model_version(name, version)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) \
        == sorted(FILES)
    record = share_server.api("GET", f"{SHARE}/model-versions/manifest", token=share_server.tokens[
        "alice"], params={"name": name, "version": version}).json()
    resources = {r["name"]: (r["size"], r["digest"])
                 for r in record["manifest"]["predicate"]["resources"]}
    assert resources == {k: (len(v), hashlib.sha256(v).hexdigest()) for k, v in FILES.items()}
    assert record["manifest"]["_type"] == "https://in-toto.io/Statement/v1"
    assert mv.tags["mlflow_share.identity"] == record["identity"]
    assert mv.tags["mlflow_share.manifest_sha256"] == record["manifest_sha256"]
    # The identity binds the bytes to the run and its params.
    canonical = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":")).encode()  # noqa: E731
    params = hashlib.sha256(canonical([["alpha", "0.5"]])).hexdigest()
    assert record["manifest"]["predicate"]["mlflow"]["params_sha256"] == params
    assert record["identity"] == hashlib.sha256(canonical(
        {"manifest": record["manifest_sha256"], "params": params, "run_id": mv.run_id}
    )).hexdigest()
    # Changing the run's files afterwards does not change the registered copy.
    client.log_text(mv.run_id, "overwritten", "model/MLmodel")
    assert (folder / "MLmodel").read_bytes() == FILES["MLmodel"]
    # Nothing writes or deletes under the version's location, and its tags are fixed.
    relative = folder.relative_to(share_server.artifacts).as_posix()
    for method in ("PUT", "DELETE"):
        for user in ("alice", "admin"):
            kwargs: dict[str, Any] = {"data": b"x"} if method == "PUT" else {}
            response = (share_server.api(method, f"{ARTIFACTS}/{relative}/MLmodel",
                                         auth=share_server.admin_auth(), **kwargs)
                        if user == "admin" else
                        share_server.api(method, f"{ARTIFACTS}/{relative}/MLmodel",
                                         token=share_server.tokens[user], **kwargs))
            assert response.status_code == 409, (method, user, response.text)
            assert response.json()["error_code"] == "RESOURCE_CONFLICT"
    tag = share_server.api("POST", "/api/2.0/mlflow/model-versions/set-tag",
                           token=share_server.tokens["alice"],
                           json={"name": name, "version": version,
                                 "key": "mlflow_share.identity", "value": "forged"})
    assert tag.status_code == 409, tag.text
    assert (folder / "MLmodel").read_bytes() == FILES["MLmodel"]
    # Another team cannot read the registered files until the model is shared with it.
    path = f"{ARTIFACTS}/{relative}/model.onnx"
    assert share_server.api("GET", path, token=share_server.tokens["bob"]).status_code == 403
    share_server.api("POST", f"{SHARE}/grants", token=share_server.tokens["alice"],
                     json={"model": name, "team": "team-b", "permission": "read"})
    shared = share_server.api("GET", path, token=share_server.tokens["bob"])
    assert shared.status_code == 200 and shared.content == FILES["model.onnx"]


def _tamper(folder: Path, kind: str) -> str:
    """Change a registered version's files on disk; returns the file to be named."""
    for path in folder.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    onnx, mlmodel = folder / "model.onnx", folder / "MLmodel"
    if kind == "bit-flip":
        data = bytearray(onnx.read_bytes())
        data[1234] ^= 0x01
        onnx.write_bytes(bytes(data))
        return "model.onnx"
    if kind == "truncation":
        onnx.write_bytes(onnx.read_bytes()[:-1])
        return "model.onnx"
    if kind == "extension":
        onnx.write_bytes(onnx.read_bytes() + b"\x00")
        return "model.onnx"
    if kind == "swap":
        a, b = onnx.read_bytes(), mlmodel.read_bytes()
        onnx.write_bytes(b)
        mlmodel.write_bytes(a)
        return "model.onnx"
    if kind == "extra":
        (folder / "evil.py").write_text("import os\n")
        return "evil.py"
    assert kind == "missing"
    (folder / "sub" / "config.json").unlink()
    return "sub/config.json"


@pytest.mark.parametrize("kind", ["bit-flip", "truncation", "extension", "swap", "extra",
                                  "missing"])
def test_tampered_registered_version_is_detected(share_server: ShareServer, as_user: Any,
                                                 unique: str, tmp_path: Path, kind: str) -> None:
    import mlflow
    from mlflow_share_client import IntegrityError, download_verified

    name, version, folder = _register(as_user, share_server, unique, tmp_path, FILES)
    ok = _cli(share_server, "verify", f"models:/{name}/{version}",
              token=share_server.tokens["alice"])
    assert ok.returncode == 0, ok.stderr
    assert "3 files match the manifest" in ok.stdout
    clean = download_verified(f"models:/{name}/{version}", str(tmp_path))
    assert (Path(clean) / "model.onnx").read_bytes() == FILES["model.onnx"]

    named = _tamper(folder, kind)
    report = _cli(share_server, "verify", f"models:/{name}/{version}",
                  token=share_server.tokens["alice"])
    assert report.returncode == 1
    expected_label = {"extra": "extra:", "missing": "missing:"}.get(kind, "changed:")
    assert f"{expected_label} {named}" in report.stderr.replace("   ", " ").replace("  ", " ")
    before = set(tmp_path.iterdir())
    with pytest.raises(IntegrityError) as caught:
        download_verified(f"models:/{name}/{version}", str(tmp_path))
    assert named in str(caught.value)
    assert set(tmp_path.iterdir()) == before  # nothing of the bad download left behind
    if kind == "extra":  # a file registration did not put there is never served
        relative = (folder / named).relative_to(share_server.artifacts).as_posix()
        planted = share_server.api("GET", f"{ARTIFACTS}/{relative}",
                                   token=share_server.tokens["alice"])
        assert planted.status_code == 500 and planted.json()["error_code"] == "DATA_LOSS"
    if kind not in ("extra", "missing"):
        # The stock client's download fails too: the server refuses the changed file.
        with pytest.raises(Exception, match=named.replace(".", r"\.")):
            mlflow.artifacts.download_artifacts(f"models:/{name}/{version}",
                                                dst_path=str(tmp_path / "stock"))
        relative = (folder / named).relative_to(share_server.artifacts).as_posix()
        refused = share_server.api("GET", f"{ARTIFACTS}/{relative}",
                                   token=share_server.tokens["alice"])
        assert refused.status_code == 500
        assert refused.json()["error_code"] == "DATA_LOSS"
        assert named in refused.json()["message"] and "expected" in refused.json()["message"]
        via_registry = share_server.api("GET", "/model-versions/get-artifact",
                                        token=share_server.tokens["alice"],
                                        params={"name": name, "version": version, "path": named})
        assert via_registry.status_code == 500 and "DATA_LOSS" in via_registry.text
        assert named in via_registry.json()["message"]
        audited = _sql(share_server, "SELECT status, decision, details FROM share_audit_events "
                                     "WHERE route = :r ORDER BY seq DESC LIMIT 1",
                       r=f"{ARTIFACTS}/{relative}")
        assert audited[0][:2] == (500, "fail")
        assert "does not match" in json.loads(audited[0][2])["integrity"]


def test_registration_needs_files_and_leaves_prompts_alone(share_server: ShareServer,
                                                          as_user: Any, unique: str) -> None:
    import mlflow

    token = share_server.tokens["alice"]
    experiment_id = _experiment(share_server, "alice", f"empty-{unique}")
    run_id = share_server.api("POST", "/api/2.0/mlflow/runs/create", token=token, json={
        "experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
    share_server.api("POST", "/api/2.0/mlflow/registered-models/create", token=token,
                     json={"name": f"empty-{unique}"})
    empty = share_server.api("POST", "/api/2.0/mlflow/model-versions/create", token=token,
                             json={"name": f"empty-{unique}", "source": f"runs:/{run_id}/typo",
                                   "run_id": run_id})
    assert empty.status_code == 400 and "no files" in empty.json()["message"]
    assert share_server.api("GET", "/api/2.0/mlflow/model-versions/get", token=token, params={
        "name": f"empty-{unique}", "version": "1"}).status_code == 404  # nothing half-made
    as_user("alice")
    prompt = mlflow.genai.register_prompt(name=f"prompt-{unique}", template="Hello {{name}}")
    assert prompt.version == 1


def test_a_logged_model_without_files_registers_with_an_empty_manifest(
        share_server: ShareServer, as_user: Any, unique: str, tmp_path: Path) -> None:
    """MLflow 3 logged models may have no files (externally hosted models, GenAI agent
    versions): they register as in stock MLflow, the identity binding run and params."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow_share_client import download_verified

    as_user("alice")
    client = MlflowClient()
    experiment_id = client.create_experiment(f"fileless-{unique}")
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "alpha", "0.5")
    logged = client.create_logged_model(experiment_id, source_run_id=run.info.run_id)
    client.finalize_logged_model(logged.model_id, "READY")
    name = f"fileless-{unique}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"models:/{logged.model_id}",
                                          run_id=run.info.run_id, model_id=logged.model_id)
    assert version.status == "READY", version.status_message
    record = share_server.api("GET", f"{SHARE}/model-versions/manifest",
                              token=share_server.tokens["alice"],
                              params={"name": name, "version": version.version}).json()
    assert record["manifest"]["predicate"]["resources"] == []
    canonical = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":")).encode()  # noqa: E731
    params = hashlib.sha256(canonical([["alpha", "0.5"]])).hexdigest()
    assert record["manifest"]["predicate"]["mlflow"]["params_sha256"] == params
    assert record["identity"] == hashlib.sha256(canonical(
        {"manifest": record["manifest_sha256"], "params": params, "run_id": run.info.run_id}
    )).hexdigest()
    assert client.get_model_version(name, version.version).tags["mlflow_share.identity"] == \
        record["identity"]
    checked = share_server.api("GET", f"{SHARE}/model-versions/verify",
                               token=share_server.tokens["alice"],
                               params={"name": name, "version": version.version}).json()
    assert checked["ok"] and checked["files"] == 0 and checked["checked"] == 0
    report = _cli(share_server, "verify", f"models:/{name}/{version.version}",
                  token=share_server.tokens["alice"])
    assert report.returncode == 0, report.stderr
    assert "has no files" in report.stdout
    assert list(Path(download_verified(f"models:/{name}/{version.version}",
                                       str(tmp_path))).iterdir()) == []
    # The fluent API registers it the same way.
    assert mlflow.register_model(f"models:/{logged.model_id}", name).status == "READY"
    # An external model (MLflow writes one MLmodel file for it) registers with that file.
    external = mlflow.create_external_model(name=f"external-{unique}",
                                            experiment_id=experiment_id)
    registered = mlflow.register_model(f"models:/{external.model_id}", name)
    assert registered.status == "READY"
    described = share_server.api("GET", f"{SHARE}/model-versions/manifest",
                                 token=share_server.tokens["alice"],
                                 params={"name": name, "version": registered.version}).json()
    assert [r["name"] for r in described["manifest"]["predicate"]["resources"]] == ["MLmodel"]


def test_edited_digest_row_is_caught_by_the_audit_chain(share_server: ShareServer, as_user: Any,
                                                        unique: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    as_user("alice")
    client = MlflowClient()
    run = client.create_run(client.create_experiment(f"row-{unique}"))
    (tmp_path / "data.bin").write_bytes(b"original bytes")
    client.log_artifact(run.info.run_id, str(tmp_path / "data.bin"))
    key = f"{run.info.experiment_id}/{run.info.run_id}/artifacts/data.bin"
    replaced = b"replaced bytes"
    (share_server.artifacts / key).write_bytes(replaced)
    _sql(share_server, "UPDATE share_artifact_digests SET sha256 = :s WHERE path = :p",
         s=hashlib.sha256(replaced).hexdigest(), p=key)
    response = share_server.api("GET", f"{ARTIFACTS}/{key}", token=share_server.tokens["alice"])
    assert response.status_code == 500, response.text
    assert response.json()["error_code"] == "DATA_LOSS"
    assert "audit log" in response.json()["message"]
    via_run = share_server.api("GET", "/get-artifact", token=share_server.tokens["alice"],
                               params={"run_id": run.info.run_id, "path": "data.bin"})
    assert via_run.status_code == 500 and "DATA_LOSS" in via_run.text


def test_declared_digest_mismatch_is_400_and_stores_nothing(share_server: ShareServer,
                                                            unique: str) -> None:
    experiment_id = _experiment(share_server, "alice", f"declared-{unique}")
    key = f"{experiment_id}/upload/declared.bin"
    token = share_server.tokens["alice"]
    bad = share_server.api("PUT", f"{ARTIFACTS}/{key}", token=token, data=b"payload",
                           headers={"Content-Digest": _digest_header(b"something else")})
    assert bad.status_code == 400, bad.text
    assert bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert not (share_server.artifacts / key).exists()
    assert not list((share_server.artifacts / key).parent.glob("*")) \
        if (share_server.artifacts / key).parent.exists() else True
    assert _sql(share_server, "SELECT 1 FROM share_artifact_digests WHERE path = :p", p=key) == []
    malformed = share_server.api("PUT", f"{ARTIFACTS}/{key}", token=token, data=b"payload",
                                 headers={"Content-Digest": "sha-256=not-base64"})
    assert malformed.status_code == 400
    good = share_server.api("PUT", f"{ARTIFACTS}/{key}", token=token, data=b"payload",
                            headers={"Content-Digest": _digest_header(b"payload")})
    assert good.status_code == 200
    assert (share_server.artifacts / key).read_bytes() == b"payload"


def test_interrupted_upload_leaves_no_row_and_no_file(share_server: ShareServer,
                                                      unique: str) -> None:
    import time

    experiment_id = _experiment(share_server, "alice", f"cut-{unique}")
    key = f"{experiment_id}/upload/cut.bin"
    url = urlparse(share_server.url)
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall((f"PUT {ARTIFACTS}/{key} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                      f"Authorization: Bearer {share_server.tokens['alice']}\r\n"
                      "Content-Length: 10000000\r\n\r\n").encode() + b"x" * 3_000_000)
        time.sleep(0.5)
    time.sleep(1.0)
    folder = share_server.artifacts / key
    assert not folder.exists()
    assert not folder.parent.exists() or list(folder.parent.iterdir()) == []
    assert _sql(share_server, "SELECT 1 FROM share_artifact_digests WHERE path = :p", p=key) == []


def test_concurrent_uploads_to_one_path_end_consistent(share_server: ShareServer,
                                                       unique: str) -> None:
    experiment_id = _experiment(share_server, "alice", f"race-{unique}")
    key = f"{experiment_id}/upload/race.bin"
    bodies = [bytes([i]) * (1_000_000 + i) for i in range(8)]

    def put(body: bytes) -> None:
        response = share_server.api("PUT", f"{ARTIFACTS}/{key}",
                                    token=share_server.tokens["alice"], data=body)
        assert response.status_code == 200

    threads = [threading.Thread(target=put, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = (share_server.artifacts / key).read_bytes()
    assert stored in bodies
    assert _sql(share_server, "SELECT size, sha256 FROM share_artifact_digests WHERE path = :p",
                p=key) == [(len(stored), hashlib.sha256(stored).hexdigest())]
    response = share_server.api("GET", f"{ARTIFACTS}/{key}", token=share_server.tokens["alice"])
    assert response.status_code == 200 and response.content == stored


# Path-traversal payloads of MLflow's advisories (CVE-2023-1177, -2356, -3765, -6014, -6909,
# -6975, -6977, CVE-2024-0520, -1483, -1558, -1560, -1594, -2928, -3573, -4453) and variants.
TRAVERSALS = [
    "../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd",
    "%252e%252e/%252e%252e/etc/passwd", "/etc/passwd", "//etc/passwd", "file:///etc/passwd",
    "1/../../etc/passwd", "1/run/artifacts/../../../../etc/passwd", "..\\..\\etc\\passwd",
    "1/%00/x", "C:\\Windows\\win.ini", "1/./x", "1//x", "%23/etc/passwd", "1/run/;/../../x",
]


def _raw(server: ShareServer, method: str, path_and_query: str, token: str,
         data: bytes | None = None) -> requests.Response:
    session = requests.Session()
    request = requests.Request(method, server.url + "/", data=data,
                               headers={"Authorization": f"Bearer {token}"}).prepare()
    request.url = server.url + path_and_query  # as sent: no client-side normalisation
    return session.send(request, timeout=30)


@pytest.fixture(scope="module")
def run_and_version(share_server: ShareServer) -> tuple[str, str]:
    """A run and a registered model version of alice's, for the routes that need them."""
    token = share_server.tokens["alice"]
    experiment_id = _experiment(share_server, "alice", f"traversal-{os.urandom(4).hex()}")
    run_id = share_server.api("POST", "/api/2.0/mlflow/runs/create", token=token,
                              json={"experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
    name = f"traversal-{os.urandom(4).hex()}"
    share_server.api("PUT", f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/model/MLmodel",
                     token=token, data=b"flavors: {}\n")
    share_server.api("POST", "/api/2.0/mlflow/registered-models/create", token=token,
                     json={"name": name})
    created = share_server.api("POST", "/api/2.0/mlflow/model-versions/create", token=token,
                               json={"name": name, "source": f"runs:/{run_id}/model",
                                     "run_id": run_id})
    assert created.status_code == 200, created.text
    return run_id, name


@pytest.mark.parametrize("payload", TRAVERSALS)
def test_path_traversal_is_refused_on_every_artifact_route(
        share_server: ShareServer, run_and_version: tuple[str, str], payload: str) -> None:
    from urllib.parse import quote

    token = share_server.tokens["alice"]
    quoted = quote(payload, safe="")
    run_id, name = run_and_version
    routes = [
        ("GET", f"{ARTIFACTS}/{payload}"), ("PUT", f"{ARTIFACTS}/{payload}"),
        ("DELETE", f"{ARTIFACTS}/{payload}"), ("GET", f"{ARTIFACTS}?path={quoted}"),
        ("GET", f"/ajax-api/2.0/mlflow-artifacts/artifacts/{payload}"),
        ("GET", f"/get-artifact?run_id={run_id}&path={quoted}"),
        ("GET", f"/model-versions/get-artifact?name={name}&version=1&path={quoted}"),
        ("GET", f"/api/2.0/mlflow/artifacts/list?run_id={run_id}&path={quoted}"),
    ]
    for method, target in routes:
        response = _raw(share_server, method, target, token, b"x" if method == "PUT" else None)
        assert response.status_code == 400, (method, target, response.status_code,
                                              response.text[:200])
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "root:" not in response.text


def test_symlink_inside_the_root_is_refused(share_server: ShareServer, unique: str) -> None:
    experiment_id = _experiment(share_server, "alice", f"link-{unique}")
    folder = share_server.artifacts / experiment_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "etc").symlink_to("/etc")
    token = share_server.tokens["alice"]
    for method in ("GET", "PUT"):
        response = share_server.api(method, f"{ARTIFACTS}/{experiment_id}/etc/passwd",
                                    token=token, data=b"x" if method == "PUT" else None)
        assert response.status_code == 400, response.text
    assert "root:" not in share_server.api("GET", f"{ARTIFACTS}/{experiment_id}/etc/hostname",
                                           token=token).text


def test_verified_download_loads_an_onnx_model(share_server: ShareServer, as_user: Any,
                                               unique: str, tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from mlflow_share_client import download_verified

    x = np.random.default_rng(0).random((40, 3)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    onnx_bytes = to_onnx(model, x[:1], options={"zipmap": False}).SerializeToString()
    name, version, _ = _register(as_user, share_server, unique, tmp_path,
                                 {"model.onnx": onnx_bytes, "MLmodel": b"flavors: {}\n"})
    share_server.api("POST", f"{SHARE}/grants", token=share_server.tokens["alice"],
                     json={"model": name, "team": "team-b", "permission": "read"})
    as_user("bea")
    local = download_verified(f"models:/{name}/{version}", str(tmp_path))
    session = ort.InferenceSession(str(Path(local) / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    labels = session.run(None, {session.get_inputs()[0].name: x[:5]})[0]
    assert list(labels) == list(model.predict(x[:5]))
    as_user("carl")
    with pytest.raises(Exception, match="403|PERMISSION_DENIED"):
        download_verified(f"models:/{name}/{version}", str(tmp_path))


def _peak_rss_kib(pgid: int) -> int:
    """The largest peak resident set (VmHWM) among the server's processes."""
    peak = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
        except (OSError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak


def test_two_gigabytes_stream_through_in_constant_memory(share_server: ShareServer,
                                                         unique: str) -> None:
    experiment_id = _experiment(share_server, "alice", f"big-{unique}")
    key = f"{experiment_id}/upload/big.bin"
    size, block = 2 * 1024**3, os.urandom(1024 * 1024)
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)
    before = _peak_rss_kib(share_server.process.pid)

    def body() -> Any:
        for _ in range(size // len(block)):
            yield block

    token = share_server.tokens["alice"]
    uploaded = share_server.api("PUT", f"{ARTIFACTS}/{key}", token=token, data=body(),
                                headers={"Content-Digest": "sha-256=:" + base64.b64encode(
                                    expected.digest()).decode() + ":"})
    assert uploaded.status_code == 200, uploaded.text
    received, length = hashlib.sha256(), 0
    with requests.get(share_server.url + f"{ARTIFACTS}/{key}", stream=True, timeout=300,
                      headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(1024 * 1024):
            received.update(chunk)
            length += len(chunk)
    assert (length, received.hexdigest()) == (size, expected.hexdigest())
    growth_mib = (_peak_rss_kib(share_server.process.pid) - before) / 1024
    assert growth_mib < 200, f"server peak memory grew by {growth_mib:.0f} MiB for 2 GiB"
    (share_server.artifacts / key).unlink()


def test_large_tampered_file_is_cut_off_before_its_end_and_audited(share_server: ShareServer,
                                                                   unique: str) -> None:
    experiment_id = _experiment(share_server, "alice", f"cutoff-{unique}")
    key = f"{experiment_id}/upload/large.bin"
    token = share_server.tokens["alice"]
    data = os.urandom(20 * 1024 * 1024)
    assert share_server.api("PUT", f"{ARTIFACTS}/{key}", token=token, data=data).status_code == 200
    tampered = bytearray(data)
    tampered[15 * 1024 * 1024] ^= 0xFF  # same size: found only by the digest, at the end
    (share_server.artifacts / key).write_bytes(bytes(tampered))
    received = b""
    with pytest.raises(requests.exceptions.RequestException):
        with requests.get(share_server.url + f"{ARTIFACTS}/{key}", stream=True, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status_code == 200  # the size matched; the bytes stream
            for chunk in response.iter_content(1024 * 1024):
                received += chunk
    assert len(received) < len(data)  # never the complete, wrong file
    events = _sql(share_server, "SELECT action, status, decision, details FROM "
                                "share_audit_events WHERE route = :r ORDER BY seq",
                  r=f"{ARTIFACTS}/{key}")
    assert events[-1][:3] == ("artifact.data_loss", 500, "fail")
    assert "large.bin" in json.loads(events[-1][3])["reason"]


def test_signed_manifest_alias_and_direct_verification(tmp_path: Path) -> None:
    from tests.conftest import populate, running_server

    keys = tmp_path / "keys"
    keys.mkdir()
    made = subprocess.run([sys.executable, "-m", "mlflow_share.cli", "audit", "keygen",
                           "--private", str(keys / "sign.key"), "--public", str(keys / "sign.pub")],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    subprocess.run([sys.executable, "-m", "mlflow_share.cli", "audit", "keygen", "--private",
                    str(keys / "other.key"), "--public", str(keys / "other.pub")], check=True)
    with running_server(tmp_path / "signed",
                        env_extra={"MLFLOW_SHARE_MANIFEST_KEY": str(keys / "sign.key")}) as server:
        populate(server)
        token = server.tokens["alice"]
        experiment_id = _experiment(server, "alice", "signed")
        run_id = server.api("POST", "/api/2.0/mlflow/runs/create", token=token, json={
            "experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
        prefix = f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/model"
        for name, data in FILES.items():
            assert server.api("PUT", f"{prefix}/{name}", token=token, data=data).ok
        server.api("POST", "/api/2.0/mlflow/registered-models/create", token=token,
                   json={"name": "signed"})
        created = server.api("POST", "/api/2.0/mlflow/model-versions/create", token=token,
                             json={"name": "signed", "source": f"runs:/{run_id}/model",
                                   "run_id": run_id})
        assert created.json()["model_version"]["status"] == "READY", created.text
        server.api("POST", "/api/2.0/mlflow/registered-models/alias", token=token,
                   json={"name": "signed", "alias": "champion", "version": "1"})
        good = _cli(server, "verify", "models:/signed@champion", "--key",
                    str(keys / "sign.pub"), token=token)
        assert good.returncode == 0, good.stderr
        wrong = _cli(server, "verify", "models:/signed@champion", "--key",
                     str(keys / "other.pub"), token=token)
        assert wrong.returncode == 1 and "not signed by the given key" in wrong.stderr
        direct = subprocess.run(
            [sys.executable, "-m", "mlflow_share.cli", "verify", "models:/signed/1",
             "--backend-store-uri", server.backend_uri,
             "--artifacts-destination", f"checksum+file://{server.artifacts}", "--json"],
            capture_output=True, text=True)
        assert direct.returncode == 0, direct.stderr
        assert json.loads(direct.stdout)["checked"] == 3
        # A manifest row edited in the database no longer matches the audit log.
        _sql(server, "UPDATE share_model_manifests SET identity = :i", i="0" * 64)
        edited = subprocess.run(
            [sys.executable, "-m", "mlflow_share.cli", "verify", "models:/signed/1",
             "--backend-store-uri", server.backend_uri,
             "--artifacts-destination", f"checksum+file://{server.artifacts}"],
            capture_output=True, text=True)
        assert edited.returncode == 1 and "identity" in edited.stderr


def test_file_without_recorded_digest_is_reported_unverified(share_server: ShareServer,
                                                             unique: str) -> None:
    experiment_id = _experiment(share_server, "alice", f"legacy-{unique}")
    key = f"{experiment_id}/legacy/old.txt"  # written before mlflow-share recorded digests
    (share_server.artifacts / key).parent.mkdir(parents=True)
    (share_server.artifacts / key).write_text("old")
    response = share_server.api("GET", f"{ARTIFACTS}/{key}", token=share_server.tokens["alice"])
    assert response.status_code == 200 and response.content == b"old"
    assert response.headers["X-MLflow-Share-Integrity"] == "unverified"
    assert "Content-Digest" not in response.headers
    details = _sql(share_server, "SELECT details FROM share_audit_events WHERE route = :r",
                   r=f"{ARTIFACTS}/{key}")
    assert json.loads(details[-1][0])["integrity"] == f"unverified: {key}"


def test_version_is_pending_while_its_files_are_copied(share_server: ShareServer,
                                                       unique: str) -> None:
    token = share_server.tokens["alice"]
    experiment_id = _experiment(share_server, "alice", f"pending-{unique}")
    run_id = share_server.api("POST", "/api/2.0/mlflow/runs/create", token=token, json={
        "experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
    prefix = f"{ARTIFACTS}/{experiment_id}/{run_id}/artifacts/model"
    for index in range(3):  # enough bytes that the copy takes a while
        assert share_server.api("PUT", f"{prefix}/part-{index}.bin", token=token,
                                data=os.urandom(100 * 1024 * 1024)).ok
    name = f"pending-{unique}"
    share_server.api("POST", "/api/2.0/mlflow/registered-models/create", token=token,
                     json={"name": name})
    result: dict[str, Any] = {}

    def register() -> None:
        result["response"] = share_server.api(
            "POST", "/api/2.0/mlflow/model-versions/create", token=token,
            json={"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id})

    thread = threading.Thread(target=register)
    thread.start()
    seen = []
    while thread.is_alive():
        got = share_server.api("GET", "/api/2.0/mlflow/model-versions/get", token=token,
                               params={"name": name, "version": "1"})
        if got.status_code == 200:
            seen.append(got.json()["model_version"]["status"])
    thread.join()
    assert result["response"].json()["model_version"]["status"] == "READY"
    # Visible from its first commit, and PENDING until the copy and manifest are done.
    assert seen and seen[0] == "PENDING_REGISTRATION", seen[:3]
