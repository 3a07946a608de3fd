"""The Permissions tab injected into MLflow's own UI on a registered model's page, end to end:
the stock MLflow client for the model, chromium for MLflow's UI with the tab."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.conftest import login_local
from tests.conftest import ShareServer

pytestmark = pytest.mark.browser
TAB = "#mlflow-share-permissions-tab"
PANEL = "#mlflow-share-permissions-panel"
FORM = "#mlflow-share-grant-form"


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


def _grant_rows(page: Any) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"{PANEL} tr.mlflow-share-grant",
        "rows => rows.map(r => [...r.cells].slice(0, 4).map(c => c.textContent.trim()))")


def _grant_in_tab(page: Any, team: str, permission: str) -> None:
    """Fill and send the grant form. MLflow may re-render the page around the tab while the
    test types (its Assistant panel opens on a first visit), which can redraw the form: then
    fill it again (granting twice is harmless)."""
    row = page.locator(f'{PANEL} tr.mlflow-share-grant[data-team="{team}"]')
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
    assert "No grants: only team-a has access." in panel.inner_text()
    assert _grant_rows(alice) == []
    assert panel.get_by_role("heading", name="Sharing packages", exact=True).count() == 1
    assert "No sharing packages." in panel.inner_text()
    assert "No protected aliases." in panel.inner_text()

    _grant_in_tab(alice, "team-b", "read")
    [[team, permission, since, by]] = _grant_rows(alice)
    assert (team, permission, by) == ("team-b", "read", "alice")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", since), since
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
    assert _grant_rows(bob) == [["team-b", "read", since, "alice"]]
    assert bob_panel.locator("#mlflow-share-access-mode").inner_text().startswith("bob: read-only")
    assert bob_panel.locator(FORM).count() == 0
    assert bob_panel.locator("button.mlflow-share-revoke").count() == 0
    assert bob_panel.get_attribute("data-can-manage") == "false"

    # alice revokes it in the tab: bob is refused again.
    alice.click(f'{PANEL} button[aria-label="Revoke read from team-b"]')
    alice.locator(f"{PANEL} >> text=No grants: only team-a has access.").wait_for()
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
    rows = _grant_rows(page)
    assert [r[:2] + r[3:] for r in rows] == [["team-c", "execute", "admin"]]
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
