"""Every request field that names an entity or a storage location, and how it is decided.

The route table (``policy/routes.py``) says which resource a route acts on; this table says
what every *other* field of its request message may name. Each field path (dotted, lists
transparent) of a REST request message maps to a ``Field``: a ``Check`` the interceptor runs
on the value MLflow's handler reads (``auth/contract.py`` parses it), or ``HARMLESS`` with the
reason nobody is reached through it. ``tests/unit/test_field_coverage.py`` walks the protobuf
descriptors of the installed MLflow and fails on any entity- or location-like field this
table does not decide, so a field added by an MLflow upgrade is denied review, not passed.
A declared path also covers the fields below it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class Check(enum.Enum):
    """What a field's value names, and so how it is decided."""

    PRIMARY = "the route's resource, decided by its resolver (policy/routes.py)"
    EXPERIMENT = "an experiment ID"
    RUN = "a run ID"
    RUNS = "run IDs"
    LOGGED_MODEL = "a logged model ID"
    TRACES = "trace IDs"
    TRACE_UPSERT = "a trace ID that StartTraceV3 creates or, if it exists, overwrites"
    MODEL_VERSION_SOURCE = "a model version's source URI"
    LOGGED_MODEL_JSON = "an MLmodel document naming its run"
    RUN_TAGS = "run tags (reserved keys; mlflow.parentRunId names a run)"
    TAGS = "tags of an experiment, logged model, registered model or version (reserved keys)"
    CREATION_TAGS = "tags of a new experiment or model (the owner-team tag is read on creation)"
    TRACE_TAGS = "trace tags (storage locations are the server's)"
    TRACE_METADATA = "trace metadata (mlflow.sourceRun and mlflow.modelId name entities)"
    TAG_KEY = "a tag key set or deleted by itself (reserved keys)"
    TRACE_TAG_KEY = "a trace tag key set or deleted by itself"
    NEW_ASSESSMENT_ID = "an assessment ID the client chooses for a new assessment"
    PRESIGNED = ("a presigned storage URL instead of the bytes (MLflow 3.18+), which would "
                 "skip the digest check of every download")


@dataclass(frozen=True)
class Field:
    check: Check | None
    action: str = "read"
    reason: str = ""


def _check(check: Check, action: str = "read") -> Field:
    return Field(check, action)


def harmless(reason: str) -> Field:
    return Field(None, reason=reason)


PRIMARY = Field(Check.PRIMARY)
_NAME = harmless("display text: the name of the entity the request creates or changes")
_METRIC_KEY = harmless("a metric or param key inside the run the route names")
_DATASET_REF = harmless("dataset name and digest: labels stored with the row, nothing is read")
_TRACE_ASSESSMENT = harmless("MLflow binds the assessment to the trace the path names")
_ASSESSMENT_ID = harmless("looked up by MLflow within the trace the route names")

