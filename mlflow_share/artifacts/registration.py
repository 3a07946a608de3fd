"""Registering a model version: copy its files write-once, take the manifest, fix its identity.

When the server's artifact root is a ``checksum+`` repository, ``create_model_version``:

1. creates the version as MLflow does, then, in the same transaction, marks it
   ``PENDING_REGISTRATION`` with its own storage location ``models/<model id>/<version>/``
   (``mlflow-artifacts:/models/...``: clients download it through the checked proxy);
2. copies every file of the source there, each checked against its recorded digest while it
   is read, and records the copies' digests (one audit event);
3. stores the manifest (and, with a signing key, its OpenSSF Model Signing signature, made
   from the digests step 2 computed: no second pass over the bytes, see ``oms``), sets the
   identity tags and marks the version ``READY`` (a second event, carrying the manifest
   digest, identity and signing key). A failure marks it ``FAILED_REGISTRATION`` with the
   reason.

Later writes or deletions under the run's artifacts cannot change the registered copy, and
nothing writes under ``models/`` but registration (409).

A source is read from the server's artifact root, or from a root an admin declared in
``MLFLOW_SHARE_REGISTRATION_SOURCE_ROOTS`` (runs of experiments stored elsewhere before
mlflow-share); any other location is refused, so no request can make the server copy a path
of its choosing. A logged model with no files (an externally hosted model, a GenAI agent
version) registers with a manifest that lists none.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.artifacts import manifest as mf
from mlflow_share.artifacts import oms, roots, signatures
from mlflow_share.artifacts.repository import MODELS_DIR, ChecksumArtifactRepository
from mlflow_share.errors import DataLoss, InvalidInput, NotFound
from mlflow_share.mlflow_compat import tables as mt

_logger = logging.getLogger(__name__)

PROXY_SCHEME = "mlflow-artifacts:/"


def destination() -> ChecksumArtifactRepository | None:
    """The server's artifact root, if it is a checksum repository."""
    from mlflow.server.constants import ARTIFACTS_DESTINATION_ENV_VAR

    if not os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR, "").startswith("checksum+"):
        return None
    from mlflow_share.mlflow_compat import private

    _get_artifact_repo_mlflow_artifacts = private("mlflow.server.handlers",
                                                  "_get_artifact_repo_mlflow_artifacts")

    repo = _get_artifact_repo_mlflow_artifacts()
    return repo if isinstance(repo, ChecksumArtifactRepository) else None


def model_key(conn: sa.Connection, name: str) -> str:
    """mlflow-share's ID of a registered model (its folder under ``models/``)."""
    model_id = conn.execute(sa.select(db.resources.c.resource_id).where(
        db.resources.c.kind == "registered_model", db.resources.c.name == name)).scalar()
    if model_id is None:  # registered before mlflow-share: a stable folder from its name
        model_id = "n" + mf.sha256_hex(name.encode())[:31]
    return str(model_id)


def version_location(model_id: str, version: int | str) -> str:
    return f"{MODELS_DIR}/{model_id}/{version}"


@dataclass(frozen=True)
class SourceFolder:
    """Where a version's source files are: ``key`` under the server's artifact root, or
    under ``root``, a declared registration source root."""

    key: str
    root: roots.Root | None = None

    def files(self, repo: ChecksumArtifactRepository) -> list[str]:
        """The keys of its files (none if it does not exist); 400 if it holds a link."""
        storage = self.root.storage() if self.root is not None else repo.storage
        return storage.files_under(self.key) if storage.exists(self.key) else []


