"""GraphQL, authorised field by field with the same checks as the REST routes.

MLflow's ``/graphql`` view executes a Graphene schema whose root fields call the REST
handlers' logic directly, bypassing the route table. This view runs the same schema with a
middleware that allows only the root fields it knows, checks each against the policy, and
leaves searches to the scoped stores (the request's ``SearchScope`` is already set).
"""

from __future__ import annotations

from typing import Any

from flask import jsonify
from mlflow.exceptions import MlflowException

from mlflow_share.auth.interceptor import Interceptor, note_denial
from mlflow_share.auth.resolvers import check_path_length
from mlflow_share.errors import InvalidInput, PermissionDenied
from mlflow_share.request_state import CURRENT_PRINCIPAL

# Every input field of the root fields this view allows, and how it is decided (the guard in
# tests/unit/test_field_coverage.py fails on a root field's input field missing here).
GRAPHQL_FIELDS: dict[str, dict[str, str]] = {
    "mlflowGetExperiment": {"experimentId": "read on the experiment"},
    "mlflowGetRun": {"runId": "read on the run's experiment", "runUuid": "as runId"},
    "mlflowListArtifacts": {"runId": "read on the run's experiment", "runUuid": "as runId",
                            "path": "validated by MLflow inside the run's root; length bounded",
                            "pageToken": "MLflow's own paging"},
    "mlflowGetMetricHistoryBulkInterval": {
        "runIds": "read on each run's experiment", "metricKey": "a key inside those runs",
        "startStep": "a bound", "endStep": "a bound", "maxResults": "a page size"},
    "mlflowSearchRuns": {"experimentIds": "read on each experiment",
                         "filter": "inside those experiments", "runViewType": "an enum",
                         "maxResults": "a page size", "orderBy": "sort keys",
                         "pageToken": "MLflow's own paging"},
    "mlflowSearchDatasets": {"experimentIds": "read on each experiment"},
    "mlflowSearchModelVersions": {"filter": "the scoped registry store filters in SQL",
                                  "maxResults": "a page size", "orderBy": "sort keys",
                                  "pageToken": "MLflow's own paging"},
    "test": {}, "testMutation": {},
}


class ShareGraphQLMiddleware:
    """Graphene middleware: deny unknown root fields, check known ones."""

    def __init__(self, interceptor: Interceptor, root_types: set[str]) -> None:
        self.interceptor = interceptor
        self.root_types = root_types

    def resolve(self, next_: Any, root: Any, info: Any, **args: Any) -> Any:
        if info.parent_type.name in self.root_types:
            try:
                self._authorise(info.field_name, args.get("input"))
            except MlflowException as exc:
                # GraphQL answers 200 with the error in ``errors``: the request's audit
                # event still records the refusal as a denial.
                note_denial(exc.message)
                raise
        return next_(root, info, **args)

    def _authorise(self, field: str, request: Any) -> None:
        principal = CURRENT_PRINCIPAL.get()
        if principal is None:
            raise PermissionDenied("Authentication required.")
        if principal.is_admin:
            return
        checks = self.interceptor
        if field not in GRAPHQL_FIELDS:
            raise PermissionDenied(f"GraphQL field {field!r} has no mlflow-share policy.")
        if field in ("test", "testMutation", "mlflowSearchModelVersions"):
            return  # no data, or filtered by the scoped registry store
        if field == "mlflowGetExperiment":
            checks._check_experiment(principal, _required(request, "experiment_id"), "read")
        elif field in ("mlflowGetRun", "mlflowListArtifacts"):
            run_id = getattr(request, "run_id", None) or getattr(request, "run_uuid", None)
            if not run_id:
                raise InvalidInput("run_id is required.")
            if path := getattr(request, "path", None):
                check_path_length(str(path))
            checks._check_run(principal, run_id, "read")
        elif field == "mlflowGetMetricHistoryBulkInterval":
            for run_id in getattr(request, "run_ids", None) or []:
                checks._check_run(principal, run_id, "read")
        elif field in ("mlflowSearchRuns", "mlflowSearchDatasets"):
            for experiment_id in getattr(request, "experiment_ids", None) or []:
                checks._check_experiment(principal, str(experiment_id), "read")
        else:
            raise PermissionDenied(f"GraphQL field {field!r} has no mlflow-share policy.")


def _required(request: Any, name: str) -> str:
    value = getattr(request, name, None)
    if not value:
        raise InvalidInput(f"{name} is required.")
    return str(value)


def make_graphql_view(interceptor: Interceptor) -> Any:
    """A drop-in for MLflow's ``_graphql`` view with mlflow-share's middleware."""
    from graphql import GraphQLError, parse
    from mlflow.server.graphql.graphql_no_batching import check_query_safety
    from mlflow.server.graphql.graphql_schema_extensions import schema
    from mlflow.server.handlers import catch_mlflow_exception

    from mlflow_share.mlflow_compat import private

    _get_request_json = private("mlflow.server.handlers", "_get_request_json")

    graphql_schema = schema.graphql_schema
    root_types = {t.name for t in (graphql_schema.query_type, graphql_schema.mutation_type) if t}
    middleware = [ShareGraphQLMiddleware(interceptor, root_types)]

    @catch_mlflow_exception  # type: ignore[misc]
    def _graphql() -> Any:
        request_json = _get_request_json()
        if not isinstance(request_json, dict) or not isinstance(request_json.get("query"), str):
            raise InvalidInput("A GraphQL request needs a 'query' string.")
        query = request_json["query"]
        try:
            node = parse(query)
        except GraphQLError as exc:
            raise InvalidInput(f"The GraphQL query does not parse: {exc.message}") from None
        if check_result := check_query_safety(node):
            result = check_result
        else:
            result = schema.execute(
                query,
                variables=request_json.get("variables"),
                operation_name=request_json.get("operationName"),
                middleware=middleware,
            )
        return jsonify({
            "data": result.data,
            "errors": [error.message for error in result.errors] if result.errors else None,
        })

    return _graphql
