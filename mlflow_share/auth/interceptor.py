"""The single policy decision point: identify the caller, find the resource, ask the policy.

``Interceptor.decide`` is independent of the server: the ASGI and WSGI adapters in
``auth/middleware.py`` turn a request into an ``IncomingRequest`` and act on the ``Decision``.
Parameters are read exactly the way MLflow's handlers read them (query string for GET with a
query, else the JSON body; ``run_id`` before ``run_uuid``; path parameters first), so what is
authorised is what MLflow then acts on.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import MethodNotAllowed as NoSuchMethod

from mlflow_share import directory as directory_module
from mlflow_share.audit.log import AUDIT_CONTEXT, note_principal, note_resource
from mlflow_share.auth import fields as request_fields
from mlflow_share.auth.authorizer import (
    BAD_CREDENTIALS,
    MISSING_CREDENTIALS,
    Authorizer,
    denial,
)
from mlflow_share.auth.contract import Contract, RequestView
from mlflow_share.auth.fields import Check
from mlflow_share.auth.identity import Principal, parse_authorization
from mlflow_share.auth.resolvers import (
    MlflowLookups,
    check_path_length,
    validate_artifact_path,
)
from mlflow_share.directory import Directory
from mlflow_share.errors import (
    Conflict,
    DatabaseUnavailable,
    EndpointNotFound,
    InternalError,
    InvalidInput,
    MethodNotAllowed,
    MlflowShareError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from mlflow_share.mlflow_compat import private
from mlflow_share.policy.enforcer import PolicyEngine, validate_identifier
from mlflow_share.policy.routes import Match, Resolver, RouteTable, Rule
from mlflow_share.request_state import SearchScope
from mlflow_share.web import error_page
from mlflow_share.web.sessions import (
    CSRF_HEADER,
    SAFE_METHODS,
    SESSION_COOKIE,
    SessionStore,
    csrf_matches,
    from_this_origin,
    read_cookie,
)

_logger = logging.getLogger(__name__)

TEAM_HEADER = "x-mlflow-share-team"
TEAM_TAG = "mlflow-share.team"
MAX_JSON_BODY = 64 * 1024 * 1024
_METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
MODELS_DIR = "models"  # registered versions' copies (mlflow_share.artifacts)
# What MLflow's own clients send as the source of a prompt version (mlflow.prompt.constants).
_PROMPT_SOURCES = frozenset({"dummy-source", "prompt-template"})
_BODYLESS_RESOLVERS = frozenset({
    Resolver.PUBLIC, Resolver.AUTHENTICATED, Resolver.ADMIN, Resolver.SEARCH, Resolver.GRAPHQL,
    Resolver.ARTIFACT, Resolver.PAGE, Resolver.LOGIN,
})
# Tag keys that are the server's: mlflow-share's own, and MLflow's storage locations, which
# MLflow reads back to find a trace's data (a client-named location could point anywhere).
_RESERVED_TAG_PREFIXES = ("mlflow_share.", "mlflow-share.")
_TRACE_LOCATION_TAGS = frozenset({
    "mlflow.artifactLocation", "mlflow.trace.spansLocation", "mlflow.trace.archiveLocation",
})
_PATH_PARAMETERS = ("path", "artifact_path", "artifact_file_path", "artifact_directory_path")
_PARENT_RUN_TAG = "mlflow.parentRunId"
_TRACE_SOURCE_RUN = "mlflow.sourceRun"
_TRACE_MODEL_ID = "mlflow.modelId"
LOGIN_PATH = "/share/login"


class MissingParameter(InvalidInput):
    """A request without the field that names its resource."""


class SessionExpired(Unauthenticated):
    """A browser's session cookie that no longer opens a session (no Basic prompt)."""


