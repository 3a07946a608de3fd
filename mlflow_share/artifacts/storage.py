"""Where a checksum repository's bytes live: a local folder or an S3 bucket.

Both give the repository the same few operations on keys (paths under the artifact root):
stage a file and publish it atomically, open one for reading with its size, list, walk,
remove, and copy. Neither hashes: the repository does, in the pass that moves the bytes.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

from mlflow_share.errors import InvalidInput, NotFound

STAGING_PREFIX = ".mlflow-share-staging."
_HIDDEN = (STAGING_PREFIX, ".artifact.uploading.")


@dataclass
class Staged:
    """A file being written: ``file`` takes the bytes, ``publish`` makes them visible."""

    key: str
    file: IO[bytes]
    path: str  # the local staging file
    destination: Any
    remote: str | None = None  # S3: the staging object, uploaded before the publish
    backup: str | None = None  # local: the file it replaces, until the publish has committed
    cleanup: list[Any] = field(default_factory=list)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        for path in (self.path, self.backup):
            if path and os.path.exists(path):
                os.remove(path)
        for action in self.cleanup:
            action()
        self.cleanup.clear()


@dataclass
class Entry:
    name: str
    is_dir: bool
    size: int | None


@dataclass(frozen=True)
class Found:
    """A stored file met by ``walk``: its key and size, or why it cannot be read as one
    (``transient``: an error reading it, rather than what it is)."""

    key: str
    size: int
    problem: str | None = None
    transient: bool = False


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a storage operation may raise that is about the storage, not a bug: the file
    system's errors and, when boto is installed, S3's client errors."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return (OSError,)
    return (OSError, BotoCoreError, ClientError)


def _hidden(name: str) -> bool:
    return name.startswith(_HIDDEN)


class LocalStorage:
    """Files under a folder. Staging files sit next to their destination and are renamed."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def path(self, key: str) -> str:
        """The file of ``key``; 400 if any component of it is a symbolic link."""
        path = os.path.join(self.root, *key.split("/")) if key else self.root
        probe = self.root
        for segment in key.split("/") if key else []:
            probe = os.path.join(probe, segment)
            if os.path.islink(probe):
                raise InvalidInput(f"Invalid artifact path {key!r}: it passes through a link.")
        return path

    def stage(self, key: str) -> Staged:
        destination = self.path(key)
        if os.path.isdir(destination):
            raise InvalidInput(f"Artifact path {key!r} is a folder.")
        folder = os.path.dirname(destination)
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidInput(f"Artifact path {key!r} goes through a file.") from None
        self.path(key)  # again: a link could have appeared while creating the folders
        fd, staging = tempfile.mkstemp(dir=folder, prefix=STAGING_PREFIX)
        return Staged(key, os.fdopen(fd, "wb"), staging, destination)

    def prepare(self, staged: Staged) -> None:
        """Nothing to move before the publish: the staging file sits beside its destination."""

    def publish(self, staged: Staged, *, read_only: bool) -> None:
        os.chmod(staged.path, 0o444 if read_only else 0o644)
        if os.path.isfile(staged.destination):  # kept until the commit, to undo a failed one
            staged.backup = staged.path + ".previous"
            os.link(staged.destination, staged.backup)
        os.replace(staged.path, staged.destination)

    def undo(self, staged: Staged) -> None:
        """Put back what ``publish`` replaced (the record of it did not commit)."""
        if staged.backup and os.path.exists(staged.backup):
            os.replace(staged.backup, staged.destination)
        elif os.path.exists(staged.destination):
            os.remove(staged.destination)

    def open(self, key: str) -> tuple[BinaryIO, int]:
        path = self.path(key)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise NotFound(f"No such artifact: {key!r}.") from None
        except OSError:
            raise InvalidInput(f"Invalid artifact path {key!r}.") from None
        # Checked on the descriptor, before wrapping it: fdopen refuses a folder with an
        # exception of its own, and the descriptor would then never be closed.
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"Artifact path {key!r} is a folder, not a file.")
            stream = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        return stream, info.st_size

    def is_dir(self, key: str) -> bool:
        return os.path.isdir(self.path(key))

    def exists(self, key: str) -> bool:
        return os.path.exists(self.path(key))

    def list_dir(self, key: str) -> list[Entry]:
        folder = self.path(key)
        if not os.path.isdir(folder):
            return []
        found = []
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(_HIDDEN) or entry.is_symlink():
                    continue
                is_dir = entry.is_dir()
                found.append(Entry(entry.name, is_dir, None if is_dir else entry.stat().st_size))
        return found

    def files_under(self, key: str) -> list[str]:
        top = self.path(key)
        if os.path.isfile(top):
            return [key]
        found = []
        for folder, folders, files in os.walk(top):
            for name in folders + files:
                if os.path.islink(os.path.join(folder, name)):
                    raise InvalidInput(f"Artifact folder {key!r} contains a link: {name!r}.")
            for name in files:
                if not name.startswith(_HIDDEN):
                    relative = os.path.relpath(os.path.join(folder, name), self.root)
                    found.append(relative.replace(os.sep, "/"))
        return sorted(found)

    def walk(self, key: str = "") -> Iterator[Found]:
        """Every file under ``key``, one folder read at a time, in name order.

        A symbolic link or anything that is not a regular file is reported, never followed.
        """
        folder = self.path(key)
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            yield Found(key, 0, f"cannot be listed ({exc.strerror or type(exc).__name__})",
                        transient=True)
            return
        for entry in entries:
            if _hidden(entry.name):
                continue
            child = f"{key}/{entry.name}" if key else entry.name
            try:
                if entry.is_symlink():
                    yield Found(child, 0, "is a symbolic link")
                elif entry.is_dir(follow_symlinks=False):
                    yield from self.walk(child)
                elif entry.is_file(follow_symlinks=False):
                    yield Found(child, entry.stat(follow_symlinks=False).st_size)
                else:
                    yield Found(child, 0, "is not a regular file")
            except OSError as exc:
                yield Found(child, 0, f"cannot be read ({exc.strerror or type(exc).__name__})",
                            transient=True)

    def remove(self, key: str) -> None:
        path = self.path(key)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)

    def server_side_copy(self, source: str, target: str, sha256: str) -> bool:
        return False  # a local copy reads the bytes anyway: the repository copies and checks


