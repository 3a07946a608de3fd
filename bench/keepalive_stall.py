"""The ~40 ms stall on kept-alive connections with uvicorn --workers > 1, and its fix.

    .venv/bin/python bench/keepalive_stall.py [--quick] [--no-mlflow]

One client, one requests.Session (as the MLflow client keeps connections), sequential small
GETs; p50/p90 latency on the kept-alive connection and with a new connection per request.

Cause: with --workers > 1 uvicorn binds the listening socket itself with
``socket.socket(family)`` (proto 0); workers inherit it with proto 0, accepted sockets copy
the proto, and asyncio's ``base_events._set_nodelay`` only sets TCP_NODELAY when
``sock.proto == IPPROTO_TCP``. uvicorn writes the response head and body in two sends, so
Nagle holds the body until the client's delayed ACK (~40 ms on Linux). With --workers 1
asyncio creates the socket from getaddrinfo (proto 6) and sets TCP_NODELAY.

Rows: plain `mlflow server` with 1 and 2 workers, plain and mlflow-share with 2 workers with
and without the fix (applied here through uvicorn's ``--loop`` hook, via --uvicorn-opts, so
mlflow-share itself is unchanged; the proposal puts it in the app factory); a tiny ASGI factory
(bench/_nodelay_app.py) under `uvicorn --workers 2 --factory` without a fix, with the
proposed fix (wrap ``_set_nodelay`` in the app factory) and with the alternative (set
TCP_NODELAY on the inherited listening socket; Linux copies it to accepted sockets).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import requests

from _common import PYTHON, Server, free_port, percentile, table, temp_dir

HERE = Path(__file__).resolve().parent


def measure(url: str, n: int) -> tuple[float, float, float]:
    """(kept-alive p50, kept-alive p90, new-connection p50) in ms over ``n`` GETs each."""
    session = requests.Session()
    for _ in range(3):
        session.get(url).content
    kept = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = session.get(url)
        resp.content
        kept.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200, resp.status_code
    session.close()
    fresh = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = requests.get(url, headers={"Connection": "close"})
        resp.content
        fresh.append((time.perf_counter() - t0) * 1000)
    kept.sort()
    return statistics.median(kept), percentile(kept, 90), statistics.median(fresh)


# The stall needs asyncio's own loop and h11 (uvloop sets TCP_NODELAY, httptools writes the
# head and body of a small answer at once): uvicorn's "auto" picks neither when they are not
# installed, which is how MLflow runs without mlflow-share.
STALL_OPTS = "--loop asyncio --http h11"
FIX_LOOP = "_nodelay_app:asyncio_event_loop"


def with_bench_path(env: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path}


def mlflow_server(root: Path, app: str | None, workers: int, fix: bool = False) -> Server:
    name = f"{app or 'plain'}-w{workers}{'-fix' if fix else ''}"
    home = root / name
    home.mkdir()
    port = free_port()
    argv = [PYTHON, "-m", "mlflow", "server"]
    if app:
        argv += ["--app-name", app]
    argv += ["--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
             "--artifacts-destination", str(home / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    env = {"MLFLOW_SHARE_ADMIN_PASSWORD": "bench-admin-password-1"} if app else {}
    if fix:  # preview of the fix through uvicorn's --loop hook (see _nodelay_app.py)
        argv += ["--uvicorn-opts", f"--loop {FIX_LOOP} --http h11"]
        env = with_bench_path(env)
    else:
        argv += ["--uvicorn-opts", STALL_OPTS]
    return Server(name, argv, port, home / "server.log", env=env, cwd=home)


def tiny_server(root: Path, workers: int, fix: str) -> Server:
    name = f"tiny-w{workers}-{fix or 'nofix'}"
    port = free_port()
    argv = [PYTHON, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--log-level", "warning", *STALL_OPTS.split(),
            "--factory", "_nodelay_app:create_app"]
    env = with_bench_path({"BENCH_NODELAY_FIX": fix})
    return Server(name, argv, port, root / f"{name}.log", env=env, cwd=root)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (< 90 s)")
    parser.add_argument("--no-mlflow", action="store_true", help="only the tiny ASGI app")
    args = parser.parse_args()
    n = 60 if args.quick else 300
    t_start = time.monotonic()
    root = temp_dir("mlflow-share-stall-")

    # (label, server, path)
    cases: list[tuple[str, Server, str]] = []
    if not args.no_mlflow:
        for workers in (1, 2):
            cases.append((f"mlflow server --workers {workers}",
                          mlflow_server(root, None, workers), "/version"))
        cases.append(("mlflow server --workers 2 + fix (--loop hook)",
                      mlflow_server(root, None, 2, fix=True), "/version"))
        cases.append(("mlflow-share --workers 2",
                      mlflow_server(root, "mlflow-share", 2), "/version"))
        cases.append(("mlflow-share --workers 2 + fix (--loop hook)",
                      mlflow_server(root, "mlflow-share", 2, fix=True), "/version"))
    cases += [
        ("tiny ASGI, uvicorn --workers 1", tiny_server(root, 1, ""), "/"),
        ("tiny ASGI, uvicorn --workers 2", tiny_server(root, 2, ""), "/"),
        ("tiny ASGI, --workers 2 + fix: wrap _set_nodelay", tiny_server(root, 2, "patch"), "/"),
        ("tiny ASGI, --workers 2 + alt: NODELAY on listener", tiny_server(root, 2, "listener"),
         "/"),
    ]
    rows = []
    # Start them two at a time: MLflow servers take a while to import on 2 cores.
    pending = list(cases)
    while pending:
        batch, pending = pending[:2], pending[2:]
        for _, server, _ in batch:
            server.start()
        for label, server, path in batch:
            server.wait_ready(path)
            p50, p90, fresh = measure(server.url + path, n)
            rows.append([label, p50, p90, fresh])
            print(f"  {label:52s} kept-alive p50 {p50:6.2f} ms  p90 {p90:6.2f} ms  "
                  f"new connection p50 {fresh:6.2f} ms", flush=True)
            server.stop()

    ref = {r[0]: r for r in rows}
    print()
    print(f"One client, sequential GETs, {n} per column; 127.0.0.1")
    out = []
    for label, p50, p90, fresh in rows:
        out.append([label, p50, p90, fresh, f"{p50 / fresh:.1f}x"])
    print(table(["server", "kept-alive p50 ms", "kept-alive p90 ms", "new-conn p50 ms",
                 "kept/new"], out))
    for one, two in (("mlflow server --workers 1", "mlflow server --workers 2"),
                     ("tiny ASGI, uvicorn --workers 1", "tiny ASGI, uvicorn --workers 2")):
        if one in ref and two in ref:
            print(f"{two}: kept-alive p50 {ref[two][1]:.1f} ms vs {ref[one][1]:.1f} ms with 1 worker"
                  f" (+{ref[two][1] - ref[one][1]:.1f} ms, {ref[two][1] / ref[one][1]:.1f}x)")
    for before, after in (("mlflow server --workers 2", "mlflow server --workers 2 + fix (--loop hook)"),
                          ("mlflow-share --workers 2", "mlflow-share --workers 2 + fix (--loop hook)"),
                          ("tiny ASGI, uvicorn --workers 2",
                           "tiny ASGI, --workers 2 + fix: wrap _set_nodelay")):
        if before in ref and after in ref:
            print(f"fix, {before}: kept-alive p50 {ref[before][1]:.1f} ms -> {ref[after][1]:.1f} ms"
                  f" ({ref[before][1] / ref[after][1]:.1f}x lower)")
    print(f"total {time.monotonic() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
