"""The Model Registry portal (/share/): discovering models, creating a sharing package through
its form, reading the validation report, publishing and revoking — in chromium, with real ONNX
model versions logged by the stock MLflow client, and checked from the other teams' side."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.browser.conftest import login_local
from tests.conftest import ShareServer
from tests.integration.test_sharing import X, _log_onnx, _onnx_files, _register_files

pytestmark = pytest.mark.browser
VALIDATION_TIMEOUT = 120_000  # ms: the checks load and run the model on a busy machine


@pytest.fixture
def stock(web: ShareServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The stock MlflowClient as a given user, by token: ``stock("bob").get_model_version``."""
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)

    def as_user(user: str) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", web.tokens[user])
        return MlflowClient(tracking_uri=web.url, registry_uri=web.url)

    yield as_user
    mlflow.set_tracking_uri(None)  # _log_onnx points the fluent API at the server


def _denied(call: Any) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        call()
    except MlflowException as exc:
        return exc.error_code in ("PERMISSION_DENIED", "RESOURCE_DOES_NOT_EXIST")
    return False


def _watch(page: Any) -> list[str]:
    """Script errors, console errors (a CSP violation is one) and failed responses of the page
    (the login page's favicon request aside)."""
    problems: list[str] = []

    def console(message: Any) -> None:
        url = message.location.get("url", "")
        if message.type == "error" and not url.endswith("/favicon.ico"):
            problems.append(f"console: {message.text} {url}")

    def response(answer: Any) -> None:
        if answer.status >= 400:
            problems.append(f"{answer.status} {answer.url}")

    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", console)
    page.on("response", response)
    return problems


def _open_portal(page: Any, user: str) -> None:
    login_local(page, user, next_path="/share/")
    page.wait_for_selector("#discover[data-state=ready]")
    page.wait_for_selector("#packages-section[data-state=ready]")


def _fill_package(page: Any, name: str, version: str, *, semver: str, description: str,
                  contact: str, teams: list[tuple[str, str]]) -> None:
    page.select_option("#pkg-model", name)
    page.wait_for_selector(f"#pkg-version option[value='{version}']", state="attached")
    page.select_option("#pkg-version", version)
    page.fill("#pkg-semver", semver)
    page.fill("#pkg-description", description)
    page.fill("#pkg-intended-use", "weekly churn scoring")
    page.fill("#pkg-limitations", "EU customers only")
    page.fill("#pkg-contact", contact)
    rows = page.locator("#team-rows .team-row")
    for index, (team, permission) in enumerate(teams):
        if index:
            page.click("#add-team")
        rows.nth(index).locator("[name=team]").fill(team)
        rows.nth(index).locator("[name=permission]").select_option(permission)
    assert rows.count() == len(teams)