class S3Storage:
    """Objects under ``s3://bucket/prefix``. Uploads are spooled to a local file while they
    are hashed, then PUT: an object appears whole or not at all, and a refused upload never
    reaches the bucket. Registration copies with CopyObject and S3's own SHA-256 checksum."""

    def __init__(self, bucket: str, prefix: str) -> None:
        from mlflow_share.mlflow_compat import private

        _get_s3_client = private("mlflow.store.artifact.s3_artifact_repo", "_get_s3_client")

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = _get_s3_client()

    def object_key(self, key: str) -> str:
        return "/".join(p for p in (self.prefix, key) if p)

    def stage(self, key: str) -> Staged:
        fd, staging = tempfile.mkstemp(prefix=STAGING_PREFIX)
        return Staged(key, os.fdopen(fd, "wb"), staging, self.object_key(key))

    def prepare(self, staged: Staged) -> None:
        """Upload the bytes to a staging object, before the chain's lock is taken."""
        import uuid

        staged.remote = self.object_key(f"{STAGING_PREFIX}{uuid.uuid4().hex}")
        self.client.upload_file(staged.path, self.bucket, staged.remote)
        os.remove(staged.path)
        remote = staged.remote
        staged.cleanup.append(lambda: self.client.delete_object(Bucket=self.bucket, Key=remote))

    def publish(self, staged: Staged, *, read_only: bool) -> None:
        """Copy the staging object into place inside the bucket (no bytes through here)."""
        assert staged.remote is not None
        self.client.copy_object(Bucket=self.bucket, Key=staged.destination,
                                CopySource={"Bucket": self.bucket, "Key": staged.remote})

    def undo(self, staged: Staged) -> None:
        """S3 keeps no previous object here (unless the bucket is versioned): the next read
        of this key reports the mismatch as DATA_LOSS."""

    def open(self, key: str) -> tuple[BinaryIO, int]:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"No such artifact: {key!r}.") from None
            raise
        return response["Body"], int(response["ContentLength"])

    def _objects(self, key: str) -> Iterator[dict[str, Any]]:
        prefix = self.object_key(key)
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix + "/" if prefix else ""):
            yield from page.get("Contents", [])

    def is_dir(self, key: str) -> bool:
        return next(self._objects(key), None) is not None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
            return True
        except ClientError:
            return self.is_dir(key)

    def list_dir(self, key: str) -> list[Entry]:
        prefix = self.object_key(key)
        prefix = prefix + "/" if prefix else ""
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                found.append(Entry(common["Prefix"][len(prefix):].rstrip("/"), True, None))
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix):]
                if name and not name.startswith(_HIDDEN):
                    found.append(Entry(name, False, int(item["Size"])))
        return found

    def _key_of(self, object_key: str) -> str:
        return object_key[len(self.prefix) + 1:] if self.prefix else object_key

    def files_under(self, key: str) -> list[str]:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
            return [key]
        except ClientError:
            pass
        return sorted(self._key_of(item["Key"]) for item in self._objects(key))

    def walk(self, key: str = "") -> Iterator[Found]:
        """Every object under ``key``, a listing page (1,000 keys) at a time, in key order."""
        for item in self._objects(key):
            name = self._key_of(str(item["Key"]))
            if not name or name.endswith("/"):  # a "folder" marker some tools write
                continue
            if _hidden(name.rsplit("/", 1)[-1]):
                continue
            yield Found(name, int(item["Size"]))

    def remove(self, key: str) -> None:
        keys = [{"Key": self.object_key(k)} for k in self.files_under(key)]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket,
                                       Delete={"Objects": keys[start:start + 1000]})

    def server_side_copy(self, source: str, target: str, sha256: str) -> bool:
        """CopyObject, kept only if S3's SHA-256 of the copy equals the recorded digest."""
        response = self.client.copy_object(
            Bucket=self.bucket, Key=self.object_key(target), ChecksumAlgorithm="SHA256",
            CopySource={"Bucket": self.bucket, "Key": self.object_key(source)})
        checksum = response.get("CopyObjectResult", {}).get("ChecksumSHA256")
        if checksum and "-" not in checksum and \
                base64.b64decode(checksum).hex() == sha256:
            return True
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(target))
        return False
