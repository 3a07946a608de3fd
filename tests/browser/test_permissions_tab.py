"""The Permissions tab injected into MLflow's own UI on a registered model's page, end to end:
the stock MLflow client for the model, chromium for MLflow's UI with the tab."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

from tests.browser.conftest import login_local
from tests.conftest import USER_PASSWORD, ShareServer
from tests.integration.test_sharing import API, ARTIFACTS, SHARE, X, _onnx_files

pytestmark = pytest.mark.browser
TAB = "#mlflow-share-permissions-tab"
PANEL = "#mlflow-share-permissions-panel"
FORM = "#mlflow-share-grant-form"
WAIT = 30_000  # ms: what a condition may take on a busy CI machine


@pytest.fixture
def client_as(web: ShareServer, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Any]:
    """``client_as("bob")``: the stock MLflow client with bob's API token."""

    def make(user: str) -> mlflow.MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", web.tokens[user])
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.delenv(name, raising=False)
        return mlflow.MlflowClient(tracking_uri=web.url, registry_uri=web.url)

    return make


def _model_name() -> str:
    # A space and a '+' exercise the route's URL encoding.
    return f"tab model+{uuid.uuid4().hex[:10]}"


def _refused(client: mlflow.MlflowClient, name: str) -> None:
    with pytest.raises(MlflowException) as refused:
        client.get_registered_model(name)
    assert refused.value.error_code == "PERMISSION_DENIED", refused.value


def _open_model(page: Any, user: str, name: str) -> None:
    """Log in, open the model's page in MLflow's UI, wait for MLflow's heading and the tab."""
    login_local(page, user, next_path="/")
    page.goto(f"/#/models/{quote(name, safe='')}")
    page.wait_for_function(
        "name => { const h = document.querySelector('main h2');"
        " return !!h && !!h.firstChild && h.firstChild.textContent.trim() === name; }",
        arg=name, timeout=60_000)
    page.wait_for_selector(TAB, timeout=30_000)


def _show_permissions(page: Any) -> Any:
    page.click(TAB)
    panel = page.locator(PANEL)
    panel.locator("#mlflow-share-owner-team").wait_for()
    return panel


def _access_rows(page: Any, via: str | None = None) -> list[list[str]]:
    """The Access table: [team, through, versions, until, may, granted by] per route."""
    selector = f"{PANEL} tr.mlflow-share-route" + (f'[data-via="{via}"]' if via else "")
    return page.eval_on_selector_all(
        selector, "rows => rows.map(r => [...r.cells].slice(0, 6).map(c => c.textContent.trim()))")


def _grant_rows(page: Any) -> list[list[str]]:
    return _access_rows(page, "grant")


def _owner_row(team: str) -> list[str]:
    return [team, "owner team", "all", "no expiry", "read, execute, write, manage", ""]


def _grant_row(team: str, permission: str, by: str) -> list[str]:
    may = {"read": "read", "execute": "execute", "write": "read, write",
           "manage": "read, execute, write, manage"}[permission]
    return [team, f"direct grant ({permission})", "all", "no expiry", may, by]


def _grant_in_tab(page: Any, team: str, permission: str) -> None:
    """Fill and send the grant form. MLflow may re-render the page around the tab while the
    test types (its Assistant panel opens on a first visit), which can redraw the form: then
    fill it again (granting twice is harmless)."""
    row = page.locator(f'{PANEL} tr.mlflow-share-route[data-via="grant"][data-team="{team}"]')
    for _ in range(3):
        page.fill("#mlflow-share-grant-team", team)
        page.select_option("#mlflow-share-grant-permission", permission)
        page.click(f"{FORM} button[type=submit]")
        try:
            row.wait_for(timeout=10_000)
            return
        except PlaywrightTimeout:
            continue
    row.wait_for()


