"""Appending to the audit chain: inside a caller's transaction, or through a group-commit writer.

A change and its event commit in one transaction (``record_in_transaction``); an event with no
change of its own (a read, a denial) goes through ``AuditWriter``, which appends whatever is
queued in one transaction and answers each request only once its event is durable. Appends
are serialized across threads and processes: SQLite's write lock taken by ``BEGIN IMMEDIATE``,
a PostgreSQL advisory transaction lock. Neither blocks readers of MLflow's tables.
"""

from __future__ import annotations

import contextvars
import getpass
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_share.audit import models
from mlflow_share.errors import AuditUnavailable

_logger = logging.getLogger(__name__)

# The advisory lock key of the chain on PostgreSQL (any constant, unique to mlflow-share).
_CHAIN_LOCK_KEY = 7219350002
_MAX_BATCH = 512


@dataclass
class AuditContext:
    """What the enforcement point knows about one request; the stores add what changed.

    One context lives for one HTTP request. The first transaction that changes something
    during the request carries the request's event (``recorded_seq``); an event appended after
    it in the same request (a second transaction) links back through ``request_id``.
    """

    request_id: str
    method: str
    route: str
    client: str
    action: str = ""
    principal: str = "anonymous"
    resource_kind: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    owner_team: str | None = None
    decision: str = "allow"
    reason: str | None = None
    create_team: str | None = None  # the team that will own what this request creates
    recorded_seq: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def event(self, *, status: int | None, changes: list[dict[str, Any]] | None = None,
              source: str = "request", action: str | None = None) -> dict[str, Any]:
        details: dict[str, Any] = dict(self.extra)
        if changes:
            details["changes"] = changes
        if self.reason:
            details["reason"] = self.reason
        return {
            "ts": now_ms(), "request_id": self.request_id, "source": source,
            "principal": self.principal, "action": action or self.action,
            "method": self.method, "route": self.route[:512],
            "resource_kind": self.resource_kind, "resource_id": self.resource_id,
            "resource_name": self.resource_name, "owner_team": self.owner_team,
            "decision": self.decision, "status": status, "client": self.client[:64],
            "details": models.encode_details(details),
        }


AUDIT_CONTEXT: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "mlflow_share_audit_context", default=None
)


def note_resource(kind: str, resource_id: str | None, name: str | None,
                  owner_team: str | None) -> None:
    """Name the resource of the current request's event (the first one named wins)."""
    ctx = AUDIT_CONTEXT.get()
    if ctx is not None and ctx.resource_kind is None:
        ctx.resource_kind, ctx.resource_id = kind, resource_id
        ctx.resource_name, ctx.owner_team = name, owner_team


def now_ms() -> int:
    return int(time.time() * 1000)


def new_request_id() -> str:
    return uuid.uuid4().hex


def system_principal() -> str:
    """Who changes the database when no HTTP request is involved (CLI, scripts, jobs)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"system:{user}"


# -- the chain ------------------------------------------------------------------------------
def begin_write(conn: sa.Connection) -> None:
    """Start the connection's transaction holding the database's write lock (SQLite)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _lock_chain(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_CHAIN_LOCK_KEY})")
    # SQLite: the caller holds the write lock (BEGIN IMMEDIATE, or its own earlier writes).


