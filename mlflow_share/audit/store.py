"""``AuditingSqlAlchemyStore`` and ``AuditingRegistryStore``: MLflow's stores with every change audited.

Every write transaction MLflow commits from a write session (``ManagedSessionMaker(
read_only=False)``) appends its audit event inside it, just before the commit: the change and
its event commit together, or neither does and MLflow answers 503. Write sessions MLflow opens
inside another (``log_batch`` does) join the outer transaction through a SAVEPOINT, so one
request is one transaction and one event. Public mutating methods note what they change
(their arguments, and the value before for tags, aliases, stages, descriptions, names and
deletions); a write from any other method is still audited, as ``unlisted``. The operator is
the authenticated principal of the request, never a client-supplied field such as ``user_id``.

Ownership bookkeeping (a new experiment or model's owner team, a rename, a deletion) runs in
the same transaction too. The URI schemes ``audit+sqlite://`` and ``audit+postgresql://``
select these stores outside the server; ``mlflow server --app-name mlflow-share`` uses them
for plain SQLite and PostgreSQL URIs as well.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from mlflow_share import directory as directory_module
from mlflow_share.audit.log import (
    AUDIT_CONTEXT,
    committed,
    note_resource,
    record_in_transaction,
    summarize,
    writer_lock,
)
from mlflow_share.errors import Conflict, InvalidInput, MlflowShareError, PermissionDenied
from mlflow_share.stores import ScopedRegistryStore, ScopedTrackingStore

_logger = logging.getLogger(__name__)

SCHEME_PREFIX = "audit+"
_WRITES_KEY = "mlflow_share_writes"
_MUTATING_PREFIXES = (
    "create_", "update_", "delete_", "set_", "log_", "rename_", "restore_", "transition_",
    "record_", "finalize_", "link_", "start_", "upsert_", "add_", "remove_", "archive_",
    "register_", "end_", "deprecated_",
)

# The outermost audited store call of this thread/task: its change record, and ownership
# bookkeeping to run inside its write transaction.
_CURRENT_CHANGE: contextvars.ContextVar[_Change | None] = contextvars.ContextVar(
    "mlflow_share_current_change", default=None
)


class _Change:
    def __init__(self, record: dict[str, Any],
                 bookkeeping: Callable[[sa.Connection], None] | None) -> None:
        self.record = record
        self.bookkeeping = bookkeeping  # runs once, in the first write transaction
        self.before: tuple[str, dict[str, Any]] | None = None  # read as that transaction begins


def strip_scheme(uri: str) -> str:
    return uri[len(SCHEME_PREFIX):] if uri.startswith(SCHEME_PREFIX) else uri


# -- before-values: what a change replaces, read just before it --------------------------
_BEFORE_QUERIES: dict[str, tuple[str, Callable[[inspect.BoundArguments], dict[str, Any]]]] = {
    "set_tag": ("SELECT value FROM tags WHERE run_uuid = :a AND key = :b",
                lambda b: {"a": b.arguments["run_id"], "b": b.arguments["tag"].key}),
    "delete_tag": ("SELECT value FROM tags WHERE run_uuid = :a AND key = :b",
                   lambda b: {"a": b.arguments["run_id"], "b": b.arguments["key"]}),
    "set_experiment_tag": (
        "SELECT value FROM experiment_tags WHERE experiment_id = :a AND key = :b",
        lambda b: {"a": int(b.arguments["experiment_id"]), "b": b.arguments["tag"].key}),
    "delete_experiment_tag": (
        "SELECT value FROM experiment_tags WHERE experiment_id = :a AND key = :b",
        lambda b: {"a": int(b.arguments["experiment_id"]), "b": b.arguments["key"]}),
    "rename_experiment": ("SELECT name FROM experiments WHERE experiment_id = :a",
                          lambda b: {"a": int(b.arguments["experiment_id"])}),
    "delete_experiment": ("SELECT lifecycle_stage FROM experiments WHERE experiment_id = :a",
                          lambda b: {"a": int(b.arguments["experiment_id"])}),
    "restore_experiment": ("SELECT lifecycle_stage FROM experiments WHERE experiment_id = :a",
                           lambda b: {"a": int(b.arguments["experiment_id"])}),
    "delete_run": ("SELECT lifecycle_stage FROM runs WHERE run_uuid = :a",
                   lambda b: {"a": b.arguments["run_id"]}),
    "restore_run": ("SELECT lifecycle_stage FROM runs WHERE run_uuid = :a",
                    lambda b: {"a": b.arguments["run_id"]}),
    "update_run_info": ("SELECT status, end_time, name FROM runs WHERE run_uuid = :a",
                        lambda b: {"a": b.arguments["run_id"]}),
    "update_registered_model": ("SELECT description FROM registered_models WHERE name = :a",
                                lambda b: {"a": b.arguments["name"]}),
    "rename_registered_model": ("SELECT name FROM registered_models WHERE name = :a",
                                lambda b: {"a": b.arguments["name"]}),
    "delete_registered_model": (
        "SELECT name, description FROM registered_models WHERE name = :a",
        lambda b: {"a": b.arguments["name"]}),
    "set_registered_model_tag": (
        "SELECT value FROM registered_model_tags WHERE name = :a AND key = :b",
        lambda b: {"a": b.arguments["name"], "b": b.arguments["tag"].key}),
    "delete_registered_model_tag": (
        "SELECT value FROM registered_model_tags WHERE name = :a AND key = :b",
        lambda b: {"a": b.arguments["name"], "b": b.arguments["key"]}),
    "set_registered_model_alias": (
        "SELECT version FROM registered_model_aliases WHERE name = :a AND alias = :b",
        lambda b: {"a": b.arguments["name"], "b": b.arguments["alias"]}),
    "delete_registered_model_alias": (
        "SELECT version FROM registered_model_aliases WHERE name = :a AND alias = :b",
        lambda b: {"a": b.arguments["name"], "b": b.arguments["alias"]}),
    "update_model_version": (
        "SELECT description FROM model_versions WHERE name = :a AND version = :b",
        lambda b: {"a": b.arguments["name"], "b": int(b.arguments["version"])}),
    "transition_model_version_stage": (
        "SELECT current_stage FROM model_versions WHERE name = :a AND version = :b",
        lambda b: {"a": b.arguments["name"], "b": int(b.arguments["version"])}),
    "delete_model_version": (
        "SELECT source, run_id, current_stage, status FROM model_versions "
        "WHERE name = :a AND version = :b",
        lambda b: {"a": b.arguments["name"], "b": int(b.arguments["version"])}),
    "set_model_version_tag": (
        "SELECT value FROM model_version_tags WHERE name = :a AND version = :b AND key = :c",
        lambda b: {"a": b.arguments["name"], "b": int(b.arguments["version"]),
                   "c": b.arguments["tag"].key}),
    "delete_model_version_tag": (
        "SELECT value FROM model_version_tags WHERE name = :a AND version = :b AND key = :c",
        lambda b: {"a": b.arguments["name"], "b": int(b.arguments["version"]),
                   "c": b.arguments["key"]}),
}


def _before_query(name: str, bound: inspect.BoundArguments) -> tuple[str, dict[str, Any]] | None:
    """The query of what ``name`` replaces; it runs first in the write transaction, on its
    connection (no second connection, and on SQLite under the write lock)."""
    query = _BEFORE_QUERIES.get(name)
    if query is None:
        return None
    sql, params = query
    try:
        return sql, params(bound)
    except (KeyError, AttributeError, ValueError, TypeError):
        return None  # MLflow validates the arguments and answers the error itself


def _read_before(connection: sa.Connection, change: _Change) -> None:
    assert change.before is not None
    sql, params = change.before
    change.before = None
    row = connection.execute(sa.text(sql), params).first()
    if row is not None:
        values = dict(row._mapping)
        change.record["before"] = summarize(
            values if len(values) > 1 else next(iter(values.values())))


# -- ownership bookkeeping, run inside MLflow's transaction ------------------------------
def _bookkeeping(name: str, bound: inspect.BoundArguments) -> Callable[[sa.Connection], None] | None:
    ctx = AUDIT_CONTEXT.get()
    args = bound.arguments
    if name == "rename_registered_model":
        return lambda conn: directory_module.rename_model_in(conn, args["name"], args["new_name"])
    if name == "delete_registered_model":
        return lambda conn: directory_module.forget_model_in(conn, args["name"])
    if ctx is None or ctx.create_team is None:
        return None
    team, principal = ctx.create_team, ctx.principal
    if name == "create_registered_model":
        return lambda conn: _own(conn, directory_module.MODEL, None, team, principal, args["name"])
    if name == "create_experiment":
        def own_experiment(conn: sa.Connection) -> None:
            experiment_id = conn.execute(
                sa.text("SELECT experiment_id FROM experiments WHERE name = :n"),
                {"n": args["name"]}).scalar()
            if experiment_id is not None:
                _own(conn, directory_module.EXPERIMENT, str(experiment_id), team, principal, None)
        return own_experiment
    return None


def _own(conn: sa.Connection, kind: str, resource_id: str | None, team: str, principal: str,
         name: str | None) -> None:
    resource_id = directory_module.record_owner_in(conn, kind, resource_id, team, principal, name)
    note_resource(kind, resource_id, name, team)


def _audited_method(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _CURRENT_CHANGE.get() is not None:  # nested call: the outer call describes it
            return method(self, *args, **kwargs)
        try:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
        except TypeError:
            return method(self, *args, **kwargs)  # MLflow raises the real error
        arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
        change = _Change({"op": name, "args": summarize(arguments)}, _bookkeeping(name, bound))
        change.before = _before_query(name, bound)
        token = _CURRENT_CHANGE.set(change)
        try:
            return method(self, *args, **kwargs)
        finally:
            _CURRENT_CHANGE.reset(token)

    return wrapper


def _wrap_mutating_methods(cls: type) -> type:
    for name in dir(cls):
        if name.startswith(_MUTATING_PREFIXES) and not name.startswith("_"):
            attribute = getattr(cls, name)
            if inspect.isfunction(attribute):
                setattr(cls, name, _audited_method(name, attribute))
    return cls


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
    if change is not None and change.bookkeeping is not None:
        change.bookkeeping(conn)
        change.bookkeeping = None
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


_SCHEMA_READY: set[str] = set()


def ensure_schema(db_uri: str) -> None:
    """Create mlflow-share's tables and the audit triggers once per process, as MLflow's
    stores create theirs: the server and code that opens an ``audit+`` URI find them there."""
    if db_uri in _SCHEMA_READY:
        return
    from mlflow_share import db
    from mlflow_share.audit.models import install_triggers

    engine = db.get_engine(db_uri)
    db.enable_wal(engine)
    db.create_schema(engine)
    install_triggers(engine)
    _SCHEMA_READY.add(db_uri)


def _audit_sessions(store: Any) -> None:
    """Make each write transaction of ``store`` carry its audit event (see module docstring)."""
    ensure_schema(store.db_uri)
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


@_wrap_mutating_methods
class AuditingSqlAlchemyStore(ScopedTrackingStore):  # type: ignore[misc]
    """MLflow's SqlAlchemy tracking store with scoped searches and an audited write path."""

    def __init__(self, db_uri: str, default_artifact_root: str | None,
                 read_db_uri: str | None = None) -> None:
        super().__init__(strip_scheme(db_uri), default_artifact_root,
                         read_db_uri=strip_scheme(read_db_uri) if read_db_uri else None)
        _audit_sessions(self)


