"""``/api/2.0/mlflow-share/``: sharing packages, semantic versions, lineage, diff, discovery
and webhook subscriptions.

Who may do what (decided here; the interceptor has authenticated the caller):
- create, re-validate, edit or withdraw a package (the last two only before it is
  published): write on the model; publish or revoke: manage (a maintainer of the owner
  team); show and list: write on the model (its authors see every package of it), or a
  target team of a published package (that package only, never another team's draft);
- package answers carry the caller's ``may_write``/``may_manage`` on the model (what the
  portal offers) and, for a package pinned through an alias, ``alias_version``: where the
  alias points now;
- semantic versions, lineage, diff, subscriptions: read on the model (run details also need
  read on the run's experiment); the deliveries of a model's webhooks: manage;
- search: only models the caller may read are ever considered; a model's
  ``validation_status`` counts unpublished packages only for its writers;
- lineage: the version's unpublished packages only for writers of the model; its other
  consumers (teams, packages) only for its managers, as ``GET .../access`` shows them.

Views are module-level functions of the services they use (``SharingServices``, given first);
``create_sharing_blueprint`` only binds them to their URLs (``ROUTES``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy.engine import Engine

from mlflow_share.http import (
    PREFIX,
    bind_routes,
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


@dataclass(frozen=True)
class SharingServices:
    """What the sharing views work with: the policy engine lists the models and decides
    (through ``authorizer``, one for the blueprint), the engine holds packages, semantic
    versions, lineage and subscriptions."""

    policy: PolicyEngine
    engine: Engine
    authorizer: Authorizer


_MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>\d{1,9})")


def parse_version_uri(uri: str) -> tuple[str, int]:
    match = _MODEL_URI.fullmatch(uri or "")
    if match is None:
        raise InvalidInput(f"Expected models:/NAME/VERSION, got {uri!r}.")
    return match.group("name"), int(match.group("version"))


def _public(package: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in package.items() if k != "report"}


def _for_caller(services: SharingServices, found: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
    """Packages as the caller gets them: with what the caller may do on each one's model
    (``may_write``: edit, validate, withdraw; ``may_manage``: publish, revoke) and where an
    alias they were pinned through points now."""
    rights: dict[str, tuple[bool, bool]] = {}
    for package in found:
        model_id = package["model_id"]
        if model_id not in rights:
            rights[model_id] = (package["model"] is not None and
                                _may(services.authorizer, model_id, "write"),
                                package["model"] is not None and
                                _may(services.authorizer, model_id, "manage"))
        package["may_write"], package["may_manage"] = rights[model_id]
    return packages.with_alias_now(services.engine, found)


def _answer(services: SharingServices, package: dict[str, Any]) -> Response:
    return jsonify({"package": _for_caller(services, [package])[0]})


# -- decisions ---------------------------------------------------------------------------------
def _repo() -> ChecksumArtifactRepository:
    found = registration.destination()
    if found is None:
        raise Unavailable("Sharing packages need a checksum+ artifact root (mlflow-share "
                          "server configures one): versions cannot be verified here.")
    return found


def _model(policy: PolicyEngine, name: str, action: str, version: int | None = None) -> str:
    model_id = require_model(policy, name, action, version)
    if model_id is None:
        raise NotFound(f"Registered model {name!r} has no owner team in mlflow-share.")
    return model_id


def _package_for(services: SharingServices, package_id: str, action: str) -> dict[str, Any]:
    """The package, for its authors (``write`` on the model: reading it too) and, once
    published, for the teams it targets (reading only)."""
    package = packages.get(services.engine, package_id)
    if package["model"] is None:
        raise NotFound(f"The model of sharing package {package_id!r} no longer exists.")
    try:
        _model(services.policy, package["model"], "write" if action == "read" else action)
    except PermissionDenied:
        principal = current_principal()
        targets = {t["team"] for t in package["teams"]}
        if action != "read" or package["status"] != "published" or \
                not targets & set(principal.teams):
            raise
    return package


def _may(authorizer: Authorizer, model_id: str, action: str) -> bool:
    return authorizer.may(current_principal(), MODEL, model_id, action)


def _readable_models(services: SharingServices) -> list[str]:
    return [model_id for model_id in services.policy.model_ids()
            if _may(services.authorizer, model_id, "read")]


def _authored_models(services: SharingServices) -> list[str]:
    return [model_id for model_id in services.policy.model_ids()
            if _may(services.authorizer, model_id, "write")]


def _run_visible(authorizer: Authorizer, experiment_id: str | None) -> bool:
    if experiment_id is None:
        return False
    return authorizer.may(current_principal(), EXPERIMENT, experiment_id, "read")


def _runs_visible(services: SharingServices) -> Callable[[str | None], bool]:
    """Whether the caller may see the run details of an experiment (lineage asks per run)."""
    return partial(_run_visible, services.authorizer)


# -- packages ----------------------------------------------------------------------------------
def create_package(services: SharingServices) -> Response:
    data = json_body()
    name = string_field(data, "model")
    assert name is not None
    model_id = _model(services.policy, name, "write")
    principal = current_principal()
    draft = packages.parse_draft(services.engine, data, model=name, model_id=model_id,
                                 created_by=principal.name)
    return _answer(services, packages.create(services.engine, _repo(), draft, principal.name))


def list_packages(services: SharingServices) -> Response:
    principal = current_principal()
    name, status = request.args.get("model"), request.args.get("status")
    # Every package of the models the caller writes (it authors them); of the others, only
    # the published ones shared with the caller's teams, never another team's draft.
    if name:
        model_id = _model(services.policy, name, "read")
        ids: list[str] | None = [model_id] if _may(services.authorizer, model_id,
                                                   "write") else []
    elif principal.is_admin:
        ids = None
    else:
        ids = _authored_models(services)
    found = packages.list_packages(services.engine, model_ids=ids, teams=list(principal.teams),
                                   status=status)
    if name:
        found = [p for p in found if p["model"] == name]
    return jsonify({"packages": _for_caller(services, [_public(p) for p in found])})


def show_package(services: SharingServices, package_id: str) -> Response:
    return _answer(services, _package_for(services, package_id, "read"))


def validate_package(services: SharingServices, package_id: str) -> Response:
    package = _package_for(services, package_id, "write")
    return _answer(services, packages.validate(services.engine, _repo(), package))


def edit_package(services: SharingServices, package_id: str) -> Response:
    """Change a package that is not published yet (what ``create`` takes; fields left out
    stay, ``null`` clears an optional one), then validate it again."""
    package = _package_for(services, package_id, "write")
    draft = packages.parse_edit(services.engine, package, json_body())
    return _answer(services, packages.edit(services.engine, _repo(), package, draft))


def withdraw_package(services: SharingServices, package_id: str) -> Response:
    """Delete a package that is not published yet (the audit log keeps its record)."""
    package = _package_for(services, package_id, "write")
    packages.withdraw(services.engine, package)
    return jsonify({"withdrawn": package["id"]})


def publish_package(services: SharingServices, package_id: str) -> Response:
    package = _package_for(services, package_id, "manage")
    published = packages.publish(services.engine, _repo(), package, current_principal().name)
    notifications.emit(published["model_id"], "package.published", _public(published))
    return _answer(services, published)


def revoke_package(services: SharingServices, package_id: str) -> Response:
    package = _package_for(services, package_id, "manage")
    revoked = packages.revoke(services.engine, package, current_principal().name)
    notifications.emit(revoked["model_id"], "package.revoked", _public(revoked))
    return _answer(services, _public(revoked))


# -- semantic versions -------------------------------------------------------------------------
def list_semvers(services: SharingServices) -> Response:
    name = request.args.get("model") or ""
    model_id = _model(services.policy, name, "read")
    with services.engine.connect() as conn:
        published = packages.published_versions(conn, model_id)
    ordered = sorted(published, key=semvers.parse, reverse=True)
    return jsonify({"model": name, "versions": [
        {"semver": s, "version": str(published[s])} for s in ordered]})


def resolve_semver(services: SharingServices) -> Response:
    name = request.args.get("model") or ""
    wanted = semvers.parse_range(request.args.get("range"))
    model_id = _model(services.policy, name, "read")
    with services.engine.connect() as conn:
        published = packages.published_versions(conn, model_id)
    chosen = wanted.newest(published)
    if chosen is None:
        raise NotFound(f"No published version of {name!r} matches {wanted.text!r}.")
    return jsonify({"model": name, "range": wanted.text, "semver": chosen,
                    "version": str(published[chosen])})


# -- lineage, diff, discovery ------------------------------------------------------------------
def version_lineage(services: SharingServices) -> Response:
    name, version = parse_version_uri(request.args.get("uri") or "")
    model_id = _model(services.policy, name, "read", version)
    found = lineage.lineage(services.engine, name=name, model_id=model_id, version=version,
                            run_visible=_runs_visible(services))
    principal = current_principal()
    if not _may(services.authorizer, model_id, "write"):
        # A reader sees the packages published to one of its teams, never a draft.
        found["packages"] = [p for p in found["packages"] if p["status"] == "published" and
                             {t["team"] for t in p["teams"]} & set(principal.teams)]
    if not _may(services.authorizer, model_id, "manage"):
        # Its own routes, not the other consumers (as GET .../access shows them).
        found["consuming_teams"] = [t for t in found["consuming_teams"]
                                    if t["team"] in principal.teams]
    return jsonify(found)


def version_diff(services: SharingServices) -> Response:
    a = parse_version_uri(request.args.get("a") or "")
    b = parse_version_uri(request.args.get("b") or "")
    _model(services.policy, a[0], "read", a[1])
    _model(services.policy, b[0], "read", b[1])
    return jsonify(lineage.diff(services.engine, a, b, _runs_visible(services)))


def search_models(services: SharingServices) -> Response:
    args = request.args
    status = args.get("status") or None
    found = lineage.search(
        services.engine, _readable_models(services), _runs_visible(services),
        owner_team=args.get("owner_team"), tag=args.get("tag"),
        semver_range=args.get("semver"), metric=args.get("metric"))
    shown = []
    for model in found:
        model_id = services.policy.model_id(model["name"])
        model["may_write"] = model_id is not None and _may(services.authorizer, model_id,
                                                           "write")
        model["may_manage"] = model_id is not None and _may(services.authorizer, model_id,
                                                            "manage")
        if not model["may_write"] and model["validation_status"] != "published":
            model["validation_status"] = "none"  # another team's drafts are not news
        if status is None or model["validation_status"] == status:
            shown.append(model)
    return jsonify({"models": shown})


# -- notifications -----------------------------------------------------------------------------
def subscribe(services: SharingServices) -> Response:
    data = json_body()
    name, url = string_field(data, "model"), string_field(data, "url")
    assert name is not None and url is not None
    model_id = _model(services.policy, name, "read")
    principal = current_principal()
    team = string_field(data, "team", required=False)
    if team is not None and team not in principal.teams and not principal.is_admin:
        raise PermissionDenied(f"{principal.name!r} is not a member of team {team!r}.")
    subscriber = f"team:{team}" if team else f"user:{principal.name}"
    return jsonify({"subscription": notifications.subscribe(
        services.engine, model_id=model_id, subscriber=subscriber, url=url, by=principal.name)})


def list_subscriptions(services: SharingServices) -> Response:
    name = request.args.get("model") or ""
    model_id = _model(services.policy, name, "read")
    principal = current_principal()
    maintainer = _may(services.authorizer, model_id, "manage")
    found = notifications.subscriptions(services.engine, model_id)
    return jsonify({"subscriptions": [
        s if maintainer or s["created_by"] == principal.name else notifications.redacted(s)
        for s in found]})


def unsubscribe(services: SharingServices) -> Response:
    data = json_body()
    name, subscription_id = string_field(data, "model"), string_field(data, "id")
    assert name is not None and subscription_id is not None
    model_id = _model(services.policy, name, "read")
    principal = current_principal()
    mine = {s["id"] for s in notifications.subscriptions(services.engine, model_id)
            if s["created_by"] == principal.name}
    if subscription_id not in mine:
        _model(services.policy, name, "manage")  # someone else's: the model's maintainers only
    notifications.unsubscribe(services.engine, model_id, subscription_id)
    return jsonify({})


def list_deliveries(services: SharingServices) -> Response:
    name = request.args.get("model") or ""
    return jsonify({"deliveries": notifications.deliveries(
        services.engine, _model(services.policy, name, "manage"))})


# (rule, endpoint, view, methods): the endpoint is what the policy and the audit log
# name (``flask:mlflow_share_sharing.<endpoint>``), as they did when the views were closures.
Route = tuple[str, str, Callable[..., Response], tuple[str, ...]]
ROUTES: tuple[Route, ...] = (
    ("/packages", "create_package", create_package, ("POST",)),
    ("/packages", "list_packages", list_packages, ("GET",)),
    ("/packages/<package_id>", "show_package", show_package, ("GET",)),
    ("/packages/<package_id>", "edit_package", edit_package, ("PATCH",)),
    ("/packages/<package_id>", "withdraw_package", withdraw_package, ("DELETE",)),
    ("/packages/<package_id>/validate", "validate_package", validate_package, ("POST",)),
    ("/packages/<package_id>/publish", "publish_package", publish_package, ("POST",)),
    ("/packages/<package_id>/revoke", "revoke_package", revoke_package, ("POST",)),
    ("/semver", "list_semvers", list_semvers, ("GET",)),
    ("/semver/resolve", "resolve_semver", resolve_semver, ("GET",)),
    ("/lineage", "version_lineage", version_lineage, ("GET",)),
    ("/diff", "version_diff", version_diff, ("GET",)),
    ("/models/search", "search_models", search_models, ("GET",)),
    ("/subscriptions", "subscribe", subscribe, ("POST",)),
    ("/subscriptions", "list_subscriptions", list_subscriptions, ("GET",)),
    ("/subscriptions", "unsubscribe", unsubscribe, ("DELETE",)),
    ("/subscriptions/deliveries", "list_deliveries", list_deliveries, ("GET",)),
)


def create_sharing_blueprint(policy: PolicyEngine, engine: Engine) -> Blueprint:
    """The sharing API: every view of ``ROUTES``, bound to ``policy`` and ``engine``."""
    api = json_errors(Blueprint("mlflow_share_sharing", __name__, url_prefix=PREFIX))
    services = SharingServices(policy, engine, Authorizer(policy))
    bind_routes(api, ROUTES, services)
    return api
