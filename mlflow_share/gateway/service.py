"""The gateway's service: which version a call runs, whether its caller may, and the record.

Nothing here speaks HTTP (the routes, in ``routes`` and ``deployments_api``, do) or knows a
runtime (the ``InferenceBackend`` does): the service resolves aliases and versions (kept fresh
in memory for the fast path), decides ``execute`` through the server's own authorizer,
applies each team's rate limit, loads versions through its cache, runs them on checked
inputs, and appends the audit events of loads and refusals.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import sqlalchemy as sa

from mlflow_share import config, db
from mlflow_share.audit.log import AuditAppender, AuditContext, new_request_id
from mlflow_share.auth.authorizer import Authorizer
from mlflow_share.auth.identity import Principal, parse_authorization
from mlflow_share.directory import MODEL
from mlflow_share.errors import InvalidInput, MlflowShareError, NotFound, TooMany
from mlflow_share.gateway import inputs
from mlflow_share.gateway.backend import InferenceBackend, LoadedModel
from mlflow_share.gateway.metrics import Metrics
from mlflow_share.gateway.models import ModelCache, current_identity, resolve, servable_aliases
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
class Labels:
    """A call's labels in the metrics and the usage table. A model (and its version) is named
    only once the caller is known to be allowed to run it: a refused caller's guesses never
    reach the owners' dashboards."""

    team: str = "-"
    model: str = "-"
    version: str = "-"


