"""MLflow's tables, as MLflow's own ORM models declare them.

mlflow-share reads MLflow's schema to decide (which experiment a run is in), to describe a
change before it happens (the value a tag had) and, in a few places, writes it inside MLflow's
own transaction (a registered version's identity tags and status). Every such table is taken
here from MLflow's SQLAlchemy models (never spelled as SQL text elsewhere), with the columns
mlflow-share uses declared next to it: ``missing()`` names any that the installed MLflow no
longer has (the server refuses to start, and a test runs it on every MLflow version CI tests),
so an MLflow schema change is found here, not in a request.

Use them as SQLAlchemy Core tables::

    from mlflow_share.mlflow_compat import tables as mt
    conn.execute(sa.select(mt.runs.c.experiment_id).where(mt.runs.c.run_uuid == run_id))
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa

_TRACKING = "mlflow.store.tracking.dbmodels.models"
_REGISTRY = "mlflow.store.model_registry.dbmodels.models"

# table name -> (module, ORM class, the columns mlflow-share reads or writes)
DECLARED: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "experiments": (_TRACKING, "SqlExperiment",
                    ("experiment_id", "name", "artifact_location", "lifecycle_stage")),
    "experiment_tags": (_TRACKING, "SqlExperimentTag", ("experiment_id", "key", "value")),
    "runs": (_TRACKING, "SqlRun",
             ("run_uuid", "experiment_id", "name", "status", "start_time", "end_time",
              "lifecycle_stage", "artifact_uri", "user_id")),
    "tags": (_TRACKING, "SqlTag", ("run_uuid", "key", "value")),
    "params": (_TRACKING, "SqlParam", ("run_uuid", "key", "value")),
    "latest_metrics": (_TRACKING, "SqlLatestMetric", ("run_uuid", "key", "value")),
    "datasets": (_TRACKING, "SqlDataset",
                 ("dataset_uuid", "name", "digest", "dataset_source_type", "dataset_source")),
    "inputs": (_TRACKING, "SqlInput",
               ("input_uuid", "source_type", "source_id", "destination_type",
                "destination_id")),
    "input_tags": (_TRACKING, "SqlInputTag", ("input_uuid", "name", "value")),
    "logged_models": (_TRACKING, "SqlLoggedModel",
                      ("model_id", "experiment_id", "source_run_id")),
    "trace_info": (_TRACKING, "SqlTraceInfo", ("request_id", "experiment_id")),
    "trace_tags": (_TRACKING, "SqlTraceTag", ("request_id", "key", "value")),
    "assessments": (_TRACKING, "SqlAssessments", ("assessment_id",)),
    "registered_models": (_REGISTRY, "SqlRegisteredModel", ("name", "description")),
    "registered_model_tags": (_REGISTRY, "SqlRegisteredModelTag", ("name", "key", "value")),
    "registered_model_aliases": (_REGISTRY, "SqlRegisteredModelAlias",
                                 ("name", "alias", "version")),
    "model_versions": (_REGISTRY, "SqlModelVersion",
                       ("name", "version", "source", "run_id", "storage_location",
                        "current_stage", "status", "status_message", "description",
                        "creation_time", "last_updated_time", "workspace", "user_id")),
    "model_version_tags": (_REGISTRY, "SqlModelVersionTag",
                           ("workspace", "name", "version", "key", "value")),
}


def _load(name: str) -> sa.Table:
    module, cls, _columns = DECLARED[name]
    try:
        table = getattr(importlib.import_module(module), cls).__table__
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(
            f"mlflow-share cannot start: MLflow's table {name!r} ({module}.{cls}) is gone; "
            "this MLflow version is not supported.") from exc
    if table.name != name:
        raise RuntimeError(f"mlflow-share cannot start: MLflow's {cls} now maps table "
                           f"{table.name!r}, not {name!r}; this MLflow version is not supported.")
    return table


def bigint(value: int) -> sa.BindParameter[int]:
    """A number taken from a request (an experiment ID, a version number), bound to compare
    with one of MLflow's INTEGER columns. On PostgreSQL a bound value is cast to its column's
    type, and a number past INTEGER's range would then be an error, not a row that is not
    there: bound as a BIGINT it simply matches no row."""
    return sa.bindparam(None, value, type_=sa.BigInteger)


def missing() -> list[str]:
    """Every declared table or column the installed MLflow's models do not have."""
    gone = []
    for name, (_module, _cls, columns) in DECLARED.items():
        try:
            table = _load(name)
        except RuntimeError:
            gone.append(name)
            continue
        gone.extend(f"{name}.{column}" for column in columns if column not in table.c)
    return gone