def append(conn: sa.Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Chain ``rows`` after the current head inside ``conn``'s transaction; returns their seqs."""
    _lock_chain(conn)
    head = conn.execute(
        sa.select(models.events.c.seq, models.events.c.hash)
        .order_by(models.events.c.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (int(head[0]), str(head[1])) if head else (0, models.GENESIS_HASH)
    seqs = []
    for row in rows:
        seq += 1
        row["seq"], row["prev_hash"] = seq, prev_hash
        prev_hash = row["hash"] = models.event_hash(seq, prev_hash,
                                                    [row[name] for name in models.FIELDS])
        seqs.append(seq)
    conn.execute(models.events.insert(), rows)
    return seqs


def committed(seq: int) -> None:
    """Tell the request that the transaction carrying event ``seq`` has committed."""
    ctx = AUDIT_CONTEXT.get()
    if ctx is not None and ctx.recorded_seq is None:
        ctx.recorded_seq = seq


def record_in_transaction(conn: sa.Connection, changes: list[dict[str, Any]],
                          *, action: str | None = None) -> int:
    """Append the event of a change in the transaction that makes it.

    Inside a request the first such event is the request's own event (status 200, what MLflow
    answers when the transaction commits); if the response differs, the middleware appends a
    correction. The caller calls ``committed(seq)`` once the transaction has committed: until
    then the request counts as unrecorded, so a failed commit still gets its event. Outside a
    request the operator is the OS user of the process.
    """
    ctx = AUDIT_CONTEXT.get()
    try:
        if ctx is None:
            row = {
                "ts": now_ms(), "request_id": None, "source": "store",
                "principal": system_principal(), "action": action or "store.write",
                "method": None, "route": None, "resource_kind": None, "resource_id": None,
                "resource_name": None, "owner_team": None, "decision": "allow",
                "status": None, "client": None,
                "details": models.encode_details({"changes": changes}),
            }
            return append(conn, [row])[0]
        if ctx.recorded_seq is None:
            return append(conn, [ctx.event(status=200, changes=changes)])[0]
        row = ctx.event(status=None, changes=changes, source="store", action=action)
        row["details"] = models.encode_details({"changes": changes, "part_of": ctx.recorded_seq})
        return append(conn, [row])[0]
    except sa.exc.SQLAlchemyError as exc:
        _logger.error("mlflow-share could not append to the audit log: %s", exc)
        raise AuditUnavailable(
            "The audit log is unavailable, so the change was not made. Try again later."
        ) from None


# -- the group-commit writer -----------------------------------------------------------------
class AuditWriter:
    """One thread per process that appends queued events in batches, one transaction each.

    ``submit`` returns a future that completes when the event is committed (or fails), so a
    response is only sent once its event is durable; under load, many requests share one commit.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], Future[int]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, row: dict[str, Any]) -> Future[int]:
        self._ensure_thread()
        future: Future[int] = Future()
        self._queue.put((row, future))
        return future

    def append(self, row: dict[str, Any], timeout: float = 30.0) -> int:
        """Append one event and wait until it is committed."""
        return self.submit(row).result(timeout)

    def _ensure_thread(self) -> None:
        pid = os.getpid()
        if self._thread is not None and self._pid == pid and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != pid or not self._thread.is_alive():
                if self._pid != pid:  # forked: the parent's queue and thread are not ours
                    self._queue = queue.SimpleQueue()
                self._pid = pid
                self._thread = threading.Thread(target=self._run, name="mlflow-share-audit",
                                                 daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                seqs = self._write([row for row, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiter must learn of the failure
                _logger.error("mlflow-share could not append to the audit log: %s", exc)
                for _, future in batch:
                    future.set_exception(AuditUnavailable(
                        "The audit log is unavailable; the request was not served."))
                continue
            for (_, future), seq in zip(batch, seqs):
                future.set_result(seq)

    def _write(self, rows: list[dict[str, Any]]) -> list[int]:
        for attempt in range(3):
            try:
                with self.engine.connect() as conn:
                    begin_write(conn)
                    seqs = append(conn, rows)
                    conn.commit()
                    return seqs
            except sa.exc.OperationalError:
                if attempt == 2:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")


@contextmanager
def request_context(ctx: AuditContext) -> Iterator[AuditContext]:
    token = AUDIT_CONTEXT.set(ctx)
    try:
        yield ctx
    finally:
        AUDIT_CONTEXT.reset(token)


def summarize(value: Any, depth: int = 0) -> Any:
    """A JSON-able, bounded copy of a store argument for an event's ``changes``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value[:2000] if isinstance(value, str) else value
    if depth > 4:
        return repr(value)[:200]
    if isinstance(value, Mapping):
        return {str(k): summarize(v, depth + 1) for k, v in list(value.items())[:100]}
    if isinstance(value, (list, tuple, set)):
        items = list(value)
        out = [summarize(v, depth + 1) for v in items[:100]]
        if len(items) > 100:
            out.append(f"... {len(items) - 100} more")
        return out
    to_dict = getattr(value, "to_dictionary", None)
    if callable(to_dict):
        return summarize(to_dict(), depth + 1)
    if hasattr(value, "__dict__"):
        public = {k.lstrip("_"): v for k, v in vars(value).items()}
        return summarize(public, depth + 1)
    return repr(value)[:200]
