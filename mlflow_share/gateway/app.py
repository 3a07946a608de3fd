"""The inference gateway: shared ONNX model versions, called by the teams allowed to run them.

    mlflow-share gateway --backend-store-uri URI --artifacts-destination checksum+file://...

Speaks ``mlflow models serve``'s wire format on ``/v1/models/{name}@{alias}/invocations`` and
``/v1/models/{name}/versions/{version}/invocations`` (so a client swaps only the URL), plus
``GET /v1/models``, ``/ping``, ``/health``, ``/version`` and ``/metrics`` (Prometheus).

Every call is authenticated (API token or password, as the server takes them) and needs
``execute`` on the registered model, decided on the version the alias names. Known callers of
loaded versions are decided in memory, on state read from the database less than
``MLFLOW_SHARE_GATEWAY_FRESHNESS_SECONDS`` ago (a background thread reads it again); anything
else (a first call, a refusal, a password, stale state) is decided on the database in a
worker thread.
The gateway reads MLflow's database and artifact root itself (its service identity) and loads
versions through its inference backend (``gateway.onnx_backend``: every byte checked
against the manifest, ONNX only).
When an alias moves to a version that fails verification, the version it served before keeps
serving and the refusal is logged and audited.

Allowed calls are counted (usage per team and minute), not logged one by one; every refused
request (401, 403, 404, 400, 413, 429 and unrouted paths) is one audit event, committed before
its answer leaves, through ``refuse`` (503 if it cannot be committed), as on the server.
Authentication and the ``execute`` decision are the server's own (``auth.authorizer``).

The parts: ``service`` (the ``Gateway``: targets, cache, decisions, rate limits, audit events),
``routes`` (the views), ``deployments_api`` (``/v1/deployments``), ``responses`` (answers and
audited refusals), ``backend`` (what a runtime must do) and ``onnx_backend`` (onnxruntime).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mlflow_share.audit.log import AuditAppender
from mlflow_share.gateway.responses import refuse
from mlflow_share.gateway.service import (
    INLINE_BODY_BYTES,
    INLINE_RUN_SECONDS,
    MAX_TARGETS,
    Bucket,
    Gateway,
    Labels,
    RateLimiter,
    Target,
)
from mlflow_share.policy.enforcer import PolicyEngine

# Importable from here, where they lived before the split.
__all__ = [
    "INLINE_BODY_BYTES", "INLINE_RUN_SECONDS", "MAX_TARGETS", "Bucket", "Gateway", "Labels",
    "RateLimiter", "Target", "create_gateway_app", "refuse",
]


def create_gateway_app(backend_store_uri: str, artifacts_destination: str, *,
                       policy: PolicyEngine | None = None,
                       appender: AuditAppender | None = None) -> Any:
    """The gateway's ASGI app on a server's database and artifact root; mounted in a server
    worker, with that worker's ``policy`` and audit ``appender``."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    from mlflow_share.gateway import deployments_api, routes
    from mlflow_share.gateway.responses import database_away

    gateway = Gateway.open(backend_store_uri, artifacts_destination, policy=policy,
                           appender=appender)
    app = Starlette(routes=[
        Route("/v1/models/{name}/versions/{version}/invocations", routes.by_version,
              methods=["POST"]),
        Route("/v1/models/{target}/invocations", routes.by_alias, methods=["POST"]),
        Route("/v1/models", routes.list_models, methods=["GET"]),
        Route("/v1/deployments", deployments_api.deployments_route, methods=["GET", "POST"]),
        Route("/v1/deployments/{name}", deployments_api.deployments_route,
              methods=["GET", "PATCH", "DELETE"]),
        Route("/v1/deployments/{name}/invocations", deployments_api.deployment_invocations,
              methods=["POST"]),
        Route("/ping", routes.ping, methods=["GET"]),
        Route("/health", routes.health, methods=["GET"]),
        Route("/version", routes.version, methods=["GET"]),
        Route("/metrics", routes.metrics, methods=["GET"]),
    ], lifespan=routes.lifespan, exception_handlers={
        HTTPException: routes.unrouted, sa.exc.SQLAlchemyError: database_away})
    app.state.gateway = gateway  # the views' service (routes.service)
    return app
