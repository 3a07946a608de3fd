"""The access control and monitoring dashboards, driven in chromium against a real server:
what the pages render is checked against what the API holds (and the other way round)."""

from __future__ import annotations

import base64
import math
import re
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import login_local
from tests.conftest import ADMIN_PASSWORD, USER_PASSWORD, ShareServer
from tests.integration.test_gateway import ONNX_MLMODEL, World, X, _call, _onnx
from tests.integration.test_monitoring_summary import _write_minute, nearest_rank

pytestmark = pytest.mark.browser
SHARE = "/api/2.0/mlflow-share"


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _whoami(web: ShareServer, token: str) -> requests.Response:
    return requests.get(f"{web.url}{SHARE}/whoami",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _members(web: ShareServer, team: str) -> dict[str, str]:
    teams = web.admin("GET", "/teams").json()["teams"]
    return {m["user"]: m["role"] for t in teams if t["name"] == team for m in t["members"]}


def _watch(page: Any) -> list[str]:
    """Script errors, Content-Security-Policy violations and browser dialogs on the page (there
    must be none: the pages use no inline script or style, and ask for confirmation in place,
    never with window.confirm)."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(message.text)
            if "Content Security Policy" in message.text or "Refused to" in message.text
            else None)

    def dialog(d: Any) -> None:
        problems.append(f"dialog: {d.type}: {d.message}")
        d.dismiss()

    page.on("dialog", dialog)
    return problems


def _open_access(page: Any, user: str, **kwargs: Any) -> list[str]:
    problems = _watch(page)
    login_local(page, user, next_path="/share/access", **kwargs)
    page.wait_for_selector("body[data-ready=true]")
    return problems


def _search_audit(page: Any) -> Any:
    """Run the audit search in the form; the rows once the answer is drawn."""
    page.click("#audit-search")
    expect(page.locator("#audit")).to_have_attribute("data-state", "ready")
    return page.locator("#audit-table tbody tr")


def _confirm(scope: Any, button: str, confirm_text: str) -> None:
    """A destructive button asks in place: it gives way to its confirmation, which runs it."""
    scope.locator(button).click()
    yes = scope.locator("button.confirm-yes:visible")
    expect(yes).to_have_text(confirm_text)
    expect(scope.locator("button.confirm-no:visible")).to_have_text("Cancel")
    yes.click()


def _cancel(scope: Any, button: str) -> None:
    """Start a destructive action and cancel it: the button comes back, nothing happened."""
    scope.locator(button).click()
    expect(scope.locator("button.confirm-yes:visible")).to_be_visible()
    scope.locator("button.confirm-no:visible").click()
    expect(scope.locator(button)).to_be_visible()
    expect(scope.locator("button.confirm-yes:visible")).to_have_count(0)


def _rendered_points(page: Any, container: str) -> list[dict[str, Any]]:
    """Every inspectable data point (circle or bar) drawn in ``container``."""
    return page.eval_on_selector_all(f"{container} svg [data-value]", """els => els.map(e => ({
        series: e.dataset.series, x: e.dataset.x, value: Number(e.dataset.value),
        title: e.querySelector('title') ? e.querySelector('title').textContent : null,
        tag: e.tagName}))""")


def _sums(points: list[dict[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for p in points:
        totals[p["series"]] += p["value"]
    return dict(totals)


def _new_user(web: ShareServer, prefix: str) -> tuple[str, str]:
    """A user of this test's own (no team), with a token."""
    name = f"{prefix}-{_uid()}"
    web.admin("POST", "/users", json={"name": name, "password": USER_PASSWORD})
    return name, web.admin("POST", "/tokens", json={"user": name}).json()["token"]


def _events_after(web: ShareServer, seq: int) -> list[dict[str, Any]]:
    """Every audit event after ``seq``, oldest first (as the admin reads them)."""
    events: list[dict[str, Any]] = []
    token = base64.urlsafe_b64encode(str(seq).encode()).decode()
    while token:
        page = web.admin("GET", "/audit/events", params={"max_results": 1000,
                                                         "page_token": token}).json()
        events += page["events"]
        token = page.get("next_page_token")
    return events


def test_admin_manages_teams_tokens_and_reads_the_audit_log(web: ShareServer, new_page: Any
                                                            ) -> None:
    uid = _uid()
    team, description = f"dash-{uid}", f"dashboard token {uid}"
    page = new_page()
    problems = _open_access(page, "admin", password=ADMIN_PASSWORD)

    # A team, then a member with a role: the API holds both.
    page.fill("#team-create-name", team)
    page.click("#team-create button[type=submit]")
    card = page.locator(f".team-card[data-team='{team}']")
    expect(card).to_be_visible()
    card.locator("input.member-user").fill("carl")
    card.locator("select.member-role").select_option("maintainer")
    card.locator("form.add-member button[type=submit]").click()
    expect(card.locator("tr[data-user=carl][data-role=maintainer]")).to_be_visible()
    assert _members(web, team) == {"carl": "maintainer"}
    expect(page.locator("#users-table tr[data-user=carl]")).to_contain_text(f"{team}: maintainer")

    # A token for carl: shown once, works, listed; after a reload the secret is gone.
    page.fill("#token-user", "carl")
    page.fill("#token-description", description)
    page.click("#token-create-button")
    expect(page.locator("#new-token .warning")).to_contain_text("shown only this once")
    token = page.locator("#new-token-value").inner_text().strip()
    token_id = page.locator("#new-token .token-once").get_attribute("data-token-id")
    assert token and token_id
    assert _whoami(web, token).json()["user"] == "carl"
    row = page.locator(f"#tokens-table tr[data-token-id='{token_id}']")
    expect(row).to_have_attribute("data-status", "active")
    expect(row.locator("td.description")).to_have_text(description)
    expect(row.locator("td.user")).to_have_text("carl")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert token not in page.content()
    expect(page.locator("#new-token-value")).to_have_count(0)
    row = page.locator(f"#tokens-table tr[data-token-id='{token_id}']")
    expect(row).to_have_attribute("data-status", "active")
    listed = web.admin("GET", "/tokens", params={"user": "carl"}).json()["tokens"]
    assert any(t["token_id"] == token_id and t["description"] == description for t in listed)

    # Revoking asks first: cancelled, the token still works; confirmed, it is refused.
    _cancel(row, "button.revoke-token")
    expect(row).to_have_attribute("data-status", "active")
    assert _whoami(web, token).status_code == 200
    _confirm(row, "button.revoke-token", "Confirm revoke")
    expect(row).to_have_attribute("data-status", "revoked")
    assert _whoami(web, token).status_code == 401

    # The audit log filtered by principal: only carl's events, his whoami among them.
    page.fill("#audit-principal", "carl")
    rows = _search_audit(page)
    expect(rows.first).to_be_visible()
    principals = rows.evaluate_all("rs => rs.map(r => r.dataset.principal)")
    routes = page.locator("#audit-table td.request .route").all_inner_texts()
    assert principals and set(principals) == {"carl"}
    assert any(r.endswith(f"{SHARE}/whoami") for r in routes), routes
    assert set(page.locator("#audit-table td.principal").all_inner_texts()) == {"carl"}
    # ... and by action, by its name or its stored spelling: the admin's team creation,
    # with the team in its details, shown as fields (no raw JSON).
    page.fill("#audit-principal", "admin")
    for action in ("team.create", "flask:mlflow_share_api.create_team"):
        page.fill("#audit-action", action)
        expect(_search_audit(page).first).to_be_visible()
        assert set(page.locator("#audit-table td.action").all_inner_texts()) == {"team.create"}
        titles = page.locator("#audit-table td.action").evaluate_all("cs => cs.map(c => c.title)")
        assert set(titles) == {"flask:mlflow_share_api.create_team"}
        expect(page.locator("#audit-table")).to_contain_text(team)
    created = page.locator("#audit-table tbody tr").filter(has_text=team).first
    expect(created.locator("td.details dl.fields dt").first).to_have_text("changes")
    created.locator("td.details summary").first.click()
    expect(created.locator("td.details dd[data-field=name]")).to_have_text(team)
    expect(created.locator("td.details dd[data-field=op]")).to_have_text("create_team")
    expect(page.locator("#audit-table pre")).to_have_count(0)
    assert "team.create" in page.locator("#action-names option").evaluate_all(
        "os => os.map(o => o.value)")
    # A time range in the future holds nothing.
    page.fill("#audit-action", "")
    page.fill("#audit-from", "2999-01-01T00:00:00")
    expect(_search_audit(page)).to_have_count(0)
    expect(page.locator("#audit")).to_contain_text("No events match")

    # The chain's verification, as the server reports it.
    status = page.locator("#chain-status")
    expect(status).to_have_attribute("data-state", "intact")
    expect(status).to_contain_text("Chain intact")
    events = int(status.get_attribute("data-events") or 0)
    assert events > 0
    assert web.admin("GET", "/audit/verify").json()["events"] >= events
    assert problems == []


def test_audit_log_pages(web: ShareServer, new_page: Any) -> None:
    for _ in range(60):  # more than a page of events, whatever ran before
        web.api("GET", f"{SHARE}/whoami", token=web.tokens["ava"])
    page = new_page()
    _open_access(page, "admin", password=ADMIN_PASSWORD)
    page.select_option("#audit-page-size", "50")
    rows = _search_audit(page)
    expect(rows).to_have_count(50)
    expect(page.locator("#audit-next")).to_be_enabled()  # the server has far more than 50
    first = rows.evaluate_all("rs => rs.map(r => Number(r.dataset.seq))")
    page.click("#audit-next")
    expect(page.locator("#audit-prev")).to_be_enabled()
    expect(rows.first).not_to_have_attribute("data-seq", str(first[0]))
    second = page.locator("#audit-table tbody tr").evaluate_all(
        "rs => rs.map(r => Number(r.dataset.seq))")
    assert second and max(second) < min(first)  # newest first: the next page is older
    assert first == sorted(first, reverse=True)
    page.click("#audit-prev")
    expect(page.locator("#audit-table tbody tr").first).to_have_attribute("data-seq", str(first[0]))


def test_the_audit_log_reads_like_a_log_at_1024_pixels(web: ShareServer, new_page: Any) -> None:
    """Human action names, every refusal as "deny", the request ID shortened (in full in its
    title), details as fields, and every column readable at 1024 px beside the side bar."""
    model = f"dash-log-{_uid()}"
    assert web.api("POST", "/api/2.0/mlflow/registered-models/create", token=web.tokens["alice"],
                   json={"name": model}).ok
    request_id = f"denied-{_uid()}-" + "x" * 20
    denied = web.api("GET", "/api/2.0/mlflow/registered-models/get", token=web.tokens["carl"],
                     params={"name": model}, headers={"X-Request-Id": request_id})
    assert denied.status_code == 403
    assert web.api("GET", "/api/2.0/mlflow/registered-models/get", token=web.tokens["aaron"],
                   params={"name": model}).ok
    page = new_page()
    page.set_viewport_size({"width": 1024, "height": 800})
    problems = _open_access(page, "admin", password=ADMIN_PASSWORD)
    page.fill("#audit-resource", model)
    rows = _search_audit(page)
    expect(rows).to_have_count(3)  # the creation, carl's denial, aaron's read
    by_principal = {r["principal"]: r for r in rows.evaluate_all(
        "rs => rs.map(r => ({...r.dataset}))")}
    assert by_principal["carl"]["action"] == "registered_model.read"
    assert by_principal["carl"]["storedAction"] == "mlflow.GetRegisteredModel"
    assert by_principal["carl"]["decision"] == "deny"
    assert by_principal["aaron"]["decision"] == "allow"
    assert by_principal["alice"]["action"] == "registered_model.create"
    carl = page.locator("#audit-table tr[data-principal=carl]")
    expect(carl.locator("td.decision .badge")).to_have_text("deny")
    expect(carl.locator("td.decision .status")).to_have_text("403")
    expect(carl.locator("td.details dd[data-field=reason]")).to_contain_text("ermission")
    rid = carl.locator("code.request-id")
    expect(rid).to_have_attribute("data-request-id", request_id)
    expect(rid).to_have_attribute("title", f"request ID {request_id}")
    assert len(rid.inner_text()) <= 9
    # The same names filter the log: a human name and every denial under it.
    page.fill("#audit-resource", "")
    page.fill("#audit-action", "registered_model.read")
    page.fill("#audit-principal", "carl")
    expect(_search_audit(page).first).to_be_visible()
    assert set(page.locator("#audit-table tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.action)")) == {"registered_model.read"}

    # Every column is readable: none squeezed, nothing wider than the page, words whole.
    page.fill("#audit-action", "")
    page.fill("#audit-principal", "")
    expect(_search_audit(page).first).to_be_visible()
    widths = page.locator("#audit-table thead th").evaluate_all(
        "hs => hs.map(h => [h.textContent, h.getBoundingClientRect().width])")
    assert len(widths) == 7 and all(width >= 56 for _, width in widths), widths
    box = page.locator("#audit").evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert box[0] <= box[1] + 1, box
    overflowing = page.locator("#audit-table td").evaluate_all(
        "cs => cs.filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.className)")
    assert overflowing == [], overflowing
    lengths = page.locator("#audit-table code.request-id").evaluate_all(
        "cs => cs.map(c => [c.textContent.length, c.dataset.requestId.length])")
    assert lengths and all(shown <= 9 and full >= shown for shown, full in lengths)
    assert problems == []


def test_team_maintainer_and_engineer_see_what_their_roles_allow(web: ShareServer,
                                                                  new_page: Any) -> None:
    # alice maintains team-a: she adds and removes a member, and reads team-a's audit events.
    model = f"dash-audit-{_uid()}"
    assert web.api("POST", "/api/2.0/mlflow/registered-models/create", token=web.tokens["alice"],
                   json={"name": model}).ok
    page = new_page()
    problems = _open_access(page, "alice")
    for admin_only in ("#team-create", "#users-section", "#grants-all-wrap", "#token-filter",
                       "#token-user-label", "#audit-verify"):
        expect(page.locator(admin_only)).to_be_hidden()
    card = page.locator(".team-card[data-team='team-a']")
    expect(card.locator("tr[data-user=ava][data-role=viewer]")).to_be_visible()
    teams = page.locator(".team-card").evaluate_all("cs => cs.map(c => c.dataset.team)")
    assert teams == ["team-a"]
    card.locator("input.member-user").fill("carl")
    card.locator("select.member-role").select_option("viewer")
    card.locator("form.add-member button[type=submit]").click()
    member = card.locator("tr[data-user=carl]")
    expect(member.locator("td.role")).to_have_text("viewer")
    assert _members(web, "team-a")["carl"] == "viewer"
    _cancel(member, "button.remove-member")
    assert _members(web, "team-a")["carl"] == "viewer"
    _confirm(member, "button.remove-member", "Confirm remove")
    expect(card.locator("tr[data-user=carl]")).to_have_count(0)
    assert "carl" not in _members(web, "team-a")
    expect(page.locator("#audit-section")).to_be_visible()
    assert page.locator("#audit-team option").evaluate_all(
        "os => os.map(o => o.value)") == ["", "team-a"]
    page.fill("#audit-resource", model)
    expect(_search_audit(page).first).to_be_visible()
    assert set(page.locator("#audit-table .owner").all_inner_texts()) == {"team-a"}
    assert all(model in r for r in page.locator("#audit-table td.resource .name").all_inner_texts())
    expect(page.locator("#chain-status")).to_have_count(0)  # verification is for admins
    # Her own token only: the user field is hers (and not shown).
    assert page.locator("#token-user").input_value() == "alice"
    assert problems == []

    # aaron is an engineer: no member management and no audit log on his page.
    other = new_page()
    problems = _open_access(other, "aaron")
    card = other.locator(".team-card[data-team='team-a']")
    expect(card).to_be_visible()
    expect(card.locator("form.add-member")).to_have_count(0)
    expect(card.locator("button.remove-member")).to_have_count(0)
    for hidden in ("#audit-section", "#team-create", "#users-section", "#grants-all-wrap",
                   "#token-filter", "#token-user-label"):
        expect(other.locator(hidden)).to_be_hidden()
    # His own tokens remain his to manage.
    expect(other.locator("#token-create-button")).to_be_visible()
    denied = web.api("GET", f"{SHARE}/audit/events", token=web.tokens["aaron"])
    assert denied.status_code == 403
    assert problems == []


def test_who_has_access_why_and_grants(web: ShareServer, new_page: Any) -> None:
    from tests.integration.test_sharing import X as SHARING_X
    from tests.integration.test_sharing import _create, _onnx_files, _register_files

    model = f"dash-grants-{_uid()}"
    first = _register_files(web, model, _onnx_files(SHARING_X[:2].tolist()))
    second = _register_files(web, model, _onnx_files(SHARING_X[:2].tolist()))
    package = _create(web, model, first)  # team-b: execute, version 1 only
    assert web.api("POST", f"{SHARE}/packages/{package['id']}/publish",
                   token=web.tokens["alice"]).ok

    def grants() -> set[tuple[str, str]]:
        listed = web.api("GET", f"{SHARE}/grants", token=web.tokens["alice"],
                         params={"model": model}).json()["grants"]
        return {(g["team"], g["permission"]) for g in listed}

    # alice (maintainer of the owner team) sees every route, and grants team-c read.
    page = new_page()
    problems = _open_access(page, "alice")
    expect(page.locator("#grants-all-wrap")).to_be_hidden()  # all grants: admins only
    page.fill("#grant-resource", model)
    page.click("#grant-lookup button[type=submit]")
    box = page.locator("#grants-model")
    expect(box).to_have_attribute("data-state", "ready")
    expect(box.locator(".owner-team")).to_have_text("team-a")
    expect(box.locator("tr[data-team=team-a][data-via=owner]")).to_be_visible()
    expect(box).not_to_contain_text("null")
    shared = box.locator(f"tr[data-team=team-b][data-via=package][data-package='{package['id']}']")
    expect(shared.locator("td.via")).to_contain_text(f"version {first}")
    expect(shared.locator("td.via")).to_contain_text("no expiry")
    expect(shared.locator("td.actions-allowed")).to_have_text("execute")
    expect(shared.locator("button.revoke-grant")).to_have_count(0)  # revoke the package instead
    expect(box.locator("#access-admins")).to_contain_text("admin")
    box.locator("form.grant-create input[name=team]").fill("team-c")
    box.locator("form.grant-create select[name=permission]").select_option("read")
    box.locator("form.grant-create button[type=submit]").click()
    granted = box.locator("tr[data-team=team-c][data-via=grant][data-permission=read]")
    expect(granted).to_be_visible()
    expect(granted.locator("td.granted-by")).to_have_text("alice")
    assert grants() == {("team-c", "read")}
    # The page agrees with GET access.
    shown = box.locator("tbody tr").evaluate_all(
        "rs => rs.map(r => [r.dataset.team, r.dataset.via])")
    listed = web.api("GET", f"{SHARE}/access", token=web.tokens["alice"],
                     params={"model": model}).json()["teams"]
    assert sorted(map(tuple, shown)) == sorted((t["team"], t["via"]) for t in listed)

    # Why? bea (team-b engineer) may execute through the package, not write.
    explain = box.locator("form.explain")
    explain.locator("input.explain-user").fill("bea")
    explain.locator("select.explain-action").select_option("execute")
    explain.locator("button[type=submit]").click()
    verdict = box.locator(".explain-result .verdict")
    expect(verdict).to_have_attribute("data-allowed", "true")
    expect(verdict).to_contain_text(f"sharing package {package['id']}")
    explain.locator("select.explain-action").select_option("write")
    explain.locator("button[type=submit]").click()
    expect(verdict).to_have_attribute("data-allowed", "false")
    expect(verdict).to_contain_text("bea may not write")
    reasons = box.locator(".explain-result ul.reasons li").all_inner_texts()
    expected = web.api("GET", f"{SHARE}/access/explain", token=web.tokens["alice"],
                       params={"model": model, "user": "bea", "action": "write"}).json()
    assert reasons == expected["reasons"] and reasons
    # For a version the package does not pin, team-b has no route at all.
    page.fill("#grant-version", second)
    page.click("#grant-lookup button[type=submit]")
    expect(box.locator("tr[data-team=team-b]")).to_have_count(0)
    expect(box.locator("tr[data-team=team-c]")).to_be_visible()
    page.fill("#grant-version", "")
    page.click("#grant-lookup button[type=submit]")
    expect(box.locator("tr[data-team=team-b]")).to_be_visible()

    # The admin sees the grant among all grants; carl (team-c, reading through the grant)
    # sees the owner and his own team's route, no one else's, and can neither grant nor revoke.
    admin = new_page()
    _open_access(admin, "admin", password=ADMIN_PASSWORD)
    expect(admin.locator(f"#grants-all-table tr[data-resource='{model}'][data-team=team-c]"
                         "[data-permission=read]")).to_be_visible()
    carl = new_page()
    carl_problems = _open_access(carl, "carl")
    carl.fill("#grant-resource", model)
    carl.click("#grant-lookup button[type=submit]")
    carl_box = carl.locator("#grants-model")
    expect(carl_box.locator("tr[data-team=team-c][data-via=grant]")).to_be_visible()
    expect(carl_box.locator("tr[data-team=team-a][data-via=owner]")).to_be_visible()
    expect(carl_box.locator("tr[data-team=team-b]")).to_have_count(0)
    expect(carl_box.locator("form.grant-create")).to_have_count(0)
    expect(carl_box.locator("button.revoke-grant")).to_have_count(0)
    expect(carl_box.locator("#access-admins")).to_have_count(0)
    # He may ask about himself, not about someone else.
    carl_box.locator("form.explain button[type=submit]").click()
    expect(carl_box.locator(".explain-result .verdict")).to_have_attribute("data-allowed", "true")
    expect(carl_box.locator(".explain-result .verdict")).to_contain_text("team-c's direct grant")
    carl_box.locator("form.explain input.explain-user").fill("bea")
    carl_box.locator("form.explain button[type=submit]").click()
    expect(carl_box.locator(".explain-result .error")).to_contain_text("managers")
    # A user in no team with access may not see who has it: the page says so.
    stranger, _token = _new_user(web, "stranger")
    outsider = new_page()
    _open_access(outsider, stranger)
    outsider.fill("#grant-resource", model)
    outsider.click("#grant-lookup button[type=submit]")
    expect(outsider.locator("#grants-model .error")).to_be_visible()

    # alice revokes the grant again, after confirming.
    _cancel(granted, "button.revoke-grant")
    assert grants() == {("team-c", "read")}
    _confirm(granted, "button.revoke-grant", "Confirm revoke")
    expect(box.locator("tr[data-team=team-c]")).to_have_count(0)
    assert grants() == set()
    assert problems == [] and carl_problems == []


def test_admin_disables_resets_and_deletes_users_after_confirming(web: ShareServer,
                                                                   new_page: Any) -> None:
    user, token = _new_user(web, "leaver")
    page = new_page()
    problems = _open_access(page, "admin", password=ADMIN_PASSWORD)
    row = page.locator(f"#users-table tr[data-user='{user}']")
    expect(row).to_have_attribute("data-status", "active")
    # Never offered on oneself (the server refuses it anyway).
    me = page.locator("#users-table tr[data-user=admin]")
    for action in ("disable-user", "delete-user", "reset-password"):
        expect(me.locator(f"button.{action}")).to_have_count(0)

    # Disable: asks first; confirmed, the user's token stops working; enable brings it back.
    _cancel(row, "button.disable-user")
    assert _whoami(web, token).status_code == 200
    _confirm(row, "button.disable-user", "Confirm disable")
    expect(row).to_have_attribute("data-status", "disabled")
    assert _whoami(web, token).status_code == 401
    row.locator("button.enable-user").click()
    expect(row).to_have_attribute("data-status", "active")
    assert _whoami(web, token).status_code == 200

    # Reset password: the new password (typed in place) is the one that works.
    new_password = f"reset-{_uid()}-password"
    row.locator("button.reset-password").click()
    field = row.locator("input.new-password")
    expect(field).to_be_focused()
    field.fill(new_password)
    row.locator("button.confirm-yes:visible").click()
    expect(page.locator("#users-status")).to_contain_text("password is reset")
    assert requests.get(f"{web.url}{SHARE}/whoami", auth=(user, new_password),
                        timeout=30).json()["user"] == user
    assert requests.get(f"{web.url}{SHARE}/whoami", auth=(user, USER_PASSWORD),
                        timeout=30).status_code == 401

    # Delete: asks first; confirmed, the user and their token are gone.
    row = page.locator(f"#users-table tr[data-user='{user}']")
    _cancel(row, "button.delete-user")
    assert any(u["name"] == user for u in web.admin("GET", "/users").json()["users"])
    _confirm(row, "button.delete-user", "Confirm delete")
    expect(page.locator(f"#users-table tr[data-user='{user}']")).to_have_count(0)
    assert not any(u["name"] == user for u in web.admin("GET", "/users").json()["users"])
    assert _whoami(web, token).status_code == 401
    assert problems == []


def test_the_pages_own_asset_loads_are_not_audited(web: ShareServer, browser: Any) -> None:
    """Loading /share/access and /share/monitoring audits the API reads the pages make (as
    any read), and nothing for their own files: no event for /share/static/*, MLflow's static
    files or the favicon, and no "unrouted" denial for a file the browser asks by itself."""
    user, _token = _new_user(web, "viewer")
    context = browser.new_context(base_url=web.url)
    try:
        # Logged in without opening any page: the first page this browser loads is ours.
        form = context.request.get("/share/login?next=/share/access")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text())
        assert csrf, form.text()
        answer = context.request.post("/share/login", form={
            "username": user, "password": USER_PASSWORD, "csrf_token": csrf.group(1),
            "next": "/share/access"}, max_redirects=0)
        assert answer.status == 303, answer.text()
        head = web.admin("GET", "/audit/verify").json()["head_seq"]
        page = context.new_page()
        problems = _watch(page)
        assets: list[str] = []
        page.on("requestfinished", lambda r: assets.append(r.url))
        page.goto("/share/access")
        page.wait_for_selector("body[data-ready=true]")
        page.goto("/share/monitoring")
        expect(page.locator("#dashboard")).to_have_attribute("data-state", "idle")
        assert any("/share/static/access.js" in url for url in assets), assets
        mine = [e for e in _events_after(web, head)
                if e["principal"] in (user, "anonymous") and e["source"] == "request"]
        routes = {e["route"] for e in mine}
        assert not [r for r in routes if r.startswith(("/share/static/", "/static-files/",
                                                       "/favicon"))], routes
        assert [e for e in mine if e["action"] == "unrouted"] == []
        # The pages' own reads are decisions, and audited as such.
        actions = {e["action"] for e in mine if e["principal"] == user}
        assert {"web.page_access", "web.page_monitoring", "teams.list", "tokens.list",
                "registered_models.search"} <= actions, actions
        assert problems == []
    finally:
        context.close()


