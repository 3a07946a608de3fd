"""``/api/2.0/mlflow-share/model-versions/{manifest,verify}``: a version's manifest and a check.

Both need read access to the model version (a sharing package gives it for the versions it
pins).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.engine import Engine

from mlflow_share.http import PREFIX, bind_routes, json_errors, require_model
from mlflow_share.artifacts import registration
from mlflow_share.errors import InvalidInput
from mlflow_share.policy.enforcer import PolicyEngine


@dataclass(frozen=True)
class ArtifactsServices:
    """What the views work with: the policy deciding reads, the database holding manifests."""

    policy: PolicyEngine
    engine: Engine


def readable_version(policy: PolicyEngine) -> tuple[str, str]:
    """The request's ``name`` and numeric ``version``, once the caller may read that version
    (400 for a missing or malformed one, before the model is looked up)."""
    name, version = request.args.get("name"), request.args.get("version")
    if not name or not version or not version.isascii() or not version.isdigit() or \
            len(version) > 9:
        raise InvalidInput("Give 'name' and a numeric 'version' of a model version.")
    require_model(policy, name, "read", int(version))
    return name, version


def get_manifest(services: ArtifactsServices) -> Response:
    name, version = readable_version(services.policy)
    return jsonify(registration.find_manifest(services.engine, name, version).to_dict())


def verify(services: ArtifactsServices) -> Response:
    name, version = readable_version(services.policy)
    repo = registration.destination()
    if repo is None:
        raise InvalidInput("This server's artifact root is not a checksum+ repository.")
    return jsonify(registration.verify_version(services.engine, repo, name, version).to_dict())


# (rule, endpoint, view, methods): the endpoint is what the policy and the audit log name.
Route = tuple[str, str, Callable[[ArtifactsServices], Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/manifest", "get_manifest", get_manifest, ("GET",)),
    ("/verify", "verify", verify, ("GET",)),
)


def create_artifacts_blueprint(policy: PolicyEngine, engine: Engine) -> Blueprint:
    api = json_errors(Blueprint("mlflow_share_artifacts", __name__,
                                url_prefix=PREFIX + "/model-versions"))
    services = ArtifactsServices(policy, engine)
    bind_routes(api, ROUTES, services)
    return api