@_wrap_mutating_methods
class AuditingRegistryStore(ScopedRegistryStore):  # type: ignore[misc]
    """MLflow's SqlAlchemy model registry store with scoped searches and audited writes."""

    def __init__(self, db_uri: str, read_db_uri: str | None = None) -> None:
        super().__init__(strip_scheme(db_uri),
                         read_db_uri=strip_scheme(read_db_uri) if read_db_uri else None)
        _audit_sessions(self)

    def create_model_version(self, name: str, source: str, run_id: str | None = None,
                             tags: Any = None, run_link: str | None = None,
                             description: str | None = None, local_model_path: str | None = None,
                             model_id: str | None = None) -> Any:
        """With a checksum artifact root, a new version's files are copied write-once to its
        own location and its manifest taken (``mlflow_share.artifacts.registration``)."""
        from mlflow_share.artifacts import registration
        from mlflow_share.artifacts.manifest import RESERVED_TAG_PREFIX
        from mlflow_share.mlflow_compat import prompt_source_placeholders

        # The identity tags are set by registration only (also when MLflow copies a version).
        tags = [t for t in tags or [] if not str(t.key).startswith(RESERVED_TAG_PREFIX)]
        create = functools.partial(
            super().create_model_version, name, source, run_id=run_id, tags=tags,
            run_link=run_link, description=description, local_model_path=local_model_path,
            model_id=model_id)
        repo = registration.destination()
        if repo is None or source in prompt_source_placeholders():  # prompts have no files
            return create()
        with self.ManagedSessionMaker(read_only=False) as session:
            created = create()
            conn = session.connection()
            version = int(created.version)
            row = conn.execute(sa.text(
                "SELECT storage_location, run_id FROM model_versions "
                "WHERE name = :n AND version = :v"), {"n": name, "v": version}).one()
            source_base = registration.source_folder(conn, source, row.storage_location)
            if not repo.exists(source_base) or not repo.files_under(source_base):
                raise InvalidInput(f"Model version source {source!r} has no files to register.")
            folder = registration.model_key(conn, name)
            location = registration.version_location(folder, version)
            conn.execute(sa.text(
                "UPDATE model_versions SET status = 'PENDING_REGISTRATION', "
                "storage_location = :l WHERE name = :n AND version = :v"),
                {"l": registration.PROXY_SCHEME + location, "n": name, "v": version})
            params = registration.run_params(conn, row.run_id)
            source_run = row.run_id
        try:
            registered = registration.copy_and_describe(
                repo, name=name, version=version, model_id=folder, source=source,
                source_base=source_base, run_id=source_run, params=params)
            registration.finish(repo, model_id=folder, name=name, version=version,
                                registered=registered)
        except Exception as exc:
            # Readers of the version see the reason: ours name files and digests; anything
            # else could carry paths or SQL, so it goes to the server log only.
            reason = (exc.message if isinstance(exc, MlflowShareError) else
                      "Copying the version's files failed; see the server log.")
            _logger.error("mlflow-share: registering %s version %s failed: %s", name, version,
                          exc)
            try:
                registration.fail(repo, name=name, version=version, reason=reason)
            except Exception as marking:  # noqa: BLE001 - the original error matters more
                _logger.error("mlflow-share: could not mark it FAILED_REGISTRATION: %s", marking)
            raise
        return self.get_model_version(name, str(version))

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> Any:
        """Moves are compare-and-set when asked, protected aliases only onto verified
        versions, and every move is in ``share_alias_history`` (same transaction)."""
        with self.ManagedSessionMaker(read_only=False) as session:
            move = _alias_move(session.connection(), name, alias, int(version))
            result = super().set_registered_model_alias(name, alias, version)
        _notify_alias_move(move)
        return result

    def delete_registered_model_alias(self, name: str, alias: str) -> Any:
        with self.ManagedSessionMaker(read_only=False) as session:
            move = _alias_move(session.connection(), name, alias, None)
            result = super().delete_registered_model_alias(name, alias)
        _notify_alias_move(move)
        return result

    def delete_model_version(self, name: str, version: str) -> Any:
        """MLflow drops the version's aliases with it: not a protected one (move it first)."""
        from mlflow_share.governance import aliases

        with self.ManagedSessionMaker(read_only=False) as session:
            conn = session.connection()
            model_id = conn.execute(sa.text(
                "SELECT resource_id FROM share_resources WHERE kind = 'registered_model' "
                "AND name = :n"), {"n": name}).scalar()
            held: Any = conn.execute(sa.text(
                "SELECT alias FROM registered_model_aliases WHERE name = :n AND version = :v"),
                {"n": name, "v": int(version) if str(version).isdigit() else -1}).scalars().all()
            for alias in held:
                if aliases.is_protected(conn, model_id, str(alias)):
                    raise Conflict(f"Version {version} of {name!r} is the target of protected "
                                   f"alias {alias!r}: move the alias before deleting it.")
        return super().delete_model_version(name, version)

    def set_model_version_tag(self, name: str, version: str, tag: Any) -> Any:
        _refuse_reserved_tag(tag.key)
        return super().set_model_version_tag(name, version, tag)

    def delete_model_version_tag(self, name: str, version: str, key: str) -> Any:
        _refuse_reserved_tag(key)
        return super().delete_model_version_tag(name, version, key)