# fmt: off
FIELDS: Mapping[str, Mapping[str, Field]] = {
    # experiments
    "mlflow.CreateExperiment": {
        "name": _NAME,
        "artifact_location": PRIMARY,  # admins only (the resolver refuses it to others)
        "tags": _check(Check.CREATION_TAGS),
    },
    "mlflow.GetExperiment": {"experiment_id": PRIMARY},
    "mlflow.GetExperimentByName": {"experiment_name": PRIMARY},
    "mlflow.UpdateExperiment": {"experiment_id": PRIMARY,
                                "new_name": harmless("MLflow refuses a name in use")},
    "mlflow.DeleteExperiment": {"experiment_id": PRIMARY},
    "mlflow.RestoreExperiment": {"experiment_id": PRIMARY},
    "mlflow.SetExperimentTag": {"experiment_id": PRIMARY, "key": _check(Check.TAG_KEY)},
    "mlflow.DeleteExperimentTag": {"experiment_id": PRIMARY, "key": _check(Check.TAG_KEY)},
    "mlflow.SearchDatasets": {"experiment_ids": PRIMARY},
    # runs
    "mlflow.CreateRun": {
        "experiment_id": PRIMARY,
        "user_id": harmless("MLflow's display of who started the run; the audit log records "
                            "the authenticated caller"),
        "run_name": _NAME,
        "tags": _check(Check.RUN_TAGS),
    },
    "mlflow.GetRun": {"run_id": PRIMARY, "run_uuid": PRIMARY},
    "mlflow.SearchRuns": {"experiment_ids": PRIMARY,
                          "run_view_type": harmless("an enum of run states, not an ID")},
    "mlflow.UpdateRun": {"run_id": PRIMARY, "run_uuid": PRIMARY, "run_name": _NAME},
    "mlflow.DeleteRun": {"run_id": PRIMARY},
    "mlflow.RestoreRun": {"run_id": PRIMARY},
    "mlflow.LogMetric": {"run_id": PRIMARY, "run_uuid": PRIMARY, "key": _METRIC_KEY,
                         "model_id": _check(Check.LOGGED_MODEL, "write"),
                         "dataset_name": _DATASET_REF, "dataset_digest": _DATASET_REF},
    "mlflow.LogParam": {"run_id": PRIMARY, "run_uuid": PRIMARY, "key": _METRIC_KEY},
    "mlflow.LogBatch": {
        "run_id": PRIMARY,
        "metrics.key": _METRIC_KEY,
        "metrics.dataset_name": _DATASET_REF, "metrics.dataset_digest": _DATASET_REF,
        "metrics.model_id": _check(Check.LOGGED_MODEL, "write"),
        "metrics.run_id": harmless("MLflow logs every metric of a batch to the request's "
                                   "run_id (Metric.from_proto drops it)"),
        "params.key": _METRIC_KEY,
        "tags": _check(Check.RUN_TAGS),
    },
    "mlflow.LogModel": {"run_id": PRIMARY, "model_json": _check(Check.LOGGED_MODEL_JSON)},
    "mlflow.LogInputs": {
        "run_id": PRIMARY,
        "datasets": harmless("dataset descriptions (name, digest, source URI, schema) stored "
                             "with the run; the server never opens a dataset source"),
        "models.model_id": _check(Check.LOGGED_MODEL, "write"),
    },
    "mlflow.LogOutputs": {"run_id": PRIMARY, "models.model_id": _check(Check.LOGGED_MODEL, "write")},
    "mlflow.SetTag": {"run_id": PRIMARY, "run_uuid": PRIMARY, "key": _check(Check.TAG_KEY)},
    "mlflow.DeleteTag": {"run_id": PRIMARY, "key": _check(Check.TAG_KEY)},
    "mlflow.ListArtifacts": {"run_id": PRIMARY, "run_uuid": PRIMARY,
                             "path": harmless("validated by MLflow inside the run's root")},
    "mlflow.GetMetricHistory": {"run_id": PRIMARY, "run_uuid": PRIMARY, "metric_key": _METRIC_KEY},
    "mlflow.GetMetricHistoryBulkInterval": {"run_ids": PRIMARY, "metric_key": _METRIC_KEY},
    # logged models
    "mlflow.CreateLoggedModel": {
        "experiment_id": PRIMARY, "name": _NAME,
        "model_type": harmless("a free-text label of the model's kind"),
        # The source run becomes a registered version's run (lineage): the caller must be
        # able to read it, or linking would be a way to read it.
        "source_run_id": _check(Check.RUN, "read"),
        "params.key": _METRIC_KEY,
        "tags": _check(Check.TAGS),
    },
    "mlflow.GetLoggedModel": {"model_id": PRIMARY},
    "mlflow.ListLoggedModelArtifacts": {
        "model_id": PRIMARY,
        "artifact_directory_path": harmless("validated by MLflow inside the model's root")},
    "mlflow.SearchLoggedModels": {
        "experiment_ids": PRIMARY,
        "datasets": harmless("a filter inside the experiments named"),
        "order_by": harmless("sort keys of the result"),
    },
    "mlflow.FinalizeLoggedModel": {"model_id": PRIMARY},
    "mlflow.DeleteLoggedModel": {"model_id": PRIMARY},
    "mlflow.SetLoggedModelTags": {"model_id": PRIMARY, "tags": _check(Check.TAGS)},
    "mlflow.DeleteLoggedModelTag": {"model_id": PRIMARY, "tag_key": _check(Check.TAG_KEY)},
    "mlflow.LogLoggedModelParamsRequest": {"model_id": PRIMARY, "params.key": _METRIC_KEY},
    # traces
    "mlflow.StartTrace": {
        "experiment_id": PRIMARY,
        "request_metadata": _check(Check.TRACE_METADATA),
        "tags": _check(Check.TRACE_TAGS),
    },
    "mlflow.StartTraceV3": {
        "trace.trace_info.trace_location": PRIMARY,
        "trace.trace_info.trace_id": _check(Check.TRACE_UPSERT, "write"),
        "trace.trace_info.client_request_id": harmless("the client's own correlation label"),
        "trace.trace_info.trace_metadata": _check(Check.TRACE_METADATA),
        "trace.trace_info.tags": _check(Check.TRACE_TAGS),
        "trace.trace_info.assessments": harmless("MLflow binds each assessment to the trace "
                                                 "being started, whatever trace_id it names"),
        "trace.spans": harmless("MLflow's StartTraceV3 handler reads trace_info only"),
    },
    "mlflow.EndTrace": {
        "request_id": PRIMARY,
        "request_metadata": _check(Check.TRACE_METADATA),
        "tags": _check(Check.TRACE_TAGS),
    },
    "mlflow.GetTraceInfo": {"request_id": PRIMARY},
    "mlflow.SetTraceTag": {"request_id": PRIMARY, "key": _check(Check.TRACE_TAG_KEY)},
    "mlflow.DeleteTraceTag": {"request_id": PRIMARY, "key": _check(Check.TRACE_TAG_KEY)},
    "mlflow.GetTraceInfoV3": {"trace_id": PRIMARY},
    "mlflow.GetTrace": {"trace_id": PRIMARY},
    "mlflow.SetTraceTagV3": {"trace_id": PRIMARY, "key": _check(Check.TRACE_TAG_KEY)},
    "mlflow.DeleteTraceTagV3": {"trace_id": PRIMARY, "key": _check(Check.TRACE_TAG_KEY)},
    "mlflow.BatchGetTraces": {"trace_ids": PRIMARY,
                              "experiment_ids": harmless("narrows the traces named, each "
                                                         "of which is checked")},
    "mlflow.BatchGetTraceInfos": {"trace_ids": PRIMARY,
                                  "experiment_ids": harmless("narrows the traces named, each "
                                                             "of which is checked")},
    "mlflow.SearchTraces": {"experiment_ids": PRIMARY},
    "mlflow.SearchTracesV3": {"locations": PRIMARY},
    "mlflow.DeleteTraces": {
        "experiment_id": PRIMARY,
        "max_traces": harmless("a count of traces to delete"),
        "request_ids": harmless("MLflow deletes only traces of the experiment named"),
    },
    "mlflow.DeleteTracesV3": {
        "experiment_id": PRIMARY,
        "max_traces": harmless("a count of traces to delete"),
        "request_ids": harmless("MLflow deletes only traces of the experiment named"),
    },
    "mlflow.LinkTracesToRun": {"run_id": PRIMARY, "trace_ids": _check(Check.TRACES, "write")},
    "mlflow.GetAssessmentRequest": {"trace_id": PRIMARY, "assessment_id": _ASSESSMENT_ID},
    "mlflow.CreateAssessment": {
        "assessment": _TRACE_ASSESSMENT,
        # MLflow keeps a client-chosen ID; one in use anywhere would fail in the database.
        "assessment.assessment_id": _check(Check.NEW_ASSESSMENT_ID),
    },
    "mlflow.UpdateAssessment": {"assessment": _TRACE_ASSESSMENT},
    "mlflow.DeleteAssessment": {"trace_id": PRIMARY, "assessment_id": _ASSESSMENT_ID},
    # registry
    "mlflow.CreateRegisteredModel": {
        "name": PRIMARY, "tags": _check(Check.CREATION_TAGS),
        "deployment_job_id": harmless("a Databricks job label; nothing on this server reads it"),
    },
    "mlflow.GetRegisteredModel": {"name": PRIMARY},
    "mlflow.UpdateRegisteredModel": {
        "name": PRIMARY,
        "deployment_job_id": harmless("a Databricks job label; nothing on this server reads it"),
    },
    "mlflow.RenameRegisteredModel": {"name": PRIMARY,
                                     "new_name": harmless("MLflow refuses a name in use")},
    "mlflow.DeleteRegisteredModel": {"name": PRIMARY},
    "mlflow.GetLatestVersions": {"name": PRIMARY},
    "mlflow.SetRegisteredModelTag": {"name": PRIMARY, "key": _check(Check.TAG_KEY)},
    "mlflow.DeleteRegisteredModelTag": {"name": PRIMARY, "key": _check(Check.TAG_KEY)},
    "mlflow.SetRegisteredModelAlias": {"name": PRIMARY},
    "mlflow.DeleteRegisteredModelAlias": {"name": PRIMARY},
    "mlflow.GetModelVersionByAlias": {"name": PRIMARY},
    "mlflow.CreateModelVersion": {
        "name": PRIMARY,
        "source": _check(Check.MODEL_VERSION_SOURCE, "read"),
        "run_id": _check(Check.RUN, "read"),
        "model_id": _check(Check.LOGGED_MODEL, "read"),
        "tags": _check(Check.TAGS),
        "run_link": harmless("a link MLflow's UI shows; the server never follows it"),
    },
    "mlflow.GetModelVersion": {"name": PRIMARY},
    "mlflow.GetModelVersionDownloadUri": {"name": PRIMARY},
    "mlflow.UpdateModelVersion": {"name": PRIMARY},
    "mlflow.TransitionModelVersionStage": {"name": PRIMARY},
    "mlflow.DeleteModelVersion": {"name": PRIMARY},
    "mlflow.SetModelVersionTag": {"name": PRIMARY, "key": _check(Check.TAG_KEY)},
    "mlflow.DeleteModelVersionTag": {"name": PRIMARY, "key": _check(Check.TAG_KEY)},
    # proxied artifacts: the path is a route parameter, decided by the artifact resolver
    "mlflow.artifacts.ListArtifacts": {"path": PRIMARY},
    "mlflow.artifacts.CreateMultipartUpload": {"path": PRIMARY},
    "mlflow.artifacts.CompleteMultipartUpload": {
        "path": PRIMARY, "upload_id": harmless("the store binds an upload to its path")},
    "mlflow.artifacts.AbortMultipartUpload": {
        "path": PRIMARY, "upload_id": harmless("the store binds an upload to its path")},
}

