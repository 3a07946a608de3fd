"""Two mlflow-share servers (two workers each) on one PostgreSQL database and one artifact
root: one policy, one audit chain. Changes made through one apply on the other at its next
request."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import (
    POSTGRES_URL,
    USER_PASSWORD,
    ShareServer,
    free_port,
    populate,
    start_server,
    stop_server,
)
from tests.integration.test_gateway import _gateway
from tests.integration.test_integrity_s3 import AWS, BUCKET, s3  # noqa: F401 - the fixture

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
API = "/api/2.0/mlflow"
SHARE = "/api/2.0/mlflow-share"


@contextmanager
def _pair(tmp: Path, artifacts: str, env: dict[str, str] | None = None
          ) -> Iterator[tuple[ShareServer, ShareServer]]:
    """Two instances of two workers on a fresh PostgreSQL database and one artifact root."""
    name = f"mlflow_share_pair_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{POSTGRES_URL}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    servers: list[ShareServer] = []
    # Pools sized to the server's max_connections (100 here, shared with the other tests):
    # 2 instances x 2 workers x 4 engines x (2 + 3) stays under it; past that, requests wait.
    pools = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "2", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "3",
             "MLFLOW_SHARE_DB_POOL_SIZE": "2", "MLFLOW_SHARE_DB_MAX_OVERFLOW": "3", **(env or {})}
    try:
        for label in ("a", "b"):
            servers.append(start_server(tmp / label, f"{POSTGRES_URL}/{name}", workers=2,
                                        artifacts_uri=artifacts, env_extra=pools))
        populate(servers[0])
        servers[1].tokens = servers[0].tokens
        yield servers[0], servers[1]
    finally:
        for server in servers:
            stop_server(server)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShareServer, ShareServer]]:
    tmp = Path(tmp_path_factory.mktemp("pair"))
    with _pair(tmp, f"checksum+file://{tmp / 'artifacts'}") as servers:
        yield servers


@pytest.fixture
def s3_pair(s3: Any, tmp_path: Path) -> Iterator[tuple[ShareServer, ShareServer]]:
    """The same on S3 (moto on loopback): what each instance stores, the other verifies.
    For one test, with smaller pools: PostgreSQL's max_connections (100) is shared with the
    tests of the other process."""
    env = {**AWS, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
           "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "1", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "1",
           "MLFLOW_SHARE_DB_POOL_SIZE": "1", "MLFLOW_SHARE_DB_MAX_OVERFLOW": "1"}
    with _pair(tmp_path, f"checksum+s3://{BUCKET}/pair", env) as servers:
        yield servers


def _read(server: ShareServer, user: str, name: str) -> int:
    return server.api("GET", f"{API}/registered-models/get", token=server.tokens[user],
                      params={"name": name}).status_code


def _verify_chain(server: ShareServer) -> None:
    verified = subprocess.run(
        [sys.executable, "-m", "mlflow_share.cli", "audit", "verify", "--backend-store-uri",
         server.backend_uri], capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_fifty_clients_over_two_instances_on_s3(s3_pair: tuple[ShareServer, ShareServer],
                                                unique: str) -> None:
    """First in the file (``--dist loadfile`` keeps the order): ``pair`` does not exist yet,
    so the two pairs never hold PostgreSQL connections at once."""
    _fifty_clients(*s3_pair, unique)


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
    _verify_chain(a)
    engine = sa.create_engine(a.backend_uri)
    with engine.connect() as conn:
        seqs = conn.execute(sa.text("SELECT seq FROM share_audit_events ORDER BY seq")
                            ).scalars().all()
    engine.dispose()
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # dense: one linear chain


class _Load:
    """``clients`` threads as one user, spread over the instances, for ``seconds``: reads,
    searches, writes and artifact uploads. Records every answer and every stored file."""

    def __init__(self, servers: tuple[ShareServer, ...], token: str, name: str,
                 experiment: str, run: str) -> None:
        self.servers, self.token, self.name = servers, token, name
        self.experiment, self.run = experiment, run
        self.statuses: list[int] = []
        self.answers: list[tuple[str, int, float, int]] = []  # url, status, when, kind
        self.failed: list[str] = []  # no answer (connection refused or cut)
        self.failed_at: list[str] = []  # the instance each of those was sent to
        self.errors: list[str] = []  # 5xx answers
        self.files: dict[str, str] = {}  # artifact path -> SHA-256, for 200s
        self.lock = threading.Lock()

    def client(self, index: int, deadline: float) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token}"
        step = 0
        while time.monotonic() < deadline:
            server = self.servers[(index + step) % len(self.servers)]
            kind = (index + step) % 4
            step += 1
            path = None
            try:
                if kind == 0:
                    response = session.get(f"{server.url}{API}/registered-models/get",
                                           params={"name": self.name}, timeout=30)
                elif kind == 1:
                    response = session.get(f"{server.url}{API}/registered-models/search",
                                           params={"max_results": 5}, timeout=30)
                elif kind == 2:
                    response = session.post(f"{server.url}{API}/runs/log-metric", timeout=30,
                                            json={"run_id": self.run, "key": f"m{index}",
                                                  "value": step, "timestamp": step, "step": step})
                else:
                    data = os.urandom(2048 + step)
                    path = f"{self.experiment}/{self.run}/artifacts/load/{index}-{step}.bin"
                    response = session.put(f"{server.url}/api/2.0/mlflow-artifacts/artifacts/"
                                           f"{path}", data=data, timeout=30)
            except requests.RequestException as exc:
                with self.lock:
                    what = ("get", "search", "log-metric", "upload")[kind]
                    self.failed.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
                    self.failed_at.append(server.url)
                continue
            with self.lock:
                self.statuses.append(response.status_code)
                self.answers.append((server.url, response.status_code, time.monotonic(), kind))
                if response.status_code >= 500:
                    self.errors.append(f"{response.status_code} {response.text[:300]}")
                if path is not None and response.status_code == 200:
                    self.files[path] = hashlib.sha256(data).hexdigest()

    def run_for(self, clients: int, seconds: float, during: Any = None) -> None:
        deadline = time.monotonic() + seconds
        threads = [threading.Thread(target=self.client, args=(i, deadline))
                   for i in range(clients)]
        for thread in threads:
            thread.start()
        if during is not None:
            time.sleep(seconds / 3)
            during()
        for thread in threads:
            thread.join()


def _loader(server: ShareServer, unique: str) -> tuple[str, str, str]:
    """A user of its own (whose events are counted), a model, an experiment and a run."""
    user = f"loader-{unique}"
    server.admin("POST", "/users", json={"name": user, "password": USER_PASSWORD})
    server.admin("POST", "/teams/members", json={"team": "team-a", "user": user,
                                                 "role": "engineer"})
    token = server.admin("POST", "/tokens", json={"user": user}).json()["token"]
    assert server.api("POST", f"{API}/registered-models/create", token=token,
                      json={"name": f"load-{unique}"}).ok
    experiment = server.api("POST", f"{API}/experiments/create", token=token,
                            json={"name": f"load-{unique}"}).json()["experiment_id"]
    run = server.api("POST", f"{API}/runs/create", token=token, json={
        "experiment_id": experiment}).json()["run"]["info"]["run_id"]
    return token, experiment, run


def _events_of(server: ShareServer, user: str) -> int:
    engine = sa.create_engine(server.backend_uri)
    with engine.connect() as conn:
        count = conn.execute(sa.text(
            "SELECT count(*) FROM share_audit_events WHERE principal = :p AND source = 'request'"),
            {"p": user}).scalar()
    engine.dispose()
    return int(count or 0)


def _verify_chain_and_files(server: ShareServer, files: dict[str, str], token: str) -> None:
    _verify_chain(server)
    for path, sha in files.items():
        got = server.api("GET", f"/api/2.0/mlflow-artifacts/artifacts/{path}", token=token)
        assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == sha, path
        assert got.headers.get("X-MLflow-Share-Integrity") != "unverified"


def test_fifty_clients_over_two_instances(pair: tuple[ShareServer, ShareServer],
                                          unique: str) -> None:
    _fifty_clients(*pair, unique)


def _fifty_clients(a: ShareServer, b: ShareServer, unique: str) -> None:
    token, experiment, run = _loader(a, unique)
    load = _Load((a, b), token, f"load-{unique}", experiment, run)
    load.run_for(clients=50, seconds=8)
    assert load.failed == [] and load.statuses, load.failed[:5]
    assert load.errors == []
    assert set(load.statuses) == {200}
    # Every request is in the audit chain, once.
    assert _events_of(a, f"loader-{unique}") == len(load.statuses) + 3  # + the setup calls
    _verify_chain_and_files(b, load.files, token)


def test_interleaved_changes_across_instances_keep_the_invariants(
        pair: tuple[ShareServer, ShareServer], unique: str) -> None:
    """Hypothesis interleaves grants, revocations, token issues and revocations, uploads and
    reads through either instance; after every step both instances decide alike (reads and
    searches follow the grant state of the model), the audit chain is one dense sequence,
    every stored file reads back verified through either, and the chain verifies at the end."""
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
    from hypothesis.stateful import (
        RuleBasedStateMachine,
        invariant,
        rule,
        run_state_machine_as_test,
    )

    a, b = pair
    servers = {"a": a, "b": b}
    name = f"state-{unique}"
    token = a.tokens["alice"]
    assert a.api("POST", f"{API}/registered-models/create", token=token, json={"name": name}).ok
    experiment = a.api("POST", f"{API}/experiments/create", token=token,
                       json={"name": name}).json()["experiment_id"]
    run = a.api("POST", f"{API}/runs/create", token=token, json={
        "experiment_id": experiment}).json()["run"]["info"]["run_id"]
    base = f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts"
    members = {"team-b": "bea", "team-c": "carl"}
    counter = iter(range(10**6))

    class Instances(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.granted: set[str] = set()
            for team in members:  # each example starts from no grants
                a.api("DELETE", f"{SHARE}/grants", token=token,
                      json={"model": name, "team": team, "permission": "read"})
            self.files: dict[str, str] = {}

        @rule(team=st.sampled_from(sorted(members)), via=st.sampled_from("ab"))
        def grant(self, team: str, via: str) -> None:
            response = servers[via].api("POST", f"{SHARE}/grants", token=token, json={
                "model": name, "team": team, "permission": "read"})
            assert response.status_code == 200, response.text
            self.granted.add(team)

        @rule(team=st.sampled_from(sorted(members)), via=st.sampled_from("ab"))
        def revoke(self, team: str, via: str) -> None:
            response = servers[via].api("DELETE", f"{SHARE}/grants", token=token, json={
                "model": name, "team": team, "permission": "read"})
            assert response.status_code == 200, response.text
            self.granted.discard(team)

        @rule(via=st.sampled_from("ab"), size=st.integers(0, 70_000))
        def upload(self, via: str, size: int) -> None:
            data = os.urandom(size)
            path = f"{base}/f{next(counter)}.bin"
            response = servers[via].api("PUT", path, token=token, data=data)
            assert response.status_code == 200, response.text
            self.files[path] = hashlib.sha256(data).hexdigest()

        @rule(via=st.sampled_from("ab"), data=st.data())
        def download(self, via: str, data: st.DataObject) -> None:
            if not self.files:
                return
            path = data.draw(st.sampled_from(sorted(self.files)))
            got = servers[via].api("GET", path, token=token)
            assert got.status_code == 200
            assert hashlib.sha256(got.content).hexdigest() == self.files[path]

        @rule(issue=st.sampled_from("ab"), use=st.sampled_from("ab"),
              revoke=st.sampled_from("ab"))
        def token_lifecycle(self, issue: str, use: str, revoke: str) -> None:
            issued = servers[issue].admin("POST", "/tokens", json={"user": "bea"}).json()
            whoami = f"{SHARE}/whoami"
            assert servers[use].api("GET", whoami, token=issued["token"]).status_code == 200
            servers[revoke].admin("DELETE", "/tokens", json={"token_id": issued["token_id"]})
            for server in servers.values():  # refused everywhere at once
                assert server.api("GET", whoami, token=issued["token"]).status_code == 401

        @invariant()
        def both_instances_decide_alike(self) -> None:
            for team, user in members.items():
                expected = 200 if team in self.granted else 403
                for server in servers.values():
                    assert _read(server, user, name) == expected, (team, server.url)
                    # Searches show the model only to those who may read it.
                    found = server.api("GET", f"{API}/registered-models/search",
                                       token=server.tokens[user],
                                       params={"filter": f"name = '{name}'"}).json()
                    listed = [m["name"] for m in found.get("registered_models", [])]
                    assert listed == ([name] if expected == 200 else []), (team, server.url)

        @invariant()
        def one_dense_audit_chain(self) -> None:
            engine = sa.create_engine(a.backend_uri)
            with engine.connect() as conn:
                low, high, count = conn.execute(sa.text(
                    "SELECT min(seq), max(seq), count(*) FROM share_audit_events")).one()
            engine.dispose()
            assert count == high - low + 1

    run_state_machine_as_test(Instances, settings=settings(
        max_examples=4, stateful_step_count=12, deadline=None, derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck)))
    _verify_chain_and_files(b, {}, token)


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
    _verify_chain(a)


def test_an_instance_killed_mid_load_loses_nothing(pair: tuple[ShareServer, ShareServer],
                                                   unique: str) -> None:
    """``kill -9`` of one instance (all its workers) while 20 clients use both: the other
    keeps serving, every answered request is in the chain once, stored files verify."""
    a, b = pair
    token, experiment, run = _loader(b, unique)
    load = _Load((a, b), token, f"load-{unique}", experiment, run)
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        os.killpg(a.process.pid, signal.SIGKILL)

    load.run_for(clients=20, seconds=6, during=kill)
    assert load.errors == []
    assert load.failed, "no request met the killed instance"
    assert set(load.failed_at) == {a.url}, load.failed[:5]  # b never dropped a connection
    from_b = [(status, when) for url, status, when, _ in load.answers if url == b.url]
    assert {status for status, _ in from_b} == {200}
    assert sum(when > killed_at[0] + 1 for _, when in from_b) > 50  # it kept serving
    answered = len(load.statuses)
    events = _events_of(b, f"loader-{unique}") - 3
    # Answered requests all have their event; a request cut by the kill may have one too.
    assert answered <= events <= answered + len(load.failed)
    assert b.api("GET", f"{SHARE}/ready").status_code == 200
    _verify_chain_and_files(b, load.files, token)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: the artifact volume that fills up."""
    mount_point = tmp_path / "volume"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_artifact_volume_is_a_clear_error_and_leaves_nothing(
        small_volume: Path, tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv", artifacts_uri=f"checksum+file://{small_volume}/root")
    try:
        populate(server)
        token = server.tokens["alice"]
        experiment = server.api("POST", f"{API}/experiments/create", token=token,
                                json={"name": "full"}).json()["experiment_id"]
        run = server.api("POST", f"{API}/runs/create", token=token, json={
            "experiment_id": experiment}).json()["run"]["info"]["run_id"]
        base = f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts"
        small = os.urandom(200_000)
        assert server.api("PUT", f"{base}/small.bin", token=token, data=small).ok
        big = server.api("PUT", f"{base}/big.bin", token=token, data=os.urandom(3_000_000))
        assert big.status_code in (503, 507), big.text
        assert big.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert "space" in big.json()["message"]
        # Nothing of it is visible or recorded; what was stored before still verifies.
        assert server.api("GET", f"{base}/big.bin", token=token).status_code == 404
        listing = server.api("GET", "/api/2.0/mlflow-artifacts/artifacts", token=token,
                             params={"path": f"{experiment}/{run}/artifacts"}).json()
        assert [f["path"] for f in listing.get("files", [])] == ["small.bin"]
        assert server.api("GET", f"{base}/small.bin", token=token).content == small
        # No partial file under any name (staged uploads are .mlflow-share-staging.*).
        leftovers = [p for p in small_volume.rglob("*") if p.is_file() and p.name != "small.bin"]
        assert leftovers == []
        # Space freed: uploads work again.
        assert server.api("PUT", f"{base}/again.bin", token=token, data=b"x" * 1000).ok
    finally:
        stop_server(server)


class _PrivatePostgres:
    """A PostgreSQL server of this test's own (Debian's binaries, run as the postgres user),
    so it can be stopped and started without touching the one other tests use."""

    def __init__(self) -> None:
        import pwd

        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not found:
            pytest.skip("PostgreSQL's server binaries are not installed")
        self.bin = found[-1].parent
        # Outside pytest's 0700 temp folders: the postgres user must reach it.
        self.folder = Path(tempfile.mkdtemp(prefix="mlflow-share-pg-"))
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        self.data = self.folder / "pgdata"
        self.port = free_port()
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres")
        self.start()

    def _as_postgres(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.skip(f"cannot run a private PostgreSQL here: {done.stderr.strip()[:300]}")

    def start(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-l",
                          str(self.data / "log"), "-o",
                          f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1",
                          "start")

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast",
                          "stop")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


def test_postgres_stopped_and_restarted_mid_load(tmp_path: Path, unique: str) -> None:
    """Clients keep calling while PostgreSQL stops and starts again: meanwhile 503s in
    MLflow's envelope, never another 5xx; afterwards all is served, every answered request
    is in the chain, every stored file verifies."""
    database = _PrivatePostgres()
    server = None
    try:
        server = start_server(tmp_path / "srv", database.url, workers=2)
        populate(server)
        token, experiment, run = _loader(server, unique)
        load = _Load((server,), token, f"load-{unique}", experiment, run)

        restarted: list[float] = []
        gateway_answers: list[tuple[int, str]] = []

        def call_gateway(url: str) -> None:
            response = requests.post(f"{url}/v1/models/load-{unique}@champion/invocations",
                                     json={"inputs": [[0.0]]}, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"})
            gateway_answers.append((response.status_code, response.json()["error_code"]))

        def outage() -> None:
            database.stop()
            time.sleep(2)
            call_gateway(gateway)
            database.start()
            restarted.append(time.monotonic())

        with _gateway(server, tmp_path) as gateway:
            call_gateway(gateway)  # up: the model has no alias 'champion'
            load.run_for(clients=10, seconds=12, during=outage)
            call_gateway(gateway)
        # The gateway too: a 503 in the envelope while the database is away, then served.
        assert gateway_answers == [(404, "RESOURCE_DOES_NOT_EXIST"),
                                   (503, "TEMPORARILY_UNAVAILABLE"),
                                   (404, "RESOURCE_DOES_NOT_EXIST")]
        statuses = set(load.statuses)
        assert statuses <= {200, 503}, [e for e in load.errors if not e.startswith("503")][:3]
        assert 503 in statuses and load.failed == []
        # Served again after the restart, reads and writes (kind 2: log-metric, 3: upload).
        after = {kind for _, status, when, kind in load.answers
                 if status == 200 and when > restarted[0]}
        assert {0, 2, 3} <= after, after
        assert all("TEMPORARILY_UNAVAILABLE" in e for e in load.errors)
        ok = load.statuses.count(200)
        events = _events_of(server, f"loader-{unique}") - 3
        assert ok <= events <= len(load.statuses)
        assert server.api("GET", f"{SHARE}/ready").status_code == 200
        _verify_chain_and_files(server, load.files, token)
    finally:
        if server is not None:
            stop_server(server)
        database.stop()
        database.remove()