def test_maintainer_grants_and_revokes_read_through_the_tab(
        web: ShareServer, new_page: Callable[[], Any], client_as: Callable[[str], Any]) -> None:
    name = _model_name()
    client_as("alice").create_registered_model(name)
    _refused(client_as("bob"), name)

    alice = new_page()
    _open_model(alice, "alice", name)
    tab = alice.locator(TAB)
    assert tab.get_attribute("role") == "tab" and tab.get_attribute("aria-selected") == "false"
    assert alice.locator('[role="tablist"]').get_attribute("data-model") == name
    panel = _show_permissions(alice)
    assert tab.get_attribute("aria-selected") == "true"
    # The panel replaces the overview (MLflow's details with the tags and the versions).
    assert not alice.locator('main [data-testid="tags-section"]').is_visible()
    assert panel.locator("#mlflow-share-owner-team").inner_text() == "team-a"
    assert panel.locator("#mlflow-share-access-mode").inner_text() == \
        "alice: you manage this model's access (maintainer of team-a)."
    assert _access_rows(alice) == [_owner_row("team-a")]
    admins = web.api("GET", "/api/2.0/mlflow-share/access", token=web.tokens["alice"],
                     params={"model": name}).json()["admins"]
    assert admins and panel.locator("#mlflow-share-admins").inner_text() == \
        f"Org admins may do everything: {', '.join(admins)}."
    assert panel.get_by_role("heading", name="Sharing packages", exact=True).count() == 1
    assert "No sharing packages." in panel.inner_text()
    assert "No protected aliases." in panel.inner_text()

    _grant_in_tab(alice, "team-b", "read")
    assert _access_rows(alice) == [_owner_row("team-a"), _grant_row("team-b", "read", "alice")]
    assert "Granted read to team-b." in panel.inner_text()
    grants = web.admin("GET", "/grants", params={"model": name}).json()
    assert grants["owner_team"] == "team-a"
    assert [(g["team"], g["permission"], g["granted_by"]) for g in grants["grants"]] == \
        [("team-b", "read", "alice")]

    # bob now reads the model with the stock client and in MLflow's UI, where the tab is
    # read-only for him (he is no maintainer of team-a).
    assert client_as("bob").get_registered_model(name).name == name
    bob = new_page()
    _open_model(bob, "bob", name)
    bob_panel = _show_permissions(bob)
    assert bob_panel.locator("#mlflow-share-owner-team").inner_text() == "team-a"
    assert _access_rows(bob) == [_owner_row("team-a"), _grant_row("team-b", "read", "alice")]
    assert bob_panel.locator("#mlflow-share-admins").inner_text() == "Org admins may do everything."
    assert bob_panel.locator("#mlflow-share-access-mode").inner_text().startswith("bob: read-only")
    assert bob_panel.locator(FORM).count() == 0
    assert bob_panel.locator("button.mlflow-share-revoke").count() == 0
    assert bob_panel.get_attribute("data-can-manage") == "false"

    # alice revokes it in the tab, after saying yes to the question (no, the first time): bob
    # is refused again.
    grant = panel.locator('tr.mlflow-share-route[data-via="grant"][data-team="team-b"]')
    revoke = grant.locator('button[aria-label="Revoke read from team-b"]')
    revoke.click()
    expect(grant.locator("form.mlflow-share-inline")).to_contain_text("Revoke read from team-b?")
    grant.get_by_role("button", name="Cancel").click()
    expect(revoke).to_be_visible()
    assert web.admin("GET", "/grants", params={"model": name}).json()["grants"] != []
    revoke.click()
    grant.get_by_role("button", name="Confirm").click()
    expect(panel.locator("tr.mlflow-share-route")).to_have_count(1, timeout=WAIT)
    assert _access_rows(alice) == [_owner_row("team-a")]
    assert "Revoked read from team-b." in panel.inner_text()
    assert web.admin("GET", "/grants", params={"model": name}).json()["grants"] == []
    _refused(client_as("bob"), name)


def test_api_errors_show_in_the_panel_as_text(web: ShareServer, new_page: Callable[[], Any],
                                              client_as: Callable[[str], Any]) -> None:
    name = _model_name()
    client_as("alice").create_registered_model(name)
    page = new_page()
    _open_model(page, "alice", name)
    panel = _show_permissions(page)
    for team, expected in (("no-such-team", "no-such-team"),
                           ('<img src=x id="pwned">', "<img")):
        page.fill("#mlflow-share-grant-team", team)
        page.click(f"{FORM} button[type=submit]")
        alert = panel.locator(f"{FORM} [role=alert]")
        alert.wait_for()
        assert expected in alert.inner_text()  # the server's message, shown as text
        assert page.locator("#pwned").count() == 0 and panel.locator("img").count() == 0
    assert _grant_rows(page) == []
    assert web.admin("GET", "/grants", params={"model": name}).json()["grants"] == []


