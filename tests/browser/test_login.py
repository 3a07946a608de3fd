"""Logging in: SSO through a real OpenID Connect provider, local accounts, sessions, CSRF."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.browser.conftest import login_local, login_sso
from tests.conftest import ShareServer

pytestmark = pytest.mark.browser
SHARE = "/api/2.0/mlflow-share"


def _session_of(page: Any) -> dict[str, Any]:
    return page.evaluate("fetch('/share/session').then(r => r.json())")


def test_sso_login_provisions_the_user_in_the_claimed_team(web: ShareServer, new_page: Any) -> None:
    page = new_page()
    login_sso(page, "sso-ann")
    assert page.locator("#me").inner_text() == "sso-ann"
    session = _session_of(page)
    assert session["teams"] == {"team-a": "maintainer"} and not session["is_admin"]
    # The provisioned user is a member of team-a for every client, and has no password.
    teams = web.admin("GET", "/teams").json()["teams"]
    members = {m["user"]: m["role"] for t in teams if t["name"] == "team-a" for m in t["members"]}
    assert members["sso-ann"] == "maintainer"


def test_local_login_logout_and_pages_need_a_session(web: ShareServer, new_page: Any) -> None:
    page = new_page()
    page.goto("/share/access")
    assert "/share/login" in page.url  # sent to log in, and back afterwards
    login_local(page, "alice", next_path="/share/access")
    assert page.locator("#me").inner_text() == "alice"
    page.click("#logout")
    page.wait_for_url(re.compile(".*/share/login.*"))
    page.goto("/")  # MLflow's UI too needs a session
    assert "/share/login" in page.url


def test_a_cross_site_form_post_is_refused(web: ShareServer, new_page: Any) -> None:
    """An attacker's page on another port of the same host (same site: the browser sends the
    session cookie) posts a form to the server in alice's browser: refused, nothing made."""
    form = (f'<form id="f" method="post" action="{web.url}{SHARE}/teams" enctype="text/plain">'
            '<input name=\'{"name": "evil", "x": "\' value=\'"}\'></form>').encode()

    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(form)

        def log_message(self, *args: Any) -> None:
            pass

    attacker_server = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=attacker_server.serve_forever, daemon=True).start()
    try:
        page = new_page()
        login_local(page, "alice")
        page.goto(f"http://127.0.0.1:{attacker_server.server_port}/")
        with page.expect_response(lambda r: r.url.endswith("/teams")) as posted:
            page.evaluate("document.getElementById('f').submit()")
        assert posted.value.status == 403
    finally:
        attacker_server.shutdown()
    assert "evil" not in {t["name"] for t in web.admin("GET", "/teams").json()["teams"]}


def test_tampered_or_ended_sessions_are_refused(web: ShareServer, new_page: Any) -> None:
    page = new_page()
    login_local(page, "bob")
    cookie = next(c for c in page.context.cookies() if c["name"] == "mlflow_share_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Lax"
    jar = {"mlflow_share_session": cookie["value"]}
    assert requests.get(f"{web.url}{SHARE}/whoami", cookies=jar).json()["user"] == "bob"
    tampered = {"mlflow_share_session": cookie["value"][:-3] + "abc"}
    answer = requests.get(f"{web.url}{SHARE}/whoami", cookies=tampered)
    assert answer.status_code == 401 and "WWW-Authenticate" not in answer.headers
    # Without the CSRF header a state-changing call with the cookie alone is refused.
    refused = requests.post(f"{web.url}{SHARE}/tokens", cookies=jar, json={"user": "bob"})
    assert refused.status_code == 403 and "CSRF" in refused.json()["message"]
    page.click("#logout")
    page.wait_for_url(re.compile(".*/share/login.*"))
    assert requests.get(f"{web.url}{SHARE}/whoami", cookies=jar).status_code == 401


def test_pages_carry_security_headers(web: ShareServer, new_page: Any) -> None:
    page = new_page()
    login_local(page, "alice")
    response = page.goto("/share/")
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    ui = page.goto("/")
    assert "frame-ancestors 'none'" in ui.headers["content-security-policy"]


@pytest.mark.parametrize("case", ["state", "replayed-state", "other-browser"])
def test_oidc_callback_refuses_bad_state(web: ShareServer, new_page: Any, case: str) -> None:
    page = new_page()
    if case == "state":
        answer = page.goto("/share/oidc/callback?state=forged&code=abc")
        assert answer.status == 403
    elif case == "other-browser":
        # Login CSRF: an attacker logs in at the provider as themself, keeps the callback
        # link and sends it to a victim; in the victim's browser it opens no session.
        page.route("**/share/oidc/callback*", lambda route: route.abort())
        page.goto("/share/login")
        page.click("#sso")
        page.fill("input[name=sub]", "sso-ben")
        with page.expect_request("**/share/oidc/callback*") as kept:
            page.click("button[type=submit]:has-text('Authorize')")
        victim = new_page()
        assert victim.goto(kept.value.url).status == 403
        assert not [c for c in victim.context.cookies() if c["name"] == "mlflow_share_session"]
    else:
        # A real login, then its callback URL replayed: the state works once.
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url) if "/oidc/callback" in r.url else None)
        login_sso(page, "sso-ben")
        fresh = new_page()
        assert fresh.goto(urls[0]).status == 403


def test_a_login_the_identity_provider_denies_opens_no_session(web: ShareServer,
                                                               new_page: Any) -> None:
    page = new_page()
    page.goto("/share/login")
    page.click("#sso")
    with page.expect_response(lambda r: "/share/oidc/callback" in r.url) as callback:
        page.click("button[value=deny]")
    assert callback.value.status == 403
    assert not [c for c in page.context.cookies() if c["name"] == "mlflow_share_session"]
    page.goto("/share/")
    assert "/share/login" in page.url


def test_another_origin_cannot_use_the_session(web: ShareServer, new_page: Any) -> None:
    """MLflow lets pages on other localhost ports read credentialed answers (CORS), and the
    session cookie reaches them (same site): the session opens nothing to them."""
    page = new_page()
    login_local(page, "alice")
    cookie = next(c for c in page.context.cookies() if c["name"] == "mlflow_share_session")
    jar = {"mlflow_share_session": cookie["value"]}
    host = web.url.split("//", 1)[1]
    own = requests.get(f"{web.url}{SHARE}/whoami", cookies=jar,
                       headers={"Origin": web.url, "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 200
    for headers in ({"Origin": "http://localhost:8888", "Sec-Fetch-Site": "same-site"},
                    {"Origin": "http://localhost:8888"},  # a browser without Sec-Fetch-*
                    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}):
        answer = requests.get(f"{web.url}{SHARE}/tokens", cookies=jar, headers=headers)
        assert answer.status_code == 403, (headers, answer.text)
    # A top-level navigation (the way back from the identity provider) still opens the page.
    navigation = requests.get(f"{web.url}/share/", cookies=jar, allow_redirects=False, headers={
        "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Host": host})
    assert navigation.status_code == 200
