"""``checksum+file://`` and ``checksum+s3://``: artifact repositories where every byte is checked.

Use one as the server's ``--artifacts-destination`` (``mlflow-share server`` uses
``checksum+file://<home>/artifacts`` by default). Every upload path MLflow has (the proxy's
streamed PUT, ``log_artifact``, ``log_artifacts``) computes the SHA-256 and size while the
bytes stream into a staging file, then publishes the file and records its digest (``Ledger``)
in one step. Every download path (``download_artifacts``, ``_download_file``, the proxy's GET,
``/get-artifact``, ``/model-versions/get-artifact``) checks size and digest in the pass that
reads the bytes; ``get_local_path`` returns ``None`` so MLflow never streams an unchecked file
on its own. Presigned and multipart transfers are not offered: their bytes would bypass the
digest.

Paths are refused (400) before any byte is touched when they are absolute, contain ``..``,
``.``, empty segments, backslashes, NUL or a scheme, or (locally) pass through a symbolic
link. The ``models/`` folder holds registered versions' copies: only registration writes
there (409 otherwise), and a listing or folder download under a version's folder reports a
file its manifest lists but storage lacks, or one storage holds that it does not list
(DATA_LOSS, ``registered_folder``), rather than leaving it out or passing it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import posixpath
import tempfile
from collections.abc import AsyncIterable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlparse

from mlflow.entities import FileInfo
from mlflow.store.artifact.artifact_repo import ArtifactRepository, StreamUploadMixin
from mlflow.utils.file_utils import local_file_uri_to_path

from mlflow_share.artifacts import registered_folder
from mlflow_share.artifacts.ledger import Digest, Ledger
from mlflow_share.artifacts.registered_folder import MODELS_DIR
from mlflow_share.artifacts.storage import (
    STAGING_PREFIX,
    LocalStorage,
    S3Storage,
    Staged,
    storage_errors,
)
from mlflow_share.audit.log import AUDIT_CONTEXT
from mlflow_share.errors import Conflict, DataLoss, InvalidInput, NotFound, Unavailable

if TYPE_CHECKING:
    from mlflow_share.artifacts.roots import Root

_logger = logging.getLogger(__name__)

SCHEMES = ("checksum+file", "checksum+s3")
CHUNK = 1024 * 1024


@dataclass
class Copied:
    """What ``copy_verified`` copied: ``(relative path, size, sha256)`` per file, and the
    files whose source had no recorded digest or one recorded on adoption."""

    files: list[tuple[str, int, str]] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)

    def add(self, relative: str, size: int, sha256: str, recorded: Digest | None) -> None:
        self.files.append((relative, size, sha256))
        if recorded is None:
            self.unverified.append(relative)
        elif recorded.adopted:
            self.adopted.append(relative)


@dataclass
class Verified:
    """An open stored file with its recorded digest (``None``: written before mlflow-share)."""

    key: str
    size: int
    digest: Digest | None
    stream: BinaryIO


def mismatch(key: str, expected: Digest, size: int, sha256: str) -> DataLoss:
    recorded = "digest recorded on adoption" if expected.adopted else "recorded digest"
    return DataLoss(
        f"Artifact {key!r} does not match its {recorded}: expected SHA-256 "
        f"{expected.sha256} ({expected.size} bytes), actual {sha256} ({size} bytes).")


def _split(path: str, *, allow_empty: bool = False) -> list[str]:
    from mlflow_share.auth.resolvers import validate_artifact_path

    return validate_artifact_path(path, allow_empty=allow_empty)


def _under_models(key: str) -> bool:
    return key == MODELS_DIR or key.startswith(MODELS_DIR + "/")


def _check_declared(key: str, expected: str | None, actual: str) -> None:
    if expected is not None and expected != actual:
        raise InvalidInput(
            f"Artifact {key!r}: the declared Content-Digest sha-256 does not match the bytes "
            f"received (received {actual}); nothing was stored.")


def _locate(uri: str) -> tuple[str, str]:
    """``(scheme, location)``: a folder path for ``checksum+file``, ``bucket/prefix`` for S3."""
    parsed = urlparse(uri)
    if parsed.scheme == "checksum+file":
        return parsed.scheme, os.path.abspath(local_file_uri_to_path(uri[len("checksum+"):]))
    if parsed.scheme == "checksum+s3" and parsed.netloc:
        return parsed.scheme, f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
    raise InvalidInput(f"Not a checksum artifact URI: {uri!r} (checksum+file:// or "
                       "checksum+s3://bucket/prefix).")


def _server_root(scheme: str) -> str | None:
    """The server's artifact root, if this process serves one with the same scheme."""
    from mlflow.server.constants import ARTIFACTS_DESTINATION_ENV_VAR

    destination = os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR, "")
    if urlparse(destination).scheme != scheme:
        return None
    return _locate(destination)[1]