def _tab_model(page: Any, name: str) -> None:
    try:
        page.wait_for_function(
            "name => document.querySelector('[role=tablist][data-model]')?.dataset.model === name",
            arg=name, timeout=60_000)
    except PlaywrightTimeout:
        # What the page showed instead, so that a failure on CI can be read from its log.
        seen = page.evaluate("""() => ({
            url: location.href,
            heading: document.querySelector('main h2')?.outerHTML?.slice(0, 300) ?? null,
            tabs: [...document.querySelectorAll('[role=tablist][data-model]')].map(t => t.dataset.model),
            dialogs: document.querySelectorAll('[role=dialog]').length,
            main: document.querySelector('main')?.innerText?.slice(0, 300) ?? null})""")
        raise AssertionError(f"no Permissions tab for {name!r} within 60 s; the page: {seen}") from None


def test_the_tab_follows_in_app_navigation(web: ShareServer, new_page: Callable[[], Any],
                                           client_as: Callable[[str], Any]) -> None:
    first, second = _model_name(), _model_name()
    alice = client_as("alice")
    alice.create_registered_model(first)
    alice.create_registered_model(second)
    web.admin("POST", "/grants", json={"model": second, "team": "team-c", "permission": "execute"})
    page = new_page()
    _open_model(page, "alice", first)
    _show_permissions(page)
    assert _grant_rows(page) == []
    # To the model list by MLflow's own breadcrumb link (no reload): the tab goes, and
    # MLflow's content is not left hidden.
    page.click('main a[href="#/models"]')
    page.wait_for_function("() => !document.getElementById('mlflow-share-permissions-tab')")
    assert page.locator("[data-mlflow-share-hidden]").count() == 0
    # Another model, found and opened in MLflow's list: its own tab, with its own grants.
    page.fill('main [data-testid="model-search-input"]', second)
    page.press('main [data-testid="model-search-input"]', "Enter")
    link = page.locator(f'main a[href="#/models/{quote(second, safe="")}"]')
    link.wait_for()
    link.click()
    _tab_model(page, second)
    assert page.locator(TAB).get_attribute("aria-selected") == "false"  # a new page: Overview
    _show_permissions(page)
    assert _grant_rows(page) == [_grant_row("team-c", "execute", "admin")]
    # The browser's back and forward buttons (popstate).
    page.go_back()
    page.wait_for_function("() => !document.getElementById('mlflow-share-permissions-tab')")
    assert page.locator("[data-mlflow-share-hidden]").count() == 0
    page.go_forward()
    _tab_model(page, second)
    assert page.locator('[role="tablist"][data-model]').count() == 1
    assert page.locator(PANEL).count() == 1


