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
from tests.conftest import USER_PASSWORD, ShareServer
from tests.integration.test_sharing import X, _cli, _log_onnx, _onnx_files, _register_files

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


def _without_example() -> dict[str, bytes]:
    """The files of a version logged without an input example (rejected by validation)."""
    files = _onnx_files(X[:2].tolist())
    mlmodel = yaml.safe_load(files.pop("MLmodel"))
    mlmodel.pop("saved_input_example_info")
    files.pop("input_example.json")
    files.pop("serving_input_example.json")
    files["MLmodel"] = yaml.safe_dump(mlmodel).encode()
    return files


def test_rejected_package_shows_failing_checks_and_cannot_be_published(
        web: ShareServer, new_page: Any) -> None:
    from playwright.sync_api import expect

    name = f"portal-noexample-{uuid.uuid4().hex[:8]}"
    assert _register_files(web, name, _without_example()) == "1"  # as alice

    page = new_page()
    problems = _watch(page)
    _open_portal(page, "alice")
    _fill_package(page, name, "1", semver="1.0.0", description="No example here",
                  contact="alice@team-a.example", teams=[("team-b", "read")])
    page.click("#submit-package")
    expect(page.locator("#package-status")).to_have_text("rejected", timeout=VALIDATION_TIMEOUT)
    expect(page.locator("#report-summary")).to_have_text("1 of 4 checks failed.")
    example = page.locator("#validation-report [data-check=input_example]")
    expect(example).to_have_attribute("data-ok", "false")
    expect(example).to_contain_text("fail")
    expect(example).to_contain_text("No input example was logged with the model")
    for check in ("metadata", "manifest", "onnx"):
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