@dataclass
class Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per calling team: ``rate`` requests per second, bursts of ``rate``
    (``rate`` 0: no limit). ``clock`` is the monotonic clock buckets refill by."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        with self._lock:
            bucket = self._buckets.setdefault(key, Bucket(self.rate, now))
            bucket.tokens = min(self.rate, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens < 1:
                return False
            bucket.tokens -= 1
            return True


class Gateway:
    """The service behind the gateway's routes, on the database ``engine`` and ``backend``.

    Mounted in a server worker, it shares that worker's ``policy`` and audit ``appender``
    (one decision, one chain); standalone it opens its own (``Gateway.open``). ``settings``
    are the process's ``MLFLOW_SHARE_*`` options unless given.
    """

    def __init__(self, engine: sa.Engine, backend: InferenceBackend, *,
                 policy: PolicyEngine | None = None, appender: AuditAppender | None = None,
                 settings: config.Options | None = None) -> None:
        if settings is None:
            settings = config.options()
        self.engine = engine
        self.backend = backend
        self.policy = policy or PolicyEngine(engine, 300)
        self.authorizer = Authorizer(self.policy)
        self.cache = ModelCache(backend, max_bytes=settings.gateway_cache_bytes)
        self.max_body: int = settings.gateway_max_body_bytes
        self.limiter = RateLimiter(settings.gateway_rate_per_team)
        # Runs in worker threads at once: one per core (a run uses one intra-op thread).
        self.run_limiter = anyio.CapacityLimiter(max(1, os.cpu_count() or 1))
        self.metrics_token: str = settings.gateway_metrics_token
        self.appender = appender or AuditAppender(engine)
        self.usage = Usage(engine, self.appender)
        # (model, alias) -> (version, identity) it served last
        self.last_good: dict[tuple[str, str], tuple[int, str]] = {}
        self.metrics = Metrics()
        self.freshness: float = settings.gateway_freshness_seconds
        self._refresh_failing = False
        # (model, alias, version) -> what it named when last read; kept fresh by the refresher
        self.targets: dict[tuple[str, str | None, int | None], Target] = {}
        self.fresh_at = float("-inf")  # when the last complete background refresh began
        self._refresher: threading.Thread | None = None
        self._refresher_pid = 0
        self._refresher_lock = threading.Lock()
        self._stop = threading.Event()

    @classmethod
    def open(cls, backend_store_uri: str, artifacts_destination: str, *,
             policy: PolicyEngine | None = None,
             appender: AuditAppender | None = None) -> Gateway:
        """The gateway of a server's database and artifact root, serving through the ONNX
        backend: it reads both itself (its service identity), with a pool of its own."""
        from mlflow_share.artifacts.ledger import Ledger
        from mlflow_share.artifacts.repository import ChecksumArtifactRepository
        from mlflow_share.gateway.onnx_backend import OnnxBackend

        uri = db.strip_scheme(backend_store_uri)
        db.ensure_schema(uri)
        # Its own pool, no ping per checkout: a few short queries per call, retried by the
        # caller on a dead connection like any other request error.
        engine = db.get_engine(uri, purpose="gateway")
        repo = ChecksumArtifactRepository(artifacts_destination, ledger=Ledger(engine),
                                          root=artifacts_destination)
        return cls(engine, OnnxBackend(engine, repo), policy=policy, appender=appender)

    # -- freshness -----------------------------------------------------------------------------
    def start_refresher(self) -> None:
        """Once per process (a forked worker starts its own)."""
        if self._refresher_pid == os.getpid() or self.freshness <= 0:
            return
        with self._refresher_lock:
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

    def admit(self, principal: Principal, name: str, alias: str | None, version: int | None,
              labels: Labels) -> LoadedModel:
        """The slow path's decision, on the database: the team through which the caller
        calls (under its rate limit) and the loaded version to run, named in ``labels``."""
        self.take(self.calling_team(principal, name), name, labels)
        model = self.model_for(name, alias, version, principal.name, lambda v: (
            self.calling_team(principal, name, v)))
        labels.version = str(model.version)
        return model

    def take(self, team: str, name: str, labels: Labels) -> None:
        """One call of ``team``'s on ``name`` against its rate limit (429 over it); the call
        is counted against the model either way."""
        labels.team, labels.model = team, name  # a model this caller may run
        if not self.limiter.take(team):
            raise TooMany(f"Team {team!r} is over its rate limit for the gateway.")

    def executable(self, principal: Principal) -> list[dict[str, Any]]:
        """The servable models ``principal`` may execute, each with its aliases."""
        found: dict[str, dict[str, Any]] = {}
        for name, alias, version in servable_aliases(self.engine):
            try:
                self.calling_team(principal, str(name))
            except MlflowShareError:
                continue
            entry = found.setdefault(str(name), {"name": str(name), "aliases": {}})
            if alias is not None:
                entry["aliases"][str(alias)] = str(version)
        return list(found.values())

    # -- running -------------------------------------------------------------------------------
    def predict(self, model: LoadedModel, body: bytes, content_type: str) -> Any:
        """``{"predictions": ...}``'s value for a request body (400 for one the model cannot
        take); keeps the model's average run time, which decides where its calls run."""
        payload, _params = inputs.parse(body, content_type)
        feeds = inputs.feeds(payload, model.inputs)
        started = time.perf_counter()
        try:
            values = self.backend.run(model, feeds)
        except Exception:  # noqa: BLE001 - onnxruntime's errors name its own source files
            raise InvalidInput("The model could not run on this input; check the input's "
                               f"shape and types against {[s.name for s in model.inputs]}."
                               ) from None
        took = time.perf_counter() - started
        model.run_seconds = took if math.isinf(model.run_seconds) else (
            0.9 * model.run_seconds + 0.1 * took)
        return inputs.predictions(model.outputs, values)

    def runs_inline(self, model: LoadedModel, body: bytes) -> bool:
        """Whether a call is cheaper run on the event loop than handed to a thread."""
        return len(body) <= INLINE_BODY_BYTES and model.run_seconds < INLINE_RUN_SECONDS

    def observe(self, labels: Labels, status: int, seconds: float) -> None:
        """Count a finished call in the metrics, and in the usage table once it reached a
        version (written every few seconds by the usage writer)."""
        self.metrics.observe(labels.model, labels.version, labels.team, status, seconds)
        if labels.version != "-":  # a version's usage: calls that reached it, nothing else
            self.usage.record(labels.model, labels.version, labels.team, status, seconds)

    def database_ok(self) -> bool:
        """Whether the database answers (``/health``)."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except sa.exc.SQLAlchemyError:
            return False

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
