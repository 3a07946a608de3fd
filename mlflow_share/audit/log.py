"""Appending to the audit chain: inside a caller's transaction, or on its own.

A change and its event commit in one transaction (``record_in_transaction``); an event with no
change of its own (a read, a denial) is appended by ``AuditAppender`` on the serving thread
before the response is released. Appends are serialized across threads and processes: an
``flock`` and ``BEGIN IMMEDIATE`` on SQLite, an advisory transaction lock on PostgreSQL.
Neither blocks readers of MLflow's tables.
"""

from __future__ import annotations

import contextvars
import getpass
import logging
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_share.audit import models
from mlflow_share.audit.verify import EventFilter
from mlflow_share.errors import AuditUnavailable

_logger = logging.getLogger(__name__)

# The advisory lock key of the chain on PostgreSQL (any constant, unique to mlflow-share).
CHAIN_LOCK_KEY = 7219350002


@dataclass
class AuditContext:
    """What the enforcement point knows about one request; the stores add what changed.

    One context lives for one HTTP request. The first transaction that changes something
    during the request carries the request's event (``recorded_seq``); an event appended after
    it in the same request (a second transaction) links back through ``request_id``.
    """

    request_id: str | None = None  # None (and no method, route, client) outside a request
    method: str | None = None
    route: str | None = None
    client: str | None = None
    action: str = ""
    principal: str = "anonymous"
    resource_kind: str | None = None
    resource_id: str | None = None
    resource_name: str | None = None
    owner_team: str | None = None
    decision: str = "allow"
    reason: str | None = None
    create_team: str | None = None  # the team that will own what this request creates
    public: bool = False  # health checks and the UI's files: not audited
    other_teams: list[str] = field(default_factory=list)  # every owner team the request touched
    recorded_status: int | None = None
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
            "method": self.method, "route": self.route[:512] if self.route else None,
            "resource_kind": self.resource_kind, "resource_id": self.resource_id,
            "resource_name": self.resource_name, "owner_team": self.owner_team,
            "decision": self.decision, "status": status,
            "client": self.client[:64] if self.client is not None else None,
            "owner_teams": models.encode_teams(self.other_teams, self.owner_team),
            "details": models.encode_details(details),
        }


AUDIT_CONTEXT: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "mlflow_share_audit_context", default=None
)


def note_principal(user: str) -> None:
    """Name the caller of the current request's event (known only once its checks passed)."""
    ctx = AUDIT_CONTEXT.get()
    if ctx is not None:
        ctx.principal = user


def note_resource(kind: str, resource_id: str | None, name: str | None,
                  owner_team: str | None) -> None:
    """Name the resource of the current request's event (the first one named wins)."""
    ctx = AUDIT_CONTEXT.get()
    if ctx is None:
        return
    if owner_team is not None and owner_team not in ctx.other_teams:
        ctx.other_teams.append(owner_team)
    if ctx.resource_kind is None:
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


# -- serializing SQLite writers ---------------------------------------------------------------
class _WriterLock:
    """One writer at a time per SQLite file, across threads and processes, woken at once.

    SQLite's own busy handler polls with sleeps of up to 100 ms, so writers queued on the
    database lock wait far longer than the lock is held. Writers of this server take an
    ``flock`` on a file beside the database first (the kernel wakes the next one the moment
    it is released), then ``BEGIN IMMEDIATE``, which then never waits. Re-entrant per thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._pid = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        import fcntl

        with self._thread_lock:
            if self._depth == 0:
                if self._fd is None or self._pid != os.getpid():  # opened once per process
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                    self._pid = os.getpid()
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)


_WRITER_LOCKS: dict[str, _WriterLock] = {}
_WRITER_LOCKS_GUARD = threading.Lock()


@contextmanager
def writer_lock(engine: Engine) -> Iterator[None]:
    """Hold the SQLite writer lock of ``engine``'s database (no-op for other databases)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    path = os.path.abspath(database) + ".mlflow-share-lock"
    with _WRITER_LOCKS_GUARD:
        lock = _WRITER_LOCKS.setdefault(path, _WriterLock(path))
    with lock.hold():
        yield


