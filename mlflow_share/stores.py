"""The stores the server runs: MLflow's SqlAlchemy stores, scoped, audited and hooked.

This is where the pieces meet (each package stays ignorant of the others):
- searches narrowed, inside SQL, to what the caller may read (below);
- every write audited in its own transaction (``audit.store``);
- the write hooks of the packages that act inside a write: ownership (``policy``), protected
  aliases and their notifications (``governance``), registration of a version's files and its
  identity tags (``artifacts``).

The URI schemes ``audit+sqlite://`` and ``audit+postgresql://`` select these stores outside the
server; ``mlflow server --app-name mlflow-share`` uses them for plain SQLite and PostgreSQL URIs
as well.

MLflow's stores have hooks made for workspace isolation (``_get_workspace_clauses``,
``_experiment_where_clauses``); during a search request the interceptor sets a
``SearchScope`` and these subclasses add a ``WHERE ... IN (readable)`` clause there. Paging
therefore stays MLflow's own: offsets and page tokens count readable rows only.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from mlflow.store.model_registry.sqlalchemy_store import (
    SqlAlchemyStore as RegistryStore,
)
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

from mlflow_share import db
from mlflow_share.artifacts import write_hooks as artifacts_hooks
from mlflow_share.audit.store import audit_sessions, audited_writes
from mlflow_share.db import SCHEME_PREFIX, strip_scheme
from mlflow_share.directory import EXPERIMENT, MODEL
from mlflow_share.governance import write_hooks as governance_hooks
from mlflow_share.mlflow_compat import private
from mlflow_share.policy import write_hooks as ownership_hooks
from mlflow_share.request_state import SEARCH_SCOPE, SearchScope

_READ_PERMISSIONS = ("read", "write", "manage")


def _readable_ids(kind: str, scope: SearchScope) -> sa.Select[Any]:
    """IDs of resources of ``kind`` owned by, or granted or shared to read with, one of the
    scope's teams (a sharing package's grants count while it is published and unexpired)."""
    owned = sa.select(db.resources.c.resource_id).where(
        db.resources.c.kind == kind, db.resources.c.owner_team.in_(scope.teams)
    )
    granted = sa.select(db.grants.c.resource_id).where(
        db.grants.c.kind == kind,
        db.grants.c.team.in_(scope.teams),
        db.grants.c.permission.in_(_READ_PERMISSIONS),
    )
    pg = db.package_grants.c
    shared = sa.select(pg.resource_id).where(
        pg.kind == kind, pg.team.in_(scope.teams), pg.permission.in_(_READ_PERMISSIONS),
        sa.or_(pg.expires_at.is_(None), pg.expires_at > db.now_ms()),
        pg.package_id.in_(sa.select(db.packages.c.id).where(
            db.packages.c.status == "published")),
    )
    return sa.select(sa.union(owned, granted, shared).subquery().c.resource_id)


def readable_model_names(scope: SearchScope) -> sa.Select[Any]:
    ids = _readable_ids(MODEL, scope)
    return sa.select(db.resources.c.name).where(
        db.resources.c.kind == MODEL, db.resources.c.resource_id.in_(ids)
    )


class ScopedRegistryStore(RegistryStore):  # type: ignore[misc]
    """Registry store whose searches return only readable registered models and versions."""

    def _get_workspace_clauses(self, model: Any) -> list[Any]:
        clauses = list(super()._get_workspace_clauses(model))
        scope = SEARCH_SCOPE.get()
        if scope is not None and hasattr(model, "name"):
            from mlflow.store.model_registry.dbmodels.models import (
                SqlModelVersion,
                SqlRegisteredModel,
            )

            if model in (SqlRegisteredModel, SqlModelVersion):
                clauses.append(model.name.in_(readable_model_names(scope)))
        return clauses


class ScopedTrackingStore(TrackingStore):  # type: ignore[misc]
    """Tracking store whose experiment searches return only readable experiments."""

    def _experiment_where_clauses(self) -> list[Any]:
        clauses = list(super()._experiment_where_clauses())
        scope = SEARCH_SCOPE.get()
        if scope is not None:
            from mlflow.store.tracking.dbmodels.models import SqlExperiment

            ids = sa.select(sa.cast(db.resources.c.resource_id, sa.Integer)).where(
                db.resources.c.resource_id.in_(_readable_ids(EXPERIMENT, scope)),
                db.resources.c.kind == EXPERIMENT,
            )
            clauses.append(SqlExperiment.experiment_id.in_(ids))
        return clauses


def install_write_hooks() -> None:
    """Every package's write hooks (idempotent)."""
    ownership_hooks.install()
    governance_hooks.install()
    artifacts_hooks.install()


@audited_writes("tracking")
class AuditingSqlAlchemyStore(ScopedTrackingStore):  # type: ignore[misc]
    """MLflow's SqlAlchemy tracking store with scoped searches and an audited write path."""

    def __init__(self, db_uri: str, default_artifact_root: str | None,
                 read_db_uri: str | None = None) -> None:
        install_write_hooks()
        super().__init__(strip_scheme(db_uri), default_artifact_root,
                         read_db_uri=strip_scheme(read_db_uri) if read_db_uri else None)
        audit_sessions(self)


@audited_writes("registry")
class AuditingRegistryStore(ScopedRegistryStore):  # type: ignore[misc]
    """MLflow's SqlAlchemy model registry store with scoped searches and audited writes."""

    def __init__(self, db_uri: str, read_db_uri: str | None = None) -> None:
        install_write_hooks()
        super().__init__(strip_scheme(db_uri),
                         read_db_uri=strip_scheme(read_db_uri) if read_db_uri else None)
        audit_sessions(self)


def build_tracking_store(store_uri: str, artifact_uri: str | None = None) -> AuditingSqlAlchemyStore:
    """The ``mlflow.tracking_store`` entry point for the ``audit+<db>`` schemes."""
    import os

    from mlflow.server.constants import READ_REPLICA_BACKEND_STORE_URI_ENV_VAR
    from mlflow.tracking._tracking_service.utils import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH

    if artifact_uri is None:  # as MLflow's own builder: the server's root, else ./mlruns
        artifact_uri = os.environ.get(
            private("mlflow.tracking._tracking_service.utils", "_SERVER_ARTIFACT_ROOT_ENV_VAR"),
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
    from mlflow.store.db.db_types import DATABASE_ENGINES

    tracking = private("mlflow.server.handlers", "_tracking_store_registry")
    registry = private("mlflow.server.handlers", "_model_registry_store_registry")
    for scheme in DATABASE_ENGINES:  # Settings refuses MySQL and MSSQL before this runs
        for registered in (scheme, SCHEME_PREFIX + scheme):
            tracking.register(registered, build_tracking_store)
            registry.register(registered, build_registry_store)
