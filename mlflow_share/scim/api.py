"""The ``/scim/v2/`` blueprint (RFC 7644): Users, Groups, ServiceProviderConfig,
ResourceTypes and Schemas.

Who may call: the provisioning token (``mlflow-share scim token create``; no other route
accepts it), or an org admin's password or API token; a user's own credentials are 403,
none (or a browser session) 401. The interceptor passes these routes to the blueprint
undecided (``policy/routes.py``) so that every answer, refusals too, is in SCIM's error
schema: ``authenticate`` runs before every view of the blueprint, the fallback route's too.
Each request is an audit event naming the caller (``scim-token:<id>`` or the admin), and
each change an audited write (``scim.store``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from flask import Blueprint, Response, g, request
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from werkzeug.exceptions import InternalServerError

from mlflow_share import config, db
from mlflow_share.audit.log import AUDIT_CONTEXT, note_principal
from mlflow_share.auth.identity import parse_authorization
from mlflow_share.directory import Directory
from mlflow_share.errors import (
    DatabaseUnavailable,
    EndpointNotFound,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PermissionDenied,
    TooLarge,
    Unauthenticated,
)
from mlflow_share.http import Route, bind_routes
from mlflow_share.policy.enforcer import PolicyEngine
from mlflow_share.scim import discovery
from mlflow_share.scim.filters import (
    AttrPath,
    Filter,
    lookup,
    matches,
    parse_filter,
    required_equality,
)
from mlflow_share.scim.patch import apply_patch
from mlflow_share.scim.protocol import (
    CONTENT_TYPE,
    LIST_RESPONSE_SCHEMA,
    PATCH_OP_SCHEMA,
    SEARCH_REQUEST_SCHEMA,
    InvalidFilter,
    InvalidSyntax,
    InvalidValue,
    NotImplementedHere,
    PreconditionFailed,
    Uniqueness,
    error_body,
)
from mlflow_share.scim.resources import (
    EXTENSIONS,
    GROUP_MULTI_VALUED,
    USER_MULTI_VALUED,
    attribute_list,
    group_document,
    parse_group,
    parse_user,
    project,
    require_schema,
    team_and_role,
    user_document,
)
from mlflow_share.scim.store import TOKEN_PREFIX, ScimStore

_logger = logging.getLogger(__name__)
PREFIX = "/scim/v2"
MAX_BODY = 16 * 1024 * 1024  # a group of 100,000 members is ~10 MB
_USER_KEYS = frozenset({"username", "externalid", "id"})
_GROUP_KEYS = frozenset({"displayname", "externalid", "id"})
_ENDPOINTS = frozenset({"Users", "Groups", "ServiceProviderConfig", "ResourceTypes", "Schemas"})


@dataclass(frozen=True)
class ScimServices:
    """The policy engine authenticates org admins; the store holds tokens, users, groups;
    ``admin_group`` is SSO's org-admin group, which SCIM does not provision."""

    policy: PolicyEngine
    store: ScimStore
    admin_group: str


# -- who is calling --------------------------------------------------------------------------
def authenticate(services: ScimServices) -> None:
    """Before every view: the provisioning token, or an org admin's credentials."""
    credentials = parse_authorization(request.headers.get("Authorization"))
    if credentials is None:
        raise Unauthenticated("SCIM requests need the provisioning token "
                              "(Authorization: Bearer ...) or an org admin's credentials.")
    audit = AUDIT_CONTEXT.get()
    if credentials.kind == "bearer" and credentials.secret.startswith(TOKEN_PREFIX):
        token_id = services.store.token_id_of(credentials.secret)
        if token_id is None:
            if audit is not None:  # the id is the token's public part
                audit.extra["claimed"] = "scim-token:" + credentials.secret[
                    len(TOKEN_PREFIX):].split("_", 1)[0][:32]
            raise Unauthenticated("The SCIM token is unknown, revoked or expired.")
        g.scim_caller = f"scim-token:{token_id}"
    else:
        services.policy.refresh()  # a user disabled or a token revoked a moment ago is out
        principal = services.policy.authenticate(credentials, db.now_ms())
        if principal is None:
            if audit is not None and credentials.username:
                audit.extra["claimed"] = credentials.username[:128]
            raise Unauthenticated("Invalid credentials.")
        note_principal(principal.name)
        if not principal.is_admin:
            raise PermissionDenied("/scim/v2/ is for the identity provider's provisioning "
                                   "token and org administrators.")
        g.scim_caller = principal.name
    note_principal(g.scim_caller)