# -- the chain ------------------------------------------------------------------------------
def begin_write(conn: sa.Connection) -> None:
    """Start the connection's transaction holding the database's write lock (SQLite)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def append(conn: sa.Connection, rows: list[dict[str, Any]], *, commit: bool = False
           ) -> list[int]:
    """Chain ``rows`` after the current head inside ``conn``'s transaction; returns their seqs.

    SQLite: the caller holds the write lock (``BEGIN IMMEDIATE``, or its own earlier writes).
    ``commit=True``: the caller commits right after this and writes nothing more; where that
    saves a round trip (PostgreSQL) the transaction commits here, with its event, and the
    caller's commit finds nothing left to do.
    """
    if not conn.in_transaction():
        conn.begin()  # so that the caller's ``conn.commit()`` commits what the driver wrote
    return _append_rows(conn.connection.dbapi_connection, conn.dialect.name,
                        conn.dialect.paramstyle, rows, commit=commit)


def committed(seq: int) -> None:
    """Tell the request that the transaction carrying event ``seq`` has committed."""
    ctx = AUDIT_CONTEXT.get()
    if ctx is not None and ctx.recorded_seq is None:
        ctx.recorded_seq, ctx.recorded_status = seq, 200


_RAW_HEAD = f"SELECT seq, hash FROM {models.TABLE} ORDER BY seq DESC LIMIT 1"
_LOCK_CHAIN = f"SELECT pg_advisory_xact_lock({CHAIN_LOCK_KEY})"


def _append_rows(dbapi_connection: Any, dialect: str, paramstyle: str,
                 rows: list[dict[str, Any]], *, commit: bool = False) -> list[int]:
    """Lock the chain (PostgreSQL), read its head and insert ``rows`` linked after it.

    Talks to the driver directly: SQLAlchemy's per-statement work costs several times the
    SQLite commit itself (~0.1 ms in WAL mode), and an append runs on every request. One
    event on PostgreSQL goes in one round trip (``_append_pipelined``, which also commits if
    ``commit``); otherwise a statement at a time, and the caller commits.
    """
    if len(rows) == 1 and _pipelines(dbapi_connection):
        return [_append_pipelined(dbapi_connection, rows[0], commit=commit)]
    cursor = dbapi_connection.cursor()
    try:
        return _append_on(cursor, dialect, paramstyle, rows)
    finally:
        cursor.close()


def _append_on(cursor: Any, dialect: str, paramstyle: str, rows: list[dict[str, Any]]
               ) -> list[int]:
    if dialect == "postgresql":
        cursor.execute(_LOCK_CHAIN)  # held to the transaction's end; the head is read after
    cursor.execute(_RAW_HEAD)
    head = cursor.fetchone()
    seq, prev_hash = (int(head[0]), str(head[1])) if head else (0, models.GENESIS_HASH)
    seqs = []
    for row in rows:
        models.fit(row)
        seq += 1
        row["seq"], row["prev_hash"] = seq, prev_hash
        prev_hash = row["hash"] = models.event_hash(seq, prev_hash,
                                                    [row[name] for name in models.FIELDS])
        seqs.append(seq)
    marks = ", ".join(["?" if paramstyle == "qmark" else "%s"] * len(models.COLUMNS))
    insert = f"INSERT INTO {models.TABLE} ({', '.join(models.COLUMNS)}) VALUES ({marks})"
    values = [[row[name] for name in models.COLUMNS] for row in rows]
    if len(values) == 1:
        cursor.execute(insert, values[0])
    else:
        cursor.executemany(insert, values)
    return seqs


# -- PostgreSQL: the whole append in one round trip ------------------------------------------
# The chain lock is held from the moment it is granted until the transaction ends, so every
# round trip to the client inside that window (and the client thread's wait for the GIL
# after each) serializes all audited commits. Pipelined, the lock, the head, the hash, the
# insert and (when asked) the commit happen in the database in one go: the hash is SHA-256 of
# ``models.canonical`` built in SQL from the JSON that Python encoded for the fields, so
# ``audit verify`` recomputes exactly what was stored. The insert is an ordinary prepared
# statement, checked by the same append-only trigger as any other.
_PIPELINED_APPEND = (
    f"INSERT INTO {models.TABLE} ({', '.join(models.COLUMNS)}) "
    f"SELECT h.seq + 1, h.hash, {', '.join(['%s'] * len(models.FIELDS))}, "
    "encode(sha256(convert_to('[' || (h.seq + 1) || ',\"' || h.hash || '\",' || %s, 'UTF8')),"
    " 'hex') "
    f"FROM (SELECT COALESCE(max(seq), 0) AS seq FROM {models.TABLE}) AS m, LATERAL ("
    f"SELECT m.seq AS seq, COALESCE((SELECT hash FROM {models.TABLE} WHERE seq = m.seq),"
    f" '{models.GENESIS_HASH}') AS hash) AS h "
    "RETURNING seq, prev_hash, hash"
)
_PIPELINES: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _pipelines(dbapi_connection: Any) -> bool:
    """psycopg 3 with pipeline support, PostgreSQL >= 11 (``sha256``), a UTF-8 database (so
    that ``convert_to`` gives the bytes Python hashes)."""
    if type(dbapi_connection).__module__.split(".")[0] != "psycopg":
        return False
    known = _PIPELINES.get(dbapi_connection)
    if known is None:
        import psycopg

        info = dbapi_connection.info
        known = (psycopg.Pipeline.is_supported() and info.server_version >= 110000
                 and info.parameter_status("server_encoding") in ("UTF8", b"UTF8"))
        _PIPELINES[dbapi_connection] = known
    return known


def _append_pipelined(dbapi_connection: Any, row: dict[str, Any], *, commit: bool) -> int:
    models.fit(row)
    values = [row[name] for name in models.FIELDS]
    # The canonical array without its first two items: "[seq,prev_hash," is added in SQL.
    tail = models.encode_values(values)[1:]
    lock, insert = dbapi_connection.cursor(), dbapi_connection.cursor()
    try:
        try:
            with dbapi_connection.pipeline():  # sent, and answered, as the block ends
                lock.execute(_LOCK_CHAIN)
                insert.execute(_PIPELINED_APPEND, [*values, tail])
                if commit:
                    lock.execute("COMMIT")
        except Exception as exc:
            # An error the server answered (an SQLSTATE) or one raised before sending left
            # nothing committed; a connection lost once the COMMIT was on its way did not say.
            if commit and dbapi_connection.closed and getattr(exc, "sqlstate", None) is None:
                raise CommitUncertain(str(exc)) from exc
            raise
        seq, prev_hash, digest = insert.fetchone()
    finally:
        lock.close()
        insert.close()
    row["seq"], row["prev_hash"], row["hash"] = int(seq), prev_hash, digest
    return int(seq)


def append_and_commit(dbapi_connection: Any, dialect: str, paramstyle: str,
                      rows: list[dict[str, Any]]) -> list[int]:
    """``append`` in a transaction of its own on a bare DB-API connection, committed.

    The commit is a round trip of its own: if the connection fails before it, nothing was
    committed and the caller may retry on a fresh connection; if it fails during it, the
    commit is in doubt (``CommitUncertain``) and a retry could record the event twice.
    """
    try:
        if dialect == "sqlite":
            dbapi_connection.execute("BEGIN IMMEDIATE")  # sqlite3's own shortcut
        seqs = _append_rows(dbapi_connection, dialect, paramstyle, rows)
    except BaseException:
        dbapi_connection.rollback()
        raise
    try:
        dbapi_connection.commit()
    except Exception as exc:
        # The commit may have reached the database: retrying could record the event twice.
        raise CommitUncertain(str(exc)) from exc
    return seqs


class CommitUncertain(Exception):
    """A commit failed in a way that does not tell whether it happened."""


def record_in_transaction(conn: sa.Connection, changes: list[dict[str, Any]],
                          *, action: str | None = None, commit: bool = False) -> int:
    """Append the event of a change in the transaction that makes it.

    Inside a request the first such event is the request's own event (status 200, what MLflow
    answers when the transaction commits); if the response differs, the middleware appends a
    correction. The caller calls ``committed(seq)`` once the transaction has committed: until
    then the request counts as unrecorded, so a failed commit still gets its event. Outside a
    request the operator is the OS user of the process. ``commit``: as for ``append``.
    """
    ctx = AUDIT_CONTEXT.get()
    if ctx is None:
        system = AuditContext(principal=system_principal(), action="store.write")
        row = system.event(status=None, changes=changes, source="store", action=action)
    elif ctx.recorded_seq is None:
        row = ctx.event(status=200, changes=changes)
    else:
        row = ctx.event(status=None, changes=changes, source="store", action=action)
        row["details"] = models.encode_details({"changes": changes, "part_of": ctx.recorded_seq})
    try:
        return append(conn, [row], commit=commit)[0]
    except (CommitUncertain, sa.exc.SQLAlchemyError, conn.dialect.loaded_dbapi.Error) as exc:
        _logger.error("mlflow-share could not append to the audit log: %s", exc)
        if getattr(conn.connection.dbapi_connection, "closed", False):
            conn.invalidate()  # so that the caller's rollback does not fail on it instead
        if isinstance(exc, CommitUncertain):
            raise AuditUnavailable(
                "The database connection failed as the change was committed: it may or may not "
                "have been made (with its audit event). Check before trying again.") from None
        raise AuditUnavailable(
            "The audit log is unavailable, so the change was not made. Try again later."
        ) from None


@contextmanager
def audited_write(engine: Engine, change: dict[str, Any]) -> Iterator[sa.Connection]:
    """One write transaction that commits with its audit event; the body may add to ``change``."""
    with writer_lock(engine), engine.connect() as conn:
        begin_write(conn)
        yield conn
        seq = record_in_transaction(conn, [change], action=f"share.{change['op']}", commit=True)
        conn.commit()
    committed(seq)


# -- appending request events ----------------------------------------------------------------
class AuditAppender:
    """Appends request events (reads, denials, failures) from the thread that served them.

    An append is one short transaction on the driver (~0.1 ms on SQLite in WAL mode) on a
    connection of a small pool of its own, with no hand-off to another thread: handing off
    costs more than the append, because a waiting thread can need up to Python's 5 ms switch
    interval to get the GIL back from busy request threads.
    """

    def __init__(self, engine: Engine) -> None:
        from mlflow_share import db

        self.engine = db.get_engine(engine.url.render_as_string(hide_password=False),
                                    purpose="audit")
        self.failing_since: float | None = None  # monotonic time of the first failed append

    def append(self, row: dict[str, Any], attempts: int = 6) -> int:
        try:
            seq = self._append(row, attempts)
        except AuditUnavailable:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            raise
        self.failing_since = None
        return seq

    def healthy(self) -> bool:
        """True unless appends are failing now. After a failed append, each call appends a
        probe event (``health.audit_probe``, one attempt): the appender is healthy again
        once a real append commits, whatever the failure was (connection, trigger, disk)."""
        if self.failing_since is None:
            return True
        probe = AuditContext(request_id=new_request_id(), method="GET",
                             route="/api/2.0/mlflow-share/ready", action="health.audit_probe",
                             principal="mlflow-share")
        try:
            self.append(probe.event(status=200, source="health"), attempts=1)
        except AuditUnavailable:
            return False
        return True

    def _append(self, row: dict[str, Any], attempts: int) -> int:
        """Append one event and commit it; ``AuditUnavailable`` if that cannot be done."""
        dialect = self.engine.dialect
        # A refused connection (a restart, max_connections reached) is retried for ~1.5 s.
        for attempt in range(attempts):
            try:
                with self.engine.connect() as connection:
                    dbapi_connection = connection.connection.dbapi_connection
                    try:
                        with writer_lock(self.engine):
                            return append_and_commit(dbapi_connection, dialect.name,
                                                     dialect.paramstyle, [row])[0]
                    except Exception:
                        connection.invalidate()  # never hand a broken connection back
                        raise
            except Exception as exc:  # noqa: BLE001 - retry on a fresh connection, then refuse
                if attempt == attempts - 1 or isinstance(exc, CommitUncertain):
                    _logger.error("mlflow-share could not append to the audit log: %s", exc)
                    raise AuditUnavailable(
                        "The audit log is unavailable; the request was not served.") from None
                time.sleep(0.05 * 2 ** attempt)
        raise AssertionError("unreachable")


# Argument and field names whose values never enter the log: it can never be scrubbed.
_SECRET_NAME = re.compile(r"secret|passw|token|api_?key|auth_config|credential|private",
                          re.IGNORECASE)
REDACTED = "<redacted>"


def _is_secret(name: str) -> bool:
    # A secret's name or ID identifies it without revealing it.
    return bool(_SECRET_NAME.search(name)) and not name.lower().endswith(("name", "id", "ids"))


def summarize(value: Any, depth: int = 0) -> Any:
    """A JSON-able, bounded copy of a store argument for an event's ``changes``.

    Values under secret-looking names (secrets, passwords, tokens, API keys, auth configs)
    are replaced by ``<redacted>``, at any depth.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value[:2000] if isinstance(value, str) else value
    if depth > 4:
        return repr(value)[:200]
    if isinstance(value, Mapping):
        return {str(k): REDACTED if _is_secret(str(k)) else summarize(v, depth + 1)
                for k, v in list(value.items())[:100]}
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