def test_mlflow_ui_changes_carry_the_csrf_token(web: ShareServer, new_page: Callable[[], Any],
                                                client_as: Callable[[str], Any]) -> None:
    name = _model_name()
    alice = client_as("alice")
    alice.create_registered_model(name)
    page = new_page()
    _open_model(page, "alice", name)
    # MLflow's own description editor (a PATCH through the UI's fetch).
    page.click('main [data-testid="descriptionEditButton"]')
    page.fill('main textarea[data-testid="text-area"]', "Edited in the UI")
    with page.expect_response(lambda r: "registered-models/update" in r.url) as saved:
        page.click('main [data-testid="editable-note-save-button"]')
    assert saved.value.status == 200, saved.value.text()
    assert alice.get_registered_model(name).description == "Edited in the UI"
    page.locator('main >> text="Edited in the UI"').wait_for()

    # The same kind of call: refused with the browser's original fetch (from a fresh frame,
    # the cookie alone), accepted through the page's fetch, which adds the session's token.
    statuses = page.evaluate(
        """async (name) => {
            const body = JSON.stringify({name, key: "stage", value: "candidate"});
            const init = {method: "POST", headers: {"Content-Type": "application/json"},
                          credentials: "same-origin", body};
            const frame = document.createElement("iframe");
            document.body.append(frame);
            const plain = await frame.contentWindow.fetch(
                "/ajax-api/2.0/mlflow/registered-models/set-tag", init);
            const refused = await plain.json();
            frame.remove();
            const wrapped = await fetch("ajax-api/2.0/mlflow/registered-models/set-tag", init);
            return [plain.status, refused.message, wrapped.status];
        }""", name)
    assert statuses[0] == 403 and "CSRF" in statuses[1]
    assert statuses[2] == 200
    assert alice.get_registered_model(name).tags == {"stage": "candidate"}

    # bob logs in in another tab of the same browser (the cookie is now his): the page loaded
    # for alice sends no one's token, rather than retrying alice's change as bob.
    other = page.context.new_page()
    login_local(other, "bob")
    refused = page.evaluate(
        """async (name) => {
            const response = await fetch("ajax-api/2.0/mlflow/registered-models/set-tag", {
                method: "POST", headers: {"Content-Type": "application/json"},
                body: JSON.stringify({name, key: "stage", value: "changed"})});
            return [response.status, (await response.json()).message];
        }""", name)
    assert refused[0] == 403 and "CSRF" in refused[1], refused
    assert alice.get_registered_model(name).tags == {"stage": "candidate"}


# -- effective access and protected aliases, on one model of a team of this module's own -------
@dataclass(frozen=True)
class World:
    """A team of this module (two maintainers, none of the shared world's teams touched), its
    model with three validated versions, and a package of them published to team-b."""

    team: str
    first: str  # maintainers of `team`
    second: str
    model: str
    package: str


def _register(server: ShareServer, token: str, name: str, files: dict[str, bytes]) -> str:
    """One version of ``name`` (created on first use) from ``files``, as the token's user."""
    experiment = server.api("GET", f"{API}/experiments/get-by-name", token=token,
                            params={"experiment_name": f"tab-{name}"})
    if experiment.ok:
        experiment_id = experiment.json()["experiment"]["experiment_id"]
    else:
        experiment_id = server.api("POST", f"{API}/experiments/create", token=token, json={
            "name": f"tab-{name}"}).json()["experiment_id"]
        assert server.api("POST", f"{API}/registered-models/create", token=token,
                          json={"name": name}).ok
    run = server.api("POST", f"{API}/runs/create", token=token, json={
        "experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
    for relative, data in files.items():
        assert server.api("PUT", f"{ARTIFACTS}/{experiment_id}/{run}/artifacts/model/"
                          f"{relative}", token=token, data=data).ok
    created = server.api("POST", f"{API}/model-versions/create", token=token, json={
        "name": name, "source": f"runs:/{run}/model", "run_id": run})
    assert created.status_code == 200, created.text
    return str(created.json()["model_version"]["version"])


@pytest.fixture(scope="module")
def world(web: ShareServer) -> World:
    unique = uuid.uuid4().hex[:8]
    team, first, second = f"tabs-{unique}", f"tm1-{unique}", f"tm2-{unique}"
    web.admin("POST", "/teams", json={"name": team})
    for user in (first, second):
        web.admin("POST", "/users", json={"name": user, "password": USER_PASSWORD})
        web.admin("POST", "/teams/members", json={"team": team, "user": user,
                                                  "role": "maintainer"})
        web.tokens[user] = web.admin("POST", "/tokens", json={"user": user}).json()["token"]
    model = f"tab-aliases-{unique}"
    files = _onnx_files(X[:2].tolist())
    versions = [_register(web, web.tokens[first], model, files) for _ in range(3)]
    assert versions == ["1", "2", "3"]
    # One package pins the three versions (so protected aliases may point at each), published
    # to team-b for reading and running them until a month from now.
    created = web.api("POST", f"{SHARE}/packages", token=web.tokens[first], json={
        "model": model, "versions": versions, "description": "the Permissions tab's model",
        "teams": [{"team": "team-b", "permission": "read"},
                  {"team": "team-b", "permission": "execute"}],
        "expires_at": int(time.time() * 1000) + 30 * 86_400_000})
    package = created.json()["package"]
    assert package["status"] == "validated", created.text
    published = web.api("POST", f"{SHARE}/packages/{package['id']}/publish",
                        token=web.tokens[first])
    assert published.json()["package"]["status"] == "published", published.text
    return World(team, first, second, model, package["id"])


def _set_alias(web: ShareServer, user: str, model: str, alias: str, version: str) -> None:
    answer = web.api("POST", f"{API}/registered-models/alias", token=web.tokens[user],
                     json={"name": model, "alias": alias, "version": version})
    assert answer.ok, answer.text


def _alias_now(web: ShareServer, model: str, alias: str) -> str:
    answer = web.api("GET", f"{API}/registered-models/alias", auth=web.admin_auth(),
                     params={"name": model, "alias": alias})
    assert answer.ok, answer.text
    return str(answer.json()["model_version"]["version"])


def _protected(web: ShareServer, model: str) -> dict[str, dict[str, Any]]:
    listed = web.admin("GET", "/aliases", params={"model": model}).json()["protected"]
    return {a["alias"]: a for a in listed}


def _cells(locator: Any) -> list[list[str]]:
    return locator.evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))")


