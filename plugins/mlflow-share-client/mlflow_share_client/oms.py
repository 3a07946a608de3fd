"""Checking a version's OpenSSF Model Signing (OMS) signature with the ``model_signing``
library (the ``signatures`` extra): the same sigstore bundle ``model_signing verify key``
checks, verified with a trusted ECDSA public key, then compared file by file with the SHA-256
digests the download computed (no second pass over the bytes).

A key is named by its key id: the SHA-256 (hex) of its public key in PEM, the hint
``model_signing`` writes into every bundle it signs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast


class SignatureError(Exception):
    """The bundle does not verify with a trusted key, or signs other files."""


class _Source:
    """What ``model_signing`` reads key and bundle files through, from memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read_bytes(self) -> bytes:
        return self._data

    def read_text(self, encoding: str = "utf-8") -> str:
        return self._data.decode(encoding)


def require_library() -> None:
    """Raise ImportError (saying what to install) unless signatures can be checked here."""
    _library()


def _library() -> Any:
    try:
        from model_signing._signing import sign_ec_key, sign_sigstore_pb
    except ImportError:
        raise ImportError("Checking signatures needs the model_signing library: pip install "
                          "'mlflow-share-client[signatures]'.") from None
    return sign_ec_key, sign_sigstore_pb


def public_key_pem(path: str | Path) -> bytes | None:
    """The normalised PEM of an ECDSA public key file (``None``: another kind of key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except ValueError:
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return None
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(pem: bytes) -> str:
    return hashlib.sha256(pem).hexdigest()


def check(bundle_text: str, trusted: Mapping[str, bytes], files: Mapping[str, str]) -> str:
    """Verify ``bundle_text`` with the trusted key it names (``trusted``: key id -> PEM) and
    that it signs exactly ``files`` (``{relative path: sha256 hex}``); the key id.

    Raises:
        SignatureError: untrusted key, a signature that does not verify, or other files.
    """
    from cryptography.exceptions import InvalidSignature

    sign_ec_key, sign_sigstore_pb = _library()
    try:
        hint = json.loads(bundle_text)["verificationMaterial"]["publicKey"]["hint"]
    except (ValueError, KeyError, TypeError):
        hint = None
    if hint not in trusted:
        raise SignatureError(f"The signature names key {hint or '(none)'}, which is not a "
                             f"trusted key ({', '.join(sorted(trusted)) or 'none'}).")
    try:
        signature = sign_sigstore_pb.Signature.read(cast(Path, _Source(bundle_text.encode())))
        verifier = sign_ec_key.Verifier(cast(Path, _Source(trusted[hint])))
        signed = verifier.verify(signature)
    except (InvalidSignature, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureError(f"The signature does not verify with key {hint} "
                             f"({type(exc).__name__}).") from None
    serialization = signed.serialization_type
    if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256":
        raise SignatureError("The signature is not a per-file SHA-256 signature.")
    listed = {str(r.identifier): r.digest.digest_hex for r in signed.resource_descriptors()
              if r.digest.algorithm == "sha256"}
    if len(listed) != len(list(signed.resource_descriptors())):
        raise SignatureError("The signature lists files hashed with another algorithm.")
    differences = [f"{p}: not signed" for p in sorted(set(files) - set(listed))]
    differences += [f"{p}: signed but missing" for p in sorted(set(listed) - set(files))]
    differences += [f"{p}: expected SHA-256 {listed[p]}, actual {files[p]}"
                    for p in sorted(set(files) & set(listed)) if files[p] != listed[p]]
    if differences:
        raise SignatureError(f"The files do not match the signature (key {hint}): "
                             + "; ".join(differences))
    return str(hint)