def _caller() -> str:
    caller = g.get("scim_caller")
    if not isinstance(caller, str):  # only if ``authenticate`` were bypassed
        raise Unauthenticated("Authentication required.")
    return caller


# -- requests and responses ------------------------------------------------------------------
def _base() -> str:
    return request.url_root.rstrip("/") + PREFIX


def _document() -> dict[str, Any]:
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise TooLarge(f"SCIM request bodies are at most {MAX_BODY} bytes.")
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise TooLarge(f"SCIM request bodies are at most {MAX_BODY} bytes.")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidSyntax("The request body is not JSON.") from None
    if not isinstance(data, dict):
        raise InvalidSyntax("The request body must be a JSON object.")
    return data


def _respond(body: Any, status: int = 200, *, etag: str | None = None,
             location: str | None = None) -> Response:
    response = Response(json.dumps(body), status=status, content_type=CONTENT_TYPE)
    if etag is not None:
        response.headers["ETag"] = etag
    if location is not None:
        response.headers["Location"] = location
    return response


def _tags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _check_if_match(document: Mapping[str, Any]) -> None:
    """``If-Match``: the change applies to the version the client read, or 412."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return
    if document["meta"]["version"].removeprefix("W/") not in _tags(header):
        raise PreconditionFailed("The resource changed since that version (If-Match); read "
                                 "it again.")


def _resource(document: dict[str, Any], status: int = 200) -> Response:
    """One resource, with its ETag; 304 for a GET whose ``If-None-Match`` names it."""
    version = document["meta"]["version"]
    none_match = request.headers.get("If-None-Match")
    if request.method == "GET" and none_match is not None and (
            none_match.strip() == "*" or version.removeprefix("W/") in _tags(none_match)):
        return Response(status=304, headers={"ETag": version})
    shown = project(document, attribute_list(request.args.get("attributes")),
                    attribute_list(request.args.get("excludedAttributes")))
    return _respond(shown, status, etag=version,
                    location=document["meta"]["location"] if status == 201 else None)


@dataclass(frozen=True)
class _Query:
    filter: Filter | None
    start: int
    count: int
    attributes: list[AttrPath]
    excluded: list[AttrPath]


def _integer(value: Any, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidValue(f"'{name}' must be an integer.")
    try:
        return int(value)
    except ValueError:
        raise InvalidValue(f"'{name}' must be an integer.") from None


def _query(values: Mapping[str, Any]) -> _Query:
    """Filtering and paging (RFC 7644 §3.4.2): a query string's or a search body's."""
    text = lookup(values, "filter")
    if text is not None and not isinstance(text, str):
        raise InvalidFilter("'filter' must be a string.")
    start = max(1, _integer(lookup(values, "startIndex"), "startIndex", 1))
    count = min(discovery.MAX_RESULTS,
                max(0, _integer(lookup(values, "count"), "count", discovery.DEFAULT_COUNT)))
    return _Query(parse_filter(text) if text else None, start, count,
                  attribute_list(lookup(values, "attributes")),
                  attribute_list(lookup(values, "excludedAttributes")))


def _listed(documents: list[dict[str, Any]], query: _Query) -> Response:
    found = [d for d in documents if query.filter is None or matches(query.filter, d)]
    page = found[query.start - 1:query.start - 1 + query.count]
    return _respond({"schemas": [LIST_RESPONSE_SCHEMA], "totalResults": len(found),
                     "startIndex": query.start, "itemsPerPage": len(page),
                     "Resources": [project(d, query.attributes, query.excluded) for d in page]})


def _search_body() -> Mapping[str, Any]:
    body = _document()
    require_schema(body, SEARCH_REQUEST_SCHEMA)
    return body


# -- Users -----------------------------------------------------------------------------------
def _users(services: ScimServices, query: _Query) -> Response:
    where = required_equality(query.filter, _USER_KEYS) if query.filter is not None else None
    base = _base()
    return _listed([user_document(user, base) for user in services.store.users(where=where)],
                   query)


def list_users(services: ScimServices) -> Response:
    return _users(services, _query(request.args.to_dict()))


def search_users(services: ScimServices) -> Response:
    return _users(services, _query(_search_body()))


def get_user(services: ScimServices, user_id: str) -> Response:
    return _resource(user_document(services.store.user(user_id), _base()))


def create_user(services: ScimServices) -> Response:
    data = parse_user(_document())
    user = services.store.create_user(data.user_name, external_id=data.external_id,
                                      attributes=data.attributes, active=data.active,
                                      by=_caller())
    return _resource(user_document(user, _base()), 201)


def _update_user(services: ScimServices, user_id: str, document: Mapping[str, Any], *,
                 check_schemas: bool) -> Response:
    data = parse_user(document, check_schemas=check_schemas)
    user = services.store.update_user(user_id, user_name=data.user_name,
                                      external_id=data.external_id, attributes=data.attributes,
                                      active=data.active, by=_caller())
    return _resource(user_document(user, _base()))


def replace_user(services: ScimServices, user_id: str) -> Response:
    body = _document()
    _check_if_match(user_document(services.store.user(user_id), _base()))
    return _update_user(services, user_id, body, check_schemas=True)


def patch_user(services: ScimServices, user_id: str) -> Response:
    body = _document()
    require_schema(body, PATCH_OP_SCHEMA)
    current = user_document(services.store.user(user_id), _base())
    _check_if_match(current)
    patched = apply_patch(current, lookup(body, "Operations"), multi_valued=USER_MULTI_VALUED,
                          extensions=EXTENSIONS)
    return _update_user(services, user_id, patched, check_schemas=False)


def delete_user(services: ScimServices, user_id: str) -> Response:
    _check_if_match(user_document(services.store.user(user_id), _base()))
    services.store.delete_user(user_id, by=_caller())
    return Response(status=204)


# -- Groups ----------------------------------------------------------------------------------
def _groups(services: ScimServices, query: _Query) -> Response:
    where = required_equality(query.filter, _GROUP_KEYS) if query.filter is not None else None
    base = _base()
    return _listed([group_document(group, base)
                    for group in services.store.groups(where=where)], query)


def list_groups(services: ScimServices) -> Response:
    return _groups(services, _query(request.args.to_dict()))


def search_groups(services: ScimServices) -> Response:
    return _groups(services, _query(_search_body()))


def get_group(services: ScimServices, group_id: str) -> Response:
    return _resource(group_document(services.store.group(group_id), _base()))


def create_group(services: ScimServices) -> Response:
    data = parse_group(_document())
    team, role = team_and_role(data.display_name, services.admin_group)
    group = services.store.create_group(data.display_name, team=team, role=role,
                                        external_id=data.external_id,
                                        member_ids=data.member_ids)
    return _resource(group_document(group, _base()), 201)


def _update_group(services: ScimServices, group_id: str, document: Mapping[str, Any], *,
                  check_schemas: bool) -> Response:
    data = parse_group(document, check_schemas=check_schemas)
    team, role = team_and_role(data.display_name, services.admin_group)
    group = services.store.update_group(group_id, display_name=data.display_name, team=team,
                                        role=role, external_id=data.external_id,
                                        member_ids=data.member_ids)
    return _resource(group_document(group, _base()))


def replace_group(services: ScimServices, group_id: str) -> Response:
    body = _document()
    _check_if_match(group_document(services.store.group(group_id), _base()))
    return _update_group(services, group_id, body, check_schemas=True)


def patch_group(services: ScimServices, group_id: str) -> Response:
    body = _document()
    require_schema(body, PATCH_OP_SCHEMA)
    current = group_document(services.store.group(group_id), _base())
    _check_if_match(current)
    patched = apply_patch(current, lookup(body, "Operations"), multi_valued=GROUP_MULTI_VALUED)
    return _update_group(services, group_id, patched, check_schemas=False)


def delete_group(services: ScimServices, group_id: str) -> Response:
    _check_if_match(group_document(services.store.group(group_id), _base()))
    services.store.delete_group(group_id)
    return Response(status=204)


# -- discovery -------------------------------------------------------------------------------
def _list_of(resources: list[dict[str, Any]]) -> Response:
    return _respond({"schemas": [LIST_RESPONSE_SCHEMA], "totalResults": len(resources),
                     "startIndex": 1, "itemsPerPage": len(resources), "Resources": resources})


def service_provider_config(services: ScimServices) -> Response:
    return _respond(discovery.service_provider_config(_base()))


def resource_types(services: ScimServices) -> Response:
    return _list_of(discovery.resource_types(_base()))


def resource_type(services: ScimServices, name: str) -> Response:
    for found in discovery.resource_types(_base()):
        if found["id"] == name:
            return _respond(found)
    raise NotFound(f"No resource type {name[:100]!r}.")


def schemas(services: ScimServices) -> Response:
    return _list_of(discovery.schemas(_base()))


def schema(services: ScimServices, schema_id: str) -> Response:
    for found in discovery.schemas(_base()):
        if found["id"].lower() == schema_id.lower():
            return _respond(found)
    raise NotFound(f"No schema {schema_id[:200]!r}.")


def elsewhere(services: ScimServices, rest: str) -> Response:
    """Any other path or method under /scim/v2/: SCIM's error, not a bare 404 or 405."""
    head = rest.split("/", 1)[0]
    if head in ("Me", "Bulk"):
        raise NotImplementedHere(f"/scim/v2/{head} is not supported here.")
    if head in _ENDPOINTS and rest.count("/") <= 1:
        raise MethodNotAllowed(f"{request.method} is not allowed on /scim/v2/{rest[:100]}.")
    raise EndpointNotFound(f"No SCIM endpoint /scim/v2/{rest[:100]}.")