def source_folder(conn: sa.Connection, source: str, storage_location: str | None,
                  repo: ChecksumArtifactRepository) -> SourceFolder:
    """The folder that holds a version's source files (400 if it is in no root it may be
    copied from)."""
    from mlflow_share.auth.resolvers import validate_artifact_path

    for uri in (storage_location, source):
        if uri and uri.startswith(PROXY_SCHEME) and not uri.startswith(PROXY_SCHEME + "/"):
            return SourceFolder("/".join(validate_artifact_path(
                uri[len(PROXY_SCHEME):].strip("/"))))
    location = storage_location or source
    if source.startswith("runs:/"):
        run_id, _, path = source[len("runs:/"):].partition("/")
        artifact_uri = conn.execute(sa.select(mt.runs.c.artifact_uri).where(
            mt.runs.c.run_uuid == run_id)).scalar()
        artifact_uri = str(artifact_uri or "")
        path = "/".join(validate_artifact_path(path.strip("/"), allow_empty=True))
        if artifact_uri.startswith(PROXY_SCHEME):
            base = artifact_uri[len(PROXY_SCHEME):].strip("/")
            return SourceFolder("/".join(p for p in (base, path) if p))
        location = "/".join(p for p in (artifact_uri.rstrip("/"), path) if p)
    found = _declared_folder(location, repo)
    if found is not None:
        return found
    raise InvalidInput(
        f"Model version source {source!r} is not stored on this server's artifact root; "
        "register a runs:/, models:/ or mlflow-artifacts:/ source logged through this server "
        "(an administrator may declare other roots to register from: "
        "MLFLOW_SHARE_REGISTRATION_SOURCE_ROOTS).")


def _declared_folder(location: str, repo: ChecksumArtifactRepository) -> SourceFolder | None:
    """``location`` as a folder of a declared root, unless it lies in the server's own root
    (whose files are registered by their runs:/ or mlflow-artifacts:/ URI, with its rules)."""
    if not location or roots.of_storage(repo.storage).key_of(location) is not None:
        return None
    for root in roots.declared():
        key = root.key_of(location)
        if key is not None:
            return SourceFolder(key, root)
    return None


def logged_model_id(source: str) -> str | None:
    """The logged model a ``models:/<model_id>`` source names, else ``None``."""
    if not source.startswith("models:/"):
        return None
    from mlflow.exceptions import MlflowException

    from mlflow_share.mlflow_compat import private

    try:
        parsed = private("mlflow.store.artifact.utils.models", "_parse_model_uri")(source)
    except MlflowException:
        return None
    return str(parsed.model_id) if parsed.model_id else None


def run_params(conn: sa.Connection, run_id: str | None) -> dict[str, str]:
    if not run_id:
        return {}
    p = mt.params.c
    rows = conn.execute(sa.select(p.key, p.value).where(p.run_uuid == run_id)).all()
    return {str(k): str(v) for k, v in rows}


@dataclass
class Registered:
    statement: dict[str, Any]
    manifest_sha256: str
    identity: str
    signature: str | None  # Ed25519 over the canonical statement (MLFLOW_SHARE_MANIFEST_KEY)
    oms: oms.Bundle | None = None  # OpenSSF Model Signing bundle (MLFLOW_SHARE_SIGNING_KEY)


def copy_and_describe(repo: ChecksumArtifactRepository, *, name: str, version: int,
                      model_id: str, source: str, folder: SourceFolder, sources: list[str],
                      run_id: str | None, params: dict[str, str],
                      keys: oms.SigningKeys | None = None) -> Registered:
    """Copy the source files (``sources``, keys in ``folder``'s root) to the version's
    location and build its manifest (no files: an empty manifest, nothing copied); sign it
    in OMS format with ``keys``' current key, if it has one."""
    target = version_location(model_id, version)
    change: dict[str, Any] = {"op": "model_version.copy", "name": name, "version": version,
                              "from": folder.key, "to": target}
    if folder.root is not None:
        change["root"] = folder.root.uri
    copied = repo.copy_verified(sources, folder.key, target, change, origin=folder.root)
    params_sha256 = mf.params_digest(params)
    statement = mf.build_statement(name, version, copied.files, run_id=run_id,
                                   params_sha256=params_sha256, source=source,
                                   unverified_sources=copied.unverified,
                                   adopted_sources=copied.adopted)
    manifest_sha256 = mf.statement_digest(statement)
    bundle = None
    if keys is not None and keys.current is not None:
        bundle = oms.sign(keys, f"{name}/{version}",
                          ((path, sha) for path, _, sha in copied.files))
    return Registered(statement, manifest_sha256,
                      mf.identity(manifest_sha256, run_id, params_sha256), mf.sign(statement),
                      bundle)