experiments = _load("experiments")
experiment_tags = _load("experiment_tags")
runs = _load("runs")
tags = _load("tags")
params = _load("params")
latest_metrics = _load("latest_metrics")
datasets = _load("datasets")
inputs = _load("inputs")
input_tags = _load("input_tags")
logged_models = _load("logged_models")
trace_info = _load("trace_info")
trace_tags = _load("trace_tags")
assessments = _load("assessments")
registered_models = _load("registered_models")
registered_model_tags = _load("registered_model_tags")
registered_model_aliases = _load("registered_model_aliases")
model_versions = _load("model_versions")
model_version_tags = _load("model_version_tags")


# -- MLflow's basic-auth database ----------------------------------------------------------------
# A database of its own (basic-auth's ``database_uri``), read once by ``mlflow-share adopt
# basic-auth``. Its tables are reflected from that database rather than loaded from MLflow's
# models: importing ``mlflow.server.auth.db.models`` runs MLflow's basic-auth app module (it
# reads its config and needs Flask-WTF), and the database was written by whichever MLflow ran
# basic-auth, so it is the database's own columns that must be checked.
_BASIC_AUTH = "mlflow.server.auth.db.models"

# table name -> (module, ORM class or "" for a table MLflow keeps without a model, columns read)
BASIC_AUTH_DECLARED: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "users": (_BASIC_AUTH, "SqlUser", ("id", "username", "password_hash", "is_admin")),
    "roles": (_BASIC_AUTH, "SqlRole", ("id", "name", "workspace")),
    "role_permissions": (_BASIC_AUTH, "SqlRolePermission",
                         ("id", "role_id", "resource_type", "resource_pattern", "permission")),
    "user_role_assignments": (_BASIC_AUTH, "SqlUserRoleAssignment", ("user_id", "role_id")),
    # Per-user permissions before MLflow's role-based permissions (migration e5f6a7b8c9d0
    # copies them into roles and keeps these tables, unread, for a rollback).
    "experiment_permissions": (_BASIC_AUTH, "", ("experiment_id", "user_id", "permission")),
    "registered_model_permissions": (_BASIC_AUTH, "", ("name", "user_id", "permission")),
}
BASIC_AUTH_USERS = ("users",)
BASIC_AUTH_ROLES = ("roles", "role_permissions", "user_role_assignments")
BASIC_AUTH_LEGACY = ("experiment_permissions", "registered_model_permissions")


def reflect_basic_auth(engine: sa.Engine) -> tuple[dict[str, sa.Table], list[str]]:
    """The declared basic-auth tables a database has, and what it lacks of them: a missing
    table by name, a missing column as ``table.column``."""
    present = set(sa.inspect(engine).get_table_names())
    metadata = sa.MetaData()
    found: dict[str, sa.Table] = {}
    gone: list[str] = []
    for name, (_module, _cls, columns) in BASIC_AUTH_DECLARED.items():
        if name not in present:
            gone.append(name)
            continue
        table = sa.Table(name, metadata, autoload_with=engine)
        lacking = [f"{name}.{column}" for column in columns if column not in table.c]
        if lacking:
            gone.extend(lacking)
        else:
            found[name] = table
    return found, gone


def basic_auth_model_drift() -> list[str]:
    """Declared basic-auth tables or columns the installed MLflow's models no longer have
    (``[]`` also when basic-auth cannot be imported here: it needs ``mlflow[auth]``)."""
    try:
        module = importlib.import_module(_BASIC_AUTH)
    except ImportError:
        return []
    gone = []
    for name, (_module, cls, columns) in BASIC_AUTH_DECLARED.items():
        if not cls:
            continue
        model = getattr(module, cls, None)
        table = getattr(model, "__table__", None)
        if table is None or table.name != name:
            gone.append(name)
            continue
        gone.extend(f"{name}.{column}" for column in columns if column not in table.c)
    return gone
