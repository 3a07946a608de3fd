"""Adopting an MLflow installation's artifacts: digests for what was stored before mlflow-share,
and registration from the other roots an admin declares.

The installation is made by plain ``mlflow server`` (no ``--app-name``) with the stock client:
an experiment on the server's proxied root, and one created with ``artifact_location=file://
.../old-root`` whose files the client writes straight to that folder. mlflow-share then runs
on the same database and root (``checksum+file://``) with ``old-root`` declared as a
registration source root, and ``adopt artifacts`` records the digests. S3 is moto on loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import ADMIN_PASSWORD, ShareServer, free_port, running_server

pytestmark = pytest.mark.integration
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
SHARE = "/api/2.0/mlflow-share"
ROOTS_SETTING = "MLFLOW_SHARE_REGISTRATION_SOURCE_ROOTS"
MODEL_FILES = {"MLmodel": b"flavors: {}\n", "model.onnx": os.urandom(200_000),
               "sub/config.json": b'{"a": 1}'}
BIG = os.urandom(9 * 1024 * 1024 + 3)  # streamed, not read whole before answering


@dataclass
class Legacy:
    """What plain MLflow left behind: its database, its root and a second root."""

    folder: Path
    database: str
    artifacts: Path
    old_root: Path
    elsewhere: Path
    runs: dict[str, str] = field(default_factory=dict)  # label -> run ID
    logged_model: str = ""  # a logged model with files in old-root

    @property
    def destination(self) -> str:
        return f"checksum+file://{self.artifacts}"

    def stored_files(self) -> dict[str, bytes]:
        """Every file in both roots, by the key adoption records it under."""
        found = {}
        for path in sorted(self.artifacts.rglob("*")):
            if path.is_file() and not path.name.startswith(".mlflow-share-staging."):
                found[path.relative_to(self.artifacts).as_posix()] = path.read_bytes()
        for path in sorted(self.old_root.rglob("*")):
            if path.is_file():
                found[f"file://{path}"] = path.read_bytes()
        return found


def _start_plain_mlflow(folder: Path, database: str, artifacts: Path
                        ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    log = folder / "plain-mlflow.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", database,
             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"plain mlflow server exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"plain mlflow server did not start:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Legacy:
    """An installation made by plain `mlflow server` and the stock client, then stopped."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("legacy")
    made = Legacy(folder, f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts",
                  folder / "old-root", folder / "elsewhere")
    process, url = _start_plain_mlflow(folder, made.database, made.artifacts)
    try:
        client = MlflowClient(tracking_uri=url)
        proxied = client.create_experiment("proxied")
        old = client.create_experiment("old", artifact_location=f"file://{made.old_root}")
        other = client.create_experiment("other", artifact_location=f"file://{made.elsewhere}")
        for label, experiment, folders in (("proxied", proxied, ("model", "big")),
                                           ("old", old, ("model", "model2")),
                                           ("other", other, ("model",))):
            run = client.create_run(experiment)
            client.log_param(run.info.run_id, "alpha", label)
            made.runs[label] = run.info.run_id
            for name in folders:
                files = {"big.bin": BIG} if name == "big" else MODEL_FILES
                source = _write(folder / "upload" / label / name, files)
                client.log_artifacts(run.info.run_id, str(source), name)
        logged = client.create_logged_model(old, source_run_id=made.runs["old"])
        client.log_model_artifacts(logged.model_id, str(folder / "upload" / "old" / "model"))
        client.finalize_logged_model(logged.model_id, "READY")
        made.logged_model = logged.model_id
    finally:
        _stop(process)
    # The stock client wrote old-root's files itself, never through a server.
    assert (made.old_root / made.runs["old"] / "artifacts" / "model" / "model.onnx").is_file()
    return made


@dataclass
class Adopted:
    server: ShareServer
    before: dict[str, bytes]  # the files present before adoption, by ledger key
    dry_run: subprocess.CompletedProcess[str]
    rows_after_dry_run: int
    first: subprocess.CompletedProcess[str]
    again: subprocess.CompletedProcess[str]


def _adopt_command() -> list[str]:
    """`mlflow-share adopt artifacts`, as a user runs it."""
    from mlflow_share.adopt.cli import adopt_group

    if "artifacts" in adopt_group.commands:
        return [sys.executable, "-m", "mlflow_share.cli", "adopt", "artifacts"]
    return [sys.executable, "-m", "mlflow_share.adopt.artifacts"]  # until it is wired in


