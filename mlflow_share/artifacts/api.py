"""``/api/2.0/mlflow-share/model-versions/{manifest,verify,signature}``: a version's manifest,
a check of its stored bytes, and its OpenSSF Model Signing signature.

All need read access to the model version (a sharing package gives it for the versions it
pins). A version with no signature by a trusted key (registered before the key) is signed
when an org admin first asks for its signature, or by ``signature sign-existing``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.engine import Engine

from mlflow_share.http import PREFIX, bind_routes, current_principal, json_errors, require_model
from mlflow_share.artifacts import oms, registration, signatures, signing
from mlflow_share.errors import InvalidInput
from mlflow_share.policy.enforcer import PolicyEngine


@dataclass(frozen=True)
class ArtifactsServices:
    """What the views work with: the policy deciding reads, the database holding manifests,
    the keys signatures are made and checked with."""

    policy: PolicyEngine
    engine: Engine
    keys: oms.SigningKeys


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


def get_signature(services: ArtifactsServices) -> Response:
    """The version's OMS bundle as signed (``bundle``: the text ``model_signing`` reads)."""
    name, version = readable_version(services.policy)
    key_id = request.args.get("key_id") or None
    if key_id is not None and (len(key_id) != 64 or not key_id.isascii()
                               or not all(c in "0123456789abcdef" for c in key_id)):
        raise InvalidInput("'key_id' is the SHA-256 (hex) of a signing key's public PEM.")
    record = registration.find_manifest(services.engine, name, version)
    # An org admin's fetch signs a version registered before the key (as sign-existing does);
    # anyone else gets what registration or an admin signed.
    stored = signing.signature_for(services.engine, record, services.keys, key_id=key_id,
                                   sign_missing=current_principal().is_admin)
    return jsonify({"name": name, "version": version, "identity": record.identity,
                    **stored.to_dict(), "trusted": stored.key_id in services.keys.public})


# (rule, endpoint, view, methods): the endpoint is what the policy and the audit log name.
Route = tuple[str, str, Callable[[ArtifactsServices], Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/manifest", "get_manifest", get_manifest, ("GET",)),
    ("/verify", "verify", verify, ("GET",)),
    ("/signature", "get_signature", get_signature, ("GET",)),
)


def create_artifacts_blueprint(policy: PolicyEngine, engine: Engine,
                               keys: oms.SigningKeys | None = None) -> Blueprint:
    """The blueprint; ``keys`` default to the server's settings, loaded now so that a bad
    signing key stops the server at start (fail closed), not a registration later."""
    keys = keys if keys is not None else oms.server_keys()
    keys.warm()
    if keys.configured:
        signatures.ensure_table(engine)
    api = json_errors(Blueprint("mlflow_share_artifacts", __name__,
                                url_prefix=PREFIX + "/model-versions"))
    services = ArtifactsServices(policy, engine, keys)
    bind_routes(api, ROUTES, services)
    return api
