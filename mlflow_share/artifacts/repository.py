"""``checksum+file://``: MLflow's local artifact repository with every byte digested and checked.

Use it as the server's ``--artifacts-destination`` (``mlflow-share server`` does by default).
Every upload path MLflow has (the proxy's streamed PUT, ``log_artifact``, ``log_artifacts``)
computes the SHA-256 and size while the bytes stream into a hidden staging file, then
publishes the file and records its digest (``Ledger``) in one step. Every download path
(``download_artifacts``, ``_download_file``, the proxy's GET, ``/get-artifact``,
``/model-versions/get-artifact``) checks size and digest in the pass that reads the bytes;
``get_local_path`` returns ``None`` so MLflow never streams an unchecked file on its own.

Paths are refused (400) before any file is touched when they are absolute, contain ``..``,
``.``, empty segments, backslashes, NUL, a scheme, or pass through a symbolic link. The
``models/`` folder holds registered versions' copies: only registration writes there (409).
Presigned and multipart transfers are not offered: their bytes would bypass the digest.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import AsyncIterable, Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from mlflow.entities import FileInfo
from mlflow.store.artifact.artifact_repo import ArtifactRepository, StreamUploadMixin
from mlflow.utils.file_utils import local_file_uri_to_path

from mlflow_share.artifacts.ledger import Digest, Ledger
from mlflow_share.errors import Conflict, DataLoss, InvalidInput, NotFound

SCHEME = "checksum+file"
CHUNK = 1024 * 1024
STAGING_PREFIX = ".mlflow-share-staging."
MODELS_DIR = "models"


@dataclass
class Verified:
    """An open stored file with its recorded digest (``None``: written before mlflow-share)."""

    key: str
    size: int
    digest: Digest | None
    stream: BinaryIO


def hash_file(path: str) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def mismatch(key: str, expected: Digest, size: int, sha256: str) -> DataLoss:
    if size != expected.size:
        what = f"size {size} bytes, expected {expected.size}"
    else:
        what = f"SHA-256 {sha256}, expected {expected.sha256}"
    return DataLoss(f"Artifact {key!r} does not match its recorded digest: {what}.")


def _split(path: str, *, allow_empty: bool = False) -> list[str]:
    from mlflow_share.auth.resolvers import validate_artifact_path

    return validate_artifact_path(path, allow_empty=allow_empty)


class ChecksumArtifactRepository(ArtifactRepository, StreamUploadMixin):
    """A local artifact root whose files are all recorded with size and SHA-256."""

    def __init__(self, artifact_uri: str, tracking_uri: str | None = None,
                 registry_uri: str | None = None, *, ledger: Ledger | None = None,
                 root: str | None = None) -> None:
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        self.artifact_dir = os.path.abspath(local_file_uri_to_path(_inner_uri(artifact_uri)))
        # Digest rows are keyed by path under the server's artifact root, whichever
        # sub-folder this instance was opened at (MLflow opens run and trace folders too).
        server_root = os.path.abspath(root) if root else _server_root()
        if server_root and (self.artifact_dir == server_root
                            or self.artifact_dir.startswith(server_root + os.sep)):
            self.root = server_root
        else:
            self.root = self.artifact_dir
        inside = os.path.relpath(self.artifact_dir, self.root)
        self.prefix = "" if inside == "." else inside.replace(os.sep, "/")
        self._ledger = ledger

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger.for_environment()
        return self._ledger

    # -- paths ------------------------------------------------------------------------------
    def key(self, artifact_path: str | None) -> str:
        """The ledger key of ``artifact_path`` (relative to this repository); 400 if unsafe."""
        segments = _split(artifact_path or "", allow_empty=True)
        return "/".join([*([self.prefix] if self.prefix else []), *segments])

    def _fs_path(self, key: str) -> str:
        """The file of ``key`` under the root; 400 if any component is a symbolic link."""
        path = os.path.join(self.root, *key.split("/")) if key else self.root
        probe = self.root
        for segment in key.split("/") if key else []:
            probe = os.path.join(probe, segment)
            if os.path.islink(probe):
                raise InvalidInput(f"Invalid artifact path {key!r}: it passes through a link.")
        return path

    @staticmethod
    def _refuse_registered(key: str) -> None:
        if key == MODELS_DIR or key.startswith(MODELS_DIR + "/"):
            raise Conflict(
                f"Artifact path {key!r} is in a registered model version's storage: registered "
                "bytes are written once, by registration, and never changed or deleted.")

    # -- uploads ----------------------------------------------------------------------------
    def _stage(self, key: str) -> tuple[IO[bytes], str, str]:
        destination = self._fs_path(key)
        folder = os.path.dirname(destination)
        if os.path.isdir(destination):
            raise InvalidInput(f"Artifact path {key!r} is a folder.")
        os.makedirs(folder, exist_ok=True)
        self._fs_path(key)  # re-check: a link could have been placed while creating folders
        fd, staging = tempfile.mkstemp(dir=folder, prefix=STAGING_PREFIX)
        return os.fdopen(fd, "wb"), staging, destination

    def _publish(self, entries: list[tuple[str, str, str, int, str]],
                 change: dict[str, Any]) -> None:
        """Move staged files into place and record them, all or none."""
        def publish() -> None:
            for key, staging, destination, _, _ in entries:
                # Registered copies are read-only on disk too (and checked on every read).
                os.chmod(staging, 0o444 if key.startswith(MODELS_DIR + "/") else 0o644)
                os.replace(staging, destination)

        try:
            self.ledger.record([(k, size, sha) for k, _, _, size, sha in entries], change,
                               publish)
        finally:
            for _, staging, _, _, _ in entries:
                if os.path.exists(staging):
                    os.remove(staging)

    def write_stream(self, key: str, read: Callable[[int], bytes],
                     expected_sha256: str | None = None, *, internal: bool = False) -> Digest:
        """Stream ``read(n)`` into ``key`` while hashing; 400 if the declared digest differs."""
        if not internal:
            self._refuse_registered(key)
        sha, size = hashlib.sha256(), 0
        out, staging, destination = self._stage(key)
        try:
            with out:
                while chunk := read(CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            digest = sha.hexdigest()
            _check_declared(key, expected_sha256, digest)
        except BaseException:
            os.remove(staging)
            raise
        self._publish([(key, staging, destination, size, digest)],
                      {"op": "artifact.put", "path": key})
        return Digest(key, size, digest, None)

    def log_artifact_from_stream(self, stream: BinaryIO, artifact_file_name: str,
                                 artifact_path: str | None = None,
                                 expected_sha256: str | None = None) -> None:
        self.write_stream(self.file_key(artifact_file_name, artifact_path), stream.read,
                          expected_sha256)

    async def log_artifact_from_async_stream(self, chunks: AsyncIterable[bytes],
                                             artifact_file_name: str,
                                             artifact_path: str | None = None,
                                             expected_sha256: str | None = None) -> None:
        import asyncio

        key = self.file_key(artifact_file_name, artifact_path)
        self._refuse_registered(key)
        out, staging, destination = await asyncio.to_thread(self._stage, key)
        sha, size = hashlib.sha256(), 0

        def absorb(buffer: bytes) -> None:
            sha.update(buffer)
            out.write(buffer)

        try:
            pending: list[bytes] = []
            pending_size = 0
            with out:
                async for chunk in chunks:
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= CHUNK:  # one thread hop per MiB, not per 64 KiB chunk
                        size += pending_size
                        await asyncio.to_thread(absorb, b"".join(pending))
                        pending, pending_size = [], 0
                if pending:
                    size += pending_size
                    await asyncio.to_thread(absorb, b"".join(pending))
            digest = sha.hexdigest()
            _check_declared(key, expected_sha256, digest)
        except BaseException:
            os.remove(staging)
            raise
        await asyncio.to_thread(self._publish, [(key, staging, destination, size, digest)],
                                {"op": "artifact.put", "path": key})

    def file_key(self, artifact_file_name: str, artifact_path: str | None) -> str:
        name = os.path.basename(artifact_file_name)
        if not name or name.startswith(STAGING_PREFIX):
            raise InvalidInput(f"Invalid artifact file name {artifact_file_name!r}.")
        return self.key(posixpath.join(artifact_path, name) if artifact_path else name)

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        key = self.file_key(local_file, artifact_path)
        with open(local_file, "rb") as f:
            self.write_stream(key, f.read)

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        """Upload a folder: every file staged and hashed, then all published in one record."""
        base = self.key(artifact_path)
        self._refuse_registered(base)
        entries: list[tuple[str, str, str, int, str]] = []
        try:
            for folder, _, files in os.walk(local_dir):
                for name in sorted(files):
                    relative = os.path.relpath(os.path.join(folder, name), local_dir)
                    key = "/".join(p for p in (base, relative.replace(os.sep, "/")) if p)
                    _split(key)
                    out, staging, destination = self._stage(key)
                    entries.append((key, staging, destination, 0, ""))
                    sha, size = hashlib.sha256(), 0
                    with out, open(os.path.join(folder, name), "rb") as source:
                        while chunk := source.read(CHUNK):
                            sha.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                    entries[-1] = (key, staging, destination, size, sha.hexdigest())
        except BaseException:
            for _, staging, _, _, _ in entries:
                if os.path.exists(staging):
                    os.remove(staging)
            raise
        if entries:
            self._publish(entries, {"op": "artifact.put", "path": base})

    # -- reads ------------------------------------------------------------------------------
    def get_local_path(self, artifact_path: str) -> str | None:
        return None  # never let MLflow stream an unchecked file

    def open_verified(self, artifact_path: str) -> Verified:
        """Open a stored file for a single checked pass (``iter_verified``); 404, 400, 500."""
        key = self.key(artifact_path)
        path = self._fs_path(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise NotFound(f"No such artifact: {key!r}.") from None
        except OSError:
            raise InvalidInput(f"Invalid artifact path {key!r}.") from None
        stream = os.fdopen(fd, "rb")
        info = os.fstat(stream.fileno())
        if not stat.S_ISREG(info.st_mode):
            stream.close()
            raise InvalidInput(f"Artifact path {key!r} is a folder, not a file.")
        digest = self.ledger.get(key)
        if digest is not None and info.st_size != digest.size:
            stream.close()
            raise mismatch(key, digest, info.st_size, "(not read)")
        if digest is not None:
            audited = self.ledger.audited_sha256(digest)
            if audited is not None and audited != digest.sha256:
                stream.close()
                raise DataLoss(f"The recorded digest of {key!r} does not match the audit log.")
        return Verified(key, info.st_size, digest, stream)

    @staticmethod
    def iter_verified(opened: Verified, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """Yield the file's bytes; the last chunk only once size and SHA-256 have matched.

        On a mismatch the generator raises ``DataLoss`` instead of yielding the last chunk, so
        no reader ever receives the complete, wrong file.
        """
        sha, size = hashlib.sha256(), 0
        with opened.stream as stream:
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

    def read_verified(self, artifact_path: str) -> tuple[Verified, bytes]:
        """The whole file, checked (for small files: a mismatch becomes a proper error)."""
        opened = self.open_verified(artifact_path)
        return opened, b"".join(self.iter_verified(opened))

    def download_artifacts(self, artifact_path: str, dst_path: str | None = None) -> str:
        """Download a file or folder, each file checked; the first bad file raises DATA_LOSS."""
        key = self.key(artifact_path)
        dst = os.path.abspath(dst_path) if dst_path else tempfile.mkdtemp()
        if not os.path.isdir(self._fs_path(key)):
            local = self._create_download_destination(artifact_path, dst)
            self._download_file(artifact_path, local)
            return local
        for file_key in self.files_under(key):
            relative = file_key[len(self.prefix):].lstrip("/") if self.prefix else file_key
            self._download_file(relative, self._create_download_destination(relative, dst))
        return os.path.join(dst, os.path.normpath(artifact_path)) if artifact_path else dst

    def _download_file(self, remote_file_path: str, local_path: str) -> None:
        opened = self.open_verified(remote_file_path)
        try:
            with open(local_path, "wb") as out:
                for chunk in self.iter_verified(opened):
                    out.write(chunk)
        except BaseException:
            if os.path.exists(local_path):
                os.remove(local_path)
            raise

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        key = self.key(path)
        folder = self._fs_path(key)
        if not os.path.isdir(folder) or os.path.islink(folder):
            return []
        infos = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith((STAGING_PREFIX, ".artifact.uploading.")) or \
                        entry.is_symlink():
                    continue
                relative = posixpath.join(path, entry.name) if path else entry.name
                if entry.is_dir():
                    infos.append(FileInfo(relative, True, None))
                else:
                    infos.append(FileInfo(relative, False, entry.stat().st_size))
        return sorted(infos, key=lambda f: f.path)

    def _is_directory(self, artifact_path: str | None) -> bool:
        return os.path.isdir(self._fs_path(self.key(artifact_path)))

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        key = self.key(artifact_path)
        self._refuse_registered(key)
        path = self._fs_path(key)
        if not key and not self.prefix:
            raise InvalidInput("Refusing to delete the whole artifact root.")

        def remove() -> None:
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)

        self.ledger.forget(key, {"op": "artifact.delete"}, remove)

    # -- registered copies ------------------------------------------------------------------
    def files_under(self, key: str) -> list[str]:
        """Every regular file at or under ``key`` (sorted keys); links are refused."""
        top = self._fs_path(key)
        if os.path.isfile(top):
            return [key]
        found = []
        for folder, folders, files in os.walk(top):
            for name in folders + files:
                if os.path.islink(os.path.join(folder, name)):
                    raise InvalidInput(f"Artifact folder {key!r} contains a link: {name!r}.")
            for name in files:
                if name.startswith((STAGING_PREFIX, ".artifact.uploading.")):
                    continue
                relative = os.path.relpath(os.path.join(folder, name), self.root)
                found.append(relative.replace(os.sep, "/"))
        return sorted(found)

    def copy_verified(self, sources: list[str], source_base: str, target_base: str,
                      change: dict[str, Any]) -> list[tuple[str, int, str]]:
        """Copy files to ``target_base`` checking each against its recorded digest.

        Returns ``(relative path, size, sha256)`` per file. The copies are published and
        recorded together; ``target_base`` must not exist yet (write-once).
        """
        target_dir = self._fs_path(target_base)
        if os.path.exists(target_dir):
            raise Conflict(f"Artifact folder {target_base!r} already exists.")
        entries: list[tuple[str, str, str, int, str]] = []
        manifest: list[tuple[str, int, str]] = []
        root_view = ChecksumArtifactRepository(
            "checksum+file://" + self.root, ledger=self.ledger, root=self.root)
        try:
            for key in sources:
                relative = key[len(source_base):].lstrip("/") if source_base else key
                relative = relative or posixpath.basename(key)
                opened = root_view.open_verified(key)
                target = f"{target_base}/{relative}"
                out, staging, destination = self._stage(target)
                entries.append((target, staging, destination, 0, ""))
                sha, size = hashlib.sha256(), 0
                with out:
                    for chunk in root_view.iter_verified(opened):
                        sha.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                entries[-1] = (target, staging, destination, size, sha.hexdigest())
                manifest.append((relative, size, sha.hexdigest()))
        except BaseException:
            for _, staging, _, _, _ in entries:
                if os.path.exists(staging):
                    os.remove(staging)
            raise
        self._publish(entries, change)
        return manifest


def _check_declared(key: str, expected: str | None, actual: str) -> None:
    if expected is not None and expected != actual:
        raise InvalidInput(
            f"Artifact {key!r}: the declared Content-Digest sha-256 does not match the bytes "
            f"received (received {actual}); nothing was stored.")


def _inner_uri(uri: str) -> str:
    return uri[len("checksum+"):] if uri.startswith("checksum+") else uri


def _server_root() -> str | None:
    from mlflow.server.constants import ARTIFACTS_DESTINATION_ENV_VAR

    destination = os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR)
    if not destination or not destination.startswith(SCHEME + "://"):
        return None
    return os.path.abspath(local_file_uri_to_path(_inner_uri(destination)))
