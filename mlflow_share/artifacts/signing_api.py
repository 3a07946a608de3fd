"""``/api/2.0/mlflow-share/signing/...``: the public keys verifiers check signatures with, and
signing the versions registered before a signing key was configured.

``GET keys`` answers anyone, without credentials: public keys are public, and whoever was
handed a model and its ``model.sig`` may not have an account here (compare the key id with
one obtained out of band before trusting it). ``POST sign-existing`` is for org admins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Response, jsonify
from sqlalchemy.engine import Engine

from mlflow_share.artifacts import oms, signing
from mlflow_share.errors import InvalidInput
from mlflow_share.http import PREFIX, bind_routes, current_principal, json_body, json_errors
from mlflow_share.http import require_admin


@dataclass(frozen=True)
class SigningServices:
    """The database holding manifests and signatures, and the server's keys."""

    engine: Engine
    keys: oms.SigningKeys


def list_signing_keys(services: SigningServices) -> Response:
    """Every public key a signature of this server may carry: the current one, then earlier
    ones still trusted (``MLFLOW_SHARE_SIGNING_PUBLIC_KEYS``)."""
    return jsonify({"keys": [key.to_dict() for key in services.keys.public.values()],
                    "current_key_id": services.keys.current})


def sign_existing(services: SigningServices) -> Response:
    """Sign, with the current key, up to ``max_versions`` versions that have no signature by a
    trusted key; page on with ``page_token``."""
    require_admin(current_principal())
    body = json_body()
    limit = body.get("max_versions", 200)
    token = body.get("page_token")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= \
            signing.PAGE_LIMIT:
        raise InvalidInput(f"'max_versions' must be an integer from 1 to {signing.PAGE_LIMIT}.")
    if token is not None and not isinstance(token, str):
        raise InvalidInput("'page_token' must be a string.")
    result = signing.sign_existing(services.engine, services.keys, max_versions=limit,
                                   page_token=token)
    return jsonify({**result.to_dict(), "key_id": services.keys.current})


Route = tuple[str, str, Callable[[SigningServices], Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/keys", "list_signing_keys", list_signing_keys, ("GET",)),
    ("/sign-existing", "sign_existing", sign_existing, ("POST",)),
)


def create_signing_blueprint(engine: Engine, keys: oms.SigningKeys | None = None) -> Blueprint:
    api = json_errors(Blueprint("mlflow_share_signing", __name__, url_prefix=PREFIX + "/signing"))
    bind_routes(api, ROUTES, SigningServices(engine, keys if keys is not None
                                             else oms.server_keys()))
    return api
