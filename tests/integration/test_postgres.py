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


def test_a_team_keeps_a_maintainer_when_its_maintainers_leave_at_once(
        pg_server: ShareServer) -> None:
    """Each removal checks that another maintainer remains; on PostgreSQL two workers running
    them at once must not both see the other one still there (the policy writes are
    serialized), so one removal is refused and the team keeps a maintainer."""
    from concurrent.futures import ThreadPoolExecutor

    for round_ in range(4):
        team = f"pair-{uuid.uuid4().hex[:8]}"
        people = [f"{team}-m{i}" for i in range(3)]
        pg_server.admin("POST", "/teams", json={"name": team})
        for person in people:
            pg_server.admin("POST", "/users", json={"name": person, "service_account": True})
            pg_server.admin("POST", "/teams/members",
                            json={"team": team, "user": person, "role": "maintainer"})
        with ThreadPoolExecutor(len(people)) as pool:
            answers = list(pool.map(lambda person: pg_server.api(
                "DELETE", "/api/2.0/mlflow-share/teams/members", auth=pg_server.admin_auth(),
                json={"team": team, "user": person}).status_code, people))
        assert sorted(answers) == [200, 200, 409], (round_, answers)
        teams = pg_server.admin("GET", "/teams").json()["teams"]
        members = next(t for t in teams if t["name"] == team)["members"]
        assert [m["role"] for m in members] == ["maintainer"]
