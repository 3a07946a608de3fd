"""OpenSSF Model Signing signatures against real servers: the stock client downloads a version,
``mlflow-share signature`` fetches its signature, and the ``model_signing`` command checks the
download with the public key (then refuses it after any change); key rotation; versions from
before a key; the client package and the gateway refusing a bad signature; a registered
version's missing or extra files failing the stock client's download with DATA_LOSS.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import requests
import sqlalchemy as sa

from tests.conftest import ShareServer, populate, running_server

pytestmark = pytest.mark.integration
API = "/api/2.0/mlflow"
SHARE = "/api/2.0/mlflow-share"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
FILES = {"MLmodel": b"flavors: {}\n", "model.onnx": os.urandom(80_000),
         "sub/config.json": b'{"a": 1}', "sub/deep/vocab.txt": b"a\nb\n"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two ECDSA key pairs made by `mlflow-share signing keygen`: a (P-256) and b (P-384)."""
    folder = tmp_path_factory.mktemp("keys")
    for name, curve in (("a", "P-256"), ("b", "P-384")):
        made = _share("signing", "keygen", "--private", str(folder / f"{name}.pem"),
                      "--public", str(folder / f"{name}.pub"), "--curve", curve)
        assert made.returncode == 0, made.stderr
    return {name: folder / name for name in ("a", "b")}


def _pem(keys: dict[str, Path], name: str) -> str:
    return str(keys[name]) + ".pem"


def _pub(keys: dict[str, Path], name: str) -> str:
    return str(keys[name]) + ".pub"


def _key_id(public: str) -> str:
    import hashlib

    return hashlib.sha256(Path(public).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def signed_server(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]
                  ) -> Iterator[ShareServer]:
    with running_server(tmp_path_factory.mktemp("signed"),
                        env_extra={"MLFLOW_SHARE_SIGNING_KEY": _pem(keys, "a")}) as server:
        populate(server)
        yield server


def _share(*args: str, server: ShareServer | None = None, token: str | None = None,
           admin: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    if server is not None:
        env["MLFLOW_TRACKING_URI"] = server.url
    if token:
        env["MLFLOW_TRACKING_TOKEN"] = token
    if admin and server is not None:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = server.admin_auth()
    return subprocess.run([sys.executable, "-m", "mlflow_share.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def _model_signing_verify(folder: Path, signature: Path, public: str,
                          *extra: str) -> subprocess.CompletedProcess[str]:
    """The model_signing project's own command, as a verifier outside mlflow-share runs it."""
    return subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", str(folder),
                           "--signature", str(signature), "--public_key", public, *extra],
                          capture_output=True, text=True, timeout=300)


@contextmanager
def _as(server: ShareServer, user: str) -> Iterator[None]:
    """The stock client, as ``user`` of ``server`` (environment restored afterwards)."""
    import mlflow

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
             "MLFLOW_TRACKING_PASSWORD")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ.pop(name, None)
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    if user == "admin":
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = \
            server.admin_auth()
    else:
        os.environ["MLFLOW_TRACKING_TOKEN"] = server.tokens[user]
    mlflow.set_tracking_uri(server.url)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        mlflow.set_tracking_uri(None)


def _register(server: ShareServer, name: str, files: dict[str, bytes], tmp: Path,
              user: str = "alice") -> str:
    """Log ``files`` as ``model/`` of a new run with the stock client and register them."""
    from mlflow import MlflowClient

    with _as(server, user):
        client = MlflowClient()
        experiment = client.get_experiment_by_name(f"oms-{name}")
        experiment_id = (experiment.experiment_id if experiment is not None else
                         client.create_experiment(f"oms-{name}"))
        run = client.create_run(experiment_id)
        local = tmp / f"logged-{name}-{run.info.run_id}"
        for relative, data in files.items():
            (local / relative).parent.mkdir(parents=True, exist_ok=True)
            (local / relative).write_bytes(data)
        client.log_artifacts(run.info.run_id, str(local), "model")
        try:
            client.get_registered_model(name)
        except Exception:  # noqa: BLE001 - any refusal: it does not exist yet
            client.create_registered_model(name)
        version = client.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                              run_id=run.info.run_id)
    assert version.status == "READY"
    return str(version.version)


def _download(server: ShareServer, uri: str, folder: Path, user: str = "alice") -> Path:
    import mlflow

    folder.mkdir(parents=True)
    with _as(server, user):
        return Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(folder)))


