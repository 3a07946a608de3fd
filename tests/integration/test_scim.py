"""SCIM 2.0 provisioning against a real server, driven as an identity provider drives it
(plain ``requests``, the bodies of RFC 7644's examples and Azure AD's and Okta's shapes), with
the effect checked through mlflow-share's API and the stock MLflow client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.conftest import ADMIN_PASSWORD, ShareServer, free_port, running_server

pytestmark = pytest.mark.integration

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
BIN = Path(sys.executable).parent


class ScimClient:
    """An identity provider's side of /scim/v2/: one bearer token, SCIM's media type."""

    def __init__(self, url: str, token: str | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        self.base = url + "/scim/v2"
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/scim+json"
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.auth = auth

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any
             ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if body is not None:
            headers["Content-Type"] = "application/scim+json"
        return self.session.request(method, self.base + path, json=body, headers=headers,
                                    timeout=60, **kwargs)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200,
           **kwargs: Any) -> dict[str, Any]:
        response = self.call(method, path, body, **kwargs)
        assert response.status_code == status, response.text
        if status == 204:
            return {}
        assert response.headers["Content-Type"].startswith("application/scim+json")
        return dict(response.json())

    def create_user(self, name: str, **extra: Any) -> dict[str, Any]:
        return self.ok("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": name, **extra},
                       201)

    def patch(self, path: str, *operations: dict[str, Any], status: int = 200,
              **kwargs: Any) -> dict[str, Any]:
        return self.ok("PATCH", path, {"schemas": [PATCH_OP], "Operations": list(operations)},
                       status, **kwargs)

    def find(self, kind: str, scim_filter: str, **params: Any) -> dict[str, Any]:
        return self.ok("GET", f"/{kind}", params={"filter": scim_filter, **params})


def scim_error(response: requests.Response, status: int, scim_type: str | None = None) -> str:
    """Assert an error in SCIM's error schema; return its detail."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/scim+json")
    body = response.json()
    assert body["schemas"] == [ERROR] and body["status"] == str(status)
    assert body.get("scimType") == scim_type, body
    return str(body["detail"])


def new_scim_token(server: ShareServer, description: str = "tests") -> str:
    return str(server.admin("POST", "/scim/tokens", json={"description": description})
               .json()["token"])


@pytest.fixture(scope="module")
def scim(share_server: ShareServer) -> ScimClient:
    return ScimClient(share_server.url, new_scim_token(share_server))


def _token_for(server: ShareServer, user: str) -> str:
    """An API token for a provisioned user (no password: an admin issues it)."""
    token = str(server.admin("POST", "/tokens", json={"user": user}).json()["token"])
    server.tokens[user] = token
    return token


def _members(server: ShareServer, team: str) -> dict[str, str]:
    teams = server.admin("GET", "/teams").json()["teams"]
    return {m["user"]: m["role"] for t in teams if t["name"] == team for m in t["members"]}


def _code(call: Callable[[], Any]) -> str:
    try:
        call()
    except MlflowException as exc:
        return str(exc.error_code)
    return "OK"


def test_every_scim_route_has_its_own_rule() -> None:
    """Not the default rule of mlflow-share's endpoints: the protocol's routes authenticate
    in the blueprint (a refusal in SCIM's schema), token administration is admins'."""
    from mlflow_share.policy.routes import ADMIN, FLASK_RULES, Resolver
    from mlflow_share.scim import admin, api

    for _rule, endpoint, _view, _methods in api.ROUTES:
        assert FLASK_RULES[f"mlflow_share_scim.{endpoint}"].resolver is Resolver.LOGIN
    for _rule, endpoint, _view, _methods in admin.ROUTES:
        assert FLASK_RULES[f"mlflow_share_scim_admin.{endpoint}"] == ADMIN


