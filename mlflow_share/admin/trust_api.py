"""Trust rules of workload identity under ``/api/2.0/mlflow-share/trust-rules``: org admins
add, list and remove them (``mlflow-share trust add|list|remove``).

- ``POST`` ``{issuer, audience, subject, service_account, claims?: {name: pattern},
  jwks_uri?}`` → ``{"rule": {...}}``;
- ``GET`` → ``{"rules": [...]}``;
- ``DELETE`` ``{"id"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Response, jsonify

from mlflow_share.auth.trust import TrustRule, TrustRules
from mlflow_share.http import (
    PREFIX,
    bind_routes,
    current_principal,
    json_body,
    json_errors,
    require_admin,
    string_field,
)


@dataclass(frozen=True)
class TrustServices:
    rules: TrustRules


def add_trust_rule(services: TrustServices) -> Response:
    principal = current_principal()
    require_admin(principal)
    rule = services.rules.add(TrustRule.checked(json_body()), by=principal.name)
    return jsonify({"rule": rule.to_dict()})


def list_trust_rules(services: TrustServices) -> Response:
    require_admin(current_principal())
    return jsonify({"rules": [rule.to_dict() for rule in services.rules.all()]})


def remove_trust_rule(services: TrustServices) -> Response:
    require_admin(current_principal())
    rule_id = string_field(json_body(), "id")
    assert rule_id is not None
    services.rules.remove(rule_id)
    return jsonify({})


Route = tuple[str, str, Callable[[TrustServices], Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/trust-rules", "add_trust_rule", add_trust_rule, ("POST",)),
    ("/trust-rules", "list_trust_rules", list_trust_rules, ("GET",)),
    ("/trust-rules", "remove_trust_rule", remove_trust_rule, ("DELETE",)),
)


def create_trust_blueprint(rules: TrustRules) -> Blueprint:
    blueprint = json_errors(Blueprint("mlflow_share_trust", __name__, url_prefix=PREFIX))
    bind_routes(blueprint, ROUTES, TrustServices(rules))
    return blueprint
