"""``checksum+s3://`` against S3 served by moto on 127.0.0.1, driven with the stock client."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ShareServer, free_port, populate, running_server

pytestmark = pytest.mark.integration
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
SHARE = "/api/2.0/mlflow-share"
BUCKET = "share-artifacts"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.endpoint = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        moto.stop()


@pytest.fixture(scope="module")
def s3_server(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareServer]:
    env = {**AWS, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint}
    with running_server(tmp_path_factory.mktemp("s3-server"),
                        artifacts_uri=f"checksum+s3://{BUCKET}/root", env_extra=env) as server:
        populate(server)
        yield server


def _objects(s3: Any, prefix: str) -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listing}


def _experiment(server: ShareServer, name: str) -> str:
    response = server.api("POST", "/api/2.0/mlflow/experiments/create",
                          token=server.tokens["alice"], json={"name": name})
    assert response.status_code == 200, response.text
    return str(response.json()["experiment_id"])


def test_uploads_land_in_the_bucket_with_digests_and_refusals_leave_nothing(
        s3_server: ShareServer, s3: Any, unique: str) -> None:
    experiment_id = _experiment(s3_server, f"s3-{unique}")
    token = s3_server.tokens["alice"]
    data = os.urandom(2_000_000)
    key = f"{experiment_id}/run/artifacts/w.bin"
    declared = "sha-256=:" + base64.b64encode(hashlib.sha256(b"other").digest()).decode() + ":"
    refused = s3_server.api("PUT", f"{ARTIFACTS}/{key}", token=token, data=data,
                            headers={"Content-Digest": declared})
    assert refused.status_code == 400, refused.text
    assert _objects(s3, f"root/{experiment_id}/") == {}
    stored = s3_server.api("PUT", f"{ARTIFACTS}/{key}", token=token, data=data)
    assert stored.status_code == 200, stored.text
    assert _objects(s3, f"root/{experiment_id}/") == {f"root/{key}": data}
    fetched = s3_server.api("GET", f"{ARTIFACTS}/{key}", token=token)
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["X-MLflow-Share-Integrity"] == "verified"
    # Bytes changed in the bucket behind the server's back are refused.
    s3.put_object(Bucket=BUCKET, Key=f"root/{key}", Body=data[:-1] + bytes([data[-1] ^ 1]))
    tampered = s3_server.api("GET", f"{ARTIFACTS}/{key}", token=token)
    assert tampered.status_code == 500 and tampered.json()["error_code"] == "DATA_LOSS"
    # Presigned and multipart transfers would bypass the digest: not offered.
    multipart = s3_server.api("POST", f"/api/2.0/mlflow-artifacts/mpu/create/{key}", token=token,
                              json={"path": key, "num_parts": 2})
    assert multipart.status_code != 200


def test_registered_version_is_copied_in_the_bucket_and_checked(
        s3_server: ShareServer, s3: Any, unique: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow_share_client import IntegrityError, download_verified

    monkeypatch.setenv("MLFLOW_TRACKING_URI", s3_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", s3_server.tokens["alice"])
    mlflow.set_tracking_uri(s3_server.url)
    client = MlflowClient()
    run = client.create_run(client.create_experiment(f"s3-model-{unique}"))
    files = {"MLmodel": b"flavors: {}\n", "model.onnx": os.urandom(300_000)}
    folder = tmp_path / "model"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    client.log_artifacts(run.info.run_id, str(folder), "model")
    name = f"s3-model-{unique}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                          run_id=run.info.run_id)
    assert version.status == "READY"
    location = client.get_model_version_download_uri(name, version.version)
    prefix = "root/" + location[len("mlflow-artifacts:/"):] + "/"
    assert {k[len(prefix):]: v for k, v in _objects(s3, prefix).items()} == files
    local = download_verified(f"models:/{name}/{version.version}", str(tmp_path))
    assert (Path(local) / "model.onnx").read_bytes() == files["model.onnx"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": s3_server.url,
           "MLFLOW_TRACKING_TOKEN": s3_server.tokens["alice"]}
    command = [sys.executable, "-m", "mlflow_share.cli", "verify", f"models:/{name}/1"]
    assert subprocess.run(command, env=env, capture_output=True, text=True).returncode == 0
    s3.put_object(Bucket=BUCKET, Key=prefix + "model.onnx", Body=b"swapped")
    report = subprocess.run(command, env=env, capture_output=True, text=True)
    assert report.returncode == 1 and "changed: model.onnx" in report.stderr
    with pytest.raises(IntegrityError, match="model.onnx"):
        download_verified(f"models:/{name}/{version.version}", str(tmp_path / "again"))
    mlflow.set_tracking_uri(None)