@dataclass
class IncomingRequest:
    method: str
    path: str  # percent-decoded, as the app routes it
    raw_path: str  # as sent, for spelling checks
    query: MultiDict[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes | None = None
    client: str = ""


@dataclass
class Decision:
    allowed: bool
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    principal: Principal | None = None
    rule: Rule | None = None
    scope: SearchScope | None = None


def _error(exc: MlflowException, *, authenticate: bool = False) -> Decision:
    headers = [("Content-Type", "application/json")]
    if authenticate:
        headers.append(("WWW-Authenticate", 'Basic realm="mlflow-share"'))
    return Decision(False, exc.get_http_status_code(), exc.serialize_as_json().encode(), headers)




def _as_page(request: IncomingRequest, decision: Decision) -> Decision:
    """A refusal a browser navigated into under ``/share/`` is shown as a page."""
    if decision.allowed or decision.status < 400 \
            or not error_page.wants_page(request.method, request.path, request.headers):
        return decision
    body = error_page.render(decision.status, error_page.message_of(decision.body))
    headers = [(k, v) for k, v in decision.headers if k.lower() != "content-type"]
    headers += [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store"),
                ("Content-Security-Policy", error_page.CSP)]
    return replace(decision, body=body, headers=headers)


def _to_login(request: IncomingRequest) -> Decision:
    """A browser asking for a page without a session goes to the login page, and back."""
    target = request.raw_path + (f"?{urlencode(list(request.query.items(multi=True)))}"
                                 if request.query else "")
    location = f"{LOGIN_PATH}?{urlencode({'next': target})}"
    return Decision(False, 302, b"", [("Location", location), ("Cache-Control", "no-store")])


def _same_origin_only(request: IncomingRequest) -> None:
    """The session cookie opens nothing to another origin's scripts (``from_this_origin``)."""
    if not from_this_origin(request.method, request.headers):
        raise PermissionDenied("A browser session is only for this server's own pages.")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Interceptor:
    """Decides every request of the app: allow (possibly with a search scope) or deny."""

    def __init__(
        self, routes: RouteTable, policy: PolicyEngine, directory: Directory,
        lookups: MlflowLookups, sessions: SessionStore | None, contract: Contract,
    ) -> None:
        self.routes = routes
        self.policy = policy
        self.directory = directory
        self.lookups = lookups
        self.sessions = sessions
        self.contract = contract
        self.authorizer = Authorizer(policy, lookups)

    # -- entry point -----------------------------------------------------------------
    def match(self, request: IncomingRequest) -> Match | Decision:
        """Route the request; a ``Decision`` here is a refusal before any identity work."""
        found = self._match(request)
        return _as_page(request, found) if isinstance(found, Decision) else found

    def _match(self, request: IncomingRequest) -> Match | Decision:
        if "//" in request.raw_path or "//" in request.path:
            if "/mlflow-artifacts/" in request.path:  # an absolute path after the route prefix
                return _error(InvalidInput("Invalid artifact path."))
            return _error(EndpointNotFound("No such endpoint."))
        if request.method != request.method.upper():
            # h11 passes `get` through, werkzeug routes it as GET: refuse the ambiguity.
            return _error(MethodNotAllowed("HTTP methods must be upper case."))
        if any(h in request.headers for h in _METHOD_OVERRIDE_HEADERS):
            return _error(InvalidInput("HTTP method-override headers are not accepted."))
        method = "GET" if request.method == "OPTIONS" else request.method
        try:
            match = self.routes.match(request.path, method)
        except NoSuchMethod:
            return _error(MethodNotAllowed("Method not allowed for this endpoint."))
        if match is None:
            return _error(EndpointNotFound("No such endpoint."))
        return match

    def needs_body(self, match: Match, request: IncomingRequest) -> bool:
        """Whether deciding needs the JSON body (so the adapter must buffer it)."""
        rule = match.rule
        if rule is None or rule.source == "query" or rule.resolver in _BODYLESS_RESOLVERS:
            return False
        # MLflow reads the query string only for a GET that has one; every other method
        # (HEAD included) reads the JSON body, so that is what must be decided.
        return not (request.method == "GET" and request.query)

    def decide(self, request: IncomingRequest, match: Match) -> Decision:
        return _as_page(request, self._decided(request, match))

    def _decided(self, request: IncomingRequest, match: Match) -> Decision:
        try:
            return self._decide(request, match)
        except MlflowShareError as exc:
            note_denial(exc.message)
            if isinstance(exc, Unauthenticated) and match.rule is not None \
                    and match.rule.resolver is Resolver.PAGE and request.method in ("GET", "HEAD"):
                return _to_login(request)
            return _error(exc, authenticate=isinstance(exc, Unauthenticated)
                          and not isinstance(exc, SessionExpired))
        except MlflowException as exc:
            note_denial(exc.message)
            return _error(exc)
        except SQLAlchemyError:  # the database is down: nothing can be decided, so nothing is
            _logger.exception("mlflow-share could not reach its database to decide a request")
            note_denial("The database is unreachable.")
            return _error(DatabaseUnavailable(
                "The server cannot reach its database; try again shortly."))
        except Exception:  # noqa: BLE001 - fail closed: an unexpected error denies, in the envelope
            _logger.exception("mlflow-share could not decide a request; denied")
            note_denial("The request could not be authorised.")
            return _error(InternalError("The request could not be authorised."))

    def _decide(self, request: IncomingRequest, match: Match) -> Decision:
        rule = match.rule
        if rule is None:
            raise PermissionDenied("This endpoint has no mlflow-share policy and is denied.")
        if rule.resolver in (Resolver.PUBLIC, Resolver.LOGIN):  # login pages check their input
            return Decision(True, rule=rule)
        self.policy.refresh()
        audit = AUDIT_CONTEXT.get()
        credentials = parse_authorization(request.headers.get("authorization"))
        principal: Principal | None
        if credentials is None:
            principal = self._session_principal(request)
        else:
            principal = self.policy.authenticate(credentials, int(time.time() * 1000))
            if principal is None:
                if audit is not None and credentials.username:
                    audit.extra["claimed"] = credentials.username[:128]
                raise Unauthenticated(BAD_CREDENTIALS)
        note_principal(principal.name)
        decision = Decision(True, principal=principal, rule=rule)
        if request.method == "OPTIONS" or rule.resolver in (Resolver.AUTHENTICATED, Resolver.PAGE):
            return decision
        if rule.resolver is Resolver.ADMIN:
            if not principal.is_admin:
                raise PermissionDenied("This endpoint is restricted to org administrators.")
            return decision
        # MLflow's own contract first: a request MLflow would refuse as malformed gets
        # MLflow's answer, and what is decided below is the value MLflow's handler reads.
        parsed = self._parse(request, match) if rule.resolver not in _BODYLESS_RESOLVERS else None
        params = _Params(request, match, rule, parsed)
        for name in _PATH_PARAMETERS:
            if path := params.optional(name):
                check_path_length(path)
        try:
            self.RESOLVERS[rule.resolver](self, principal, rule, params, decision)
        except MissingParameter:
            if rule.mlflow_refuses_missing:
                return decision  # nothing named, nothing to decide: MLflow refuses it
            raise
        data = parsed if parsed is not None else params.data()
        self._check_fields(principal, match.key, data, params)
        return decision

    def _parse(self, request: IncomingRequest, match: Match) -> dict[str, Any] | None:
        body = request.body or b""
        if body.count(b"[") + body.count(b"{") > 256:
            try:  # MLflow's handlers would fail on it with an HTML 500
                json.loads(body)
            except RecursionError:
                raise InvalidInput("The request body nests too deeply to be read.") from None
            except (ValueError, UnicodeDecodeError):
                pass  # MLflow answers a body that is not JSON itself
        view = RequestView(request.method, request.query, request.headers, request.body)
        return self.contract.parse(match.key, view)

    def _check_fields(self, principal: Principal, key: str, parsed: dict[str, Any],
                      params: _Params) -> None:
        """Every entity or location a request names beyond the route's own resource."""
        for path, rule in request_fields.checked_fields(key):
            assert rule.check is not None
            for value in request_fields.values_at(parsed, path):
                if value is None or value == "" or value == [] or value == {}:
                    continue
                self.FIELD_CHECKS[rule.check](self, principal, value, rule.action, params)

    def _session_principal(self, request: IncomingRequest) -> Principal:
        """The caller of a browser request, by its session cookie; a state-changing request
        must also carry the session's CSRF token in ``X-CSRF-Token``."""
        session_id = read_cookie(request.headers.get("cookie"), SESSION_COOKIE)
        if session_id is None or self.sessions is None:
            raise Unauthenticated(MISSING_CREDENTIALS)
        _same_origin_only(request)
        session = self.sessions.get(session_id)
        if session is None or not self.policy.has_user(session.user):
            raise SessionExpired("Your session has ended: log in again.")
        if request.method not in SAFE_METHODS and not csrf_matches(
                session, request.headers.get(CSRF_HEADER)):
            note_principal(session.user)
            raise PermissionDenied("This request needs the session's CSRF token in the "
                                   "X-CSRF-Token header (cross-site requests are refused).")
        return self.policy.principal(session.user, via=f"session:{session.via}")

    # -- helpers ---------------------------------------------------------------------
    def _check_experiment(self, principal: Principal, experiment_id: str, action: str) -> None:
        self.authorizer.check_experiment(principal, experiment_id, action)

    def _check_model(self, principal: Principal, name: str, action: str,
                     version: int | None = None) -> None:
        """``version``: the version whose bytes are reached (a sharing package's grant covers
        only the versions it pins)."""
        self.authorizer.check_model(principal, name, action, version)

    def _check_run(self, principal: Principal, run_id: str, action: str) -> None:
        """``action`` on the run's experiment. A run that does not exist is left to MLflow,
        which answers in its own words (a read of metric history answers empty): run IDs
        are the server's random UUIDs, so no other team's run can be named by one."""
        # MLflow's own answer for an ID that cannot be a run's
        private("mlflow.utils.validation", "_validate_run_id")(run_id)
        experiment_id = self.lookups.experiment_of_run(run_id)
        if experiment_id is not None:
            self._check_experiment(principal, experiment_id, action)

    def _check_logged_model(self, principal: Principal, model_id: str, action: str) -> None:
        """As ``_check_run``: logged model IDs are the server's too."""
        experiment_id = self.lookups.experiment_of_logged_model(model_id)
        if experiment_id is not None:
            self._check_experiment(principal, experiment_id, action)

    def _run_experiment(self, run_id: str) -> str:
        # MLflow's own answer for an ID that cannot be a run's
        private("mlflow.utils.validation", "_validate_run_id")(run_id)
        experiment_id = self.lookups.experiment_of_run(run_id)
        if experiment_id is None:
            raise NotFound(f"Run with id={run_id} not found")  # MLflow's words
        return experiment_id

    def _logged_model_experiment(self, model_id: str) -> str:
        experiment_id = self.lookups.experiment_of_logged_model(model_id)
        if experiment_id is None:
            raise NotFound(f"Logged model with ID '{model_id}' not found.")  # MLflow's words
        return experiment_id

    def _creator_team(self, principal: Principal, params: _Params, tags_field: str) -> str | None:
        """The team that will own a new resource: header, then tag, then the only candidate."""
        requested = params.header(TEAM_HEADER)
        for tag in params.list(tags_field):
            if isinstance(tag, dict) and tag.get("key") == TEAM_TAG:
                if requested is not None and requested != tag.get("value"):
                    raise InvalidInput(f"The {TEAM_HEADER} header and the {TEAM_TAG} tag differ.")
                requested = tag.get("value")
        if requested is not None:
            validate_identifier("team name", requested)
            if not self.policy.can_create_in(principal, requested):
                raise PermissionDenied(
                    f"Permission denied: {principal.name!r} may not create resources for team "
                    f"{requested!r}."
                )
            return requested
        candidates = sorted(t for t in principal.teams if self.policy.can_create_in(principal, t))
        if len(candidates) == 1:
            return candidates[0]
        if principal.is_admin:
            return None  # an admin may create resources that only admins can see
        if not candidates:
            raise PermissionDenied(
                f"Permission denied: {principal.name!r} is not an engineer or maintainer of any team."
            )
        raise InvalidInput(
            f"{principal.name!r} belongs to several teams ({', '.join(candidates)}): name the owner "
            f"team with the tag {TEAM_TAG!r} or the header {TEAM_HEADER!r}."
        )

    # -- resolvers (one per Rule.resolver) -------------------------------------------
    def _resolve_experiment(self, principal: Principal, rule: Rule, params: _Params,
                            decision: Decision) -> None:
        experiment_id = params.required(rule.fields[0])
        self._check_experiment(principal, experiment_id, rule.action)

    def _resolve_experiments(self, principal: Principal, rule: Rule, params: _Params,
                             decision: Decision) -> None:
        experiment_ids = params.list(rule.fields[0])
        if not experiment_ids and not principal.is_admin:
            # An empty list can mean "everywhere" to a store; make the caller say where.
            raise InvalidInput(f"Name at least one experiment in {rule.fields[0]!r}.")
        for experiment_id in experiment_ids:
            self._check_experiment(principal, str(experiment_id), rule.action)

    def _resolve_experiment_by_name(self, principal: Principal, rule: Rule, params: _Params,
                                    decision: Decision) -> None:
        name = params.required(rule.fields[0])
        experiment_id = self.lookups.experiment_by_name(name)
        if experiment_id is None:
            return  # MLflow answers 404 itself
        try:
            self._check_experiment(principal, experiment_id, rule.action)
        except PermissionDenied:
            # A name is all the caller has: a hidden experiment answers as a missing one
            # (MLflow's own words), so names of other teams' experiments cannot be probed.
            raise NotFound(f"Could not find experiment with name '{name}'") from None

    def _resolve_run(self, principal: Principal, rule: Rule, params: _Params,
                     decision: Decision) -> None:
        run_id = params.first_of(rule.fields)
        try:
            self._check_run(principal, run_id, rule.action)
        except PermissionDenied:
            # A team that may read a registered model may read the run its versions came
            # from (their lineage), not the rest of the experiment.
            if not rule.lineage or not self._readable_model(
                principal, self.lookups.models_of_run(run_id)
            ):
                raise

    def _readable_model(self, principal: Principal, versions: list[tuple[str, int]]) -> bool:
        """May ``principal`` read one of these model versions (a sharing package's grant
        counts only for the versions it pins)?"""
        for name, version in versions:
            model_id = self.policy.model_id(name)
            if model_id is None:
                continue
            owner = self.policy.owner_of(directory_module.MODEL, model_id)
            if self.authorizer.may(principal, directory_module.MODEL, model_id, "read", version,
                                   owner=owner):
                # Read through the model's grant: its owner team sees this access too.
                note_resource(directory_module.MODEL, model_id, name, owner)
                return True
        return False

    def _resolve_runs(self, principal: Principal, rule: Rule, params: _Params,
                      decision: Decision) -> None:
        for run_id in params.list(rule.fields[0]):
            self._check_run(principal, str(run_id), rule.action)

    def _resolve_logged_model(self, principal: Principal, rule: Rule, params: _Params,
                              decision: Decision) -> None:
        self._check_logged_model(principal, params.required(rule.fields[0]), rule.action)

    def _resolve_trace(self, principal: Principal, rule: Rule, params: _Params,
                       decision: Decision) -> None:
        self._check_trace(principal, params.required(rule.fields[0]), rule.action)

    def _resolve_traces(self, principal: Principal, rule: Rule, params: _Params,
                        decision: Decision) -> None:
        for trace_id in params.list(rule.fields[0]):
            self._check_trace(principal, str(trace_id), rule.action)

    def _check_trace(self, principal: Principal, trace_id: str, action: str) -> None:
        _validate_trace_id(trace_id)
        found = self.lookups.trace_location(trace_id)
        if found is None:
            raise NotFound(f"Trace with ID '{trace_id}' not found.")  # MLflow's words
        self._check_experiment(principal, found.experiment_id, action)
        if action == "read" and not found.stored_where_expected():
            # MLflow reads a trace's data from where its tag points: only ever from the
            # folder the server derived inside the trace's own experiment.
            raise PermissionDenied(f"Trace {trace_id!r} names a storage location outside its "
                                   "experiment; its data is not served.")

    def _resolve_trace_start_v3(self, principal: Principal, rule: Rule, params: _Params,
                                decision: Decision) -> None:
        location = _nested(params.value("trace"), "trace_info", "trace_location")
        experiment_id = _nested(location, "mlflow_experiment", "experiment_id")
        kind = _nested(location, "type")
        if not experiment_id or kind not in (None, "MLFLOW_EXPERIMENT"):
            raise InvalidInput("A trace must be stored in an experiment: "
                               "trace_location.type MLFLOW_EXPERIMENT with mlflow_experiment.")
        if not (str(experiment_id).isascii() and str(experiment_id).isdigit()):
            raise InvalidInput(f"Invalid experiment ID {experiment_id!r} in trace_location.")
        self._check_experiment(principal, str(experiment_id), rule.action)

    def _resolve_trace_locations(self, principal: Principal, rule: Rule, params: _Params,
                                 decision: Decision) -> None:
        locations = params.list(rule.fields[0])
        if not locations and not principal.is_admin:
            raise InvalidInput("Name at least one trace location.")
        for location in locations:
            experiment_id = _nested(location, "mlflow_experiment", "experiment_id")
            if not experiment_id:
                if principal.is_admin:
                    continue
                raise PermissionDenied("Only experiment trace locations can be searched.")
            self._check_experiment(principal, str(experiment_id), rule.action)

    def _resolve_model(self, principal: Principal, rule: Rule, params: _Params,
                       decision: Decision) -> None:
        # Renames and deletions move or drop ownership inside MLflow's own transaction
        # (mlflow_share.policy.write_hooks), so a grant can never outlive or miss its model.
        self._check_model(principal, params.required(rule.fields[0]), rule.action)

    def _resolve_model_version_files(self, principal: Principal, rule: Rule, params: _Params,
                                     decision: Decision) -> None:
        """A version's bytes: a sharing package's grant covers only the versions it pins."""
        raw = str(params.required(rule.fields[1]))
        if raw.isascii() and raw.isdigit() and int(raw) >= 2**63:
            raise InvalidInput(f"Invalid model version {raw[:30]!r}.")  # the database's limit
        version = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else -1
        self._check_model(principal, params.required(rule.fields[0]), rule.action, version)

    def _resolve_model_alias(self, principal: Principal, rule: Rule, params: _Params,
                             decision: Decision) -> None:
        """Aliases need write on the model; a protected one needs manage (maintainers)."""
        from mlflow_share.governance.aliases import is_protected

        name = params.required(rule.fields[0])
        self._check_model(principal, name, "write")
        alias = params.optional(rule.fields[1])
        model_id = self.policy.model_id(name)
        if alias and model_id is not None:
            # (A look-alike of a protected alias is refused where every alias is set: the
            # registry store's write hook, governance/write_hooks.py.)
            with self.lookups.engine.connect() as conn:
                protected = is_protected(conn, model_id, str(alias))
            if protected:
                self._check_model(principal, name, "manage")

    def _resolve_model_version_create(self, principal: Principal, rule: Rule, params: _Params,
                                      decision: Decision) -> None:
        # Registering bytes one may not read would be a way to read them: the source, run and
        # logged model it links are decided as fields (auth/fields.py).
        self._check_model(principal, params.required("name"), "write")

    def _check_source(self, principal: Principal, source: str, run_id: str | None = None
                      ) -> None:
        if source in _PROMPT_SOURCES:  # prompt versions: a placeholder, no bytes behind it
            return
        if "\\" in source or "\x00" in source or any(
            seg in ("..", ".") for seg in source.replace("://", "/").split("/")
        ) or "%2e" in source.lower() or "%2f" in source.lower():
            raise InvalidInput(f"Invalid model version source {source!r}.")
        if source.startswith("models:"):
            try:  # read exactly as MLflow's registration reads it
                parsed = private("mlflow.store.artifact.utils.models", "_parse_model_uri")(source)
            except MlflowException:
                raise InvalidInput(f"Invalid model version source {source!r}.") from None
            if parsed.model_id is not None:
                self._check_linked_logged_model(principal, parsed.model_id)
            elif parsed.name is not None:
                # Another registered version (by number, stage, alias or latest): its bytes.
                # An alias, a stage or "latest" may name a version a sharing package does
                # not pin: decided as "no one version" (-1), which only the owner team and
                # grants on the whole model reach.
                version = parsed.version
                if version is not None and version.isdigit() and int(version) >= 2**63:
                    raise InvalidInput(f"Invalid model version source {source!r}.")
                number = int(version) if version is not None and version.isascii() \
                    and version.isdigit() and len(version) < 10 else -1
                self._check_model(principal, parsed.name, "read", number)
        elif source.startswith("runs:/"):
            run_id = source[len("runs:/"):].split("/", 1)[0]
            self._check_run(principal, run_id, "read")
        elif source.startswith("mlflow-artifacts:/"):
            path = source[len("mlflow-artifacts:/"):].lstrip("/")
            if path.startswith("/") or source.startswith("mlflow-artifacts://"):
                raise InvalidInput(f"Invalid model version source {source!r}.")
            segments = validate_artifact_path(path)
            self._check_artifact(principal, segments, "read")
        elif not principal.is_admin and not self._under_run_artifacts(principal, source, run_id):
            raise InvalidInput(
                "A model version source must be a runs:/, models:/ or mlflow-artifacts:/ URI "
                "(or lie under the artifact location of the run_id it names)."
            )

    def _under_run_artifacts(self, principal: Principal, source: str,
                             run_id: str | None) -> bool:
        """Whether a raw storage URI is a folder of the registration's own run, which the
        caller may read (``mlflow.register_model("runs:/RUN/model")`` sends the run's stored
        location when the run logged no model). Registration still copies only from the
        server's root or a declared source root."""
        if not run_id:
            return False
        location = self.lookups.artifact_uri_of_run(run_id)
        if not location or not source.startswith(location.rstrip("/") + "/"):
            return False
        self._check_run(principal, run_id, "read")
        return True

    def _resolve_create_experiment(self, principal: Principal, rule: Rule, params: _Params,
                                   decision: Decision) -> None:
        if params.optional("artifact_location") and not principal.is_admin:
            # Where artifacts live is the server's choice: a path here could plant files anywhere.
            raise InvalidInput("Only org administrators may set an experiment's artifact_location.")
        self._own_new_resource(self._creator_team(principal, params, "tags"))

    def _resolve_create_model(self, principal: Principal, rule: Rule, params: _Params,
                              decision: Decision) -> None:
        params.required("name")
        self._own_new_resource(self._creator_team(principal, params, "tags"))

    @staticmethod
    def _own_new_resource(team: str | None) -> None:
        """The audited store records the owner team in the transaction that creates it."""
        audit = AUDIT_CONTEXT.get()
        if audit is not None and team is not None:
            audit.create_team = audit.owner_team = team

    def _resolve_search(self, principal: Principal, rule: Rule, params: _Params,
                        decision: Decision) -> None:
        if not principal.is_admin:
            decision.scope = SearchScope(principal.name,
                                         tuple(self.policy.readable_teams(principal)))

    _resolve_graphql = _resolve_search

    def _resolve_artifact(self, principal: Principal, rule: Rule, params: _Params,
                          decision: Decision) -> None:
        path = params.optional(rule.fields[0]) or ""
        if (audit := AUDIT_CONTEXT.get()) is not None:
            audit.extra["artifact_path"] = path[:1024]
        segments = validate_artifact_path(path, allow_empty=True)
        self._check_artifact(principal, segments, rule.action)

    def _check_artifact(self, principal: Principal, segments: list[str], action: str) -> None:
        if segments and segments[0] == MODELS_DIR:
            self._check_registered_files(principal, segments, action)
            return
        if principal.is_admin:
            if segments and segments[0].isdigit():  # name the owner team in the event
                note_resource(directory_module.EXPERIMENT, segments[0], None,
                              self.policy.owner_of(directory_module.EXPERIMENT, segments[0]))
            return
        if not segments or not segments[0].isdigit():
            raise PermissionDenied("Only artifacts under an experiment can be reached.")
        experiment_id = segments[0]
        try:
            self._check_experiment(principal, experiment_id, action)
            return
        except (PermissionDenied, NotFound):
            if action != "read":
                raise
        # A team granted a registered model may read the files of its versions, and only those.
        if not self._readable_model(principal, self.lookups.models_serving_location(segments)):
            raise denial(principal, "read", f"artifacts of experiment {experiment_id!r}")

    def _check_registered_files(self, principal: Principal, segments: list[str],
                                action: str) -> None:
        """``models/<model id>/<version>/...``: registered copies, readable through the model."""
        if action != "read":
            raise Conflict("Registered model versions' files are written once, by registration, "
                           "and never changed or deleted.")
        if len(segments) < 2:
            if principal.is_admin:
                return
            raise PermissionDenied("Only the files of a registered model version can be reached.")
        model_id = segments[1]
        owner = self.policy.owner_of(directory_module.MODEL, model_id)
        # A sharing package's grant reaches only the versions it pins (a folder of all the
        # versions is no version: -1).
        version = int(segments[2]) if len(segments) >= 3 and segments[2].isascii() and \
            segments[2].isdigit() and len(segments[2]) < 10 else -1
        if principal.is_admin or self.authorizer.may(principal, directory_module.MODEL,
                                                     model_id, "read", version, owner=owner):
            note_resource(directory_module.MODEL, model_id, None, owner)
            return
        raise denial(principal, "read", "this registered model's files")

    # -- request fields (one per fields.Check) -----------------------------------------
    def _field_experiment(self, principal: Principal, value: Any, action: str,
                          params: _Params) -> None:
        self._check_experiment(principal, _text(value), action)

    def _field_presigned(self, principal: Principal, value: Any, action: str,
                         params: _Params) -> None:
        """A presigned URL hands out the storage's bytes unchecked: org admins only (as
        MLflow's presigned-URL endpoints are here)."""
        if str(value).lower() == "true" and not principal.is_admin:
            raise PermissionDenied("Presigned downloads skip mlflow-share's digest check: "
                                   "download the files through the server.")

    def _field_run(self, principal: Principal, value: Any, action: str, params: _Params) -> None:
        run_id = _text(value)
        self._check_run(principal, run_id, action)

    def _field_logged_model(self, principal: Principal, value: Any, action: str,
                            params: _Params) -> None:
        if action == "read":  # linked into something new: its lineage comes along
            self._check_linked_logged_model(principal, _text(value))
            return
        self._check_logged_model(principal, _text(value), action)

    def _check_linked_logged_model(self, principal: Principal, model_id: str) -> None:
        """A logged model a new version links: read on it and on its source run, which
        MLflow copies into the version (and lineage then shows)."""
        self._check_logged_model(principal, model_id, "read")
        source_run = self.lookups.source_run_of_logged_model(model_id)
        if source_run:
            self._check_run(principal, source_run, "read")

    def _field_traces(self, principal: Principal, value: Any, action: str,
                      params: _Params) -> None:
        self._check_trace(principal, _text(value), action)

    def _field_trace_upsert(self, principal: Principal, value: Any, action: str,
                            params: _Params) -> None:
        """MLflow's StartTraceV3 overwrites a trace that exists: only the caller's own trace,
        and never into another experiment (a trace does not move)."""
        trace_id = _text(value)
        # MLflow builds the trace's storage folder from its ID: an ID is never a path.
        _validate_trace_id(trace_id)
        found = self.lookups.trace_location(trace_id)
        if found is None:
            return
        self._check_experiment(principal, found.experiment_id, action)
        location = _nested(params.value("trace"), "trace_info", "trace_location",
                           "mlflow_experiment", "experiment_id")
        if str(location) != found.experiment_id:
            raise Conflict(f"Trace {trace_id!r} exists in another experiment; a trace cannot "
                           "be moved.")

    def _field_model_version_source(self, principal: Principal, value: Any, action: str,
                                    params: _Params) -> None:
        self._check_source(principal, _text(value), params.optional("run_id"))

    def _field_logged_model_json(self, principal: Principal, value: Any, action: str,
                                 params: _Params) -> None:
        try:
            document = json.loads(value)
        except (TypeError, ValueError, RecursionError):
            return  # MLflow refuses it with its own message
        if isinstance(document, dict) and document.get("run_id") not in (
                None, params.optional("run_id")):
            raise InvalidInput("The model's run_id must be the run it is logged to.")

    def _field_tags(self, principal: Principal, value: Any, action: str,
                    params: _Params) -> None:
        for key, _tag in _tag_items(value):
            _refuse_reserved(key)

    def _field_creation_tags(self, principal: Principal, value: Any, action: str,
                             params: _Params) -> None:
        for key, _tag in _tag_items(value):
            if key != TEAM_TAG:  # read by the resolver: the new resource's owner team
                _refuse_reserved(key)

    def _field_run_tags(self, principal: Principal, value: Any, action: str,
                        params: _Params) -> None:
        for key, tag in _tag_items(value):
            _refuse_reserved(key)
            if key == _PARENT_RUN_TAG and tag:  # nesting under a run shows it: read it
                self._check_run(principal, tag, "read")

    def _field_trace_tags(self, principal: Principal, value: Any, action: str,
                          params: _Params) -> None:
        for key, _tag in _tag_items(value):
            _refuse_reserved(key, trace=True)

    def _field_trace_metadata(self, principal: Principal, value: Any, action: str,
                              params: _Params) -> None:
        """Metadata that links a trace to a run or a logged model: the caller must be able
        to write there, as for ``LinkTracesToRun``."""
        for key, item in _tag_items(value):
            _refuse_reserved(key, trace=True)
            if key == _TRACE_SOURCE_RUN and item:
                self._check_run(principal, item, "write")
            elif key == _TRACE_MODEL_ID and item:
                self._check_logged_model(principal, item, "write")

    def _field_tag_key(self, principal: Principal, value: Any, action: str,
                       params: _Params) -> None:
        key = _text(value)
        _refuse_reserved(key)
        parent = params.optional("value") if key == _PARENT_RUN_TAG else None
        if parent:  # nesting under a run shows it: read it (as at CreateRun)
            self._check_run(principal, parent, "read")

    def _field_trace_tag_key(self, principal: Principal, value: Any, action: str,
                             params: _Params) -> None:
        _refuse_reserved(_text(value), trace=True)

    def _field_new_assessment_id(self, principal: Principal, value: Any, action: str,
                                 params: _Params) -> None:
        if self.lookups.assessment_exists(_text(value)):
            raise Conflict(f"Assessment ID {_text(value)[:200]!r} is in use; leave it out and "
                           "the server chooses one.")

    _Resolve = Callable[["Interceptor", Principal, Rule, "_Params", Decision], None]
    _FieldCheck = Callable[["Interceptor", Principal, Any, str, "_Params"], None]
    RESOLVERS: Mapping[Resolver, _Resolve]
    FIELD_CHECKS: Mapping[Check, _FieldCheck]


Interceptor.RESOLVERS = {
    Resolver.EXPERIMENT: Interceptor._resolve_experiment,
    Resolver.EXPERIMENTS: Interceptor._resolve_experiments,
    Resolver.EXPERIMENT_BY_NAME: Interceptor._resolve_experiment_by_name,
    Resolver.RUN: Interceptor._resolve_run,
    Resolver.RUNS: Interceptor._resolve_runs,
    Resolver.LOGGED_MODEL: Interceptor._resolve_logged_model,
    Resolver.TRACE: Interceptor._resolve_trace,
    Resolver.TRACES: Interceptor._resolve_traces,
    Resolver.TRACE_START_V3: Interceptor._resolve_trace_start_v3,
    Resolver.TRACE_LOCATIONS: Interceptor._resolve_trace_locations,
    Resolver.MODEL: Interceptor._resolve_model,
    Resolver.MODEL_VERSION_FILES: Interceptor._resolve_model_version_files,
    Resolver.MODEL_ALIAS: Interceptor._resolve_model_alias,
    Resolver.MODEL_VERSION_CREATE: Interceptor._resolve_model_version_create,
    Resolver.CREATE_EXPERIMENT: Interceptor._resolve_create_experiment,
    Resolver.CREATE_MODEL: Interceptor._resolve_create_model,
    Resolver.SEARCH: Interceptor._resolve_search,
    Resolver.GRAPHQL: Interceptor._resolve_search,
    Resolver.ARTIFACT: Interceptor._resolve_artifact,
}
# Decided before any resolver runs (Interceptor._decide), so they have none.
_DECIDED_BY_ROUTE = frozenset({Resolver.PUBLIC, Resolver.LOGIN, Resolver.AUTHENTICATED,
                               Resolver.PAGE, Resolver.ADMIN})
if set(Interceptor.RESOLVERS) | _DECIDED_BY_ROUTE != set(Resolver):  # pragma: no cover
    raise ImportError("Interceptor.RESOLVERS must bind every Resolver")

Interceptor.FIELD_CHECKS = {
    Check.EXPERIMENT: Interceptor._field_experiment,
    Check.RUN: Interceptor._field_run,
    Check.RUNS: Interceptor._field_run,
    Check.LOGGED_MODEL: Interceptor._field_logged_model,
    Check.TRACES: Interceptor._field_traces,
    Check.TRACE_UPSERT: Interceptor._field_trace_upsert,
    Check.MODEL_VERSION_SOURCE: Interceptor._field_model_version_source,
    Check.LOGGED_MODEL_JSON: Interceptor._field_logged_model_json,
    Check.RUN_TAGS: Interceptor._field_run_tags,
    Check.TAGS: Interceptor._field_tags,
    Check.CREATION_TAGS: Interceptor._field_creation_tags,
    Check.TRACE_TAGS: Interceptor._field_trace_tags,
    Check.TRACE_METADATA: Interceptor._field_trace_metadata,
    Check.TAG_KEY: Interceptor._field_tag_key,
    Check.TRACE_TAG_KEY: Interceptor._field_trace_tag_key,
    Check.NEW_ASSESSMENT_ID: Interceptor._field_new_assessment_id,
    Check.PRESIGNED: Interceptor._field_presigned,
}
if set(Interceptor.FIELD_CHECKS) | {Check.PRIMARY} != set(Check):  # pragma: no cover
    raise ImportError("Interceptor.FIELD_CHECKS must bind every fields.Check")


_TRACE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_:-]{0,127}")


