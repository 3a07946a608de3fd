"""What ``/scim/v2/`` offers, as RFC 7643 §5–7 describe it: ServiceProviderConfig, the
User and Group resource types, and the schemas of their attributes."""

from __future__ import annotations

from typing import Any

from mlflow_share.scim.protocol import (
    ENTERPRISE_USER_SCHEMA,
    GROUP_SCHEMA,
    RESOURCE_TYPE_SCHEMA,
    SCHEMA_SCHEMA,
    SERVICE_PROVIDER_CONFIG_SCHEMA,
    USER_SCHEMA,
)

MAX_RESULTS = 1000  # resources per page; the default page is DEFAULT_COUNT
DEFAULT_COUNT = 100


def service_provider_config(base: str) -> dict[str, Any]:
    return {
        "schemas": [SERVICE_PROVIDER_CONFIG_SCHEMA],
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": True},
        "authenticationSchemes": [
            {"type": "oauthbearertoken", "name": "Provisioning token", "primary": True,
             "description": "Authorization: Bearer <the token `mlflow-share scim token "
                            "create` prints>; it opens /scim/v2/ and nothing else."},
            {"type": "httpbasic", "name": "Org administrator",
             "description": "An org administrator's password or API token."},
        ],
        "meta": {"resourceType": "ServiceProviderConfig",
                 "location": f"{base}/ServiceProviderConfig"},
    }


def resource_types(base: str) -> list[dict[str, Any]]:
    return [
        {"schemas": [RESOURCE_TYPE_SCHEMA], "id": "User", "name": "User", "endpoint": "/Users",
         "description": "An mlflow-share user (logs in through SSO)", "schema": USER_SCHEMA,
         "schemaExtensions": [{"schema": ENTERPRISE_USER_SCHEMA, "required": False}],
         "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/User"}},
        {"schemas": [RESOURCE_TYPE_SCHEMA], "id": "Group", "name": "Group",
         "endpoint": "/Groups", "schema": GROUP_SCHEMA,
         "description": "A team and role: displayName 'team' (viewer) or 'team:role'",
         "meta": {"resourceType": "ResourceType", "location": f"{base}/ResourceTypes/Group"}},
    ]


def _attribute(name: str, kind: str = "string", *, multi: bool = False,
               required: bool = False, case_exact: bool = False,
               mutability: str = "readWrite", returned: str = "default",
               uniqueness: str = "none", description: str = "",
               sub: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    attribute: dict[str, Any] = {
        "name": name, "type": kind, "multiValued": multi, "description": description,
        "required": required, "caseExact": case_exact, "mutability": mutability,
        "returned": returned, "uniqueness": uniqueness}
    if sub is not None:
        attribute["subAttributes"] = sub
    return attribute


def _multi_complex(name: str, description: str, *extra: dict[str, Any]) -> dict[str, Any]:
    return _attribute(name, "complex", multi=True, description=description, sub=[
        _attribute("value", description=f"The {name} value."),
        _attribute("display", description="A human-readable name."),
        _attribute("type", description="A label such as 'work' or 'home'."),
        _attribute("primary", "boolean", description="The primary value."), *extra])


_NAME_PARTS = ("formatted", "familyName", "givenName", "middleName", "honorificPrefix",
               "honorificSuffix")


def _user_schema() -> dict[str, Any]:
    return {"id": USER_SCHEMA, "name": "User", "description": "User Account", "attributes": [
        _attribute("userName", required=True, mutability="readWrite", uniqueness="server",
                   description="The mlflow-share user name, as SSO names the user "
                               "(letters, digits, . _ @ + -). It cannot change."),
        _attribute("name", "complex", description="The user's name.",
                   sub=[_attribute(part) for part in _NAME_PARTS]),
        *(_attribute(name) for name in ("displayName", "nickName", "title", "userType",
                                        "preferredLanguage", "locale", "timezone")),
        _attribute("profileUrl", "reference"),
        _attribute("active", "boolean", description="false: the user's tokens, sessions and "
                                                    "logins stop at once."),
        _multi_complex("emails", "Email addresses."),
        _multi_complex("phoneNumbers", "Phone numbers."),
        _attribute("groups", "complex", multi=True, mutability="readOnly",
                   description="The groups the user is a member of (set through Groups).",
                   sub=[_attribute("value", mutability="readOnly"),
                        _attribute("$ref", "reference", mutability="readOnly"),
                        _attribute("display", mutability="readOnly"),
                        _attribute("type", mutability="readOnly")]),
    ]}


def _group_schema() -> dict[str, Any]:
    return {"id": GROUP_SCHEMA, "name": "Group", "description": "Group: a team and a role",
            "attributes": [
                _attribute("displayName", required=True, uniqueness="server",
                           description="'team' (members are viewers) or 'team:role' (viewer, "
                                       "engineer, maintainer); the team is created if missing."),
                _attribute("members", "complex", multi=True, description="Provisioned users.",
                           sub=[_attribute("value", mutability="immutable", case_exact=True),
                                _attribute("$ref", "reference", mutability="immutable"),
                                _attribute("display", mutability="readOnly"),
                                _attribute("type", mutability="immutable",
                                           description="'User' (no groups in groups).")]),
            ]}


def _enterprise_schema() -> dict[str, Any]:
    return {"id": ENTERPRISE_USER_SCHEMA, "name": "EnterpriseUser",
            "description": "Enterprise User (stored as sent)", "attributes": [
                *(_attribute(name) for name in ("employeeNumber", "costCenter", "organization",
                                                "division", "department")),
                _attribute("manager", "complex", sub=[_attribute("value"),
                                                      _attribute("$ref", "reference"),
                                                      _attribute("displayName")]),
            ]}


def schemas(base: str) -> list[dict[str, Any]]:
    found = [_user_schema(), _group_schema(), _enterprise_schema()]
    for schema in found:
        schema["schemas"] = [SCHEMA_SCHEMA]
        schema["meta"] = {"resourceType": "Schema", "location": f"{base}/Schemas/{schema['id']}"}
    return found