def test_discovery(scim: ScimClient) -> None:
    config = scim.ok("GET", "/ServiceProviderConfig")
    assert config["patch"]["supported"] and config["filter"]["supported"]
    assert not config["bulk"]["supported"] and config["etag"]["supported"]
    assert config["authenticationSchemes"][0]["type"] == "oauthbearertoken"
    types = scim.ok("GET", "/ResourceTypes")
    assert types["schemas"] == [LIST]
    assert {t["id"]: t["endpoint"] for t in types["Resources"]} == {"User": "/Users",
                                                                     "Group": "/Groups"}
    assert scim.ok("GET", "/ResourceTypes/User")["schema"] == USER_SCHEMA
    schemas = {s["id"] for s in scim.ok("GET", "/Schemas")["Resources"]}
    assert schemas == {USER_SCHEMA, GROUP_SCHEMA, ENTERPRISE}
    user_schema = scim.ok("GET", f"/Schemas/{USER_SCHEMA}")
    assert "userName" in {a["name"] for a in user_schema["attributes"]}
    scim_error(scim.call("GET", "/Schemas/urn:nothing"), 404)
    scim_error(scim.call("GET", "/Me"), 501)
    scim_error(scim.call("POST", "/Bulk", {}), 501)
    scim_error(scim.call("GET", "/Nothing"), 404)
    scim_error(scim.call("DELETE", "/Users"), 405)