def _validate_trace_id(trace_id: str) -> None:
    if not _TRACE_ID.fullmatch(trace_id):
        raise InvalidInput(f"Invalid trace ID {trace_id[:200]!r}: letters, digits, '_', '-' "
                           "and ':' only, at most 128.")


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInput("An ID field must be a string.")
    return str(value)


def _tag_items(value: Any) -> list[tuple[str, str]]:
    """(key, value) of a tag list (``[{"key", "value"}]``), a map, or one tag."""
    if isinstance(value, dict) and "key" not in value:
        return [(str(k), str(v)) for k, v in value.items()]
    if isinstance(value, dict):
        return [(str(value.get("key", "")), str(value.get("value", "")))]
    return []


def _refuse_reserved(key: str, *, trace: bool = False) -> None:
    if key.startswith(_RESERVED_TAG_PREFIXES):  # as the audited store refuses them: 409
        raise Conflict(f"Tag {key!r} is mlflow-share's own and cannot be set, changed or "
                       "deleted by clients.")
    if trace and key in _TRACE_LOCATION_TAGS:  # as MLflow refuses its immutable trace tags
        raise InvalidInput(f"Tag {key!r} is a storage location the server sets; it cannot be "
                           "set, changed or deleted by clients.")

def note_denial(message: str) -> None:
    """Record the request's refusal (and why) in its audit event."""
    audit = AUDIT_CONTEXT.get()
    if audit is not None:
        audit.decision, audit.reason = "deny", message[:1000]