def test_package_created_validated_and_published_in_the_portal(
        web: ShareServer, new_page: Any, stock: Any) -> None:
    from playwright.sync_api import expect

    name = f"portal-churn-{uuid.uuid4().hex[:8]}"
    assert _log_onnx(web, "alice", name, params={"C": 1.0}) == "1"
    assert _denied(lambda: stock("bob").get_model_version(name, "1"))

    alice = new_page()
    problems = _watch(alice)
    _open_portal(alice, "alice")
    row = alice.locator(f"#models tr[data-model='{name}']")
    expect(row).to_contain_text("team-a")
    expect(row).to_contain_text("v1")
    expect(row.locator("[data-status]")).to_have_text("none")

    _fill_package(alice, name, "1", semver="1.0.0",
                  description="Churn classifier for the retention team",
                  contact="alice@team-a.example", teams=[("team-b", "execute"),
                                                         ("team-b", "read")])
    alice.click("#submit-package")
    status = alice.locator("#package-status")
    expect(status).to_have_text("validated", timeout=VALIDATION_TIMEOUT)
    expect(alice.locator("#report-summary")).to_have_text("All 4 checks passed.")
    for check in ("metadata", "manifest", "onnx", "input_example"):
        result = alice.locator(f"#validation-report [data-check={check}]")
        expect(result).to_have_attribute("data-ok", "true")
        expect(result).to_contain_text("pass")
    expect(alice.locator("#validation-report")).not_to_contain_text("fail")
    expect(alice.locator("#package-report")).to_contain_text("team-b: execute, read")
    package_id = alice.locator("#package-id").inner_text().strip()
    # Validated is not yet shared: bob still gets nothing.
    assert _denied(lambda: stock("bob").get_model_version(name, "1"))

    alice.click("#publish-package")
    expect(status).to_have_text("published", timeout=VALIDATION_TIMEOUT)
    expect(alice.locator("#publish-package")).to_have_count(0)
    listed = alice.locator(f"#packages tr[data-package='{package_id}']")
    expect(listed).to_contain_text("published")
    expect(listed).to_contain_text("1.0.0")
    expect(row.locator("[data-status]")).to_have_text("published")
    expect(row).to_contain_text("1.0.0")

    # Bob (team-b, a target) finds it in his portal, with its semver, status and contact.
    bob = new_page()
    problems += _watch(bob)
    _open_portal(bob, "bob")
    shared = bob.locator(f"#models tr[data-model='{name}']")
    expect(shared).to_contain_text("1.0.0")
    expect(shared).to_contain_text("published")
    expect(shared).to_contain_text("team-a")
    expect(shared).to_contain_text("shared with you")
    expect(shared).to_contain_text("alice@team-a.example")
    shared.locator(".details-toggle").click()
    detail = bob.locator(f"tr.detail[data-detail-of='{name}']")
    expect(detail).to_contain_text("1.0.0 → version 1")
    expect(detail).to_contain_text("EU customers only")
    expect(bob.locator(f"#packages tr[data-package='{package_id}']")).to_contain_text("published")
    # Not a maintainer of the owner team: no revoke or publish for him.
    expect(bob.locator(f"#packages tr[data-package='{package_id}'] .revoke")).to_have_count(0)
    # ... and his stock MLflow client, by token, now reads the version.
    version = stock("bob").get_model_version(name, "1")
    assert version.version == "1" and version.tags["mlflow_share.semver"] == "1.0.0"

    # Carl (team-c, not a target) sees neither the model nor its package.
    carl = new_page()
    _open_portal(carl, "carl")
    expect(carl.locator(f"#models tr[data-model='{name}']")).to_have_count(0)
    expect(carl.locator(f"#packages tr[data-package='{package_id}']")).to_have_count(0)
    assert name not in carl.locator("#app").inner_text()
    assert _denied(lambda: stock("carl").get_model_version(name, "1"))

    # Alice revokes it from the packages list: bob loses access at once.
    alice.once("dialog", lambda dialog: dialog.accept())
    alice.locator(f"#packages tr[data-package='{package_id}'] .revoke").click()
    expect(status).to_have_text("revoked", timeout=VALIDATION_TIMEOUT)
    expect(listed).to_contain_text("revoked")
    assert _denied(lambda: stock("bob").get_model_version(name, "1"))
    assert problems == []


def test_rejected_package_shows_failing_checks_and_cannot_be_published(
        web: ShareServer, new_page: Any) -> None:
    from playwright.sync_api import expect

    name = f"portal-noexample-{uuid.uuid4().hex[:8]}"
    files = _onnx_files(X[:2].tolist())
    mlmodel = yaml.safe_load(files.pop("MLmodel"))
    mlmodel.pop("saved_input_example_info")  # a version logged without an input example
    files.pop("input_example.json")
    files.pop("serving_input_example.json")
    files["MLmodel"] = yaml.safe_dump(mlmodel).encode()
    assert _register_files(web, name, files) == "1"  # as alice

    page = new_page()
    problems = _watch(page)
    _open_portal(page, "alice")
    _fill_package(page, name, "1", semver="1.0", description="No example here",
                  contact="alice@team-a.example", teams=[("team-b", "read")])
    page.click("#submit-package")
    expect(page.locator("#package-status")).to_have_text("rejected", timeout=VALIDATION_TIMEOUT)
    expect(page.locator("#report-summary")).to_have_text("2 of 4 checks failed.")
    metadata = page.locator("#validation-report [data-check=metadata]")
    expect(metadata).to_have_attribute("data-ok", "false")
    expect(metadata).to_contain_text("fail")
    expect(metadata).to_contain_text("Invalid semantic version '1.0'")
    example = page.locator("#validation-report [data-check=input_example]")
    expect(example).to_have_attribute("data-ok", "false")
    expect(example).to_contain_text("No input example was logged with the model")
    for check in ("manifest", "onnx"):
        expect(page.locator(f"#validation-report [data-check={check}]")).to_contain_text("pass")
    expect(page.locator("#publish-package")).to_have_count(0)
    expect(page.locator("#package-actions")).to_contain_text("cannot be published")
    package_id = page.locator("#package-id").inner_text().strip()
    listed = page.locator(f"#packages tr[data-package='{package_id}']")
    expect(listed).to_contain_text("rejected")
    expect(listed.locator(".publish")).to_have_count(0)
    expect(listed.locator(".revoke")).to_have_count(0)
    row = page.locator(f"#models tr[data-model='{name}'] [data-status]")
    expect(row).to_have_text("rejected")
    # The server agrees: it is rejected and stays unpublishable.
    answer = web.api("POST", f"/api/2.0/mlflow-share/packages/{package_id}/publish",
                     token=web.tokens["alice"])
    assert answer.status_code == 409, answer.text
    assert problems == []
