"""Two mlflow-share servers (two workers each) on one PostgreSQL database and one artifact
root: one policy, one audit chain. Changes made through one apply on the other at its next
request."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_URL, ShareServer, populate, start_server, stop_server

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
API = "/api/2.0/mlflow"
SHARE = "/api/2.0/mlflow-share"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShareServer, ShareServer]]:
    name = f"mlflow_share_pair_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{POSTGRES_URL}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    tmp = Path(tmp_path_factory.mktemp("pair"))
    artifacts = f"checksum+file://{tmp / 'artifacts'}"
    servers: list[ShareServer] = []
    try:
        for label in ("a", "b"):
            servers.append(start_server(tmp / label, f"{POSTGRES_URL}/{name}", workers=2,
                                        artifacts_uri=artifacts))
        populate(servers[0])
        servers[1].tokens = servers[0].tokens
        yield servers[0], servers[1]
    finally:
        for server in servers:
            stop_server(server)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _read(server: ShareServer, user: str, name: str) -> int:
    return server.api("GET", f"{API}/registered-models/get", token=server.tokens[user],
                      params={"name": name}).status_code


def test_a_revocation_on_one_instance_applies_on_the_other_at_once(
        pair: tuple[ShareServer, ShareServer], unique: str) -> None:
    a, b = pair
    name = f"pair-{unique}"
    assert a.api("POST", f"{API}/registered-models/create", token=a.tokens["alice"],
                 json={"name": name}).ok
    assert _read(b, "bea", name) == 403
    grant = {"model": name, "team": "team-b", "permission": "read"}
    assert a.api("POST", f"{SHARE}/grants", token=a.tokens["alice"], json=grant).ok
    # Every worker of every instance checks the policy version on each request.
    assert [_read(b, "bea", name) for _ in range(4)] == [200] * 4
    assert a.api("DELETE", f"{SHARE}/grants", token=a.tokens["alice"], json=grant).ok
    revoked_at = time.monotonic()
    assert [_read(b, "bea", name) for _ in range(4)] == [403] * 4
    assert time.monotonic() - revoked_at < 1.0

    # A token revoked through A is refused by B on its next request.
    issued = a.admin("POST", "/tokens", json={"user": "bea"}).json()
    token = issued["token"]
    assert b.api("GET", f"{SHARE}/whoami", token=token).status_code == 200
    a.admin("DELETE", "/tokens", json={"token_id": issued["token_id"]})
    assert [b.api("GET", f"{SHARE}/whoami", token=token).status_code for _ in range(4)] == \
        [401] * 4


def test_one_audit_chain_with_writers_on_both_instances(
        pair: tuple[ShareServer, ShareServer], unique: str) -> None:
    a, b = pair
    for server in (a, b):
        ready = server.api("GET", f"{SHARE}/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {
            "database": "ok", "policy": "ok", "audit": "ok", "artifacts": "ok"}}
    for index in range(6):
        server = (a, b)[index % 2]
        assert server.api("POST", f"{API}/registered-models/create",
                          token=server.tokens["aaron"],
                          json={"name": f"chain-{unique}-{index}"}).ok
    verified = subprocess.run(
        [sys.executable, "-m", "mlflow_share.cli", "audit", "verify", "--backend-store-uri",
         a.backend_uri], capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    engine = sa.create_engine(a.backend_uri)
    with engine.connect() as conn:
        seqs = conn.execute(sa.text("SELECT seq FROM share_audit_events ORDER BY seq")
                            ).scalars().all()
    engine.dispose()
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # dense: one linear chain


def test_without_the_database_requests_fail_cleanly_and_recover(
        pair: tuple[ShareServer, ShareServer], unique: str) -> None:
    """The database goes away for both instances (connections refused, open ones cut), then
    comes back: 503 in MLflow's envelope meanwhile, readiness says why, then all is served."""
    a, b = pair
    database = a.backend_uri.rsplit("/", 1)[1]
    admin = sa.create_engine(f"{POSTGRES_URL}/test", isolation_level="AUTOCOMMIT")

    def allow(allowed: bool) -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {allowed}'))
            if not allowed:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = :d"), {"d": database})

    try:
        allow(False)
        for server in (a, b):
            for _ in range(3):
                response = server.api("GET", f"{API}/registered-models/search",
                                      token=server.tokens["alice"])
                assert response.status_code == 503, response.text
                assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            ready = server.api("GET", f"{SHARE}/ready")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] == "unreachable"
    finally:
        allow(True)
        admin.dispose()
    for server in (a, b):
        deadline = time.monotonic() + 10
        while server.api("GET", f"{SHARE}/ready").status_code != 200:
            assert time.monotonic() < deadline, "the instance did not recover"
            time.sleep(0.2)
        assert server.api("POST", f"{API}/registered-models/create",
                          token=server.tokens["alice"],
                          json={"name": f"after-{unique}-{server.url[-5:]}"}).ok
    verified = subprocess.run(
        [sys.executable, "-m", "mlflow_share.cli", "audit", "verify", "--backend-store-uri",
         a.backend_uri], capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
