"""The audit log against real servers, on SQLite and on this machine's PostgreSQL.

Events are read back straight from the database (and through the API and CLI): every request
gets exactly one request event, concurrent writers share one verifying chain, the database
refuses rewrites, tampering is found, a killed server loses nothing and an audit failure
changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import (
    ADMIN_PASSWORD,
    POSTGRES_URL,
    ShareServer,
    populate,
    running_server,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.integration
API = "/api/2.0/mlflow"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def audited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[ShareServer]:
    """A two-worker server with the default world, on SQLite or on a fresh PostgreSQL database."""
    tmp = tmp_path_factory.mktemp(f"audit-{request.param}")
    with _database(request.param, tmp) as uri, running_server(tmp, uri, workers=2) as server:
        populate(server)
        yield server


class _Database:
    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind, self.tmp = kind, tmp
        self.name = f"mlflow_share_audit_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.tmp / 'audit.db'}"
        with _admin_engine().connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        return f"{POSTGRES_URL}/{self.name}"

    def __exit__(self, *exc: object) -> None:
        if self.kind == "postgres":
            with _admin_engine().connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def _database(kind: str, tmp: Path) -> _Database:
    return _Database(kind, tmp)


def _admin_engine() -> sa.Engine:
    return sa.create_engine(f"{POSTGRES_URL}/test", isolation_level="AUTOCOMMIT")


def _sql_uri(uri: str) -> str:
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)


def _events(server: ShareServer, where: str = "1 = 1", **params: Any) -> list[dict[str, Any]]:
    engine = sa.create_engine(_sql_uri(server.backend_uri))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                f"SELECT * FROM share_audit_events WHERE {where} ORDER BY seq"), params).all()
    finally:
        engine.dispose()
    events = [dict(row._mapping) for row in rows]
    for event in events:
        event["details"] = json.loads(event["details"])
    return events


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mlflow_share.cli", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def _call(server: ShareServer, method: str, path: str, user: str, request_id: str,
          **kwargs: Any) -> requests.Response:
    headers = {"X-Request-Id": request_id}
    if user == "admin":
        return server.api(method, path, auth=server.admin_auth(), headers=headers, **kwargs)
    return server.api(method, path, token=server.tokens[user], headers=headers, **kwargs)


def test_every_request_gets_exactly_one_complete_event(audited: ShareServer, unique: str) -> None:
    model = f"audit-{unique}"
    rid = lambda: uuid.uuid4().hex  # noqa: E731
    expected: dict[str, tuple[str, str, int, str]] = {}  # request id -> principal, action, status, decision

    def call(method: str, path: str, user: str, action: str, status: int, decision: str,
             **kwargs: Any) -> requests.Response:
        request_id = rid()
        response = _call(audited, method, path, user, request_id, **kwargs)
        assert response.status_code == status, response.text
        expected[request_id] = (user, action, status, decision)
        return response

    experiment_id = call("POST", f"{API}/experiments/create", "alice", "mlflow.CreateExperiment",
                         200, "allow", json={"name": model}).json()["experiment_id"]
    run_id = call("POST", f"{API}/runs/create", "aaron", "mlflow.CreateRun", 200, "allow",
                  json={"experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
    call("POST", f"{API}/runs/log-batch", "aaron", "mlflow.LogBatch", 200, "allow",
         json={"run_id": run_id, "params": [{"key": "lr", "value": "0.1"}],
               "metrics": [{"key": "auc", "value": 0.9, "timestamp": 1, "step": 0}],
               "tags": [{"key": "stage", "value": "one"}]})
    call("POST", f"{API}/runs/set-tag", "aaron", "mlflow.SetTag", 200, "allow",
         json={"run_id": run_id, "key": "stage", "value": "two"})
    call("POST", f"{API}/runs/set-tag", "bob", "mlflow.SetTag", 403, "deny",
         json={"run_id": run_id, "key": "stage", "value": "evil"})
    call("POST", f"{API}/registered-models/create", "alice", "mlflow.CreateRegisteredModel", 200,
         "allow", json={"name": model})
    _call(audited, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/"
          "artifacts/model/weights.bin", "aaron", rid(), data=b"weights")
    call("POST", f"{API}/model-versions/create", "aaron", "mlflow.CreateModelVersion", 200,
         "allow", json={"name": model, "source": f"runs:/{run_id}/model", "run_id": run_id})
    call("POST", f"{API}/registered-models/alias", "alice", "mlflow.SetRegisteredModelAlias", 200,
         "allow", json={"name": model, "alias": "prod", "version": "1"})
    call("POST", f"{API}/registered-models/alias", "bob", "mlflow.SetRegisteredModelAlias", 403,
         "deny", json={"name": model, "alias": "prod", "version": "1"})
    call("POST", "/api/2.0/mlflow-share/grants", "alice", "fn:mlflow_share_api.grants", 200,
         "allow", json={"model": model, "team": "team-b", "permission": "read"})
    call("GET", f"{API}/model-versions/get", "bob", "mlflow.GetModelVersion", 200, "allow",
         params={"name": model, "version": "1"})
    call("GET", f"{API}/model-versions/get", "carl", "mlflow.GetModelVersion", 403, "deny",
         params={"name": model, "version": "1"})
    call("GET", "/get-artifact", "ava", "fn:get_artifact_handler", 404, "reject",
         params={"run_id": run_id, "path": "model/MLmodel"})
    call("GET", "/get-artifact", "bob", "fn:get_artifact_handler", 403, "deny",
         params={"run_id": run_id, "path": "model/MLmodel"})
    call("POST", f"{API}/runs/set-tag", "nobody", "mlflow.SetTag", 403, "deny",
         json={"run_id": run_id, "key": "x", "value": "y"})

    events = _events(audited, "request_id IS NOT NULL")
    by_request: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_request.setdefault(event["request_id"], []).append(event)
    for request_id, (user, action, status, decision) in expected.items():
        mine = [e for e in by_request.get(request_id, []) if e["source"] == "request"]
        assert len(mine) == 1, (action, by_request.get(request_id))
        event = mine[0]
        assert event["principal"] == user, event
        assert event["status"] == status and event["decision"] == decision, event
        assert event["method"] in ("GET", "POST") and event["route"].startswith("/"), event
        assert event["client"] == "127.0.0.1" and len(event["hash"]) == 64, event
        if not action.startswith("fn:"):
            assert event["action"] == action, event

    def only(action: str, user: str) -> dict[str, Any]:
        found = [e for rid_, evs in by_request.items() if rid_ in expected
                 for e in evs if e["action"] == action and e["principal"] == user
                 and e["source"] == "request"]
        assert len(found) == 1, found
        return found[0]

    tag = only("mlflow.SetTag", "aaron")
    assert tag["details"]["changes"][0]["before"] == "one"
    assert tag["details"]["changes"][0]["args"]["tag"]["value"] == "two"
    alias = only("mlflow.SetRegisteredModelAlias", "alice")
    assert alias["resource_name"] == model and alias["owner_team"] == "team-a"
    assert alias["details"]["changes"][0]["args"]["alias"] == "prod"
    denied = only("mlflow.SetRegisteredModelAlias", "bob")
    assert "Permission denied" in denied["details"]["reason"] and "changes" not in denied["details"]
    read = only("mlflow.GetModelVersion", "bob")
    assert read["owner_team"] == "team-a" and read["resource_name"] == model
    batch = only("mlflow.LogBatch", "aaron")  # one transaction for params, metrics and tags
    assert batch["details"]["changes"][0]["op"] == "log_batch"
    created = only("mlflow.CreateRegisteredModel", "alice")
    assert created["owner_team"] == "team-a" and created["resource_id"]


def test_owner_sees_who_read_a_shared_model(audited: ShareServer, unique: str) -> None:
    model = f"shared-{unique}"
    assert _call(audited, "POST", f"{API}/registered-models/create", "alice", "r1",
                 json={"name": model}).status_code == 200
    audited.api("POST", "/api/2.0/mlflow-share/grants", token=audited.tokens["alice"],
                json={"model": model, "team": "team-b", "permission": "read"})
    assert _call(audited, "GET", f"{API}/registered-models/get", "bert", "r2",
                 params={"name": model}).status_code == 200
    page = audited.api("GET", "/api/2.0/mlflow-share/audit/events", token=audited.tokens["alice"],
                       params={"resource": model, "principal": "bert"}).json()
    assert [(e["action"], e["stored_action"]) for e in page["events"]] == [
        ("registered_model.read", "mlflow.GetRegisteredModel")]
    # Bob maintains team-b, not the owner team: none of team-a's events, even filtered.
    assert audited.api("GET", "/api/2.0/mlflow-share/audit/events", token=audited.tokens["bob"],
                       params={"team": "team-a"}).status_code == 403
    mine = audited.api("GET", "/api/2.0/mlflow-share/audit/events", token=audited.tokens["bob"],
                       params={"max_results": 1000}).json()["events"]
    assert all(e["owner_team"] == "team-b" for e in mine)
    assert audited.api("GET", "/api/2.0/mlflow-share/audit/events",
                       token=audited.tokens["ava"]).status_code == 403
    # Paging: pages of one event, no repeats, same as one big page.
    seen, token = [], None
    for _ in range(5):
        params: dict[str, Any] = {"max_results": 1, "resource": model}
        if token:
            params["page_token"] = token
        page = audited.api("GET", "/api/2.0/mlflow-share/audit/events",
                           auth=audited.admin_auth(), params=params).json()
        seen += [e["seq"] for e in page["events"]]
        token = page.get("next_page_token")
        if not token:
            break
    assert seen == sorted(set(seen)) and len(seen) >= 3


def _write_burst(url: str, token: str, run_id: str, worker: int, count: int) -> int:
    session = requests.Session()
    ok = 0
    for i in range(count):
        response = session.post(
            f"{url}{API}/runs/log-metric", headers={"Authorization": f"Bearer {token}",
                                                    "X-Request-Id": f"burst-{worker}-{i}"},
            json={"run_id": run_id, "key": f"m{worker}", "value": i, "timestamp": i, "step": i},
            timeout=120)
        ok += response.status_code == 200
    return ok


def test_concurrent_writers_share_one_verifying_chain(audited: ShareServer, unique: str) -> None:
    token = audited.tokens["aaron"]
    experiment_id = audited.api("POST", f"{API}/experiments/create", token=token,
                                json={"name": f"burst-{unique}"}).json()["experiment_id"]
    run_id = audited.api("POST", f"{API}/runs/create", token=token,
                         json={"experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
    processes, writes = 4, 25
    with ProcessPoolExecutor(processes) as pool:
        done = list(pool.map(_write_burst, [audited.url] * processes, [token] * processes,
                             [run_id] * processes, range(processes), [writes] * processes))
    assert done == [writes] * processes
    events = _events(audited, "request_id LIKE 'burst-%' AND action = 'mlflow.LogMetric'")
    assert len(events) == processes * writes
    assert all(e["status"] == 200 and e["details"]["changes"][0]["op"] == "log_metric"
               for e in events)
    result = _cli("audit", "verify", "--backend-store-uri", audited.backend_uri)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: ")


def test_database_refuses_to_rewrite_the_log(audited: ShareServer) -> None:
    engine = sa.create_engine(_sql_uri(audited.backend_uri))
    statements = [
        "UPDATE share_audit_events SET principal = 'someone-else' WHERE seq = 2",
        "DELETE FROM share_audit_events WHERE seq = 2",
        "DELETE FROM share_audit_events",
    ]
    if engine.dialect.name == "sqlite":
        statements.append(
            "INSERT OR REPLACE INTO share_audit_events SELECT * FROM share_audit_events WHERE seq = 2")
    else:
        statements += ["TRUNCATE share_audit_events",
                       "SET session_replication_role = replica; "
                       "DELETE FROM share_audit_events WHERE seq = 2"]
    try:
        before = _events(audited, "seq = 2")
        for statement in statements:
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                with engine.begin() as conn:
                    conn.exec_driver_sql(statement)
        assert _events(audited, "seq = 2") == before
    finally:
        engine.dispose()


def test_failed_audit_append_is_503_and_changes_nothing(audited: ShareServer, unique: str) -> None:
    token = audited.tokens["aaron"]
    experiment_id = audited.api("POST", f"{API}/experiments/create", token=token,
                                json={"name": f"blocked-{unique}"}).json()["experiment_id"]
    run_id = audited.api("POST", f"{API}/runs/create", token=token,
                         json={"experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
    engine = sa.create_engine(_sql_uri(audited.backend_uri))
    block = ("CREATE TRIGGER share_audit_test_block BEFORE INSERT ON share_audit_events "
             "BEGIN SELECT RAISE(ABORT, 'blocked by test'); END"
             if engine.dialect.name == "sqlite" else
             "CREATE TRIGGER share_audit_test_block BEFORE INSERT ON share_audit_events "
             "FOR EACH ROW EXECUTE FUNCTION share_audit_refuse()")
    with engine.begin() as conn:
        conn.exec_driver_sql(block)
    try:
        for _ in range(2):  # both workers
            write = audited.api("POST", f"{API}/runs/set-tag", token=token,
                                json={"run_id": run_id, "key": "blocked", "value": "yes"})
            assert write.status_code == 503, write.text
            assert write.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            read = audited.api("GET", f"{API}/runs/get", token=token, params={"run_id": run_id})
            assert read.status_code == 503 and read.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        # Readiness probes with a real append: a worker whose appends failed stays out of
        # rotation while the trigger is there (a rolled-back transaction would pass).
        seen = set()
        for _ in range(20):
            audited.api("GET", f"{API}/runs/get", token=token, params={"run_id": run_id})
            ready = requests.get(f"{audited.url}/api/2.0/mlflow-share/ready", timeout=10)
            seen.add((ready.status_code, ready.json()["checks"]["audit"]))
        assert (503, "append failing") in seen, seen
        with engine.connect() as conn:
            tags = conn.execute(sa.text("SELECT key FROM tags WHERE run_uuid = :r"),
                                {"r": run_id}).scalars().all()
        assert "blocked" not in tags
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER share_audit_test_block"
                                 + ("" if engine.dialect.name == "sqlite" else
                                    " ON share_audit_events"))
        engine.dispose()
    for _ in range(10):  # each worker's next check appends its probe, and it commits
        ready = requests.get(f"{audited.url}/api/2.0/mlflow-share/ready", timeout=10)
        assert ready.status_code == 200, ready.text
    assert audited.api("POST", f"{API}/runs/set-tag", token=token,
                       json={"run_id": run_id, "key": "blocked", "value": "no"}).status_code == 200


def test_verify_and_export_through_the_server(audited: ShareServer, tmp_path: Path) -> None:
    assert audited.api("GET", f"{API}/registered-models/search", token=audited.tokens["alice"],
                       params={"max_results": 1}).ok  # alice has an event, run alone too
    env = {"MLFLOW_TRACKING_URI": audited.url, "MLFLOW_TRACKING_USERNAME": "admin",
           "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    result = _cli("audit", "verify", env=env)
    assert result.returncode == 0 and result.stdout.startswith("OK: "), result.stderr
    out = tmp_path / "events.jsonl"
    result = _cli("audit", "export", "--principal", "alice", "-o", str(out), env=env)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines and all(e["principal"] == "alice" for e in lines)
    direct = _cli("audit", "export", "--principal", "alice", "--until", str(lines[-1]["ts"] + 1),
                  "--backend-store-uri", audited.backend_uri)
    assert [json.loads(line)["seq"] for line in direct.stdout.splitlines()] == [
        e["seq"] for e in lines]
    as_alice = {"MLFLOW_TRACKING_URI": audited.url, "MLFLOW_TRACKING_TOKEN": audited.tokens["alice"]}
    denied = _cli("audit", "verify", env=as_alice)
    assert denied.returncode != 0 and "PERMISSION_DENIED" in denied.stderr


def test_events_page_newest_first(audited: ShareServer) -> None:
    def page(**params: object) -> dict[str, Any]:
        answer = audited.api("GET", "/api/2.0/mlflow-share/audit/events",
                             auth=audited.admin_auth(), params={"max_results": 5, **params})
        assert answer.status_code == 200, answer.text
        return answer.json()

    first = page(order="desc")
    seqs = [e["seq"] for e in first["events"]]
    assert len(seqs) == 5 and seqs == sorted(seqs, reverse=True)
    second = [e["seq"] for e in page(order="desc", page_token=first["next_page_token"])["events"]]
    assert second == list(range(seqs[-1] - 1, seqs[-1] - 6, -1))  # dense chain, older next
    assert audited.api("GET", "/api/2.0/mlflow-share/audit/events", auth=audited.admin_auth(),
                       params={"order": "sideways"}).status_code == 400


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_kill_9_during_writes_loses_no_event(tmp_path: Path, kind: str) -> None:
    with _database(kind, tmp_path) as uri:
        _kill_during_writes(tmp_path, uri)


def _kill_during_writes(tmp_path: Path, uri: str) -> None:
    server = start_server(tmp_path, uri, workers=2)
    try:
        populate(server)
        token = server.tokens["aaron"]
        experiment_id = server.api("POST", f"{API}/experiments/create", token=token,
                                   json={"name": "killed"}).json()["experiment_id"]
        run_id = server.api("POST", f"{API}/runs/create", token=token,
                            json={"experiment_id": experiment_id}).json()["run"]["info"]["run_id"]
        stop = threading.Event()

        def burst(worker: int) -> None:
            session = requests.Session()
            i = 0
            while not stop.is_set():
                try:
                    session.post(f"{server.url}{API}/runs/set-tag",
                                 headers={"Authorization": f"Bearer {token}"}, timeout=10,
                                 json={"run_id": run_id, "key": f"k-{worker}-{i}", "value": "v"})
                except requests.RequestException:
                    return
                i += 1

        threads = [threading.Thread(target=burst, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(3)
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop_server(server)
    result = _cli("audit", "verify", "--backend-store-uri", server.backend_uri)
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(_sql_uri(server.backend_uri))
    with engine.connect() as conn:
        tags = set(conn.execute(sa.text("SELECT key FROM tags WHERE run_uuid = :r AND key LIKE 'k-%'"),
                                {"r": run_id}).scalars())
    engine.dispose()
    audited_keys = {e["details"]["changes"][0]["args"]["tag"]["key"]
                    for e in _events(server, "action = 'mlflow.SetTag'")
                    if "changes" in e["details"]}
    assert len(tags) > 20
    assert tags == audited_keys
    # The server starts again on the same database and the chain goes on.
    with running_server(tmp_path / "again", server.backend_uri) as again:
        assert again.api("GET", f"{API}/runs/get", auth=again.admin_auth(),
                         params={"run_id": run_id}).status_code == 200
    assert _cli("audit", "verify", "--backend-store-uri", server.backend_uri).returncode == 0


def _route_requests() -> list[tuple[str, str, bool]]:
    """(method, concrete path, is_public) for every Flask route of MLflow and mlflow-share."""
    import re

    from mlflow.server import app as flask_app

    from mlflow_share.policy.routes import RouteTable

    table = RouteTable(flask_app)
    out = []
    for rule in flask_app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?[^>]+>", "x1", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            match = table.match(path, method)
            public = match is not None and match.rule is not None and match.rule.resolver == "public"
            out.append((method, path, public))
    return out


def test_every_route_answers_with_exactly_one_event(audited: ShareServer) -> None:
    calls = {}
    for method, path, public in _route_requests():
        request_id = uuid.uuid4().hex
        try:
            response = audited.api(method, path, token=audited.tokens["carl"], json={},
                                   headers={"X-Request-Id": request_id})
        except requests.RequestException as exc:  # pragma: no cover - reported below
            raise AssertionError(f"{method} {path}: {exc}") from None
        calls[request_id] = (method, path, public, response.status_code)
    assert len(calls) > 200
    events: dict[str, list[dict[str, Any]]] = {}
    for event in _events(audited, "request_id IS NOT NULL"):
        events.setdefault(event["request_id"], []).append(event)
    for request_id, (method, path, public, status) in calls.items():
        mine = [e for e in events.get(request_id, []) if e["source"] == "request"]
        if public:
            assert mine == [], (method, path)
            continue
        assert len(mine) == 1, (method, path, status, events.get(request_id))
        assert mine[0]["status"] == status and mine[0]["principal"] == "carl", (method, path)
        assert mine[0]["method"] == method


def test_artifact_uploads_and_downloads_are_audited(audited: ShareServer, unique: str,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", audited.tokens["aaron"])
    client = MlflowClient(audited.url)
    experiment_id = client.create_experiment(f"files-{unique}")
    run = client.create_run(experiment_id)
    source = tmp_path / "weights.bin"
    source.write_bytes(b"\x00" * 1000)
    client.log_artifact(run.info.run_id, str(source), "model")
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="model/weights.bin", dst_path=str(tmp_path / "dl"),
        tracking_uri=audited.url)
    assert Path(local).read_bytes() == source.read_bytes()
    suffix = f"{run.info.run_id}/artifacts/model/weights.bin"
    denied = audited.api("GET", f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{suffix}",
                         token=audited.tokens["bob"])
    assert denied.status_code == 403
    events = [e for e in _events(audited, "route LIKE :r", r=f"%{suffix}")
              if e["source"] == "request"]
    summary = sorted((e["principal"], e["method"], e["status"], e["decision"]) for e in events)
    assert ("aaron", "PUT", 200, "allow") in summary
    assert ("aaron", "GET", 200, "allow") in summary
    assert ("bob", "GET", 403, "deny") in summary
    assert all(e["details"]["artifact_path"].endswith("model/weights.bin") for e in events)
    assert all(e["resource_kind"] == "experiment" and e["resource_id"] == experiment_id
               for e in events)


@pytest.mark.postgres
def test_postgres_app_role_cannot_rewrite_or_unprotect_the_log(tmp_path: Path) -> None:
    """The documented setup: the tables belong to an owner role, the server's role may only
    SELECT and INSERT on the audit table, so it can neither rewrite events nor drop triggers."""
    from mlflow_share import db
    from mlflow_share.audit import log, models

    name = f"mlflow_share_roles_{uuid.uuid4().hex[:8]}"
    app_role = f"share_app_{uuid.uuid4().hex[:8]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        conn.execute(sa.text(f'CREATE ROLE "{app_role}" LOGIN'))
    owner_uri = f"postgresql+psycopg://{POSTGRES_URL.split('://', 1)[1]}/{name}"
    base = POSTGRES_URL.split("://", 1)[1].split("@", 1)[-1]
    app_uri = f"postgresql+psycopg://{app_role}@{base}/{name}"
    try:
        owner = db.get_engine(owner_uri)
        db.create_schema(owner)
        models.install_triggers(owner)
        with owner.begin() as conn:
            conn.exec_driver_sql(f'GRANT SELECT, INSERT ON share_audit_events TO "{app_role}"')
            conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA public TO "{app_role}"')
        app = sa.create_engine(app_uri)
        with app.connect() as conn:  # the server's role appends
            log.append(conn, [{"ts": 1, "request_id": "r", "source": "request",
                               "principal": "alice", "action": "mlflow.GetRun", "method": "GET",
                               "route": "/", "resource_kind": None, "resource_id": None,
                               "resource_name": None, "owner_team": None, "decision": "allow",
                               "status": 200, "client": "127.0.0.1", "owner_teams": None,
                               "details": "{}"}])
            conn.commit()
        for statement in ("UPDATE share_audit_events SET principal = 'x'",
                          "DELETE FROM share_audit_events", "TRUNCATE share_audit_events",
                          "DROP TRIGGER share_audit_no_update ON share_audit_events",
                          "ALTER TABLE share_audit_events DISABLE TRIGGER ALL"):
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied|must be owner"):
                with app.begin() as conn:
                    conn.exec_driver_sql(statement)
        app.dispose()
        owner.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{app_role}"'))
        admin.dispose()


def test_audit_scheme_audits_direct_database_writes(tmp_path: Path) -> None:
    """`audit+sqlite://` gives code that opens the database directly the audited stores."""
    uri = f"audit+sqlite:///{tmp_path / 'direct.db'}"
    script = (
        "from mlflow import MlflowClient\n"
        f"client = MlflowClient(tracking_uri={uri!r}, registry_uri={uri!r})\n"
        "experiment_id = client.create_experiment('direct')\n"
        "run = client.create_run(experiment_id)\n"
        "client.set_tag(run.info.run_id, 'k', 'v1')\n"
        "client.set_tag(run.info.run_id, 'k', 'v2')\n"
        "client.create_registered_model('direct-model')\n"
        "print(type(client._tracking_client.store).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "AuditingSqlAlchemyStore"
    engine = sa.create_engine(uri.replace("audit+", "", 1))
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT principal, details FROM share_audit_events ORDER BY seq")).all()
    engine.dispose()
    ops = [json.loads(d)["changes"][0]["op"] for _, d in rows]
    assert ops == ["create_experiment", "create_run", "set_tag", "set_tag",
                   "create_registered_model"]
    assert all(p.startswith("system:") for p, _ in rows)
    assert json.loads(rows[3][1])["changes"][0]["before"] == "v1"
    assert _cli("audit", "verify", "--backend-store-uri", uri).returncode == 0


def test_every_owner_team_of_a_request_sees_it(audited: ShareServer, unique: str) -> None:
    api = "/api/2.0/mlflow-share"
    a_exp = audited.api("POST", f"{API}/experiments/create", token=audited.tokens["alice"],
                        json={"name": f"a-{unique}"}).json()["experiment_id"]
    b_exp = audited.api("POST", f"{API}/experiments/create", token=audited.tokens["bob"],
                        json={"name": f"b-{unique}"}).json()["experiment_id"]
    audited.api("POST", f"{api}/grants", token=audited.tokens["bob"],
                json={"experiment_id": b_exp, "team": "team-a", "permission": "read"})
    request_id = f"both-{unique}"
    assert _call(audited, "POST", f"{API}/runs/search", "aaron", request_id,
                 json={"experiment_ids": [a_exp, b_exp]}).status_code == 200
    for maintainer in ("alice", "bob"):
        events = audited.api("GET", f"{api}/audit/events", token=audited.tokens[maintainer],
                             params={"principal": "aaron", "action": "mlflow.SearchRuns",
                                     "max_results": 1000}).json()["events"]
        assert request_id in [e["request_id"] for e in events], maintainer
    carl_view = audited.api("GET", f"{api}/audit/events", auth=audited.admin_auth(),
                            params={"team": "team-c", "principal": "aaron"}).json()["events"]
    assert request_id not in [e["request_id"] for e in carl_view]
    for bad in ({"since": str(10**30)}, {"page_token": "MTAwMDAwMDAwMDAwMDAwMDAwMDAwMA=="},
                {"max_results": "0"}, {"until": "soon"}):
        response = audited.api("GET", f"{api}/audit/events", auth=audited.admin_auth(),
                               params=bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_secrets_never_enter_the_log(tmp_path: Path) -> None:
    from mlflow_share.stores import AuditingSqlAlchemyStore

    uri = f"sqlite:///{tmp_path / 'secrets.db'}"
    store = AuditingSqlAlchemyStore(uri, str(tmp_path / "artifacts"))
    store.create_gateway_secret(secret_name="openai", secret_value={"api_key": "sk-LEAKED-123"},
                                provider="openai")
    engine = sa.create_engine(uri)
    with engine.connect() as conn:
        details = conn.execute(sa.text("SELECT details FROM share_audit_events")).scalars().all()
    engine.dispose()
    assert details and all("sk-LEAKED" not in d for d in details)
    args = json.loads(details[-1])["changes"][0]["args"]
    assert args["secret_value"] == "<redacted>" and args["secret_name"] == "openai"