# -- errors ----------------------------------------------------------------------------------
def _error(exc: MlflowException) -> Response:
    status, body = error_body(exc)
    response = Response(body, status=status, content_type=CONTENT_TYPE)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="mlflow-share SCIM"'
    return response


def _database_error(exc: SQLAlchemyError) -> Response:
    if isinstance(exc, IntegrityError):  # a concurrent write won the race for a name
        return _error(Uniqueness("A concurrent change conflicts with this one; retry."))
    _logger.exception("mlflow-share SCIM: a database error")
    if isinstance(exc, OperationalError):
        return _error(DatabaseUnavailable("The server cannot reach its database; try again "
                                          "shortly."))
    return _error(InternalError("The request failed on the server."))


def _internal_error(exc: InternalServerError) -> Response:
    return _error(InternalError("The request failed on the server."))


_ALL = ("GET", "POST", "PUT", "PATCH", "DELETE")
ROUTES: tuple[Route, ...] = (
    ("/Users", "list_scim_users", list_users, ("GET",)),
    ("/Users", "create_scim_user", create_user, ("POST",)),
    ("/Users/.search", "search_scim_users", search_users, ("POST",)),
    ("/Users/<user_id>", "get_scim_user", get_user, ("GET",)),
    ("/Users/<user_id>", "replace_scim_user", replace_user, ("PUT",)),
    ("/Users/<user_id>", "patch_scim_user", patch_user, ("PATCH",)),
    ("/Users/<user_id>", "delete_scim_user", delete_user, ("DELETE",)),
    ("/Groups", "list_scim_groups", list_groups, ("GET",)),
    ("/Groups", "create_scim_group", create_group, ("POST",)),
    ("/Groups/.search", "search_scim_groups", search_groups, ("POST",)),
    ("/Groups/<group_id>", "get_scim_group", get_group, ("GET",)),
    ("/Groups/<group_id>", "replace_scim_group", replace_group, ("PUT",)),
    ("/Groups/<group_id>", "patch_scim_group", patch_group, ("PATCH",)),
    ("/Groups/<group_id>", "delete_scim_group", delete_group, ("DELETE",)),
    ("/ServiceProviderConfig", "service_provider_config", service_provider_config, ("GET",)),
    ("/ResourceTypes", "resource_types", resource_types, ("GET",)),
    ("/ResourceTypes/<name>", "resource_type", resource_type, ("GET",)),
    ("/Schemas", "schemas", schemas, ("GET",)),
    ("/Schemas/<schema_id>", "schema", schema, ("GET",)),
    ("/<path:rest>", "elsewhere", elsewhere, _ALL),
)


def create_scim_blueprint(policy: PolicyEngine, directory: Directory) -> Blueprint:
    """The ``/scim/v2/`` routes, authenticated by ``authenticate`` before every view."""
    services = ScimServices(policy, ScimStore(directory.engine, directory),
                            config.options().oidc_admin_group)
    blueprint = Blueprint("mlflow_share_scim", __name__, url_prefix=PREFIX)
    blueprint.before_request(partial(authenticate, services))
    blueprint.register_error_handler(MlflowException, _error)
    blueprint.register_error_handler(SQLAlchemyError, _database_error)
    blueprint.register_error_handler(InternalServerError, _internal_error)
    return bind_routes(blueprint, ROUTES, services)
