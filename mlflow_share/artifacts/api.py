"""``/api/2.0/mlflow-share/model-versions/{manifest,verify}``: a version's manifest and a check.

Both need read access to the model version (a sharing package gives it for the versions it
pins).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.engine import Engine

from mlflow_share.http import PREFIX, json_errors, require_model
from mlflow_share.artifacts import registration
from mlflow_share.errors import InvalidInput
from mlflow_share.policy.enforcer import PolicyEngine


def create_artifacts_blueprint(policy: PolicyEngine, engine: Engine) -> Blueprint:
    api = json_errors(Blueprint("mlflow_share_artifacts", __name__,
                                url_prefix=PREFIX + "/model-versions"))

    def readable_version() -> tuple[str, str]:
        name, version = request.args.get("name"), request.args.get("version")
        if not name or not version or not version.isascii() or not version.isdigit() or \
                len(version) > 9:
            raise InvalidInput("Give 'name' and a numeric 'version' of a model version.")
        require_model(policy, name, "read", int(version))
        return name, version

    @api.get("/manifest")
    def get_manifest() -> Response:
        name, version = readable_version()
        return jsonify(registration.find_manifest(engine, name, version).to_dict())

    @api.get("/verify")
    def verify() -> Response:
        name, version = readable_version()
        repo = registration.destination()
        if repo is None:
            raise InvalidInput("This server's artifact root is not a checksum+ repository.")
        return jsonify(registration.verify_version(engine, repo, name, version).to_dict())

    return api
