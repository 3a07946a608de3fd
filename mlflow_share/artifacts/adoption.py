"""Adopting files stored before mlflow-share: record each one's size and SHA-256 as found.

A pass walks one artifact root (the server's own, or a declared registration source root) a
folder or a listing page at a time, skips every file that has a digest already, hashes the
others in a few threads (1 MiB reads; hashlib and file reads release the GIL) and records
them in batches through ``Ledger.adopt``: each batch is one transaction with one audit event
(``artifact.adopt``) listing its files, marked ``adoption``. Memory stays bounded by the batch
and the files in flight, whatever the size of the root. A pass that is interrupted loses at
most the batch it was hashing; running it again continues where it stopped.

Adoption never vouches for what it cannot know: the digests are of the bytes as they are
now. It records nothing under the server's ``models/`` (registered copies are recorded by
registration only) and never replaces a digest already recorded.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar

from mlflow_share.artifacts.ledger import Ledger
from mlflow_share.artifacts.repository import CHUNK, MODELS_DIR
from mlflow_share.artifacts.roots import Root
from mlflow_share.artifacts.storage import LocalStorage, S3Storage, storage_errors
from mlflow_share.errors import MlflowShareError

OPERATION = "artifact.adopt"
MAX_KEY_LENGTH = 1024  # the ledger's path column
LISTING_BATCH = 500  # listed files looked up in the ledger at once
MAX_PROBLEMS = 50  # problems kept for the report (all are counted)

_T = TypeVar("_T")


@dataclass
class Tally:
    """What a pass did (or, for a survey, would do) to one or more roots."""

    files: int = 0  # adopted (survey: to adopt)
    bytes: int = 0
    skipped: int = 0  # had a digest already
    skipped_bytes: int = 0
    failed: int = 0  # could not be read now: a later pass may adopt them
    refused: int = 0  # never adopted (links, invalid paths, files planted under models/)
    problems: list[str] = field(default_factory=list)  # the first MAX_PROBLEMS of both

    def fail(self, label: str, problem: str) -> None:
        self.failed += 1
        self._note(f"failed: {label}: {problem}")

    def refuse(self, label: str, problem: str) -> None:
        self.refused += 1
        self._note(f"refused: {label}: {problem}")

    def _note(self, line: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(line)

    def add(self, other: Tally) -> None:
        self.files += other.files
        self.bytes += other.bytes
        self.skipped += other.skipped
        self.skipped_bytes += other.skipped_bytes
        self.failed += other.failed
        self.refused += other.refused
        self.problems.extend(other.problems[:max(0, MAX_PROBLEMS - len(self.problems))])


@dataclass(frozen=True)
class Candidate:
    """A listed file with no digest yet."""

    key: str  # under its root
    ledger_key: str
    size: int  # as listed


class Adoption:
    """Adoption passes over roots, recording into ``ledger``.

    Args:
        ledger: where digests go.
        jobs: files hashed at once.
        batch_files, batch_bytes: a batch is recorded once it holds this many files or bytes.
        recorded: which of a list of ledger keys have a digest (default: the ledger's; a dry
            run on a database mlflow-share never opened passes one that knows none).
    """

    def __init__(self, ledger: Ledger | None, *, jobs: int = 4, batch_files: int = 256,
                 batch_bytes: int = 256 * 1024 * 1024,
                 recorded: Callable[[list[str]], set[str]] | None = None) -> None:
        self.ledger = ledger
        self.jobs = max(1, jobs)
        self.batch_files = max(1, batch_files)
        self.batch_bytes = max(1, batch_bytes)
        if recorded is None:
            if ledger is None:
                raise ValueError("Adoption needs a ledger or a lookup of recorded digests.")
            recorded = ledger.recorded
        self.recorded = recorded

    def survey(self, root: Root) -> Tally:
        """Count what ``adopt`` would record (files and bytes as listed); writes nothing."""
        tally = Tally()
        for candidate in self.candidates(root, root.storage(), tally):
            tally.files += 1
            tally.bytes += candidate.size
        return tally

    def adopt(self, root: Root, advance: Callable[[int], None] = lambda _: None,
              tally: Tally | None = None) -> Tally:
        """Hash and record every file of ``root`` with no digest; ``advance(n)`` after each
        file with its listed size (a progress bar's steps). Counts go to ``tally`` as
        batches commit, so an interrupted pass still says what it recorded.

        Raises:
            AuditUnavailable: a batch could not be recorded (earlier batches stay recorded).
        """
        if self.ledger is None:
            raise ValueError("Adopting needs a ledger.")
        ledger = self.ledger
        tally = tally if tally is not None else Tally()
        storage = root.storage()
        stop = threading.Event()
        pending: list[tuple[str, int, str]] = []
        pending_bytes = 0

        def flush() -> None:
            nonlocal pending_bytes
            if not pending:
                return
            kept = ledger.adopt(pending, {"op": OPERATION, "root": root.uri})
            tally.files += len(kept)
            tally.bytes += sum(size for _, size, _ in kept)
            tally.skipped += len(pending) - len(kept)  # recorded meanwhile: by an upload
            tally.skipped_bytes += pending_bytes - sum(size for _, size, _ in kept)
            pending.clear()
            pending_bytes = 0

        def take(candidate: Candidate, hashed: Future[tuple[int, str]]) -> None:
            nonlocal pending_bytes
            try:
                size, sha256 = hashed.result()
            except _read_errors() as exc:
                tally.fail(candidate.ledger_key, _reason(exc))
            else:
                pending.append((candidate.ledger_key, size, sha256))
                pending_bytes += size
                if len(pending) >= self.batch_files or pending_bytes >= self.batch_bytes:
                    flush()
            advance(candidate.size)

        in_flight: deque[tuple[Candidate, Future[tuple[int, str]]]] = deque()
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="mlflow-share-adopt") as pool:
            try:
                for candidate in self.candidates(root, storage, tally):
                    in_flight.append((candidate, pool.submit(hash_file, storage, candidate.key,
                                                             stop)))
                    while len(in_flight) > 2 * self.jobs:
                        take(*in_flight.popleft())
                while in_flight:
                    take(*in_flight.popleft())
                flush()
            except BaseException:
                stop.set()  # running hashes end at their next chunk
                for _, hashed in in_flight:
                    hashed.cancel()
                raise
        return tally

    def candidates(self, root: Root, storage: LocalStorage | S3Storage, tally: Tally
                   ) -> Iterator[Candidate]:
        """The files of ``root`` to adopt, in listing order; skips and refusals go to
        ``tally``."""
        from mlflow_share.auth.resolvers import validate_artifact_path

        for chunk in _chunks(storage.walk(), LISTING_BATCH):
            eligible = []
            for found in chunk:
                label = root.ledger_key(found.key) if not root.own else found.key
                if found.problem is not None:
                    (tally.fail if found.transient else tally.refuse)(label, found.problem)
                    continue
                try:
                    validate_artifact_path(found.key)
                except MlflowShareError:
                    tally.refuse(label, "not a valid artifact path: it could never be served")
                    continue
                if len(root.ledger_key(found.key)) > MAX_KEY_LENGTH:
                    tally.refuse(label, f"longer than {MAX_KEY_LENGTH} characters")
                    continue
                eligible.append(found)
            known = self.recorded([root.ledger_key(found.key) for found in eligible])
            for found in eligible:
                ledger_key = root.ledger_key(found.key)
                if ledger_key in known:
                    tally.skipped += 1
                    tally.skipped_bytes += found.size
                elif root.own and (found.key == MODELS_DIR
                                   or found.key.startswith(MODELS_DIR + "/")):
                    # Only registration puts files there; one without its digest was planted.
                    tally.refuse(found.key, "in registered versions' storage without a "
                                            "digest (only registration records files there)")
                else:
                    yield Candidate(found.key, ledger_key, found.size)


def hash_file(storage: LocalStorage | S3Storage, key: str,
              stop: threading.Event | None = None) -> tuple[int, str]:
    """``(size, sha256)`` of the bytes at ``key``, read once in 1 MiB chunks."""
    stream, _ = storage.open(key)
    with stream:
        return digest_stream(stream, stop)


def digest_stream(stream: BinaryIO, stop: threading.Event | None = None) -> tuple[int, str]:
    sha, size = hashlib.sha256(), 0
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:  # local files: straight into one buffer, no copies
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while count := readinto(buffer):
            sha.update(view[:count])
            size += count
            if stop is not None and stop.is_set():
                raise InterruptedError("adoption interrupted")
    else:
        while chunk := stream.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
            if stop is not None and stop.is_set():
                raise InterruptedError("adoption interrupted")
    return size, sha.hexdigest()


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading one stored file may raise that fails that file only."""
    return (*storage_errors(), MlflowShareError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MlflowShareError):
        return exc.message
    if isinstance(exc, FileNotFoundError):
        return "disappeared before it was read"
    if isinstance(exc, OSError):
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    return f"cannot be read ({type(exc).__name__}: {str(exc)[:200]})"
