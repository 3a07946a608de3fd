"""``GET /api/2.0/mlflow-share/ready``: readiness for a load balancer, degraded states named.

Unauthenticated (a load balancer has no token) and terse: each check is ``ok`` or the name of
what is wrong, never an error message. 200 when every check is ``ok``, else 503, so a replica
that cannot reach its database, cannot load its policy or cannot append to the audit log is
taken out of rotation — it refuses requests (503) meanwhile, so nothing is served unaudited or
decided on an old policy.

- ``database``: a read of the policy version counters;
- ``policy``: this process's policy snapshot reloads up to the database's version;
- ``audit``: appends work (after a failed one, each check appends a probe event);
- ``artifacts``: the artifact root is reachable (local roots: the folder, or the folder it
  will be created in, is writable).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify

from mlflow_share import db
from mlflow_share.http import PREFIX, bind_routes
from mlflow_share.audit.log import AuditAppender
from mlflow_share.policy.enforcer import PolicyEngine


@dataclass(frozen=True)
class HealthServices:
    """What is checked: the policy (its engine reaches the database) and the audit appender."""

    policy: PolicyEngine
    appender: AuditAppender


def checks(policy: PolicyEngine, appender: AuditAppender) -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        with policy.engine.connect() as conn:
            db.read_versions(conn)
        found["database"] = "ok"
    except Exception:  # noqa: BLE001 - any failure here means: not ready
        return {"database": "unreachable", "policy": "unknown", "audit": "unknown",
                "artifacts": _artifacts()}
    try:  # reloaded up to the database's version (or newer, if a change committed since)
        policy.refresh()
        found["policy"] = "ok"
    except Exception:  # noqa: BLE001
        found["policy"] = "not loadable"
    found["audit"] = "ok" if appender.healthy() else "append failing"
    found["artifacts"] = _artifacts()
    return found


def _artifacts() -> str:
    from mlflow_share.artifacts import registration

    repo: Any = registration.destination()
    if repo is None:
        return "ok"  # not a checksum+ root: MLflow's own repository, checked by MLflow
    root = getattr(repo.storage, "root", None)  # LocalStorage; S3 is checked when used
    if not isinstance(root, str):
        return "ok"
    while not os.path.exists(root) and os.path.dirname(root) != root:
        root = os.path.dirname(root)  # created on the first upload: its parent must allow it
    return "ok" if os.path.isdir(root) and os.access(root, os.W_OK) else "not writable"


def ready(services: HealthServices) -> Response:
    found = checks(services.policy, services.appender)
    healthy = all(value == "ok" for value in found.values())
    response = jsonify({"status": "ready" if healthy else "degraded", "checks": found})
    response.status_code = 200 if healthy else 503
    return response


# (rule, endpoint, view, methods): ``mlflow_share_health.ready`` is public in the policy.
Route = tuple[str, str, Callable[[HealthServices], Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/ready", "ready", ready, ("GET",)),
)


def create_health_blueprint(policy: PolicyEngine, appender: AuditAppender) -> Blueprint:
    api = Blueprint("mlflow_share_health", __name__, url_prefix=PREFIX)
    services = HealthServices(policy, appender)
    bind_routes(api, ROUTES, services)
    return api
