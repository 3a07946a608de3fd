"""Download a registered version and check every file against its manifest before use.

The manifest is fetched from the server (``/api/2.0/mlflow-share/model-versions/manifest``);
the check recomputes, on this machine, the SHA-256 of each downloaded file, the manifest's
digest and the version's identity, so a server-side byte swap, a swapped manifest or a
changed file in transit is caught here too. The encoding below must stay byte-identical to
``mlflow_share.artifacts.manifest`` (the client cannot import the server package).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

_MODEL_URI = re.compile(r"models:/([^/@]+)(?:/(\d+)|@([A-Za-z0-9_-]+))/?")
_CHUNK = 1024 * 1024


class IntegrityError(Exception):
    """The downloaded files do not match the version's manifest (nothing is left on disk)."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _resolve(model_uri: str) -> tuple[str, str]:
    from mlflow import MlflowClient

    match = _MODEL_URI.fullmatch(model_uri)
    if match is None:
        raise ValueError(f"{model_uri!r} is not models:/NAME/VERSION or models:/NAME@ALIAS.")
    name, version, alias = match.groups()
    if alias is not None:
        version = MlflowClient().get_model_version_by_alias(name, alias).version
    return name, str(version)


def _creds() -> Any:
    import mlflow
    from mlflow.utils.credentials import get_default_host_creds

    return get_default_host_creds(mlflow.get_tracking_uri())


def fetch_manifest(name: str, version: str) -> dict[str, Any]:
    """The server's manifest record of a version (needs read access to the model)."""
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    endpoint = "/api/2.0/mlflow-share/model-versions/manifest"
    response = http_request(_creds(), endpoint, "GET", params={"name": name, "version": version})
    verify_rest_response(response, endpoint)
    return dict(response.json())


def _listing(creds: Any, location: str) -> list[str]:
    """Every file the server stores under the version's location (to find extra files)."""
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    endpoint = "/api/2.0/mlflow-artifacts/artifacts"
    found, pending = [], [""]
    while pending:
        folder = pending.pop()
        path = f"{location}/{folder}".rstrip("/")
        response = http_request(creds, endpoint, "GET", params={"path": path})
        verify_rest_response(response, endpoint)
        for item in response.json().get("files", []):
            relative = f"{folder}/{item['path']}".lstrip("/")
            (pending if item.get("is_dir") else found).append(relative)
    return sorted(found)


def _fetch(creds: Any, location: str, relative: str, target: Path) -> tuple[int, str] | str:
    """Download one file, hashing it as it is written; the server's refusal as a string."""
    from mlflow.utils.rest_utils import http_request

    endpoint = f"/api/2.0/mlflow-artifacts/artifacts/{location}/{relative}"
    response = http_request(creds, endpoint, "GET", stream=True, max_retries=0,
                            raise_on_status=False)
    with response:
        if response.status_code != 200:
            try:
                return str(response.json().get("message", response.status_code))
            except ValueError:
                return f"HTTP {response.status_code}"
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with open(target, "wb") as out:
            for chunk in response.iter_content(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


def check_record(record: dict[str, Any]) -> list[str]:
    """Recompute the manifest digest and the identity; the problems found."""
    statement = record["manifest"]
    problems = []
    manifest_sha256 = _sha256(_canonical(statement))
    if manifest_sha256 != record["manifest_sha256"]:
        problems.append("The manifest does not match its digest.")
    meta = statement["predicate"]["mlflow"]
    identity = _sha256(_canonical({"manifest": manifest_sha256, "params": meta["params_sha256"],
                                   "run_id": meta["run_id"]}))
    if identity != record["identity"]:
        problems.append("The version's identity does not match its manifest.")
    return problems


def _check_signature(record: dict[str, Any], public_key: str | Path) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    signature = record.get("signature")
    if not signature:
        raise IntegrityError("The manifest is not signed.", {"ok": False})
    key = load_pem_public_key(Path(public_key).read_bytes())
    try:
        key.verify(base64.b64decode(signature), _canonical(record["manifest"]))  # type: ignore[union-attr,call-arg]
    except InvalidSignature:
        raise IntegrityError("The manifest's signature does not verify.", {"ok": False}) from None


def download_verified(model_uri: str, dst_path: str | None = None, *,
                      public_key: str | Path | None = None) -> str:
    """Download ``models:/NAME/VERSION`` (or ``@ALIAS``), check it, return the local folder.

    Each file of the manifest is fetched from the version's registered copy and hashed as it
    is written. Raises ``IntegrityError`` (and removes what it downloaded) if any file is
    missing, extra or changed, or the manifest does not match its digest, identity or
    ``public_key``.
    """
    name, version = _resolve(model_uri)
    record = fetch_manifest(name, version)
    if public_key is not None:
        _check_signature(record, public_key)
    creds = _creds()
    location = record["location"]
    expected = {r["name"]: (int(r["size"]), r["digest"])
                for r in record["manifest"]["predicate"]["resources"]}
    report: dict[str, Any] = {"identity": record["identity"], "missing": [], "changed": [],
                              "problems": check_record(record)}
    unsafe = [n for n in expected if n.startswith("/") or "\\" in n
              or any(part in ("", ".", "..") for part in n.split("/"))]
    if unsafe:  # a manifest must never make us write outside the download folder
        raise IntegrityError(f"The manifest names unsafe paths: {unsafe}", {"ok": False})
    report["extra"] = sorted(set(_listing(creds, location)) - set(expected))
    if dst_path is not None:
        Path(dst_path).mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(dir=dst_path))
    try:
        for relative, (size, sha) in sorted(expected.items()):
            got = _fetch(creds, location, relative, target / relative)
            if isinstance(got, str):
                bucket = "missing" if "No such artifact" in got else "changed"
                report[bucket].append(relative if bucket == "missing" else
                                      {"path": relative, "error": got})
            elif got != (size, sha):
                report["changed"].append({"path": relative, "expected_sha256": sha,
                                          "actual_sha256": got[1]})
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    report["ok"] = not (report["missing"] or report["extra"] or report["changed"]
                        or report["problems"])
    if not report["ok"]:
        shutil.rmtree(target, ignore_errors=True)
        bad = report["missing"] + report["extra"] + [c["path"] for c in report["changed"]]
        raise IntegrityError(
            f"models:/{name}/{version} does not match its manifest: "
            + "; ".join(report["problems"] + [f"bad file {path}" for path in bad]), report)
    return str(target)
