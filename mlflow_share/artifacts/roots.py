"""Artifact roots by URI: the server's own ``checksum+`` root and the roots an admin declares.

A root is a folder (``file:///absolute/path``) or a bucket prefix (``s3://bucket/prefix``),
read through the same storage layer as the server's root (``LocalStorage``: no symbolic
links; ``S3Storage``: MLflow's S3 client and its settings). The ledger keys a file of the
server's root by its path under it, and a file of any other root by its full URI: no path
under the server's root can spell a URI (``validate_artifact_path`` refuses a scheme), so the
two never share a key, whichever sub-folder a root was declared at.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from mlflow_share import config
from mlflow_share.artifacts.storage import LocalStorage, S3Storage
from mlflow_share.errors import InvalidInput

CHECKSUM_PREFIX = "checksum+"


@dataclass(frozen=True)
class Root:
    """One artifact root. ``uri`` is canonical (``config.artifact_root_uri``); ``own`` marks
    the server's artifact root, whose ledger keys are paths under it."""

    uri: str
    own: bool = False

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]

    @property
    def location(self) -> str:
        """The folder (``/abs/path``) or ``bucket/prefix`` behind the URI."""
        return self.uri.split("://", 1)[1]

    def storage(self) -> LocalStorage | S3Storage:
        if self.scheme == "file":
            return LocalStorage(self.location)
        bucket, _, prefix = self.location.partition("/")
        return S3Storage(bucket, prefix)

    def ledger_key(self, key: str) -> str:
        """The ledger's key of the file at ``key`` under this root."""
        if self.own:
            return key
        if self.scheme == "file":
            return "file://" + posixpath.join(self.location, key)
        return "s3://" + "/".join(p for p in (self.location, key) if p)

    def contains(self, location: str) -> bool:
        """Whether ``location`` (same form as ``location``) is this root or under it."""
        root = self.location
        if self.scheme == "file" and root == "/":
            return location.startswith("/")
        return location == root or location.startswith(root + "/")

    def overlaps(self, other: Root) -> bool:
        return self.scheme == other.scheme and (
            self.contains(other.location) or other.contains(self.location))

    def key_of(self, uri: str) -> str | None:
        """The key under this root of the file or folder at ``uri``; ``None`` if it is not
        under this root.

        Raises:
            InvalidInput: it is under this root but its path is unsafe (``..``, ``.``, empty
                segments, backslashes, encoded characters), or it is the root itself.
        """
        from mlflow_share.auth.resolvers import validate_artifact_path

        located = _location_of(uri)
        if located is None or located[0] != self.scheme or not self.contains(located[1]):
            return None
        relative = located[1][len(self.location):].lstrip("/") \
            if self.location != "/" else located[1][1:]
        # Checked as written, never normalised first: a ".." must be refused, not resolved.
        return "/".join(validate_artifact_path(relative))


def _location_of(uri: str) -> tuple[str, str] | None:
    """``(scheme, location)`` of a ``file:``/plain absolute path or ``s3://`` URI, else None."""
    parsed = urlparse(uri)
    if "%" in parsed.path and unquote(parsed.path) != parsed.path:
        raise InvalidInput(f"Invalid artifact location {uri!r}: percent-encoded characters.")
    if parsed.params or parsed.query or parsed.fragment:
        raise InvalidInput(f"Invalid artifact location {uri!r}.")
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost") \
            and parsed.path.startswith("/"):
        return "file", parsed.path
    if parsed.scheme == "" and not parsed.netloc and uri.startswith("/"):
        return "file", uri
    if parsed.scheme == "s3" and parsed.netloc:
        return "s3", "/".join(p for p in (parsed.netloc, parsed.path.lstrip("/")) if p)
    return None


def parse(uri: str) -> Root:
    """A declared root (``file:///path`` or ``s3://bucket/prefix``).

    Raises:
        InvalidInput: any other URI.
    """
    try:
        return Root(config.artifact_root_uri(uri))
    except ValueError as exc:
        raise InvalidInput(f"Artifact root {uri!r}: {exc}.") from None


def server_root(destination: str) -> Root:
    """The server's root from its ``--artifacts-destination`` (``checksum+file://`` or
    ``checksum+s3://``; a plain ``file://``/``s3://`` URI or absolute path is taken as the
    same root with digests).

    Raises:
        InvalidInput: not a local folder or an S3 bucket.
    """
    from mlflow.utils.file_utils import local_file_uri_to_path

    plain = destination[len(CHECKSUM_PREFIX):] if destination.startswith(CHECKSUM_PREFIX) \
        else destination
    if plain.startswith("/") or plain.startswith("file:"):
        # Read as the checksum repository reads its root (``repository._locate``).
        plain = "file://" + os.path.abspath(local_file_uri_to_path(plain))
    try:
        return Root(config.artifact_root_uri(plain), own=True)
    except ValueError as exc:
        raise InvalidInput(f"Artifact root {destination!r}: {exc}.") from None


def of_storage(storage: LocalStorage | S3Storage) -> Root:
    """The server's root as its repository's storage holds it."""
    if isinstance(storage, LocalStorage):
        return Root("file://" + storage.root, own=True)
    return Root("s3://" + "/".join(p for p in (storage.bucket, storage.prefix) if p), own=True)


def declared() -> tuple[Root, ...]:
    """The roots ``MLFLOW_SHARE_REGISTRATION_SOURCE_ROOTS`` lets registration copy from."""
    return tuple(Root(uri) for uri in config.options().registration_source_roots)