def test_user_lifecycle(share_server: ShareServer, scim: ScimClient, as_user: Any,
                        unique: str) -> None:
    name = f"bjensen-{unique}@example.com"
    # RFC 7643 §8.2's full user (less what the server sets), with Azure AD's externalId.
    created = scim.ok("POST", "/Users", {
        "schemas": [USER_SCHEMA, ENTERPRISE], "externalId": f"ext-{unique}", "userName": name,
        "name": {"formatted": "Ms. Barbara J Jensen, III", "familyName": "Jensen",
                 "givenName": "Barbara", "middleName": "Jane", "honorificPrefix": "Ms.",
                 "honorificSuffix": "III"},
        "displayName": "Babs Jensen", "nickName": "Babs", "userType": "Employee",
        "title": "Tour Guide", "preferredLanguage": "en-US", "locale": "en-US",
        "timezone": "America/Los_Angeles", "active": True, "password": "t1meMa$heen",
        "emails": [{"value": name, "type": "work", "primary": True},
                   {"value": f"babs-{unique}@jensen.org", "type": "home"}],
        ENTERPRISE: {"employeeNumber": "701984", "department": "Tour Operations"},
    }, 201)
    user_id = created["id"]
    response = scim.call("GET", f"/Users/{user_id}")
    assert response.headers["ETag"] == created["meta"]["version"]
    fetched = response.json()
    assert fetched == created
    assert fetched["schemas"] == [USER_SCHEMA, ENTERPRISE]
    assert fetched["active"] is True and "password" not in fetched
    assert fetched["meta"]["location"].endswith(f"/scim/v2/Users/{user_id}")
    assert fetched[ENTERPRISE]["employeeNumber"] == "701984"
    assert scim.call("GET", f"/Users/{user_id}",
                     headers={"If-None-Match": created["meta"]["version"]}).status_code == 304
    # mlflow-share knows the user: no password, not a service account.
    users = {u["name"]: u for u in share_server.admin("GET", "/users").json()["users"]}
    assert not users[name]["is_service_account"] and users[name]["disabled_at"] is None

    # Filters: userName is not case-exact; externalId is.
    found = scim.find("Users", f'userName eq "{name.upper()}"')
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == user_id
    assert scim.find("Users", f'externalId eq "ext-{unique}"')["totalResults"] == 1
    assert scim.find("Users", f'externalId eq "EXT-{unique}"')["totalResults"] == 0
    assert scim.find("Users", f'userName sw "bjensen-{unique}" and title pr')["totalResults"] == 1
    assert scim.find("Users", f'emails[type eq "home" and value co "babs-{unique}"] or '
                              'userName eq "nobody-at-all"')["totalResults"] == 1
    assert scim.find("Users", f'userName eq "{name}" and not (active eq true)')[
        "totalResults"] == 0
    only = scim.find("Users", f'userName eq "{name}"', attributes="userName,emails.value")
    assert only["Resources"][0] == {"schemas": [USER_SCHEMA, ENTERPRISE], "id": user_id,
                                    "userName": name,
                                    "emails": [{"value": name},
                                               {"value": f"babs-{unique}@jensen.org"}]}

    # PUT replaces the attributes; the name cannot change.
    replaced = scim.ok("PUT", f"/Users/{user_id}", {
        "schemas": [USER_SCHEMA], "id": user_id, "userName": name, "externalId": f"ext-{unique}",
        "name": {"givenName": "Barbara", "familyName": "Jensen-Smith"},
        "emails": [{"value": name, "type": "work", "primary": True}]})
    assert replaced["name"] == {"givenName": "Barbara", "familyName": "Jensen-Smith"}
    assert "title" not in replaced and ENTERPRISE not in replaced and replaced["active"]
    assert replaced["meta"]["version"] != created["meta"]["version"]
    renamed = scim.call("PUT", f"/Users/{user_id}", {"schemas": [USER_SCHEMA],
                                                      "userName": f"other-{unique}"})
    assert "userName cannot change" in scim_error(renamed, 400, "mutability")
    scim_error(scim.call("PATCH", f"/Users/{user_id}", {
        "schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "userName",
                                               "value": f"other-{unique}"}]}), 400, "mutability")
    # If-Match: only the version the client read.
    stale = scim.call("PATCH", f"/Users/{user_id}", {
        "schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "title", "value": "x"}]},
        headers={"If-Match": created["meta"]["version"]})
    scim_error(stale, 412)
    titled = scim.patch(f"/Users/{user_id}",
                        {"op": "add", "path": "title", "value": "Guide"},
                        {"op": "Add", "path": 'emails[type eq "home"].value',
                         "value": f"babs-{unique}@jensen.org"},
                        headers={"If-Match": replaced["meta"]["version"]})
    assert titled["title"] == "Guide" and len(titled["emails"]) == 2

    # The user works through the stock MLflow client with a token an admin gave them...
    _token_for(share_server, name)
    as_user(name)
    client = MlflowClient()
    assert _code(lambda: client.search_registered_models()) == "OK"
    # ... until the identity provider deactivates them (Azure AD's PATCH): refused at once.
    off = scim.patch(f"/Users/{user_id}", {"op": "Replace", "path": "active", "value": "False"})
    assert off["active"] is False
    assert _code(lambda: client.search_registered_models()) == "UNAUTHENTICATED"
    me = share_server.api("GET", "/api/2.0/mlflow-share/whoami", token=share_server.tokens[name])
    assert me.status_code == 401
    assert scim.find("Users", f'userName eq "{name}" and active eq false')["totalResults"] == 1
    # Okta re-activates with a replace without path.
    on = scim.patch(f"/Users/{user_id}", {"op": "replace", "value": {"active": True}})
    assert on["active"] is True
    assert _code(lambda: client.search_registered_models()) == "OK"

    # Deleted: gone here and in mlflow-share, with its token.
    assert scim.call("DELETE", f"/Users/{user_id}").status_code == 204
    scim_error(scim.call("GET", f"/Users/{user_id}"), 404)
    scim_error(scim.call("DELETE", f"/Users/{user_id}"), 404)
    assert name not in {u["name"] for u in share_server.admin("GET", "/users").json()["users"]}
    assert _code(lambda: client.search_registered_models()) == "UNAUTHENTICATED"


def test_users_are_unique_and_local_accounts_are_not_taken_over(
        share_server: ShareServer, scim: ScimClient, unique: str) -> None:
    name = f"dup-{unique}"
    first = scim.create_user(name)
    scim_error(scim.call("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": name}),
               409, "uniqueness")
    scim_error(scim.call("POST", "/Users", {"schemas": [USER_SCHEMA],
                                            "userName": name.upper()}), 409, "uniqueness")
    # alice has a password (a local account), ci bots are service accounts: never taken over.
    scim_error(scim.call("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "alice"}),
               409, "uniqueness")
    assert scim.find("Users", 'userName eq "alice"')["totalResults"] == 0
    # Deleted by an admin, outside SCIM: gone for SCIM too, and provisioned again anew.
    group = scim.ok("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": f"dup-{unique}",
                                        "members": [{"value": first["id"]}]}, 201)
    share_server.admin("DELETE", "/users", json={"name": name})
    scim_error(scim.call("GET", f"/Users/{first['id']}"), 404)
    assert scim.ok("GET", f"/Groups/{group['id']}")["members"] == []
    again = scim.create_user(name)
    assert again["id"] != first["id"] and "groups" not in again
    assert _members(share_server, f"dup-{unique}") == {}
    # A later account of a deleted user's name is not the identity provider's: its old id,
    # groups and deactivation reach nothing.
    gone = scim.create_user(f"gone-{unique}")
    team_group = scim.ok("POST", "/Groups", {"schemas": [GROUP_SCHEMA],
                                             "displayName": f"gone-{unique}",
                                             "members": [{"value": gone["id"]}]}, 201)
    share_server.admin("DELETE", "/users", json={"name": f"gone-{unique}"})
    share_server.admin("POST", "/users", json={"name": f"gone-{unique}",
                                               "service_account": True})
    assert scim.find("Users", f'userName eq "gone-{unique}"')["totalResults"] == 0
    scim_error(scim.call("PATCH", f"/Users/{gone['id']}", {"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": "active", "value": False}]}), 404)
    scim_error(scim.call("PUT", f"/Groups/{team_group['id']}", {
        "schemas": [GROUP_SCHEMA], "displayName": f"gone-{unique}",
        "members": [{"value": gone["id"]}]}), 400, "invalidValue")
    assert _members(share_server, f"gone-{unique}") == {}
    listed = {u["name"]: u for u in share_server.admin("GET", "/users").json()["users"]}
    assert listed[f"gone-{unique}"]["disabled_at"] is None
    scim_error(scim.call("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "a b"}),
               400, "invalidValue")
    scim_error(scim.call("POST", "/Users", {"userName": f"x-{unique}"}), 400, "invalidSyntax")
    scim_error(scim.call("POST", "/Users", data=b"{not json",
                         headers={"Content-Type": "application/scim+json"}),
               400, "invalidSyntax")


def test_groups_are_teams_and_roles(share_server: ShareServer, scim: ScimClient, as_user: Any,
                                    unique: str) -> None:
    team = f"team-x-{unique}"
    first, second = (scim.create_user(f"{who}-{unique}") for who in ("gina", "hugo"))
    gina, hugo = first["userName"], second["userName"]
    _token_for(share_server, gina)
    _token_for(share_server, hugo)

    # RFC 7643 §8.4's group, named team:role: the team is created, members are maintainers.
    group = scim.ok("POST", "/Groups", {
        "schemas": [GROUP_SCHEMA], "displayName": f"{team}:maintainer",
        "externalId": f"grp-{unique}",
        "members": [{"value": first["id"], "$ref": first["meta"]["location"],
                     "display": gina}]}, 201)
    group_id = group["id"]
    assert group["members"] == [{"value": first["id"], "display": gina, "type": "User",
                                 "$ref": first["meta"]["location"]}]
    assert _members(share_server, team) == {gina: "maintainer"}
    assert scim.ok("GET", f"/Users/{first['id']}")["groups"][0]["value"] == group_id
    found = scim.find("Groups", f'displayName eq "{team.upper()}:MAINTAINER"',
                      excludedAttributes="members")
    assert found["totalResults"] == 1 and "members" not in found["Resources"][0]
    assert scim.find("Groups", f'members[value eq "{first["id"]}"]')["totalResults"] == 1

    # A maintainer of the team creates and reads a model of the team with the stock client.
    as_user(gina)
    model = f"model-x-{unique}"
    MlflowClient().create_registered_model(model)
    assert MlflowClient().get_registered_model(model).name == model

    # Azure AD adds a member; hugo becomes a maintainer and reaches the model.
    scim.patch(f"/Groups/{group_id}", {"op": "Add", "path": "members",
                                       "value": [{"value": second["id"]}]})
    assert _members(share_server, team) == {gina: "maintainer", hugo: "maintainer"}
    as_user(hugo)
    assert _code(lambda: MlflowClient().set_registered_model_tag(model, "k", "v")) == "OK"

    # A second group of the same team: viewers. A member of both keeps the stronger role.
    viewers = scim.ok("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": team,
                                          "members": [{"value": first["id"]},
                                                      {"value": second["id"]}]}, 201)
    assert _members(share_server, team) == {gina: "maintainer", hugo: "maintainer"}

    # Removing members: RFC 7644's value filter (Okta), and Azure AD's value list.
    scim.patch(f"/Groups/{group_id}", {"op": "remove",
                                       "path": f'members[value eq "{first["id"]}"]'})
    assert _members(share_server, team) == {gina: "viewer", hugo: "maintainer"}
    as_user(gina)
    assert _code(lambda: MlflowClient().get_registered_model(model)) == "OK"
    assert _code(lambda: MlflowClient().set_registered_model_tag(model, "k", "v")) == \
        "PERMISSION_DENIED"
    scim.patch(f"/Groups/{viewers['id']}", {"op": "Remove", "path": "members",
                                            "value": [{"value": first["id"]}]})
    assert _members(share_server, team) == {hugo: "maintainer"}
    assert _code(lambda: MlflowClient().get_registered_model(model)) == "PERMISSION_DENIED"

    # PUT replaces the members; renaming the group moves its members' role.
    scim.ok("PUT", f"/Groups/{viewers['id']}", {"schemas": [GROUP_SCHEMA],
                                               "displayName": f"{team}:engineer",
                                               "members": [{"value": first["id"]}]})
    assert _members(share_server, team) == {gina: "engineer", hugo: "maintainer"}
    assert _code(lambda: MlflowClient().set_registered_model_tag(model, "k", "v")) == "OK"

    # Deleting a group ends the memberships it gave; the team stays (it owns models).
    assert scim.call("DELETE", f"/Groups/{viewers['id']}").status_code == 204
    assert _members(share_server, team) == {hugo: "maintainer"}
    assert scim.call("DELETE", f"/Groups/{group_id}").status_code == 204
    assert _members(share_server, team) == {}
    assert team in {t["name"] for t in share_server.admin("GET", "/teams").json()["teams"]}
    scim_error(scim.call("GET", f"/Groups/{group_id}"), 404)