def _alias_row(panel: Any, alias: str) -> Any:
    return panel.locator(f'tr.mlflow-share-alias[data-alias="{alias}"]')


def _history(panel: Any, alias: str) -> list[list[str]]:
    """The alias's changes in the tab's history, newest first: [move, by, reason]."""
    rows = _cells(panel.locator(f'#mlflow-share-alias-history tr[data-alias="{alias}"]'))
    for when, *_ in rows:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", when), when
    return [row[2:] for row in rows]


def _step(row: Any, button: str, **fields: str) -> None:
    """Click a row's button, fill the inline step that replaces it and confirm it."""
    row.locator(f"button.mlflow-share-{button}").click()
    step = row.locator("form.mlflow-share-inline")
    for field, value in fields.items():
        step.locator(f'input[name="{field}"]').fill(value)
    step.locator("button.mlflow-share-confirm").click()


def test_access_shows_the_owner_grants_and_a_published_package(
        web: ShareServer, new_page: Callable[[], Any], world: World) -> None:
    page = new_page()
    _open_model(page, world.first, world.model)
    panel = _show_permissions(page)
    routes = panel.locator("tr.mlflow-share-route")
    expect(routes).to_have_count(3)
    api = web.api("GET", f"{SHARE}/access", token=web.tokens[world.first],
                  params={"model": world.model}).json()
    [expires] = {r["expires_at"] for r in api["teams"] if r["via"] == "package"}
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires / 1000))
    package = [f"sharing package {world.package} (execute)", "1, 2, 3", until, "execute",
               world.first]
    assert _access_rows(page) == [
        _owner_row(world.team),
        ["team-b", *package],
        ["team-b", f"sharing package {world.package} (read)", "1, 2, 3", until, "read",
         world.first]]
    assert panel.locator(f'tr[data-via="package"][data-package="{world.package}"]').count() == 2
    assert panel.locator("#mlflow-share-admins").inner_text() == \
        f"Org admins may do everything: {', '.join(api['admins'])}."
    # Packages are revoked in the portal, not here: only direct grants have a Revoke button.
    assert panel.locator('tr[data-via="package"] button').count() == 0

    _grant_in_tab(page, "team-c", "write")
    assert _grant_rows(page) == [_grant_row("team-c", "write", world.first)]

    # bob (maintainer of team-b, which the package reaches) reads the model: his view is the
    # owner and his own team's routes, not team-c's grant, and changes nothing.
    bob = new_page()
    _open_model(bob, "bob", world.model)
    bob_panel = _show_permissions(bob)
    expect(bob_panel.locator("tr.mlflow-share-route")).to_have_count(3)
    assert [row[0] for row in _access_rows(bob)] == [world.team, "team-b", "team-b"]
    assert _access_rows(bob)[1] == ["team-b", *package]
    assert bob_panel.locator("#mlflow-share-admins").inner_text() == \
        "Org admins may do everything."
    assert bob_panel.get_attribute("data-can-manage") == "false"
    assert bob_panel.locator("button").count() == 0  # no revoke, grant, alias controls
    assert bob_panel.locator("form").count() == 0

    # The grant is revoked after a confirmation.
    grant = panel.locator('tr[data-via="grant"][data-team="team-c"]')
    grant.locator("button.mlflow-share-revoke").click()
    expect(grant.locator("form.mlflow-share-inline")).to_contain_text("Revoke write from team-c?")
    grant.locator("button.mlflow-share-confirm").click()
    expect(grant).to_have_count(0, timeout=WAIT)
    expect(panel.locator("p.mlflow-share-status")).to_have_text("Revoked write from team-c.")
    assert all(g["team"] != "team-c" for g in
               web.admin("GET", "/grants", params={"model": world.model}).json()["grants"])


