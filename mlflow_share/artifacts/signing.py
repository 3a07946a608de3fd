"""Which OMS signature a registered version is served and checked with, and signing the
versions that have none: on demand (the first time one is asked for) or all at once.

A version registered before a signing key was configured keeps its manifest and identity: it
is signed later over the digests its manifest lists, once the manifest still matches its
digest, the version's identity and the audit log (the signature only vouches for a manifest
that registration recorded). A version signed by a key that is no longer trusted (rotated out
of ``MLFLOW_SHARE_SIGNING_PUBLIC_KEYS``) is signed again with the current key; its old
signature stays in the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mlflow_share.artifacts import manifest as mf
from mlflow_share.artifacts import oms, registration, signatures
from mlflow_share.artifacts.ledger import Ledger
from mlflow_share.artifacts.signatures import StoredSignature
from mlflow_share.errors import DataLoss, InvalidInput, NotFound

PAGE_LIMIT = 1000


def _label(record: registration.ManifestRecord) -> str:
    return f"model {record.name!r} version {record.version}"


def signature_for(engine: sa.Engine, record: registration.ManifestRecord,
                  keys: oms.SigningKeys, *, key_id: str | None = None,
                  sign_missing: bool = False) -> StoredSignature:
    """The signature a version is served with: ``key_id``'s if named, else the current key's,
    else the newest by a trusted key; none of those and ``sign_missing``: made now.

    Only registration and an org admin sign (``sign_missing``): a check that signed what it
    was asked to verify would vouch for bytes someone changed in the database and storage.

    Raises:
        NotFound: no such signature, and none can be made (no signing key, or ``key_id``).
        DataLoss: the manifest no longer matches what registration recorded (not signed).
    """
    stored = signatures.stored(engine, record.model_id, record.version)
    if key_id is not None:
        for row in stored:
            if row.key_id == key_id:
                return row
        if key_id != keys.current or not sign_missing:
            raise NotFound(f"{_label(record)} has no signature by key {key_id}.")
    trusted = [row for row in stored if row.key_id in keys.public]
    for row in trusted:
        if row.key_id == keys.current:
            return row
    if trusted and key_id is None:
        return trusted[0]
    if keys.current is None:
        raise NotFound(f"{_label(record)} has no signature by a key this server trusts, and "
                       "this server has no signing key (MLFLOW_SHARE_SIGNING_KEY).")
    if not sign_missing:
        raise NotFound(f"{_label(record)} has no signature by a key this server trusts (it "
                       "was registered before the key): an org admin signs it with "
                       "`mlflow-share signature sign-existing`.")
    return sign_version(engine, record, keys)


def sign_version(engine: sa.Engine, record: registration.ManifestRecord,
                 keys: oms.SigningKeys) -> StoredSignature:
    """Sign a registered version's manifest with the current key and store it (audited).

    Raises:
        DataLoss: the manifest no longer matches its digest, identity or audit record.
    """
    problems = registration.manifest_problems(engine, record)
    if problems:
        raise DataLoss(f"{_label(record)} is not signed: " + " ".join(problems))
    files = [(path, sha) for path, (_, sha) in sorted(mf.resources(record.statement).items())]
    bundle = oms.sign(keys, f"{record.name}/{record.version}", files)
    change = {"op": "model_version.sign", "name": record.name, "version": record.version,
              "identity": record.identity, "signing_key": bundle.key_id,
              "signature_sha256": bundle.sha256}

    def write(conn: sa.Connection, seq: int) -> None:
        signatures.insert(conn, model_id=record.model_id, version=record.version,
                          key_id=bundle.key_id, bundle=bundle.text,
                          bundle_sha256=bundle.sha256, seq=seq)

    signatures.ensure_table(engine)
    try:
        Ledger(engine).audited(change, write)
    except IntegrityError:  # another request signed it first: serve that one
        pass
    for row in signatures.stored(engine, record.model_id, record.version):
        if row.key_id == bundle.key_id:
            return row
    raise NotFound(f"{_label(record)}: its signature was not stored.")  # deleted meanwhile


def check_files(engine: sa.Engine, record: registration.ManifestRecord, keys: oms.SigningKeys,
                files: Mapping[str, str]) -> str | None:
    """Check that a trusted signature signs exactly ``files`` (``{path: sha256}``, as the
    caller read them); the key id, or ``None`` when no key is configured (nothing to check).

    Raises:
        DataLoss: no trusted signature can be found or made, or it does not match.
    """
    if not keys.configured:
        return None
    try:
        row = signature_for(engine, record, keys)  # never signs: a check only checks
    except NotFound:
        raise DataLoss(f"{_label(record)} has no signature by a trusted key; an administrator "
                       "can sign it (`mlflow-share signature sign-existing`).") from None
    return oms.check(keys, row.bundle, files, _label(record))


@dataclass
class BulkResult:
    signed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    next_page_token: str | None = None
    remaining: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"signed": self.signed, "failed": self.failed, "remaining": self.remaining,
                **({"next_page_token": self.next_page_token} if self.next_page_token else {})}


def sign_existing(engine: sa.Engine, keys: oms.SigningKeys, *, max_versions: int = 200,
                  page_token: str | None = None) -> BulkResult:
    """Sign up to ``max_versions`` versions without a trusted signature, in (model id,
    version) order after ``page_token``; a version whose manifest no longer matches is reported, not
    signed. ``remaining`` counts the versions still without one (failures included).

    Raises:
        InvalidInput: no signing key, or a malformed page token.
    """
    if keys.current is None:
        raise InvalidInput("This server has no signing key (MLFLOW_SHARE_SIGNING_KEY).")
    after = _parse_token(page_token)
    result = BulkResult()
    pending = _unsigned_after(engine, list(keys.public), after, max_versions + 1)
    for model_id, version, name in pending[:max_versions]:
        try:
            record = registration.find_manifest_by_id(engine, model_id, version)
            row = sign_version(engine, record, keys)
            result.signed.append({"name": name, "version": str(version),
                                  "key_id": row.key_id})
        except (DataLoss, NotFound) as exc:
            result.failed.append({"name": name, "version": str(version),
                                  "reason": exc.message})
    if len(pending) > max_versions:
        model_id, version, _ = pending[max_versions - 1]
        result.next_page_token = f"{model_id}/{version}"
    result.remaining = signatures.count_unsigned(engine, list(keys.public))
    return result


def _parse_token(token: str | None) -> tuple[str, int] | None:
    if not token:
        return None
    model_id, _, version = token.rpartition("/")
    if not model_id or not version.isdigit() or len(token) > 200:
        raise InvalidInput("Malformed page_token.")
    return model_id, int(version)


def _unsigned_after(engine: sa.Engine, key_ids: list[str], after: tuple[str, int] | None,
                    limit: int) -> list[tuple[str, int, str]]:
    return signatures.unsigned_versions(engine, key_ids, min(limit, PAGE_LIMIT + 1), after)