def _sql(server: ShareServer, statement: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(server.backend_uri)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


def _version_folder(server: ShareServer, name: str, version: str) -> Path:
    uri = server.api("GET", f"{API}/model-versions/get-download-uri", auth=server.admin_auth(),
                     params={"name": name, "version": version}).json()["artifact_uri"]
    folder = server.artifacts / uri[len("mlflow-artifacts:/"):]
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)  # registered copies are read-only
    return folder


def _tamper(folder: Path, kind: str) -> str:
    """Change a downloaded (or stored) version; returns the file a verifier must name."""
    if kind == "flip":
        data = bytearray((folder / "model.onnx").read_bytes())
        data[4321] ^= 0x10
        (folder / "model.onnx").write_bytes(bytes(data))
        return "model.onnx"
    if kind == "truncate":
        (folder / "sub" / "config.json").write_bytes(b'{"a": 1')
        return "sub/config.json"
    if kind == "add":
        (folder / "sub" / "deep" / "extra.py").write_text("import os\n")
        return "sub/deep/extra.py"
    assert kind == "delete"
    (folder / "sub" / "deep" / "vocab.txt").unlink()
    return "sub/deep/vocab.txt"


# -- 1. the ecosystem's verifier checks a stock download ------------------------------------
def test_model_signing_verifies_a_stock_download_and_refuses_every_change(
        signed_server: ShareServer, keys: dict[str, Path], tmp_path: Path) -> None:
    version = _register(signed_server, "oms-plain", FILES, tmp_path)
    downloaded = _download(signed_server, f"models:/oms-plain/{version}", tmp_path / "dl")
    assert sorted(p.relative_to(downloaded).as_posix() for p in downloaded.rglob("*")
                  if p.is_file()) == sorted(FILES)
    signature = tmp_path / "model.sig"
    fetched = _share("signature", f"models:/oms-plain/{version}", "-o", str(signature),
                     server=signed_server, token=signed_server.tokens["ava"])  # a viewer
    assert fetched.returncode == 0, fetched.stderr
    assert f"signed by key {_key_id(_pub(keys, 'a'))}" in fetched.stderr
    bundle = json.loads(signature.read_text())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"

    good = _model_signing_verify(downloaded, signature, _pub(keys, "a"))
    assert good.returncode == 0 and "Verification succeeded" in good.stdout, good.stderr
    wrong_key = _model_signing_verify(downloaded, signature, _pub(keys, "b"))
    assert wrong_key.returncode == 1
    for kind in ("flip", "truncate", "add", "delete"):
        copy = tmp_path / f"copy-{kind}"
        shutil.copytree(downloaded, copy)
        named = _tamper(copy, kind)
        refused = _model_signing_verify(copy, signature, _pub(keys, "a"))
        assert refused.returncode == 1, (kind, refused.stdout)
        assert named in refused.stderr, (kind, refused.stderr)

    # The public keys are published to anyone; the stored signature names the same key.
    published = requests.get(signed_server.url + f"{SHARE}/signing/keys", timeout=30).json()
    assert published["current_key_id"] == _key_id(_pub(keys, "a"))
    assert published["keys"][0]["public_key"] == Path(_pub(keys, "a")).read_text()
    assert bundle["verificationMaterial"]["publicKey"]["hint"] == published["current_key_id"]
    # Registration recorded the signature in the version's audit event.
    details = _sql(signed_server, "SELECT details FROM share_audit_events WHERE details LIKE "
                                  "'%model_version.manifest%' ORDER BY seq DESC LIMIT 1")[0][0]
    change = json.loads(details)["changes"][0]
    assert change["op"] == "model_version.manifest" and change["version"] == int(version)
    assert change["signing_key"] == published["current_key_id"]
    # mlflow-share's own check names the key; --key checks that key's signature.
    checked = _share("verify", f"models:/oms-plain/{version}", "--key", _pub(keys, "a"),
                     server=signed_server, token=signed_server.tokens["alice"])
    assert checked.returncode == 0, checked.stderr
    assert f"signed by key {published['current_key_id']}" in checked.stdout
    other = _share("verify", f"models:/oms-plain/{version}", "--key", _pub(keys, "b"),
                   server=signed_server, token=signed_server.tokens["alice"])
    assert other.returncode == 1 and "no signature by the given key" in other.stderr
    # Who may not read the version may not fetch its signature.
    denied = signed_server.api("GET", f"{SHARE}/model-versions/signature",
                               token=signed_server.tokens["carl"],
                               params={"name": "oms-plain", "version": version})
    assert denied.status_code == 403 and denied.json()["error_code"] == "PERMISSION_DENIED"


