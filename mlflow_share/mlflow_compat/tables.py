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
              "lifecycle_stage", "artifact_uri")),
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
                        "creation_time", "last_updated_time", "workspace")),
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
