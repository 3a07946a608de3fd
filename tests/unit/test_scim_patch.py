"""SCIM PATCH (RFC 7644 §3.5.2) as Azure AD and Okta send it, the group-name convention
(team and role), the documents a client sends, and attribute selection."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from mlflow_share.errors import InvalidInput
from mlflow_share.scim.patch import apply_patch
from mlflow_share.scim.protocol import (
    ENTERPRISE_USER_SCHEMA,
    GROUP_SCHEMA,
    USER_SCHEMA,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    NoTarget,
)
from mlflow_share.scim.resources import (
    EXTENSIONS,
    GROUP_MULTI_VALUED,
    USER_MULTI_VALUED,
    attribute_list,
    parse_group,
    parse_user,
    project,
    team_and_role,
)

USER: dict[str, Any] = {
    "schemas": [USER_SCHEMA], "id": "u1", "userName": "bjensen", "active": True,
    "name": {"givenName": "Barbara", "familyName": "Jensen"},
    "emails": [{"value": "bjensen@example.com", "type": "work", "primary": True}],
}
GROUP: dict[str, Any] = {
    "schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "fraud:maintainer",
    "members": [{"value": "u1", "display": "bjensen"}, {"value": "u2", "display": "ann"}],
}


def _user(*operations: dict[str, Any]) -> dict[str, Any]:
    return apply_patch(USER, list(operations), multi_valued=USER_MULTI_VALUED,
                       extensions=EXTENSIONS)


def _group(*operations: dict[str, Any]) -> dict[str, Any]:
    return apply_patch(GROUP, list(operations), multi_valued=GROUP_MULTI_VALUED)


def _members(document: dict[str, Any]) -> list[str]:
    return [m["value"] for m in document["members"]]


def test_the_document_given_is_not_changed() -> None:
    before = copy.deepcopy(USER)
    _user({"op": "replace", "path": "name.givenName", "value": "Babs"})
    assert USER == before


def test_azure_ad_user_operations() -> None:
    patched = _user({"op": "Replace", "path": "active", "value": "False"},
                    {"op": "Add", "path": 'emails[type eq "home"].value', "value": "b@home.org"},
                    {"op": "Replace", "path": 'emails[type eq "work"].value',
                     "value": "barbara@example.com"},
                    {"op": "Add", "path": f"{ENTERPRISE_USER_SCHEMA}:employeeNumber",
                     "value": "701984"},
                    {"op": "Replace", "path": "name.familyName", "value": "Jensen-Smith"})
    assert patched["active"] == "False"  # parse_user reads it as false
    assert parse_user(patched, check_schemas=False).active is False
    assert patched["emails"] == [
        {"value": "barbara@example.com", "type": "work", "primary": True},
        {"type": "home", "value": "b@home.org"}]
    assert patched[ENTERPRISE_USER_SCHEMA] == {"employeeNumber": "701984"}
    assert patched["name"] == {"givenName": "Barbara", "familyName": "Jensen-Smith"}


def test_okta_replace_without_path() -> None:
    patched = _user({"op": "replace", "value": {"id": "u1", "active": False,
                                                "name": {"givenName": "Babs"},
                                                ENTERPRISE_USER_SCHEMA: {"department": "Risk"}}})
    assert patched["active"] is False
    assert patched["name"] == {"givenName": "Babs", "familyName": "Jensen"}  # merged
    assert patched[ENTERPRISE_USER_SCHEMA] == {"department": "Risk"}


def test_attribute_names_are_case_insensitive() -> None:
    patched = _user({"op": "replace", "path": "NAME.GIVENNAME", "value": "Babs"},
                    {"op": "replace", "path": "Active", "value": False})
    assert patched["name"]["givenName"] == "Babs" and patched["active"] is False
    assert "Active" not in patched and "GIVENNAME" not in patched["name"]


def test_remove() -> None:
    assert "name" not in _user({"op": "remove", "path": "name"})
    assert _user({"op": "remove", "path": "name.givenName"})["name"] == {"familyName": "Jensen"}
    assert _user({"op": "remove", "path": 'emails[type eq "work"]'})["emails"] == []
    assert _user({"op": "remove", "path": "nickName"}) == USER  # nothing there: done
    with pytest.raises(NoTarget):
        _user({"op": "remove"})


def test_group_members_as_azure_ad_and_okta_send_them() -> None:
    added = _group({"op": "Add", "path": "members", "value": [{"value": "u3"}, {"value": "u1"}]})
    assert _members(added) == ["u1", "u2", "u3"]  # u1 is not added twice
    removed = _group({"op": "Remove", "path": 'members[value eq "u1"]'})
    assert _members(removed) == ["u2"]
    removed = _group({"op": "Remove", "path": "members", "value": [{"value": "u2"}]})
    assert _members(removed) == ["u1"]
    replaced = _group({"op": "replace", "path": "members", "value": [{"value": "u9"}]})
    assert _members(replaced) == ["u9"]
    emptied = _group({"op": "remove", "path": "members"})
    assert "members" not in emptied and parse_group(emptied, check_schemas=False).member_ids == []
    renamed = _group({"op": "replace", "value": {"id": "g1", "displayName": "fraud"}})
    assert renamed["displayName"] == "fraud"
    assert _members(_group({"op": "remove", "path": 'members[value eq "nobody"]'})) == [
        "u1", "u2"]  # removing a member that is not one: done


@pytest.mark.parametrize("operations, error", [
    ([], InvalidSyntax),
    ("add", InvalidSyntax),
    ([{"op": "move", "path": "active"}], InvalidSyntax),
    (["add"], InvalidSyntax),
    ([{"op": "add", "path": "active"}], InvalidValue),  # no value
    ([{"op": "add", "value": "x"}], InvalidValue),  # no path: an object of attributes
    ([{"op": "add", "path": 7, "value": "x"}], InvalidPath),
    ([{"op": "add", "path": "emails[", "value": "x"}], InvalidPath),
    ([{"op": "replace", "path": 'emails[type co "xyz"].value', "value": "x"}], NoTarget),
    ([{"op": "replace", "path": 'name[givenName eq "x"]', "value": "x"}], InvalidPath),
    ([{"op": "add", "path": "emails.value", "value": "x"}], InvalidPath),
])
def test_malformed_operations(operations: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        apply_patch(USER, operations, multi_valued=USER_MULTI_VALUED)


def test_team_and_role_follow_the_oidc_groups_convention() -> None:
    assert team_and_role("fraud") == ("fraud", "viewer")
    assert team_and_role("fraud:maintainer") == ("fraud", "maintainer")
    assert team_and_role("fraud:engineer") == ("fraud", "engineer")
    assert team_and_role("fraud:") == ("fraud", "viewer")  # as an OIDC groups claim reads it
    for name in ("fraud:owner", "All Employees", "/fraud", "org", "admin:maintainer", ":viewer",
                 "a" * 200):
        with pytest.raises(InvalidValue):
            team_and_role(name)
    with pytest.raises(InvalidValue, match="org administrators are not provisioned"):
        team_and_role("mlflow-admins", admin_group="mlflow-admins")


def test_documents_clients_send() -> None:
    user = parse_user({"schemas": [USER_SCHEMA], "userName": "bjensen@example.com",
                       "externalId": "x1", "active": "true", "password": "s3cret!",
                       "groups": [{"value": "g1"}], "id": "mine", "displayName": "Babs"})
    assert (user.user_name, user.external_id, user.active) == ("bjensen@example.com", "x1", True)
    assert user.attributes == {"displayName": "Babs"}  # never the password, id, groups
    assert parse_user({"schemas": [USER_SCHEMA], "userName": "a"}).active is None
    for bad in ({"userName": "a"}, {"schemas": [GROUP_SCHEMA], "userName": "a"}):
        with pytest.raises(InvalidSyntax):
            parse_user(bad)
    for bad in ({"schemas": [USER_SCHEMA]}, {"schemas": [USER_SCHEMA], "userName": 7},
                {"schemas": [USER_SCHEMA], "userName": "a", "active": "maybe"},
                {"schemas": [USER_SCHEMA], "userName": "a", "externalId": 5},
                {"schemas": [USER_SCHEMA], "userName": "a", ENTERPRISE_USER_SCHEMA: "x"},
                {"schemas": [USER_SCHEMA], "userName": "a", "title": "x" * 70_000}):
        with pytest.raises(InvalidValue):
            parse_user(bad)
    with pytest.raises(InvalidInput, match="Invalid user name"):
        parse_user({"schemas": [USER_SCHEMA], "userName": "two words"})
    group = parse_group({"schemas": [GROUP_SCHEMA], "displayName": "fraud",
                         "members": [{"value": "u1", "type": "User"}, {"value": "u1"}]})
    assert group.member_ids == ["u1"]
    for bad in ({"schemas": [GROUP_SCHEMA]},
                {"schemas": [GROUP_SCHEMA], "displayName": "x", "members": {"value": "u1"}},
                {"schemas": [GROUP_SCHEMA], "displayName": "x", "members": [{"display": "a"}]},
                {"schemas": [GROUP_SCHEMA], "displayName": "x",
                 "members": [{"value": "g2", "type": "Group"}]}):
        with pytest.raises(InvalidValue):
            parse_group(bad)


def test_attributes_and_excluded_attributes() -> None:
    document = {**USER, ENTERPRISE_USER_SCHEMA: {"department": "Risk", "costCenter": "7"}}
    shown = project(document, attribute_list("userName,name.givenName,emails.value,"
                                             f"{ENTERPRISE_USER_SCHEMA}:department"), [])
    assert shown == {"schemas": [USER_SCHEMA], "id": "u1", "userName": "bjensen",
                     "name": {"givenName": "Barbara"},
                     "emails": [{"value": "bjensen@example.com"}],
                     ENTERPRISE_USER_SCHEMA: {"department": "Risk"}}
    trimmed = project(document, [], attribute_list("emails,name.familyName,id"))
    assert "emails" not in trimmed and trimmed["name"] == {"givenName": "Barbara"}
    assert trimmed["id"] == "u1"  # always returned
    assert project(GROUP, [], attribute_list(["members"])) == {
        "schemas": [GROUP_SCHEMA], "id": "g1", "displayName": "fraud:maintainer"}
    with pytest.raises(InvalidPath):
        attribute_list("name..x")