# -- action names ----------------------------------------------------------------------------
# An event stores its action as the decision point knew it: the route's key (``mlflow.GetRun``,
# ``mlflow.artifacts.DownloadArtifact``, ``fn:_graphql``, ``flask:mlflow_share_api.grant``,
# ``native:download_artifact``), or a name of mlflow-share's own (``gateway.invoke``,
# ``request.outcome``, ``share.<op>`` for a change made outside a request). The chain keeps that
# spelling; readers (the API, ``audit export``, the access page) see one human name per
# operation, derived from it by rule, and the filters take either:
#
# - an operation named ``<verb><Object>`` or ``<verb>_<object>`` reads ``<object>.<verb>``:
#   ``mlflow.GetRegisteredModel`` -> ``registered_model.read`` (``get`` reads ``read``),
#   ``mlflow.SearchRuns`` -> ``runs.search``, ``flask:mlflow_share_sharing.publish_package``
#   and ``share.package.publish`` -> ``package.publish``, ``create_team`` -> ``team.create``;
#   an operation that is not a verb first keeps its words (``fn:_graphql`` -> ``graphql``);
# - mlflow-share's own endpoints: the admin API's as above (``grant``, ``revoke``,
#   ``token.create``); another area's names without an object take the area first
#   (``flask:mlflow_share_audit.events`` -> ``audit.events``, ``..._usage.usage`` -> ``usage``);
# - MLflow's hand-written views drop their ``serve_`` prefix and ``_handler`` suffix,
#   ``fn:`` handlers their leading underscore; a namespace (``mlflow.artifacts.``) is dropped;
# - every other action is already a name (``gateway.invoke``, ``unrouted``, ``store.write``).
#
# Different spellings of one operation share its name (``native:download_artifact`` and
# ``mlflow.artifacts.DownloadArtifact`` are both ``artifact.download``).
_ROUTE_PREFIXES = ("mlflow.", "fn:", "flask:", "native:")
_SHARE_ENDPOINT = "flask:mlflow_share_"
_SHARE_ADMIN_AREA = "api"
_VERBS = frozenset({
    "abort", "add", "approve", "archive", "attach", "batch", "bulk", "calculate", "cancel",
    "complete", "copy", "create", "delete", "detach", "disable", "download", "edit", "enable",
    "end", "explain", "export", "finalize", "generate", "get", "grant", "import", "install",
    "invoke", "link", "list", "log", "move", "patch", "post", "protect", "publish", "query",
    "register", "reject", "remove", "rename", "reset", "resolve", "restore", "revoke", "search",
    "send", "set", "show", "start", "submit", "subscribe", "sync", "test", "transition",
    "unprotect", "unsubscribe", "update", "upload", "upsert", "validate", "verify", "withdraw",
})
_VERB_NAMES = {"get": "read"}  # how a verb reads; the others read as they are spelt
_RAW_VERBS: dict[str, tuple[str, ...]] = {"read": ("get", "read")}
_WORD = re.compile(r"[A-Z]+[0-9]*(?![a-z])|[A-Z][a-z0-9]*|[a-z0-9]+")