def test_group_refusals(scim: ScimClient, unique: str) -> None:
    user = scim.create_user(f"ivy-{unique}")
    body = {"schemas": [GROUP_SCHEMA], "displayName": f"team-y-{unique}:owner"}
    scim_error(scim.call("POST", "/Groups", body), 400, "invalidValue")
    scim_error(scim.call("POST", "/Groups", {**body, "displayName": "All Employees"}), 400,
               "invalidValue")
    scim_error(scim.call("POST", "/Groups", {**body, "displayName": f"team-y-{unique}",
                                             "members": [{"value": "no-such-user"}]}),
               400, "invalidValue")
    created = scim.ok("POST", "/Groups", {**body, "displayName": f"team-y-{unique}",
                                          "members": [{"value": user["id"]}]}, 201)
    scim_error(scim.call("POST", "/Groups", {**body, "displayName": f"team-y-{unique}"}), 409,
               "uniqueness")
    bad_patch = scim.call("PATCH", f"/Groups/{created['id']}", {
        "schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "members[value eq"}]})
    scim_error(bad_patch, 400, "invalidPath")
    scim_error(scim.call("PATCH", f"/Groups/{created['id']}", {
        "schemas": [PATCH_OP], "Operations": [{"op": "jump", "path": "members"}]}),
        400, "invalidSyntax")
    scim_error(scim.call("PATCH", f"/Groups/{created['id']}", {"Operations": []}), 400,
               "invalidSyntax")


def test_paging(scim: ScimClient, unique: str) -> None:
    names = [f"page-{unique}-{i}" for i in range(5)]
    for name in names:
        scim.create_user(name)
    page = scim.find("Users", f'userName sw "page-{unique}-"', startIndex=2, count=2)
    assert (page["totalResults"], page["startIndex"], page["itemsPerPage"]) == (5, 2, 2)
    assert [r["userName"] for r in page["Resources"]] == names[1:3]
    last = scim.find("Users", f'userName sw "page-{unique}-"', startIndex=5, count=2)
    assert [r["userName"] for r in last["Resources"]] == names[4:]
    counted = scim.find("Users", f'userName sw "page-{unique}-"', count=0)
    assert (counted["totalResults"], counted["Resources"]) == (5, [])
    beyond = scim.find("Users", f'userName sw "page-{unique}-"', startIndex=9)
    assert (beyond["totalResults"], beyond["itemsPerPage"]) == (5, 0)
    every = scim.find("Users", f'userName sw "page-{unique}-"', startIndex=0, count=-3)
    assert (every["startIndex"], every["itemsPerPage"]) == (1, 0)  # as RFC 7644 §3.4.2.4 says
    searched = scim.ok("POST", "/Users/.search", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": f'userName sw "page-{unique}-"', "startIndex": 4, "count": 10,
        "attributes": ["userName"]})
    assert [r["userName"] for r in searched["Resources"]] == names[3:]
    scim_error(scim.call("GET", "/Users", params={"count": "many"}), 400, "invalidValue")


@pytest.mark.parametrize("scim_filter", ['userName eq', 'userName eq "a" and', 'userName xx "a"',
                                         'emails[type eq "work"', 'active gt true', '(title pr'])
def test_a_bad_filter_is_invalid_filter(scim: ScimClient, scim_filter: str) -> None:
    scim_error(scim.call("GET", "/Users", params={"filter": scim_filter}), 400, "invalidFilter")
    scim_error(scim.call("GET", "/Groups", params={"filter": scim_filter}), 400, "invalidFilter")


def test_who_may_call_and_where_the_token_works(share_server: ShareServer, scim: ScimClient,
                                                as_user: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    anonymous = ScimClient(share_server.url)
    response = anonymous.call("GET", "/Users")
    scim_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    scim_error(ScimClient(share_server.url, "mshscim_0000_forged").call("GET", "/Users"), 401)
    scim_error(ScimClient(share_server.url, share_server.tokens["alice"]).call("GET", "/Users"),
               403)  # a maintainer's own token: not an org admin
    scim_error(ScimClient(share_server.url, auth=("alice", "wrong")).call("GET", "/Users"), 401)
    admin = ScimClient(share_server.url, auth=("admin", ADMIN_PASSWORD))
    assert admin.ok("GET", "/Users")["schemas"] == [LIST]

    # The provisioning token opens nothing but /scim/v2/.
    token = str(scim.session.headers["Authorization"]).split()[1]
    for path in ("/api/2.0/mlflow-share/whoami", "/api/2.0/mlflow-share/teams",
                 "/api/2.0/mlflow-share/scim/tokens", "/ajax-api/2.0/mlflow/users/current",
                 "/api/2.0/mlflow/registered-models/search"):
        assert share_server.api("GET", path, token=token).status_code == 401, path
    as_user(None)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)  # the stock client, with that token
    assert _code(lambda: MlflowClient().search_registered_models()) == "UNAUTHENTICATED"
    # Only admins administer the tokens.
    listed = share_server.api("GET", "/api/2.0/mlflow-share/scim/tokens",
                              token=share_server.tokens["alice"])
    assert listed.status_code == 403

    # A revoked token stops at once.
    revoked = new_scim_token(share_server, "to revoke")
    client = ScimClient(share_server.url, revoked)
    assert client.call("GET", "/Users").status_code == 200
    token_id = revoked.split("_")[1]
    share_server.admin("DELETE", "/scim/tokens", json={"token_id": token_id})
    scim_error(client.call("GET", "/Users"), 401)


def test_every_change_is_audited(share_server: ShareServer, unique: str) -> None:
    token = new_scim_token(share_server, "audit")
    token_id = token.split("_")[1]
    scim = ScimClient(share_server.url, token)
    user = scim.create_user(f"audited-{unique}")
    scim.patch(f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": False})
    scim.ok("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": f"aud-{unique}",
                                "members": [{"value": user["id"]}]}, 201)
    scim.call("GET", "/Users", params={"filter": "bad"})
    events = share_server.admin("GET", "/audit/events", params={
        "principal": f"scim-token:{token_id}", "max_results": 100}).json()["events"]
    stored = [(e["stored_action"], e["status"], e["decision"]) for e in events]
    assert ("flask:mlflow_share_scim.create_scim_user", 200, "allow") in stored  # with its change
    ops = {change["op"] for event in events for change in event["details"].get("changes", [])}
    assert {"provision_user", "disable_user", "scim_create_group"} <= ops
    assert ("flask:mlflow_share_scim.list_scim_users", 400, "reject") in stored


def test_the_cli_creates_lists_and_revokes_tokens(share_server: ShareServer) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")},
           "MLFLOW_TRACKING_URI": share_server.url, "MLFLOW_TRACKING_USERNAME": "admin",
           "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(BIN / "mlflow-share"), "scim", "token", *args],
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        return done

    created = run("create", "--description", "Entra ID", "--expires-in", "30")
    token = created.stdout.strip().splitlines()[-1]
    assert created.stdout.strip() == token and token.startswith("mshscim_")
    token_id = token.split("_")[1]
    assert token_id in created.stderr
    assert ScimClient(share_server.url, token).call("GET", "/Users").status_code == 200
    listed = run("list", "--json")
    entry = next(t for t in json.loads(listed.stdout) if t["token_id"] == token_id)
    assert entry["state"] == "active" and entry["description"] == "Entra ID"
    assert "token" not in entry and token not in listed.stdout
    run("revoke", token_id, "--yes")
    assert ScimClient(share_server.url, token).call("GET", "/Users").status_code == 401
    table = run("list").stdout
    assert any(token_id in line and "revoked" in line for line in table.splitlines())


# -- SSO and SCIM are one user ---------------------------------------------------------------
CLIENT_ID, CLIENT_SECRET = "mlflow-share-scim-tests", "client-secret-for-scim-tests"


@pytest.fixture(scope="module")
def sso_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShareServer, str]]:
    from oidc_provider_mock import run_server_in_thread

    with run_server_in_thread(port=free_port()) as provider:
        issuer = f"http://localhost:{provider.server_port}"
        env = {"MLFLOW_SHARE_OIDC_ISSUER": issuer, "MLFLOW_SHARE_OIDC_CLIENT_ID": CLIENT_ID,
               "MLFLOW_SHARE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
               "MLFLOW_SHARE_INSECURE_COOKIES": "1"}
        with running_server(tmp_path_factory.mktemp("scim-sso"), env_extra=env) as server:
            yield server, issuer


