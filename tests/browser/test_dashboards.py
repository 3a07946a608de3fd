"""The access control and monitoring dashboards, driven in chromium against a real server:
what the pages render is checked against what the API holds (and the other way round)."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import login_local
from tests.conftest import ADMIN_PASSWORD, ShareServer
from tests.integration.test_gateway import ONNX_MLMODEL, World, X, _call, _onnx

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
    """Script errors and Content-Security-Policy violations on the page (there must be none:
    the pages use no inline script or style)."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(message.text)
            if "Content Security Policy" in message.text or "Refused to" in message.text
            else None)
    return problems


def _open_access(page: Any, user: str, **kwargs: Any) -> list[str]:
    problems = _watch(page)
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm() before removals
    login_local(page, user, next_path="/share/access", **kwargs)
    page.wait_for_selector("body[data-ready=true]")
    return problems


def _search_audit(page: Any) -> Any:
    """Run the audit search in the form; the rows once the answer is drawn."""
    page.click("#audit-search")
    expect(page.locator("#audit")).to_have_attribute("data-state", "ready")
    return page.locator("#audit-table tbody tr")


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

    # Revoked from the page: the token is refused from then on.
    row.locator("button.revoke-token").click()
    expect(row).to_have_attribute("data-status", "revoked")
    assert _whoami(web, token).status_code == 401

    # The audit log filtered by principal: only carl's events, his whoami among them.
    page.fill("#audit-principal", "carl")
    rows = _search_audit(page)
    expect(rows.first).to_be_visible()
    principals = rows.evaluate_all("rs => rs.map(r => r.dataset.principal)")
    routes = page.locator("#audit-table td.route").all_inner_texts()
    assert principals and set(principals) == {"carl"}
    assert any(r.endswith(f"{SHARE}/whoami") for r in routes), routes
    assert set(page.locator("#audit-table td.principal").all_inner_texts()) == {"carl"}
    # ... and by action: the admin's team creation, with the team in its details.
    page.fill("#audit-principal", "admin")
    page.fill("#audit-action", "flask:mlflow_share_api.create_team")
    expect(_search_audit(page).first).to_be_visible()
    actions = set(page.locator("#audit-table td.action").all_inner_texts())
    assert actions == {"flask:mlflow_share_api.create_team"}
    expect(page.locator("#audit-table")).to_contain_text(team)
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


def test_team_maintainer_and_engineer_see_what_their_roles_allow(web: ShareServer,
                                                                  new_page: Any) -> None:
    # alice maintains team-a: she adds and removes a member, and reads team-a's audit events.
    model = f"dash-audit-{_uid()}"
    assert web.api("POST", "/api/2.0/mlflow/registered-models/create", token=web.tokens["alice"],
                   json={"name": model}).ok
    page = new_page()
    _open_access(page, "alice")
    expect(page.locator("#team-create")).to_be_hidden()
    expect(page.locator("#users-section")).to_be_hidden()
    card = page.locator(".team-card[data-team='team-a']")
    expect(card.locator("tr[data-user=ava][data-role=viewer]")).to_be_visible()
    teams = page.locator(".team-card").evaluate_all("cs => cs.map(c => c.dataset.team)")
    assert teams == ["team-a"]
    card.locator("input.member-user").fill("carl")
    card.locator("select.member-role").select_option("viewer")
    card.locator("form.add-member button[type=submit]").click()
    expect(card.locator("tr[data-user=carl][data-role=viewer]")).to_be_visible()
    assert _members(web, "team-a")["carl"] == "viewer"
    card.locator("tr[data-user=carl] button.remove-member").click()
    expect(card.locator("tr[data-user=carl]")).to_have_count(0)
    assert "carl" not in _members(web, "team-a")
    assert page.locator("#audit-team option").evaluate_all(
        "os => os.map(o => o.value)") == ["", "team-a"]
    page.fill("#audit-resource", model)
    expect(_search_audit(page).first).to_be_visible()
    assert set(page.locator("#audit-table td.owner").all_inner_texts()) == {"team-a"}
    assert all(model in r for r in page.locator("#audit-table td.resource").all_inner_texts())
    expect(page.locator("#chain-status")).to_have_count(0)  # verification is for admins
    # Her own token only: the user field is hers.
    assert page.locator("#token-user").input_value() == "alice"

    # aaron is an engineer: no member management, no audit log, and the page says so.
    other = new_page()
    _open_access(other, "aaron")
    card = other.locator(".team-card[data-team='team-a']")
    expect(card).to_be_visible()
    expect(card.locator("form.add-member")).to_have_count(0)
    expect(card.locator("button.remove-member")).to_have_count(0)
    expect(other.locator("#audit-denied")).to_be_visible()
    expect(other.locator("#audit-filters")).to_be_hidden()
    denied = web.api("GET", f"{SHARE}/audit/events", token=web.tokens["aaron"])
    assert denied.status_code == 403