def _wait_for_usage(web: ShareServer, name: str, expected: int, timeout: float = 60) -> list[Any]:
    """The gateway's usage writer runs every few seconds: wait until the rows are there."""
    deadline = time.monotonic() + timeout
    rows: list[Any] = []
    while time.monotonic() < deadline:
        rows = web.api("GET", f"{SHARE}/usage", token=web.tokens["alice"],
                       params={"model": name}).json()["usage"]
        if sum(r["requests"] for r in rows) >= expected:
            return rows
        time.sleep(1)
    raise AssertionError(f"usage rows never reached {expected} requests: {rows}")


def test_monitoring_charts_show_the_gateway_usage(web: ShareServer, new_page: Any) -> None:
    name = f"dash-model-{_uid()}"
    world = World(web, name)  # owned by alice's team-a
    v1 = world.register({"model.onnx": _onnx(), "MLmodel": ONNX_MLMODEL})
    v2 = world.register({"model.onnx": _onnx(flip=True), "MLmodel": ONNX_MLMODEL})
    world.alias("champion", v1)
    world.grant("team-b", "execute")
    body = {"inputs": X[:3].tolist()}
    calls = [("alice", f"{name}/versions/{v1}")] * 3 + [("alice", f"{name}@champion")] * 2 \
        + [("bob", f"{name}/versions/{v2}")] * 2 + [("bea", f"{name}@champion")]
    for user, target in calls:
        answer = _call(web.url, web, user, target, body)
        assert answer.status_code == 200, answer.text
    failing = 2  # a wrong input shape: the model refuses it
    for _ in range(failing):
        answer = _call(web.url, web, "alice", f"{name}@champion", {"inputs": [[1.0, 2.0]]})
        assert 400 <= answer.status_code < 500, answer.text
    ok_a, ok_b = 5, 3
    _wait_for_usage(web, name, ok_a + ok_b + failing)

    page = new_page()
    problems = _watch(page)
    login_local(page, "alice", next_path=f"/share/monitoring?model={name}")
    dashboard = page.locator("#dashboard")
    expect(dashboard).to_have_attribute("data-state", "ready")
    assert page.locator("#model-picker").input_value() == name
    expect(page.locator(f"#model-picker option[value='{name}']")).to_have_count(1)

    # Adoption: requests per consuming team, successful and failed.
    totals = _rendered_points(page, "#chart-team-totals")
    by = {(p["series"], p["x"]): p["value"] for p in totals}
    assert by == {("successful", "team-a"): ok_a, ("successful", "team-b"): ok_b,
                  ("errors", "team-a"): failing}
    assert all(p["tag"] == "rect" and p["title"] for p in totals)
    over_time = _rendered_points(page, "#chart-team-requests")
    assert _sums(over_time) == {"team-a": ok_a + failing, "team-b": ok_b}
    assert all(p["x"].isdigit() and p["title"].startswith(p["series"]) for p in over_time)
    versions = _sums(_rendered_points(page, "#chart-version-requests"))
    assert versions == {f"v{v1}": 3 + 2 + 1 + failing, f"v{v2}": 2}
    legend = page.locator("#chart-team-requests .legend-item").all_inner_texts()
    assert legend == ["team-a", "team-b"]

    # Latency: p50, mean, p95 and p99 points, all positive, p50 <= p95 <= p99.
    latency = _rendered_points(page, "#chart-latency")
    series = {p["series"] for p in latency}
    assert series == {"p50", "mean", "p95", "p99"}
    assert all(p["value"] > 0 for p in latency)
    p50 = {p["x"]: p["value"] for p in latency if p["series"] == "p50"}
    p95 = {p["x"]: p["value"] for p in latency if p["series"] == "p95"}
    p99 = {p["x"]: p["value"] for p in latency if p["series"] == "p99"}
    assert p50 and all(p99[x] >= p95[x] >= value for x, value in p50.items())
    assert all(" ms" in p["title"] for p in latency)

    # Errors: the two failed calls, on team-a.
    errors = _rendered_points(page, "#chart-errors")
    assert _sums(errors) == {"team-a": failing}

    # The summary tables agree.
    team_a = page.locator("#summary-teams tr[data-team='team-a']")
    assert team_a.locator("td.requests").inner_text() == str(ok_a + failing)
    assert team_a.locator("td.successful").inner_text() == str(ok_a)
    assert team_a.locator("td.errors").inner_text() == str(failing)
    team_b = page.locator("#summary-teams tr[data-team='team-b']")
    assert team_b.locator("td.requests").inner_text() == str(ok_b)
    assert team_b.locator("td.errors").inner_text() == "0"
    row = page.locator(f"#summary-versions tr[data-version='{v1}']")
    assert row.locator("td.requests").inner_text() == str(3 + 2 + 1 + failing)
    assert float(row.locator("td.p50").get_attribute("data-value") or 0) > 0
    assert float(row.locator("td.p95").get_attribute("data-value") or 0) > 0
    assert float(row.locator("td.p99").get_attribute("data-value") or 0) > 0
    expect(page.locator("#kpis [data-kpi=requests] .kpi-value")).to_have_text(
        str(ok_a + ok_b + failing))
    expect(page.locator("#kpis [data-kpi=teams] .kpi-value")).to_have_text("2")
    # The summary's numbers are the server's, over exactly these calls.
    [summary] = web.api("GET", f"{SHARE}/usage/summary", token=web.tokens["alice"],
                        params={"model": name}).json()["summary"]
    for kpi in ("mean", "p50", "p95", "p99"):
        shown = page.locator(f"#kpis [data-kpi={kpi}]").get_attribute("data-value")
        assert float(shown or "nan") == pytest.approx(summary[f"{kpi}_ms"]), kpi
    assert problems == []

    # A model the caller may not read: the page says so instead of drawing.
    other = new_page()
    login_local(other, "carl", next_path=f"/share/monitoring?model={name}")
    expect(other.locator("#dashboard")).to_have_attribute("data-state", "error")
    expect(other.locator("#status .error")).to_be_visible()
    expect(other.locator("#chart-team-requests svg")).to_have_count(0)


