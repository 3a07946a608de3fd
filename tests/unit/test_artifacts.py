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


# -- adoption: digests for files stored before mlflow-share -------------------------------------
def _ledger(tmp_path: Path) -> Ledger:
    uri = f"sqlite:///{tmp_path / 'db.sqlite'}"
    ensure_schema(uri)
    return Ledger(db.get_engine(uri))


def _tree(folder: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)


def _events(ledger: Ledger, action: str) -> list[dict[str, object]]:
    import json

    import sqlalchemy as sa

    from mlflow_share.audit import models as audit_models

    events = audit_models.events
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(events.c.details).where(events.c.action == action)
                            .order_by(events.c.seq)).scalars().all()
    return [json.loads(row) for row in rows]


def test_adoption_records_marked_digests_and_never_replaces_one(tmp_path: Path) -> None:
    from mlflow_share.artifacts.adoption import Adoption
    from mlflow_share.artifacts.roots import server_root

    ledger = _ledger(tmp_path)
    root_uri = f"checksum+file://{tmp_path / 'root'}"
    repo = ChecksumArtifactRepository(root_uri, ledger=ledger, root=root_uri)
    (tmp_path / "up.txt").write_text("uploaded")
    repo.log_artifact(str(tmp_path / "up.txt"), "1/run/artifacts")
    _tree(tmp_path / "root", {"1/old/artifacts/a.bin": b"a" * 5000, "1/old/artifacts/b": b"b"})
    (tmp_path / "root" / "1" / "run" / "artifacts" / "up.txt").write_text("changed later")
    tally = Adoption(ledger).adopt(server_root(root_uri))
    assert (tally.files, tally.bytes, tally.skipped, tally.failed) == (2, 5001, 1, 0)
    adopted = ledger.get("1/old/artifacts/a.bin")
    assert adopted is not None and adopted.adopted and adopted.origin == "adoption"
    assert adopted.sha256 == hashlib.sha256(b"a" * 5000).hexdigest()
    uploaded = ledger.get("1/run/artifacts/up.txt")  # kept: what came in, not what is there
    assert uploaded is not None and not uploaded.adopted
    assert uploaded.sha256 == hashlib.sha256(b"uploaded").hexdigest()
    [event] = _events(ledger, "artifact.adopt")
    assert [f["path"] for f in event["changes"][0]["files"]] == [  # type: ignore[index]
        "1/old/artifacts/a.bin", "1/old/artifacts/b"]
    # Recorded under the chain's lock: a digest that appeared since the listing wins.
    assert ledger.adopt([("1/old/artifacts/b", 9, "0" * 64)], {"op": "artifact.adopt"}) == []
    # A byte changed after adoption is refused like any other, naming the adoption.
    (tmp_path / "root" / "1" / "old" / "artifacts" / "a.bin").write_bytes(b"a" * 4999 + b"x")
    with pytest.raises(DataLoss, match="recorded on adoption"):
        repo.download_artifacts("1/old/artifacts/a.bin", str(tmp_path / "dl"))
    # Uploading over an adopted file records an upload digest again.
    (tmp_path / "b").write_text("new b")
    repo.log_artifact(str(tmp_path / "b"), "1/old/artifacts")
    replaced = ledger.get("1/old/artifacts/b")
    assert replaced is not None and not replaced.adopted


def test_adoption_refuses_links_and_files_planted_among_registered_copies(
        tmp_path: Path) -> None:
    from mlflow_share.artifacts.adoption import Adoption
    from mlflow_share.artifacts.roots import server_root

    ledger = _ledger(tmp_path)
    _tree(tmp_path / "root", {"models/abc/1/evil.py": b"import os", "1/r/artifacts/ok": b"ok",
                              "1/r/artifacts/.mlflow-share-staging.x": b"in flight"})
    (tmp_path / "root" / "1" / "etc").symlink_to("/etc")
    root = server_root(f"checksum+file://{tmp_path / 'root'}")
    survey = Adoption(ledger).survey(root)
    assert (survey.files, survey.refused, survey.failed) == (1, 2, 0)
    tally = Adoption(ledger).adopt(root)
    assert (tally.files, tally.refused) == (1, 2)
    assert any("1/etc" in p and "link" in p for p in tally.problems)
    assert any("models/abc/1/evil.py" in p for p in tally.problems)
    assert ledger.get("models/abc/1/evil.py") is None


def test_an_interrupted_adoption_keeps_its_batches_and_a_rerun_continues(
        tmp_path: Path) -> None:
    from mlflow_share.artifacts.adoption import Adoption, Tally
    from mlflow_share.artifacts.roots import parse

    ledger = _ledger(tmp_path)
    files = {f"runs/r{i:02d}/artifacts/f.bin": os.urandom(1000 + i) for i in range(12)}
    _tree(tmp_path / "old", files)
    root = parse(f"file://{tmp_path / 'old'}")
    seen = []

    def interrupt_after_five(size: int) -> None:
        seen.append(size)
        if len(seen) == 5:
            raise KeyboardInterrupt

    partial = Tally()
    with pytest.raises(KeyboardInterrupt):
        Adoption(ledger, jobs=2, batch_files=2).adopt(root, interrupt_after_five, partial)
    assert partial.files == 4  # two whole batches; the fifth file's batch was not recorded
    assert ledger.recorded(root.ledger_key(k) for k in files) == {
        root.ledger_key(k) for k in sorted(files)[:4]}
    rerun = Adoption(ledger, jobs=2, batch_files=5).adopt(root)
    assert (rerun.files, rerun.skipped) == (8, 4)
    for key, data in files.items():
        digest = ledger.get(f"file://{tmp_path / 'old'}/{key}")
        assert digest is not None and (digest.size, digest.sha256) == (
            len(data), hashlib.sha256(data).hexdigest())
    assert sum(len(e["changes"][0]["files"]) for e in  # type: ignore[index]
               _events(ledger, "artifact.adopt")) == 12


