"""OpenSSF Model Signing (OMS) signatures, made and checked by the ``model_signing`` library.

A signature is a sigstore bundle whose DSSE envelope carries an in-toto statement listing every
file of a version with its SHA-256 (``files`` serialization, nothing ignored), signed with an
ECDSA key (P-256, P-384 or P-521): what ``model_signing sign key`` writes for the folder a
download delivers, so ``model_signing verify key FOLDER --signature model.sig --public_key
key.pub`` checks it with no mlflow-share code.

Nothing here reads a model's bytes. Registration already computed each file's SHA-256 in the
pass that copied it; the library's manifest is built from those digests (the same items its
own hashing yields for the folder, see ``tests/unit/test_oms.py``), and the library builds the
statement, the DSSE envelope, the signature and the bundle. Checking works the same way: the
library verifies the envelope and returns the signed manifest, which is compared with the
digests the caller computed while it read the files.

A key is named by its *key id*: the SHA-256 (hex) of its public key in PEM, which is the hint
the library writes into every bundle it signs.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

from mlflow_share.errors import DataLoss, InvalidInput

if TYPE_CHECKING:
    from mlflow_share.config import Options

CURVES = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}
_PUBLIC_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----\s*", re.S)
_KEY_FILE_SUFFIXES = (".pem", ".pub")


class _PemSource:
    """What the library's signer, verifier and bundle reader read key and bundle files
    through (``read_bytes``/``read_text``): here the bytes come from a setting or a table, so
    a key given as PEM text never has to be written to disk."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read_bytes(self) -> bytes:
        return self._data

    def read_text(self, encoding: str = "utf-8") -> str:
        return self._data.decode(encoding)


def _as_path(data: bytes) -> Path:
    return cast(Path, _PemSource(data))


def key_id(public_pem: bytes) -> str:
    """The id of a public key: SHA-256 of its SubjectPublicKeyInfo PEM, as bundles hint it."""
    return hashlib.sha256(public_pem).hexdigest()


def _public_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(key.public_bytes(encoding=serialization.Encoding.PEM,
                                  format=serialization.PublicFormat.SubjectPublicKeyInfo))


def _checked_curve(public_key: Any, where: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise InvalidInput(
            f"{where} is not an ECDSA key: OpenSSF Model Signing signs with P-256, P-384 or "
            "P-521 keys (`mlflow-share signing keygen`); Ed25519 keys sign audit checkpoints.")
    if public_key.curve.name not in CURVES.values():
        raise InvalidInput(f"{where} is on curve {public_key.curve.name}; OpenSSF Model Signing "
                           "accepts P-256, P-384 and P-521.")
    return str(public_key.curve.name)


@dataclass(frozen=True)
class PublicKey:
    """A key whose signatures verify: its id, PEM and curve."""

    key_id: str
    pem: bytes
    curve: str
    current: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "public_key": self.pem.decode(), "curve": self.curve,
                "current": self.current}


