"""The gateway's HTTP routes: invocations, the model listing, health, version and metrics.

Each view is a module-level function of its request: the service it works with is the app's
(``request.app.state.gateway``, set by ``create_gateway_app``), so views keep no state of their
own. Refusals go through ``responses.refuse`` (one audit event each); allowed calls are counted
by the service (metrics and usage), not logged.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from mlflow_share.audit.log import AUDIT_CONTEXT, AuditContext
from mlflow_share.auth.authorizer import MISSING_CREDENTIALS
from mlflow_share.auth.identity import Principal
from mlflow_share.errors import (
    EndpointNotFound,
    InvalidInput,
    MethodNotAllowed,
    MlflowShareError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from mlflow_share.gateway.backend import LoadedModel
from mlflow_share.gateway.responses import DATABASE_AWAY, error, read_body, refuse
from mlflow_share.gateway.service import Gateway, Labels

_logger = logging.getLogger(__name__)


def service(request: Request) -> Gateway:
    """The gateway service of the app serving ``request``."""
    gateway: Gateway = request.app.state.gateway
    return gateway


# -- invocations -------------------------------------------------------------------------------
async def invoke(request: Request, ctx: AuditContext, name: str, alias: str | None,
                 version: int | None) -> Response:
    """Run the version of ``name`` that ``alias`` (or the number ``version``) names on the
    request's body, for a caller allowed to execute it: every outcome is counted in the
    metrics (and the usage, once the model may be named), every refusal audited."""
    gateway = service(request)
    started = time.perf_counter()
    labels = Labels()
    status = 500
    header = request.headers.get("authorization")
    try:
        if not header:  # nothing is read for a caller who sends no credentials
            raise Unauthenticated(MISSING_CREDENTIALS)
        # Decided in memory when the state it needs was read recently enough (the common
        # case: a known caller on a loaded version); else on the database, in a thread.
        admitted = gateway.admit_cached(header, name, alias, version)
        if admitted is None:
            predictions = await _run_decided_on_database(request, ctx, header,
                                                         (name, alias, version), labels)
        else:
            predictions = await _run_decided_in_memory(request, ctx, admitted, name, labels)
        status = 200
        return JSONResponse({"predictions": predictions})
    except MlflowShareError as exc:
        response = await refuse(gateway, request, ctx, exc,
                                model=name if labels.model != "-" else None)
        status = response.status_code
        return response
    except sa.exc.SQLAlchemyError:
        status = 503
        _logger.warning("mlflow-share gateway: database error", exc_info=True)
        return error(DATABASE_AWAY)
    finally:
        gateway.observe(labels, status, time.perf_counter() - started)


async def _run_decided_on_database(request: Request, ctx: AuditContext, header: str,
                                   target: tuple[str, str | None, int | None], labels: Labels
                                   ) -> Any:
    """The slow path: who calls is known before the body is read (an unknown token reads
    none); the decision, the load and the run are in worker threads, where the checks name
    the model in the request's event should they refuse."""
    gateway = service(request)
    content_type = request.headers.get("content-type", "")
    audit_token = AUDIT_CONTEXT.set(ctx)
    try:
        principal = await anyio.to_thread.run_sync(gateway.authenticate, header,
                                                   limiter=gateway.run_limiter)
        ctx.principal = principal.name
        body = await read_body(request, gateway.max_body)  # bounded by the limit
        predictions = await anyio.to_thread.run_sync(
            _admit_and_predict, gateway, principal, target, labels, body, content_type,
            limiter=gateway.run_limiter)
    finally:
        AUDIT_CONTEXT.reset(audit_token)
    gateway.start_refresher()
    return predictions


def _admit_and_predict(gateway: Gateway, principal: Principal,
                       target: tuple[str, str | None, int | None], labels: Labels,
                       body: bytes, content_type: str) -> Any:
    """The decision on the database and the run (it reads the database: a thread)."""
    return gateway.predict(gateway.admit(principal, *target, labels), body, content_type)


async def _run_decided_in_memory(request: Request, ctx: AuditContext,
                                 admitted: tuple[Principal, str, LoadedModel], name: str,
                                 labels: Labels) -> Any:
    """The fast path: the caller was admitted on state in memory; a short run of a small
    body stays on the event loop."""
    gateway = service(request)
    principal, team, model = admitted
    ctx.principal = principal.name
    gateway.take(team, name, labels)
    labels.version = str(model.version)
    body = await read_body(request, gateway.max_body)
    content_type = request.headers.get("content-type", "")
    if gateway.runs_inline(model, body):
        return gateway.predict(model, body, content_type)
    return await anyio.to_thread.run_sync(gateway.predict, model, body, content_type,
                                          limiter=gateway.run_limiter)