def test_the_form_checks_fields_before_it_submits(web: ShareServer, new_page: Any) -> None:
    """Semantic version, expiry, target teams: each problem is said next to its field and
    nothing is sent; once they are fixed, the package is created."""
    from playwright.sync_api import expect

    name = f"portal-checks-{uuid.uuid4().hex[:8]}"
    assert _register_files(web, name, _onnx_files(X[:2].tolist())) == "1"  # as alice
    page = new_page()
    problems = _watch(page)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method != "GET" else None)
    _open_portal(page, "alice")
    _fill_package(page, name, "1", semver="1.0", description="Checked before it is sent",
                  contact="alice@team-a.example",
                  teams=[("team-a", "read"), ("team-b", "read"), ("team-b", "read")])
    page.fill("#pkg-expires", "0")
    page.click("#submit-package")
    expect(page.locator("#pkg-semver-error")).to_contain_text("not a semantic version")
    expect(page.locator("#pkg-semver")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#pkg-expires-error")).to_contain_text("from 1 to 3650")
    rows = page.locator("#team-rows .team-row")
    expect(rows.nth(0).locator(".field-error")).to_contain_text("team-a owns this model")
    expect(rows.nth(1).locator(".field-error")).to_have_text("")
    expect(rows.nth(2).locator(".field-error")).to_contain_text("team-b already has read")
    expect(page.locator("#form-problems")).to_contain_text("4 fields need a change")
    expect(page.locator("#pkg-semver")).to_be_focused()

    # Each message follows its field as it is fixed.
    page.fill("#pkg-semver", "1.0.0+build.7")
    expect(page.locator("#pkg-semver-error")).to_contain_text("build metadata")
    page.fill("#pkg-semver", "1.0.0-rc.1")
    expect(page.locator("#pkg-semver-error")).to_have_text("")
    page.fill("#pkg-expires", "3651")
    expect(page.locator("#pkg-expires-error")).to_contain_text("from 1 to 3650")
    page.fill("#pkg-expires", "30")
    expect(page.locator("#pkg-expires-error")).to_have_text("")
    rows.nth(2).locator("[name=permission]").select_option("execute")
    expect(rows.nth(2).locator(".field-error")).to_have_text("")
    for index in (0, 1, 2):
        rows.nth(index).locator("[name=team]").fill("")
    page.click("#submit-package")
    expect(page.locator("#pkg-teams-error")).to_have_text("Add at least one target team.")
    assert not [url for url in sent if "/packages" in url], sent  # nothing was submitted

    rows.nth(0).locator("[name=team]").fill("team-b")
    expect(page.locator("#pkg-teams-error")).to_have_text("")
    page.click("#submit-package")
    expect(page.locator("#package-status")).to_have_text("validated",
                                                         timeout=VALIDATION_TIMEOUT)
    expect(page.locator("#package-semver")).to_have_text("1.0.0-rc.1")
    # The server still checks what the page checks (here: the owner team as a target).
    refused = web.api("POST", "/api/2.0/mlflow-share/packages", token=web.tokens["alice"],
                      json={"model": name, "versions": ["1"], "description": "x",
                            "teams": [{"team": "team-a", "permission": "read"}]})
    assert refused.status_code == 400 and "owns" in refused.json()["message"]
    assert problems == []


def test_the_form_is_disabled_for_who_may_write_on_no_model(web: ShareServer,
                                                            new_page: Any) -> None:
    from playwright.sync_api import expect

    suffix = uuid.uuid4().hex[:8]
    team, user, name = f"readers-{suffix}", f"reader-{suffix}", f"portal-read-{suffix}"
    web.admin("POST", "/teams", json={"name": team})
    web.admin("POST", "/users", json={"name": user, "password": USER_PASSWORD})
    web.admin("POST", "/teams/members", json={"team": team, "user": user, "role": "engineer"})
    assert _register_files(web, name, _onnx_files(X[:2].tolist())) == "1"  # as alice
    assert web.api("POST", "/api/2.0/mlflow-share/grants", token=web.tokens["alice"], json={
        "model": name, "team": team, "permission": "read"}).ok

    page = new_page()
    problems = _watch(page)
    _open_portal(page, user)
    expect(page.locator(f"#models tr[data-model='{name}']")).to_have_count(1)  # it reads it
    expect(page.locator("#create-package")).to_have_attribute("data-state", "disabled")
    expect(page.locator("#create-hint")).to_contain_text("none of your teams may write")
    for control in ("#pkg-model", "#pkg-semver", "#add-team", "#submit-package"):
        expect(page.locator(control)).to_be_disabled()
    # A write grant is enough: the form opens for the model it names, and only that one.
    assert web.api("POST", "/api/2.0/mlflow-share/grants", token=web.tokens["alice"], json={
        "model": name, "team": team, "permission": "write"}).ok
    page.reload()
    page.wait_for_selector("#packages-section[data-state=ready]")
    expect(page.locator("#create-package")).to_have_attribute("data-state", "ready")
    expect(page.locator("#submit-package")).to_be_enabled()
    expect(page.locator("#pkg-model option[value]:not([value=''])")).to_have_count(1)
    expect(page.locator(f"#pkg-model option[value='{name}']")).to_have_count(1)
    assert problems == []


def test_a_rejected_package_is_edited_and_another_withdrawn(web: ShareServer,
                                                            new_page: Any) -> None:
    from playwright.sync_api import expect

    name = f"portal-edit-{uuid.uuid4().hex[:8]}"
    assert _register_files(web, name, _without_example()) == "1"  # as alice
    assert _register_files(web, name, _onnx_files(X[:2].tolist())) == "2"
    share = "/api/2.0/mlflow-share/packages"
    rejected = web.api("POST", share, token=web.tokens["alice"], json={
        "model": name, "versions": ["1"], "description": "First try",
        "teams": [{"team": "team-b", "permission": "read"}]}).json()["package"]
    assert rejected["status"] == "rejected"
    spare = web.api("POST", share, token=web.tokens["alice"], json={
        "model": name, "versions": ["2"], "description": "Not needed after all",
        "teams": [{"team": "team-c", "permission": "read"}]}).json()["package"]
    assert spare["status"] == "validated"

    # Bob (team-b, a target of the rejected one) sees neither: nothing is published.
    bob = new_page()
    _open_portal(bob, "bob")
    for package in (rejected, spare):
        expect(bob.locator(f"#packages tr[data-package='{package['id']}']")).to_have_count(0)

    page = new_page()
    problems = _watch(page)
    _open_portal(page, "aaron")  # an engineer of team-a: writes, does not publish
    row = page.locator(f"#packages tr[data-package='{rejected['id']}']")
    expect(row.locator(".withdraw")).to_have_count(1)
    expect(row.locator(".revoke")).to_have_count(0)
    row.locator(".edit").click()
    expect(page.locator("#create-title")).to_have_text(f"Edit sharing package {rejected['id']}")
    page.click("#cancel-edit")  # back to creating, nothing changed
    expect(page.locator("#create-title")).to_have_text("Create sharing package")
    expect(page.locator("#pkg-model")).to_be_enabled()
    expect(page.locator("#cancel-edit")).to_be_hidden()
    row.locator(".edit").click()
    expect(page.locator("#create-title")).to_have_text(f"Edit sharing package {rejected['id']}")
    expect(page.locator("#pkg-model")).to_be_disabled()
    expect(page.locator("#pkg-model")).to_have_value(name)
    expect(page.locator("#pkg-description")).to_have_value("First try")
    expect(page.locator("#team-rows [name=team]")).to_have_value("team-b")
    expect(page.locator("#pkg-version")).to_have_value("1")
    page.select_option("#pkg-version", "2")
    page.fill("#pkg-description", "Second try, with an input example")
    page.fill("#pkg-semver", "2.0.0")
    page.click("#submit-package")  # "Save and validate again"
    status = page.locator("#package-status")
    expect(status).to_have_text("validated", timeout=VALIDATION_TIMEOUT)
    expect(page.locator("#package-id")).to_have_text(rejected["id"])
    expect(page.locator("#create-title")).to_have_text("Create sharing package")
    expect(row).to_contain_text("validated")
    expect(row).to_contain_text("v2")
    expect(row).to_contain_text("2.0.0")
    stored = web.api("GET", f"{share}/{rejected['id']}", token=web.tokens["alice"]).json()[
        "package"]
    assert (stored["versions"], stored["description"], stored["semver"]) == (
        ["2"], "Second try, with an input example", "2.0.0")

    # Withdraw asks in the row: cancel keeps it, confirm deletes it.
    other = page.locator(f"#packages tr[data-package='{spare['id']}']")
    other.locator(".withdraw").click()
    expect(other).to_contain_text("the audit log keeps its record")
    other.locator(".cancel-withdraw").click()
    expect(other.locator(".withdraw")).to_have_count(1)
    assert web.api("GET", f"{share}/{spare['id']}", token=web.tokens["alice"]).ok
    other.locator(".withdraw").click()
    other.locator(".confirm-withdraw").click()
    expect(other).to_have_count(0)
    gone = web.api("GET", f"{share}/{spare['id']}", token=web.tokens["alice"])
    assert gone.status_code == 404
    assert problems == []


def test_a_package_shows_where_its_alias_points_now(web: ShareServer, new_page: Any) -> None:
    from playwright.sync_api import expect

    name = f"portal-alias-{uuid.uuid4().hex[:8]}"
    for expected in ("1", "2"):
        assert _register_files(web, name, _onnx_files(X[:2].tolist())) == expected
    alias_url = "/api/2.0/mlflow/registered-models/alias"
    token = web.tokens["alice"]
    assert web.api("POST", alias_url, token=token, json={
        "name": name, "alias": "champion", "version": "1"}).ok
    package = web.api("POST", "/api/2.0/mlflow-share/packages", token=token, json={
        "model": name, "alias": "champion", "description": "Pinned through an alias",
        "teams": [{"team": "team-b", "permission": "read"}]}).json()["package"]
    assert package["versions"] == ["1"] and package["alias"] == "champion"

    page = new_page()
    problems = _watch(page)
    _open_portal(page, "alice")
    row = page.locator(f"#packages tr[data-package='{package['id']}'] td.versions")
    expect(row).to_have_text("v1 (@champion)")
    # The alias moves in MLflow's registry: the package still pins version 1.
    assert web.api("POST", alias_url, token=token, json={
        "name": name, "alias": "champion", "version": "2"}).ok
    page.click("#apply-filters")  # reads the registry again
    expect(row).to_have_text("v1 (pinned through @champion, which now points at v2)")
    shown = _cli(web, "alice", "share", "show", package["id"])  # the CLI says the same
    assert "versions 1 (pinned through @champion, which now points at version 2)" in \
        shown.stdout, shown.stdout + shown.stderr
    model = page.locator(f"#models tr[data-model='{name}'] .alias")
    expect(model).to_have_attribute("title", "@champion → v2")
    page.locator(f"#packages tr[data-package='{package['id']}'] .show-report").click()
    expect(page.locator("#report-alias")).to_contain_text("which now points at v2")
    page.select_option("#pkg-model", name)
    expect(page.locator("#pkg-version option[value='2']")).to_contain_text("@champion")
    expect(page.locator("#pkg-version option[value='1']")).not_to_contain_text("@champion")
    # Deleted: said so.
    assert web.api("DELETE", alias_url, token=token, json={
        "name": name, "alias": "champion"}).ok
    page.click("#apply-filters")
    expect(row).to_have_text("v1 (pinned through @champion, since deleted)")
    assert problems == []