def _sso_login(server: ShareServer, issuer: str, sub: str, claims: dict[str, Any]
               ) -> requests.Response:
    """The authorization code flow as a browser follows it: the provider's form, posted."""
    requests.put(f"{issuer}/users/{sub}", json=claims, timeout=30).raise_for_status()
    browser = requests.Session()
    start = browser.get(server.url + "/share/login/sso?next=/share/", allow_redirects=False,
                        timeout=30)
    assert start.status_code == 302, start.text
    authorize = start.headers["Location"]
    assert authorize.startswith(issuer)
    granted = browser.post(authorize, data={"sub": sub}, allow_redirects=False, timeout=30)
    assert granted.status_code == 302, granted.text
    return browser.get(granted.headers["Location"], allow_redirects=False, timeout=30)


def test_a_provisioned_user_logs_in_by_sso_and_keeps_its_scim_teams(
        sso_server: tuple[ShareServer, str], unique: str) -> None:
    server, issuer = sso_server
    scim = ScimClient(server.url, new_scim_token(server))
    name = f"kim-{unique}"
    user = scim.create_user(name, emails=[{"value": f"{name}@example.com", "primary": True}])
    scim.ok("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "risk:engineer",
                                "members": [{"value": user["id"]}]}, 201)
    # The ID token names the same user and no groups: the login provisions nothing new,
    # and SCIM's teams stay.
    landed = _sso_login(server, issuer, f"sub-{unique}", {"preferred_username": name,
                                                          "groups": []})
    assert landed.status_code == 303, landed.text
    assert landed.headers["Location"] == "/share/"
    assert _members(server, "risk") == {name: "engineer"}
    users = [u for u in server.admin("GET", "/users").json()["users"] if u["name"] == name]
    assert len(users) == 1
    # The same user, so a second SCIM POST of that name is a conflict, not a second user.
    scim_error(scim.call("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": name}), 409,
               "uniqueness")

    # An SSO user who logged in before SCIM was set up is taken over by the first POST; the
    # team its groups claim gave it is left until a SCIM group gives it again.
    early = f"lea-{unique}"
    assert _sso_login(server, issuer, f"sub-early-{unique}",
                      {"preferred_username": early, "groups": ["risk"]}).status_code == 303
    assert _members(server, "risk") == {name: "engineer", early: "viewer"}
    adopted = scim.create_user(early, externalId=f"ext-{early}")
    assert adopted["active"] is True
    assert scim.find("Users", f'userName eq "{early}"')["totalResults"] == 1
    assert _members(server, "risk") == {name: "engineer"}

    # Deactivated by the identity provider: the login is refused.
    scim.patch(f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": False})
    refused = _sso_login(server, issuer, f"sub-{unique}", {"preferred_username": name})
    assert refused.status_code == 403, refused.text


def test_deprovisioning_is_not_blocked_by_the_last_maintainer_rule(
        share_server: ShareServer, scim: ScimClient, unique: str) -> None:
    """An admin may not disable a team's last maintainer; the identity provider may (its
    offboarding must not wait), and the org admins still manage the team."""
    user = scim.create_user(f"solo-{unique}")
    scim.ok("POST", "/Groups", {"schemas": [GROUP_SCHEMA],
                                "displayName": f"solo-{unique}:maintainer",
                                "members": [{"value": user["id"]}]}, 201)
    refused = share_server.api("POST", "/api/2.0/mlflow-share/users/disable",
                               auth=share_server.admin_auth(), json={"name": user["userName"]})
    assert refused.status_code == 409
    off = scim.patch(f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": False})
    assert off["active"] is False
    assert scim.call("DELETE", f"/Users/{user['id']}").status_code == 204
    assert _members(share_server, f"solo-{unique}") == {}


# -- PostgreSQL, two workers -----------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareServer]:
    import uuid

    import sqlalchemy

    from tests.conftest import POSTGRES_URL

    name = f"mlflow_share_scim_{uuid.uuid4().hex[:10]}"
    admin_engine = sqlalchemy.create_engine(f"{POSTGRES_URL}/test", isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        with running_server(tmp_path_factory.mktemp("scim-pg"), f"{POSTGRES_URL}/{name}",
                            workers=2) as server:
            yield server
    finally:
        with admin_engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


@pytest.mark.postgres
def test_provisioning_on_postgres_across_workers(pg_server: ShareServer) -> None:
    scim = ScimClient(pg_server.url, new_scim_token(pg_server))
    ann, ben = scim.create_user("ann@example.com"), scim.create_user("ben@example.com")
    group = scim.ok("POST", "/Groups", {"schemas": [GROUP_SCHEMA],
                                        "displayName": "pg-team:maintainer",
                                        "members": [{"value": ann["id"]}, {"value": ben["id"]}]},
                    201)
    assert _members(pg_server, "pg-team") == {"ann@example.com": "maintainer",
                                              "ben@example.com": "maintainer"}
    assert scim.find("Groups", 'displayName eq "PG-TEAM:MAINTAINER"')["totalResults"] == 1
    assert scim.find("Users", 'userName eq "ANN@example.com"')["totalResults"] == 1
    scim.patch(f"/Groups/{group['id']}", {"op": "remove",
                                          "path": f'members[value eq "{ben["id"]}"]'})
    assert _members(pg_server, "pg-team") == {"ann@example.com": "maintainer"}
    token = _token_for(pg_server, "ann@example.com")
    assert all(pg_server.api("GET", "/api/2.0/mlflow-share/whoami", token=token).status_code
               == 200 for _ in range(4))
    scim.patch(f"/Users/{ann['id']}", {"op": "replace", "path": "active", "value": False})
    # Whichever worker answers, the token is refused from the next request on.
    assert all(pg_server.api("GET", "/api/2.0/mlflow-share/whoami", token=token).status_code
               == 401 for _ in range(8))
    assert scim.call("DELETE", f"/Users/{ann['id']}").status_code == 204
    assert _members(pg_server, "pg-team") == {}
    assert scim.call("DELETE", f"/Groups/{group['id']}").status_code == 204