def test_a_version_with_git_files_verifies_without_ignoring_them(
        signed_server: ShareServer, keys: dict[str, Path], tmp_path: Path) -> None:
    version = _register(signed_server, "oms-git", {**FILES, ".gitignore": b"*.pyc\n"}, tmp_path)
    downloaded = _download(signed_server, f"models:/oms-git/{version}", tmp_path / "dl")
    signature = tmp_path / "model.sig"
    fetched = _share("signature", f"models:/oms-git/{version}", "-o", str(signature),
                     server=signed_server, token=signed_server.tokens["alice"])
    assert "--no-ignore-git-paths" in fetched.stderr  # it says how to check this one
    # Every delivered file is signed, .gitignore too: model_signing's default skips it and
    # then finds it missing; told not to skip git files, it verifies (and checks it).
    assert _model_signing_verify(downloaded, signature, _pub(keys, "a")).returncode == 1
    exact = _model_signing_verify(downloaded, signature, _pub(keys, "a"),
                                  "--no-ignore-git-paths")
    assert exact.returncode == 0, exact.stderr
    (downloaded / ".gitignore").write_text("changed\n")
    assert _model_signing_verify(downloaded, signature, _pub(keys, "a"),
                                 "--no-ignore-git-paths").returncode == 1


# -- 2. the client package and the gateway check the same bundle -------------------------------
def _forged(bundle_text: str) -> str:
    """The bundle with one signed digest changed after signing (its signature no longer fits)."""
    document = json.loads(bundle_text)
    statement = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(document)


def test_client_package_checks_the_signature(signed_server: ShareServer, keys: dict[str, Path],
                                             tmp_path: Path) -> None:
    from mlflow_share_client import IntegrityError, download_verified

    version = _register(signed_server, "oms-client", FILES, tmp_path)
    uri = f"models:/oms-client/{version}"
    with _as(signed_server, "alice"):
        with_published = download_verified(uri, str(tmp_path / "a"))  # the server's key
        assert (Path(with_published) / "model.onnx").read_bytes() == FILES["model.onnx"]
        pinned = download_verified(uri, str(tmp_path / "b"), public_key=_pub(keys, "a"),
                                   signature="required")
        assert (Path(pinned) / "sub/deep/vocab.txt").read_bytes() == FILES["sub/deep/vocab.txt"]
        with pytest.raises(IntegrityError, match="no signature to check by key"):
            download_verified(uri, str(tmp_path / "c"), public_key=_pub(keys, "b"))
        row = _sql(signed_server, "SELECT model_id, bundle FROM share_model_signatures s JOIN "
                                  "share_model_manifests m USING (model_id, version) "
                                  "WHERE m.name = 'oms-client'")[0]
        _sql(signed_server, "UPDATE share_model_signatures SET bundle = :b WHERE model_id = :m",
             b=_forged(row.bundle), m=row.model_id)
        (tmp_path / "d").mkdir()
        with pytest.raises(IntegrityError, match="does not verify"):
            download_verified(uri, str(tmp_path / "d"))
        assert not list((tmp_path / "d").iterdir())  # nothing of it left behind
        with pytest.raises(IntegrityError, match="does not verify"):
            download_verified(uri, str(tmp_path / "d"), public_key=_pub(keys, "a"))
        digests_only = download_verified(uri, str(tmp_path / "e"), signature="off")
        assert (Path(digests_only) / "MLmodel").read_bytes() == FILES["MLmodel"]


