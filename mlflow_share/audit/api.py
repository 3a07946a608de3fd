"""The audit JSON API under ``/api/2.0/mlflow-share/audit/``: events, verification, head.

Org admins see every event. A team maintainer sees the events of the team's resources,
including every access to them by other teams: that is how an owner sees who retrieved a
shared model. Verification and the head (for signed checkpoints) are for org admins.

Events carry their action's human name (``registered_model.read``, ``grant``) in ``action`` and
the spelling the chain holds in ``stored_action``; the ``action`` filter takes either
(``audit.log.action_name``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.engine import Engine

from mlflow_share.http import bind_routes, current_principal, json_errors
from mlflow_share.audit.log import NamedEventFilter, readable_event
from mlflow_share.audit.verify import EventFilter, hash_at, search_events, verify_chain
from mlflow_share.auth.identity import Principal
from mlflow_share.errors import InvalidInput, PermissionDenied
from mlflow_share.policy.enforcer import PolicyEngine

PREFIX = "/api/2.0/mlflow-share/audit"
MAX_RESULTS = 1000
_MAX_INT = 2**63 - 1


@dataclass(frozen=True)
class AuditServices:
    """What the views work with: the database holding the chain. The policy is not read
    today (the caller's teams come with the principal); it is kept so the factory's
    signature, and what a view may need next, stay as they were."""

    policy: PolicyEngine
    engine: Engine


def _int_arg(name: str, default: int | None = None, minimum: int = 0) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"Parameter {name!r} must be an integer.") from None
    if not minimum <= value <= _MAX_INT:
        raise InvalidInput(f"Parameter {name!r} must be between {minimum} and {_MAX_INT}.")
    return value


def _page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        value = int(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("Invalid page_token.") from None
    if not 0 <= value <= _MAX_INT:
        raise InvalidInput("Invalid page_token.")
    return value


def event_filter_from_args(principal: Principal) -> EventFilter:
    visible: tuple[str, ...] | None = None
    if not principal.is_admin:
        visible = tuple(sorted(t for t, role in principal.teams.items() if role == "maintainer"))
        if not visible:
            raise PermissionDenied(
                "Only org admins and team maintainers may read the audit log.")
    team = request.args.get("team") or None
    if team is not None and visible is not None and team not in visible:
        raise PermissionDenied(f"{principal.name!r} may not read the audit events of {team!r}.")
    return NamedEventFilter(
        since=_int_arg("since"), until=_int_arg("until"),
        principal=request.args.get("principal") or None, team=team,
        resource=request.args.get("resource") or None,
        action=request.args.get("action") or None, visible_teams=visible,
    )


def events(services: AuditServices) -> Response:
    """A page of the events the caller may see, in chain order or newest first; the page
    token is the last sequence number shown."""
    event_filter = event_filter_from_args(current_principal())
    limit = _int_arg("max_results", 100, minimum=1) or 100
    if limit > MAX_RESULTS:
        raise InvalidInput(f"max_results must be at most {MAX_RESULTS}.")
    order = request.args.get("order") or "asc"
    if order not in ("asc", "desc"):
        raise InvalidInput("'order' is 'asc' (chain order, the default) or 'desc' "
                           "(newest first).")
    rows = search_events(services.engine, event_filter, after_seq=_page_token(
        request.args.get("page_token")), limit=limit + 1, newest_first=order == "desc")
    body: dict[str, Any] = {"events": [readable_event(row) for row in rows[:limit]]}
    if len(rows) > limit:
        body["next_page_token"] = base64.urlsafe_b64encode(
            str(rows[limit - 1]["seq"]).encode()).decode()
    return jsonify(body)


def verify(services: AuditServices) -> Response:
    if not current_principal().is_admin:
        raise PermissionDenied("Only org administrators may verify the audit log.")
    checkpoint_seq = _int_arg("checkpoint_seq", minimum=1)
    # One process: forking a multi-threaded server worker is not safe.
    result = verify_chain(services.engine, processes=1).to_dict()
    if checkpoint_seq is not None:
        result["checkpoint_hash"] = hash_at(services.engine, checkpoint_seq)
    return jsonify(result)


# (rule, endpoint, view, methods): the endpoint is what the policy and the audit log name.
Route = tuple[str, str, Callable[[AuditServices], Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/events", "events", events, ("GET",)),
    ("/verify", "verify", verify, ("GET",)),
)


def create_audit_blueprint(policy: PolicyEngine, engine: Engine) -> Blueprint:
    api = json_errors(Blueprint("mlflow_share_audit", __name__, url_prefix=PREFIX))
    services = AuditServices(policy, engine)
    bind_routes(api, ROUTES, services)
    return api
