"""200 MB artifact upload and download: checksum+file repository vs MLflow's local repository.

    .venv/bin/python bench/artifacts.py [--quick] [--size-mb 200] [--rounds 5]

Starts on 127.0.0.1 two mlflow-share servers that differ only in ``--artifacts-destination``
(``stock``: ``<dir>``, MLflow's LocalArtifactRepository; ``checksum``: ``checksum+file://<dir>``)
and, for reference, plain ``mlflow server`` (``plain``). It alternates PUT and GET of the same
file through the mlflow-artifacts proxy between them, so drift on the machine hits all alike,
and reports the median MB/s of each and the ratios (target: checksum >= 0.90x stock). Then compares the repository's checked read (size + SHA-256 in the pass
that reads) with hashlib alone on the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path

import requests

from _common import temp_dir
from server_throughput import _ok, make_server, user_headers

CHUNK = 1024 * 1024
VARIANTS = ("plain", "stock", "checksum")


def _put(url: str, headers: dict[str, str], path: Path) -> float:
    start = time.perf_counter()
    with open(path, "rb") as body:
        response = requests.put(url, data=body, headers=headers, timeout=600)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"PUT {url} -> {response.status_code}: {response.text[:300]}")
    return elapsed


def _get(url: str, headers: dict[str, str], size: int) -> float:
    start = time.perf_counter()
    received = 0
    with requests.get(url, headers=headers, stream=True, timeout=600) as response:
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} -> {response.status_code}: {response.text[:300]}")
        for chunk in response.iter_content(CHUNK):
            received += len(chunk)
    elapsed = time.perf_counter() - start
    if received != size:
        raise RuntimeError(f"GET {url}: {received} bytes, expected {size}")
    return elapsed


def bench_transfers(args: argparse.Namespace) -> None:
    root = temp_dir("mlflow-share-artifacts-bench-")
    payload = root / "payload.bin"
    size = args.size_mb * CHUNK
    with open(payload, "wb") as f:
        for _ in range(args.size_mb):
            f.write(os.urandom(CHUNK))
    servers = {}
    for variant in VARIANTS:
        (root / variant).mkdir()
        kind = "plain" if variant == "plain" else "mlflow-share"
        server = make_server(kind, root / variant, 1, fix_nodelay=True,
                             checksum_artifacts=variant == "checksum").start()
        server.wait_ready()
        headers = user_headers(server)
        experiment = _ok(requests.post(f"{server.url}/api/2.0/mlflow/experiments/create",
                                       headers=headers, json={"name": "bench"}))["experiment_id"]
        url = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment}/bench/payload.bin"
        servers[variant] = (url, headers)
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds + 1):  # round 0 warms both servers up, not counted
        order = VARIANTS if round_ % 2 else tuple(reversed(VARIANTS))
        for variant in order:
            url, headers = servers[variant]
            put, get = _put(url, headers, payload), _get(url, headers, size)
            if round_:
                times.setdefault((variant, "upload"), []).append(put)
                times.setdefault((variant, "download"), []).append(get)
    print(f"\n{args.size_mb} MB through the mlflow-artifacts proxy, median of {args.rounds} "
          "rounds, MB/s:")
    for operation in ("upload", "download"):
        rates = {v: args.size_mb / statistics.median(times[(v, operation)]) for v in VARIANTS}
        print(f"  {operation:8}  plain {rates['plain']:7.1f}  stock {rates['stock']:7.1f}"
              f"  checksum {rates['checksum']:7.1f}   checksum/stock "
              f"{rates['checksum'] / rates['stock']:.2f}x  checksum/plain "
              f"{rates['checksum'] / rates['plain']:.2f}x")
    stored = root / "checksum" / "mlflow-share" / "artifacts"
    bench_hashing(next(stored.rglob("payload.bin")), args.size_mb)


def bench_hashing(path: Path, size_mb: int) -> None:
    from mlflow_share.artifacts.ledger import Digest
    from mlflow_share.artifacts.repository import ChecksumArtifactRepository, Verified

    data = path.read_bytes()
    start = time.perf_counter()
    expected = hashlib.sha256(data).hexdigest()
    alone = time.perf_counter() - start
    best = float("inf")
    for _ in range(3):
        opened = Verified("payload.bin", len(data), Digest("payload.bin", len(data), expected,
                                                           None), open(path, "rb"))
        start = time.perf_counter()
        for _chunk in ChecksumArtifactRepository.iter_verified(opened):
            pass
        best = min(best, time.perf_counter() - start)
    print(f"\nSHA-256 of the same {size_mb} MB: hashlib alone on the buffer "
          f"{size_mb / alone:.0f} MB/s; checked read of the stored file (read + hash + "
          f"compare) {size_mb / best:.0f} MB/s; ratio {alone / best:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 MB, 2 rounds")
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.size_mb, args.rounds = 50, 2
    bench_transfers(args)


if __name__ == "__main__":
    sys.exit(main())