def _adopt(legacy: Legacy, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    """`mlflow-share adopt artifacts ...` on the installation's database and root."""
    return subprocess.run(
        [*_adopt_command(), "--backend-store-uri", legacy.database,
         "--artifacts-destination", legacy.destination, *args],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, ROOTS_SETTING: f"file://{legacy.old_root}", **(env or {})})


def _sql(database: str, statement: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(database)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def adopted(legacy: Legacy) -> Iterator[Adopted]:
    """mlflow-share on the installation (old-root declared), adopted while it serves."""
    with running_server(legacy.folder, legacy.database, artifacts_uri=legacy.destination,
                        env_extra={ROOTS_SETTING: f"file://{legacy.old_root}"}) as server:
        before = legacy.stored_files()
        dry_run = _adopt(legacy, "--dry-run", "--json")
        rows = _sql(legacy.database, "SELECT COUNT(*) FROM share_artifact_digests")[0][0]
        first = _adopt(legacy, "--json")
        again = _adopt(legacy, "--json")
        yield Adopted(server, before, dry_run, rows, first, again)


@pytest.fixture
def admin(adopted: Adopted, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The stock client, as the org admin, on the adopted server."""
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", adopted.server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    mlflow.set_tracking_uri(adopted.server.url)
    yield MlflowClient(adopted.server.url)
    mlflow.set_tracking_uri(None)


def _get(server: ShareServer, key: str) -> requests.Response:
    return server.api("GET", f"{ARTIFACTS}/{key}", auth=server.admin_auth())


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def test_dry_run_counts_then_adoption_records_and_a_rerun_skips_all(
        adopted: Adopted, legacy: Legacy) -> None:
    expected = adopted.before
    total = sum(len(data) for data in expected.values())
    assert adopted.dry_run.returncode == 0, adopted.dry_run.stderr
    counted = json.loads(adopted.dry_run.stdout)
    assert (counted["dry_run"], counted["files"], counted["bytes"], counted["skipped"]) == \
        (True, len(expected), total, 0)
    assert adopted.rows_after_dry_run == 0  # a dry run writes nothing

    assert adopted.first.returncode == 0, adopted.first.stderr
    recorded = json.loads(adopted.first.stdout)
    assert (recorded["files"], recorded["bytes"], recorded["failed"], recorded["refused"]) == \
        (len(expected), total, 0, 0)
    assert "Hashing" in adopted.first.stderr  # the progress bar, on stderr
    rows = {path: (size, sha, origin, seq) for path, size, sha, origin, seq in _sql(
        legacy.database, "SELECT path, size, sha256, origin, audit_seq "
                         "FROM share_artifact_digests")}
    for key, data in expected.items():
        size, sha, origin, seq = rows[key]
        assert (size, sha, origin) == (len(data), hashlib.sha256(data).hexdigest(), "adoption")
    # Each batch is one audit event naming its files, by the operator who ran the command.
    events = _sql(legacy.database, "SELECT seq, action, principal, details FROM "
                                   "share_audit_events WHERE action = 'artifact.adopt'")
    listed = {}
    for seq, _, principal, details in events:
        assert principal.startswith("system:")
        for change in json.loads(details)["changes"]:
            assert change["origin"] == "adoption"
            listed.update({f["path"]: (f["size"], f["sha256"], seq) for f in change["files"]})
    assert {key: (rows[key][0], rows[key][1], rows[key][3]) for key in expected} == \
        {key: listed[key] for key in expected}

    assert adopted.again.returncode == 0, adopted.again.stderr
    rerun = json.loads(adopted.again.stdout)
    assert (rerun["files"], rerun["skipped"], rerun["skipped_bytes"]) == \
        (0, len(expected), total)


def test_adopted_artifacts_download_verified_and_a_changed_byte_is_data_loss(
        adopted: Adopted, legacy: Legacy, admin: Any, tmp_path: Path) -> None:
    import mlflow

    run = legacy.runs["proxied"]
    experiment = admin.get_run(run).info.experiment_id
    key = f"{experiment}/{run}/artifacts/model/model.onnx"
    fetched = _get(adopted.server, key)
    assert fetched.status_code == 200 and fetched.content == MODEL_FILES["model.onnx"]
    assert fetched.headers["X-MLflow-Share-Integrity"] == "verified"
    local = mlflow.artifacts.download_artifacts(run_id=run, artifact_path="model",
                                                dst_path=str(tmp_path / "model"))
    assert (Path(local) / "model.onnx").read_bytes() == MODEL_FILES["model.onnx"]
    big = f"{experiment}/{run}/artifacts/big/big.bin"
    with requests.get(adopted.server.url + f"{ARTIFACTS}/{big}", stream=True, timeout=60,
                      auth=adopted.server.admin_auth()) as response:
        assert response.status_code == 200
        assert hashlib.sha256(response.content).digest() == hashlib.sha256(BIG).digest()
    # A byte changed after adoption: refused on every way down.
    _flip_last_byte(legacy.artifacts / key)
    refused = _get(adopted.server, key)
    assert refused.status_code == 500, refused.text
    assert refused.json()["error_code"] == "DATA_LOSS"
    assert "model.onnx" in refused.json()["message"]
    assert "recorded on adoption" in refused.json()["message"]
    with pytest.raises(Exception, match=r"model\.onnx|Failed to download"):  # MLflow's words
        mlflow.artifacts.download_artifacts(run_id=run, artifact_path="model",
                                            dst_path=str(tmp_path / "again"))
    assert not (tmp_path / "again" / "model" / "model.onnx").exists()
    # A changed file does not become trusted by adopting again: the digest stays.
    again = json.loads(_adopt(legacy, "--json").stdout)
    assert again["files"] == 0
    assert _get(adopted.server, key).status_code == 500


def _manifest(server: ShareServer, name: str, version: str) -> dict[str, Any]:
    response = server.api("GET", f"{SHARE}/model-versions/manifest", auth=server.admin_auth(),
                          params={"name": name, "version": version})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_registration_from_the_server_root_names_adopted_sources(
        adopted: Adopted, legacy: Legacy, admin: Any) -> None:
    run = legacy.runs["proxied"]
    admin.create_registered_model("adopted-proxied")
    version = admin.create_model_version("adopted-proxied", f"runs:/{run}/big", run_id=run)
    assert version.status == "READY", version.status_message
    meta = _manifest(adopted.server, "adopted-proxied", version.version)["manifest"]
    assert meta["predicate"]["mlflow"]["adopted_sources"] == ["big.bin"]


def test_registration_copies_from_a_declared_root(adopted: Adopted, legacy: Legacy,
                                                  admin: Any, tmp_path: Path) -> None:
    from mlflow_share_client import download_verified

    run = legacy.runs["old"]
    admin.create_registered_model("from-old-root")
    version = admin.create_model_version("from-old-root", f"runs:/{run}/model", run_id=run)
    assert version.status == "READY", version.status_message
    location = admin.get_model_version_download_uri("from-old-root", version.version)
    assert location.startswith("mlflow-artifacts:/models/")  # copied to the server's root
    copy = legacy.artifacts / location[len("mlflow-artifacts:/"):]
    assert {p.relative_to(copy).as_posix(): p.read_bytes()
            for p in copy.rglob("*") if p.is_file()} == MODEL_FILES
    record = _manifest(adopted.server, "from-old-root", version.version)
    resources = {r["name"]: (r["size"], r["digest"])
                 for r in record["manifest"]["predicate"]["resources"]}
    assert resources == {k: (len(v), hashlib.sha256(v).hexdigest())
                         for k, v in MODEL_FILES.items()}
    assert record["manifest"]["predicate"]["mlflow"]["adopted_sources"] == sorted(MODEL_FILES)
    local = download_verified(f"models:/from-old-root/{version.version}", str(tmp_path))
    assert (Path(local) / "model.onnx").read_bytes() == MODEL_FILES["model.onnx"]
    # A logged model stored there, by its models:/ URI, and a file:// source (admins only).
    by_model = admin.create_model_version("from-old-root", f"models:/{legacy.logged_model}",
                                          model_id=legacy.logged_model)
    assert by_model.status == "READY", by_model.status_message
    by_path = admin.create_model_version(
        "from-old-root", f"file://{legacy.old_root}/{run}/artifacts/model/sub", run_id=run)
    assert by_path.status == "READY", by_path.status_message
    assert [r["name"] for r in _manifest(adopted.server, "from-old-root", by_path.version)[
        "manifest"]["predicate"]["resources"]] == ["config.json"]


def test_sources_outside_the_declared_roots_stay_refused(adopted: Adopted, legacy: Legacy,
                                                         admin: Any) -> None:
    from mlflow.exceptions import MlflowException

    run = legacy.runs["other"]  # its experiment's root was never declared
    admin.create_registered_model("from-elsewhere")
    for source in (f"runs:/{run}/model", f"file://{legacy.elsewhere}/{run}/artifacts/model"):
        with pytest.raises(MlflowException) as refused:
            admin.create_model_version("from-elsewhere", source, run_id=run)
        assert refused.value.error_code == "INVALID_PARAMETER_VALUE", source
        assert "not stored on this server's artifact root" in refused.value.message
        assert str(legacy.elsewhere) not in refused.value.message.replace(source, "")
    # Out of the declared root by a path, and by a symbolic link inside it.
    old_run = legacy.runs["old"]
    (legacy.old_root / "escape").symlink_to(legacy.elsewhere)
    for source, run_id in ((f"file://{legacy.old_root}/{old_run}/artifacts/../../../elsewhere",
                            old_run),
                           (f"file://{legacy.old_root}/escape/{run}/artifacts/model", run)):
        with pytest.raises(MlflowException) as refused:
            admin.create_model_version("from-elsewhere", source, run_id=run_id)
        assert refused.value.error_code == "INVALID_PARAMETER_VALUE", source
        assert ("link" if "escape" in source else "Invalid model version source") in \
            refused.value.message
    assert not (legacy.artifacts / "models").exists() or not any(
        "from-elsewhere" in str(p) for p in (legacy.artifacts / "models").rglob("*"))


def test_a_byte_changed_in_a_declared_root_after_adoption_refuses_registration(
        adopted: Adopted, legacy: Legacy, admin: Any) -> None:
    from mlflow.exceptions import MlflowException

    run = legacy.runs["old"]
    _flip_last_byte(legacy.old_root / run / "artifacts" / "model2" / "model.onnx")
    admin.create_registered_model("changed-old-root")
    with pytest.raises(MlflowException) as refused:
        admin.create_model_version("changed-old-root", f"runs:/{run}/model2", run_id=run)
    assert refused.value.error_code == "DATA_LOSS"
    message = refused.value.message
    assert "model.onnx" in message and "recorded on adoption" in message
    assert hashlib.sha256(MODEL_FILES["model.onnx"]).hexdigest() in message
    assert str(legacy.old_root) not in message
    assert admin.get_model_version("changed-old-root", "1").status == "FAILED_REGISTRATION"
    location = admin.get_model_version_download_uri("changed-old-root", "1")
    assert location.startswith("mlflow-artifacts:/models/")
    assert not (legacy.artifacts / location[len("mlflow-artifacts:/"):]).exists()  # no half copy


def test_without_the_setting_the_declared_root_is_refused_as_before(
        adopted: Adopted, legacy: Legacy, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with running_server(legacy.folder / "undeclared", legacy.database,
                        artifacts_uri=legacy.destination) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        client = MlflowClient(server.url)
        client.create_registered_model("undeclared")
        run = legacy.runs["old"]
        with pytest.raises(MlflowException) as refused:
            client.create_model_version("undeclared", f"runs:/{run}/model", run_id=run)
        assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "not stored on this server's artifact root" in refused.value.message


def test_a_team_registers_its_adopted_old_run_as_the_stock_client_sends_it(
        adopted: Adopted, legacy: Legacy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Once the old experiment is adopted by a team, its engineer registers the run with
    `mlflow.register_model("runs:/RUN/model")`: for a run that logged no model the stock
    client sends the run's stored location (file:///old-root/...), allowed as a folder of the
    request's own run; another run's location stays refused."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlflow_share.adopt.owners import PlanOptions, Rule, apply_plan, make_plan

    server = adopted.server
    server.admin("POST", "/teams", json={"name": "legacy-team"})
    server.admin("POST", "/users", json={"name": "leg", "password": "leg-password-for-tests"})
    server.admin("POST", "/teams/members",
                 json={"team": "legacy-team", "user": "leg", "role": "engineer"})
    engine = sa.create_engine(legacy.database)
    try:
        plan = make_plan(engine, PlanOptions(rules=(Rule.parse("experiment:old=legacy-team"),),
                                             default_experiment="admins-only"))
        apply_plan(engine, plan.text, by="test")
    finally:
        engine.dispose()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "leg")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "leg-password-for-tests")
    mlflow.set_tracking_uri(server.url)
    try:
        run = legacy.runs["old"]
        version = mlflow.register_model(f"runs:/{run}/model", "legacy-team-model")
        assert version.status == "READY", version.status_message
        with pytest.raises(MlflowException) as refused:  # not the request's own run
            mlflow.MlflowClient().create_model_version(
                "legacy-team-model", f"file://{legacy.old_root}/{legacy.runs['other']}"
                "/artifacts/model", run_id=run)
        assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
    finally:
        mlflow.set_tracking_uri(None)


def test_adoption_cli_errors_are_one_line(legacy: Legacy, tmp_path: Path) -> None:
    bad_setting = _adopt(legacy, "--dry-run", env={ROOTS_SETTING: "http://example.com/x"})
    assert bad_setting.returncode == 1
    assert bad_setting.stderr.strip().splitlines() == [
        f"Error: Invalid mlflow-share settings: {ROOTS_SETTING} must list file:///path or "
        "s3://bucket/prefix URIs ('http://example.com/x' is not one), got "
        "'http://example.com/x'."]
    overlap = _adopt(legacy, "--dry-run", "--root", f"file://{legacy.artifacts}/1")
    assert overlap.returncode == 2 and "overlaps the server's artifact root" in overlap.stderr
    nowhere = subprocess.run(
        [*_adopt_command(), "--backend-store-uri", f"sqlite:///{tmp_path / 'none.db'}",
         "--artifacts-destination", f"checksum+file://{tmp_path}"],
        capture_output=True, text=True, timeout=120)
    assert nowhere.returncode == 1 and nowhere.stderr.startswith("Error: No database at")
    assert not (tmp_path / "none.db").exists()


# -- S3 -------------------------------------------------------------------------------------
BUCKET = "adopt-artifacts"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
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


def test_s3_roots_are_adopted_downloads_checked_and_registration_copies_them(
        s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    env = {**AWS, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
           ROOTS_SETTING: f"s3://{BUCKET}/old-root"}
    destination = f"checksum+s3://{BUCKET}/root"
    with running_server(tmp_path, artifacts_uri=destination, env_extra=env) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        client = MlflowClient(server.url)
        experiment = client.create_experiment("s3-legacy")
        # Objects stored before mlflow-share, in its root and in the declared one.
        for name, data in MODEL_FILES.items():
            s3.put_object(Bucket=BUCKET, Key=f"root/{experiment}/legacy/model/{name}", Body=data)
            s3.put_object(Bucket=BUCKET, Key=f"old-root/model/{name}", Body=data)
        adopt = [*_adopt_command(), "--backend-store-uri", server.backend_uri,
                 "--artifacts-destination", destination, "--json"]
        run_env = {**os.environ, **env}
        dry = subprocess.run([*adopt, "--dry-run"], capture_output=True, text=True,
                             env=run_env, timeout=300)
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["files"] == 2 * len(MODEL_FILES)
        done = subprocess.run(adopt, capture_output=True, text=True, env=run_env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["files"] == 2 * len(MODEL_FILES)
        rows = dict(_sql(server.backend_uri, "SELECT path, origin FROM share_artifact_digests"))
        assert rows[f"{experiment}/legacy/model/model.onnx"] == "adoption"
        assert rows[f"s3://{BUCKET}/old-root/model/model.onnx"] == "adoption"

        key = f"{experiment}/legacy/model/model.onnx"
        fetched = _get(server, key)
        assert fetched.status_code == 200 and fetched.content == MODEL_FILES["model.onnx"]
        assert fetched.headers["X-MLflow-Share-Integrity"] == "verified"
        changed = MODEL_FILES["model.onnx"][:-1] + bytes([MODEL_FILES["model.onnx"][-1] ^ 1])
        s3.put_object(Bucket=BUCKET, Key=f"root/{key}", Body=changed)
        refused = _get(server, key)
        assert refused.status_code == 500 and refused.json()["error_code"] == "DATA_LOSS"

        client.create_registered_model("from-s3")
        version = client.create_model_version("from-s3", f"s3://{BUCKET}/old-root/model")
        assert version.status == "READY", version.status_message
        location = client.get_model_version_download_uri("from-s3", version.version)
        prefix = "root/" + location[len("mlflow-artifacts:/"):] + "/"
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        assert {o["Key"][len(prefix):]: s3.get_object(Bucket=BUCKET, Key=o["Key"])[
            "Body"].read() for o in listed} == MODEL_FILES
        s3.put_object(Bucket=BUCKET, Key="old-root/model/model.onnx", Body=changed)
        with pytest.raises(MlflowException) as caught:
            client.create_model_version("from-s3", f"s3://{BUCKET}/old-root/model")
        assert caught.value.error_code == "DATA_LOSS"
        assert "model.onnx" in caught.value.message
