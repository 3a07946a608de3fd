"""ASGI and WSGI adapters around the whole app, so one decision point sees every request.

Under uvicorn the outermost ASGI layer sees the routes FastAPI serves natively (artifact
streaming, OTLP traces, jobs, gateway) as well as the Flask app mounted inside; under gunicorn
or waitress the WSGI layer wraps Flask, which then serves every route itself.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import anyio
import werkzeug.urls  # noqa: F401  (registers the "werkzeug.url_quote" codec error handler)
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request as WerkzeugRequest

from mlflow_share.auth.interceptor import (
    CURRENT_PRINCIPAL,
    MAX_JSON_BODY,
    SEARCH_SCOPE,
    Decision,
    IncomingRequest,
    Interceptor,
)

_logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


def _parse_query(query_string: str) -> MultiDict[str, str]:
    # Exactly how werkzeug builds `request.args`, so both sides read the same values.
    return MultiDict(parse_qsl(query_string, keep_blank_values=True, errors="werkzeug.url_quote"))


def _too_large() -> Decision:
    body = (b'{"error_code": "INVALID_PARAMETER_VALUE", '
            b'"message": "Request body too large for this endpoint."}')
    return Decision(False, 413, body, [("Content-Type", "application/json")])


def _run_after(decision: Decision, status: int, body: bytes) -> None:
    assert decision.after is not None
    try:
        decision.after(status, body)
    except Exception:  # the MLflow change is done; never turn it into a 500 after the fact
        _logger.exception("mlflow-share bookkeeping after a successful request failed")


class ShareASGIMiddleware:
    """Decides every HTTP request before the wrapped ASGI app sees it."""

    def __init__(self, app: Callable[..., Any], interceptor: Interceptor) -> None:
        self.app = app
        self.interceptor = interceptor

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
        match = self.interceptor.match(request)
        if isinstance(match, Decision):
            await self._deny(send, match)
            return
        if self.interceptor.needs_body(match, request):
            body = await self._read_body(receive)
            if body is None:
                await self._deny(send, _too_large())
                return
            request.body = body
            receive = _replay(body)
        decision = await anyio.to_thread.run_sync(self.interceptor.decide, request, match)
        if not decision.allowed:
            await self._deny(send, decision)
            return
        principal_token = CURRENT_PRINCIPAL.set(decision.principal)
        scope_token = SEARCH_SCOPE.set(decision.scope)
        try:
            if decision.after is None:
                await self.app(scope, receive, send)
            else:
                await self._call_then_record(scope, receive, send, decision)
        finally:
            SEARCH_SCOPE.reset(scope_token)
            CURRENT_PRINCIPAL.reset(principal_token)

    async def _call_then_record(self, scope: Scope, receive: Receive, send: Send,
                                decision: Decision) -> None:
        """Hold a (small) response until its bookkeeping is written, then send it."""
        messages: list[dict[str, Any]] = []

        async def capture(message: dict[str, Any]) -> None:
            messages.append(message)

        await self.app(scope, receive, capture)
        status = next((m["status"] for m in messages if m["type"] == "http.response.start"), 500)
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        await anyio.to_thread.run_sync(_run_after, decision, status, body)
        for message in messages:
            await send(message)

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
    async def _deny(send: Send, decision: Decision) -> None:
        headers = [(k.lower().encode(), v.encode()) for k, v in decision.headers]
        headers.append((b"content-length", str(len(decision.body)).encode()))
        await send({"type": "http.response.start", "status": decision.status, "headers": headers})
        await send({"type": "http.response.body", "body": decision.body})


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
    """The same decision point for WSGI servers (gunicorn, waitress)."""

    def __init__(self, wsgi_app: Callable[..., Any], interceptor: Interceptor) -> None:
        self.wsgi_app = wsgi_app
        self.interceptor = interceptor

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
        match = self.interceptor.match(request)
        if isinstance(match, Decision):
            return self._deny(start_response, match)
        if self.interceptor.needs_body(match, request):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length > MAX_JSON_BODY:
                return self._deny(start_response, _too_large())
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            request.body = body
        decision = self.interceptor.decide(request, match)
        if not decision.allowed:
            return self._deny(start_response, decision)
        principal_token = CURRENT_PRINCIPAL.set(decision.principal)
        scope_token = SEARCH_SCOPE.set(decision.scope)
        try:
            if decision.after is None:
                # Views run (and query the stores) when called; only the body iterates later.
                return self.wsgi_app(environ, start_response)
            return self._call_then_record(environ, start_response, decision)
        finally:
            SEARCH_SCOPE.reset(scope_token)
            CURRENT_PRINCIPAL.reset(principal_token)

    def _call_then_record(self, environ: dict[str, Any], start_response: Callable[..., Any],
                          decision: Decision) -> Iterable[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        body = b"".join(self.wsgi_app(environ, capture))
        status_line = captured.get("status", "500 INTERNAL SERVER ERROR")
        _run_after(decision, int(status_line.split(" ", 1)[0]), body)
        start_response(status_line, captured.get("headers", []))
        return [body]

    @staticmethod
    def _deny(start_response: Callable[..., Any], decision: Decision) -> Iterable[bytes]:
        reason = HTTPStatus(decision.status).phrase
        headers = list(decision.headers) + [("Content-Length", str(len(decision.body)))]
        start_response(f"{decision.status} {reason}", headers)
        return [decision.body]
