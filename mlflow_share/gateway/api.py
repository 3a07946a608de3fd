"""``GET /api/2.0/mlflow-share/usage?model=NAME[&since=MS]``: who calls a model, how fast.

Rows per version, calling team and minute (requests, errors, latency sum, p50, p95, p99), as the
gateway wrote them; for whoever may read the registered model (its owners first of all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.engine import Engine

from mlflow_share.http import PREFIX, bind_routes, json_errors, require_model
from mlflow_share.errors import InvalidInput
from mlflow_share.gateway.usage import usage_rows
from mlflow_share.policy.enforcer import PolicyEngine


@dataclass(frozen=True)
class UsageServices:
    """What the view works with: the policy deciding reads, the database the gateway writes
    its usage rows to."""

    policy: PolicyEngine
    engine: Engine


def usage(services: UsageServices) -> Response:
    name, since = request.args.get("model"), request.args.get("since")
    if not name:
        raise InvalidInput("Give the registered model's name as 'model'.")
    if since is not None and not (since.isascii() and since.isdigit() and len(since) < 16):
        raise InvalidInput("'since' is milliseconds since the epoch.")
    require_model(services.policy, name, "read")
    return jsonify({"model": name, "usage": usage_rows(services.engine, name,
                                                       int(since) if since else None)})


# (rule, endpoint, view, methods): the endpoint is what the policy and the audit log name.
Route = tuple[str, str, Callable[[UsageServices], Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/usage", "usage", usage, ("GET",)),
)


def create_usage_blueprint(policy: PolicyEngine, engine: Engine) -> Blueprint:
    api = json_errors(Blueprint("mlflow_share_usage", __name__, url_prefix=PREFIX))
    services = UsageServices(policy, engine)
    bind_routes(api, ROUTES, services)
    return api