# MLflow's hand-written Flask routes (``flask:<endpoint>``), read from ``request.args`` or the
# JSON body by their own code, and the routes uvicorn serves natively (``native:<name>``).
_MLFLOW_VALIDATES_PATH = harmless("a path MLflow validates inside the resource's own root "
                                  "(and mlflow-share bounds its length)")
ROUTE_FIELDS: Mapping[str, Mapping[str, Field]] = {
    "flask:serve_artifacts": {"run_id": PRIMARY, "run_uuid": PRIMARY,
                              "path": _MLFLOW_VALIDATES_PATH},
    "flask:serve_model_version_artifact": {"name": PRIMARY, "version": PRIMARY,
                                           "path": _MLFLOW_VALIDATES_PATH,
                                           "presigned": _check(Check.PRESIGNED)},
    "flask:serve_get_metric_history_bulk": {"run_id": PRIMARY, "metric_key": _METRIC_KEY,
                                            "max_results": harmless("a page size")},
    "flask:serve_get_metric_history_bulk_interval": {
        "run_ids": PRIMARY, "metric_key": _METRIC_KEY,
        "start_step": harmless("a step bound"), "end_step": harmless("a step bound"),
        "max_results": harmless("a page size")},
    "flask:get_metric_history_bulk_interval_handler": {
        "run_ids": PRIMARY, "metric_key": _METRIC_KEY,
        "start_step": harmless("a step bound"), "end_step": harmless("a step bound"),
        "max_results": harmless("a page size")},
    "flask:serve_search_datasets": {"experiment_ids": PRIMARY},
    "flask:serve_create_promptlab_run": {
        "experiment_id": PRIMARY,
        "tags": _check(Check.RUN_TAGS),
        "run_name": _NAME,
        "user_id": harmless("MLflow's display of who started the run; the audit log records "
                            "the authenticated caller"),
        "model_route": harmless("recorded as a param of the new run; nothing is called"),
        **{name: harmless("prompt-lab text recorded with the new run") for name in (
            "prompt_template", "prompt_parameters", "model_parameters", "model_input",
            "model_output", "model_output_parameters", "mlflow_version", "start_time")},
    },
    # MLflow 3.18 reads run_id first, older versions run_uuid only: the first present is
    # the route's run, and each one given must be writable (whichever the version reads).
    "flask:serve_upload_artifact": {"run_id": PRIMARY, "run_uuid": _check(Check.RUN, "write"),
                                    "path": _MLFLOW_VALIDATES_PATH},
    "flask:serve_get_trace_artifact": {"request_id": PRIMARY, "path": _MLFLOW_VALIDATES_PATH},
    "flask:serve_get_logged_model_artifact": {"model_id": PRIMARY,
                                              "artifact_file_path": _MLFLOW_VALIDATES_PATH,
                                              "presigned": _check(Check.PRESIGNED)},
    "flask:serve_post_ui_telemetry": {"records": harmless("UI usage events; no entity")},
    "native:download_artifact": {"artifact_path": PRIMARY},
    "native:upload_artifact": {"artifact_path": PRIMARY},
}
# fmt: on


def rule_for(key: str, path: str) -> Field | None:
    """The declared rule for ``path`` or the nearest declared field above it."""
    fields = FIELDS.get(key) or ROUTE_FIELDS.get(key)
    if fields is None:
        return None
    while True:
        if path in fields:
            return fields[path]
        if "." not in path:
            return None
        path = path.rsplit(".", 1)[0]


def checked_fields(key: str) -> Iterator[tuple[str, Field]]:
    """The fields of request ``key`` that the interceptor checks beyond the route's resolver."""
    for path, rule in (FIELDS.get(key) or ROUTE_FIELDS.get(key) or {}).items():
        if rule.check is not None and rule.check is not Check.PRIMARY:
            yield path, rule


def values_at(data: Any, path: str) -> list[Any]:
    """Every value at dotted ``path`` in parsed request ``data`` (lists are walked through)."""
    current = [data]
    for part in path.split("."):
        following: list[Any] = []
        for item in current:
            if isinstance(item, list):
                item_values: list[Any] = item
            else:
                item_values = [item]
            for element in item_values:
                if isinstance(element, dict) and part in element:
                    value = element[part]
                    following.extend(value if isinstance(value, list) else [value])
        current = following
    return current
