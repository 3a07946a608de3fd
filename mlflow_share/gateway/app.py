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
versions through ``gateway.models`` (every byte checked against the manifest, ONNX only).
When an alias moves to a version that fails verification, the version it served before keeps
serving and the refusal is logged and audited.

Allowed calls are counted (usage per team and minute), not logged one by one; every refused
request (401, 403, 404, 400, 413, 429 and unrouted paths) is one audit event, committed before
its answer leaves, through ``refuse`` (503 if it cannot be committed), as on the server.
Authentication and the ``execute`` decision are the server's own (``auth.authorizer``).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa
from mlflow.exceptions import MlflowException

from mlflow_share import config, db
from mlflow_share.audit.log import AUDIT_CONTEXT, AuditAppender, AuditContext, new_request_id
from mlflow_share.auth.authorizer import MISSING_CREDENTIALS, Authorizer
from mlflow_share.auth.identity import Principal, parse_authorization
from mlflow_share.directory import MODEL
from mlflow_share.errors import (
    AuditUnavailable,
    EndpointNotFound,
    InvalidInput,
    MethodNotAllowed,
    MlflowShareError,
    NotFound,
    PermissionDenied,
    TooLarge,
    TooMany,
    Unauthenticated,
    Unavailable,
)
from mlflow_share.gateway import deployments, inputs
from mlflow_share.gateway.models import (
    LoadedModel,
    ModelCache,
    current_identity,
    resolve,
    resolve_alias,
)
from mlflow_share.gateway.usage import Usage
from mlflow_share.policy.enforcer import PolicyEngine

_logger = logging.getLogger(__name__)

# The longest a change (grant, revocation, token, alias move, deleted version) takes to reach
# the gateway's decisions: they are read again in the background at a third of this.
# A call runs on the event loop when its body is small and the model's runs are short (a
# thread hop costs ~0.1 ms more than a small model's run); anything else in a worker thread.
INLINE_BODY_BYTES = 256 * 1024
INLINE_RUN_SECONDS = 0.0002
MAX_TARGETS = 10_000  # (model, alias or version) pairs kept fresh in the background


@dataclass
class Target:
    """What a (model, alias or version) named when it was last read from the database."""

    version: int
    identity: str
    checked_at: float  # time.monotonic() when the read that found it began
    used_at: float