def _alias_move(conn: sa.Connection, name: str, alias: str, version: int | None
                ) -> dict[str, Any]:
    from mlflow_share.audit.log import system_principal
    from mlflow_share.governance import aliases

    if conn.dialect.name == "postgresql":  # serialize moves of one alias (SQLite: the lock)
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext(%s))",
                             (f"alias:{name}:{alias}",))
    model_id = conn.execute(sa.text(
        "SELECT resource_id FROM share_resources WHERE kind = 'registered_model' "
        "AND name = :n"), {"n": name}).scalar()
    ctx = AUDIT_CONTEXT.get()
    expected = ctx.extra.get("alias_expected") if ctx is not None else None
    rule = aliases.protection(conn, model_id, alias)
    protected = rule is not None
    principal = ctx.principal if ctx is not None else system_principal()
    reason = ctx.extra.get("alias_reason") if ctx is not None else None
    request_id = ctx.extra.get("alias_request") if ctx is not None else None
    if rule is not None and rule.require_approval:
        if request_id is None:
            raise PermissionDenied(
                f"Alias {alias!r} of {name!r} moves only with a second maintainer's approval: "
                f"mlflow-share alias request {name} {alias} VERSION --reason TEXT.")
        aliases.decide_in(conn, str(request_id), model_id=model_id, alias=alias,
                          version=version, by=principal)
    before = aliases.record(conn, model_id=model_id, name=name, alias=alias,
                            to_version=version, principal=principal, reason=reason,
                            expected_version=int(expected) if expected is not None else None,
                            protected_move=protected)
    return {"model_id": model_id, "protected": protected, "model": name, "alias": alias,
            "from_version": before, "to_version": version, "principal": principal,
            "reason": reason, "request": request_id}


