"""Inference: onnxruntime in-process vs `mlflow models serve` vs the mlflow-share gateway.

    .venv/bin/python bench/gateway.py [--quick] [--duration 8]

One model (an MLP, 32 features, two hidden layers of 128, built here with scikit-learn and
skl2onnx and logged with ``mlflow.onnx``), registered on an mlflow-share server. Served by
``mlflow models serve --env-manager local --workers 1`` and by ``mlflow-share gateway`` (one
process), both on 127.0.0.1; 1-row and 64-row requests (``{"inputs": ...}``) from 1 and 8
client processes with kept-alive connections. The floor is ``session.run`` in this process.
Targets: 1-row p50 within 1 ms of in-process; at 8 clients >= 3x the throughput of
``mlflow models serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import requests

from _common import PYTHON, Call, Server, drive, free_port, table, temp_dir
from server_throughput import make_server, user_headers

FEATURES = 32


def build_model() -> bytes:
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPRegressor

    rng = np.random.default_rng(0)
    x = rng.random((500, FEATURES)).astype(np.float32)
    y = x @ rng.random(FEATURES) + 0.1 * rng.random(500)
    model = MLPRegressor(hidden_layer_sizes=(128, 128), max_iter=50, random_state=0).fit(x, y)
    return bytes(to_onnx(model, x[:1]).SerializeToString())


def in_process(model_bytes: bytes, rows: np.ndarray, duration: float) -> tuple[float, float, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    latencies = []
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        session.run(None, {name: rows})
        latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    return (latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)],
            len(latencies) / duration)


def register(server: Server, headers: dict[str, str], model_bytes: bytes) -> None:
    import mlflow
    import onnx

    os.environ["MLFLOW_TRACKING_URI"] = server.url
    os.environ["MLFLOW_TRACKING_TOKEN"] = headers["Authorization"].split(" ", 1)[1]
    mlflow.set_tracking_uri(server.url)
    mlflow.set_experiment("bench-gateway")
    with mlflow.start_run():
        mlflow.onnx.log_model(onnx.load_model_from_string(model_bytes), name="model",
                              registered_model_name="bench")
    mlflow.MlflowClient().set_registered_model_alias("bench", "champion", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per measurement")
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    if args.quick:
        args.duration = 3.0
    root = temp_dir("mlflow-share-gateway-bench-")
    server = make_server("mlflow-share", root, 1, fix_nodelay=True, checksum_artifacts=True)
    server.start().wait_ready()
    headers = user_headers(server)
    model_bytes = build_model()
    register(server, headers, model_bytes)
    home = root / "mlflow-share"
    env = {"MLFLOW_TRACKING_URI": server.url,
           "MLFLOW_TRACKING_TOKEN": headers["Authorization"].split(" ", 1)[1],
           "MLFLOW_SHARE_GATEWAY_RATE_PER_TEAM": "0",
           # `mlflow models serve` runs `uvicorn` from PATH: the one of this interpreter.
           "PATH": os.pathsep.join([os.path.dirname(PYTHON), os.environ.get("PATH", "")])}
    port = free_port()
    gateway = Server("gateway", [PYTHON, "-m", "mlflow_share.cli", "gateway",
                                 "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
                                 "--artifacts-destination", f"checksum+file://{home / 'artifacts'}",
                                 "--port", str(port)], port, root / "gateway.log", env=env,
                     cwd=root).start()
    gateway.wait_ready("/ping")
    port = free_port()
    stock = Server("mlflow models serve", [PYTHON, "-m", "mlflow", "models", "serve", "-m",
                                           "models:/bench@champion", "--env-manager", "local",
                                           "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
                   port, root / "serve.log", env=env, cwd=root).start()
    stock.wait_ready("/ping", timeout=300)

    rng = np.random.default_rng(1)
    rows_by_batch = {n: rng.random((n, FEATURES)).astype(np.float32) for n in (1, 64)}
    results = []
    for batch, rows in rows_by_batch.items():
        body = json.dumps({"inputs": rows.tolist()}).encode()
        floor = in_process(model_bytes, rows, args.duration)
        for name, url, path, hdrs in (
                ("mlflow models serve", stock.url, "/invocations", {}),
                ("gateway", gateway.url, "/v1/models/bench@champion/invocations", headers)):
            check = requests.post(url + path, data=body, timeout=30,
                                  headers={**hdrs, "Content-Type": "application/json"})
            if check.status_code != 200:
                raise RuntimeError(f"{name}: {check.status_code} {check.text[:300]}")
            for clients in (1, 8):
                result = drive(url, [Call("POST", path, body)], hdrs, keepalive=True,
                               clients=clients, duration=args.duration, raw=True)
                results.append((batch, clients, name, result, floor))
    rows = []
    by_key = {(b, c, n): r for b, c, n, r, _ in results}
    for batch, clients, name, result, floor in results:
        stock_rps = by_key[(batch, clients, "mlflow models serve")].requests / args.duration
        rps = result.requests / args.duration
        rows.append([batch, clients, name, rps, result.p50, result.p99, result.errors,
                     rps / stock_rps, result.p50 - floor[0]])
    print(f"\nin-process floor (1 thread): 1 row p50 {in_process(model_bytes, rows_by_batch[1], 1)[0]:.3f} ms")
    print(table(["rows", "clients", "server", "req/s", "p50 ms", "p99 ms", "errors",
                 "x serve", "p50 - in-process ms"], rows))


if __name__ == "__main__":
    sys.exit(main())
