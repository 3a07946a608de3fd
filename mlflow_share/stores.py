"""MLflow's SqlAlchemy stores with searches narrowed, inside SQL, to what the caller may read.

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
from mlflow_share.directory import EXPERIMENT, MODEL
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