def test_protect_move_compare_and_set_roll_back_history_and_unprotect(
        web: ShareServer, new_page: Callable[[], Any], world: World) -> None:
    _set_alias(web, world.first, world.model, "staging", "1")
    page = new_page()
    _open_model(page, world.first, world.model)
    panel = _show_permissions(page)
    status = panel.locator("#mlflow-share-alias-status")
    row = _alias_row(panel, "staging")

    # Protect it (moves by a maintainer).
    panel.locator("#mlflow-share-protect-alias").fill("staging")
    panel.locator("#mlflow-share-protect-form button[type=submit]").click()
    expect(row).to_have_count(1, timeout=WAIT)
    expect(status).to_have_text("Protected staging.")
    expect(row.locator(".mlflow-share-alias-version")).to_have_text("1")
    expect(row.locator(".mlflow-share-alias-rule")).to_have_text("by a maintainer")
    assert _protected(web, world.model)["staging"]["require_approval"] is False

    # Move it to version 2, with a reason.
    _step(row, "move", version="2", reason="Q3 retrain")
    expect(row).to_have_attribute("data-version", "2", timeout=WAIT)
    expect(status).to_have_text("Moved staging from version 1 to 2.")
    assert _alias_now(web, world.model, "staging") == "2"

    # The other maintainer moves it to 3 meanwhile; this page still says 2, so its move (as
    # compare-and-set from 2) is refused with the server's message, and the page shows 3.
    moved = web.api("POST", f"{SHARE}/aliases/move", token=web.tokens[world.second], json={
        "model": world.model, "alias": "staging", "version": "3", "expected_version": 2})
    assert moved.ok, moved.text
    _step(row, "move", version="1")
    alert = status.get_by_role("alert")
    expect(alert).to_contain_text(
        f"Alias 'staging' of '{world.model}' points at version 3, not 2: someone moved it "
        "first.", timeout=WAIT)
    expect(row).to_have_attribute("data-version", "3")
    assert _alias_now(web, world.model, "staging") == "3"

    # Roll it back (to the version before its last move), with a reason, after a question.
    row.locator("button.mlflow-share-rollback").click()
    step = row.locator("form.mlflow-share-inline")
    expect(step).to_contain_text(
        "Roll back staging from version 3 to the version before its last move?")
    step.locator("button.mlflow-share-confirm").click()  # no reason yet: the form says no
    assert step.locator('input[name="reason"]').evaluate("input => !input.validity.valid")
    step.locator('input[name="reason"]').fill("v3 drifts on the March data")
    step.locator("button.mlflow-share-confirm").click()
    expect(row).to_have_attribute("data-version", "2", timeout=WAIT)
    expect(status).to_have_text("Rolled back staging from version 3 to 2.")
    assert _alias_now(web, world.model, "staging") == "2"

    # The history: who, when, from -> to, why; newest first.
    assert _history(panel, "staging") == [
        ["3 → 2", world.first, "v3 drifts on the March data"],
        ["2 → 3", world.second, ""],
        ["1 → 2", world.first, "Q3 retrain"],
        ["(not set) → 1", world.first, ""]]

    # Unprotect it: not on Cancel, then on Confirm.
    row.locator("button.mlflow-share-unprotect").click()
    expect(row.locator("form.mlflow-share-inline")).to_contain_text("Unprotect staging?")
    row.get_by_role("button", name="Cancel").click()
    expect(row.locator("button.mlflow-share-unprotect")).to_be_visible()
    assert "staging" in _protected(web, world.model)
    _step(row, "unprotect")
    expect(row).to_have_count(0, timeout=WAIT)
    expect(status).to_have_text("staging is no longer protected.")
    assert "staging" not in _protected(web, world.model)


