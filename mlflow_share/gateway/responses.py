"""How the gateway's routes answer and refuse: MLflow's error envelope, one audit event per
refusal (committed before the answer leaves), bounded request bodies."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import anyio
from mlflow.exceptions import MlflowException
from starlette.requests import Request
from starlette.responses import Response

from mlflow_share.audit.log import AuditContext, new_request_id
from mlflow_share.auth.identity import parse_authorization
from mlflow_share.errors import (
    AuditUnavailable,
    InvalidInput,
    TooLarge,
    Unauthenticated,
    Unavailable,
)

if TYPE_CHECKING:
    from mlflow_share.gateway.service import Gateway

DATABASE_AWAY = Unavailable("The gateway cannot read its database; try again shortly.")
# A client's X-Request-Id correlates its logs with ours (as on the server); else a fresh id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def error(exc: MlflowException) -> Response:
    """``exc`` in MLflow's JSON envelope, with its HTTP status."""
    return Response(exc.serialize_as_json(), status_code=exc.get_http_status_code(),
                    media_type="application/json")


def database_away(_request: Request, _exc: Exception) -> Response:
    """Any database error a route did not handle: 503, never a driver's words."""
    return error(DATABASE_AWAY)


def describe(request: Request, ctx: AuditContext) -> None:
    """Name ``request`` in its audit context: id, method, route and client. Only requests
    that get an event pay for it (an allowed call is counted, not logged)."""
    supplied = request.headers.get("x-request-id", "")
    ctx.request_id = supplied if _REQUEST_ID.fullmatch(supplied) else new_request_id()
    scope = request.scope
    ctx.method = str(scope["method"])[:8]
    ctx.route = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    ctx.client = (scope.get("client") or ("", 0))[0]


async def refuse(gateway: Gateway, request: Request, ctx: AuditContext, exc: MlflowException,
                 model: str | None = None) -> Response:
    """The one way a gateway route refuses: ``exc`` in MLflow's envelope, sent only once its
    audit event (decision ``deny``) is committed, or 503 ``TEMPORARILY_UNAVAILABLE`` if it
    cannot be. Failures (5xx) are not denials: a version refused at load time has its own
    event (``gateway.refuse``), and an unreachable database could not take one.

    Args:
        gateway: whose appender and policy record the event.
        request: the Starlette request refused.
        ctx: its audit context (action, and what the checks learnt: principal, resource).
        exc: the refusal.
        model: a model the caller may run, for refusals decided without naming it (429).

    Returns:
        The response to send.
    """
    status = exc.get_http_status_code()
    if status >= 500:
        return error(exc)
    if ctx.request_id is None:
        describe(request, ctx)
    if isinstance(exc, Unauthenticated) and ctx.principal == "anonymous":
        # Who the caller claimed to be (a password's user name; a token names nobody).
        credentials = parse_authorization(request.headers.get("authorization"))
        if credentials is not None and credentials.username:
            ctx.extra["claimed"] = credentials.username[:128]
    try:
        await anyio.to_thread.run_sync(gateway.record_refusal, ctx, status, exc.message, model)
    except AuditUnavailable as unavailable:
        return error(unavailable)
    return error(exc)


def json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object (400 otherwise)."""
    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise InvalidInput("The request body must be a JSON object.")
    return data


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, read no further than ``limit`` bytes (413 beyond it): a body
    announced too large is refused before a byte of it is read."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"The request body is over the gateway's limit of {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"The request body is over the gateway's limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)
