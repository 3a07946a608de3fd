"""First page of ``search_registered_models`` at 10,000 models, 100 of them readable.

    .venv/bin/python bench/search_filtering.py [--quick]

One SQLite database is seeded once (10,000 registered models through MLflow's own store, the
owner rows mlflow-share keeps beside them: 100 models owned by the caller's team, the rest by
another) and copied, so both servers serve identical data:
  plain         stock `mlflow server`, unauthenticated (every model visible, as an admin sees)
  mlflow-share  `--app-name mlflow-share`, as an engineer of the team that can read 100 models
  share-admin   the same server as its org admin (no filtering)
Each measures p50/p99 latency of GET registered-models/search (first page, max_results=100,
and a second page through its token). Target (issue #2): mlflow-share ≤ 1.5× plain.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
import uuid

import requests
import sqlalchemy as sa
from _common import PYTHON, Server, free_port, percentile, table, temp_dir

from mlflow_share import db
from mlflow_share.directory import MODEL, Directory

ADMIN_PASSWORD = "bench-admin-password"
N_MODELS = 10_000
READABLE = 100


def seed(uri: str, n_models: int) -> None:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(uri)  # MLflow's schema and migrations
    engine = db.get_engine(uri)
    db.create_schema(engine)
    directory = Directory(engine)
    directory.create_user("admin", ADMIN_PASSWORD, admin=True)
    for team in ("readers", "others"):
        directory.create_team(team)
    directory.create_user("reader", "reader-password-1")
    directory.add_member("readers", "reader", "engineer")
    now = db.now_ms()
    stride = n_models // READABLE
    models, owners = [], []
    for i in range(n_models):
        name = f"model-{i:05d}"
        models.append({"name": name, "creation_time": now + i, "last_updated_time": now + i,
                       "workspace": "default"})
        owners.append({"kind": MODEL, "resource_id": uuid.uuid4().hex, "name": name,
                       "owner_team": "readers" if i % stride == 0 else "others",
                       "created_by": "admin", "created_at": now})
    registered_models = sa.Table("registered_models", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(registered_models.insert(), models)
        conn.execute(db.resources.insert(), owners)
    engine.dispose()


def measure(url: str, auth: tuple[str, str] | None, repeat: int) -> tuple[list[float], int]:
    session = requests.Session()
    session.auth = auth
    search = url + "/api/2.0/mlflow/registered-models/search"
    times: list[float] = []
    count = 0
    for i in range(repeat + 3):
        t0 = time.perf_counter()
        page = session.get(search, params={"max_results": 100}, timeout=60)
        elapsed = (time.perf_counter() - t0) * 1000
        page.raise_for_status()
        count = len(page.json().get("registered_models", []))
        if i >= 3:  # warm-up: connection, caches, password check
            times.append(elapsed)
    token = page.json().get("next_page_token")
    if token:
        session.get(search, params={"max_results": 100, "page_token": token},
                    timeout=60).raise_for_status()
    return sorted(times), count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 15 if args.quick else 60
    root = temp_dir("mlflow-share-search-")
    t0 = time.monotonic()
    seed(f"sqlite:///{root / 'seed.db'}", N_MODELS)
    print(f"seeded {N_MODELS:,} models in {time.monotonic() - t0:.1f}s", flush=True)
    shutil.copy(root / "seed.db", root / "plain.db")
    shutil.copy(root / "seed.db", root / "share.db")

    def server(name: str, database: str, *extra: str) -> Server:
        port = free_port()
        argv = [PYTHON, "-m", "mlflow", "server", *extra, "--backend-store-uri",
                f"sqlite:///{root / database}", "--artifacts-destination", str(root / name),
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        return Server(name, argv, port, root / f"{name}.log",
                      env={"MLFLOW_SHARE_ADMIN_PASSWORD": ADMIN_PASSWORD}).start()

    plain = server("plain", "plain.db")
    share = server("mlflow-share", "share.db", "--app-name", "mlflow-share")
    rows = []
    try:
        plain.wait_ready()
        share.wait_ready()
        results = {
            "plain (all visible)": measure(plain.url, None, repeat),
            "mlflow-share, reader (100 readable)": measure(share.url, ("reader", "reader-password-1"),
                                                          repeat),
            "mlflow-share, admin (all visible)": measure(share.url, ("admin", ADMIN_PASSWORD),
                                                         repeat),
        }
    finally:
        plain.stop()
        share.stop()
    base = statistics.median(results["plain (all visible)"][0])
    for label, (times, count) in results.items():
        p50 = statistics.median(times)
        rows.append([label, count, f"{p50:.2f}", f"{percentile(times, 99):.2f}",
                     f"{p50 / base:.2f}x"])
    print(table(["server / caller", "rows on page 1", "p50 ms", "p99 ms", "p50 vs plain"], rows))
    reader = statistics.median(results["mlflow-share, reader (100 readable)"][0])
    print(f"\ntarget: filtered first page <= 1.5x plain: {reader / base:.2f}x "
          f"({'ok' if reader / base <= 1.5 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