def finish(repo: ChecksumArtifactRepository, *, model_id: str, name: str, version: int,
           registered: Registered) -> None:
    """Store the manifest, set the identity tags and mark the version READY: one event."""
    change: dict[str, Any] = {
        "op": "model_version.manifest", "name": name, "version": version,
        "manifest_sha256": registered.manifest_sha256, "identity": registered.identity,
        "signed": registered.signature is not None}
    bundle = registered.oms
    if bundle is not None:
        signatures.ensure_table(repo.ledger.engine)
        change.update(signing_key=bundle.key_id, signature_sha256=bundle.sha256)

    mv, mv_tags = mt.model_versions, mt.model_version_tags

    def write(conn: sa.Connection, seq: int) -> None:
        this_version = (mv.c.name == name, mv.c.version == version)
        workspace = conn.execute(sa.select(mv.c.workspace).where(*this_version)).scalar()
        conn.execute(db.model_manifests.insert().values(
            model_id=model_id, version=version, name=name,
            location=version_location(model_id, version),
            manifest=mf.canonical(registered.statement).decode(),
            manifest_sha256=registered.manifest_sha256, identity=registered.identity,
            signature=registered.signature, audit_seq=seq, created_at=db.now_ms()))
        for tag, value in ((mf.IDENTITY_TAG, registered.identity),
                           (mf.MANIFEST_TAG, registered.manifest_sha256)):
            conn.execute(mv_tags.delete().where(
                mv_tags.c.name == name, mv_tags.c.version == version, mv_tags.c.key == tag))
            conn.execute(mv_tags.insert().values(workspace=workspace, name=name, version=version,
                                                 key=tag, value=value))
        if bundle is not None:
            signatures.insert(conn, model_id=model_id, version=version, key_id=bundle.key_id,
                              bundle=bundle.text, bundle_sha256=bundle.sha256, seq=seq)
        conn.execute(mv.update().where(*this_version).values(
            status="READY", status_message=None, last_updated_time=db.now_ms()))

    repo.ledger.audited(change, write)


def fail(repo: ChecksumArtifactRepository, *, name: str, version: int, reason: str) -> None:
    """Mark a version FAILED_REGISTRATION with the reason (audited)."""
    mv = mt.model_versions

    def write(conn: sa.Connection, seq: int) -> None:
        conn.execute(mv.update().where(mv.c.name == name, mv.c.version == version).values(
            status="FAILED_REGISTRATION", status_message=reason[:500],
            last_updated_time=db.now_ms()))

    repo.ledger.audited({"op": "model_version.failed", "name": name, "version": version,
                         "reason": reason[:500]}, write)


# -- reading and verifying -----------------------------------------------------------------------
@dataclass
class ManifestRecord:
    model_id: str
    version: int
    name: str
    location: str
    statement: dict[str, Any]
    manifest_sha256: str
    identity: str
    signature: str | None
    audit_seq: int | None

    def problems(self) -> list[str]:
        """What no longer matches: the manifest against its digest, the identity against it."""
        found = []
        if mf.statement_digest(self.statement) != self.manifest_sha256:
            found.append("The stored manifest does not match its recorded digest.")
        meta = self.statement["predicate"]["mlflow"]
        if mf.identity(self.manifest_sha256, str(meta["run_id"]) or None,
                       str(meta["params_sha256"])) != self.identity:
            found.append("The version's identity does not match its manifest.")
        return found

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": str(self.version), "location": self.location,
                "storage_location": PROXY_SCHEME + self.location,
                "manifest": self.statement, "manifest_sha256": self.manifest_sha256,
                "identity": self.identity, "signature": self.signature}


def find_manifest(engine: sa.Engine, name: str, version: str) -> ManifestRecord:
    """The manifest of version ``version`` of the model now called ``name`` (404 if none)."""
    with engine.connect() as conn:
        mv = mt.model_versions.c
        location = conn.execute(sa.select(mv.storage_location).where(
            mv.name == name,
            mv.version == mt.bigint(int(version) if str(version).isdigit() else -1))
        ).scalar()
        t = db.model_manifests
        row = None
        if location and str(location).startswith(PROXY_SCHEME + MODELS_DIR + "/"):
            row = conn.execute(sa.select(t).where(
                t.c.location == str(location)[len(PROXY_SCHEME):])).first()
    if row is None:
        raise NotFound(f"Model version {name!r} version {version!r} has no manifest.")
    return _record(row)