def test_gateway_checks_the_signature_once_per_load(signed_server: ShareServer,
                                                    keys: dict[str, Path],
                                                    tmp_path: Path) -> None:
    from tests.integration.test_gateway import ONNX_MLMODEL, X, World, _call, _gateway, _onnx

    world = World(signed_server, "oms-gateway")
    body = {"inputs": X[:4].tolist()}
    files = {"model.onnx": _onnx(), "MLmodel": ONNX_MLMODEL}
    good, forged, unsigned = world.register(files), world.register(files), world.register(files)
    model_id = _sql(signed_server, "SELECT model_id FROM share_model_manifests WHERE "
                                   "name = :n LIMIT 1", n=world.name)[0][0]
    bundle = _sql(signed_server, "SELECT bundle FROM share_model_signatures WHERE model_id = :m "
                                 "AND version = :v", m=model_id, v=int(forged))[0][0]
    _sql(signed_server, "UPDATE share_model_signatures SET bundle = :b WHERE model_id = :m AND "
                        "version = :v", b=_forged(bundle), m=model_id, v=int(forged))
    _sql(signed_server, "DELETE FROM share_model_signatures WHERE model_id = :m AND "
                        "version = :v", m=model_id, v=int(unsigned))
    # A gateway that can verify but not sign: the unsigned version is refused too.
    with _gateway(signed_server, tmp_path,
                  MLFLOW_SHARE_SIGNING_PUBLIC_KEYS=_pub(keys, "a")) as url:
        served = _call(url, signed_server, "alice", f"{world.name}/versions/{good}", body)
        assert served.status_code == 200, served.text
        expected = np.asarray(served.json()["predictions"]["label"])
        assert expected.shape == (4,)
        refused = _call(url, signed_server, "alice", f"{world.name}/versions/{forged}", body)
        assert refused.status_code == 500 and refused.json()["error_code"] == "DATA_LOSS"
        assert "signature" in refused.json()["message"] and "does not verify" in \
            refused.json()["message"]
        missing = _call(url, signed_server, "alice", f"{world.name}/versions/{unsigned}", body)
        assert missing.status_code == 500 and "no signature by a trusted key" in \
            missing.json()["message"]
    # Even one that holds the signing key does not sign what it was asked to verify (that
    # would vouch for bytes changed in the database and storage): an admin signs it.
    with _gateway(signed_server, tmp_path, MLFLOW_SHARE_SIGNING_KEY=_pem(keys, "a")) as url:
        refused_too = _call(url, signed_server, "alice", f"{world.name}/versions/{unsigned}",
                            body)
        assert refused_too.status_code == 500 and "no signature by a trusted key" in \
            refused_too.json()["message"]
        assert _sql(signed_server, "SELECT count(*) FROM share_model_signatures WHERE "
                                   "model_id = :m AND version = :v", m=model_id,
                    v=int(unsigned))[0][0] == 0
        by_admin = signed_server.api("GET", f"{SHARE}/model-versions/signature",
                                     auth=signed_server.admin_auth(),
                                     params={"name": world.name, "version": unsigned})
        assert by_admin.status_code == 200, by_admin.text
        deadline = time.monotonic() + 60  # a refused load is retried after a short pause
        while (signed_now := _call(url, signed_server, "alice",
                                   f"{world.name}/versions/{unsigned}", body)).status_code != 200:
            assert time.monotonic() < deadline, signed_now.text
            time.sleep(0.5)
        still = _call(url, signed_server, "alice", f"{world.name}/versions/{forged}", body)
        assert still.status_code == 500 and "does not verify" in still.json()["message"]


# -- 3. rotation, and versions registered before any key -------------------------------------
def _fetch(server: ShareServer, uri: str, out: Path, *extra: str, admin: bool = False) -> str:
    fetched = _share("signature", uri, "-o", str(out), *extra, server=server,
                     **({"admin": True} if admin else {"token": server.tokens["alice"]}))
    assert fetched.returncode == 0, fetched.stderr
    return str(json.loads(out.read_text())["verificationMaterial"]["publicKey"]["hint"])


