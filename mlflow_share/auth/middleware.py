"""ASGI and WSGI adapters around the whole app, so one decision point sees every request.

Under uvicorn the outermost ASGI layer sees the routes FastAPI serves natively (artifact
streaming, OTLP traces, jobs, gateway) as well as the Flask app mounted inside; under gunicorn
or waitress the WSGI layer wraps Flask, which then serves every route itself. Both audit every
request but the public ones (health, the UI's static files): no response leaves before its
event is committed.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import anyio
import werkzeug.urls  # noqa: F401  (registers the "werkzeug.url_quote" codec error handler)
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request as WerkzeugRequest

from mlflow_share.audit.log import (
    AUDIT_CONTEXT,
    AuditAppender,
    AuditContext,
    new_request_id,
)
from mlflow_share.auth.interceptor import (
    MAX_JSON_BODY,
    Decision,
    IncomingRequest,
    Interceptor,
)
from mlflow_share.errors import (
    API_PREFIXES,
    AuditUnavailable,
    DatabaseUnavailable,
    InternalError,
    TooLarge,
    clean_error_body,
    envelope,
)
from mlflow_share.request_state import CURRENT_PRINCIPAL, SEARCH_SCOPE

_logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]

_UNAVAILABLE_BODY = envelope(AuditUnavailable(
    "The audit log is unavailable; the request was not served."))[1]
_DATABASE_DOWN_BODY = envelope(DatabaseUnavailable(
    "The server cannot reach its database; try again shortly."))[1]


def _parse_query(query_string: str) -> MultiDict[str, str]:
    # Exactly how werkzeug builds `request.args`, so both sides read the same values.
    return MultiDict(parse_qsl(query_string, keep_blank_values=True, errors="werkzeug.url_quote"))


def _too_large() -> Decision:
    status, body = envelope(TooLarge("Request body too large for this endpoint."))
    return Decision(False, status, body, [("Content-Type", "application/json")])


def _unavailable() -> Decision:
    return Decision(False, 503, _UNAVAILABLE_BODY, [("Content-Type", "application/json")])


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _audit_context(request: IncomingRequest) -> AuditContext:
    # A client's X-Request-Id correlates its logs with ours; anything else gets a fresh id.
    supplied = request.headers.get("x-request-id", "")
    request_id = supplied if _REQUEST_ID.fullmatch(supplied) else new_request_id()
    return AuditContext(request_id=request_id, method=request.method[:8],
                        route=request.raw_path, client=request.client)


class AuditGate:
    """Holds each response until its audit event is committed; 503 if it cannot be.

    A request whose change committed with its event (in MLflow's transaction) needs nothing
    more, unless its status turns out different from the one recorded: then a correction is
    appended. Flask routes record their event in ``after_request``, on the serving thread;
    the ASGI and WSGI adapters record what is left (denials, native routes, errors Flask did
    not turn into a response) when the response starts.
    """

    def __init__(self, appender: AuditAppender) -> None:
        self.appender = appender

    @staticmethod
    def pending_event(ctx: AuditContext, status: int) -> dict[str, Any] | None:
        if ctx.public:
            return None
        if ctx.recorded_seq is None:
            if status >= 400 and ctx.decision == "allow":
                # A view's own refusal of the caller (401, 403) is a denial like the
                # interceptor's; other 4xx reject the request, 5xx are failures.
                ctx.decision = ("fail" if status >= 500 else
                                "deny" if status in (401, 403) else "reject")
            return ctx.event(status=status)
        if status == ctx.recorded_status:
            return None
        row = ctx.event(status=status, action="request.outcome")
        row["details"] = '{"amends":%d}' % ctx.recorded_seq
        return row

    def record(self, ctx: AuditContext, status: int) -> None:
        row = self.pending_event(ctx, status)
        if row is not None:
            self._recorded(ctx, self.appender.append(row), status)

    async def record_async(self, ctx: AuditContext, status: int) -> None:
        row = self.pending_event(ctx, status)
        if row is not None:
            self._recorded(ctx, await anyio.to_thread.run_sync(self.appender.append, row), status)

    @staticmethod
    def _recorded(ctx: AuditContext, seq: int, status: int) -> None:
        if ctx.recorded_seq is None:
            ctx.recorded_seq = seq
        ctx.recorded_status = status

    def flask_after_request(self, response: Any) -> Any:
        """Flask ``after_request``: record the event on the thread that served the request."""
        ctx = AUDIT_CONTEXT.get()
        if ctx is None:
            return response
        try:
            self.record(ctx, response.status_code)
        except AuditUnavailable:
            from flask import Response

            return Response(_UNAVAILABLE_BODY, status=503, mimetype="application/json")
        return response


class ShareASGIMiddleware:
    """Decides every HTTP request before the wrapped ASGI app sees it, and audits it."""

    def __init__(self, app: Callable[..., Any], interceptor: Interceptor, gate: AuditGate) -> None:
        self.app = app
        self.interceptor = interceptor
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            # No MLflow route is a WebSocket; refuse rather than pass unauthenticated.
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request = IncomingRequest(
            method=scope["method"],
            path=scope["path"],
            raw_path=(scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
            query=_parse_query(scope.get("query_string", b"").decode("latin-1")),
            headers=headers,
            client=(scope.get("client") or ("", 0))[0],
        )
        ctx = _audit_context(request)
        match = self.interceptor.match(request)
        if isinstance(match, Decision):
            ctx.action, ctx.decision = "unrouted", "deny"
            await _drain(receive)
            await self._deny(send, match, ctx)
            return
        ctx.action = match.key
        if self.interceptor.needs_body(match, request):
            body = await self._read_body(receive)
            if body is None:
                ctx.decision, ctx.reason = "deny", "request body too large"
                await self._deny(send, _too_large(), ctx)
                return
            request.body = body
            receive = _replay(body)
        audit_token = AUDIT_CONTEXT.set(ctx)
        try:
            decision = await anyio.to_thread.run_sync(self.interceptor.decide, request, match)
            if not decision.allowed:
                if request.body is None:
                    await _drain(receive)
                await self._deny(send, decision, ctx)
                return
            principal_token = CURRENT_PRINCIPAL.set(decision.principal)
            scope_token = SEARCH_SCOPE.set(decision.scope)
            incoming = _Body(receive)
            if request.headers.get("content-length", "0") == "0" \
                    and "transfer-encoding" not in request.headers:
                incoming.done = True  # no body to leave unread (most GETs)
            started = _Started(send, incoming)
            try:
                if decision.rule is not None and decision.rule.resolver == "public":
                    ctx.public = True
                    await self.app(scope, incoming, started)  # health checks, the UI's files
                else:
                    send_on = self._gated(started, ctx)
                    if request.path.startswith(API_PREFIXES):
                        send_on = _clean_errors(send_on)
                    await self.app(scope, incoming, send_on)
            except Exception as exc:  # noqa: BLE001 - an answer in the envelope, not a reset
                if started.finished:
                    # Starlette answered (500) and re-raised for the server to log: log it
                    # here, so the server keeps the connection instead of cutting it.
                    _logger.error("mlflow-share: a request failed after its answer", exc_info=exc)
                    return
                if started.done:
                    raise  # the client sees a cut-off body, as it must for a broken stream
                if not incoming.done:
                    await _drain(incoming)
                await self._deny(send, _failure(exc), ctx)
            finally:
                SEARCH_SCOPE.reset(scope_token)
                CURRENT_PRINCIPAL.reset(principal_token)
        finally:
            AUDIT_CONTEXT.reset(audit_token)

    def _gated(self, send: Send, ctx: AuditContext) -> Send:
        """A ``send`` that lets the response out only once its audit event is committed."""
        refused = False

        async def gated_send(message: dict[str, Any]) -> None:
            nonlocal refused
            if message["type"] == "http.response.start":
                try:
                    await self.gate.record_async(ctx, int(message["status"]))
                except AuditUnavailable:
                    refused = True
                    await self._send(send, _unavailable())
                    return
            elif refused:
                return
            await send(message)

        return gated_send

    async def _deny(self, send: Send, decision: Decision, ctx: AuditContext) -> None:
        try:
            await self.gate.record_async(ctx, decision.status)
        except AuditUnavailable:
            decision = _unavailable()
        await self._send(send, decision)

    @staticmethod
    async def _read_body(receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_JSON_BODY:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    @staticmethod
    async def _send(send: Send, decision: Decision) -> None:
        headers = [(k.lower().encode(), v.encode()) for k, v in decision.headers]
        headers.append((b"content-length", str(len(decision.body)).encode()))
        await send({"type": "http.response.start", "status": decision.status, "headers": headers})
        await send({"type": "http.response.body", "body": decision.body})


_DRAIN_LIMIT = 8 * 1024 * 1024
_ERROR_BODY_LIMIT = 1024 * 1024


def _clean_errors(send: Send) -> Send:
    """A ``send`` that holds an error response of an API route until its body is whole,
    and answers it in MLflow's envelope without internals (``errors.clean_error_body``)."""
    held: dict[str, Any] | None = None
    chunks: list[bytes] = []

    async def clean_send(message: dict[str, Any]) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and int(message["status"]) >= 400:
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        size = sum(len(c) for c in chunks)
        if message.get("more_body", False) and size <= _ERROR_BODY_LIMIT:
            return
        start, body = held, b"".join(chunks)
        held = None
        chunks.clear()
        headers = [(k, v) for k, v in start.get("headers", [])]
        content_type = next((v.decode("latin-1") for k, v in headers
                             if k.lower() == b"content-type"), "")
        cleaned = None if message.get("more_body", False) else clean_error_body(
            int(start["status"]), content_type, body)
        if cleaned is not None:
            body = cleaned
            headers = [(k, v) for k, v in headers
                       if k.lower() not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body,
                    "more_body": message.get("more_body", False)})

    return clean_send


