"""Download a registered version and check every file against its manifest before use.

The manifest is fetched from the server (``/api/2.0/mlflow-share/model-versions/manifest``);
the check recomputes, on this machine, the SHA-256 of each downloaded file, the manifest's
digest and the version's identity, so a server-side byte swap, a swapped manifest or a
changed file in transit is caught here too. The encoding below must stay byte-identical to
``mlflow_share.artifacts.manifest`` (the client cannot import the server package).

The version's OpenSSF Model Signing signature (``model-versions/signature``; the bundle
``model_signing verify key`` checks) is verified too, with ``public_key`` or a key the server
publishes (``signing/keys``), against the digests the download computed: a server (or
database) that swapped files *and* their manifest cannot forge it without the signing key.
Pass ``public_key``, obtained out of band, to check independently of the server.
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
_RETRIED = frozenset({408, 429, 502, 503, 504})


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


class _ServerDataLoss(Exception):
    """The server reported DATA_LOSS (its message names the files)."""


def _get(creds: Any, endpoint: str, params: dict[str, str]) -> Any:
    """A GET answered as JSON; DATA_LOSS as ``_ServerDataLoss``, other errors as MLflow's."""
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    # Transient failures are retried as MLflow retries them, but not a 500: DATA_LOSS will
    # not heal, and its message (which names the files) is what the caller needs.
    response = http_request(creds, endpoint, "GET", params=params, retry_codes=_RETRIED,
                            raise_on_status=False)
    if response.status_code == 500:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if isinstance(body, dict) and body.get("error_code") == "DATA_LOSS":
            raise _ServerDataLoss(str(body.get("message", "")))
    verify_rest_response(response, endpoint)
    return response.json()


def fetch_signature(name: str, version: str, key_id: str | None = None) -> dict[str, Any]:
    """The version's OMS signature record (``bundle``: the sigstore bundle text, ``key_id``);
    needs read access to the model."""
    params = {"name": name, "version": version, **({"key_id": key_id} if key_id else {})}
    return dict(_get(_creds(), "/api/2.0/mlflow-share/model-versions/signature", params))


def published_keys() -> dict[str, bytes]:
    """The public keys the server publishes, by key id (none from a server that predates
    signatures)."""
    from mlflow.exceptions import MlflowException

    try:
        data = _get(_creds(), "/api/2.0/mlflow-share/signing/keys", {})
    except MlflowException as exc:
        if exc.error_code == "ENDPOINT_NOT_FOUND":
            return {}
        raise
    return {str(k["key_id"]): str(k["public_key"]).encode() for k in data.get("keys", [])}


def _listing(creds: Any, location: str) -> list[str]:
    """Every file the server stores under the version's location (to find extra files)."""
    endpoint = "/api/2.0/mlflow-artifacts/artifacts"
    found: list[str] = []
    pending = [""]
    while pending:
        folder = pending.pop()
        path = f"{location}/{folder}".rstrip("/")
        data = _get(creds, endpoint, {"path": path})
        for item in data.get("files", []):
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


def _trusted_keys(public_key: str | Path | None, mode: str) -> dict[str, bytes] | None:
    """The keys an OMS signature must verify with: ``public_key`` if it is an ECDSA key, else
    the server's published ones; ``None``: no OMS check (``mode`` off, or auto and the server
    publishes none)."""
    from mlflow_share_client import oms

    if mode == "off":
        return None
    if public_key is not None:
        pem = oms.public_key_pem(public_key)
        if pem is not None:
            return {oms.key_id(pem): pem}
    keys = published_keys()
    if not keys and mode == "required":
        raise IntegrityError("The server publishes no signing key: the version cannot carry "
                             "a signature to check.", {"ok": False})
    return keys or None


def _is_ed25519(public_key: str | Path) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return isinstance(load_pem_public_key(Path(public_key).read_bytes()), Ed25519PublicKey)
    except ValueError:
        return False


