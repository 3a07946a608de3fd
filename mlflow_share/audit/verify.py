"""Reading the audit chain back: verification, filtered export and signed checkpoints.

``verify`` recomputes every hash from the stored columns and checks each link; it stops at the
first bad sequence number and reports the expected and actual hash. A checkpoint (the head's
seq and hash, signed with an Ed25519 key and kept outside the database) catches what a chain
alone cannot: a truncated tail, or a chain recomputed from scratch by someone with write access.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_share.audit import models
from mlflow_share.errors import InvalidInput

_BATCH = 20_000
_PARALLEL_FROM = 200_000  # below this, one process is faster than starting more


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of a verification.

    Attributes:
        ok: the chain (and the checkpoint, if given) holds.
        events: number of events checked.
        head_seq / head_hash: the last event's sequence number and hash.
        first_bad_seq: the first sequence number that does not verify.
        expected / actual: what that event's hash (or link) should be, and what is stored.
        problem: a one-line explanation.
    """

    ok: bool
    events: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    expected: str | None = None
    actual: str | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(engine: Engine, first: int, last: int) -> Iterator[tuple[Any, ...]]:
    columns = ", ".join(models.COLUMNS)
    with engine.connect() as conn:
        # A raw cursor on one snapshot: SQLAlchemy row objects would cost more than the hashing.
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            cursor.execute(f"SELECT {columns} FROM {models.TABLE} "
                           f"WHERE seq >= {int(first)} AND seq <= {int(last)} ORDER BY seq")
            while batch := cursor.fetchmany(_BATCH):
                yield from batch
        finally:
            cursor.close()


def _verify_range(engine: Engine, first: int, last: int) -> VerifyResult:
    """Check events ``first..last``; the event before ``first`` only provides its hash."""
    sha256 = hashlib.sha256
    encode = models.encode_row
    expected_seq, prev_hash = first, models.GENESIS_HASH
    count = 0
    rows = _rows(engine, max(first - 1, 1), last)
    if first > 1:
        before = next(rows, None)
        if before is None or before[0] != first - 1:
            return VerifyResult(False, 0, first - 1, "", first - 1, f"seq {first - 1}",
                                "nothing", "missing events")
        prev_hash = before[-1]
    for row in rows:
        seq = row[0]
        if seq != expected_seq:
            problem = "missing events" if seq > expected_seq else "duplicate sequence number"
            return VerifyResult(False, count, expected_seq - 1, prev_hash, expected_seq,
                                f"seq {expected_seq}", f"seq {seq}", problem)
        if row[1] != prev_hash:
            return VerifyResult(False, count, seq - 1, prev_hash, seq, prev_hash, row[1],
                                "previous-hash link broken")
        computed = sha256(encode(row)).hexdigest()
        stored_hash = row[-1]
        if computed != stored_hash:
            return VerifyResult(False, count, seq - 1, prev_hash, seq, computed, stored_hash,
                                "event content does not match its hash")
        prev_hash = stored_hash
        expected_seq += 1
        count += 1
    return VerifyResult(True, count, expected_seq - 1, prev_hash)


def _verify_range_in_process(uri: str, first: int, last: int) -> VerifyResult:
    from mlflow_share import db

    engine = db.get_engine(uri)
    engine.dispose(close=False)  # connections inherited through fork belong to the parent
    return _verify_range(engine, first, last)


def verify_chain(engine: Engine, *, processes: int | None = None,
                 parallel_from: int = _PARALLEL_FROM) -> VerifyResult:
    """Recompute every event's hash and check every link, from seq 1 to the head.

    Long chains are split into ranges checked by several processes (each range re-reads the
    hash of the event before it); the result is the same as one pass: the first bad event.
    """
    import os

    with engine.connect() as conn:
        head = conn.execute(sa.select(sa.func.max(models.events.c.seq))).scalar() or 0
    processes = processes or min(os.cpu_count() or 1, 8)
    if head < parallel_from or processes < 2:
        return _verify_range(engine, 1, max(head, 1) if head else 0)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    bounds = [1 + head * k // processes for k in range(processes + 1)]
    ranges = [(bounds[k], bounds[k + 1] - 1) for k in range(processes)]
    ranges[-1] = (ranges[-1][0], head)
    uri = engine.url.render_as_string(hide_password=False)
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        parts = list(pool.map(_verify_range_in_process, [uri] * processes,
                              [a for a, _ in ranges], [b for _, b in ranges]))
    verified = 0
    for part in parts:
        if not part.ok:
            return VerifyResult(False, verified + part.events, part.head_seq, part.head_hash,
                                part.first_bad_seq, part.expected, part.actual, part.problem)
        verified += part.events
    # Events appended after `head` was read are left for the next run.
    return VerifyResult(True, verified, parts[-1].head_seq, parts[-1].head_hash)


def hash_at(engine: Engine, seq: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(models.events.c.hash).where(
            models.events.c.seq == seq)).scalar()


# -- checkpoints ---------------------------------------------------------------------------
def _load_private_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInput(f"Cannot read an Ed25519 private key from {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{path} does not hold an Ed25519 private key.")
    return key


def _load_public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    data = path.read_bytes()
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            if isinstance(private, Ed25519PrivateKey):
                return private.public_key()
        else:
            key = serialization.load_pem_public_key(data)
            if isinstance(key, Ed25519PublicKey):
                return key
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"Cannot read an Ed25519 key from {path}: {exc}") from None
    raise InvalidInput(f"{path} does not hold an Ed25519 key.")


