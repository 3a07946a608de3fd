"""The checksum repository, its ledger and manifests, without a server (SQLite in tmp)."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from mlflow_share import db
from mlflow_share.artifacts import manifest as mf
from mlflow_share.artifacts.ledger import Ledger
from mlflow_share.artifacts.repository import ChecksumArtifactRepository
from mlflow_share.artifacts.serving import digest_header, parse_content_digest
from mlflow_share.db import ensure_schema
from mlflow_share.errors import Conflict, DataLoss, InvalidInput


@pytest.fixture
def repo(tmp_path: Path) -> ChecksumArtifactRepository:
    uri = f"sqlite:///{tmp_path / 'db.sqlite'}"
    ensure_schema(uri)
    root = f"checksum+file://{tmp_path / 'root'}"
    return ChecksumArtifactRepository(root, ledger=Ledger(db.get_engine(uri)), root=root)


def test_content_digest_header() -> None:
    raw = hashlib.sha256(b"abc").digest()
    value = "sha-256=:" + base64.b64encode(raw).decode() + ":"
    assert parse_content_digest(value) == raw.hex()
    assert parse_content_digest("sha-512=:AAAA:, " + value) == raw.hex()
    assert parse_content_digest("sha-512=:AAAA:") is None
    assert parse_content_digest(None) is None
    assert digest_header(raw.hex()) == value
    for bad in ("sha-256=abc", "sha-256=:@@@@:", "sha-256=:AAAA:", "garbage"):
        with pytest.raises(InvalidInput):
            parse_content_digest(bad)


def test_folder_upload_download_and_tampering(repo: ChecksumArtifactRepository,
                                              tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    (source / "sub" / "b.txt").write_text("hello")
    repo.log_artifacts(str(source), "model")
    assert repo.ledger.get("model/sub/b.txt").sha256 == hashlib.sha256(b"hello").hexdigest()
    out = Path(repo.download_artifacts("model", str(tmp_path / "dl")))
    assert (out / "a.bin").read_bytes() == (source / "a.bin").read_bytes()
    stored = tmp_path / "root" / "model" / "a.bin"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 1
    stored.write_bytes(bytes(data))
    with pytest.raises(DataLoss, match="a.bin"):
        repo.download_artifacts("model/a.bin", str(tmp_path / "dl2"))
    assert not (tmp_path / "dl2" / "model" / "a.bin").exists()
    assert repo.get_local_path("model/a.bin") is None


def test_unsafe_paths_and_registered_area(repo: ChecksumArtifactRepository,
                                          tmp_path: Path) -> None:
    for bad in ("../x", "/etc/passwd", "a//b", "a/./b", "a\\b", "file:///etc", "a/%2e%2e/b"):
        with pytest.raises(InvalidInput):
            repo.key(bad)
    (tmp_path / "root").mkdir(exist_ok=True)
    (tmp_path / "root" / "link").symlink_to("/etc")
    with pytest.raises(InvalidInput):
        repo.open_verified("link/hostname")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(Conflict):
        repo.log_artifact(str(tmp_path / "f.txt"), "models/abc/1")
    with pytest.raises(Conflict):
        repo.delete_artifacts("models")


def test_manifest_identity_binds_bytes_run_and_params() -> None:
    files = [("b", 2, "bb"), ("a", 1, "aa")]
    statement = mf.build_statement("m", 1, files, run_id="r1",
                                   params_sha256=mf.params_digest({"x": "1"}), source="s")
    assert [r["name"] for r in statement["predicate"]["resources"]] == ["a", "b"]
    digest = mf.statement_digest(statement)
    base = mf.identity(digest, "r1", mf.params_digest({"x": "1"}))
    assert base != mf.identity(digest, "r2", mf.params_digest({"x": "1"}))
    assert base != mf.identity(digest, "r1", mf.params_digest({"x": "2"}))
    changed = mf.build_statement("m", 1, [("a", 1, "ab"), ("b", 2, "bb")], run_id="r1",
                                 params_sha256=mf.params_digest({"x": "1"}), source="s")
    assert mf.statement_digest(changed) != digest


def test_folder_upload_cannot_reach_registered_copies(repo: ChecksumArtifactRepository,
                                                      tmp_path: Path) -> None:
    planted = tmp_path / "planted" / "models" / "abc" / "1"
    planted.mkdir(parents=True)
    (planted / "MLmodel").write_text("evil")
    with pytest.raises(Conflict):
        repo.log_artifacts(str(tmp_path / "planted"))
    assert not (tmp_path / "root" / "models").exists()


def test_repositories_opened_at_different_folders_never_share_a_key(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'db.sqlite'}"
    ensure_schema(uri)
    ledger = Ledger(db.get_engine(uri))
    (tmp_path / "f.txt").write_text("a")
    run_a = ChecksumArtifactRepository(f"checksum+file:{tmp_path}/root/1/a/artifacts",
                                       ledger=ledger)
    run_b = ChecksumArtifactRepository(f"checksum+file://{tmp_path}/root/1/b/artifacts",
                                       ledger=ledger)
    run_a.log_artifact(str(tmp_path / "f.txt"))
    (tmp_path / "f.txt").write_text("b")
    run_b.log_artifact(str(tmp_path / "f.txt"))
    assert Path(run_a.download_artifacts("f.txt", str(tmp_path / "da"))).read_text() == "a"
    assert Path(run_b.download_artifacts("f.txt", str(tmp_path / "db"))).read_text() == "b"


def test_failed_record_puts_the_previous_file_back(repo: ChecksumArtifactRepository,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "f.txt").write_text("first")
    repo.log_artifact(str(tmp_path / "f.txt"))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("commit failed")

    monkeypatch.setattr(repo.ledger, "_upsert", broken)
    (tmp_path / "f.txt").write_text("second")
    with pytest.raises(RuntimeError):
        repo.log_artifact(str(tmp_path / "f.txt"))
    assert (tmp_path / "root" / "f.txt").read_text() == "first"
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["f.txt"]
    assert Path(repo.download_artifacts("f.txt", str(tmp_path / "dl"))).read_text() == "first"
