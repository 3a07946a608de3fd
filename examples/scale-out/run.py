"""Several mlflow-share instances on one machine: PostgreSQL, shared artifacts, a gateway.

    python examples/scale-out/run.py [--postgres postgresql://postgres@127.0.0.1:5432]
                                     [--instances 2] [--workers 2] [--gateways 2] [--s3]
                                     [--check]

What it starts, each on a free loopback port (see README.md next to this file):

1. a fresh PostgreSQL database ``mlflow_share_scale_<random>`` on the given server: MLflow's
   tables, mlflow-share's policy and the one audit chain all live there;
2. an artifact root every instance shares: a local folder (``checksum+file://``), or with
   ``--s3`` a bucket on a ``moto`` S3 server on loopback (``checksum+s3://``; needs
   ``pip install "moto[server]"``; real S3 or MinIO work the same by configuration);
3. ``--instances`` servers, ``mlflow-share server --workers N`` each, on the same database and
   artifact root: any of them answers any request, a change made through one applies on every
   other at its next request;
4. ``--gateways`` standalone inference gateways (``mlflow-share gateway``) on the same
   database and root: stateless, so any of them serves any call.

It prints the addresses and the admin password, then waits until Ctrl-C, when it stops
everything, drops the database and removes its temporary folder. ``--check`` instead proves
the setup works (a grant made through instance 1 is seen by the others, a revocation too, a
file uploaded through one instance reads back verified through every other, every instance
is ready, the audit chain verifies) and exits 0 or 1.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
import sqlalchemy as sa

SHARE = "/api/2.0/mlflow-share"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not start:\n{log.read_text()[-3000:]}")


def start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def check(urls: list[str], password: str, backend: str) -> bool:
    """A grant and its revocation through instance 1, seen by the others; readiness; chain."""
    admin = ("admin", password)
    first, *others = urls

    def call(url: str, method: str, path: str, **kwargs: object) -> requests.Response:
        return requests.request(method, url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    for team in ("fraud", "payments"):
        call(first, "POST", f"{SHARE}/teams", auth=admin, json={"name": team}).raise_for_status()
    tokens = {}
    for user, team, role in (("alice", "fraud", "maintainer"), ("bob", "payments", "engineer")):
        call(first, "POST", f"{SHARE}/users", auth=admin,
             json={"name": user, "password": secrets.token_urlsafe(12)}).raise_for_status()
        call(first, "POST", f"{SHARE}/teams/members", auth=admin,
             json={"team": team, "user": user, "role": role}).raise_for_status()
        tokens[user] = call(first, "POST", f"{SHARE}/tokens", auth=admin,
                            json={"user": user}).json()["token"]
    alice = {"Authorization": f"Bearer {tokens['alice']}"}
    bob = {"Authorization": f"Bearer {tokens['bob']}"}
    call(first, "POST", "/api/2.0/mlflow/registered-models/create", headers=alice,
         json={"name": "fraud-classifier"}).raise_for_status()

    def bob_reads(url: str) -> int:
        return call(url, "GET", "/api/2.0/mlflow/registered-models/get", headers=bob,
                    params={"name": "fraud-classifier"}).status_code

    grant = {"model": "fraud-classifier", "team": "payments", "permission": "read"}
    results = {"bob reads, before the grant": [bob_reads(u) for u in others]}
    call(first, "POST", f"{SHARE}/grants", headers=alice, json=grant).raise_for_status()
    results["bob reads, after the grant"] = [bob_reads(u) for u in others]
    call(first, "DELETE", f"{SHARE}/grants", headers=alice, json=grant).raise_for_status()
    results["bob reads, after the revocation"] = [bob_reads(u) for u in others]
    # A file uploaded through instance 1 reads back, verified, through every other.
    experiment = call(first, "POST", "/api/2.0/mlflow/experiments/create", headers=alice,
                      json={"name": "scale-out"}).json()["experiment_id"]
    run = call(first, "POST", "/api/2.0/mlflow/runs/create", headers=alice,
               json={"experiment_id": experiment}).json()["run"]["info"]["run_id"]
    data = os.urandom(300_000)
    path = f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/weights.bin"
    call(first, "PUT", path, headers=alice, data=data).raise_for_status()
    read_back = [call(u, "GET", path, headers=alice) for u in others]
    results["alice's upload, read back"] = [r.status_code if r.content == data and "unverified" not in
                                 r.headers.get("X-MLflow-Share-Integrity", "") else 0
                                 for r in read_back]
    ready = [call(u, "GET", f"{SHARE}/ready").status_code for u in urls]
    verified = subprocess.run([sys.executable, "-m", "mlflow_share.cli", "audit", "verify",
                               "--backend-store-uri", backend], capture_output=True, text=True)
    for label, statuses in results.items():
        print(f"{label}, on the other instances: {statuses}")
    print(f"readiness: {ready}; audit verify: {verified.stdout.strip() or verified.stderr}")
    n = len(others)
    return (results == {"bob reads, before the grant": [403] * n,
                        "bob reads, after the grant": [200] * n,
                        "bob reads, after the revocation": [403] * n,
                        "alice's upload, read back": [200] * n}
            and ready == [200] * len(urls) and verified.returncode == 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default=os.environ.get(
        "MLFLOW_SHARE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--s3", action="store_true", help="artifacts on a moto S3 server")
    parser.add_argument("--check", action="store_true", help="prove it works, then stop")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="mlflow-share-scale-"))
    database = f"mlflow_share_scale_{uuid.uuid4().hex[:8]}"
    backend = f"{args.postgres}/{database}"
    admin_engine = sa.create_engine(f"{args.postgres}/postgres", isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    password = secrets.token_urlsafe(16)
    env = {**os.environ, "MLFLOW_SHARE_ADMIN_PASSWORD": password,
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if args.s3:
            port = free_port()
            processes.append(start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                    "-p", str(port)], home / "s3.log", env))
            wait_for(f"http://127.0.0.1:{port}/moto-api/", processes[-1], home / "s3.log")
            env.update(MLFLOW_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}",
                       AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                       AWS_DEFAULT_REGION="us-east-1")
            requests.put(f"http://127.0.0.1:{port}/artifacts", timeout=10).raise_for_status()
            artifacts = "checksum+s3://artifacts/mlflow"
        else:
            artifacts = f"checksum+file://{home / 'artifacts'}"
        urls = []
        for index in range(args.instances):
            port = free_port()
            log = home / f"server-{index + 1}.log"
            processes.append(start([sys.executable, "-m", "mlflow_share.cli", "server",
                                    "--backend-store-uri", backend,
                                    "--artifacts-destination", artifacts, "--no-gateway",
                                    "--port", str(port), "--workers", str(args.workers)],
                                   log, env))
            urls.append(f"http://127.0.0.1:{port}")
            wait_for(urls[-1] + "/health", processes[-1], log)  # one at a time: migrations
        gateways = []
        for index in range(args.gateways):
            port = free_port()
            log = home / f"gateway-{index + 1}.log"
            processes.append(start([sys.executable, "-m", "mlflow_share.cli", "gateway",
                                    "--backend-store-uri", backend, "--artifacts-destination",
                                    artifacts, "--port", str(port)], log, env))
            gateways.append(f"http://127.0.0.1:{port}")
            wait_for(gateways[-1] + "/ping", processes[-1], log)
        for index, url in enumerate(urls):
            print(f"instance {index + 1}: {url}  (log {home}/server-{index + 1}.log)")
        for index, url in enumerate(gateways):
            print(f"gateway {index + 1}:  {url}/v1/models")
        print(f"database:   {backend}\nartifacts:  {artifacts}")
        print(f"admin:      admin / {password}")
        if args.check:
            return 0 if check(urls, password, backend) else 1
        print("Ctrl-C stops everything and drops the database.")
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
    finally:
        for process in reversed(processes):
            stop(process)
        with admin_engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin_engine.dispose()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
