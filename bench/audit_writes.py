"""Write throughput with the audit log on, against stock MLflow; and `audit verify` speed.

    .venv/bin/python bench/audit_writes.py [--quick] [--workers 2] [--clients 4] [--no-postgres]
                                           [--no-sqlite] [--no-verify]
    .venv/bin/python bench/audit_writes.py --verify-only [--events 1000000]

Part 1 starts, side by side on 127.0.0.1 with the same uvicorn workers and database kind:
  plain                 mlflow server (stock SqlAlchemy stores: no auth, no audit)
  mlflow-share-noaudit  the same mlflow-share server with its audit log taken out in the
                        benchmark only (bench/_noaudit_app.py): DESIGN.md's baseline
  mlflow-share          mlflow server --app-name mlflow-share (token auth + audited stores:
                        every request's event committed before the response is sent)
on SQLite and on a fresh database of this machine's PostgreSQL (both with the TCP_NODELAY fix
of bench/_nodelay_app.py, so neither pays uvicorn's 40 ms stall), then drives the same write mix
(log-metric, log-batch of 10 metrics, set-tag, create-model-version) from client processes on
kept-alive connections, each client through its own part of a list of distinct writes. The
target is mlflow-share >= 0.90x the same server with audit off; "x plain" is stricter (plain
pays for no authentication or authorisation either).

Part 2 appends 1,000,000 events to a fresh SQLite audit table and times `verify_chain`
(target >= 200,000 events/s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

import requests

from _common import Call, LoadResult, Server, drive, table, temp_dir
from server_throughput import _ok, make_server, user_headers

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def write_mix(server: Server, headers: dict[str, str], round_: int = 0) -> list[Call]:
    api = f"{server.url}/api/2.0/mlflow"
    s = requests.Session()
    s.headers.update(headers)
    exp = _ok(s.post(f"{api}/experiments/create", json={"name": f"bench-{round_}"})
              )["experiment_id"]
    run = _ok(s.post(f"{api}/runs/create", json={"experiment_id": exp}))["run"]["info"]["run_id"]
    model = f"bench-model-{round_}"
    _ok(s.post(f"{api}/registered-models/create", json={"name": model}))
    calls = []
    for i in range(1000):  # distinct writes: each client works through a quarter
        calls.append(Call("POST", "/api/2.0/mlflow/runs/log-metric", json.dumps(
            {"run_id": run, "key": "loss", "value": i / 7, "timestamp": i, "step": i}).encode()))
        calls.append(Call("POST", "/api/2.0/mlflow/runs/log-batch", json.dumps(
            {"run_id": run, "metrics": [{"key": f"m{k}", "value": k, "timestamp": i, "step": i}
                                        for k in range(10)]}).encode()))
        calls.append(Call("POST", "/api/2.0/mlflow/runs/set-tag", json.dumps(
            {"run_id": run, "key": f"t{i % 20}", "value": str(i)}).encode()))
        calls.append(Call("POST", "/api/2.0/mlflow/model-versions/create", json.dumps(
            {"name": model, "source": f"runs:/{run}/model", "run_id": run}).encode()))
    return calls


def bench_writes(args: argparse.Namespace) -> None:
    import sqlalchemy as sa

    root = temp_dir("mlflow-share-audit-bench-")
    backends: list[tuple[str, Any]] = []
    if not args.no_sqlite:
        backends.append(("sqlite", lambda kind: f"sqlite:///{root / (kind + '.db')}"))
    databases: list[str] = []
    if not args.no_postgres:
        def pg(kind: str) -> str:
            name = f"share_bench_{kind.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
            with sa.create_engine(f"{POSTGRES}/test", isolation_level="AUTOCOMMIT").connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{name}"'))
            databases.append(name)
            return f"{POSTGRES}/{name}"
        backends.append(("postgresql", pg))
    rows = []
    failed: list[tuple[str, str, dict[str, int]]] = []
    kinds = ("plain", "mlflow-share-noaudit", "mlflow-share")
    try:
        for backend, make_uri in backends:
            home = root / backend
            home.mkdir()
            servers, headers = {}, {}
            try:
                for kind in kinds:
                    # All without uvicorn's 40 ms Nagle stall (bench/keepalive_stall.py), so
                    # the ratios measure the audit and authorisation work, not the stall.
                    servers[kind] = make_server(kind, home, args.workers, fix_nodelay=True,
                                                backend_uri=make_uri(kind)).start()
                for kind in kinds:
                    servers[kind].wait_ready()
                    headers[kind] = user_headers(servers[kind])
                # Rounds in turn (the order rotates), each on fresh distinct writes: this
                # machine's speed drifts over a minute more than the differences measured.
                results: dict[str, list[Any]] = {kind: [] for kind in kinds}
                for round_ in range(args.rounds):
                    for kind in kinds[round_ % 3:] + kinds[:round_ % 3]:
                        calls = write_mix(servers[kind], headers[kind], round_)
                        results[kind].append(drive(
                            servers[kind].url, calls, headers[kind], keepalive=True,
                            clients=args.clients, duration=args.duration / args.rounds,
                            raw=True))
            finally:
                for server in servers.values():
                    server.stop()
            merged = {kind: LoadResult.merge(parts) for kind, parts in results.items()}
            failed += [(backend, kind, r.failures) for kind, r in merged.items() if r.failures]
            base, same = merged["plain"].rps, merged["mlflow-share-noaudit"].rps
            for kind, result in merged.items():
                per_round = [r.rps / a.rps for r, a in
                             zip(results[kind], results["mlflow-share-noaudit"])]
                rows.append([backend, kind, result.rps, result.p50, result.p99, result.errors,
                             result.rps / base, result.rps / same,
                             " ".join(f"{x:.2f}" for x in per_round)])
    finally:
        engine = sa.create_engine(f"{POSTGRES}/test", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for name in databases:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"\nwrite mix, {args.clients} clients, {args.workers} workers, kept-alive, "
          f"{args.rounds} rounds of {args.duration / args.rounds:.0f} s per server")
    print(table(["database", "server", "req/s", "p50 ms", "p99 ms", "errors", "x plain",
                 "x audit off", "x audit off by round"], rows))
    for backend, kind, failures in failed:
        for failure, count in failures.items():
            print(f"  {backend} {kind}: {count} x {failure}")


def bench_verify(events: int) -> None:
    from mlflow_share import db
    from mlflow_share.audit import log, models
    from mlflow_share.audit.verify import verify_chain

    root = temp_dir("mlflow-share-verify-bench-")
    engine = db.get_engine(f"sqlite:///{root / 'audit.db'}")
    db.create_schema(engine)
    models.install_triggers(engine)
    template = {"request_id": None, "source": "request", "principal": "alice",
                "action": "mlflow.LogMetric", "method": "POST",
                "route": "/api/2.0/mlflow/runs/log-metric", "resource_kind": "experiment",
                "resource_id": "1", "resource_name": None, "owner_team": "team-a",
                "decision": "allow", "status": 200, "client": "127.0.0.1", "owner_teams": ",team-a,"}
    start = time.perf_counter()
    batch = 20_000
    for first in range(0, events, batch):
        rows = [{**template, "ts": 1_700_000_000_000 + i, "request_id": uuid.uuid4().hex,
                 "details": models.encode_details({"changes": [{"op": "log_metric", "i": i}]})}
                for i in range(first, min(events, first + batch))]
        with engine.connect() as conn:
            log.begin_write(conn)
            log.append(conn, rows)
            conn.commit()
    built = time.perf_counter() - start
    start = time.perf_counter()
    result = verify_chain(engine)
    elapsed = time.perf_counter() - start
    assert result.ok and result.events == events, result
    print(f"\naudit verify on SQLite: {events:,} events in {elapsed:.2f} s = "
          f"{events / elapsed:,.0f} events/s (target >= 200,000; appending them took {built:.1f} s, "
          f"{events / built:,.0f} events/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s per server, 100k events")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-verify", action="store_true", help="skip the `audit verify` part")
    parser.add_argument("--verify-only", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.events = 5.0, 100_000
    if not args.verify_only:
        bench_writes(args)
    if not args.no_verify:
        bench_verify(args.events)


if __name__ == "__main__":
    sys.exit(main())