def _words(operation: str) -> list[str]:
    """``GetModelVersion`` and ``get_model_version`` -> ``["get", "model", "version"]``."""
    return [w.lower() for w in _WORD.findall(operation)]


def _readable(words: list[str]) -> str:
    """``<object>.<verb>`` for a verb first (``batch get``, ``get or create``: one verb)."""
    if len(words) < 2 or words[0] not in _VERBS:
        return "_".join(words)
    verb, rest = [words[0]], words[1:]
    if verb[0] in ("batch", "bulk") and rest[0] in _VERBS and len(rest) > 1:
        verb, rest = verb + rest[:1], rest[1:]
    elif rest[0] == "or" and len(rest) > 2 and rest[1] in _VERBS:
        verb, rest = verb + rest[:2], rest[2:]
    return "_".join(rest) + "." + "_".join(_VERB_NAMES.get(w, w) for w in verb)


def action_name(stored: str) -> str:
    """The human name of a stored action (see above); the same for every spelling of it."""
    if stored.startswith(_SHARE_ENDPOINT):
        area, dot, endpoint = stored[len(_SHARE_ENDPOINT):].partition(".")
        name = _readable(_words(endpoint))
        if not dot or not name:
            return stored
        if "." in name or area in (_SHARE_ADMIN_AREA, name):
            return name
        return f"{area}.{name}"
    if stored.startswith(_ROUTE_PREFIXES):
        words = _words(re.split(r"[.:]", stored)[-1])
        if stored.startswith("flask:") and len(words) > 1 and words[0] == "serve":
            words = words[1:]
        if len(words) > 1 and words[-1] == "handler":
            words = words[:-1]
        return _readable(words) or stored
    if stored.startswith("share.") and len(stored) > len("share."):
        operation = stored[len("share."):]
        return operation if "." in operation else (_readable(_words(operation)) or stored)
    return stored


