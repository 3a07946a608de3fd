"""Fixtures that run real `mlflow server --app-name mlflow-share` processes on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

ADMIN_PASSWORD = "admin-password-for-tests"
USER_PASSWORD = "user-password-for-tests"
POSTGRES_URL = os.environ.get("MLFLOW_SHARE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ShareServer:
    """A running server; ``url`` is its base address, ``log`` its combined output."""

    url: str
    backend_uri: str
    artifacts: Path
    log: Path
    process: subprocess.Popen[bytes]
    tokens: dict[str, str] = field(default_factory=dict)

    def admin_auth(self) -> tuple[str, str]:
        return ("admin", ADMIN_PASSWORD)

    def api(self, method: str, path: str, *, token: str | None = None,
            auth: tuple[str, str] | None = None, **kwargs: object) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[arg-type]
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, auth=auth,
                                timeout=60, **kwargs)  # type: ignore[arg-type]

    def admin(self, method: str, path: str, **kwargs: object) -> requests.Response:
        response = self.api(method, "/api/2.0/mlflow-share" + path, auth=self.admin_auth(),
                            **kwargs)
        assert response.status_code == 200, response.text
        return response


def start_server(tmp: Path, backend_uri: str | None = None, *, workers: int = 1,
                 extra: tuple[str, ...] = (), artifacts_uri: str | None = None,
                 env_extra: dict[str, str] | None = None) -> ShareServer:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    backend_uri = backend_uri or f"sqlite:///{tmp / 'mlflow.db'}"
    artifacts = tmp / "artifacts"
    artifacts_uri = artifacts_uri or f"checksum+file://{artifacts}"
    log = tmp / "server.log"
    # No huey job runners: they start ~8 processes per server and no test here uses jobs.
    env = {**os.environ, "MLFLOW_SHARE_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env_extra or {})}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                 "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    if extra[:1] == ("waitress",):
        # `mlflow server --waitress-opts` cannot start any factory app on Linux in MLflow 3.17
        # (it passes both `--call` and `create_app()`); serve the factory as MLflow would.
        env.update(_MLFLOW_SERVER_FILE_STORE=backend_uri, _MLFLOW_SGI_NAME="waitress",
                   _MLFLOW_SERVER_ARTIFACT_ROOT="mlflow-artifacts:/",
                   _MLFLOW_SERVER_ARTIFACT_DESTINATION=artifacts_uri,
                   _MLFLOW_SERVER_SERVE_ARTIFACTS="true")
        command = [sys.executable, "-m", "waitress", "--host=127.0.0.1", f"--port={port}",
                   "--threads=4", "--call", "mlflow_share.app:create_app"]
    else:
        command = [
            sys.executable, "-m", "mlflow", "server", "--app-name", "mlflow-share",
            "--backend-store-uri", backend_uri,
            "--artifacts-destination", artifacts_uri,
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), *extra,
        ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   cwd=tmp, start_new_session=True)
    server = ShareServer(f"http://127.0.0.1:{port}", backend_uri, artifacts, log, process)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except requests.RequestException:  # not listening yet, or a worker still loading
            pass
        time.sleep(0.3)
    stop_server(server)
    raise RuntimeError(f"server did not become healthy:\n{log.read_text()[-4000:]}")


def stop_server(server: ShareServer) -> None:
    import signal

    if server.process.poll() is None:
        try:
            os.killpg(server.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)


@contextmanager
def running_server(tmp: Path, backend_uri: str | None = None, **kwargs: object
                   ) -> Iterator[ShareServer]:
    server = start_server(tmp, backend_uri, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        stop_server(server)


# Teams and people of the default world: (user, team, role).
WORLD = (
    ("alice", "team-a", "maintainer"),
    ("aaron", "team-a", "engineer"),
    ("ava", "team-a", "viewer"),
    ("bob", "team-b", "maintainer"),
    ("bea", "team-b", "engineer"),
    ("bert", "team-b", "viewer"),
    ("carl", "team-c", "engineer"),
)


def populate(server: ShareServer) -> None:
    """Create the default world's teams, users and one token per user."""
    for team in sorted({t for _, t, _ in WORLD}):
        server.admin("POST", "/teams", json={"name": team})
    for user, team, role in WORLD:
        server.admin("POST", "/users", json={"name": user, "password": USER_PASSWORD})
        server.admin("POST", "/teams/members", json={"team": team, "user": user, "role": role})
        server.tokens[user] = server.admin("POST", "/tokens", json={"user": user}).json()["token"]
    server.admin("POST", "/users", json={"name": "nobody", "password": USER_PASSWORD})
    server.tokens["nobody"] = server.admin("POST", "/tokens", json={"user": "nobody"}).json()["token"]


@pytest.fixture(scope="session")
def share_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareServer]:
    """One uvicorn-served server with the default world, shared by the integration tests."""
    # Webhooks may reach receivers on loopback (refused by default), retried quickly.
    webhooks = {"MLFLOW_SHARE_WEBHOOK_ALLOW": "127.0.0.0/8", "MLFLOW_SHARE_WEBHOOK_BACKOFF": "0.1"}
    with running_server(tmp_path_factory.mktemp("share-server"), env_extra=webhooks) as server:
        populate(server)
        yield server


@pytest.fixture
def as_user(share_server: ShareServer, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Switch the stock MLflow client's identity: ``as_user("alice")`` or ``as_user(None)``."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", share_server.url)
    mlflow.set_tracking_uri(share_server.url)

    def switch(user: str | None) -> None:
        for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                     "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.delenv(name, raising=False)
        if user == "admin":
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
        elif user is not None:
            monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", share_server.tokens[user])

    yield switch
    mlflow.set_tracking_uri(None)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def _no_client_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stock client retries 5xx/429 with backoff; a failing test should fail fast.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "share_server" in item.fixturenames:
        server = item.funcargs.get("share_server")
        if server is not None and server.log.exists():
            report.sections.append(("server log (tail)", server.log.read_text()[-6000:]))
