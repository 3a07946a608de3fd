"""Device logins (OAuth 2.0 device authorization grant, RFC 8628) against a real server:
the client package's auth provider logs a notebook in through a browser session's approval,
and the protocol's refusals (denied, expired, used, too fast, another client) come in
OAuth's error form. Approvals go through a real session (login form, CSRF header)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import USER_PASSWORD, ShareServer, populate, running_server

pytestmark = pytest.mark.integration
SHARE = "/api/2.0/mlflow-share"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
CODE_SECONDS = 15  # MLFLOW_SHARE_DEVICE_CODE_MINUTES below


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareServer]:
    env = {"MLFLOW_SHARE_DEVICE_CODE_MINUTES": str(CODE_SECONDS / 60),
           "MLFLOW_SHARE_DEVICE_POLL_SECONDS": "1",
           # requests keeps Secure cookies to https; this server speaks plain http
           "MLFLOW_SHARE_INSECURE_COOKIES": "1"}
    with running_server(tmp_path_factory.mktemp("device-server"), env_extra=env) as started:
        populate(started)
        yield started


def browser_session(server: ShareServer, user: str) -> requests.Session:
    """A session as a browser gets one: the login form (with its CSRF token), then the
    session's CSRF token from /share/session on every change."""
    session = requests.Session()
    form = session.get(f"{server.url}/share/login", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None, form.text
    logged_in = session.post(f"{server.url}/share/login", allow_redirects=False, timeout=30,
                             data={"csrf_token": token.group(1), "username": user,
                                   "password": USER_PASSWORD, "next": "/share/device"})
    assert logged_in.status_code == 303, logged_in.text
    csrf = session.get(f"{server.url}/share/session", timeout=30).json()["csrf_token"]
    session.headers["X-CSRF-Token"] = csrf
    return session


def start(server: ShareServer, **extra: str) -> dict[str, Any]:
    response = requests.post(f"{server.url}{SHARE}/oauth/device_authorization", timeout=30,
                             data={"client_id": "tests", **extra})
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return dict(response.json())


def poll(server: ShareServer, device_code: str, client_id: str = "tests") -> requests.Response:
    return requests.post(f"{server.url}{SHARE}/oauth/token", timeout=30, data={
        "grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": client_id})


def error_of(response: requests.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) >= {"error", "error_description"} and "error_code" not in body, body
    return str(body["error"])


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Lines:
    """A child process's stderr, read line by line as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stderr is not None
        stream = process.stderr
        threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")),
                         daemon=True).start()

    def code(self) -> str | None:
        for line in self.lines:
            found = re.fullmatch(r"\s+([A-Z]{4}-[A-Z]{4})\s*", line)
            if found:
                return found.group(1)
        return None


_NOTEBOOK = textwrap.dedent("""
    import mlflow
    client = mlflow.MlflowClient()
    print(len(client.search_experiments()))
""")


def test_the_client_package_logs_a_notebook_in_through_the_browser(
        server: ShareServer, tmp_path: Path) -> None:
    """MLFLOW_TRACKING_AUTH=mlflow-share with no token stored: the provider starts a device
    login; alice approves it (a shorter lifetime than asked) in her browser session; the
    notebook's stock MlflowClient call then goes through with alice's new token."""
    tokens = tmp_path / "home" / "tokens.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "MLFLOW_TRACKING_AUTH": "mlflow-share",
           "MLFLOW_SHARE_TOKEN_FILE": str(tokens), "MLFLOW_SHARE_DEVICE_LOGIN": "1"}
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    notebook = subprocess.Popen([sys.executable, "-c", _NOTEBOOK], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = Lines(notebook)
        code = wait_for(lines.code, 120, "the user code")
        assert f"{server.url}/share/device" in "".join(lines.lines)
        alice = browser_session(server, "alice")
        shown = alice.get(f"{server.url}{SHARE}/device/requests", params={"user_code": code},
                          timeout=30).json()["request"]
        assert shown["client_id"] == "mlflow-share-client" and shown["requested_days"] == 30
        approved = alice.post(f"{server.url}{SHARE}/device/approve", timeout=30,
                              json={"user_code": code.lower(), "expires_in_days": 1})
        assert approved.status_code == 200, approved.text
        out, err = notebook.communicate(timeout=120)
    finally:
        notebook.kill()
    assert notebook.returncode == 0, "".join(lines.lines) + (err or "")
    assert out.strip().isdigit()
    assert tokens.stat().st_mode & 0o777 == 0o600
    entry = json.loads(tokens.read_text())[server.url]
    assert entry["user"] == "alice" and entry["token"].startswith("msh_")
    assert abs(entry["expires_at"] / 1000 - time.time() - 86_400) < 300  # as approved: 1 day
    who = server.api("GET", f"{SHARE}/whoami", token=entry["token"]).json()
    assert who["user"] == "alice"

    # The CLI finds the stored token too (no credentials in its environment).
    whoami = subprocess.run([sys.executable, "-m", "mlflow_share.cli", "whoami", "--json"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)[0]["user"] == "alice"

    # Every step is audited, naming alice once she is known.
    events = server.admin("GET", "/audit/events", params={"max_results": 1000}).json()["events"]
    logins = [e for e in events if e["action"].startswith(("oauth.", "device_request."))]
    issued = [e for e in logins if e["action"] == "oauth.token" and e["status"] == 200]
    assert issued and issued[-1]["principal"] == "alice"
    grant_id = issued[-1]["details"]["device_login"]
    mine = [e for e in logins if (e.get("details") or {}).get("device_login") == grant_id]
    assert [e["action"] for e in mine][0] == "oauth.device_authorization"
    assert any(e["action"] == "device_request.approve" and e["principal"] == "alice"
               for e in mine)
    assert code not in json.dumps(events)  # codes are secrets: never logged


def test_a_denied_login_gets_access_denied(server: ShareServer) -> None:
    started = start(server)
    assert error_of(poll(server, started["device_code"])) == "authorization_pending"
    bob = browser_session(server, "bob")
    denied = bob.post(f"{server.url}{SHARE}/device/reject", timeout=30,
                      json={"user_code": started["user_code"]})
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    assert error_of(poll(server, started["device_code"])) == "access_denied"
    again = bob.post(f"{server.url}{SHARE}/device/approve", timeout=30,
                     json={"user_code": started["user_code"]})
    assert again.status_code == 404  # decided once
    # The audit log tells the story of this login by its id: started by an anonymous device,
    # pending, denied by bob, and the device's refused poll names bob.
    events = [e for e in server.admin("GET", "/audit/events", params={"max_results": 1000})
              .json()["events"] if (e.get("details") or {}).get("device_login")]
    grant_id = next(e["details"]["device_login"] for e in events
                    if e["action"] == "device_request.reject" and e["principal"] == "bob")
    story = [(e["action"], e["principal"], e["decision"]) for e in events
             if e["details"]["device_login"] == grant_id]
    assert story == [("oauth.device_authorization", "anonymous", "allow"),
                     ("oauth.token", "anonymous", "reject"),
                     ("device_request.reject", "bob", "allow"),
                     ("oauth.token", "bob", "deny")]


def test_an_expired_code_gets_expired_token(server: ShareServer) -> None:
    started = start(server)
    assert started["expires_in"] == CODE_SECONDS

    def expired() -> bool:
        return error_of(poll(server, started["device_code"])) == "expired_token"

    wait_for(expired, CODE_SECONDS + 30, "the code to expire")
    late = browser_session(server, "alice").post(
        f"{server.url}{SHARE}/device/approve", timeout=30,
        json={"user_code": started["user_code"]})
    assert late.status_code == 404


def test_codes_work_once_for_their_client_and_fast_polls_slow_down(
        server: ShareServer) -> None:
    started = start(server, expires_in_days="7")
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}",
                        started["user_code"])
    assert started["verification_uri"] == f"{server.url}/share/device"
    assert error_of(poll(server, started["device_code"])) == "authorization_pending"
    fast = poll(server, started["device_code"])
    assert error_of(fast) == "slow_down" and fast.json()["interval"] == 1 + 5
    assert error_of(poll(server, started["device_code"], client_id="other")) == "invalid_grant"
    assert error_of(poll(server, "made-up")) == "invalid_grant"
    missing = requests.post(f"{server.url}{SHARE}/oauth/token", timeout=30, data={
        "grant_type": DEVICE_GRANT, "device_code": started["device_code"]})
    assert error_of(missing) == "invalid_request"

    alice = browser_session(server, "alice")
    too_long = alice.post(f"{server.url}{SHARE}/device/approve", timeout=30,
                          json={"user_code": started["user_code"], "expires_in_days": 30})
    assert too_long.status_code == 400  # longer than the device asked for
    assert alice.post(f"{server.url}{SHARE}/device/approve", timeout=30,
                      json={"user_code": started["user_code"]}).status_code == 200
    issued = poll(server, started["device_code"])
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["token_type"] == "Bearer" and body["user"] == "alice"
    assert 7 * 86_400 - 120 <= body["expires_in"] <= 7 * 86_400
    assert error_of(poll(server, started["device_code"])) == "invalid_grant"  # used
    # The token lasts what its approver allowed: it cannot mint a longer-lived one.
    minted = server.api("POST", f"{SHARE}/tokens", token=body["access_token"], json={})
    assert minted.status_code == 403 and "device login" in minted.json()["message"]

    # Only the device code's SHA-256 is stored.
    engine = sa.create_engine(server.backend_uri)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.exec_driver_sql(
            "SELECT * FROM share_device_grants")]
    engine.dispose()
    digest = hashlib.sha256(started["device_code"].encode()).hexdigest()
    assert [r["status"] for r in rows if r["device_code_hash"] == digest] == ["issued"]
    assert started["device_code"] not in json.dumps(rows, default=str)


def test_only_a_signed_in_browser_approves(server: ShareServer) -> None:
    started = start(server)
    code = started["user_code"]
    with_token = server.api("POST", f"{SHARE}/device/approve", token=server.tokens["alice"],
                            json={"user_code": code})
    assert with_token.status_code == 403  # an API token cannot approve a device login
    alice = browser_session(server, "alice")
    csrf = alice.headers.pop("X-CSRF-Token")
    assert alice.post(f"{server.url}{SHARE}/device/approve", timeout=30,
                      json={"user_code": code}).status_code == 403
    alice.headers["X-CSRF-Token"] = csrf
    page = requests.get(f"{server.url}/share/device?user_code={code}", allow_redirects=False,
                        timeout=30)
    assert page.status_code == 302 and page.headers["Location"].startswith("/share/login?next=")
    shown = alice.get(f"{server.url}/share/device", params={"user_code": code}, timeout=30)
    assert shown.status_code == 200 and "script-src 'self'" in \
        shown.headers["Content-Security-Policy"]
    assert error_of(poll(server, started["device_code"])) == "authorization_pending"
    bad = requests.post(f"{server.url}{SHARE}/oauth/device_authorization", timeout=30,
                        data={"client_id": "tests", "expires_in_days": "1000"})
    assert error_of(bad) == "invalid_request"