def test_a_move_needing_a_second_maintainer_is_requested_approved_or_rejected(
        web: ShareServer, new_page: Callable[[], Any], world: World) -> None:
    _set_alias(web, world.first, world.model, "production", "1")
    first = new_page()
    _open_model(first, world.first, world.model)
    panel = _show_permissions(first)
    status = panel.locator("#mlflow-share-alias-status")
    row = _alias_row(panel, "production")
    panel.locator("#mlflow-share-protect-alias").fill("production")
    panel.locator("#mlflow-share-protect-approval").check()
    panel.locator("#mlflow-share-protect-form button[type=submit]").click()
    expect(row).to_have_attribute("data-approval", "true", timeout=WAIT)
    expect(status).to_have_text(
        "Protected production: moves need a second maintainer's approval.")
    expect(row.locator(".mlflow-share-alias-rule")).to_have_text(
        "with a second maintainer's approval")
    # No direct move or rollback; lifting the approval is for org admins only.
    assert [b.inner_text() for b in row.locator("button").all()] == ["Request move…"]

    _step(row, "request-move", version="2", reason="v2 wins the A/B test")
    expect(status).to_have_text("Requested moving production to version 2: another "
                                "maintainer approves or rejects it.", timeout=WAIT)
    pending = panel.locator('tr.mlflow-share-request[data-alias="production"]'
                            '[data-status="pending"]')
    expect(pending).to_have_count(1)
    assert _cells(pending)[0][:4] == ["production", "1 → 2", "v2 wins the A/B test",
                                      world.first]
    # The requester cannot approve it: the server says so, the alias stays.
    pending.locator("button.mlflow-share-approve").click()
    expect(status.get_by_role("alert")).to_contain_text("you cannot approve your own request",
                                                        timeout=WAIT)
    assert _alias_now(web, world.model, "production") == "1"

    # The second maintainer approves it in their own browser.
    second = new_page()
    _open_model(second, world.second, world.model)
    other = _show_permissions(second)
    request = other.locator('tr.mlflow-share-request[data-alias="production"]'
                            '[data-status="pending"]')
    request.locator("button.mlflow-share-approve").click()
    approved = other.locator('tr.mlflow-share-request[data-alias="production"]'
                             '[data-status="approved"]')
    expect(approved).to_have_count(1, timeout=WAIT)
    expect(approved.locator(".mlflow-share-request-status")).to_have_text(
        f"approved by {world.second}")
    expect(other.locator("#mlflow-share-alias-status")).to_have_text(
        "Approved: production now points at version 2.")
    expect(_alias_row(other, "production")).to_have_attribute("data-version", "2")
    assert _alias_now(web, world.model, "production") == "2"

    # A second request, rejected with a reason: the alias stays.
    _step(row, "request-move", version="3", reason="try v3")
    expect(panel.locator('tr.mlflow-share-request[data-alias="production"]'
                         '[data-status="pending"]')).to_have_count(1, timeout=WAIT)
    second.click(TAB)  # show the tab again: it reads the requests anew
    request = other.locator('tr.mlflow-share-request[data-alias="production"]'
                            '[data-status="pending"]')
    expect(request.locator(".mlflow-share-request-move")).to_have_text("2 → 3", timeout=WAIT)
    _step(request, "reject", reason="not yet")
    rejected = other.locator('tr.mlflow-share-request[data-alias="production"]'
                             '[data-status="rejected"]')
    expect(rejected.locator(".mlflow-share-request-status")).to_have_text(
        f"rejected by {world.second}: not yet", timeout=WAIT)
    expect(other.locator("#mlflow-share-alias-status")).to_have_text(
        "Rejected moving production to version 3.")
    assert _alias_now(web, world.model, "production") == "2"
    assert _history(other, "production")[:1] == [["1 → 2", world.second, "v2 wins the A/B test"]]
    statuses = [r["status"] for r in web.admin("GET", "/aliases/requests", params={
        "model": world.model}).json()["requests"] if r["alias"] == "production"]
    assert statuses == ["approved", "rejected"]