@dataclass(frozen=True)
class SigningKeys:
    """The key this server signs with (if any) and every public key it trusts: the current
    key's and earlier keys' (``MLFLOW_SHARE_SIGNING_PUBLIC_KEYS``), current first."""

    private_pem: bytes | None = field(default=None, repr=False)
    public: Mapping[str, PublicKey] = field(default_factory=dict)

    @property
    def current(self) -> str | None:
        """The id of the key new signatures are made with (``None``: no signing key)."""
        return next((k.key_id for k in self.public.values() if k.current), None)

    @property
    def configured(self) -> bool:
        """Signatures are made or checked: some key is configured."""
        return bool(self.public)

    @classmethod
    def load(cls, private_pem: bytes | None = None, public_pems: Iterable[bytes] = (), *,
             where: str = "the signing key") -> SigningKeys:
        """Keys from PEM bytes; 400 naming ``where`` for a key that cannot sign OMS bundles.

        Raises:
            InvalidInput: not a PEM key, not ECDSA, or a curve the library refuses.
        """
        from cryptography.hazmat.primitives import serialization

        public: dict[str, PublicKey] = {}
        if private_pem is not None:
            try:
                private = serialization.load_pem_private_key(private_pem, password=None)
            except (ValueError, TypeError):
                raise InvalidInput(f"{where} is not an unencrypted PEM private key.") from None
            curve = _checked_curve(private.public_key(), where)
            pem = _public_pem(private.public_key())
            public[key_id(pem)] = PublicKey(key_id(pem), pem, curve, current=True)
        for block in public_pems:
            try:
                loaded = serialization.load_pem_public_key(block)
            except (ValueError, TypeError):
                raise InvalidInput(f"{where}: a PEM block is not a public key.") from None
            curve = _checked_curve(loaded, where)
            pem = _public_pem(loaded)  # normalised: the id does not depend on line endings
            public.setdefault(key_id(pem), PublicKey(key_id(pem), pem, curve))
        return cls(private_pem, public)

    @classmethod
    def from_options(cls, options: Options) -> SigningKeys:
        """The keys the ``MLFLOW_SHARE_SIGNING_*`` settings name (none: an empty set).

        Raises:
            InvalidInput: both a key file and PEM text, an unreadable file, or a bad key.
        """
        path, pem_text = options.signing_key, options.signing_key_pem
        if path and pem_text:
            raise InvalidInput("Set MLFLOW_SHARE_SIGNING_KEY or MLFLOW_SHARE_SIGNING_KEY_PEM, "
                               "not both.")
        private_pem = pem_text.encode() if pem_text else None
        if path:
            private_pem = _read(Path(path), "MLFLOW_SHARE_SIGNING_KEY")
        blocks: list[bytes] = []
        if options.signing_public_keys:
            blocks = public_key_blocks(Path(options.signing_public_keys))
        where = "MLFLOW_SHARE_SIGNING_KEY" + ("_PEM" if pem_text else "")
        keys = cls.load(private_pem, (), where=where)
        older = cls.load(None, blocks, where="MLFLOW_SHARE_SIGNING_PUBLIC_KEYS")
        return cls(private_pem, {**keys.public, **{k: v for k, v in older.public.items()
                                                   if k not in keys.public}})

    @functools.cached_property
    def _signer(self) -> Any:
        from model_signing._signing import sign_ec_key

        if self.private_pem is None:
            raise InvalidInput("This server has no signing key (MLFLOW_SHARE_SIGNING_KEY).")
        return sign_ec_key.Signer(_as_path(self.private_pem))

    def verifier(self, key: str) -> Any:
        """The library's verifier for trusted key ``key``."""
        from model_signing._signing import sign_ec_key

        return sign_ec_key.Verifier(_as_path(self.public[key].pem))

    def warm(self) -> None:
        """Import the library and load the signing key now (start-up), not on first use."""
        if self.private_pem is not None:
            self._signer  # noqa: B018 - cached: a bad key fails at start, not at registration


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{setting}: cannot read {path} ({exc.strerror}).") from None


def public_key_blocks(path: Path) -> list[bytes]:
    """The PEM public keys in a file, or in the ``*.pem``/``*.pub`` files of a folder."""
    files = (sorted(p for p in path.iterdir() if p.suffix in _KEY_FILE_SUFFIXES)
             if path.is_dir() else [path])
    blocks = [match.group(0) for file in files
              for match in _PUBLIC_PEM.finditer(_read(file, "MLFLOW_SHARE_SIGNING_PUBLIC_KEYS"))]
    if not blocks:
        raise InvalidInput(f"MLFLOW_SHARE_SIGNING_PUBLIC_KEYS: no PEM public key in {path}.")
    return blocks


def generate_key(private_path: Path, public_path: Path, curve: str = "P-256") -> str:
    """Write a new ECDSA key pair (the private file mode 0600, never overwritten); its id.

    Raises:
        FileExistsError: either file exists.
    """
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if public_path.exists():
        raise FileExistsError(public_path)
    private = ec.generate_private_key(getattr(ec, CURVES[curve].upper())())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:  # O_EXCL: an existing key is never replaced
        out.write(pem)
    public = _public_pem(private.public_key())
    public_path.write_bytes(public)
    return key_id(public)


