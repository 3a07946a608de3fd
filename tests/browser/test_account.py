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
