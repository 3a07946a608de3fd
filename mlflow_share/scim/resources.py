"""SCIM documents ↔ what mlflow-share stores: users, groups (a group is a team and a role),
the attributes a client may ask for or leave out, and a resource's version (its ETag).

A group's ``displayName`` follows the convention of OIDC groups claims (``web/oidc.py``):
``fraud`` makes its members viewers of team ``fraud``, ``fraud:maintainer`` maintainers.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlflow_share.errors import InvalidInput
from mlflow_share.policy.enforcer import ROLES, validate_identifier
from mlflow_share.scim.filters import AttrPath, lookup, parse_attribute
from mlflow_share.scim.protocol import (
    ENTERPRISE_USER_SCHEMA,
    GROUP_SCHEMA,
    USER_SCHEMA,
    InvalidSyntax,
    InvalidValue,
)
from mlflow_share.scim.store import ScimGroup, ScimUser

USER_MULTI_VALUED = frozenset({"schemas", "emails", "phonenumbers", "ims", "photos", "addresses",
                               "groups", "entitlements", "roles", "x509certificates"})
GROUP_MULTI_VALUED = frozenset({"schemas", "members"})
EXTENSIONS = frozenset({ENTERPRISE_USER_SCHEMA.lower()})
MAX_ATTRIBUTES_BYTES = 64 * 1024
MAX_MEMBERS = 100_000
# What a client may send but never sets through the stored attributes: the server's
# (id, meta, groups: a user's groups are the groups' members), the columns of their own
# (userName, active, externalId), and passwords: provisioned users log in through SSO.
_USER_NOT_STORED = frozenset({"schemas", "id", "meta", "username", "active", "externalid",
                              "password", "groups"})


@dataclass(frozen=True)
class UserInput:
    user_name: str
    external_id: str | None
    active: bool | None  # None: not said (a new user is active, an existing one unchanged)
    attributes: dict[str, Any]


@dataclass(frozen=True)
class GroupInput:
    display_name: str
    external_id: str | None
    member_ids: list[str]


def iso_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def etag(document: Mapping[str, Any]) -> str:
    """A weak ETag of the resource as served (without ``meta``): any change changes it,
    whoever made it (an admin disabling the user through the CLI too)."""
    body = {key: value for key, value in document.items() if key != "meta"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return f'W/"{digest[:20]}"'


def _meta(document: dict[str, Any], kind: str, created: int, modified: int,
          location: str) -> dict[str, Any]:
    document["meta"] = {"resourceType": kind, "created": iso_time(created),
                        "lastModified": iso_time(modified), "location": location}
    document["meta"]["version"] = etag(document)
    return document


def user_document(user: ScimUser, base: str) -> dict[str, Any]:
    """The SCIM representation of ``user`` (``base``: the ``.../scim/v2`` URL)."""
    extensions = sorted(key for key, value in user.attributes.items()
                        if key.lower().startswith("urn:") and isinstance(value, dict))
    document: dict[str, Any] = {"schemas": [USER_SCHEMA, *extensions], "id": user.scim_id}
    if user.external_id is not None:
        document["externalId"] = user.external_id
    document["userName"] = user.user_name
    document.update(user.attributes)
    document["active"] = user.active
    if user.groups:
        document["groups"] = [{"value": group_id, "display": name, "type": "direct",
                               "$ref": f"{base}/Groups/{group_id}"}
                              for group_id, name in user.groups]
    return _meta(document, "User", user.created_at, user.updated_at,
                 f"{base}/Users/{user.scim_id}")


def group_document(group: ScimGroup, base: str) -> dict[str, Any]:
    document: dict[str, Any] = {"schemas": [GROUP_SCHEMA], "id": group.scim_id}
    if group.external_id is not None:
        document["externalId"] = group.external_id
    document["displayName"] = group.display_name
    document["members"] = [{"value": user_id, "display": name, "type": "User",
                            "$ref": f"{base}/Users/{user_id}"}
                           for user_id, name in group.members]
    return _meta(document, "Group", group.created_at, group.updated_at,
                 f"{base}/Groups/{group.scim_id}")


# -- what clients send ---------------------------------------------------------------------
def require_schema(document: Mapping[str, Any], schema: str) -> None:
    schemas = lookup(document, "schemas")
    if not isinstance(schemas, list) or schema.lower() not in {
            s.lower() for s in schemas if isinstance(s, str)}:
        raise InvalidSyntax(f"The request's 'schemas' must include {schema!r}.")


def _external_id(document: Mapping[str, Any]) -> str | None:
    value = lookup(document, "externalId")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise InvalidValue("'externalId' must be a string of at most 256 characters.")
    return value


def _boolean(value: Any, name: str) -> bool | None:
    """A boolean, also as the string Azure AD sends in PATCH (``"False"``)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidValue(f"'{name}' must be true or false.")


def parse_user(document: Mapping[str, Any], *, check_schemas: bool = True) -> UserInput:
    """A User from a POST or PUT body (``check_schemas``), or a patched document.

    Raises:
        InvalidSyntax, InvalidValue, InvalidInput: a body that is no valid User (400).
    """
    if check_schemas:
        require_schema(document, USER_SCHEMA)
    user_name = lookup(document, "userName")
    if not isinstance(user_name, str) or not user_name:
        raise InvalidValue("'userName' is required.")
    validate_identifier("user name", user_name)
    attributes = {key: value for key, value in document.items()
                  if key.lower() not in _USER_NOT_STORED}
    for key, value in attributes.items():
        if key.lower().startswith("urn:") and not isinstance(value, dict):
            raise InvalidValue(f"The extension {key!r} must be an object of attributes.")
    if len(json.dumps(attributes)) > MAX_ATTRIBUTES_BYTES:
        raise InvalidValue(f"The user's attributes exceed {MAX_ATTRIBUTES_BYTES} bytes.")
    return UserInput(user_name, _external_id(document),
                     _boolean(lookup(document, "active"), "active"), attributes)