def test_grants_per_model_and_all_grants_for_admins(web: ShareServer, new_page: Any) -> None:
    model = f"dash-grants-{_uid()}"
    assert web.api("POST", "/api/2.0/mlflow/registered-models/create", token=web.tokens["alice"],
                   json={"name": model}).ok

    def grants() -> set[tuple[str, str]]:
        listed = web.api("GET", f"{SHARE}/grants", token=web.tokens["alice"],
                         params={"model": model}).json()["grants"]
        return {(g["team"], g["permission"]) for g in listed}

    # alice (maintainer of the owner team) grants team-b read from the page.
    page = new_page()
    _open_access(page, "alice")
    expect(page.locator("#grants-all-wrap")).to_be_hidden()  # all grants: admins only
    page.fill("#grant-resource", model)
    page.click("#grant-lookup button[type=submit]")
    box = page.locator("#grants-model")
    expect(box.locator(".owner-team")).to_have_text("team-a")
    box.locator("form.grant-create input[name=team]").fill("team-b")
    box.locator("form.grant-create select[name=permission]").select_option("read")
    box.locator("form.grant-create button[type=submit]").click()
    expect(box.locator("tr[data-team=team-b][data-permission=read]")).to_be_visible()
    assert grants() == {("team-b", "read")}

    # The admin sees it among all grants; bob (team-b) sees the model's grants, cannot grant.
    admin = new_page()
    _open_access(admin, "admin", password=ADMIN_PASSWORD)
    expect(admin.locator(f"#grants-all-table tr[data-resource='{model}'][data-team=team-b]"
                         "[data-permission=read]")).to_be_visible()
    bob = new_page()
    _open_access(bob, "bob")
    bob.fill("#grant-resource", model)
    bob.click("#grant-lookup button[type=submit]")
    expect(bob.locator("#grants-model tr[data-team=team-b]")).to_be_visible()
    expect(bob.locator("#grants-model form.grant-create")).to_have_count(0)
    # carl (team-c) may not read the model: the page says so.
    carl = new_page()
    _open_access(carl, "carl")
    carl.fill("#grant-resource", model)
    carl.click("#grant-lookup button[type=submit]")
    expect(carl.locator("#grants-model .error")).to_be_visible()

    # alice revokes it again.
    box.locator("tr[data-team=team-b] button.revoke-grant").click()
    expect(box.locator("tr[data-team=team-b]")).to_have_count(0)
    assert grants() == set()


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
    assert problems == []

    # A model the caller may not read: the page says so instead of drawing.
    other = new_page()
    login_local(other, "carl", next_path=f"/share/monitoring?model={name}")
    expect(other.locator("#dashboard")).to_have_attribute("data-state", "error")
    expect(other.locator("#status .error")).to_be_visible()
    expect(other.locator("#chart-team-requests svg")).to_have_count(0)
