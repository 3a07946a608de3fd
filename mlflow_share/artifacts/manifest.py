"""Model version manifests and the immutable identity of a version.

A manifest lists every file of a registered version (relative path, size, SHA-256) in the
layout of the OpenSSF model-signing format (an in-toto v1 statement whose predicate lists the
resources and how they were hashed). Its digest is the SHA-256 of its canonical JSON encoding
(sorted keys, no spaces, UTF-8). A version's identity binds the bytes to where they came from:

    identity = SHA-256( canonical JSON {"manifest": <manifest sha256>,
                                        "params": <SHA-256 of the run's params, sorted>,
                                        "run_id": <run ID or "">} )

With ``MLFLOW_SHARE_MANIFEST_KEY`` (an Ed25519 private key in PEM, ``mlflow-share audit
keygen`` makes one) the canonical statement is signed too.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from mlflow_share import config

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
IDENTITY_TAG = "mlflow_share.identity"
MANIFEST_TAG = "mlflow_share.manifest_sha256"
RESERVED_TAG_PREFIX = "mlflow_share."


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def params_digest(params: dict[str, str]) -> str:
    return sha256_hex(canonical(sorted(params.items())))


def build_statement(name: str, version: int, files: list[tuple[str, int, str]], *,
                    run_id: str | None, params_sha256: str, source: str,
                    unverified_sources: list[str] | None = None,
                    adopted_sources: list[str] | None = None) -> dict[str, Any]:
    """The manifest: an in-toto statement over the version's files (possibly none: a logged
    model without files, such as an externally hosted model, registers with an empty list).

    ``unverified_sources`` names files copied from sources with no recorded digest (stored
    before mlflow-share): their digests are of the bytes as read at registration.
    ``adopted_sources`` names files whose source digest was trusted on adoption (hashed as
    found in storage by ``mlflow-share adopt artifacts``), and matched at registration.
    """
    resources = [{"name": path, "size": size, "digest": digest, "algorithm": "sha256"}
                 for path, size, digest in sorted(files)]
    root = sha256_hex(canonical(resources))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"{name}/{version}", "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256",
                              "allow_symlinks": False, "ignore_paths": []},
            "resources": resources,
            "mlflow": {"run_id": run_id or "", "params_sha256": params_sha256,
                       "source": source,
                       **({"unverified_sources": sorted(unverified_sources)}
                          if unverified_sources else {}),
                       **({"adopted_sources": sorted(adopted_sources)}
                          if adopted_sources else {})},
        },
    }


def statement_digest(statement: dict[str, Any]) -> str:
    return sha256_hex(canonical(statement))


def identity(manifest_sha256: str, run_id: str | None, params_sha256: str) -> str:
    return sha256_hex(canonical({"manifest": manifest_sha256, "params": params_sha256,
                                 "run_id": run_id or ""}))


def resources(statement: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """``{relative path: (size, sha256)}`` of a manifest."""
    return {str(r["name"]): (int(r["size"]), str(r["digest"]))
            for r in statement["predicate"]["resources"]}


def sign(statement: dict[str, Any]) -> str | None:
    """Base64 Ed25519 signature of the canonical statement, if a key is configured."""
    key_path = config.options().manifest_key
    if not key_path:
        return None
    from mlflow_share.audit.verify import _load_private_key

    key = _load_private_key(Path(key_path))
    return base64.b64encode(key.sign(canonical(statement))).decode()


def check_signature(statement: dict[str, Any], signature: str, public_key_path: Path) -> bool:
    from cryptography.exceptions import InvalidSignature

    from mlflow_share.audit.verify import _load_public_key

    try:
        _load_public_key(public_key_path).verify(base64.b64decode(signature),
                                                 canonical(statement))
        return True
    except (InvalidSignature, ValueError):
        return False