def test_versions_before_a_key_and_across_a_rotation_keep_verifying(
        keys: dict[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "server"
    a, b = _key_id(_pub(keys, "a")), _key_id(_pub(keys, "b"))
    with running_server(home) as server:  # no signing key yet
        populate(server)
        tokens = dict(server.tokens)
        v1 = _register(server, "oms-rotate", FILES, tmp_path)
        v2 = _register(server, "oms-rotate", {**FILES, "MLmodel": b"flavors: {x: 1}\n"},
                       tmp_path)
        none = server.api("GET", f"{SHARE}/model-versions/signature", token=tokens["alice"],
                          params={"name": "oms-rotate", "version": v1})
        assert none.status_code == 404 and "no signing key" in none.json()["message"]
        identity = _sql(server, "SELECT identity FROM share_model_manifests ORDER BY version")

    with running_server(home, env_extra={"MLFLOW_SHARE_SIGNING_KEY": _pem(keys, "a")}) as server:
        server.tokens = tokens
        # v1: a reader's fetch does not sign it; an org admin's does, and its identity does
        # not change.
        unsigned = _share("signature", f"models:/oms-rotate/{v1}", "-o",
                          str(tmp_path / "v1.sig"), server=server, token=tokens["alice"])
        assert unsigned.returncode == 1 and "no signature by a key" in unsigned.stderr
        assert _fetch(server, f"models:/oms-rotate/{v1}", tmp_path / "v1.sig", admin=True) == a
        downloaded = _download(server, f"models:/oms-rotate/{v1}", tmp_path / "v1")
        assert _model_signing_verify(downloaded, tmp_path / "v1.sig",
                                     _pub(keys, "a")).returncode == 0
        # v2 by the command (org admins only).
        assert _share("signature", "sign-existing", server=server,
                      token=tokens["alice"]).returncode == 1  # 403
        signed = _share("signature", "sign-existing", server=server, admin=True)
        assert signed.returncode == 0, signed.stderr
        assert "Signed 1;" in signed.stdout and "0 versions have no signature" in signed.stdout
        assert _sql(server, "SELECT identity FROM share_model_manifests ORDER BY version") == \
            identity
        assert _sql(server, "SELECT key_id FROM share_model_signatures ORDER BY version") == \
            [(a,), (a,)]
        # One audit event each (the first of a request is the request's own event).
        events = _sql(server, "SELECT details FROM share_audit_events WHERE details LIKE "
                              "'%model_version.sign%' ORDER BY seq")
        signed_versions = [change["version"] for (details,) in events
                           for change in json.loads(details)["changes"]
                           if change["op"] == "model_version.sign"]
        assert signed_versions == [int(v1), int(v2)]

    # Rotation: b signs from now on; a's public key stays trusted.
    env = {"MLFLOW_SHARE_SIGNING_KEY": _pem(keys, "b"),
           "MLFLOW_SHARE_SIGNING_PUBLIC_KEYS": _pub(keys, "a")}
    with running_server(home, env_extra=env) as server:
        server.tokens = tokens
        v3 = _register(server, "oms-rotate", {**FILES, "MLmodel": b"flavors: {y: 2}\n"},
                       tmp_path)
        published = requests.get(server.url + f"{SHARE}/signing/keys", timeout=30).json()
        assert [(k["key_id"], k["current"]) for k in published["keys"]] == [(b, True),
                                                                            (a, False)]
        assert _fetch(server, f"models:/oms-rotate/{v1}", tmp_path / "v1-after.sig") == a
        assert _fetch(server, f"models:/oms-rotate/{v3}", tmp_path / "v3.sig") == b
        v3_folder = _download(server, f"models:/oms-rotate/{v3}", tmp_path / "v3")
        assert _model_signing_verify(v3_folder, tmp_path / "v3.sig",
                                     _pub(keys, "b")).returncode == 0
        assert _model_signing_verify(v3_folder, tmp_path / "v3.sig",
                                     _pub(keys, "a")).returncode == 1
        assert _model_signing_verify(downloaded, tmp_path / "v1-after.sig",
                                     _pub(keys, "a")).returncode == 0
        nothing = _share("signature", "sign-existing", server=server, admin=True)
        assert "Signed 0;" in nothing.stdout  # v1, v2 carry a trusted signature already

    # a retired: its signatures stay fetchable by key id; the versions get b's signature.
    with running_server(home, env_extra={"MLFLOW_SHARE_SIGNING_KEY": _pem(keys, "b")}) as server:
        server.tokens = tokens
        assert _fetch(server, f"models:/oms-rotate/{v1}", tmp_path / "v1-old.sig",
                      "--key-id", a) == a
        assert _model_signing_verify(downloaded, tmp_path / "v1-old.sig",
                                     _pub(keys, "a")).returncode == 0
        resigned = _share("signature", "sign-existing", server=server, admin=True)
        assert "Signed 2;" in resigned.stdout, resigned.stdout + resigned.stderr
        assert _fetch(server, f"models:/oms-rotate/{v1}", tmp_path / "v1-b.sig") == b
        assert _model_signing_verify(downloaded, tmp_path / "v1-b.sig",
                                     _pub(keys, "b")).returncode == 0


# -- 4. no silent gaps: missing and extra files of a registered version ------------------------
@pytest.mark.parametrize("kind", ["delete", "add", "delete-folder"])
def test_stock_download_of_a_damaged_version_fails_with_data_loss(
        share_server: ShareServer, tmp_path: Path, kind: str, unique: str) -> None:
    from mlflow.exceptions import MlflowException

    name = f"gap-{kind}-{unique}"
    version = _register(share_server, name, FILES, tmp_path)
    folder = _version_folder(share_server, name, version)
    if kind == "delete-folder":
        shutil.rmtree(folder / "sub" / "deep")
        named = "sub/deep/vocab.txt"
    else:
        named = _tamper(folder, kind)
    location = folder.relative_to(share_server.artifacts).as_posix()
    listed = location + ("/sub" if kind == "delete-folder" else "/sub/deep")
    with pytest.raises((MlflowException, requests.HTTPError)) as caught:
        _download(share_server, f"models:/{name}/{version}", tmp_path / "stock")
    # The stock client retries a 500 and then says only that (with the URL it listed); the
    # answer it got was DATA_LOSS naming the file, as the request's audit event records.
    assert "500" in str(caught.value) and quote(listed, safe="") in str(caught.value)
    audited = _sql(share_server, "SELECT status, details FROM share_audit_events WHERE route "
                                 "= :r ORDER BY seq DESC LIMIT 1",
                   r="/api/2.0/mlflow-artifacts/artifacts")
    assert audited[0][0] == 500 and named in json.loads(audited[0][1])["integrity"]
    # The listing itself says it, in MLflow's envelope, on both API prefixes.
    for prefix in ("/api/2.0", "/ajax-api/2.0"):
        listing = share_server.api("GET", f"{prefix}/mlflow-artifacts/artifacts",
                                   token=share_server.tokens["alice"], params={"path": listed})
        assert listing.status_code == 500, listing.text
        assert listing.json()["error_code"] == "DATA_LOSS" and named in listing.json()["message"]


def test_every_download_route_answers_damage_in_mlflows_envelope(
        share_server: ShareServer, tmp_path: Path, unique: str) -> None:
    _check_download_routes(share_server, tmp_path, unique)


def test_the_same_answers_under_waitress(tmp_path: Path, unique: str) -> None:
    with running_server(tmp_path / "waitress", extra=("waitress",)) as server:
        populate(server)
        _check_download_routes(server, tmp_path, unique)


def _check_download_routes(share_server: ShareServer, tmp_path: Path, unique: str) -> None:
    name = f"routes-{unique}"
    version = _register(share_server, name, FILES, tmp_path)
    run_id = share_server.api("GET", f"{API}/model-versions/get", auth=share_server.admin_auth(),
                              params={"name": name, "version": version}
                              ).json()["model_version"]["run_id"]
    folder = _version_folder(share_server, name, version)
    location = folder.relative_to(share_server.artifacts).as_posix()
    token = share_server.tokens["alice"]

    def registry(path: str) -> requests.Response:
        return share_server.api("GET", "/model-versions/get-artifact", token=token,
                                params={"name": name, "version": version, "path": path})

    # A folder of an intact version: MLflow's own 400, not a bare 500.
    as_folder = registry("sub")
    assert as_folder.status_code == 400 and as_folder.json()["error_code"] == \
        "INVALID_PARAMETER_VALUE"
    (folder / "sub" / "deep" / "vocab.txt").unlink()
    (folder / "MLmodel").unlink()
    (folder / "MLmodel").mkdir()  # a listed file turned into a folder
    for path, named in (("sub/deep/vocab.txt", "sub/deep/vocab.txt"), ("sub", "vocab.txt"),
                        ("sub/deep", "vocab.txt"), ("MLmodel", "MLmodel")):
        answer = registry(path)
        assert answer.status_code == 500, (path, answer.text)
        assert answer.json()["error_code"] == "DATA_LOSS", (path, answer.text)
        assert named in answer.json()["message"], (path, answer.text)
    proxied = share_server.api("GET", f"{ARTIFACTS}/{location}/sub/deep/vocab.txt", token=token)
    assert proxied.status_code == 500 and proxied.json()["error_code"] == "DATA_LOSS"
    assert "missing from storage" in proxied.json()["message"]
    # The run's own files are not the registered copy: untouched, they still download.
    source = share_server.api("GET", "/get-artifact", token=token,
                              params={"run_id": run_id, "path": "model/sub/deep/vocab.txt"})
    assert source.status_code == 200 and source.content == FILES["sub/deep/vocab.txt"]