# -- signing and checking --------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    """A signature: the sigstore bundle as JSON text, and the id of the key that made it."""

    key_id: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def _manifest(subject: str, files: Iterable[tuple[str, str]]) -> Any:
    """The library's manifest of ``(relative path, sha256 hex)`` pairs, serialized by file."""
    from model_signing import manifest
    from model_signing._hashing import hashing

    items = [manifest.FileManifestItem(path=PurePosixPath(path),
                                       digest=hashing.Digest("sha256", bytes.fromhex(sha)))
             for path, sha in files]
    return manifest.Manifest(subject, items, manifest._FileSerialization("sha256", False, []))


def sign(keys: SigningKeys, subject: str, files: Iterable[tuple[str, str]]) -> Bundle:
    """Sign ``(relative path, sha256)`` pairs with the current key.

    ``subject`` names the model in the statement (informative only: a verifier compares
    files). Raises ``InvalidInput`` if there is no signing key.
    """
    from model_signing._signing import signing

    signature = keys._signer.sign(signing.Payload(_manifest(subject, files)))
    current = keys.current
    assert current is not None
    return Bundle(current, signature.bundle.to_json())


def hinted_key(bundle_text: str) -> str | None:
    """The key id a bundle names (not yet checked: ``signed_files`` checks it)."""
    import json

    try:
        hint = json.loads(bundle_text)["verificationMaterial"]["publicKey"]["hint"]
    except (ValueError, KeyError, TypeError):
        return None
    return hint if isinstance(hint, str) else None


def signed_files(keys: SigningKeys, bundle_text: str, label: str) -> tuple[str, dict[str, str]]:
    """Verify a bundle with the trusted key it names; the key id and the signed files
    (``{relative path: sha256 hex}``). 500 DATA_LOSS naming ``label`` if it does not verify.
    """
    from cryptography.exceptions import InvalidSignature
    from model_signing._signing import sign_sigstore_pb

    key = hinted_key(bundle_text)
    if key is None or key not in keys.public:
        known = ", ".join(sorted(keys.public)) or "none"
        raise DataLoss(f"The signature of {label} names key {key or '(none)'}, which this "
                       f"verifier does not trust (trusted: {known}).")
    try:
        signature = sign_sigstore_pb.Signature.read(_as_path(bundle_text.encode()))
        signed = keys.verifier(key).verify(signature)
    except (InvalidSignature, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataLoss(f"The signature of {label} does not verify with key {key} "
                       f"({type(exc).__name__}).") from None
    serialization = signed.serialization_type
    if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256":
        raise DataLoss(f"The signature of {label} is not a per-file SHA-256 signature.")
    files: dict[str, str] = {}
    for resource in signed.resource_descriptors():
        if resource.digest.algorithm != "sha256":
            raise DataLoss(f"The signature of {label} lists {resource.identifier} with "
                           f"{resource.digest.algorithm}, not SHA-256.")
        files[str(resource.identifier)] = resource.digest.digest_hex
    return key, files


def check(keys: SigningKeys, bundle_text: str, files: Mapping[str, str], label: str) -> str:
    """Verify a bundle and that it signs exactly ``files`` (``{path: sha256}``); the key id.

    Raises:
        DataLoss: it does not verify, or names other files or digests (each listed).
    """
    key, signed = signed_files(keys, bundle_text, label)
    differences = describe_differences(signed, files)
    if differences:
        raise DataLoss(f"{label} does not match its signature (key {key}): "
                       + "; ".join(differences) + ".")
    return key


def describe_differences(signed: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """What differs between the signed files and the actual ones, one phrase per file."""
    found = [f"{path}: not signed" for path in sorted(set(actual) - set(signed))]
    found += [f"{path}: signed but missing" for path in sorted(set(signed) - set(actual))]
    found += [f"{path}: expected SHA-256 {signed[path]}, actual {actual[path]}"
              for path in sorted(set(signed) & set(actual)) if signed[path] != actual[path]]
    return found


@functools.cache
def server_keys() -> SigningKeys:
    """This process's keys, from its ``MLFLOW_SHARE_SIGNING_*`` settings (read once)."""
    from mlflow_share import config

    return SigningKeys.from_options(config.options())