def _signature_or_refusal(name: str, version: str, key_id: str | None) -> dict[str, Any]:
    """The version's signature (by ``key_id``, if pinned); a missing one is refused."""
    from mlflow.exceptions import MlflowException

    try:
        return fetch_signature(name, version, key_id)
    except (MlflowException, _ServerDataLoss) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise IntegrityError(f"models:/{name}/{version} has no signature to check"
                             + (f" by key {key_id}" if key_id else "") + f": {message}",
                             {"ok": False}) from None


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
                      public_key: str | Path | None = None, signature: str = "auto") -> str:
    """Download ``models:/NAME/VERSION`` (or ``@ALIAS``), check it, return the local folder.

    Each file of the manifest is fetched from the version's registered copy and hashed as it
    is written. Raises ``IntegrityError`` (and removes what it downloaded) if any file is
    missing, extra or changed, or the manifest does not match its digest or identity, or the
    version's OpenSSF Model Signing signature does not verify or signs other files.

    Args:
        model_uri: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.
        dst_path: folder to download into (a new temporary folder by default).
        public_key: PEM file of the key the version must be signed with: ECDSA (its OMS
            signature; without it, the keys the server publishes are trusted) or Ed25519
            (the older manifest signature, ``MLFLOW_SHARE_MANIFEST_KEY``).
        signature: ``auto`` checks the OMS signature when the server publishes signing keys
            or ``public_key`` is ECDSA; ``required`` refuses a version without one; ``off``
            checks digests only. Checking needs the ``signatures`` extra.

    Raises:
        IntegrityError: any mismatch (nothing is left on disk).
        ValueError: a malformed ``model_uri`` or ``signature``.
    """
    if signature not in ("auto", "required", "off"):
        raise ValueError("signature is 'auto', 'required' or 'off'.")
    if public_key is not None:
        from mlflow_share_client import oms

        if oms.public_key_pem(public_key) is None and not _is_ed25519(public_key):
            raise ValueError(f"{public_key} is neither an ECDSA nor an Ed25519 public key (PEM).")
    name, version = _resolve(model_uri)
    record = fetch_manifest(name, version)
    if public_key is not None and _is_ed25519(public_key):
        _check_signature(record, public_key)
    trusted = _trusted_keys(public_key, signature)
    bundle = None
    if trusted is not None:
        from mlflow_share_client import oms

        oms.require_library()  # before any byte is downloaded
        pinned = next(iter(trusted)) if public_key is not None and len(trusted) == 1 else None
        bundle = _signature_or_refusal(name, version, pinned)
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
    try:
        report["extra"] = sorted(set(_listing(creds, location)) - set(expected))
    except _ServerDataLoss as exc:  # the server names the missing or extra files itself
        raise IntegrityError(f"models:/{name}/{version}: {exc}", {**report, "ok": False}) \
            from None
    if dst_path is not None:
        Path(dst_path).mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(dir=dst_path))
    downloaded: dict[str, str] = {}
    try:
        for relative, (size, sha) in sorted(expected.items()):
            got = _fetch(creds, location, relative, target / relative)
            if isinstance(got, str):
                missing = "No such artifact" in got or "missing from storage" in got
                bucket = "missing" if missing else "changed"
                report[bucket].append(relative if bucket == "missing" else
                                      {"path": relative, "error": got})
                continue
            downloaded[relative] = got[1]
            if got != (size, sha):
                report["changed"].append({"path": relative, "expected_sha256": sha,
                                          "actual_sha256": got[1]})
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    if bundle is not None and trusted is not None:
        from mlflow_share_client import oms

        try:
            report["signing_key"] = oms.check(bundle["bundle"], trusted, downloaded)
        except oms.SignatureError as exc:
            report["problems"].append(str(exc))
    report["ok"] = not (report["missing"] or report["extra"] or report["changed"]
                        or report["problems"])
    if not report["ok"]:
        shutil.rmtree(target, ignore_errors=True)
        bad = report["missing"] + report["extra"] + [c["path"] for c in report["changed"]]
        raise IntegrityError(
            f"models:/{name}/{version} does not match its manifest: "
            + "; ".join(report["problems"] + [f"bad file {path}" for path in bad]), report)
    return str(target)
