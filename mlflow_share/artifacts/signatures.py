"""Where registered versions' OMS signatures are kept: one row per version and signing key.

A version may carry signatures of several keys (signed by an earlier key, then again after a
rotation retired it); each row is written once, with an audit event, and never changed. The
table lives in mlflow-share's database beside the manifests, created on first use.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from mlflow_share import db

_metadata = sa.MetaData()

signatures = sa.Table(
    "share_model_signatures",
    _metadata,
    sa.Column("model_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("bundle", sa.Text, nullable=False),  # the sigstore bundle, as signed
    sa.Column("bundle_sha256", sa.String(64), nullable=False),  # as the audit event records it
    sa.Column("audit_seq", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

_READY: set[str] = set()
_READY_LOCK = threading.Lock()


def ensure_table(engine: sa.Engine) -> None:
    """Create the table once per process and database; safe from several processes at once."""
    url = engine.url.render_as_string(hide_password=False)
    if url in _READY:
        return
    with _READY_LOCK:
        for attempt in range(5):
            try:
                _metadata.create_all(engine, checkfirst=True)
                break
            except (IntegrityError, OperationalError, ProgrammingError):
                if attempt == 4:  # another process kept creating it, or the database is gone
                    raise
                time.sleep(0.05 * (attempt + 1))
        _READY.add(url)


@dataclass(frozen=True)
class StoredSignature:
    """One stored signature of a version."""

    key_id: str
    bundle: str
    bundle_sha256: str
    audit_seq: int | None
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "bundle": self.bundle,
                "bundle_sha256": self.bundle_sha256, "created_at": self.created_at}


def stored(engine: sa.Engine, model_id: str, version: int) -> list[StoredSignature]:
    """The version's signatures, newest first."""
    ensure_table(engine)
    t = signatures.c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(signatures).where(
            t.model_id == model_id, t.version == version).order_by(t.created_at.desc())).all()
    return [StoredSignature(str(r.key_id), str(r.bundle), str(r.bundle_sha256), r.audit_seq,
                            int(r.created_at)) for r in rows]


def insert(conn: sa.Connection, *, model_id: str, version: int, key_id: str, bundle: str,
           bundle_sha256: str, seq: int) -> None:
    """Write one signature row inside the caller's audited transaction."""
    conn.execute(signatures.insert().values(
        model_id=model_id, version=version, key_id=key_id, bundle=bundle,
        bundle_sha256=bundle_sha256, audit_seq=seq, created_at=db.now_ms()))


def exists(conn: sa.Connection, model_id: str, version: int, key_id: str) -> bool:
    t = signatures.c
    return conn.execute(sa.select(t.key_id).where(
        t.model_id == model_id, t.version == version, t.key_id == key_id)).first() is not None


def unsigned_versions(engine: sa.Engine, key_ids: list[str], limit: int,
                      after: tuple[str, int] | None = None) -> list[tuple[str, int, str]]:
    """Up to ``limit`` registered versions, ``(model_id, version, name)``, with no signature
    by any of ``key_ids``, in (model id, version) order after ``after``."""
    ensure_table(engine)
    m = db.model_manifests.c
    query = sa.select(m.model_id, m.version, m.name).where(~_signed(key_ids))
    if after is not None:
        query = query.where(sa.or_(m.model_id > after[0],
                                   sa.and_(m.model_id == after[0], m.version > after[1])))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(m.model_id, m.version).limit(limit)).all()
    return [(str(r.model_id), int(r.version), str(r.name)) for r in rows]


def _signed(key_ids: list[str]) -> sa.Exists:
    m, s = db.model_manifests.c, signatures.c
    return sa.select(s.model_id).where(s.model_id == m.model_id, s.version == m.version,
                                       s.key_id.in_(key_ids)).exists()


def count_unsigned(engine: sa.Engine, key_ids: list[str]) -> int:
    """How many registered versions have no signature by any of ``key_ids``."""
    ensure_table(engine)
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(db.model_manifests)
                                .where(~_signed(key_ids))).scalar() or 0)
