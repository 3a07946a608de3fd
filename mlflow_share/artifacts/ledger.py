"""The digest ledger: the size and SHA-256 of every stored file, recorded with its audit event.

A file is published (renamed into place) inside the transaction that records its digest row
and its audit event, while that transaction holds the chain's write lock: two uploads to one
path publish and record in the same order, so the file and its row always agree. If the
transaction cannot commit, the staged file is discarded and nothing is visible.

Files stored before mlflow-share are *adopted* (``adopt``): their digests, hashed as found,
are recorded with origin ``adoption`` and never replace a digest already recorded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_share import db
from mlflow_share.audit import models as audit_models
from mlflow_share.audit.log import (
    CHAIN_LOCK_KEY,
    begin_write,
    committed,
    record_in_transaction,
    writer_lock,
)
from mlflow_share.errors import AuditUnavailable, InvalidInput

_logger = logging.getLogger(__name__)

_T = db.artifact_digests
_LOOKUP_BATCH = 500  # paths per IN (...) query: far below every driver's parameter limit


@dataclass(frozen=True)
class Digest:
    path: str
    size: int
    sha256: str
    audit_seq: int | None
    origin: str = db.DIGEST_UPLOAD

    @property
    def adopted(self) -> bool:
        """Trusted on adoption: hashed as found in storage, not as the bytes came in."""
        return self.origin == db.DIGEST_ADOPTION


class Ledger:
    """Digest rows in mlflow-share's database (MLflow's tracking database)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def for_environment(cls) -> Ledger:
        """The ledger of the server this process belongs to (or of ``MLFLOW_TRACKING_URI``)."""
        from mlflow.server import BACKEND_STORE_URI_ENV_VAR


        uri = os.environ.get(BACKEND_STORE_URI_ENV_VAR) or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri or not db.strip_scheme(uri).startswith(("sqlite:", "postgresql")):
            raise InvalidInput(
                "A checksum+ artifact repository records digests in mlflow-share's database: "
                "use it as `--artifacts-destination` of an mlflow-share server, or set "
                "MLFLOW_TRACKING_URI to that database's URI."
            )
        uri = db.strip_scheme(uri)
        db.ensure_schema(uri)
        return cls(db.get_engine(uri))

    # -- reading ----------------------------------------------------------------------------
    def get(self, path: str) -> Digest | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(_T).where(_T.c.path == path)).first()
        return _digest(row) if row is not None else None

    def get_audited(self, path: str) -> tuple[Digest | None, str | None]:
        """The row of ``path`` and the SHA-256 its audit event recorded, in one query.

        A row edited to match a replaced file no longer matches its event (the chain itself
        is checked by ``mlflow-share audit verify``).
        """
        events = audit_models.events
        query = (sa.select(_T, events.c.details)
                 .select_from(_T.outerjoin(events, events.c.seq == _T.c.audit_seq))
                 .where(_T.c.path == path))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None, None
        return _digest(row), _recorded_sha256(row.details, path)

    def recorded(self, paths: Iterable[str]) -> set[str]:
        """Which of ``paths`` have a digest (one query per 500 paths)."""
        with self.engine.connect() as conn:
            return _present(conn, list(paths))

    def settle(self) -> None:
        """Wait until the appends and digest writes in flight now have committed."""
        with writer_lock(self.engine), self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY})")
            else:
                begin_write(conn)
            conn.rollback()

    # -- writing ----------------------------------------------------------------------------
    def record(self, files: Iterable[tuple[str, int, str]], change: dict[str, Any],
               publish: Callable[[], None] | None = None) -> int:
        """Record ``(path, size, sha256)`` rows and their audit event in one transaction.

        ``publish`` (moving staged bytes into place) runs inside it, after the rows are
        written and before the commit: if it fails, nothing is recorded.
        """
        rows = [{"path": p, "size": size, "sha256": sha} for p, size, sha in files]
        change = {**change, "files": rows}
        return self.audited(change, lambda conn, seq: self._upsert(conn, rows, seq), publish)

    def adopt(self, files: Iterable[tuple[str, int, str]], change: dict[str, Any]
              ) -> list[tuple[str, int, str]]:
        """Record digests of files found in storage, origin ``adoption``, with one audit event
        listing them; returns those recorded.

        Only paths with no digest yet are recorded: a digest taken as the bytes came in (or
        adopted earlier) is never replaced by what storage holds now, which may have changed.
        The check runs under the chain's write lock, so an upload that published the path
        since it was hashed wins.
        """
        wanted = {path: (path, size, sha) for path, size, sha in files}
        kept: list[tuple[str, int, str]] = []

        def describe(conn: sa.Connection) -> dict[str, Any] | None:
            if conn.dialect.name == "postgresql":  # SQLite: BEGIN IMMEDIATE holds it already
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY})")
            present = _present(conn, list(wanted))
            kept.extend(entry for path, entry in wanted.items() if path not in present)
            if not kept:
                return None
            return {**change, "origin": db.DIGEST_ADOPTION,
                    "files": [{"path": p, "size": size, "sha256": sha} for p, size, sha in kept]}

        def insert(conn: sa.Connection, seq: int) -> None:
            now = db.now_ms()
            conn.execute(_T.insert(), [
                {"path": p, "size": size, "sha256": sha, "audit_seq": seq, "recorded_at": now,
                 "origin": db.DIGEST_ADOPTION} for p, size, sha in kept])

        self._write(describe, insert)
        return kept

    def forget(self, prefix: str, change: dict[str, Any],
               remove: Callable[[], None] | None = None) -> int:
        """Drop the rows at or under ``prefix`` with an audit event; ``remove`` deletes bytes."""
        prefix = prefix.rstrip("/")

        def delete(conn: sa.Connection, seq: int) -> None:
            if prefix:
                conn.execute(_T.delete().where(sa.or_(
                    _T.c.path == prefix,
                    _T.c.path.like(_like_escape(prefix) + "/%", escape="\\"))))
            else:
                conn.execute(_T.delete())

        return self.audited({**change, "path": prefix}, delete, remove)

    def audited(self, change: dict[str, Any], rows: Callable[[sa.Connection, int], None],
                effect: Callable[[], None] | None = None) -> int:
        """One write transaction: the audit event of ``change``, then ``rows(conn, seq)``,
        then ``effect()`` (a file operation), then the commit; all or nothing."""
        seq = self._write(lambda conn: change, rows, effect)
        assert seq is not None
        return seq

    def _write(self, describe: Callable[[sa.Connection], dict[str, Any] | None],
               rows: Callable[[sa.Connection, int], None],
               effect: Callable[[], None] | None = None) -> int | None:
        """``audited``, with the change described inside the transaction (under the lock);
        ``describe`` returning ``None`` writes nothing."""
        with writer_lock(self.engine), self.engine.connect() as conn:
            begin_write(conn)
            try:
                change = describe(conn)
                if change is None:
                    conn.rollback()
                    return None
                seq = record_in_transaction(conn, [change], action=change.get("op"))
                rows(conn, seq)
                if effect is not None:
                    effect()
            except BaseException:
                conn.rollback()
                raise
            try:
                conn.commit()
            except sa.exc.SQLAlchemyError as exc:
                _logger.error("mlflow-share could not record artifact digests: %s", exc)
                raise AuditUnavailable(
                    "The artifact's digest could not be recorded; try again later.") from None
        committed(seq)
        return seq

    @staticmethod
    def _upsert(conn: sa.Connection, rows: list[dict[str, Any]], seq: int) -> None:
        now = db.now_ms()
        for row in rows:
            values = {**row, "audit_seq": seq, "recorded_at": now, "origin": db.DIGEST_UPLOAD}
            updated = conn.execute(
                _T.update().where(_T.c.path == row["path"]).values(**values)).rowcount
            if not updated:
                conn.execute(_T.insert().values(**values))


def _present(conn: sa.Connection, paths: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(paths), _LOOKUP_BATCH):
        rows: list[Any] = list(conn.execute(sa.select(_T.c.path).where(
            _T.c.path.in_(paths[start:start + _LOOKUP_BATCH]))).scalars())
        found.update(str(path) for path in rows)
    return found


def _recorded_sha256(details: str | None, path: str) -> str | None:
    try:
        changes = json.loads(details or "{}").get("changes") or []
    except (ValueError, AttributeError):
        return None
    for change in changes:
        for entry in change.get("files") or []:
            if entry.get("path") == path:
                return str(entry.get("sha256"))
    return None


def _digest(row: Any) -> Digest:
    return Digest(str(row.path), int(row.size), str(row.sha256),
                  int(row.audit_seq) if row.audit_seq is not None else None, str(row.origin))


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