@dataclass
class Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per calling team: ``rate`` requests per second, bursts of ``rate``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault(key, Bucket(self.rate, now))
            bucket.tokens = min(self.rate, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens < 1:
                return False
            bucket.tokens -= 1
            return True


class Gateway:
    def __init__(self, backend_store_uri: str, artifacts_destination: str, *,
                 policy: PolicyEngine | None = None,
                 appender: AuditAppender | None = None) -> None:
        """Mounted in a server worker, it shares that worker's policy and audit appender."""
        from mlflow_share.artifacts.ledger import Ledger
        from mlflow_share.artifacts.repository import ChecksumArtifactRepository
        from mlflow_share.audit.store import ensure_schema, strip_scheme

        uri = strip_scheme(backend_store_uri)
        ensure_schema(uri)
        # Its own pool, no ping per checkout: a few short queries per call, retried by the
        # caller on a dead connection like any other request error.
        self.engine = db.get_engine(uri, purpose="gateway")
        self.policy = policy or PolicyEngine(self.engine, 300)
        self.authorizer = Authorizer(self.policy)
        repo = ChecksumArtifactRepository(artifacts_destination, ledger=Ledger(self.engine),
                                          root=artifacts_destination)
        settings = config.options()
        self.cache = ModelCache(self.engine, repo, max_bytes=settings.gateway_cache_bytes)
        self.max_body = settings.gateway_max_body_bytes
        self.limiter = RateLimiter(settings.gateway_rate_per_team)
        self.metrics_token: str = settings.gateway_metrics_token
        self.appender = appender or AuditAppender(self.engine)
        self.usage = Usage(self.engine, self.appender)
        # (model, alias) -> (version, identity) it served last
        self.last_good: dict[tuple[str, str], tuple[int, str]] = {}
        from mlflow_share.gateway.metrics import Metrics

        self.metrics = Metrics()
        self.freshness = settings.gateway_freshness_seconds
        self._refresh_failing = False
        # (model, alias, version) -> what it named when last read; kept fresh by the refresher
        self.targets: dict[tuple[str, str | None, int | None], Target] = {}
        self.fresh_at = float("-inf")  # when the last complete background refresh began
        self._refresher: threading.Thread | None = None
        self._refresher_pid = 0
        self._stop = threading.Event()

    # -- freshness -----------------------------------------------------------------------------
    def start_refresher(self) -> None:
        """Once per process (a forked worker starts its own)."""
        if self._refresher_pid == os.getpid() or self.freshness <= 0:
            return
        with self.cache._lock:
            if self._refresher_pid == os.getpid():
                return
            self._refresher_pid = os.getpid()
            self._refresher = threading.Thread(target=self._refresh_loop, daemon=True,
                                               name="mlflow-share-gateway-refresh")
            self._refresher.start()

    def stop_refresher(self) -> None:
        self._stop.set()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.freshness / 3):
            try:
                self.refresh()
            except Exception:  # the database is away: calls take the slow path meanwhile
                if not self._refresh_failing:  # once per failing streak
                    _logger.warning("mlflow-share gateway: background refresh failed; calls "
                                    "are decided on the database meanwhile", exc_info=True)
                self._refresh_failing = True
            else:
                self._refresh_failing = False

    def refresh(self) -> None:
        """Read the policy and every target used in the last minute again."""
        started = time.monotonic()
        self.policy.refresh()
        for key, target in list(self.targets.items()):
            if started - target.used_at > 60:
                self.targets.pop(key, None)
                continue
            with contextlib.suppress(NotFound):  # gone: the next call learns it slowly
                self.target(*key)
        self.fresh_at = started

    def target(self, name: str, alias: str | None, version: int | None,
               remember: bool = True) -> Target:
        """The version and identity ``alias`` (or ``version``) names now, from the database;
        kept for the fast path if ``remember`` (only once the caller may run it)."""
        started = time.monotonic()
        key = (name, alias, None if alias is not None else version)
        try:
            if alias is not None:
                version, identity = resolve(self.engine, name, alias)
            else:
                assert version is not None
                identity = current_identity(self.engine, name, version)
        except NotFound:
            self.targets.pop(key, None)
            raise
        found = Target(version, identity, started, started)
        if remember:
            self.remember(name, alias, found)
        return found

    def remember(self, name: str, alias: str | None, found: Target) -> None:
        """Keep ``found`` for the fast path: never an older read's answer over a newer one,
        and at most ``MAX_TARGETS`` of them."""
        key = (name, alias, None if alias is not None else found.version)
        previous = self.targets.get(key)
        if previous is None and len(self.targets) >= MAX_TARGETS:
            return
        if previous is None or previous.checked_at <= found.checked_at:
            if previous is not None:
                found.used_at = previous.used_at
            self.targets[key] = found

    def admit_cached(self, header: str, name: str, alias: str | None, version: int | None
                     ) -> tuple[Principal, str, LoadedModel] | None:
        """The caller, its team and the loaded version, decided on state read from the
        database less than ``freshness`` seconds ago; None when anything is not in memory
        (or the decision is not a plain yes), for the slow path to decide."""
        now = time.monotonic()
        if now - self.fresh_at > self.freshness:
            return None
        credentials = parse_authorization(header)
        cached = self.policy.cached_model(name)
        if credentials is None or credentials.kind != "bearer" or cached is None:
            return None
        target = self.targets.get((name, alias, None if alias is not None else version))
        if target is None or now - target.checked_at > self.freshness:
            return None
        model = self.cache.peek(target.identity)
        if model is None:
            return None
        principal = self.policy.authenticate(credentials, int(time.time() * 1000))
        if principal is None:
            return None
        model_id, owner = cached  # decided on them alone: nothing here reads the database
        team = self.policy.granting_team(principal, MODEL, model_id, owner, "execute")
        if team is None or self.policy.granting_team(
                principal, MODEL, model_id, owner, "execute", model.version) is None:
            return None  # admins and refusals take the slow path
        target.used_at = now
        return principal, team, model

    # -- the decision ------------------------------------------------------------------------
    def authenticate(self, header: str | None) -> Principal:
        """The caller ``header`` names, on the current policy (401 otherwise)."""
        self.policy.refresh()
        return self.authorizer.authenticate(header)

    def calling_team(self, principal: Principal, name: str, version: int | None = None) -> str:
        """The team through which ``principal`` may execute ``name`` (403 if none, 404 for a
        model nobody but admins could see): any version, or ``version`` (a sharing package
        covers only the versions it pins)."""
        return self.authorizer.executing_team(principal, name, version)

    # -- refusals ------------------------------------------------------------------------------
    def record_refusal(self, ctx: AuditContext, status: int, reason: str,
                       model: str | None = None) -> None:
        """Append and commit the one audit event of a refused request (``AuditUnavailable``
        if that cannot be done). ``model``: a model the caller may run, named in the event
        when no check named a resource (a refusal after a decision made in memory)."""
        if model is not None and ctx.resource_kind is None:
            model_id = self.policy.model_id(model)
            ctx.resource_kind, ctx.resource_id, ctx.resource_name = MODEL, model_id, model
            ctx.owner_team = self.policy.owner_of(MODEL, model_id) if model_id else None
        ctx.decision, ctx.reason = "deny", reason[:1000]
        # Source "gateway", as its loads, usage and deployment changes: counts of the
        # server's own request events stay the server's.
        self.appender.append(ctx.event(status=status, source="gateway"))

    # -- loading -------------------------------------------------------------------------------
    def _audit_load(self, model: LoadedModel, principal: str) -> None:
        context = AuditContext(request_id=new_request_id(), principal="gateway",
                               action="gateway.load", method="LOAD",
                               route=f"/v1/models/{model.name}/versions/{model.version}")
        context.resource_kind, context.resource_id = MODEL, model.model_id
        context.resource_name = model.name
        context.extra = {"version": model.version, "identity": model.identity,
                         "requested_by": principal}
        self.appender.append(context.event(status=200, source="gateway"))

    def _audit_refusal(self, name: str, version: int, reason: str) -> None:
        context = AuditContext(request_id=new_request_id(), principal="gateway",
                               action="gateway.refuse", method="LOAD",
                               route=f"/v1/models/{name}/versions/{version}", decision="fail")
        context.resource_kind, context.resource_name = MODEL, name
        context.extra = {"version": version, "reason": reason[:1000]}
        self.appender.append(context.event(status=500, source="gateway"))

    def model_for(self, name: str, alias: str | None, version: int | None,
                  principal: str, allowed: Callable[[int], object] = lambda _v: None
                  ) -> LoadedModel:
        """The loaded version an alias or number names now; for an alias whose new version
        fails verification, the version it served before, if that is still the same one.
        ``allowed(version)`` raises unless the caller may run that version."""
        found = self.target(name, alias, version, remember=False)
        version, identity = found.version, found.identity
        allowed(version)
        self.remember(name, alias, found)  # for the fast path, once the caller may run it
        try:
            model, loaded = self.cache.get(name, version, identity)
        except MlflowShareError as exc:
            self._audit_refusal(name, version, exc.message)
            previous = self.last_good.get((name, alias)) if alias is not None else None
            if previous is None or previous[0] == version:
                raise
            try:  # still there, still the bytes that were verified (not a recreated model)
                still = current_identity(self.engine, name, previous[0]) == previous[1]
            except MlflowShareError:
                still = False
            if not still:
                raise
            allowed(previous[0])
            _logger.error("mlflow-share gateway: %s; %s@%s keeps serving version %s",
                          exc.message, name, alias, previous[0])
            model, loaded = self.cache.get(name, previous[0], previous[1])
        if loaded:
            self._audit_load(model, principal)
        if alias is not None:
            self.last_good[(name, alias)] = (model.version, model.identity)
        return model


