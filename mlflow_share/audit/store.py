"""Audited writes for MLflow's SqlAlchemy stores, and the write hooks other packages add.

Every write transaction MLflow commits from a write session (``ManagedSessionMaker(
read_only=False)``) appends its audit event inside it, just before the commit: the change and
its event commit together, or neither does and MLflow answers 503. Write sessions MLflow opens
inside another (``log_batch`` does) join the outer transaction through a SAVEPOINT, so one
request is one transaction and one event. Public mutating methods note what they change
(their arguments, and the value before for tags, aliases, stages, descriptions, names and
deletions); a write from any other method is still audited, as ``unlisted``. The operator is
the authenticated principal of the request, never a client-supplied field such as ``user_id``.

This module is the mechanism only: ``audited_writes`` makes a store class's mutating
methods audited and ``audit_sessions`` its write sessions. What other packages do inside a
write (a version's files copied at registration, a protected alias checked, an owner team
recorded) they add as *write hooks* (``add_write_hook``) from their own packages; a hook
that opens a write session of the store runs in the same transaction as MLflow's change and
its event. The composed stores are in ``mlflow_share.stores``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, Protocol

import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.audit.log import (
    committed,
    record_in_transaction,
    summarize,
    writer_lock,
)
from mlflow_share.mlflow_compat import tables as mt

_WRITES_KEY = "mlflow_share_writes"
_MUTATING_PREFIXES = (
    "create_", "update_", "delete_", "set_", "log_", "rename_", "restore_", "transition_",
    "record_", "finalize_", "link_", "start_", "upsert_", "add_", "remove_", "archive_",
    "register_", "end_", "deprecated_",
)

StoreKind = Literal["tracking", "registry"]


class Proceed(Protocol):
    """Runs the rest of the call (the next hook, then MLflow's method); keyword arguments
    replace the call's own (a hook that drops reserved tags passes ``tags=...``)."""

    def __call__(self, **replace: Any) -> Any: ...


class WriteHook(Protocol):
    """Runs around one store method: ``hook(store, proceed, arguments)`` returns what the
    method returns. It may refuse (raise) before ``proceed()``, and act after it; opening
    ``store.ManagedSessionMaker(read_only=False)`` around ``proceed()`` puts its own writes
    in MLflow's transaction. Hooks run on nested calls too (MLflow's ``copy_model_version``
    calls ``create_model_version``)."""

    def __call__(self, store: Any, proceed: Proceed, arguments: Mapping[str, Any]) -> Any: ...


_HOOKS: dict[tuple[str, str], tuple[WriteHook, ...]] = {}


def add_write_hook(kind: StoreKind, method: str, hook: WriteHook) -> None:
    """Run ``hook`` around every call of the ``kind`` store's ``method`` (hooks added first
    run outermost); adding the same hook again changes nothing."""
    present = _HOOKS.get((kind, method), ())
    if hook not in present:
        _HOOKS[(kind, method)] = (*present, hook)


def write_hooks(kind: StoreKind, method: str) -> tuple[WriteHook, ...]:
    return _HOOKS.get((kind, method), ())


# The outermost audited store call of this thread/task: its change record and the read of
# what it replaces.
_CURRENT_CHANGE: contextvars.ContextVar[_Change | None] = contextvars.ContextVar(
    "mlflow_share_current_change", default=None
)


class _Change:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.before: sa.Select[Any] | None = None  # read as the write transaction begins


# -- before-values: what a change replaces, read just before it --------------------------
def _value(table: sa.Table, *where: tuple[str, str, Callable[[Any], Any]],
           columns: tuple[str, ...] = ("value",)
           ) -> Callable[[inspect.BoundArguments], sa.Select[Any]]:
    """The query of ``columns`` of ``table`` where each (column, argument, read) matches
    ``read(the call's argument)``."""
    def query(bound: inspect.BoundArguments) -> sa.Select[Any]:
        return sa.select(*(table.c[c] for c in columns)).where(
            *(table.c[column] == read(bound.arguments[argument])
              for column, argument, read in where))
    return query


def _same(value: Any) -> Any:
    return value


def _tag_key(tag: Any) -> Any:
    return tag.key


def _number(value: Any) -> Any:
    return mt.bigint(int(value))


_RUN = ("run_uuid", "run_id", _same)
_EXPERIMENT = ("experiment_id", "experiment_id", _number)
_MODEL = ("name", "name", _same)
_VERSION = ("version", "version", _number)
_BEFORE_QUERIES: dict[str, Callable[[inspect.BoundArguments], sa.Select[Any]]] = {
    "set_tag": _value(mt.tags, _RUN, ("key", "tag", _tag_key)),
    "delete_tag": _value(mt.tags, _RUN, ("key", "key", _same)),
    "set_experiment_tag": _value(mt.experiment_tags, _EXPERIMENT, ("key", "tag", _tag_key)),
    "delete_experiment_tag": _value(mt.experiment_tags, _EXPERIMENT, ("key", "key", _same)),
    "rename_experiment": _value(mt.experiments, _EXPERIMENT, columns=("name",)),
    "delete_experiment": _value(mt.experiments, _EXPERIMENT, columns=("lifecycle_stage",)),
    "restore_experiment": _value(mt.experiments, _EXPERIMENT, columns=("lifecycle_stage",)),
    "delete_run": _value(mt.runs, _RUN, columns=("lifecycle_stage",)),
    "restore_run": _value(mt.runs, _RUN, columns=("lifecycle_stage",)),
    "update_run_info": _value(mt.runs, _RUN, columns=("status", "end_time", "name")),
    "update_registered_model": _value(mt.registered_models, _MODEL, columns=("description",)),
    "rename_registered_model": _value(mt.registered_models, _MODEL, columns=("name",)),
    "delete_registered_model": _value(mt.registered_models, _MODEL,
                                      columns=("name", "description")),
    "set_registered_model_tag": _value(mt.registered_model_tags, _MODEL,
                                       ("key", "tag", _tag_key)),
    "delete_registered_model_tag": _value(mt.registered_model_tags, _MODEL,
                                          ("key", "key", _same)),
    "set_registered_model_alias": _value(mt.registered_model_aliases, _MODEL,
                                         ("alias", "alias", _same), columns=("version",)),
    "delete_registered_model_alias": _value(mt.registered_model_aliases, _MODEL,
                                            ("alias", "alias", _same), columns=("version",)),
    "update_model_version": _value(mt.model_versions, _MODEL, _VERSION,
                                   columns=("description",)),
    "transition_model_version_stage": _value(mt.model_versions, _MODEL, _VERSION,
                                             columns=("current_stage",)),
    "delete_model_version": _value(mt.model_versions, _MODEL, _VERSION,
                                   columns=("source", "run_id", "current_stage", "status")),
    "set_model_version_tag": _value(mt.model_version_tags, _MODEL, _VERSION,
                                    ("key", "tag", _tag_key)),
    "delete_model_version_tag": _value(mt.model_version_tags, _MODEL, _VERSION,
                                       ("key", "key", _same)),
}


def _before_query(name: str, bound: inspect.BoundArguments) -> sa.Select[Any] | None:
    """The query of what ``name`` replaces; it runs first in the write transaction, on its
    connection (no second connection, and on SQLite under the write lock)."""
    query = _BEFORE_QUERIES.get(name)
    if query is None:
        return None
    try:
        return query(bound)
    except (KeyError, AttributeError, ValueError, TypeError):
        return None  # MLflow validates the arguments and answers the error itself


def _read_before(connection: sa.Connection, change: _Change) -> None:
    assert change.before is not None
    query, change.before = change.before, None
    row = connection.execute(query).first()
    if row is not None:
        values = dict(row._mapping)
        change.record["before"] = summarize(
            values if len(values) > 1 else next(iter(values.values())))


def _audited_method(kind: StoreKind, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
        except TypeError:
            return method(self, *args, **kwargs)  # MLflow raises the real error
        hooks = write_hooks(kind, name)

        def call(i: int, **replace: Any) -> Any:
            bound.arguments.update(replace)
            if i == len(hooks):
                return method(*bound.args, **bound.kwargs)
            arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
            return hooks[i](self, functools.partial(call, i + 1), arguments)

        if _CURRENT_CHANGE.get() is not None:  # nested call: the outer call describes it
            return call(0)
        arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
        change = _Change({"op": name, "args": summarize(arguments)})
        change.before = _before_query(name, bound)
        token = _CURRENT_CHANGE.set(change)
        try:
            return call(0)
        finally:
            _CURRENT_CHANGE.reset(token)

    return wrapper


def audited_writes(kind: StoreKind) -> Callable[[type], type]:
    """Class decorator: every public mutating method of the store class is audited and runs
    the write hooks added for ``kind``."""
    def wrap(cls: type) -> type:
        for name in dir(cls):
            if name.startswith(_MUTATING_PREFIXES) and not name.startswith("_"):
                attribute = getattr(cls, name)
                if inspect.isfunction(attribute):
                    setattr(cls, name, _audited_method(kind, name, attribute))
        return cls
    return wrap


# -- the write-session hook ---------------------------------------------------------------
def _count_writes(conn: sa.Connection, cursor: Any, statement: str, parameters: Any,
                  context: Any, executemany: bool) -> None:
    if context is not None and (context.isinsert or context.isupdate or context.isdelete):
        conn.info[_WRITES_KEY] = True
    elif statement.lstrip()[:7].upper().startswith(("INSERT", "UPDATE", "DELETE", "REPLACE")):
        conn.info[_WRITES_KEY] = True


def _instrument_engine(engine: sa.Engine) -> None:
    if not getattr(engine, "_mlflow_share_audited", False):
        sa.event.listen(engine, "after_cursor_execute", _count_writes)
        engine._mlflow_share_audited = True  # type: ignore[attr-defined]


_AUDITED = "mlflow_share_audited"
_PENDING_SEQ = "mlflow_share_seq"
# The connection of the write transaction open in this context, per engine: a write session
# opened inside it (MLflow nests them, e.g. log_batch) joins it through a SAVEPOINT.
_OPEN_WRITES: contextvars.ContextVar[dict[int, sa.Connection] | None] = contextvars.ContextVar(
    "mlflow_share_open_writes", default=None
)


def _after_begin(session: Any, transaction: Any, connection: sa.Connection) -> None:
    # A SAVEPOINT (``begin_nested``) begins too: the writes before it still count.
    if session.info.get(_AUDITED) and not transaction.nested:
        connection.info[_WRITES_KEY] = False


def _before_commit(session: Any) -> None:
    """Append the event of what this transaction changed, inside it, right before it commits."""
    if not session.info.get(_AUDITED) or session.in_nested_transaction():
        return  # a SAVEPOINT's release: the transaction goes on, its commit records it all
    session.flush()
    conn = session.connection()
    change = _CURRENT_CHANGE.get()
    if conn.info.get(_WRITES_KEY):
        record = change.record if change is not None else {"op": "unlisted"}
        # Nothing is written after this (the session was flushed above), so the transaction
        # may commit with its event (PostgreSQL, one round trip); the session's own commit
        # then finds nothing left to do.
        session.info[_PENDING_SEQ] = record_in_transaction(conn, [record], commit=True)


def _after_commit(session: Any) -> None:
    seq = session.info.pop(_PENDING_SEQ, None)
    if seq is not None:
        committed(seq)


def _after_rollback(session: Any) -> None:
    session.info.pop(_PENDING_SEQ, None)


def _listen_once() -> None:
    from sqlalchemy.orm import Session

    if not sa.event.contains(Session, "before_commit", _before_commit):
        sa.event.listen(Session, "after_begin", _after_begin)
        sa.event.listen(Session, "before_commit", _before_commit)
        sa.event.listen(Session, "after_commit", _after_commit)
        sa.event.listen(Session, "after_rollback", _after_rollback)


@contextmanager
def _joined_session(conn: sa.Connection) -> Iterator[Any]:
    """A write session nested in an open one: a SAVEPOINT on its connection, same semantics
    (commit at the end, roll back on error) and the same errors as MLflow's own sessions."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST, INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE
    from sqlalchemy.orm import Session

    session = Session(bind=conn, join_transaction_mode="create_savepoint")
    try:
        yield session
        session.commit()
    except MlflowException:
        session.rollback()
        raise
    except sa.exc.OperationalError as exc:
        session.rollback()
        raise MlflowException(str(exc), error_code=TEMPORARILY_UNAVAILABLE) from exc
    except sa.exc.SQLAlchemyError as exc:
        session.rollback()
        raise MlflowException(str(exc), error_code=BAD_REQUEST) from exc
    except Exception as exc:
        session.rollback()
        raise MlflowException(str(exc), error_code=INTERNAL_ERROR) from exc
    finally:
        session.close()


def audit_sessions(store: Any) -> None:
    """Make each write transaction of ``store`` carry its audit event (see module docstring)."""
    db.ensure_schema(store.db_uri)
    _instrument_engine(store.engine)
    _listen_once()
    managed_session = store.ManagedSessionMaker
    is_sqlite = store.db_type == "sqlite"
    engine_key = id(store.engine)

    @contextmanager
    def audited_session(read_only: bool = True) -> Iterator[Any]:
        if read_only:
            with managed_session(read_only=True) as session:
                yield session
            return
        open_writes = _OPEN_WRITES.get() or {}
        outer = open_writes.get(engine_key)
        if outer is not None:
            with _joined_session(outer) as session:
                yield session
            return
        with writer_lock(store.engine), managed_session(read_only=False) as session:
            session.info[_AUDITED] = True
            if is_sqlite:
                # Take the write lock first: a deferred transaction that reads, then writes,
                # fails at once with "database is locked" when another writer got there first.
                session.execute(sa.text("BEGIN IMMEDIATE"))
            connection = session.connection()
            change = _CURRENT_CHANGE.get()
            if change is not None and change.before is not None:
                _read_before(connection, change)
            token = _OPEN_WRITES.set({**open_writes, engine_key: connection})
            try:
                yield session
            finally:
                _OPEN_WRITES.reset(token)

    store.ManagedSessionMaker = audited_session


