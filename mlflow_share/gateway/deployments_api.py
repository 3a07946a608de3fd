"""``/v1/deployments``: the MLflow deployments API of the gateway (the client package's
``mlflow deployments ... -t mlflow-share`` plugin speaks it).

List, create, get, update and delete named deployments (``deployments``), and call one:
calling a deployment is calling its model, decided at call time. Each change is recorded as
the request's own audit event; each refusal as one, through ``responses.refuse``.
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mlflow_share.audit.log import AUDIT_CONTEXT, AuditContext
from mlflow_share.auth.identity import Principal
from mlflow_share.errors import MlflowShareError, PermissionDenied
from mlflow_share.gateway import deployments
from mlflow_share.gateway.models import current_identity, resolve_alias
from mlflow_share.gateway.responses import describe, json_object, read_body, refuse
from mlflow_share.gateway.routes import invoke, service
from mlflow_share.gateway.service import Gateway

# The audit action of each deployment route: (method, names a deployment) -> action.
ACTIONS = {
    ("GET", False): "gateway.deployment.list", ("POST", False): "gateway.deployment.create",
    ("GET", True): "gateway.deployment.get", ("PATCH", True): "gateway.deployment.update",
    ("DELETE", True): "gateway.deployment.delete",
}
MAX_BODY = 64 * 1024  # a deployment's JSON is a name and a model URI


async def deployments_route(request: Request) -> Response:
    """``GET|POST /v1/deployments`` and ``GET|PATCH|DELETE /v1/deployments/{name}``."""
    gateway = service(request)
    name = request.path_params.get("name")
    method = "GET" if request.method == "HEAD" else request.method  # Starlette adds HEAD
    ctx = AuditContext(action=ACTIONS[(method, name is not None)])
    describe(request, ctx)  # a change is recorded under the request's own id
    audit_token = AUDIT_CONTEXT.set(ctx)
    try:
        body = await read_body(request, MAX_BODY)
        result = await anyio.to_thread.run_sync(
            manage, gateway, ctx, request.headers.get("authorization"), method, name, body)
    except MlflowShareError as exc:
        return await refuse(gateway, request, ctx, exc)
    finally:
        AUDIT_CONTEXT.reset(audit_token)
    return JSONResponse(result)


async def deployment_invocations(request: Request) -> Response:
    """``POST /v1/deployments/{name}/invocations``: its model's alias or version, called."""
    gateway = service(request)
    ctx = AuditContext(action="gateway.deployment.invoke")
    try:
        row = await anyio.to_thread.run_sync(find, gateway, ctx,
                                             request.headers.get("authorization"),
                                             request.path_params["name"])
    except MlflowShareError as exc:
        return await refuse(gateway, request, ctx, exc)
    return await invoke(request, ctx, row.model, row.alias, row.version)


def find(gateway: Gateway, ctx: AuditContext, header: str | None, name: str) -> Any:
    """The deployment ``name``, for an authenticated caller (who may not call anything
    learns nothing)."""
    principal = gateway.authenticate(header)
    ctx.principal = principal.name
    return deployments.get(gateway.engine, name)


def manage(gateway: Gateway, ctx: AuditContext, header: str | None, method: str,
           name: str | None, body: bytes) -> Any:
    """One deployments request, decided and done (it reads the database: a thread)."""
    principal = gateway.authenticate(header)
    ctx.principal = principal.name
    if method == "GET" and name is None:
        return {"deployments": visible(gateway, principal)}
    if method == "POST":
        name = deployments.check_name(json_object(body).get("name"))
    assert name is not None
    if method in ("POST", "PATCH"):
        return bind(gateway, ctx, principal, name, json_object(body), create=method == "POST")
    row = deployments.get(gateway.engine, name)
    if method == "DELETE":
        if row.created_by != principal.name and not principal.is_admin:
            raise PermissionDenied(f"Only {row.created_by!r} or an org admin may delete "
                                   f"deployment {name!r}.")
        deployments.delete(gateway.engine, name)
        _audit_change(gateway, ctx, deployments.to_dict(row))
        return {}
    gateway.calling_team(principal, row.model)
    return deployments.to_dict(row)


def visible(gateway: Gateway, principal: Principal) -> list[dict[str, Any]]:
    """The deployments of models ``principal`` may execute."""
    found = []
    for row in deployments.all_rows(gateway.engine):
        try:
            gateway.calling_team(principal, row.model)
        except MlflowShareError:
            continue
        found.append(deployments.to_dict(row))
    return found


def bind(gateway: Gateway, ctx: AuditContext, principal: Principal, name: str,
         data: dict[str, Any], *, create: bool) -> dict[str, Any]:
    """Create deployment ``name`` or move it (only its creator or an org admin moves one) to
    ``data``'s model URI: a model the caller may execute, an alias or a servable version."""
    model, alias, version = deployments.parse_model_uri(data.get("model_uri"))
    if not create:
        current = deployments.get(gateway.engine, name)
        if current.created_by != principal.name and not principal.is_admin:
            raise PermissionDenied(f"Only {current.created_by!r} or an org admin may "
                                   f"change deployment {name!r}.")
    gateway.calling_team(principal, model)
    if alias is not None:
        resolve_alias(gateway.engine, model, alias)
    elif version is not None:
        current_identity(gateway.engine, model, version)  # 404 unless servable
    deployments.put(gateway.engine, name, model, alias, version, principal.name, create=create)
    row = deployments.to_dict(deployments.get(gateway.engine, name))
    _audit_change(gateway, ctx, row)
    return row


def _audit_change(gateway: Gateway, ctx: AuditContext, details: dict[str, Any]) -> None:
    """The event of a deployment's change: the request's own (one per request)."""
    ctx.extra = details
    gateway.appender.append(ctx.event(status=200, source="gateway"))
