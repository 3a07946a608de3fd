"""Browser tests: Debian's chromium driven by Playwright against a real mlflow-share server
that logs users in through a real OpenID Connect provider on loopback (oidc-provider-mock).

A failing test leaves a screenshot of its page in ``test-results/screenshots/`` (named after
the test), and its path in the report.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import USER_PASSWORD, ShareServer, free_port, populate, running_server

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("MLFLOW_SHARE_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-results" / "screenshots"
CLIENT_ID = "mlflow-share-tests"
CLIENT_SECRET = "client-secret-for-tests"
# People known to the identity provider: sub -> groups claim.
SSO_PEOPLE = {
    "sso-ann": ["team-a:maintainer"],
    "sso-ben": ["team-b:engineer", "team-b"],
    "sso-root": ["mlflow-share-admins"],
}


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[str]:
    from oidc_provider_mock import User, run_server_in_thread

    users = [User(sub=sub, claims={"preferred_username": sub, "email": f"{sub}@example.test",
                                   "groups": groups})
             for sub, groups in SSO_PEOPLE.items()]
    with run_server_in_thread(port=free_port(), user_claims=users) as provider:
        yield f"http://localhost:{provider.server_port}"


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory, oidc_issuer: str) -> Iterator[ShareServer]:
    """A server with SSO and the gateway mounted, and the default world of users."""
    env = {"MLFLOW_SHARE_OIDC_ISSUER": oidc_issuer, "MLFLOW_SHARE_OIDC_CLIENT_ID": CLIENT_ID,
           "MLFLOW_SHARE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
           "MLFLOW_SHARE_OIDC_ADMIN_GROUP": "mlflow-share-admins", "MLFLOW_SHARE_GATEWAY": "1",
           "MLFLOW_SHARE_USAGE_FLUSH_SECONDS": "1"}
    with running_server(tmp_path_factory.mktemp("web-server"), env_extra=env) as server:
        populate(server)
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser: Any, web: ShareServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``new_page()``: a page in a fresh browser context (its own cookies), as many as a test
    needs (one per user). Each is screenshotted if the test fails."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(base_url=web.url)
        context.set_default_timeout(30_000)  # CI runs two test processes on two cores
        # MLflow's model list opens a modal about its registry UI on a first visit, at a
        # moment of its own; it takes the focus (a key meant for the page lands on its "Try
        # it now"). A user dismisses it once: these pages start with it dismissed.
        context.add_init_script(
            "try { localStorage.setItem('_mlflow_model_registry_promo_modal_dismissed_v1', 'true'); }"
            " catch (e) {}")
        contexts.append(context)
        return context.new_page()

    yield make
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
        for index, context in enumerate(contexts):
            for number, page in enumerate(context.pages):
                path = SCREENSHOTS / f"{name}-{index}-{number}.png"
                try:
                    page.screenshot(path=str(path), full_page=True)
                    report.sections.append(("screenshot", str(path)))
                except Exception:  # noqa: BLE001 - a closed page has nothing to show
                    pass
    for context in contexts:
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
        if report.failed and "web" in item.fixturenames:
            server = item.funcargs.get("web")
            if server is not None and server.log.exists():
                report.sections.append(("server log (tail)", server.log.read_text()[-6000:]))


def login_local(page: Any, user: str, password: str = USER_PASSWORD, next_path: str = "/share/"
                ) -> None:
    page.goto(f"/share/login?next={next_path}")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(".*" + re.escape(next_path.split("?")[0]) + ".*"))


def login_sso(page: Any, sub: str, next_path: str = "/share/") -> None:
    """Through the identity provider's own authorization form."""
    page.goto(f"/share/login?next={next_path}")
    page.click("#sso")
    page.fill("input[name=sub]", sub)
    page.click("button[type=submit]:has-text('Authorize')")
    page.wait_for_url(re.compile(".*" + re.escape(next_path.split("?")[0]) + ".*"))


def api_as(server: ShareServer, user: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {server.tokens[user]}"
    return session


__all__ = ["SSO_PEOPLE", "api_as", "login_local", "login_sso", "shutil"]