async def _drain(receive: Receive) -> None:
    """Read (and drop) the body of a request refused before anything read it, up to 8 MiB.

    A server that answers and closes with the client's bytes still unread makes the kernel
    reset the connection, and the client may then lose the answer (a refused upload would
    look like a network error instead of a 403 or 503)."""
    size = 0
    while size <= _DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class _Body:
    """A ``receive`` that remembers whether the request's body has been read to its end."""

    def __init__(self, receive: Receive) -> None:
        self.receive, self.done = receive, False

    async def __call__(self) -> dict[str, Any]:
        message: dict[str, Any] = await self.receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.done = True
        return message


class _Started:
    """A ``send`` that remembers whether the response has started, and first reads what the
    app left of the request's body (a refused upload), so the connection stays usable."""

    def __init__(self, send: Send, body: _Body) -> None:
        self.send, self.body = send, body
        self.done = self.finished = False  # the answer has started / has been sent whole

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.done = True
            if not self.body.done:
                await _drain(self.body)
        await self.send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished = True


def _failure(exc: Exception) -> Decision:
    """An exception that escaped the app before its response started, as MLflow's envelope:
    503 when the database is unreachable (try again), else 500."""
    if isinstance(exc, SQLAlchemyError):
        _logger.warning("mlflow-share could not reach its database to serve a request: %s", exc)
        return Decision(False, 503, _DATABASE_DOWN_BODY, [("Content-Type", "application/json")])
    _logger.error("mlflow-share: a request failed", exc_info=exc)
    status, body = envelope(InternalError("The request failed on the server."))
    return Decision(False, status, body, [("Content-Type", "application/json")])


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        # After the body, wait like a real connection would until the client leaves.
        await anyio.sleep_forever()
        return {"type": "http.disconnect"}  # pragma: no cover

    return receive