def _spellings(name: str) -> list[list[str]]:
    """The word lists ``_readable`` could have made ``name`` from (checked by the caller)."""
    found = [name.split("_")] if "." not in name else []
    obj, dot, verb = name.rpartition(".")
    verbs = verb.split("_")
    # A verb is at most three words (``batch_get``, ``get_or_create``): longer ones are no
    # verb, and their spellings would grow as 2^words (a filter must stay cheap to ask).
    if dot and obj and "." not in obj and len(verbs) <= 3:
        parts = [_RAW_VERBS.get(w, (w,)) for w in verbs]
        found += [list(raw) + obj.split("_") for raw in product(*parts)]
    return [w for w in found if all(w)]


MAX_ACTION_FILTER = 200  # characters of an action filter that are expanded to spellings


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def stored_actions(name: str) -> tuple[list[str], list[str]]:
    """What an action filter matches: ``(exact, like)``, the stored spellings of the human
    ``name`` (and ``name`` itself, so a stored spelling filters too) and ``LIKE`` patterns
    (escaped with a backslash) for the spellings whose namespace a name leaves out."""
    exact, like = {name}, set()
    if len(name) > MAX_ACTION_FILTER:  # no action is that long: only itself can match
        return [name], []
    candidates = [f"share.{name}"]
    for words in _spellings(name):
        camel, snake = "".join(w[:1].upper() + w[1:] for w in words), "_".join(words)
        candidates += [f"mlflow.{camel}", f"fn:_{snake}", f"fn:{snake}", f"fn:_{snake}_handler",
                       f"flask:{snake}", f"flask:_{snake}", f"flask:serve_{snake}",
                       f"flask:{snake}_handler", f"flask:_{snake}_handler",
                       f"native:{snake}", f"{_SHARE_ENDPOINT}{_SHARE_ADMIN_AREA}.{snake}",
                       f"share.{snake}"]
        like.add(f"mlflow.%.{_like(camel)}")
        like.add(f"{_like(_SHARE_ENDPOINT)}%.{_like(snake)}")
    area, dot, rest = name.partition(".")
    if not dot:
        candidates.append(f"{_SHARE_ENDPOINT}{name}.{name}")
    elif "." not in rest:
        candidates += [f"{_SHARE_ENDPOINT}{area}.{'_'.join(words)}"
                       for words in _spellings(rest)]
    exact.update(c for c in candidates if action_name(c) == name)

    def example(pattern: str) -> str:  # a stored action the pattern matches
        return re.sub(r"\\(.)", r"\1", pattern.replace("%", "x"))

    return sorted(exact), sorted(p for p in like if action_name(example(p)) == name)


def action_clause(name: str) -> Any:
    """The SQL condition of an action filter: ``name`` is a human name or a stored one."""
    exact, like = stored_actions(name)
    column = models.events.c.action
    return sa.or_(column.in_(exact), *(column.like(p, escape="\\") for p in like))


@dataclass(frozen=True)
class NamedEventFilter(EventFilter):
    """An ``EventFilter`` whose ``action`` is a human name (``registered_model.read``) or a
    stored one (``mlflow.GetRegisteredModel``)."""

    def clauses(self) -> list[Any]:
        clauses = EventFilter.clauses(replace(self, action=None))
        if self.action:
            clauses.append(action_clause(self.action))
        return clauses


def readable_event(event: dict[str, Any]) -> dict[str, Any]:
    """An event as readers see it: ``action`` is the human name, ``stored_action`` the
    spelling the chain holds (and hashes)."""
    stored = event.get("action")
    if not isinstance(stored, str):
        return event
    return {**event, "action": action_name(stored), "stored_action": stored}
