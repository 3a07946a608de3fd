"""OpenSSF Model Signing signatures made from recorded digests (artifacts/oms.py) are the ones
the model_signing library makes from the files, and are checked the way it checks them; the
signing settings; what a registered version's folder must hold (artifacts/registered_folder)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import pytest

from mlflow_share import config
from mlflow_share.artifacts import oms, registered_folder
from mlflow_share.errors import DataLoss, InvalidInput

FILES = {"MLmodel": b"flavors: {}\n", "model.onnx": os.urandom(70_000),
         "sub/config.json": b'{"a": 1}', ".gitignore": b"*.pyc\n"}


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    for relative, data in FILES.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return folder


def _digests() -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in FILES.items()}


def _keys(tmp_path: Path, name: str = "k", curve: str = "P-256") -> tuple[oms.SigningKeys, Path]:
    private, public = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub"
    oms.generate_key(private, public, curve)
    return oms.SigningKeys.load(private.read_bytes()), public


def _statement(bundle_text: str) -> dict[str, object]:
    payload = json.loads(bundle_text)["dsseEnvelope"]["payload"]
    return dict(json.loads(base64.b64decode(payload)))


def test_signature_from_digests_is_the_librarys_signature_of_the_folder(tmp_path: Path) -> None:
    from model_signing import hashing, signing, verifying

    keys, public = _keys(tmp_path)
    folder = _folder(tmp_path)
    ours = oms.sign(keys, "model", sorted(_digests().items()))
    # The library, hashing the files itself, nothing ignored (a download delivers them all).
    theirs = tmp_path / "theirs.sig"
    signing.Config().use_elliptic_key_signer(private_key=tmp_path / "k.pem").set_hashing_config(
        hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=False)
    ).sign(folder, theirs)
    assert _statement(ours.text) == _statement(theirs.read_text())
    assert ours.key_id == json.loads(theirs.read_text())["verificationMaterial"]["publicKey"][
        "hint"] == hashlib.sha256(public.read_bytes()).hexdigest()
    # Each verifies as the other would be verified.
    (tmp_path / "ours.sig").write_text(ours.text)
    verifying.Config().use_elliptic_key_verifier(public_key=public).set_hashing_config(
        hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=False)
    ).verify(folder, tmp_path / "ours.sig")
    assert oms.check(keys, theirs.read_text(), _digests(), "the folder") == keys.current


@pytest.mark.parametrize("curve", ["P-384", "P-521"])
def test_other_curves_sign_and_verify(tmp_path: Path, curve: str) -> None:
    keys, _ = _keys(tmp_path, curve=curve)
    bundle = oms.sign(keys, "m/1", _digests().items())
    assert oms.check(keys, bundle.text, _digests(), "m/1") == keys.current


@pytest.mark.parametrize(("change", "named"), [
    (lambda d: d.update({"model.onnx": "0" * 64}), "model.onnx: expected SHA-256"),
    (lambda d: d.pop("sub/config.json"), "sub/config.json: signed but missing"),
    (lambda d: d.update({"evil.py": "1" * 64}), "evil.py: not signed"),
])
def test_check_names_each_difference(tmp_path: Path, change, named: str) -> None:  # type: ignore[no-untyped-def]
    keys, _ = _keys(tmp_path)
    bundle = oms.sign(keys, "m/1", _digests().items())
    actual = _digests()
    change(actual)
    with pytest.raises(DataLoss, match=named):
        oms.check(keys, bundle.text, actual, "m/1")


def test_untrusted_key_and_altered_bundle_are_refused(tmp_path: Path) -> None:
    keys, _ = _keys(tmp_path, "a")
    other, _ = _keys(tmp_path, "b")
    bundle = oms.sign(keys, "m/1", _digests().items())
    with pytest.raises(DataLoss, match="does not trust"):
        oms.check(other, bundle.text, _digests(), "m/1")
    # A payload changed after signing (a digest swapped for the bytes an attacker holds).
    document = json.loads(bundle.text)
    statement = _statement(bundle.text)
    statement["predicate"]["resources"][0]["digest"] = "0" * 64  # type: ignore[index]
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(DataLoss, match="does not verify"):
        oms.check(keys, json.dumps(document), _digests(), "m/1")
    # The other key's signature, with this key's hint written in.
    forged = json.loads(oms.sign(other, "m/1", _digests().items()).text)
    forged["verificationMaterial"]["publicKey"]["hint"] = keys.current
    with pytest.raises(DataLoss, match="does not verify"):
        oms.check(keys, json.dumps(forged), _digests(), "m/1")


def _options(**values: str) -> config.Options:
    return config.parse_options({f"MLFLOW_SHARE_{k.upper()}": v for k, v in values.items()})


def test_keys_from_settings_file_pem_and_older_public_keys(tmp_path: Path) -> None:
    current, _ = _keys(tmp_path, "new")
    older, older_public = _keys(tmp_path, "old")
    (tmp_path / "retired").mkdir()
    (tmp_path / "retired" / "old.pub").write_bytes(older_public.read_bytes())
    from_file = oms.SigningKeys.from_options(_options(
        signing_key=str(tmp_path / "new.pem"), signing_public_keys=str(tmp_path / "retired")))
    assert from_file.current == current.current
    assert list(from_file.public) == [current.current, older.current]  # current first
    from_pem = oms.SigningKeys.from_options(_options(
        signing_key_pem=(tmp_path / "new.pem").read_text()))
    assert from_pem.current == current.current
    verify_only = oms.SigningKeys.from_options(_options(
        signing_public_keys=str(older_public)))
    assert verify_only.current is None and verify_only.configured
    assert not oms.SigningKeys.from_options(_options()).configured


def test_bad_signing_settings_are_refused_naming_the_setting(tmp_path: Path) -> None:
    from mlflow_share.audit.verify import generate_key

    generate_key(tmp_path / "ed.pem", tmp_path / "ed.pub")
    _keys(tmp_path, "ec")
    with pytest.raises(InvalidInput, match="not an ECDSA key.*Ed25519 keys sign audit"):
        oms.SigningKeys.from_options(_options(signing_key=str(tmp_path / "ed.pem")))
    with pytest.raises(InvalidInput, match="not both"):
        oms.SigningKeys.from_options(_options(signing_key=str(tmp_path / "ec.pem"),
                                              signing_key_pem=(tmp_path / "ec.pem").read_text()))
    with pytest.raises(InvalidInput, match="MLFLOW_SHARE_SIGNING_KEY: cannot read"):
        oms.SigningKeys.from_options(_options(signing_key=str(tmp_path / "absent.pem")))
    with pytest.raises(InvalidInput, match="MLFLOW_SHARE_SIGNING_PUBLIC_KEYS: no PEM"):
        oms.SigningKeys.from_options(_options(signing_public_keys=str(tmp_path / "ec.pem")))
    with pytest.raises(InvalidInput, match="not an unencrypted PEM"):
        oms.SigningKeys.from_options(_options(signing_key_pem="not a key"))


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    oms.generate_key(tmp_path / "k.pem", tmp_path / "k.pub")
    with pytest.raises(FileExistsError):
        oms.generate_key(tmp_path / "k.pem", tmp_path / "other.pub")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600


# -- what a registered version's folder must hold ---------------------------------------------
EXPECTED = registered_folder.Expected("Model 'm' version 1", frozenset(
    {"MLmodel", "model.onnx", "sub/config.json", "sub/deep/w.bin"}))


@pytest.mark.parametrize(("inside", "entries", "stored_as", "message"), [
    ("", [("MLmodel", False), ("model.onnx", False), ("sub", True)], "folder", None),
    ("sub", [("config.json", False), ("deep", True)], "folder", None),
    ("", [("MLmodel", False), ("sub", True)], "folder", "missing from storage: model.onnx"),
    ("", [("MLmodel", False), ("model.onnx", False)], "folder",
     "missing from storage: sub/config.json, sub/deep/w.bin"),
    ("", [("MLmodel", False), ("model.onnx", False), ("sub", True), ("evil.py", False)],
     "folder", "stored but not in its manifest: evil.py"),
    ("sub", [("config.json", False), ("deep", True), ("x", True)], "folder",
     "stored but not in its manifest: sub/x/"),
    ("", [("MLmodel", True), ("model.onnx", False), ("sub", True)], "folder",
     "missing from storage: MLmodel; stored but not in its manifest: MLmodel/"),
    ("sub/deep", [], "nothing", "missing from storage: sub/deep/w.bin"),
    ("model.onnx", [], "file", None),
    ("model.onnx", [], "folder", "missing from storage: model.onnx"),
    ("model.onnx", [], "nothing", "missing from storage: model.onnx"),
    ("elsewhere", [], "nothing", None),
])
def test_listing_a_registered_folder_reports_missing_and_extra_files(
        inside: str, entries: list[tuple[str, bool]], stored_as: str,
        message: str | None) -> None:
    if message is None:
        registered_folder.check_listing(EXPECTED, inside, entries, stored_as)
        return
    with pytest.raises(DataLoss, match=message.replace(".", r"\.")) as caught:
        registered_folder.check_listing(EXPECTED, inside, entries, stored_as)
    assert caught.value.message.startswith("Model 'm' version 1 does not match its manifest")


def test_folder_downloads_compare_every_file_and_locate_versions() -> None:
    registered_folder.check_files(EXPECTED, "sub", ["sub/config.json", "sub/deep/w.bin"])
    with pytest.raises(DataLoss, match="missing from storage: sub/deep/w.bin; stored but not "
                                       r"in its manifest: sub/deep/x\.bin"):
        registered_folder.check_files(EXPECTED, "sub", ["sub/config.json", "sub/deep/x.bin"])
    assert registered_folder.locate("models/abc/3/sub/x") == ("models/abc/3", "sub/x")
    assert registered_folder.locate("models/abc/3") == ("models/abc/3", "")
    assert registered_folder.locate("models/abc") is None
    assert registered_folder.locate("1/run/artifacts/models/abc/3") is None
    lost = registered_folder.missing_file(EXPECTED, "MLmodel")
    assert lost is not None and "listed in its manifest but missing" in lost.message
    assert registered_folder.missing_file(EXPECTED, "other") is None