def find_manifest_by_id(engine: sa.Engine, model_id: str, version: int) -> ManifestRecord:
    """The manifest stored for mlflow-share's model ``model_id``, version ``version``."""
    t = db.model_manifests
    with engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.model_id == model_id,
                                              t.c.version == version)).first()
    if row is None:
        raise NotFound(f"Model {model_id} version {version} has no manifest.")
    return _record(row)


def _record(row: Any) -> ManifestRecord:
    return ManifestRecord(str(row.model_id), int(row.version), str(row.name), str(row.location),
                          json.loads(row.manifest), str(row.manifest_sha256), str(row.identity),
                          row.signature, row.audit_seq)


@dataclass
class Report:
    name: str
    version: str
    identity: str
    checked: int = 0
    files: int = 0  # in the manifest
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    kept: dict[str, bytes] = field(default_factory=dict, repr=False)  # files asked for

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.changed or self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "identity": self.identity,
                "ok": self.ok, "checked": self.checked, "files": self.files,
                "missing": self.missing, "extra": self.extra, "changed": self.changed,
                "problems": self.problems}


def verify_version(engine: sa.Engine, repo: ChecksumArtifactRepository, name: str,
                   version: str, keep: tuple[str, ...] = ()) -> Report:
    """Check every stored byte of a version against its manifest (and the manifest itself);
    the bytes of the files named in ``keep`` are kept in ``Report.kept`` (same pass)."""
    import hashlib

    record = find_manifest(engine, name, version)
    report = Report(name, str(version), record.identity)
    statement = record.statement
    report.problems.extend(manifest_problems(engine, record))
    expected = mf.resources(statement)
    report.files = len(expected)  # none is a fact, not a problem: a logged model without files
    base = record.location
    present = {key[len(base) + 1:]: key for key in _files(repo, base)}
    report.missing = sorted(set(expected) - set(present))
    report.extra = sorted(set(present) - set(expected))
    for relative in sorted(set(expected) & set(present)):
        size, sha = expected[relative]
        digest, length, chunks = hashlib.sha256(), 0, []
        with repo.open_raw(present[relative]) as stream:
            while chunk := stream.read(1024 * 1024):
                digest.update(chunk)
                length += len(chunk)
                if relative in keep:
                    chunks.append(chunk)
        if relative in keep:
            report.kept[relative] = b"".join(chunks)
        report.checked += 1
        if (length, digest.hexdigest()) != (size, sha):
            report.changed.append({"path": relative, "expected_sha256": sha,
                                   "actual_sha256": digest.hexdigest(),
                                   "expected_size": size, "actual_size": length})
    return report


def manifest_problems(engine: sa.Engine, record: ManifestRecord) -> list[str]:
    """What no longer matches in a stored manifest: its digest, the version's identity and
    the manifest the audit log recorded at registration."""
    found = record.problems()
    audited = _audited_manifest(engine, record.audit_seq)
    if audited is not None and audited != (record.manifest_sha256, record.identity):
        found.append("The manifest does not match the one the audit log recorded.")
    return found


def _files(repo: ChecksumArtifactRepository, base: str) -> list[str]:
    try:
        return repo.files_under(base) if repo.exists(base) else []
    except InvalidInput as exc:
        raise DataLoss(exc.message) from None


def _audited_manifest(engine: sa.Engine, seq: int | None) -> tuple[str, str] | None:
    if seq is None:
        return None
    from mlflow_share.audit import models as audit_models

    with engine.connect() as conn:
        details = conn.execute(sa.select(audit_models.events.c.details).where(
            audit_models.events.c.seq == seq)).scalar()
    try:
        for change in json.loads(details or "{}").get("changes") or []:
            if change.get("op") == "model_version.manifest":
                return str(change["manifest_sha256"]), str(change["identity"])
    except (ValueError, KeyError, AttributeError):
        return None
    return None