def _locks(page: Any, alias: str) -> Any:
    return page.locator(f'main [title="{alias}"] .mlflow-share-alias-lock')


def test_protected_aliases_are_marked_in_mlflows_alias_tags(
        web: ShareServer, new_page: Callable[[], Any], world: World) -> None:
    for alias in ("gold", "silver"):
        _set_alias(web, world.first, world.model, alias, "1")
    protect = web.api("POST", f"{SHARE}/aliases/protect", token=web.tokens[world.first],
                      json={"model": world.model, "alias": "gold"})
    assert protect.ok, protect.text
    page = new_page()
    _open_model(page, world.first, world.model)
    # The model page's versions table: a lock (one) in gold's tag, none in silver's.
    tags = page.locator('main [title="gold"]')
    expect(_locks(page, "gold")).to_have_count(1, timeout=WAIT)
    lock = _locks(page, "gold")
    assert lock.get_attribute("title") == "protected alias (mlflow-share)"
    assert lock.get_attribute("aria-label") == "protected alias (mlflow-share)"
    assert tags.count() == 1 and "@\xa0gold" in tags.inner_text()
    assert _locks(page, "silver").count() == 0 and page.locator('main [title="silver"]').count()

    # A version's page (in-app navigation).
    page.goto(f"/#/models/{quote(world.model, safe='')}/versions/1")
    page.wait_for_function("() => /Version 1/.test(document.querySelector('main')?.innerText)",
                           timeout=60_000)
    expect(_locks(page, "gold")).to_have_count(1, timeout=WAIT)
    expect(page.locator('main [title="silver"]')).to_have_count(1)
    assert _locks(page, "silver").count() == 0
    # Under the page's observer: a lock that went (a re-render) comes back, once.
    page.evaluate("() => document.querySelector('main .mlflow-share-alias-lock').remove()")
    expect(_locks(page, "gold")).to_have_count(1, timeout=WAIT)
    assert page.locator(".mlflow-share-alias-lock").count() == 1

    # Protections changed in the tab show in the tags: silver gets a lock, gold loses its own.
    page.goto(f"/#/models/{quote(world.model, safe='')}")
    _show_permissions(page)
    panel = page.locator(PANEL)
    panel.locator("#mlflow-share-protect-alias").fill("silver")
    panel.locator("#mlflow-share-protect-form button[type=submit]").click()
    expect(_alias_row(panel, "silver")).to_have_count(1, timeout=WAIT)
    _step(_alias_row(panel, "gold"), "unprotect")
    expect(_alias_row(panel, "gold")).to_have_count(0, timeout=WAIT)
    page.click("#mlflow-share-overview-tab")
    expect(_locks(page, "silver")).to_have_count(1, timeout=WAIT)
    expect(_locks(page, "gold")).to_have_count(0)


def test_mlflows_alias_editor_refusal_points_to_the_permissions_tab(
        web: ShareServer, new_page: Callable[[], Any], world: World) -> None:
    _set_alias(web, world.first, world.model, "release", "1")
    protect = web.api("POST", f"{SHARE}/aliases/protect", token=web.tokens[world.first],
                      json={"model": world.model, "alias": "release", "require_approval": True})
    assert protect.ok, protect.text
    page = new_page()
    login_local(page, world.first, next_path="/")
    page.goto(f"/#/models/{quote(world.model, safe='')}/versions/3")
    editor = page.locator('main button[data-component-id*="modelversionviewaliaseditor"]')
    editor.first.click(timeout=60_000)
    dialog = page.get_by_role("dialog")
    combobox = dialog.get_by_role("combobox")
    combobox.fill("release")
    combobox.press("Enter")
    with page.expect_response(lambda r: "registered-models/alias" in r.url) as answer:
        dialog.locator('[data-component-id="mlflow.edit-aliases-modal.save-button"]').click()
    assert answer.value.status == 403
    expect(dialog).to_contain_text(
        f"Alias 'release' of '{world.model}' moves only with a second maintainer's approval: "
        "request the move in the model's Permissions tab in MLflow's UI (Protected aliases → "
        f"Request move), or from a terminal with: mlflow-share alias request {world.model} "
        "release VERSION --reason TEXT.", timeout=WAIT)
    assert _alias_now(web, world.model, "release") == "1"
