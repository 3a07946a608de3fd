"""The same enforcement on the PostgreSQL server of this machine (a fresh database per run)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL, ShareServer, populate, running_server

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareServer]:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    name = f"mlflow_share_test_{uuid.uuid4().hex[:10]}"
    admin_engine = sqlalchemy.create_engine(f"{POSTGRES_URL}/test", isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        with running_server(Path(tmp_path_factory.mktemp("pg")), f"{POSTGRES_URL}/{name}",
                            workers=2) as server:
            populate(server)
            yield server
    finally:
        with admin_engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


def test_postgres_roles_grants_and_filtered_search(pg_server: ShareServer) -> None:
    api = "/api/2.0/mlflow"
    alice, bob, carl = (pg_server.tokens[u] for u in ("alice", "bob", "carl"))
    for i in range(5):
        assert pg_server.api("POST", f"{api}/registered-models/create", token=alice,
                             json={"name": f"pg-a-{i}"}).status_code == 200
        assert pg_server.api("POST", f"{api}/experiments/create", token=alice,
                             json={"name": f"pg-a-{i}"}).status_code == 200
    assert pg_server.api("POST", f"{api}/registered-models/create", token=carl,
                         json={"name": "pg-c"}).status_code == 200
    get = pg_server.api("GET", f"{api}/registered-models/get", token=bob, params={"name": "pg-a-0"})
    assert get.status_code == 403
    pg_server.api("POST", "/api/2.0/mlflow-share/grants", token=alice,
                  json={"model": "pg-a-0", "team": "team-b", "permission": "read"})
    pages, token, names = 0, None, []
    while True:
        params = {"max_results": 1, **({"page_token": token} if token else {})}
        page = pg_server.api("GET", f"{api}/registered-models/search", token=bob,
                             params=params).json()
        names += [m["name"] for m in page.get("registered_models", [])]
        token, pages = page.get("next_page_token"), pages + 1
        if not token:
            break
    assert names == ["pg-a-0"]
    experiments = pg_server.api("POST", f"{api}/experiments/search", token=carl,
                                json={"max_results": 100}).json().get("experiments", [])
    assert experiments == []
    mine = pg_server.api("POST", f"{api}/experiments/search", token=alice,
                         json={"max_results": 2}).json()
    assert len(mine["experiments"]) == 2 and mine["next_page_token"]
    assert pg_server.api("GET", f"{api}/registered-models/get", token=bob,
                         params={"name": "pg-a-0"}).status_code == 200
