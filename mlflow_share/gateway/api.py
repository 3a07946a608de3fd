"""Who calls a model through the gateway, and how fast: for whoever may read the registered
model (its owners first of all).

``GET /api/2.0/mlflow-share/usage?model=NAME[&since=MS]``: rows per version, calling team and
minute (requests, errors, latency sum, p50, p95, p99), as the gateway wrote them; for charts.

``GET /api/2.0/mlflow-share/usage/summary?model=NAME[&since=MS][&by=version|team]``: requests,
errors, mean and p50/p95/p99 over exactly the calls since ``since`` (their latency histograms
added, never per-minute percentiles averaged), in all or per version or calling team
(``by=version,team``, or ``by`` twice: per both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.engine import Engine

from mlflow_share.directory import MODEL
from mlflow_share.http import PREFIX, bind_routes, current_principal, json_errors, require_model
from mlflow_share.policy.access import sees_every_team
from mlflow_share.errors import InvalidInput
from mlflow_share.gateway.usage import summarize, usage_rows
from mlflow_share.policy.enforcer import PolicyEngine

SUMMARY_BY = ("version", "team")


@dataclass(frozen=True)
class UsageServices:
    """What the views work with: the policy deciding reads, the database the gateway writes
    its usage rows to."""

    policy: PolicyEngine
    engine: Engine


def _model_and_since() -> tuple[str, int | None]:
    """The ``model`` and ``since`` arguments, checked; the caller must then ask the policy."""
    name, since = request.args.get("model"), request.args.get("since")
    if not name:
        raise InvalidInput("Give the registered model's name as 'model'.")
    if since is not None and not (since.isascii() and since.isdigit() and len(since) < 16):
        raise InvalidInput("'since' is milliseconds since the epoch.")
    return name, int(since) if since else None


def _by() -> tuple[str, ...]:
    """``by``: ``version``, ``team`` or both (repeated or comma-separated), in that order."""
    asked = [part.strip() for value in request.args.getlist("by") for part in value.split(",")]
    unknown = sorted({part for part in asked if part not in SUMMARY_BY})
    if unknown:
        raise InvalidInput(f"'by' is {' or '.join(SUMMARY_BY)} (or both), not "
                           f"{', '.join(repr(part[:40]) for part in unknown[:5])}.")
    return tuple(name for name in SUMMARY_BY if name in asked)


def _visible_teams(services: UsageServices, name: str) -> frozenset[str] | None:
    """Whose calls the caller may see (None: every team's): the owner team's members and the
    model's managers see every consumer; a consuming team only its own calls, as it sees
    only its own routes in the model's access."""
    model_id = require_model(services.policy, name, "read")
    principal = current_principal()
    if model_id is None or sees_every_team(services.policy, principal, MODEL, model_id):
        return None
    return frozenset(principal.teams)


def usage(services: UsageServices) -> Response:
    name, since = _model_and_since()
    teams = _visible_teams(services, name)
    return jsonify({"model": name, "usage": usage_rows(services.engine, name, since, teams)})


def usage_summary(services: UsageServices) -> Response:
    name, since = _model_and_since()
    by = _by()
    teams = _visible_teams(services, name)
    return jsonify({"model": name, "since": since, "by": list(by),
                    "summary": summarize(services.engine, name, since, by, teams)})


# (rule, endpoint, view, methods): the endpoint is what the policy and the audit log name
# (``flask:mlflow_share_usage.<endpoint>``).
Route = tuple[str, str, Callable[[UsageServices], Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/usage", "usage", usage, ("GET",)),
    ("/usage/summary", "summary", usage_summary, ("GET",)),
)


def create_usage_blueprint(policy: PolicyEngine, engine: Engine) -> Blueprint:
    api = json_errors(Blueprint("mlflow_share_usage", __name__, url_prefix=PREFIX))
    services = UsageServices(policy, engine)
    bind_routes(api, ROUTES, services)
    return api