_DATABASE_AWAY = Unavailable("The gateway cannot read its database; try again shortly.")
# A client's X-Request-Id correlates its logs with ours (as on the server); else a fresh id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _error(exc: MlflowException) -> Any:
    from starlette.responses import Response

    return Response(exc.serialize_as_json(), status_code=exc.get_http_status_code(),
                    media_type="application/json")


def _describe(request: Any, ctx: AuditContext) -> None:
    """Name ``request`` in its audit context: id, method, route and client. Only requests
    that get an event pay for it (an allowed call is counted, not logged)."""
    supplied = request.headers.get("x-request-id", "")
    ctx.request_id = supplied if _REQUEST_ID.fullmatch(supplied) else new_request_id()
    scope = request.scope
    ctx.method = str(scope["method"])[:8]
    ctx.route = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    ctx.client = (scope.get("client") or ("", 0))[0]


async def refuse(gateway: Gateway, request: Any, ctx: AuditContext, exc: MlflowException,
                 model: str | None = None) -> Any:
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
        return _error(exc)
    if ctx.request_id is None:
        _describe(request, ctx)
    if isinstance(exc, Unauthenticated) and ctx.principal == "anonymous":
        # Who the caller claimed to be (a password's user name; a token names nobody).
        credentials = parse_authorization(request.headers.get("authorization"))
        if credentials is not None and credentials.username:
            ctx.extra["claimed"] = credentials.username[:128]
    try:
        await anyio.to_thread.run_sync(gateway.record_refusal, ctx, status, exc.message, model)
    except AuditUnavailable as unavailable:
        return _error(unavailable)
    return _error(exc)