class ShareWSGIMiddleware:
    """The same decision point and audit gate for WSGI servers (gunicorn, waitress)."""

    def __init__(self, wsgi_app: Callable[..., Any], interceptor: Interceptor,
                 gate: AuditGate) -> None:
        self.wsgi_app = wsgi_app
        self.interceptor = interceptor
        self.gate = gate

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        wrapped = WerkzeugRequest(environ, shallow=True)
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or wrapped.path
        request = IncomingRequest(
            method=wrapped.method,
            path=wrapped.path,
            raw_path=raw.split("?", 1)[0],
            query=_parse_query(environ.get("QUERY_STRING", "")),
            headers={k.lower(): v for k, v in wrapped.headers.items()},
            client=environ.get("REMOTE_ADDR", ""),
        )
        ctx = _audit_context(request)
        match = self.interceptor.match(request)
        if isinstance(match, Decision):
            ctx.action, ctx.decision = "unrouted", "deny"
            return self._deny(start_response, match, ctx)
        ctx.action = match.key
        if self.interceptor.needs_body(match, request):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length > MAX_JSON_BODY:
                ctx.decision, ctx.reason = "deny", "request body too large"
                return self._deny(start_response, _too_large(), ctx)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            request.body = body
        audit_token = AUDIT_CONTEXT.set(ctx)
        try:
            decision = self.interceptor.decide(request, match)
            if not decision.allowed:
                return self._deny(start_response, decision, ctx)
            principal_token = CURRENT_PRINCIPAL.set(decision.principal)
            scope_token = SEARCH_SCOPE.set(decision.scope)
            try:
                # Views run (and query the stores) when called; only the body iterates later.
                if decision.rule is not None and decision.rule.resolver == "public":
                    ctx.public = True
                    return self.wsgi_app(environ, start_response)
                if request.path.startswith(API_PREFIXES):
                    return _clean_wsgi_errors(
                        lambda respond: self._gated(environ, respond, ctx), start_response)
                return self._gated(environ, start_response, ctx)
            finally:
                SEARCH_SCOPE.reset(scope_token)
                CURRENT_PRINCIPAL.reset(principal_token)
        finally:
            AUDIT_CONTEXT.reset(audit_token)

    def _gated(self, environ: dict[str, Any], start_response: Callable[..., Any],
               ctx: AuditContext) -> Iterable[bytes]:
        refused = False

        def gated_start_response(status: str, headers: list[tuple[str, str]],
                                 exc_info: Any = None) -> Any:
            nonlocal refused
            try:
                self.gate.record(ctx, int(status.split(" ", 1)[0]))
            except AuditUnavailable:
                refused = True
                unavailable = _unavailable()
                return start_response(
                    "503 SERVICE UNAVAILABLE",
                    [*unavailable.headers, ("Content-Length", str(len(unavailable.body)))],
                    exc_info)
            return start_response(status, headers, exc_info)

        result = self.wsgi_app(environ, gated_start_response)
        if refused:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            return [_UNAVAILABLE_BODY]
        return result

    def _deny(self, start_response: Callable[..., Any], decision: Decision,
              ctx: AuditContext) -> Iterable[bytes]:
        try:
            self.gate.record(ctx, decision.status)
        except AuditUnavailable:
            decision = _unavailable()
        reason = HTTPStatus(decision.status).phrase
        headers = list(decision.headers) + [("Content-Length", str(len(decision.body)))]
        start_response(f"{decision.status} {reason}", headers)
        return [decision.body]


def _clean_wsgi_errors(app: Callable[[Callable[..., Any]], Iterable[bytes]],
                       start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The WSGI side of ``_clean_errors``: an error answer of an API route is held whole
    and answered in MLflow's envelope without internals."""
    started: list[Any] = []

    def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers, exc_info]
        return lambda _data: None  # MLflow's views return their bodies; none writes

    result = app(hold)
    status, headers, exc_info = started
    code = int(status.split(" ", 1)[0])
    if code < 400:
        start_response(status, headers, exc_info)
        return result
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    cleaned = clean_error_body(code, content_type, body)
    if cleaned is not None:
        body = cleaned
        headers = [(k, v) for k, v in headers
                   if k.lower() not in ("content-length", "content-type")]
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    start_response(status, headers, exc_info)
    return [body]