def _nested(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key, value.get(_camel(key)))
    return value


class _Params:
    """Request parameters, read with MLflow's own precedence rules."""

    def __init__(self, request: IncomingRequest, match: Match, rule: Rule,
                 parsed: dict[str, Any] | None = None) -> None:
        """``parsed``: the request message as MLflow's handler reads it, for REST routes."""
        self._request = request
        self._path_args = match.path_args
        self._json: dict[str, Any] | None = None
        if parsed is not None:
            self._from_query, self._json = False, parsed
            return
        self._from_query = rule.source == "query" or (
            request.method == "GET" and bool(request.query)
        )
        if not self._from_query and request.body:
            self._json = self._parse_json(request.body)

    @staticmethod
    def _parse_json(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
            if isinstance(data, str):  # older clients double-encode, MLflow accepts it
                data = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidInput("The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise InvalidInput("The request body must be a JSON object.")
        return data

    def data(self) -> dict[str, Any]:
        """The parameters as a mapping (a hand-written route's query or JSON body)."""
        if self._from_query or self._json is None:
            return {key: values if len(values) > 1 else values[0]
                    for key, values in self._request.query.lists()}
        return self._json

    @property
    def method(self) -> str:
        return self._request.method

    def header(self, name: str) -> str | None:
        return self._request.headers.get(name)

    def value(self, name: str) -> Any:
        if name in self._path_args:
            in_body = self._json is not None and (name in self._json or _camel(name) in self._json)
            if in_body and str(self._json_value(name)) != self._path_args[name]:  # type: ignore[union-attr]
                # Some handlers act on the body's copy of a path parameter: they must agree.
                raise InvalidInput(f"Parameter {name!r} differs between the path and the body.")
            return self._path_args[name]
        if self._from_query:
            return self._request.query.get(name)
        # Flask hand-written routes read request.args whatever the method.
        if self._json is None:
            return self._request.query.get(name)
        return self._json_value(name)

    def _json_value(self, name: str) -> Any:
        assert self._json is not None
        camel = _camel(name)
        if name in self._json and camel != name and camel in self._json:
            raise InvalidInput(f"Request specifies both '{name}' and '{camel}'; provide only one.")
        return self._json.get(name, self._json.get(camel))

    def list(self, name: str) -> list[Any]:
        if self._from_query or self._json is None:
            return list(self._request.query.getlist(name))
        value = self.value(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise InvalidInput(f"Parameter {name!r} must be a list.")
        return value

    def optional(self, name: str) -> str | None:
        value = self.value(name)
        if value is None or value == "":
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise InvalidInput(f"Parameter {name!r} must be a string.")
        value = str(value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"Parameter {name!r} is not valid text.") from None
        return value

    def required(self, name: str) -> str:
        value = self.optional(name)
        if value is None:
            raise MissingParameter(f"Missing value for required parameter {name!r}.")
        return value

    def first_of(self, names: tuple[str, ...]) -> str:
        for name in names:
            value = self.optional(name)
            if value is not None:
                return value
        raise MissingParameter(f"Missing value for required parameter {names[0]!r}.")