def generate_key(private_path: Path, public_path: Path) -> None:
    """Write a new Ed25519 key pair (PEM); the private key file is created mode 0600."""
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _checkpoint_payload(head: dict[str, Any]) -> bytes:
    return json.dumps({k: head[k] for k in ("seq", "hash", "time")}, sort_keys=True,
                      separators=(",", ":")).encode()


def sign_checkpoint(seq: int, head_hash: str, time_ms: int, key_path: Path) -> dict[str, Any]:
    """A checkpoint document: the head and its Ed25519 signature."""
    head = {"seq": seq, "hash": head_hash, "time": time_ms}
    signature = _load_private_key(key_path).sign(_checkpoint_payload(head))
    return {**head, "algorithm": "ed25519",
            "signature": base64.b64encode(signature).decode()}


def read_checkpoint(path: Path, key_path: Path) -> dict[str, Any]:
    """Load a checkpoint and check its signature against a trusted key (public or private)."""
    from cryptography.exceptions import InvalidSignature

    try:
        document = json.loads(path.read_text())
        head = {"seq": int(document["seq"]), "hash": str(document["hash"]),
                "time": int(document["time"])}
        signature = base64.b64decode(document["signature"], validate=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path} is not an mlflow-share checkpoint: {exc}") from None
    try:
        _load_public_key(key_path).verify(signature, _checkpoint_payload(head))
    except InvalidSignature:
        raise InvalidInput(f"The signature of checkpoint {path} does not verify.") from None
    return head


def check_against_checkpoint(result: VerifyResult, checkpoint: dict[str, Any],
                             stored_hash: str | None) -> VerifyResult:
    """Combine a chain verification with a checkpoint: truncation and rewrites show here."""
    if not result.ok:
        return result
    seq = int(checkpoint["seq"])
    if result.head_seq < seq:
        return VerifyResult(False, result.events, result.head_seq, result.head_hash,
                            result.head_seq + 1, checkpoint["hash"], "missing",
                            f"chain truncated: the checkpoint has seq {seq}")
    if stored_hash != checkpoint["hash"]:
        return VerifyResult(False, result.events, result.head_seq, result.head_hash, seq,
                            checkpoint["hash"], stored_hash,
                            "chain rewritten: the event at the checkpoint differs")
    return result


# -- export and paging ---------------------------------------------------------------------
@dataclass(frozen=True)
class EventFilter:
    since: int | None = None  # ms, inclusive
    until: int | None = None  # ms, exclusive
    principal: str | None = None
    team: str | None = None
    resource: str | None = None  # a resource ID or name
    action: str | None = None
    visible_teams: tuple[str, ...] | None = None  # None: everything (admins)

    def clauses(self) -> list[Any]:
        c = models.events.c
        clauses: list[Any] = []
        if self.since is not None:
            clauses.append(c.ts >= self.since)
        if self.until is not None:
            clauses.append(c.ts < self.until)
        if self.principal:
            clauses.append(c.principal == self.principal)
        if self.team:
            clauses.append(_touches(self.team))
        if self.resource:
            clauses.append(sa.or_(c.resource_id == self.resource,
                                  c.resource_name == self.resource))
        if self.action:
            clauses.append(c.action == self.action)
        if self.visible_teams is not None:
            clauses.append(sa.or_(sa.false(), *(_touches(t) for t in self.visible_teams)))
        return clauses


def _touches(team: str) -> Any:
    """Events whose request involved a resource owned by ``team`` (team names are validated
    identifiers: no commas, no LIKE wildcards but ``_``, escaped here)."""
    c = models.events.c
    pattern = "%," + team.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ",%"
    return sa.or_(c.owner_team == team, c.owner_teams.like(pattern, escape="\\"))


def event_to_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    try:
        data["details"] = json.loads(data["details"])
    except (TypeError, ValueError):
        pass
    return data


def search_events(engine: Engine, event_filter: EventFilter, *, after_seq: int = 0,
                  limit: int = 1000, newest_first: bool = False) -> list[dict[str, Any]]:
    """Events matching the filter in chain order after ``after_seq``; or, ``newest_first``,
    in reverse order before ``after_seq`` (0: from the head)."""
    seq = models.events.c.seq
    if newest_first:
        start = [seq < after_seq] if after_seq else []
        query = sa.select(models.events).where(*start, *event_filter.clauses()) \
            .order_by(seq.desc()).limit(limit)
    else:
        query = sa.select(models.events).where(seq > after_seq, *event_filter.clauses()) \
            .order_by(seq).limit(limit)
    with engine.connect() as conn:
        return [event_to_dict(row) for row in conn.execute(query)]


def iter_events(engine: Engine, event_filter: EventFilter) -> Iterator[dict[str, Any]]:
    after = 0
    while page := search_events(engine, event_filter, after_seq=after, limit=5000):
        yield from page
        after = page[-1]["seq"]
