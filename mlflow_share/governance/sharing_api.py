"""``/api/2.0/mlflow-share/``: sharing packages, semantic versions, lineage, diff, discovery
and webhook subscriptions.

Who may do what (decided here; the interceptor has authenticated the caller):
- create or re-validate a package: write on the model; publish or revoke: manage (a
  maintainer of the owner team); show: read on the model, or a target team of a published
  package;
- semantic versions, lineage, diff, subscriptions: read on the model (run details also need
  read on the run's experiment); the deliveries of a model's webhooks: manage;
- search: only models the caller may read are ever considered.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.engine import Engine

from mlflow_share.http import (
    PREFIX,
    current_principal,
    json_body,
    json_errors,
    require_model,
    string_field,
)
from mlflow_share.artifacts import registration
from mlflow_share.artifacts.repository import ChecksumArtifactRepository
from mlflow_share.auth.authorizer import Authorizer
from mlflow_share.directory import EXPERIMENT, MODEL
from mlflow_share.errors import InvalidInput, NotFound, PermissionDenied, Unavailable
from mlflow_share.governance import lineage, notifications, packages
from mlflow_share.governance import versions as semvers
from mlflow_share.policy.enforcer import PolicyEngine

_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>\d{1,9})")


def parse_version_uri(uri: str) -> tuple[str, int]:
    match = _MODEL_URI.fullmatch(uri or "")
    if match is None:
        raise InvalidInput(f"Expected models:/NAME/VERSION, got {uri!r}.")
    return match.group("name"), int(match.group("version"))


def _public(package: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in package.items() if k != "report"}


def create_sharing_blueprint(policy: PolicyEngine, engine: Engine) -> Blueprint:
    api = json_errors(Blueprint("mlflow_share_sharing", __name__, url_prefix=PREFIX))

    def repo() -> ChecksumArtifactRepository:
        found = registration.destination()
        if found is None:
            raise Unavailable("Sharing packages need a checksum+ artifact root (mlflow-share "
                              "server configures one): versions cannot be verified here.")
        return found

    def model(name: str, action: str, version: int | None = None) -> str:
        model_id = require_model(policy, name, action, version)
        if model_id is None:
            raise NotFound(f"Registered model {name!r} has no owner team in mlflow-share.")
        return model_id

    def package_for(package_id: str, action: str) -> dict[str, Any]:
        package = packages.get(engine, package_id)
        if package["model"] is None:
            raise NotFound(f"The model of sharing package {package_id!r} no longer exists.")
        try:
            model(package["model"], action)
        except PermissionDenied:
            principal = current_principal()
            targets = {t["team"] for t in package["teams"]}
            if action != "read" or package["status"] != "published" or \
                    not targets & set(principal.teams):
                raise
        return package

    authorizer = Authorizer(policy)

    def may(model_id: str, action: str) -> bool:
        return authorizer.may(current_principal(), MODEL, model_id, action)

    def readable_models() -> list[str]:
        return [model_id for model_id in policy.model_ids() if may(model_id, "read")]

    def run_visible(experiment_id: str | None) -> bool:
        if experiment_id is None:
            return False
        return authorizer.may(current_principal(), EXPERIMENT, experiment_id, "read")

    # -- packages ------------------------------------------------------------------------------
    @api.post("/packages")
    def create_package() -> Response:
        data = json_body()
        name = string_field(data, "model")
        assert name is not None
        model_id = model(name, "write")
        principal = current_principal()
        draft = packages.parse_draft(engine, data, model=name, model_id=model_id,
                                     created_by=principal.name)
        return jsonify({"package": packages.create(engine, repo(), draft, principal.name)})

    @api.get("/packages")
    def list_packages() -> Response:
        principal = current_principal()
        name, status = request.args.get("model"), request.args.get("status")
        if name:
            ids: list[str] | None = [model(name, "read")]
        elif principal.is_admin:
            ids = None
        else:
            ids = readable_models()
        found = packages.list_packages(engine, model_ids=ids, teams=list(principal.teams),
                                       status=status)
        if name:
            found = [p for p in found if p["model"] == name]
        return jsonify({"packages": [_public(p) for p in found]})

    @api.get("/packages/<package_id>")
    def show_package(package_id: str) -> Response:
        return jsonify({"package": package_for(package_id, "read")})

    @api.post("/packages/<package_id>/validate")
    def validate_package(package_id: str) -> Response:
        package = package_for(package_id, "write")
        return jsonify({"package": packages.validate(engine, repo(), package)})

    @api.post("/packages/<package_id>/publish")
    def publish_package(package_id: str) -> Response:
        package = package_for(package_id, "manage")
        published = packages.publish(engine, repo(), package, current_principal().name)
        notifications.emit(published["model_id"], "package.published", _public(published))
        return jsonify({"package": published})

    @api.post("/packages/<package_id>/revoke")
    def revoke_package(package_id: str) -> Response:
        package = package_for(package_id, "manage")
        revoked = packages.revoke(engine, package, current_principal().name)
        notifications.emit(revoked["model_id"], "package.revoked", _public(revoked))
        return jsonify({"package": _public(revoked)})

    # -- semantic versions ---------------------------------------------------------------------
    @api.get("/semver")
    def list_semvers() -> Response:
        name = request.args.get("model") or ""
        model_id = model(name, "read")
        with engine.connect() as conn:
            published = packages.published_versions(conn, model_id)
        ordered = sorted(published, key=semvers.parse, reverse=True)
        return jsonify({"model": name, "versions": [
            {"semver": s, "version": str(published[s])} for s in ordered]})

    @api.get("/semver/resolve")
    def resolve_semver() -> Response:
        name = request.args.get("model") or ""
        wanted = semvers.parse_range(request.args.get("range"))
        model_id = model(name, "read")
        with engine.connect() as conn:
            published = packages.published_versions(conn, model_id)
        chosen = wanted.newest(published)
        if chosen is None:
            raise NotFound(f"No published version of {name!r} matches {wanted.text!r}.")
        return jsonify({"model": name, "range": wanted.text, "semver": chosen,
                        "version": str(published[chosen])})

    # -- lineage, diff, discovery --------------------------------------------------------------
    @api.get("/lineage")
    def version_lineage() -> Response:
        name, version = parse_version_uri(request.args.get("uri") or "")
        model_id = model(name, "read", version)
        return jsonify(lineage.lineage(engine, name=name, model_id=model_id, version=version,
                                       run_visible=run_visible))

    @api.get("/diff")
    def version_diff() -> Response:
        a = parse_version_uri(request.args.get("a") or "")
        b = parse_version_uri(request.args.get("b") or "")
        model(a[0], "read", a[1])
        model(b[0], "read", b[1])
        return jsonify(lineage.diff(engine, a, b, run_visible))

    @api.get("/models/search")
    def search_models() -> Response:
        args = request.args
        return jsonify({"models": lineage.search(
            engine, readable_models(), run_visible, owner_team=args.get("owner_team"),
            tag=args.get("tag"),
            semver_range=args.get("semver"), metric=args.get("metric"),
            status=args.get("status"))})

    # -- notifications -------------------------------------------------------------------------
    @api.post("/subscriptions")
    def subscribe() -> Response:
        data = json_body()
        name, url = string_field(data, "model"), string_field(data, "url")
        assert name is not None and url is not None
        model_id = model(name, "read")
        principal = current_principal()
        team = string_field(data, "team", required=False)
        if team is not None and team not in principal.teams and not principal.is_admin:
            raise PermissionDenied(f"{principal.name!r} is not a member of team {team!r}.")
        subscriber = f"team:{team}" if team else f"user:{principal.name}"
        return jsonify({"subscription": notifications.subscribe(
            engine, model_id=model_id, subscriber=subscriber, url=url, by=principal.name)})

    @api.get("/subscriptions")
    def list_subscriptions() -> Response:
        name = request.args.get("model") or ""
        model_id = model(name, "read")
        principal = current_principal()
        maintainer = may(model_id, "manage")
        found = notifications.subscriptions(engine, model_id)
        return jsonify({"subscriptions": [
            s if maintainer or s["created_by"] == principal.name else notifications.redacted(s)
            for s in found]})

    @api.delete("/subscriptions")
    def unsubscribe() -> Response:
        data = json_body()
        name, subscription_id = string_field(data, "model"), string_field(data, "id")
        assert name is not None and subscription_id is not None
        model_id = model(name, "read")
        principal = current_principal()
        mine = {s["id"] for s in notifications.subscriptions(engine, model_id)
                if s["created_by"] == principal.name}
        if subscription_id not in mine:
            model(name, "manage")  # someone else's: the model's maintainers only
        notifications.unsubscribe(engine, model_id, subscription_id)
        return jsonify({})

    @api.get("/subscriptions/deliveries")
    def list_deliveries() -> Response:
        name = request.args.get("model") or ""
        return jsonify({"deliveries": notifications.deliveries(engine, model(name, "manage"))})

    return api