def _within(location: str, root: str) -> bool:
    return location == root or location.startswith(root.rstrip("/") + "/")


class ChecksumArtifactRepository(ArtifactRepository, StreamUploadMixin):
    """An artifact root whose files are all recorded with size and SHA-256."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None,
                 registry_uri: str | None = None, *, ledger: Ledger | None = None,
                 root: str | None = None) -> None:
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        scheme, location = _locate(artifact_uri)
        # Digest rows are keyed by path under the server's artifact root, whichever
        # sub-folder this instance was opened at (MLflow opens run and trace folders too).
        # Outside a server, keys start at the filesystem root or the bucket, so two
        # repositories opened at different folders can never share a key.
        root = _locate(root)[1] if root else _server_root(scheme)
        if root is None or not _within(location, root):
            root = "/" if scheme == "checksum+file" else location.split("/", 1)[0]
        self.prefix = location[len(root):].strip("/")
        if scheme == "checksum+file":
            self.storage: LocalStorage | S3Storage = LocalStorage(root)
        else:
            bucket, _, prefix = root.partition("/")
            self.storage = S3Storage(bucket, prefix)
        self._ledger = ledger

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger.for_environment()
        return self._ledger

    def at_root(self) -> ChecksumArtifactRepository:
        """The same storage, opened at the artifact root (keys are then ledger keys)."""
        root = ChecksumArtifactRepository.__new__(ChecksumArtifactRepository)
        root.__dict__.update(self.__dict__)
        root.prefix = ""
        return root

    # -- paths ------------------------------------------------------------------------------
    def key(self, artifact_path: str | None) -> str:
        """The ledger key of ``artifact_path`` (relative to this repository); 400 if unsafe."""
        segments = _split(artifact_path or "", allow_empty=True)
        return "/".join([*([self.prefix] if self.prefix else []), *segments])

    def file_key(self, artifact_file_name: str, artifact_path: str | None) -> str:
        name = os.path.basename(artifact_file_name)
        if not name or name.startswith(STAGING_PREFIX):
            raise InvalidInput(f"Invalid artifact file name {artifact_file_name!r}.")
        return self.key(posixpath.join(artifact_path, name) if artifact_path else name)

    @staticmethod
    def _refuse_registered(key: str) -> None:
        if _under_models(key):
            raise Conflict(
                f"Artifact path {key!r} is in a registered model version's storage: registered "
                "bytes are written once, by registration, and never changed or deleted.")

    # -- uploads ----------------------------------------------------------------------------
    def _publish(self, staged: list[tuple[Staged, int, str]], change: dict[str, Any]) -> None:
        """Make staged files visible and record them, all or none."""
        published: list[Staged] = []

        def publish() -> None:
            for item, _, _ in staged:
                self.storage.publish(item, read_only=_under_models(item.key))
                published.append(item)

        try:
            for item, _, _ in staged:
                self.storage.prepare(item)
            self.ledger.record([(s.key, size, sha) for s, size, sha in staged], change, publish)
        except BaseException:
            for item in reversed(published):
                self.storage.undo(item)
            raise
        finally:
            for item, _, _ in staged:
                item.discard()

    @staticmethod
    def _fill(staged: Staged, read: Callable[[int], bytes]) -> tuple[int, str]:
        sha, size = hashlib.sha256(), 0
        with staged.file as out:
            while chunk := read(CHUNK):
                sha.update(chunk)
                out.write(chunk)
                size += len(chunk)
        return size, sha.hexdigest()

    def write_stream(self, key: str, read: Callable[[int], bytes],
                     expected_sha256: str | None = None) -> Digest:
        """Stream ``read(n)`` into ``key`` while hashing; 400 if the declared digest differs."""
        self._refuse_registered(key)
        staged = _stage(self.storage, key)
        try:
            size, digest = self._fill(staged, read)
            _check_declared(key, expected_sha256, digest)
        except BaseException as exc:
            staged.discard()
            raise _out_of_space(exc)
        self._publish([(staged, size, digest)], {"op": "artifact.put", "path": key})
        return Digest(key, size, digest, None)

    def log_artifact_from_stream(self, stream: BinaryIO, artifact_file_name: str,
                                 artifact_path: str | None = None) -> None:
        self.write_stream(self.file_key(artifact_file_name, artifact_path), stream.read)

    async def log_artifact_from_async_stream(self, chunks: AsyncIterable[bytes],
                                             artifact_file_name: str,
                                             artifact_path: str | None = None) -> None:
        await self.write_async_stream(self.file_key(artifact_file_name, artifact_path), chunks)

    async def write_async_stream(self, key: str, chunks: AsyncIterable[bytes],
                                 expected_sha256: str | None = None) -> None:
        """``write_stream`` for an ASGI body: one thread hop per MiB, not per chunk."""
        self._refuse_registered(key)
        staged = await asyncio.to_thread(_stage, self.storage, key)
        sha, size = hashlib.sha256(), 0

        def absorb(buffer: bytes) -> None:
            sha.update(buffer)
            staged.file.write(buffer)

        try:
            pending: list[bytes] = []
            pending_size = 0
            async for chunk in chunks:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= CHUNK:
                    size += pending_size
                    await asyncio.to_thread(absorb, b"".join(pending))
                    pending, pending_size = [], 0
            if pending:
                size += pending_size
                await asyncio.to_thread(absorb, b"".join(pending))
            staged.file.close()
            digest = sha.hexdigest()
            _check_declared(key, expected_sha256, digest)
        except BaseException as exc:
            staged.discard()
            raise _out_of_space(exc)
        await asyncio.to_thread(self._publish, [(staged, size, digest)],
                                {"op": "artifact.put", "path": key})

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        with open(local_file, "rb") as f:
            self.write_stream(self.file_key(local_file, artifact_path), f.read)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        """Upload a folder: every file staged and hashed, then all published in one record."""
        base = self.key(artifact_path)
        self._refuse_registered(base)
        staged: list[tuple[Staged, int, str]] = []
        try:
            for folder, _, files in os.walk(local_dir):
                for name in sorted(files):
                    relative = os.path.relpath(os.path.join(folder, name), local_dir)
                    key = "/".join(p for p in (base, relative.replace(os.sep, "/")) if p)
                    _split(key)
                    self._refuse_registered(key)
                    item = _stage(self.storage, key)
                    staged.append((item, 0, ""))
                    with open(os.path.join(folder, name), "rb") as source:
                        size, digest = self._fill(item, source.read)
                    staged[-1] = (item, size, digest)
        except BaseException as exc:
            for item, _, _ in staged:
                item.discard()
            raise _out_of_space(exc)
        if staged:
            self._publish(staged, {"op": "artifact.put", "path": base})

    # -- reads ------------------------------------------------------------------------------
    def get_local_path(self, artifact_path: str) -> str | None:
        return None  # never let MLflow stream an unchecked file

    def open_verified(self, artifact_path: str) -> Verified:
        """Open a stored file for one checked pass (``iter_verified``); 404, 400 or 500.

        A size mismatch may be an upload of the same path publishing right now (its file is
        renamed into place just before its row commits): wait for in-flight writes and
        look once more before calling it data loss.
        """
        try:
            return self._open_verified(artifact_path)
        except DataLoss:
            self.ledger.settle()
            return self._open_verified(artifact_path)

    def _open_verified(self, artifact_path: str) -> Verified:
        key = self.key(artifact_path)
        try:
            return self.open_recorded(self.storage, key, key, registered=_under_models(key))
        except NotFound:
            expected, inside = self._registered(key)
            lost = registered_folder.missing_file(expected, inside) if expected else None
            if lost is not None:
                raise lost from None
            raise

    def _registered(self, key: str) -> tuple[registered_folder.Expected | None, str]:
        """The files listed by the manifest of the registered version whose folder holds
        ``key`` (``None``: in no version's folder, or its manifest is not stored yet), and
        ``key``'s path inside that folder."""
        located = registered_folder.locate(key)
        if located is None:
            return None, ""
        folder, inside = located
        return registered_folder.expected(self.ledger.engine, folder), inside

    def open_recorded(self, storage: LocalStorage | S3Storage, key: str, ledger_key: str, *,
                      label: str | None = None, registered: bool = False) -> Verified:
        """Open ``key`` of ``storage`` with the digest the ledger holds at ``ledger_key``; the
        size is checked here, the SHA-256 by ``iter_verified``. ``label`` names the file in
        errors (default: ``ledger_key``); ``registered``: a file without digest is data loss.
        """
        label = label or ledger_key
        stream, size = storage.open(key)
        try:
            digest, audited = self.ledger.get_audited(ledger_key)
            if digest is None and registered:
                raise DataLoss(f"Artifact {label!r} is in a registered version's storage but "
                               "has no recorded digest: it was not put there by registration.")
            if digest is not None and size != digest.size:
                actual = hashlib.sha256()
                while chunk := stream.read(CHUNK):  # name the actual digest too
                    actual.update(chunk)
                raise mismatch(label, digest, size, actual.hexdigest())
            if digest is not None and audited is not None and audited != digest.sha256:
                raise DataLoss(f"The recorded digest of {label!r} does not match the audit log.")
        except BaseException:
            stream.close()
            raise
        if digest is None:
            _logger.warning("mlflow-share: artifact %r has no recorded digest; served "
                            "unverified", label)
            if (ctx := AUDIT_CONTEXT.get()) is not None:
                ctx.extra["integrity"] = f"unverified: {label}"[:1024]
        return Verified(label, size, digest, stream)

    @staticmethod
    def iter_verified(opened: Verified, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """Yield the file's bytes; the last chunk only once size and SHA-256 have matched.

        On a mismatch the generator raises ``DataLoss`` instead of yielding the last chunk, so
        no reader ever receives the complete, wrong file.
        """
        sha, size = hashlib.sha256(), 0
        stream = opened.stream
        try:
            held = stream.read(chunk_size)
            while held:
                following = stream.read(chunk_size)
                sha.update(held)
                size += len(held)
                if not following:
                    break
                yield held
                held = following
            if opened.digest is not None and (size, sha.hexdigest()) != (
                    opened.digest.size, opened.digest.sha256):
                raise mismatch(opened.key, opened.digest, size, sha.hexdigest())
            if held:
                yield held
        finally:
            stream.close()

    def download_artifacts(self, artifact_path: str, dst_path: str | None = None) -> str:
        """Download a file or folder, each file checked; the first bad file raises DATA_LOSS."""
        key = self.key(artifact_path)
        dst = os.path.abspath(dst_path) if dst_path else tempfile.mkdtemp()
        if not self.storage.is_dir(key):
            local = self._create_download_destination(artifact_path, dst)
            self._download_file(artifact_path, local)
            return str(local)
        files = self.storage.files_under(key)
        expected, inside = self._registered(key)
        if expected is not None:
            folder = key[:len(key) - len(inside)].rstrip("/")
            with _noted():
                registered_folder.check_files(expected, inside,
                                              (f[len(folder) + 1:] for f in files))
        for file_key in files:
            relative = file_key[len(self.prefix):].lstrip("/") if self.prefix else file_key
            self._download_file(relative, self._create_download_destination(relative, dst))
        # The folder itself, even empty: MLflow's /get-artifact then says it is a folder (400)
        # instead of failing to open a path that was never created (a bare 500).
        local = os.path.join(dst, os.path.normpath(artifact_path)) if artifact_path else dst
        os.makedirs(local, exist_ok=True)
        return local

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        try:
            opened = self.open_verified(remote_file_path)
            with open(local_path, "wb") as out:
                for chunk in self.iter_verified(opened):
                    out.write(chunk)
        except BaseException as exc:
            if os.path.exists(local_path):
                os.remove(local_path)
            if isinstance(exc, DataLoss) and (ctx := AUDIT_CONTEXT.get()) is not None:
                ctx.extra["integrity"] = exc.message[:1024]  # the request's event says why
            raise

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        key = self.key(path)
        entries = self.storage.list_dir(key)
        expected, inside = self._registered(key)
        if expected is not None:
            stored_as = ("folder" if entries or self.storage.is_dir(key) else
                         "file" if self.storage.exists(key) else "nothing")
            with _noted():
                registered_folder.check_listing(expected, inside,
                                                ((e.name, e.is_dir) for e in entries), stored_as)
        infos = [FileInfo(posixpath.join(path, e.name) if path else e.name, e.is_dir, e.size)
                 for e in entries]
        return sorted(infos, key=lambda f: f.path)

    def _is_directory(self, artifact_path: str | None) -> bool:
        return self.storage.is_dir(self.key(artifact_path))

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        key = self.key(artifact_path)
        self._refuse_registered(key)
        if not key:
            raise InvalidInput("Refusing to delete the whole artifact root.")
        self.ledger.forget(key, {"op": "artifact.delete"}, lambda: self.storage.remove(key))

    # -- registered copies (keys relative to the artifact root) -----------------------------
    def exists(self, key: str) -> bool:
        return self.storage.exists(key)

    def files_under(self, key: str) -> list[str]:
        return self.storage.files_under(key)

    def open_raw(self, key: str) -> BinaryIO:
        return self.storage.open(key)[0]

    def copy_verified(self, sources: list[str], source_base: str, target_base: str,
                      change: dict[str, Any], origin: Root | None = None) -> Copied:
        """Copy files to ``target_base``, checking each against its recorded digest.

        ``sources`` are keys under the artifact root, or under ``origin`` (a declared
        registration source root, read through its own storage). Returns the copies'
        ``(relative path, size, sha256)``, and which had no recorded digest (written before
        mlflow-share and never adopted; copied as read) or a digest recorded on adoption.
        The copies are published and recorded together, or none is; ``target_base`` must not
        exist yet (write-once). S3 copies inside the server's bucket with CopyObject, checked
        by S3's own SHA-256; otherwise each file is read, checked and written in one pass.
        """
        if self.storage.exists(target_base):
            raise Conflict(f"Artifact folder {target_base!r} already exists.")
        result = Copied()
        source_storage = origin.storage() if origin is not None else self.storage
        root = self.at_root()
        staged: list[tuple[Staged, int, str]] = []
        copied: list[tuple[str, int, str]] = []
        try:
            for key in sources:
                relative = key[len(source_base):].lstrip("/") if source_base else key
                relative = relative or posixpath.basename(key)
                target = f"{target_base}/{relative}"
                if origin is None:
                    recorded = self.ledger.get(key)
                    if recorded is not None and self.storage.server_side_copy(
                            key, target, recorded.sha256):
                        copied.append((target, recorded.size, recorded.sha256))
                        result.add(relative, recorded.size, recorded.sha256, recorded)
                        continue
                    opened = root.open_verified(key)
                else:
                    opened = self.open_recorded(source_storage, key, origin.ledger_key(key),
                                                label=relative)
                item = self.storage.stage(target)
                staged.append((item, 0, ""))
                size, digest = self._fill_from(opened, item)
                staged[-1] = (item, size, digest)
                result.add(relative, size, digest, opened.digest)
        except BaseException:
            for item, _, _ in staged:
                item.discard()
            for target, _, _ in copied:
                self.storage.remove(target)
            self._remove_unpublished(target_base)
            raise

        published: list[Staged] = []

        def publish() -> None:
            for item, _, _ in staged:
                self.storage.publish(item, read_only=True)
                published.append(item)

        if staged or copied:
            try:
                for item, _, _ in staged:
                    self.storage.prepare(item)
                self.ledger.record(copied + [(s.key, size, sha) for s, size, sha in staged],
                                   change, publish)
            except BaseException:
                for item in published:
                    self.storage.undo(item)
                for target, _, _ in copied:
                    self.storage.remove(target)
                self._remove_unpublished(target_base)
                raise
            finally:
                for item, _, _ in staged:
                    item.discard()
        return result

    def _remove_unpublished(self, target_base: str) -> None:
        """Remove what a failed copy left at ``target_base`` (the folders staging made): it
        did not exist before the copy, and nothing but this copy writes there."""
        try:
            self.storage.remove(target_base)
        except storage_errors() as exc:
            _logger.warning("mlflow-share: could not remove the folders of a failed copy at "
                            "%r: %s", target_base, exc)

    def _fill_from(self, opened: Verified, staged: Staged) -> tuple[int, str]:
        sha, size = hashlib.sha256(), 0
        with staged.file as out:
            for chunk in self.iter_verified(opened):
                sha.update(chunk)
                out.write(chunk)
                size += len(chunk)
        return size, sha.hexdigest()


@contextlib.contextmanager
def _noted() -> Iterator[None]:
    """A registered folder found damaged: the request's audit event says why (the stock
    client retries a 500 and then shows only its status)."""
    try:
        yield
    except DataLoss as exc:
        if (ctx := AUDIT_CONTEXT.get()) is not None:
            ctx.extra["integrity"] = exc.message[:1024]
        raise


def _out_of_space(exc: BaseException) -> BaseException:
    """A full volume (or quota) as a clear 503; anything else unchanged."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Unavailable("The artifact store has no space left: the upload was not stored. "
                           "Free space (or raise the quota) and upload again.")
    return exc


def _stage(storage: LocalStorage | S3Storage, key: str) -> Staged:
    try:
        return storage.stage(key)
    except OSError as exc:
        raise _out_of_space(exc) from None
