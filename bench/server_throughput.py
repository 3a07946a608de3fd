"""Authenticated read throughput: plain MLflow vs stock basic-auth vs mlflow-share, one run.

    .venv/bin/python bench/server_throughput.py [--quick] [--workers 2] [--clients 4]

Starts every server on 127.0.0.1 (ephemeral ports, same uvicorn worker count, SQLite, MLflow's
job runner off for all), seeds the same data over REST as a non-admin user, then drives the
same read mix (registered-models/get, model-versions/search, runs/get, experiments/search)
from separate client processes for a fixed time per server, with a new TCP connection per
request and with kept-alive connections (one requests.Session per client). Reports req/s,
p50, p99 and the ratio to plain MLflow. The design target is mlflow-share >= 0.95x plain.

Servers:
  plain               mlflow server
  basic-auth          mlflow server --app-name basic-auth (auth_cache_ttl_seconds = 0, stock)
  basic-auth-cached   same with auth_cache_ttl_seconds = 60 (MLflow's opt-in credential cache)
  mlflow-share        mlflow server --app-name mlflow-share (alice's API token)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from _common import PYTHON, Call, LoadResult, Server, drive, free_port, table, temp_dir

ADMIN_PASSWORD = "bench-admin-password-1"
ALICE_PASSWORD = "alice-password-1"
ALL_SERVERS = ("plain", "basic-auth", "basic-auth-cached", "mlflow-share")
MODEL = "bench-model"
N_RUNS = 5

_BASIC_AUTH_INI = """[mlflow]
default_permission = READ
database_uri = sqlite:///{db}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
auth_cache_ttl_seconds = {ttl}
"""


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def auth_extra_path() -> str | None:
    """A PYTHONPATH entry providing Flask-WTF (``mlflow[auth]``) for the basic-auth servers.

    Uses the venv's copy if installed; otherwise pip-installs it (no deps beyond WTForms) into
    a cache folder outside the venv, so running this benchmark does not change the venv.
    """
    import importlib.util
    import subprocess

    if importlib.util.find_spec("flask_wtf") is not None:
        return None
    target = Path.home() / ".cache" / "mlflow-share-bench" / "pydeps"
    if not (target / "flask_wtf").is_dir() or not (target / "wtforms").is_dir():
        print(f"installing Flask-WTF (mlflow[auth]) into {target} for the basic-auth servers",
              flush=True)
        subprocess.run([PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--target", str(target), "flask-wtf<2", "wtforms<4"],
                       check=True)
    return str(target)


def make_server(kind: str, root: Path, workers: int, fix_nodelay: bool = False,
                backend_uri: str | None = None, checksum_artifacts: bool = False) -> Server:
    """``kind`` (see ALL_SERVERS) on SQLite in ``root/kind``, or on ``backend_uri``; artifacts
    in ``root/kind/artifacts`` (through the ``checksum+file`` repository if asked)."""
    home = root / kind
    home.mkdir()
    port = free_port()
    argv = [PYTHON, "-m", "mlflow", "server"]
    env: dict[str, str] = {}
    if kind.startswith("basic-auth"):
        ini = home / "basic_auth.ini"
        ini.write_text(_BASIC_AUTH_INI.format(db=home / "basic_auth.db",
                                              ttl=60 if kind.endswith("cached") else 0))
        argv += ["--app-name", "basic-auth"]
        env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
               "MLFLOW_FLASK_SERVER_SECRET_KEY": "bench-secret-key-0123456789"}
        extra = auth_extra_path()
        if extra:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, os.environ.get("PYTHONPATH")) if p)
    elif kind.startswith("mlflow-share"):  # "mlflow-share-noaudit": bench/_noaudit_app.py
        argv += ["--app-name", "mlflow-share"]
        env = {"MLFLOW_SHARE_ADMIN_PASSWORD": ADMIN_PASSWORD}
    artifacts = str(home / "artifacts")
    argv += ["--backend-store-uri", backend_uri or f"sqlite:///{home / 'mlflow.db'}",
             "--artifacts-destination",
             f"checksum+file://{artifacts}" if checksum_artifacts else artifacts,
             "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if kind == "mlflow-share-noaudit":  # also applies the TCP_NODELAY fix
        argv += ["--uvicorn-opts", "--loop _noaudit_app:new_event_loop"]
    elif fix_nodelay:  # preview of the TCP_NODELAY fix (bench/_nodelay_app.py) on every server
        argv += ["--uvicorn-opts", "--loop _nodelay_app:new_event_loop"]
    if fix_nodelay or kind == "mlflow-share-noaudit":
        here = str(Path(__file__).resolve().parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return Server(kind, argv, port, home / "server.log", env=env, cwd=home)


def _ok(resp: requests.Response) -> dict:
    if resp.status_code != 200:
        raise RuntimeError(f"{resp.request.method} {resp.url} -> {resp.status_code}: {resp.text[:300]}")
    return resp.json() if resp.content else {}


def user_headers(server: Server) -> dict[str, str]:
    """Create the non-admin user 'alice' where there is auth; return her request headers."""
    url = server.url
    if server.name == "plain":
        return {}
    admin = basic("admin", ADMIN_PASSWORD)
    if server.name.startswith("basic-auth"):
        _ok(requests.post(f"{url}/api/2.0/mlflow/users/create", headers=admin,
                          json={"username": "alice", "password": ALICE_PASSWORD}))
        return basic("alice", ALICE_PASSWORD)
    api = f"{url}/api/2.0/mlflow-share"
    _ok(requests.post(f"{api}/teams", headers=admin, json={"name": "team-a"}))
    _ok(requests.post(f"{api}/users", headers=admin,
                      json={"name": "alice", "password": ALICE_PASSWORD}))
    _ok(requests.post(f"{api}/teams/members", headers=admin,
                      json={"team": "team-a", "user": "alice", "role": "engineer"}))
    token = _ok(requests.post(f"{api}/tokens", headers=admin, json={"user": "alice"}))["token"]
    return {"Authorization": f"Bearer {token}"}


def seed(server: Server, headers: dict[str, str]) -> list[Call]:
    """Create the same experiment, runs and model as ``headers``' user; return the read mix."""
    api = f"{server.url}/api/2.0/mlflow"
    s = requests.Session()
    s.headers.update(headers)
    exp_id = _ok(s.post(f"{api}/experiments/create", json={"name": "bench-exp"}))["experiment_id"]
    run_ids, artifact_uris = [], []
    for r in range(N_RUNS):
        info = _ok(s.post(f"{api}/runs/create", json={
            "experiment_id": exp_id, "run_name": f"run-{r}", "start_time": int(time.time() * 1000)
        }))["run"]["info"]
        run_ids.append(info["run_id"])
        artifact_uris.append(info["artifact_uri"])
        _ok(s.post(f"{api}/runs/log-batch", json={
            "run_id": info["run_id"],
            "params": [{"key": f"param_{k}", "value": str(k * r)} for k in range(5)],
            "metrics": [{"key": f"metric_{k}", "value": k * 0.1 + r, "timestamp": 0, "step": st}
                        for k in range(5) for st in range(3)],
            "tags": [{"key": "bench", "value": "yes"}],
        }))
        _ok(s.post(f"{api}/runs/update", json={"run_id": info["run_id"], "status": "FINISHED",
                                                "end_time": int(time.time() * 1000)}))
    _ok(s.post(f"{api}/registered-models/create", json={"name": MODEL}))
    for v in range(2):
        _ok(s.post(f"{api}/model-versions/create", json={
            "name": MODEL, "source": f"{artifact_uris[v]}/model", "run_id": run_ids[v]}))
    q = urllib.parse.urlencode
    calls = []
    for run_id in run_ids:
        calls += [
            Call("GET", f"/api/2.0/mlflow/registered-models/get?{q({'name': MODEL})}"),
            Call("GET", f"/api/2.0/mlflow/model-versions/search?{q({'filter': f'name=' + repr(MODEL)})}"),
            Call("GET", f"/api/2.0/mlflow/runs/get?{q({'run_id': run_id})}"),
            Call("POST", "/api/2.0/mlflow/experiments/search",
                 json.dumps({"max_results": 100}).encode()),
        ]
    # Sanity: every call of the mix succeeds for this user and sees the seeded data.
    for call in calls[:4]:
        body = _ok(s.request(call.method, server.url + call.path, data=call.body,
                             headers={"Content-Type": "application/json"} if call.body else {}))
        if "experiments/search" in call.path:
            names = [e["name"] for e in body.get("experiments", [])]
            assert "bench-exp" in names, names
        if "model-versions/search" in call.path:
            assert len(body.get("model_versions", [])) == 2, body
    return calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per measurement (< 90 s)")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per server")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--fix-nodelay", action="store_true",
                        help="apply the proposed TCP_NODELAY fix to every server (uvicorn --loop "
                             "hook from bench/_nodelay_app.py) to preview its effect")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per server and connection mode (default 8, --quick 3)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="split each duration into this many alternating rounds "
                             "(default 2, --quick 1)")
    parser.add_argument("--servers", default=None,
                        help=f"comma-separated subset of {','.join(ALL_SERVERS)} (default: all; "
                             "--quick: all but basic-auth-cached)")
    args = parser.parse_args()
    duration = args.duration or (3.0 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 2)
    wanted = (args.servers.split(",") if args.servers else
              [k for k in ALL_SERVERS if not (args.quick and k == "basic-auth-cached")])
    kinds = [k for k in ALL_SERVERS if k in wanted]
    if "plain" not in kinds:
        kinds.insert(0, "plain")  # the reference for every ratio

    t_start = time.monotonic()
    root = temp_dir("mlflow-share-bench-")
    servers = [make_server(kind, root, args.workers, args.fix_nodelay) for kind in kinds]
    print(f"starting {len(servers)} servers ({args.workers} uvicorn workers each) ...", flush=True)
    for server in servers:
        server.start()
    mixes: dict[str, tuple[list[Call], dict[str, str]]] = {}

    def prepare(server: Server) -> tuple[list[Call], dict[str, str]]:
        server.wait_ready()
        headers = user_headers(server)
        return seed(server, headers), headers

    # In parallel: seeding as a basic-auth user costs ~0.5 s of PBKDF2 per request.
    with ThreadPoolExecutor(len(servers)) as pool:
        for server, mix in zip(servers, pool.map(prepare, servers)):
            mixes[server.name] = mix
    print(f"servers ready and seeded in {time.monotonic() - t_start:.0f}s; "
          f"{args.clients} client processes, {duration:.0f}s per server and mode "
          f"in {rounds} round(s)", flush=True)

    # Rounds alternate the servers so that drift in machine load hits all of them alike.
    parts: dict[tuple[str, str], list[LoadResult]] = {}
    for mode, keepalive in (("new connection", False), ("kept-alive", True)):
        for rnd in range(rounds):
            for server in servers:
                calls, headers = mixes[server.name]
                res = drive(server.url, calls, headers, keepalive=keepalive,
                            clients=args.clients, duration=duration / rounds)
                parts.setdefault((mode, server.name), []).append(res)
                print(f"  {mode:15s} round {rnd + 1}/{rounds} {server.name:18s} {res.rps:8.1f} "
                      f"req/s  p50 {res.p50:7.2f} ms  p99 {res.p99:7.2f} ms  errors {res.errors}",
                      flush=True)
    results = {key: LoadResult.merge(value) for key, value in parts.items()}
    for server in servers:
        server.stop()

    rows = []
    for mode in ("new connection", "kept-alive"):
        ref = results[(mode, "plain")]
        for kind in kinds:
            res = results[(mode, kind)]
            rows.append([mode, kind, res.rps, res.p50, res.p99, res.errors,
                         f"{res.rps / ref.rps:.3f}x", f"{res.p50 / ref.p50:.2f}x"])
    print()
    print(f"Read mix, authenticated as non-admin 'alice'; {args.workers} uvicorn workers, "
          f"{args.clients} client processes, {duration:.0f}s each, SQLite, 127.0.0.1"
          + (", TCP_NODELAY fix applied to all servers" if args.fix_nodelay else ""))
    print(table(["connection", "server", "req/s", "p50 ms", "p99 ms", "errors",
                 "req/s vs plain", "p50 vs plain"], rows))
    share = [results[(m, "mlflow-share")] for m in ("new connection", "kept-alive")
             if (m, "mlflow-share") in results]
    if share:
        ratios = [results[(m, "mlflow-share")].rps / results[(m, "plain")].rps
                  for m in ("new connection", "kept-alive")]
        print(f"\ntarget: mlflow-share >= 0.95x plain -> new connection {ratios[0]:.3f}x "
              f"({'ok' if ratios[0] >= 0.95 else 'MISSED'}), kept-alive {ratios[1]:.3f}x "
              f"({'ok' if ratios[1] >= 0.95 else 'MISSED'})")
    ka = results[("kept-alive", "plain")]
    if args.workers > 1 and ka.p50 > 30 and not args.fix_nodelay:
        print(f"note: plain MLflow p50 on kept-alive connections is {ka.p50:.0f} ms with "
              f"{args.workers} workers: the Nagle/delayed-ACK stall (see bench/keepalive_stall.py)")
    print(f"total {time.monotonic() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