async def malformed(request: Request, ctx: AuditContext, problem: MlflowShareError
                    ) -> Response:
    """A call the gateway cannot serve as addressed: refused once its caller is known
    (an unknown caller gets its 401 first, as everywhere)."""
    gateway = service(request)
    try:
        principal = await anyio.to_thread.run_sync(
            gateway.authenticate, request.headers.get("authorization"))
        ctx.principal = principal.name
    except MlflowShareError as exc:
        problem = exc
    return await refuse(gateway, request, ctx, problem)


async def by_alias(request: Request) -> Response:
    """``POST /v1/models/{name}@{alias}/invocations``."""
    ctx = AuditContext(action="gateway.invoke")
    target = request.path_params["target"]
    if "@" not in target:
        return await malformed(request, ctx, NotFound(
            "Use /v1/models/{name}@{alias}/invocations or "
            "/v1/models/{name}/versions/{version}/invocations."))
    name, alias = target.rsplit("@", 1)
    return await invoke(request, ctx, name, alias, None)


async def by_version(request: Request) -> Response:
    """``POST /v1/models/{name}/versions/{version}/invocations``."""
    ctx = AuditContext(action="gateway.invoke")
    version = request.path_params["version"]
    if not re.fullmatch(r"[0-9]{1,9}", version):
        return await malformed(request, ctx, InvalidInput("The version must be a number."))
    return await invoke(request, ctx, request.path_params["name"], None, int(version))


# -- listing, health, metrics ------------------------------------------------------------------
async def list_models(request: Request) -> Response:
    """``GET /v1/models``: the servable models the caller may execute, with their aliases."""
    gateway = service(request)
    ctx = AuditContext(action="gateway.models.list")
    try:
        principal = await anyio.to_thread.run_sync(
            gateway.authenticate, request.headers.get("authorization"))
    except MlflowShareError as exc:
        return await refuse(gateway, request, ctx, exc)
    return JSONResponse({"models": await anyio.to_thread.run_sync(gateway.executable,
                                                                  principal)})


async def ping(request: Request) -> Response:
    return PlainTextResponse("\n")


async def health(request: Request) -> Response:
    """200 while the database answers, 503 otherwise; and how many versions are loaded."""
    gateway = service(request)
    healthy = await anyio.to_thread.run_sync(gateway.database_ok)
    return JSONResponse({"status": "ok" if healthy else "degraded",
                         "loaded_versions": len(gateway.cache.loaded())},
                        status_code=200 if healthy else 503)


async def version(request: Request) -> Response:
    import mlflow_share

    return JSONResponse({"mlflow_share": mlflow_share.__version__,
                         **service(request).backend.versions()})


async def metrics(request: Request) -> Response:
    """Prometheus' view. Model and team names are not public: an org admin, or the scrape
    token (``MLFLOW_SHARE_GATEWAY_METRICS_TOKEN``)."""
    gateway = service(request)
    header = request.headers.get("authorization") or ""
    scrape = gateway.metrics_token
    if not (scrape and hmac.compare_digest(header, f"Bearer {scrape}")):
        ctx = AuditContext(action="gateway.metrics")
        try:
            principal = await anyio.to_thread.run_sync(gateway.authenticate, header or None)
            ctx.principal = principal.name
            if not principal.is_admin:
                raise PermissionDenied("Only org admins (or the scrape token) read the "
                                       "gateway's metrics.")
        except MlflowShareError as exc:
            return await refuse(gateway, request, ctx, exc)
    body, content_type = gateway.metrics.render()
    return Response(body, media_type=content_type)


async def unrouted(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405, in MLflow's envelope and audited like the server's."""
    problem: MlflowException = MethodNotAllowed("Method not allowed for this endpoint.") if (
        isinstance(exc, HTTPException) and exc.status_code == 405) else EndpointNotFound(
        "No such endpoint.")
    return await refuse(service(request), request, AuditContext(action="unrouted"), problem)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """At shutdown: stop the refresher and write the usage counted so far (this minute's
    too)."""
    yield
    gateway: Gateway = app.state.gateway
    gateway.stop_refresher()
    await anyio.to_thread.run_sync(gateway.usage.close)