def parse_group(document: Mapping[str, Any], *, check_schemas: bool = True) -> GroupInput:
    """A Group from a POST or PUT body (``check_schemas``), or a patched document.

    Raises:
        InvalidSyntax, InvalidValue: a body that is no valid Group (400).
    """
    if check_schemas:
        require_schema(document, GROUP_SCHEMA)
    display_name = lookup(document, "displayName")
    if not isinstance(display_name, str) or not display_name:
        raise InvalidValue("'displayName' is required.")
    members = lookup(document, "members") or []
    if not isinstance(members, list):
        raise InvalidValue("'members' must be a list.")
    if len(members) > MAX_MEMBERS:
        raise InvalidValue(f"A group has at most {MAX_MEMBERS} members.")
    member_ids: list[str] = []
    for member in members:
        value = lookup(member, "value")
        if not isinstance(value, str) or not value:
            raise InvalidValue("Each member needs the 'value' of a provisioned user's id.")
        kind = lookup(member, "type")
        if kind is not None and (not isinstance(kind, str) or kind.lower() != "user"):
            raise InvalidValue("Members are users: groups in groups are not supported.")
        member_ids.append(value)
    return GroupInput(display_name, _external_id(document), list(dict.fromkeys(member_ids)))


def team_and_role(display_name: str, admin_group: str = "") -> tuple[str, str]:
    """The team and role a group's ``displayName`` names: ``team`` (viewer) or ``team:role``.

    Raises:
        InvalidValue: a name that is no team (or the org admins' SSO group: org admins are
            not provisioned through SCIM).
    """
    if admin_group and display_name == admin_group:
        raise InvalidValue(f"{display_name!r} is the SSO group of org administrators: org "
                           "administrators are not provisioned through SCIM.")
    team, _, role = display_name.partition(":")
    role = role or "viewer"
    if role not in ROLES:
        raise InvalidValue(f"Group {display_name[:200]!r}: the role after ':' must be one of "
                           f"{', '.join(ROLES)}.")
    try:
        validate_identifier("team name", team)
    except InvalidInput as exc:
        raise InvalidValue(f"Group {display_name[:200]!r} names no team: a group is 'team' "
                           f"or 'team:role'. {exc.message}") from None
    return team, role


# -- attributes= and excludedAttributes= ---------------------------------------------------
def attribute_list(value: Any) -> list[AttrPath]:
    """``"a,b.c"`` (a query parameter) or ``["a", "b.c"]`` (a search body)."""
    if value is None or value == "":
        return []
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidValue("Attribute lists are names separated by commas.")
    return [parse_attribute(name) for name in names if name.strip()]


_ALWAYS = frozenset({"id", "schemas"})


def _holder(document: dict[str, Any], path: AttrPath) -> tuple[dict[str, Any] | None, str]:
    """The object holding ``path``'s attribute and its key there."""
    holder: Any = document
    if path.schema is not None and path.schema.lower() not in (USER_SCHEMA.lower(),
                                                                 GROUP_SCHEMA.lower()):
        holder = next((v for k, v in document.items() if k.lower() == path.schema.lower()), None)
    if not isinstance(holder, dict):
        return None, path.name
    key = next((k for k in holder if k.lower() == path.name.lower()), path.name)
    return holder, key


def project(document: dict[str, Any], attributes: list[AttrPath],
            excluded: list[AttrPath]) -> dict[str, Any]:
    """The document with only ``attributes`` (and ``id``, ``schemas``), or without
    ``excluded`` (RFC 7644 §3.9)."""
    if attributes:
        kept: dict[str, Any] = {k: v for k, v in document.items() if k.lower() in _ALWAYS}
        for path in attributes:
            holder, key = _holder(document, path)
            if holder is None or key not in holder:
                continue
            target = kept
            if holder is not document:
                schema_key = next(k for k, v in document.items() if v is holder)
                target = kept.setdefault(schema_key, {})
            value = holder[key]
            if path.sub is None:
                target[key] = copy.deepcopy(value)
            elif isinstance(value, dict):
                sub = lookup(value, path.sub)
                if sub is not None:
                    target.setdefault(key, {})[path.sub] = copy.deepcopy(sub)
            elif isinstance(value, list):
                existing = target.setdefault(key, [{} for _ in value])
                for item, out in zip(value, existing):
                    sub = lookup(item, path.sub)
                    if sub is not None and isinstance(out, dict):
                        out[path.sub] = copy.deepcopy(sub)
        return kept
    if not excluded:
        return document
    trimmed = copy.deepcopy(document)
    for path in excluded:
        holder, key = _holder(trimmed, path)
        if holder is None or (holder is trimmed and key.lower() in _ALWAYS):
            continue
        if path.sub is None:
            holder.pop(key, None)
            continue
        value = holder.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                item.pop(next((k for k in item if k.lower() == path.sub.lower()), path.sub),
                         None)
    return trimmed