def _notify_alias_move(move: dict[str, Any]) -> None:
    """After the commit: a protected alias's move is announced to the model's subscribers."""
    from mlflow_share.governance import notifications

    if move.pop("protected"):
        notifications.emit(move.pop("model_id"), "alias.moved", move)


def _refuse_reserved_tag(key: str) -> None:
    from mlflow_share.artifacts.manifest import RESERVED_TAG_PREFIX

    if str(key).startswith(RESERVED_TAG_PREFIX):
        raise Conflict(f"Tag {key!r} is set by mlflow-share at registration and cannot change.")


def build_tracking_store(store_uri: str, artifact_uri: str | None = None) -> AuditingSqlAlchemyStore:
    """The ``mlflow.tracking_store`` entry point for the ``audit+<db>`` schemes."""
    import os

    from mlflow.server.constants import READ_REPLICA_BACKEND_STORE_URI_ENV_VAR
    from mlflow.tracking._tracking_service.utils import (
        _SERVER_ARTIFACT_ROOT_ENV_VAR,
        DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH,
    )

    if artifact_uri is None:  # as MLflow's own builder: the server's root, else ./mlruns
        artifact_uri = os.environ.get(_SERVER_ARTIFACT_ROOT_ENV_VAR,
                                      DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    return AuditingSqlAlchemyStore(
        store_uri, artifact_uri, read_db_uri=os.environ.get(READ_REPLICA_BACKEND_STORE_URI_ENV_VAR)
    )


def build_registry_store(store_uri: str, tracking_uri: str | None = None) -> AuditingRegistryStore:
    """The ``mlflow.model_registry_store`` entry point for the ``audit+<db>`` schemes."""
    import os

    from mlflow.server.constants import READ_REPLICA_BACKEND_STORE_URI_ENV_VAR

    return AuditingRegistryStore(
        store_uri, read_db_uri=os.environ.get(READ_REPLICA_BACKEND_STORE_URI_ENV_VAR)
    )


def install_audited_stores() -> None:
    """Make this server process build the audited stores for every SQL scheme."""
    from mlflow.server import handlers
    from mlflow.store.db.db_types import DATABASE_ENGINES

    for scheme in DATABASE_ENGINES:  # Settings refuses MySQL and MSSQL before this runs
        for registered in (scheme, SCHEME_PREFIX + scheme):
            handlers._tracking_store_registry.register(registered, build_tracking_store)
            handlers._model_registry_store_registry.register(registered, build_registry_store)