def test_monitoring_numbers_are_the_summary_of_known_latencies(web: ShareServer,
                                                               new_page: Any) -> None:
    """Minutes with known latencies: the page's requests, errors, mean and percentiles
    (overall, per version, per team) are those of the calls, as GET usage/summary gives them;
    a page working from the minute rows would show the worst minute's p95 (1000 ms)."""
    name = f"dash-timed-{_uid()}"
    assert web.api("POST", "/api/2.0/mlflow/registered-models/create", token=web.tokens["alice"],
                   json={"name": name}).ok
    from mlflow_share import db

    engine = db.get_engine(web.backend_uri)
    now = int(time.time() // 60) * 60_000
    minutes = {  # (version, team, minutes ago) -> successful calls' latencies, errors
        ("1", "team-a", 10): ([float(ms) for ms in range(1, 91, 2)], 1),
        ("1", "team-b", 9): ([float(ms) for ms in range(2, 91, 2)], 0),
        ("2", "team-b", 8): ([1000.0, 1000.0], 2),
    }
    for (version, team, ago), (latencies, errors) in minutes.items():
        _write_minute(engine, name, version, team, now - ago * 60_000, latencies, errors)

    def expected(keep: Any) -> tuple[list[float], int]:
        chosen = [v for k, v in minutes.items() if keep(k)]
        return [x for latencies, _ in chosen for x in latencies], sum(e for _, e in chosen)

    page = new_page()
    problems = _watch(page)
    login_local(page, "alice", next_path=f"/share/monitoring?model={name}&range=3600000")
    expect(page.locator("#dashboard")).to_have_attribute("data-state", "ready")

    def check(cells: Any, latencies: list[float]) -> None:
        """The mean and percentiles shown in ``cells`` (KPIs or a table row)."""
        for q in (50, 95, 99):
            value = float(cells.locator(f"[data-kpi=p{q}], td.p{q}").first.get_attribute(
                "data-value") or "nan")
            assert value == pytest.approx(nearest_rank(latencies, q), rel=0.015), q
        value = float(cells.locator("[data-kpi=mean], td.mean").first.get_attribute(
            "data-value") or "nan")
        assert value == pytest.approx(sum(latencies) / len(latencies), rel=1e-9)

    latencies, errors = expected(lambda k: True)
    kpis = page.locator("#kpis")
    expect(kpis.locator("[data-kpi=requests] .kpi-value")).to_have_text(
        str(len(latencies) + errors))
    expect(kpis.locator("[data-kpi=errors] .kpi-value")).to_contain_text(str(errors))
    check(kpis, latencies)
    assert float(kpis.locator("[data-kpi=p95]").get_attribute("data-value") or 0) \
        == pytest.approx(88, rel=0.015)  # not the worst minute's 1000 ms
    for version in ("1", "2"):
        row = page.locator(f"#summary-versions tr[data-version='{version}']")
        latencies, errors = expected(lambda k, v=version: k[0] == v)
        expect(row.locator("td.requests")).to_have_text(str(len(latencies) + errors))
        expect(row.locator("td.errors")).to_have_text(str(errors))
        check(row, latencies)
    for team in ("team-a", "team-b"):
        row = page.locator(f"#summary-teams tr[data-team='{team}']")
        latencies, errors = expected(lambda k, t=team: k[1] == t)
        expect(row.locator("td.requests")).to_have_text(str(len(latencies) + errors))
        expect(row.locator("td.successful")).to_have_text(str(len(latencies)))
        check(row, latencies)
    # The page shows what the route answers.
    by_team = {r["team"]: r for r in web.api(
        "GET", f"{SHARE}/usage/summary", token=web.tokens["alice"],
        params={"model": name, "by": "team"}).json()["summary"]}
    shown = page.locator("#summary-teams tr[data-team='team-b'] td.p99").get_attribute("data-value")
    assert float(shown or "nan") == by_team["team-b"]["p99_ms"]
    # The charts still draw the minutes: three of them, with their own percentiles.
    latency = _rendered_points(page, "#chart-latency")
    assert max(p["value"] for p in latency if p["series"] == "p95") == pytest.approx(1000, rel=0.015)
    assert not math.isnan(sum(p["value"] for p in latency))
    assert problems == []
