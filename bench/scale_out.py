"""One and two mlflow-share instances on PostgreSQL against stock `mlflow server`, same total
workers, in one run; then how fast a grant and a revocation made on one instance apply on
the other.

    .venv/bin/python bench/scale_out.py [--quick] [--workers 4] [--clients 8] [--duration 10]

Each setup gets a fresh database on the PostgreSQL server (``MLFLOW_SHARE_TEST_POSTGRES``,
default ``postgresql://postgres@127.0.0.1:5432``): stock ``mlflow server --workers W``
(with the TCP_NODELAY fix, as mlflow-share applies it), mlflow-share with one instance of W
workers, and two instances of W/2 workers each with the clients split between them. The read
mix is server_throughput.py's (as a non-admin user); the write mix is ``runs/log-metric``.
Propagation: a grant made through instance 1, polled through instance 2 until the grantee
reads the model; the same for the revocation (20 rounds, median and max).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid

import requests
import sqlalchemy as sa

from _common import Call, LoadResult, drive, percentile, table, temp_dir
from server_throughput import ADMIN_PASSWORD, make_server, seed, user_headers

POSTGRES = os.environ.get("MLFLOW_SHARE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


class Databases:
    def __init__(self) -> None:
        self.admin = sa.create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def new(self) -> str:
        name = f"mlflow_share_bench_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return f"{POSTGRES}/{name}"

    def drop(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


def spread(urls: list[str], calls: list[Call], headers: dict[str, str], clients: int,
           duration: float, raw: bool = True) -> LoadResult:
    """``clients`` processes split over ``urls``, all at once; one combined result."""
    parts: list[LoadResult] = []

    def one(url: str, share: int) -> None:
        parts.append(drive(url, calls, headers, keepalive=True, clients=share,
                           duration=duration, raw=raw))

    shares = [clients // len(urls) + (i < clients % len(urls)) for i in range(len(urls))]
    threads = [threading.Thread(target=one, args=(u, n)) for u, n in zip(urls, shares)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = sorted(x for p in parts for x in p.latencies)
    return LoadResult(len(latencies), sum(p.errors for p in parts), duration,
                      percentile(latencies, 50), percentile(latencies, 99), latencies)


def write_calls(server_url: str, headers: dict[str, str]) -> list[Call]:
    runs = requests.post(f"{server_url}/api/2.0/mlflow/runs/search", headers=headers, timeout=30,
                         json={"experiment_ids": [_experiment(server_url, headers)]}).json()
    # Distinct points (a repeated one is a no-op write): more than the clients get through.
    return [Call("POST", "/api/2.0/mlflow/runs/log-metric", json.dumps({
        "run_id": run["info"]["run_id"], "key": "bench_write", "value": step,
        "timestamp": step, "step": step}).encode())
        for step in range(4000) for run in runs["runs"][:1]]


def _experiment(server_url: str, headers: dict[str, str]) -> str:
    return str(requests.get(f"{server_url}/api/2.0/mlflow/experiments/get-by-name",
                            headers=headers, params={"experiment_name": "bench-exp"},
                            timeout=30).json()["experiment"]["experiment_id"])


def propagation(first: str, second: str, rounds: int) -> tuple[list[float], list[float]]:
    admin = ("admin", ADMIN_PASSWORD)
    api = "/api/2.0/mlflow-share"
    requests.post(f"{first}{api}/teams", auth=admin, json={"name": "team-b"}, timeout=30)
    requests.post(f"{first}{api}/users", auth=admin, timeout=30,
                  json={"name": "bob", "password": "bob-password-0123"})
    requests.post(f"{first}{api}/teams/members", auth=admin, timeout=30,
                  json={"team": "team-b", "user": "bob", "role": "viewer"})
    token = requests.post(f"{first}{api}/tokens", auth=admin, json={"user": "bob"},
                          timeout=30).json()["token"]
    bob = requests.Session()
    bob.headers["Authorization"] = f"Bearer {token}"
    grant = {"model": "bench-model", "team": "team-b", "permission": "read"}

    def until(status: int) -> float:
        start = time.perf_counter()
        while bob.get(f"{second}/api/2.0/mlflow/registered-models/get",
                      params={"name": "bench-model"}, timeout=30).status_code != status:
            if time.perf_counter() - start > 30:
                raise RuntimeError(f"instance 2 never answered {status} within 30 s")
        return (time.perf_counter() - start) * 1000

    granted, revoked = [], []
    for _ in range(rounds):
        requests.post(f"{first}{api}/grants", auth=admin, json=grant,
                      timeout=30).raise_for_status()
        granted.append(until(200))
        requests.delete(f"{first}{api}/grants", auth=admin, json=grant,
                        timeout=30).raise_for_status()
        revoked.append(until(403))
    return granted, revoked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    if args.workers < 2 or args.workers % 2:
        parser.error("--workers must be even: two instances get half each")
    duration = 4.0 if args.quick else args.duration
    half = args.workers // 2
    databases = Databases()
    root = temp_dir("mlflow-share-bench-scale-")
    rows = []
    results: dict[tuple[str, str], LoadResult] = {}
    started = time.monotonic()
    try:
        setups = [("plain", 1, args.workers), ("mlflow-share", 1, args.workers),
                  ("mlflow-share", 2, half)]
        for kind, instances, workers in setups:
            label = f"{kind} {instances}x{workers}"
            backend = databases.new()
            servers = []
            for index in range(instances):
                home = root / f"{kind}-{instances}-{index}"
                home.mkdir()
                server = make_server(kind, home, workers, fix_nodelay=kind == "plain",
                                     backend_uri=backend).start()
                server.wait_ready()  # one at a time: the first runs the migrations
                servers.append(server)
            headers = user_headers(servers[0])
            reads = seed(servers[0], headers)
            writes = write_calls(servers[0].url, headers)
            urls = [s.url for s in servers]
            for mix, calls in (("read", reads), ("write", writes)):
                results[(label, mix)] = spread(urls, calls, headers, args.clients, duration)
            if instances == 2:
                granted, revoked = propagation(urls[0], urls[1], 5 if args.quick else 20)
            for server in servers:
                server.stop()
        for (label, mix), result in results.items():
            plain = results[(f"plain 1x{args.workers}", mix)]
            one = results[(f"mlflow-share 1x{args.workers}", mix)]
            rows.append([label, mix, round(result.rps, 1), result.p50, result.p99,
                         result.errors, f"{result.rps / plain.rps:.3f}x",
                         f"{result.rps / one.rps:.3f}x" if "share" in label else "-"])
        print(f"\nPostgreSQL, {args.clients} client processes (kept-alive), {duration:.0f}s each, "
              f"non-admin user; stock with the TCP_NODELAY fix")
        print(table(["setup", "mix", "req/s", "p50 ms", "p99 ms", "errors", "vs stock",
                     "vs 1 instance"], rows))
        print(f"\npropagation instance 1 -> instance 2 ({len(granted)} rounds): grant median "
              f"{statistics.median(granted):.1f} ms, max {max(granted):.1f} ms; revoke median "
              f"{statistics.median(revoked):.1f} ms, max {max(revoked):.1f} ms (target <= 1 s)")
        print(f"total {time.monotonic() - started:.0f}s")
    finally:
        databases.drop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