def test_copy_from_a_declared_root_checks_adopted_digests_and_leaves_nothing_on_mismatch(
        tmp_path: Path) -> None:
    from mlflow_share.artifacts.adoption import Adoption
    from mlflow_share.artifacts.roots import parse

    ledger = _ledger(tmp_path)
    root_uri = f"checksum+file://{tmp_path / 'root'}"
    repo = ChecksumArtifactRepository(root_uri, ledger=ledger, root=root_uri)
    files = {"model/MLmodel": b"flavors: {}\n", "model/model.onnx": os.urandom(3000)}
    _tree(tmp_path / "old", files)
    old = parse(f"file://{tmp_path / 'old'}")
    Adoption(ledger).adopt(old)
    copied = repo.copy_verified(sorted(files), "model", "models/m/1", {"op": "copy"}, origin=old)
    assert sorted(copied.files) == sorted(
        (k[len("model/"):], len(v), hashlib.sha256(v).hexdigest()) for k, v in files.items())
    assert sorted(copied.adopted) == ["MLmodel", "model.onnx"] and copied.unverified == []
    assert (tmp_path / "root" / "models" / "m" / "1" / "model.onnx").read_bytes() == \
        files["model/model.onnx"]
    onnx = tmp_path / "old" / "model" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x00")
    with pytest.raises(DataLoss, match="model.onnx.*recorded on adoption") as caught:
        repo.copy_verified(sorted(files), "model", "models/m/2", {"op": "copy"}, origin=old)
    assert str(tmp_path) not in caught.value.message
    assert not (tmp_path / "root" / "models" / "m" / "2").exists()
    assert ledger.get("models/m/2/MLmodel") is None


def test_declared_roots_keep_sources_inside_them() -> None:
    from mlflow_share import config
    from mlflow_share.artifacts.roots import parse, server_root

    old = parse("file:///srv/old-root/")
    assert old.uri == "file:///srv/old-root"
    assert old.key_of("file:///srv/old-root/1/r/artifacts/model/") == "1/r/artifacts/model"
    assert old.key_of("/srv/old-root/1/r") == "1/r"
    assert old.key_of("file:///srv/old-root-2/x") is None
    assert old.key_of("s3://srv/old-root/x") is None
    assert old.ledger_key("1/r/f") == "file:///srv/old-root/1/r/f"
    for unsafe in ("file:///srv/old-root/../etc/passwd", "file:///srv/old-root/1/./x",
                   "file:///srv/old-root/1//x", "file:///srv/old-root/%2e%2e/x",
                   "file:///srv/old-root", "file:///srv/old-root/a;b"):
        with pytest.raises(InvalidInput):
            old.key_of(unsafe)
    bucket = parse("s3://bucket/prefix")
    assert bucket.key_of("s3://bucket/prefix/m/f") == "m/f"
    assert bucket.key_of("s3://other/prefix/m/f") is None
    assert bucket.ledger_key("m/f") == "s3://bucket/prefix/m/f"
    own = server_root("checksum+file:///srv/artifacts")
    assert own.own and own.ledger_key("1/r/f") == "1/r/f"
    assert own.overlaps(parse("file:///srv")) and not own.overlaps(old)
    parsed = config.parse_options({"MLFLOW_SHARE_REGISTRATION_SOURCE_ROOTS":
                                   "file:///srv/old-root/, s3://bucket/prefix"})
    assert parsed.registration_source_roots == ("file:///srv/old-root", "s3://bucket/prefix")
    for bad in ("old-root", "http://x/y", "file://host/x", "file:///a/../b"):
        with pytest.raises(InvalidInput, match="MLFLOW_SHARE_REGISTRATION_SOURCE_ROOTS"):
            config.parse_options({"MLFLOW_SHARE_REGISTRATION_SOURCE_ROOTS": bad})


def test_an_existing_digest_table_gains_the_origin_column(tmp_path: Path) -> None:
    import sqlalchemy as sa

    uri = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = sa.create_engine(uri)
    with engine.begin() as conn:  # the table as mlflow-share created it before adoption
        conn.exec_driver_sql("CREATE TABLE share_artifact_digests (path VARCHAR(1024) NOT NULL "
                             "PRIMARY KEY, size BIGINT NOT NULL, sha256 VARCHAR(64) NOT NULL, "
                             "audit_seq BIGINT, recorded_at BIGINT NOT NULL)")
        conn.exec_driver_sql("INSERT INTO share_artifact_digests VALUES ('1/a', 1, 'ab', NULL, 0)")
    engine.dispose()
    ensure_schema(uri)
    digest = Ledger(db.get_engine(uri)).get("1/a")
    assert digest is not None and digest.origin == "upload" and not digest.adopted
