"""One product: MLflow's own UI knows who is signed in (its account routes answered in
basic-auth's format), its Logout ends the mlflow-share session, and a deep link into MLflow's
UI survives logging in."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from tests.browser.conftest import login_local
from tests.conftest import USER_PASSWORD, ShareServer

pytestmark = pytest.mark.browser
CURRENT = "/ajax-api/2.0/mlflow/users/current"


def test_mlflow_ui_knows_the_signed_in_user(web: ShareServer, new_page: Any) -> None:
    page = new_page()
    login_local(page, "alice", next_path="/")
    answers: list[Any] = []
    page.on("response", lambda r: answers.append(r) if CURRENT in r.url else None)
    page.reload()
    page.wait_for_function("() => document.body.innerText.includes('alice')")
    assert answers and answers[0].status == 200
    assert answers[0].json() == {"user": {"id": answers[0].json()["user"]["id"],
                                          "username": "alice", "is_admin": False},
                                 "is_basic_auth": True}
    # Every client gets the same answer: a token, and nobody at all.
    token = requests.get(web.url + CURRENT, timeout=30,
                         headers={"Authorization": f"Bearer {web.tokens['bob']}"})
    assert token.json()["user"]["username"] == "bob"
    assert requests.get(web.url + CURRENT, timeout=30).status_code == 401


def test_mlflow_ui_logout_ends_the_session(web: ShareServer, new_page: Any) -> None:
    page = new_page()
    login_local(page, "aaron", next_path="/")
    # What MLflow UI's Logout does: ask users/current with made-up credentials, then go home.
    status = page.evaluate("""() => new Promise((done) => {
        const xhr = new XMLHttpRequest();
        xhr.open("GET", "ajax-api/2.0/mlflow/users/current", true,
                 "mlflow-logged-out-x1", "mlflow-logged-out-x1");
        xhr.onloadend = () => done(xhr.status);
        xhr.timeout = 20000;
        try { xhr.send(); } catch (e) { done(String(e)); }
    })""")
    assert status == 401
    page.goto("/")
    page.wait_for_url(re.compile(".*/share/login.*"))
    assert page.context.request.get("/share/session").status == 401  # the cookie is gone


def test_a_deep_link_survives_logging_in(web: ShareServer, new_page: Any) -> None:
    page = new_page()
    page.goto("/#/models")
    page.wait_for_url(re.compile(".*/share/login.*"))
    page.fill("input[name=username]", "ava")
    page.fill("input[name=password]", USER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/#/models$"))


def test_mlflow_ui_links_to_the_share_pages_and_back(web: ShareServer, new_page: Any) -> None:
    page = new_page()
    login_local(page, "aaron", next_path="/")
    page.goto("/#/experiments")
    sharing = page.locator("#mlflow-share-nav")
    sharing.get_by_role("link", name="Access control").click()
    page.wait_for_url(re.compile(r".*/share/access$"))
    page.locator("aside.sidebar").get_by_role("link", name="Experiments").click()
    page.wait_for_url(re.compile(r".*/#/experiments$"))
    page.locator("#mlflow-share-nav").get_by_role("link", name="Model sharing").click()
    page.wait_for_url(re.compile(r".*/share/$"))
    assert page.locator("aside.sidebar a.active").inner_text() == "Model sharing"
    assert page.locator("#me").inner_text() == "aaron"


def test_admin_only_features_are_shown_to_admins_only(web: ShareServer, new_page: Any) -> None:
    """The AI gateway, LLM connections, webhooks and the assistant answer only org admins
    here: MLflow's UI does not offer them to anyone else."""
    hidden = """(selector) => document.querySelectorAll(selector).length > 0 && [...document
        .querySelectorAll(selector)].every((node) => !node.checkVisibility())"""
    page = new_page()
    login_local(page, "alice", next_path="/")
    page.locator("#mlflow-share-nav").wait_for()
    page.wait_for_function(hidden, arg='a[href^="#/gateway"], [data-assistant-ui]')
    page.goto("/#/settings/general")
    page.wait_for_function(
        hidden, arg='a[href^="#/settings/webhooks"], a[href^="#/settings/llm-connections"]')
    admin = new_page()
    login_local(admin, *web.admin_auth(), next_path="/")
    admin.locator("#mlflow-share-nav").wait_for()
    admin.locator('aside a[href^="#/gateway"]').wait_for(state="visible")
    admin.goto("/#/settings/general")
    admin.locator('a[href^="#/settings/webhooks"]').wait_for(state="visible")


def test_share_errors_are_pages_for_browsers(web: ShareServer, new_page: Any) -> None:
    page = new_page()
    login_local(page, "bea", next_path="/share/")
    response = page.goto("/share/no-such-page")
    assert response is not None and response.status == 404
    assert page.locator("h1").inner_text() == "Page not found"
    page.get_by_role("link", name="Model registry").click()
    page.wait_for_url(re.compile(r".*/share/$"))
    # Scripts and API clients keep MLflow's JSON envelope.
    api = requests.get(web.url + "/share/no-such-page", timeout=30,
                       headers={"Authorization": f"Bearer {web.tokens['bea']}"})
    assert api.status_code == 404 and api.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    # A refused SSO login (the provider's error) is a page too.
    refused = page.goto("/share/oidc/callback?error=access_denied")
    assert refused is not None and refused.status == 403
    assert "access_denied" in page.locator("#error-message").inner_text()
