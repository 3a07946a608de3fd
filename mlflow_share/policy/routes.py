"""The route table: every (method, path) of the running MLflow app → a resource resolver and an action.

Routes are keyed by what MLflow itself uses to dispatch them: the protobuf request message for
the REST API (``mlflow.GetRun``), the Flask endpoint name for the few hand-written Flask
routes, the FastAPI route name for routes uvicorn serves natively. A route whose key is not in
the table has no decision and is denied, so an MLflow upgrade that adds a route fails closed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map
from werkzeug.routing import Rule as WerkzeugRule


class Resolver(str, enum.Enum):
    """How a route's resource is found: each member is bound to one resolver of the
    interceptor (``Interceptor.RESOLVERS``), so a misspelt resolver fails at import."""

    ADMIN = "admin"
    ARTIFACT = "artifact"
    AUTHENTICATED = "authenticated"
    CREATE_EXPERIMENT = "create_experiment"
    CREATE_MODEL = "create_model"
    EXPERIMENT = "experiment"
    EXPERIMENT_BY_NAME = "experiment_by_name"
    EXPERIMENTS = "experiments"
    GRAPHQL = "graphql"
    LOGGED_MODEL = "logged_model"
    LOGIN = "login"
    MODEL = "model"
    MODEL_ALIAS = "model_alias"
    MODEL_VERSION_CREATE = "model_version_create"
    MODEL_VERSION_FILES = "model_version_files"
    PAGE = "page"
    PUBLIC = "public"
    RUN = "run"
    RUNS = "runs"
    SEARCH = "search"
    TRACE = "trace"
    TRACE_LOCATIONS = "trace_locations"
    TRACE_START_V3 = "trace_start_v3"
    TRACES = "traces"


@dataclass(frozen=True)
class Rule:
    """How to decide one route.

    Attributes:
        resolver: how the resource is found (see ``mlflow_share.auth.resolvers``).
        action: the action asked of the policy (read, write, create, manage).
        fields: request parameters the resolver reads, in MLflow's precedence order.
        needs_body: the resolver reads the JSON body (so it must be buffered).
        search: restrict store searches in this request to what the caller may read.
        source: ``auto`` reads parameters as MLflow's REST handlers do (query string for a GET
            with one, else the JSON body); ``query`` for hand-written routes reading ``args``.
        lineage: a read also allowed to teams that may read a model registered from the run.
        mlflow_refuses_missing: the route's MLflow view refuses a request without its
            resource field itself, in its own words; with none named there is nothing to
            decide, so the request is MLflow's to answer.
    """

    resolver: Resolver
    action: str = "read"
    fields: tuple[str, ...] = ()
    needs_body: bool = False
    search: bool = False
    source: str = "auto"
    lineage: bool = False
    mlflow_refuses_missing: bool = False


PUBLIC = Rule(Resolver.PUBLIC)
AUTHENTICATED = Rule(Resolver.AUTHENTICATED)
ADMIN = Rule(Resolver.ADMIN, "admin")


def _r(resolver: Resolver, action: str, *fields: str, **kwargs: Any) -> Rule:
    return Rule(resolver, action, tuple(fields), **kwargs)


# fmt: off
_EXPERIMENT_READ = _r(Resolver.EXPERIMENT, "read", "experiment_id")
_EXPERIMENT_WRITE = _r(Resolver.EXPERIMENT, "write", "experiment_id")
_EXPERIMENTS_READ = _r(Resolver.EXPERIMENTS, "read", "experiment_ids")
_RUN_READ = _r(Resolver.RUN, "read", "run_id", "run_uuid")
_RUN_WRITE = _r(Resolver.RUN, "write", "run_id", "run_uuid")
_LOGGED_MODEL_READ = _r(Resolver.LOGGED_MODEL, "read", "model_id")
_LOGGED_MODEL_WRITE = _r(Resolver.LOGGED_MODEL, "write", "model_id")
_TRACE_READ_V2 = _r(Resolver.TRACE, "read", "request_id")
_TRACE_WRITE_V2 = _r(Resolver.TRACE, "write", "request_id")
_TRACE_READ = _r(Resolver.TRACE, "read", "trace_id")
_TRACE_WRITE = _r(Resolver.TRACE, "write", "trace_id")
_MODEL_READ = _r(Resolver.MODEL, "read", "name")
_MODEL_WRITE = _r(Resolver.MODEL, "write", "name")
_MODEL_MANAGE = _r(Resolver.MODEL, "manage", "name")
_ARTIFACT_READ = _r(Resolver.ARTIFACT, "read", "artifact_path")
_ARTIFACT_WRITE = _r(Resolver.ARTIFACT, "write", "artifact_path")

# REST API, keyed by protobuf message full name (or `fn:` + handler name).
REST_RULES: Mapping[str, Rule] = {
    # experiments
    "mlflow.CreateExperiment": _r(Resolver.CREATE_EXPERIMENT, "create"),
    "mlflow.GetExperiment": _EXPERIMENT_READ,
    "mlflow.GetExperimentByName": _r(Resolver.EXPERIMENT_BY_NAME, "read", "experiment_name"),
    "mlflow.SearchExperiments": Rule(Resolver.SEARCH, "read", search=True),
    "mlflow.UpdateExperiment": _EXPERIMENT_WRITE,
    "mlflow.DeleteExperiment": _EXPERIMENT_WRITE,
    "mlflow.RestoreExperiment": _EXPERIMENT_WRITE,
    "mlflow.SetExperimentTag": _EXPERIMENT_WRITE,
    "mlflow.DeleteExperimentTag": _EXPERIMENT_WRITE,
    "mlflow.SearchDatasets": _EXPERIMENTS_READ,
    # runs
    "mlflow.CreateRun": _EXPERIMENT_WRITE,
    "mlflow.GetRun": _r(Resolver.RUN, "read", "run_id", "run_uuid", lineage=True),
    "mlflow.SearchRuns": _EXPERIMENTS_READ,
    "mlflow.UpdateRun": _RUN_WRITE,
    "mlflow.DeleteRun": _RUN_WRITE,
    "mlflow.RestoreRun": _RUN_WRITE,
    "mlflow.LogMetric": _RUN_WRITE,
    "mlflow.LogParam": _RUN_WRITE,
    "mlflow.LogBatch": _RUN_WRITE,
    "mlflow.LogModel": _RUN_WRITE,
    "mlflow.LogInputs": _RUN_WRITE,
    "mlflow.LogOutputs": _RUN_WRITE,
    "mlflow.SetTag": _RUN_WRITE,
    "mlflow.DeleteTag": _RUN_WRITE,
    "mlflow.ListArtifacts": _RUN_READ,
    "mlflow.GetMetricHistory": _RUN_READ,
    "mlflow.GetMetricHistoryBulkInterval": _r(Resolver.RUNS, "read", "run_ids"),
    # logged models
    "mlflow.CreateLoggedModel": _EXPERIMENT_WRITE,
    "mlflow.GetLoggedModel": _LOGGED_MODEL_READ,
    "mlflow.ListLoggedModelArtifacts": _LOGGED_MODEL_READ,
    "mlflow.SearchLoggedModels": _EXPERIMENTS_READ,
    "mlflow.FinalizeLoggedModel": _LOGGED_MODEL_WRITE,
    "mlflow.DeleteLoggedModel": _LOGGED_MODEL_WRITE,
    "mlflow.SetLoggedModelTags": _LOGGED_MODEL_WRITE,
    "mlflow.DeleteLoggedModelTag": _LOGGED_MODEL_WRITE,
    "mlflow.LogLoggedModelParamsRequest": _LOGGED_MODEL_WRITE,
    # traces
    "mlflow.StartTrace": _EXPERIMENT_WRITE,
    "mlflow.StartTraceV3": _r(Resolver.TRACE_START_V3, "write", "trace"),
    "mlflow.EndTrace": _TRACE_WRITE_V2,
    "mlflow.GetTraceInfo": _TRACE_READ_V2,
    "mlflow.SetTraceTag": _TRACE_WRITE_V2,
    "mlflow.DeleteTraceTag": _TRACE_WRITE_V2,
    "mlflow.GetTraceInfoV3": _TRACE_READ,
    "mlflow.GetTrace": _TRACE_READ,
    "mlflow.SetTraceTagV3": _TRACE_WRITE,
    "mlflow.DeleteTraceTagV3": _TRACE_WRITE,
    "mlflow.BatchGetTraces": _r(Resolver.TRACES, "read", "trace_ids"),
    "mlflow.BatchGetTraceInfos": _r(Resolver.TRACES, "read", "trace_ids"),
    "mlflow.SearchTraces": _EXPERIMENTS_READ,
    "mlflow.SearchTracesV3": _r(Resolver.TRACE_LOCATIONS, "read", "locations"),
    "mlflow.DeleteTraces": _EXPERIMENT_WRITE,
    "mlflow.DeleteTracesV3": _EXPERIMENT_WRITE,
    "mlflow.LinkTracesToRun": _RUN_WRITE,
    "mlflow.GetAssessmentRequest": _TRACE_READ,
    "mlflow.CreateAssessment": _TRACE_WRITE,
    "mlflow.UpdateAssessment": _TRACE_WRITE,
    "mlflow.DeleteAssessment": _TRACE_WRITE,
    # registry
    "mlflow.CreateRegisteredModel": _r(Resolver.CREATE_MODEL, "create", "name"),
    "mlflow.GetRegisteredModel": _MODEL_READ,
    "mlflow.SearchRegisteredModels": Rule(Resolver.SEARCH, "read", search=True),
    "mlflow.UpdateRegisteredModel": _MODEL_WRITE,
    "mlflow.RenameRegisteredModel": _r(Resolver.MODEL, "manage", "name"),
    "mlflow.DeleteRegisteredModel": _r(Resolver.MODEL, "manage", "name"),
    "mlflow.GetLatestVersions": _MODEL_READ,
    "mlflow.SetRegisteredModelTag": _MODEL_WRITE,
    "mlflow.DeleteRegisteredModelTag": _MODEL_WRITE,
    "mlflow.SetRegisteredModelAlias": _r(Resolver.MODEL_ALIAS, "write", "name", "alias"),
    "mlflow.DeleteRegisteredModelAlias": _r(Resolver.MODEL_ALIAS, "write", "name", "alias"),
    "mlflow.GetModelVersionByAlias": _MODEL_READ,
    "mlflow.CreateModelVersion": _r(Resolver.MODEL_VERSION_CREATE, "write", "name"),
    "mlflow.GetModelVersion": _MODEL_READ,
    "mlflow.GetModelVersionDownloadUri": _MODEL_READ,
    "mlflow.SearchModelVersions": Rule(Resolver.SEARCH, "read", search=True),
    "mlflow.UpdateModelVersion": _MODEL_WRITE,
    "mlflow.TransitionModelVersionStage": _MODEL_WRITE,
    "mlflow.DeleteModelVersion": _MODEL_WRITE,
    "mlflow.SetModelVersionTag": _MODEL_WRITE,
    "mlflow.DeleteModelVersionTag": _MODEL_WRITE,
    # proxied artifacts (Flask side; uvicorn serves GET/PUT natively, see NATIVE_RULES)
    "mlflow.artifacts.DownloadArtifact": _ARTIFACT_READ,
    "mlflow.artifacts.UploadArtifact": _ARTIFACT_WRITE,
    "mlflow.artifacts.DeleteArtifact": _ARTIFACT_WRITE,
    "mlflow.artifacts.ListArtifacts": _r(Resolver.ARTIFACT, "read", "path"),
    "mlflow.artifacts.CreateMultipartUpload": _ARTIFACT_WRITE,
    "mlflow.artifacts.CompleteMultipartUpload": _ARTIFACT_WRITE,
    "mlflow.artifacts.AbortMultipartUpload": _ARTIFACT_WRITE,
    # GraphQL: authenticated here, then authorised field by field (auth/graphql.py).
    "fn:_graphql": Rule(Resolver.GRAPHQL, "read", search=True),
    "fn:_get_server_info": AUTHENTICATED,
}

# Hand-written Flask routes of mlflow.server, keyed by Flask endpoint name.
FLASK_RULES: Mapping[str, Rule] = {
    "health": PUBLIC,
    "version": PUBLIC,
    "serve": Rule(Resolver.PAGE),  # MLflow's UI: a browser without a session goes to log in
    "serve_static_file": PUBLIC,
    "static": PUBLIC,
    # These views read `request.args` whatever the method: so does their rule.
    "serve_artifacts": _r(Resolver.RUN, "read", "run_id", "run_uuid", source="query"),
    "serve_model_version_artifact": _r(Resolver.MODEL_VERSION_FILES, "read", "name", "version",
                                       source="query"),
    "serve_get_metric_history_bulk": _r(Resolver.RUNS, "read", "run_id", source="query"),
    "serve_get_metric_history_bulk_interval": _r(Resolver.RUNS, "read", "run_ids", source="query"),
    "get_metric_history_bulk_interval_handler": _r(Resolver.RUNS, "read", "run_ids", source="query"),
    "serve_search_datasets": _EXPERIMENTS_READ,
    "serve_create_promptlab_run": _r(Resolver.EXPERIMENT, "write", "experiment_id",
                                     mlflow_refuses_missing=True),
    "serve_upload_artifact": _r(Resolver.RUN, "write", "run_id", "run_uuid", source="query",
                                mlflow_refuses_missing=True),
    "serve_get_trace_artifact": _r(Resolver.TRACE, "read", "request_id", source="query"),
    "serve_get_logged_model_artifact": _LOGGED_MODEL_READ,
    "serve_get_ui_telemetry": AUTHENTICATED,
    "serve_post_ui_telemetry": AUTHENTICATED,
    # mlflow-share's own API and pages: authenticated here, authorised inside each view.
    "mlflow_share_api.whoami": AUTHENTICATED,
    "mlflow_share_health.ready": PUBLIC,
    # Public keys verifiers check OMS signatures with: public, for holders of a model.sig
    # without an account here. Signing every unsigned version is the org admins'.
    "mlflow_share_signing.list_signing_keys": PUBLIC,
    "mlflow_share_signing.sign_existing": ADMIN,
    # SCIM 2.0 (mlflow_share.scim.api): the blueprint authenticates every request itself
    # (the provisioning token, which nothing else accepts, or an org admin) so that each
    # answer, a refusal too, is in SCIM's error schema; every request is audited.
    **{f"mlflow_share_scim.{endpoint}": Rule(Resolver.LOGIN) for endpoint in (
        "list_scim_users", "create_scim_user", "search_scim_users", "get_scim_user",
        "replace_scim_user", "patch_scim_user", "delete_scim_user", "list_scim_groups",
        "create_scim_group", "search_scim_groups", "get_scim_group", "replace_scim_group",
        "patch_scim_group", "delete_scim_group", "service_provider_config", "resource_types",
        "resource_type", "schemas", "schema", "elsewhere")},
    "mlflow_share_scim_admin.create_scim_token": ADMIN,
    "mlflow_share_scim_admin.list_scim_tokens": ADMIN,
    "mlflow_share_scim_admin.revoke_scim_token": ADMIN,
    # Browser pages: the login routes check what they receive themselves (and are audited).
    # MLflow UI's own account calls: who is signed in (and its Logout, which asks it with
    # made-up credentials), answered by a view that reads the credentials itself.
    "mlflow_share_account.current_user": Rule(Resolver.LOGIN),
    "mlflow_share_account.ajax_current_user": Rule(Resolver.LOGIN),
    "mlflow_share_web.login_form": Rule(Resolver.LOGIN),
    "mlflow_share_web.login_submit": Rule(Resolver.LOGIN),
    "mlflow_share_web.sso_start": Rule(Resolver.LOGIN),
    "mlflow_share_web.sso_callback": Rule(Resolver.LOGIN),
    "mlflow_share_web.static_file": PUBLIC,
    "mlflow_share_web.page": Rule(Resolver.PAGE),
    "mlflow_share_web.page_access": Rule(Resolver.PAGE),
    "mlflow_share_web.page_monitoring": Rule(Resolver.PAGE),
    # OAuth endpoints (device login, workload identity): their callers have no credentials
    # yet; the views check what they receive and every call is audited (not PUBLIC, which
    # is not). The device login page needs a session; its routes accept sessions only.
    "mlflow_share_oauth.device_authorization": Rule(Resolver.LOGIN),
    "mlflow_share_oauth.token": Rule(Resolver.LOGIN),
    "mlflow_share_device.page": Rule(Resolver.PAGE),
    "mlflow_share_device.show_device_request": AUTHENTICATED,
    "mlflow_share_device.approve_device_request": AUTHENTICATED,
    "mlflow_share_device.reject_device_request": AUTHENTICATED,
    "mlflow_share_trust.add_trust_rule": ADMIN,
    "mlflow_share_trust.list_trust_rules": ADMIN,
    "mlflow_share_trust.remove_trust_rule": ADMIN,
}

# Routes uvicorn serves natively (FastAPI), keyed by route name.
NATIVE_RULES: Mapping[str, Rule] = {
    "health": PUBLIC,
    "get_server_info": AUTHENTICATED,
    "download_artifact": _ARTIFACT_READ,
    "upload_artifact": _ARTIFACT_WRITE,
}

# Request keys that only an org admin may call: server-wide configuration (gateway secrets,
# webhooks, workspaces, jobs, assistant, MCP) and GenAI evaluation objects that mlflow-share
# does not yet attach to a team. Listed explicitly so that coverage stays exhaustive.
ADMIN_ONLY_PREFIXES = (
    "mlflow.issues.", "mlflow.label_schemas.", "mlflow.review_queues.",
)
ADMIN_ONLY_REST = frozenset({
    "mlflow.CreatePresignedUploadUrl", "mlflow.CreatePresignedDownloadUrl",
    "mlflow.artifacts.GetPresignedDownloadUrl",
    "mlflow.LinkPromptsToTrace", "mlflow.SearchUnifiedTraces", "mlflow.GetOnlineTraceDetails",
    "mlflow.CalculateTraceFilterCorrelation", "mlflow.QueryTraceMetrics",
    "mlflow.CreateWorkspace", "mlflow.GetWorkspace", "mlflow.ListWorkspaces",
    "mlflow.UpdateWorkspace", "mlflow.DeleteWorkspace",
    "mlflow.CreateWebhook", "mlflow.GetWebhook", "mlflow.ListWebhooks", "mlflow.UpdateWebhook",
    "mlflow.DeleteWebhook", "mlflow.TestWebhook",
    "mlflow.CreateDataset", "mlflow.GetDataset", "mlflow.DeleteDataset",
    "mlflow.SearchEvaluationDatasets", "mlflow.SetDatasetTags", "mlflow.DeleteDatasetTag",
    "mlflow.UpsertDatasetRecords", "mlflow.GetDatasetExperimentIds", "mlflow.GetDatasetRecords",
    "mlflow.DeleteDatasetRecords", "mlflow.AddDatasetToExperiments",
    "mlflow.RemoveDatasetFromExperiments",
    "mlflow.RegisterScorer", "mlflow.ListScorers", "mlflow.ListScorerVersions", "mlflow.GetScorer",
    "mlflow.DeleteScorer",
    "mlflow.CreatePromptOptimizationJob", "mlflow.GetPromptOptimizationJob",
    "mlflow.SearchPromptOptimizationJobs", "mlflow.CancelPromptOptimizationJob",
    "mlflow.DeletePromptOptimizationJob",
    "fn:_get_online_scoring_configs", "fn:_upsert_online_scoring_config", "fn:_get_job",
    "fn:_cancel_job", "fn:_delete_demo", "fn:_generate_demo", "fn:_get_provider_config",
    "fn:_get_secrets_config", "fn:_invoke_genai_evaluate_handler",
    "fn:_invoke_issue_detection_handler", "fn:_invoke_scorer_handler",
    "fn:_sync_issue_detection_schedule_state_handler",
    "fn:_list_supported_models", "fn:_list_supported_providers",
})
ADMIN_ONLY_REST_PREFIX_GATEWAY = re.compile(r"^mlflow\.\w*(Gateway|Guardrail)\w*$")
ADMIN_ONLY_FLASK = frozenset({"serve_gateway_proxy"})
ADMIN_ONLY_NATIVE_PREFIXES = ("/gateway/", "/v1/traces", "/ajax-api/3.0/jobs",
                              "/ajax-api/3.0/mlflow/assistant/", "/ajax-api/3.0/mlflow/mcp-servers",
                              "/api/3.0/mlflow/mcp-servers",
                              # MLflow 3.18 skills: not attached to a team by mlflow-share
                              "/ajax-api/3.0/mlflow/skills", "/api/3.0/mlflow/skills")
# fmt: on


def rest_rule(key: str) -> Rule | None:
    rule = REST_RULES.get(key)
    if rule is not None:
        return rule
    if (
        key in ADMIN_ONLY_REST
        or key.startswith(ADMIN_ONLY_PREFIXES)
        or ADMIN_ONLY_REST_PREFIX_GATEWAY.match(key)
    ):
        return ADMIN
    return None


def flask_rule(endpoint: str) -> Rule | None:
    if endpoint in FLASK_RULES:
        return FLASK_RULES[endpoint]
    if endpoint.startswith("mlflow_share"):
        return AUTHENTICATED
    if endpoint in ADMIN_ONLY_FLASK:
        return ADMIN
    return None


def native_rule(name: str, path: str) -> Rule | None:
    if name in NATIVE_RULES:
        return NATIVE_RULES[name]
    if path.startswith(ADMIN_ONLY_NATIVE_PREFIXES):
        return ADMIN
    return None


def _request_key(handler_or_class: Any) -> str:
    descriptor = getattr(handler_or_class, "DESCRIPTOR", None)
    if descriptor is not None:
        return str(descriptor.full_name)
    return "fn:" + getattr(handler_or_class, "__name__", repr(handler_or_class))


def rest_keys() -> dict[tuple[str, str], str]:
    """(path, method) → request key for every REST endpoint of the installed MLflow."""
    from mlflow.server import handlers

    keys: dict[tuple[str, str], str] = {}
    for path, handler_or_class, methods in handlers.get_endpoints(lambda request_class: request_class):
        for method in methods:
            keys[(path, method)] = _request_key(handler_or_class)
    return keys


_FASTAPI_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


def fastapi_to_werkzeug(path: str) -> str:
    return _FASTAPI_PARAM.sub(
        lambda m: f"<path:{m.group(1)}>" if m.group(2) == "path" else f"<{m.group(1)}>", path
    )


def native_routes(fastapi_app: Any) -> list[tuple[str, frozenset[str], str]]:
    """(path, methods, name) of every route the FastAPI app serves itself (not the Flask mount)."""
    from mlflow_share.mlflow_compat import native_routes as routes_of

    return routes_of(fastapi_app)


@dataclass(frozen=True)
class Match:
    key: str
    rule: Rule | None
    path_args: Mapping[str, str]


class RouteTable:
    """Matches a request to its rule the way the app dispatches it: native routes first."""

    def __init__(self, flask_app: Any, fastapi_app: Any | None = None) -> None:
        keys = rest_keys()
        flask_rules: list[WerkzeugRule] = []
        self.rules: dict[str, Rule | None] = {}
        for url_rule in flask_app.url_map.iter_rules():
            for method in sorted(url_rule.methods or ()):
                if method in ("HEAD", "OPTIONS"):
                    continue
                key = keys.get((url_rule.rule, method))
                rule = rest_rule(key) if key else None
                if key is None:
                    key = f"flask:{url_rule.endpoint}"
                    rule = flask_rule(url_rule.endpoint)
                endpoint = f"{key}|{method}"
                self.rules[endpoint] = rule
                flask_rules.append(WerkzeugRule(url_rule.rule, endpoint=endpoint, methods=[method]))
        self._flask = Map(flask_rules, strict_slashes=False, merge_slashes=False)
        self._native: Map | None = None
        if fastapi_app is not None:
            native: list[WerkzeugRule] = []
            for path, methods, name in native_routes(fastapi_app):
                for method in sorted(methods):
                    endpoint = f"native:{name}|{method}"
                    self.rules[endpoint] = native_rule(name, path)
                    native.append(WerkzeugRule(fastapi_to_werkzeug(path), endpoint=endpoint,
                                               methods=[method]))
            self._native = Map(native, strict_slashes=False, merge_slashes=False)

    def match(self, path: str, method: str) -> Match | None:
        """Return the matched rule, ``None`` for an unknown path.

        Raises:
            MethodNotAllowed: the path exists but not with this method.
        """
        lookup = "GET" if method == "HEAD" else method
        not_allowed: MethodNotAllowed | None = None
        for table in (self._native, self._flask):
            if table is None:
                continue
            try:
                endpoint, args = table.bind("localhost").match(path, lookup)
            except NotFound:
                continue
            except MethodNotAllowed as exc:
                not_allowed = not_allowed or exc
                continue
            key = str(endpoint).rsplit("|", 1)[0]
            return Match(key, self.rules.get(str(endpoint)), args)
        if not_allowed is not None:
            raise not_allowed
        return None

    def undecided(self) -> list[str]:
        """Every route endpoint with no rule; a healthy table returns ``[]``."""
        return sorted(endpoint for endpoint, rule in self.rules.items() if rule is None)