def _json_object(body: bytes) -> dict[str, Any]:
    import json

    try:
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise InvalidInput("The request body must be a JSON object.")
    return data


async def _read_body(request: Any, limit: int) -> bytes:
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


# The audit action of each deployment route: (method, names a deployment) -> action.
_DEPLOYMENT_ACTIONS = {
    ("GET", False): "gateway.deployment.list", ("POST", False): "gateway.deployment.create",
    ("GET", True): "gateway.deployment.get", ("PATCH", True): "gateway.deployment.update",
    ("DELETE", True): "gateway.deployment.delete",
}


def create_gateway_app(backend_store_uri: str, artifacts_destination: str, *,
                       policy: PolicyEngine | None = None,
                       appender: AuditAppender | None = None) -> Any:
    import onnxruntime
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    import mlflow_share

    gateway = Gateway(backend_store_uri, artifacts_destination, policy=policy,
                      appender=appender)
    run_limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))

    def admit(principal: Principal, name: str, alias: str | None, version: int | None,
              state: dict[str, Any]) -> LoadedModel:
        """Through which team the caller calls, under its rate limit, and the version to run."""
        take(gateway.calling_team(principal, name), name, state)
        model = gateway.model_for(name, alias, version, principal.name, lambda v: (
            gateway.calling_team(principal, name, v)))
        state["version"] = str(model.version)
        return model

    def take(team: str, name: str, state: dict[str, Any]) -> None:
        state["team"], state["model"] = team, name  # a model this caller may run
        if not gateway.limiter.take(team):
            raise TooMany(f"Team {team!r} is over its rate limit for the gateway.")

    def run(model: LoadedModel, body: bytes, content_type: str) -> Any:
        payload, _params = inputs.parse(body, content_type)
        feeds = inputs.feeds(payload, model.inputs)
        started = time.perf_counter()
        try:
            values = model.session.run(None, feeds)
        except Exception:  # noqa: BLE001 - onnxruntime's errors name its own source files
            raise InvalidInput("The model could not run on this input; check the input's "
                               f"shape and types against {[s.name for s in model.inputs]}."
                               ) from None
        took = time.perf_counter() - started
        model.run_seconds = took if math.isinf(model.run_seconds) else (
            0.9 * model.run_seconds + 0.1 * took)
        return inputs.predictions(model.outputs, values)

    async def invoke(request: Request, ctx: AuditContext, name: str, alias: str | None,
                     version: int | None) -> Response:
        started = time.perf_counter()
        # Labels name a model only once the caller is known to be allowed to run it.
        state: dict[str, Any] = {"team": "-", "model": "-", "version": "-"}
        status = 500
        header = request.headers.get("authorization")
        content_type = request.headers.get("content-type", "")

        def call(principal: Principal, body: bytes) -> Any:  # reads the database: a thread
            return run(admit(principal, name, alias, version, state), body, content_type)

        try:
            if not header:  # nothing is read for a caller who sends no credentials
                raise Unauthenticated(MISSING_CREDENTIALS)
            # Decided in memory when the state it needs was read recently enough (the
            # common case: a known caller on a loaded version); else in a thread.
            admitted = gateway.admit_cached(header, name, alias, version)
            if admitted is None:
                # The checks in the threads name the model in the event of a refusal.
                audit_token = AUDIT_CONTEXT.set(ctx)
                try:
                    # Who calls is known before the body is read (an unknown token reads none).
                    principal = await anyio.to_thread.run_sync(gateway.authenticate, header,
                                                               limiter=run_limiter)
                    ctx.principal = principal.name
                    body = await _read_body(request, gateway.max_body)  # bounded by the limit
                    predictions = await anyio.to_thread.run_sync(call, principal, body,
                                                                 limiter=run_limiter)
                finally:
                    AUDIT_CONTEXT.reset(audit_token)
                gateway.start_refresher()
            else:
                principal, team, model = admitted
                ctx.principal = principal.name
                take(team, name, state)
                state["version"] = str(model.version)
                body = await _read_body(request, gateway.max_body)
                if len(body) <= INLINE_BODY_BYTES and model.run_seconds < INLINE_RUN_SECONDS:
                    predictions = run(model, body, content_type)
                else:
                    predictions = await anyio.to_thread.run_sync(
                        run, model, body, content_type, limiter=run_limiter)
            status = 200
            return JSONResponse({"predictions": predictions})
        except MlflowShareError as exc:
            response = await refuse(gateway, request, ctx, exc,
                                    model=name if state["model"] != "-" else None)
            status = response.status_code
            return response
        except sa.exc.SQLAlchemyError:
            status = 503
            _logger.warning("mlflow-share gateway: database error", exc_info=True)
            return _error(_DATABASE_AWAY)
        finally:
            elapsed = time.perf_counter() - started
            gateway.metrics.observe(state["model"], state["version"], state["team"], status,
                                    elapsed)
            if state["model"] != "-":  # written every few seconds by the usage writer
                gateway.usage.record(state["model"], state["version"], state["team"], status,
                                     elapsed)

    async def malformed(request: Request, ctx: AuditContext, error: MlflowShareError
                        ) -> Response:
        """A call the gateway cannot serve as addressed: refused once its caller is known
        (an unknown caller gets its 401 first, as everywhere)."""
        try:
            principal = await anyio.to_thread.run_sync(
                gateway.authenticate, request.headers.get("authorization"))
            ctx.principal = principal.name
        except MlflowShareError as exc:
            error = exc
        return await refuse(gateway, request, ctx, error)

    async def by_alias(request: Request) -> Response:
        ctx = AuditContext(action="gateway.invoke")
        target = request.path_params["target"]
        if "@" not in target:
            return await malformed(request, ctx, NotFound(
                "Use /v1/models/{name}@{alias}/invocations or "
                "/v1/models/{name}/versions/{version}/invocations."))
        name, alias = target.rsplit("@", 1)
        return await invoke(request, ctx, name, alias, None)

    async def by_version(request: Request) -> Response:
        ctx = AuditContext(action="gateway.invoke")
        version = request.path_params["version"]
        if not re.fullmatch(r"[0-9]{1,9}", version):
            return await malformed(request, ctx, InvalidInput("The version must be a number."))
        return await invoke(request, ctx, request.path_params["name"], None, int(version))

    def audit_deployment(ctx: AuditContext, details: dict[str, Any]) -> None:
        """The event of a deployment's change: the request's own (one per request)."""
        ctx.extra = details
        gateway.appender.append(ctx.event(status=200, source="gateway"))

    def manage(ctx: AuditContext, header: str | None, method: str, name: str | None,
               body: bytes) -> Any:
        principal = gateway.authenticate(header)
        ctx.principal = principal.name
        if method == "GET" and name is None:
            found = []
            for row in deployments.all_rows(gateway.engine):
                try:
                    gateway.calling_team(principal, row.model)
                except MlflowShareError:
                    continue
                found.append(deployments.to_dict(row))
            return {"deployments": found}
        if method == "POST":
            data = _json_object(body)
            name = deployments.check_name(data.get("name"))
        assert name is not None
        if method in ("POST", "PATCH"):
            data = _json_object(body)
            model, alias, version = deployments.parse_model_uri(data.get("model_uri"))
            if method == "PATCH":  # only its creator (or an org admin) moves a deployment
                current = deployments.get(gateway.engine, name)
                if current.created_by != principal.name and not principal.is_admin:
                    raise PermissionDenied(f"Only {current.created_by!r} or an org admin may "
                                           f"change deployment {name!r}.")
            gateway.calling_team(principal, model)
            if alias is not None:
                resolve_alias(gateway.engine, model, alias)
            elif version is not None:
                current_identity(gateway.engine, model, version)  # 404 unless servable
            deployments.put(gateway.engine, name, model, alias, version, principal.name,
                            create=method == "POST")
            row = deployments.get(gateway.engine, name)
            audit_deployment(ctx, deployments.to_dict(row))
            return deployments.to_dict(row)
        row = deployments.get(gateway.engine, name)
        if method == "DELETE":
            if row.created_by != principal.name and not principal.is_admin:
                raise PermissionDenied(f"Only {row.created_by!r} or an org admin may delete "
                                       f"deployment {name!r}.")
            deployments.delete(gateway.engine, name)
            audit_deployment(ctx, deployments.to_dict(row))
            return {}
        gateway.calling_team(principal, row.model)
        return deployments.to_dict(row)

    async def deployments_route(request: Request) -> Response:
        name = request.path_params.get("name")
        method = "GET" if request.method == "HEAD" else request.method  # Starlette adds HEAD
        ctx = AuditContext(action=_DEPLOYMENT_ACTIONS[(method, name is not None)])
        _describe(request, ctx)  # a change is recorded under the request's own id
        audit_token = AUDIT_CONTEXT.set(ctx)
        try:
            body = await _read_body(request, 64 * 1024)
            result = await anyio.to_thread.run_sync(
                manage, ctx, request.headers.get("authorization"), method, name, body)
        except MlflowShareError as exc:
            return await refuse(gateway, request, ctx, exc)
        finally:
            AUDIT_CONTEXT.reset(audit_token)
        return JSONResponse(result)

    def find_deployment(ctx: AuditContext, header: str | None, name: str) -> Any:
        principal = gateway.authenticate(header)  # who may not call anything learns nothing
        ctx.principal = principal.name
        return deployments.get(gateway.engine, name)

    async def deployment_invocations(request: Request) -> Response:
        ctx = AuditContext(action="gateway.deployment.invoke")
        try:
            row = await anyio.to_thread.run_sync(find_deployment, ctx,
                                                 request.headers.get("authorization"),
                                                 request.path_params["name"])
        except MlflowShareError as exc:
            return await refuse(gateway, request, ctx, exc)
        return await invoke(request, ctx, row.model, row.alias, row.version)

    async def list_models(request: Request) -> Response:
        ctx = AuditContext(action="gateway.models.list")
        try:
            principal = await anyio.to_thread.run_sync(
                gateway.authenticate, request.headers.get("authorization"))
        except MlflowShareError as exc:
            return await refuse(gateway, request, ctx, exc)

        def executable() -> list[dict[str, Any]]:
            with gateway.engine.connect() as conn:
                rows = conn.execute(sa.text(
                    "SELECT m.name, a.alias, a.version FROM share_model_manifests m "
                    "LEFT JOIN registered_model_aliases a ON a.name = m.name "
                    "GROUP BY m.name, a.alias, a.version ORDER BY m.name")).all()
            found: dict[str, dict[str, Any]] = {}
            for name, alias, version in rows:
                try:
                    gateway.calling_team(principal, str(name))
                except MlflowShareError:
                    continue
                entry = found.setdefault(str(name), {"name": str(name), "aliases": {}})
                if alias is not None:
                    entry["aliases"][str(alias)] = str(version)
            return list(found.values())

        return JSONResponse({"models": await anyio.to_thread.run_sync(executable)})

    async def ping(request: Request) -> Response:
        return PlainTextResponse("\n")

    async def health(request: Request) -> Response:
        def check() -> bool:
            try:
                with gateway.engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
                return True
            except sa.exc.SQLAlchemyError:
                return False

        healthy = await anyio.to_thread.run_sync(check)
        return JSONResponse({"status": "ok" if healthy else "degraded",
                             "loaded_versions": len(gateway.cache.loaded())},
                            status_code=200 if healthy else 503)

    async def version(request: Request) -> Response:
        return JSONResponse({"mlflow_share": mlflow_share.__version__,
                             "onnxruntime": onnxruntime.__version__})

    async def metrics(request: Request) -> Response:
        # Model and team names are not public: an org admin, or the scrape token.
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
        error: MlflowException = MethodNotAllowed("Method not allowed for this endpoint.") if (
            isinstance(exc, HTTPException) and exc.status_code == 405) else EndpointNotFound(
            "No such endpoint.")
        return await refuse(gateway, request, AuditContext(action="unrouted"), error)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        yield
        gateway.stop_refresher()
        await anyio.to_thread.run_sync(gateway.usage.close)  # the current minute too

    app = Starlette(routes=[
        Route("/v1/models/{name}/versions/{version}/invocations", by_version, methods=["POST"]),
        Route("/v1/models/{target}/invocations", by_alias, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/deployments", deployments_route, methods=["GET", "POST"]),
        Route("/v1/deployments/{name}", deployments_route, methods=["GET", "PATCH", "DELETE"]),
        Route("/v1/deployments/{name}/invocations", deployment_invocations, methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ], lifespan=lifespan, exception_handlers={
        HTTPException: unrouted,
        sa.exc.SQLAlchemyError: lambda _request, _exc: _error(_DATABASE_AWAY)})
    app.state.gateway = gateway
    return app
