"""Registration with and without OpenSSF Model Signing signatures.

    .venv/bin/python bench/signing.py [--quick] [--size-mb 200] [--files 20] [--rounds 5]

Starts on 127.0.0.1 two mlflow-share servers (``checksum+file`` artifact root, one worker)
that differ only in ``MLFLOW_SHARE_SIGNING_KEY`` (``unsigned``, ``signed``: an ECDSA P-256
key). On each, one run holds a model of ``--size-mb`` MB (one large ``model.onnx`` and
``--files`` small files); every round registers a new version of it on both servers, in
alternating order, and times ``model-versions/create`` (the copy, its SHA-256 pass, the
manifest and, on ``signed``, the signature). A second, small model (``--files`` files of
4 KB) shows the fixed cost of a signature. Reports the median time of each and the ratio
signed / unsigned; then, in this process, what signing costs against one SHA-256 pass over the
same bytes (signing reads none: it signs the digests registration computed).
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
VARIANTS = ("unsigned", "signed")


def _model(folder: Path, size_mb: int, files: int, small: int = 4096) -> dict[str, Path]:
    folder.mkdir(parents=True)
    made = {}
    if size_mb:
        with open(folder / "model.onnx", "wb") as out:
            for _ in range(size_mb):
                out.write(os.urandom(CHUNK))
        made["model.onnx"] = folder / "model.onnx"
    for index in range(files):
        path = folder / f"extra/file-{index:03}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(small))
        made[f"extra/file-{index:03}.bin"] = path
    (folder / "MLmodel").write_bytes(b"flavors: {}\n")
    made["MLmodel"] = folder / "MLmodel"
    return made


class Target:
    """One server, with a run holding each model, registering versions of them."""

    def __init__(self, url: str, headers: dict[str, str], models: dict[str, dict[str, Path]]
                 ) -> None:
        self.url, self.session = url, requests.Session()
        self.session.headers.update(headers)
        api = f"{url}/api/2.0/mlflow"
        experiment = _ok(self.session.post(f"{api}/experiments/create",
                                           json={"name": "bench"}))["experiment_id"]
        self.runs = {}
        for name, files in models.items():
            run = _ok(self.session.post(f"{api}/runs/create", json={
                "experiment_id": experiment}))["run"]["info"]["run_id"]
            for relative, path in files.items():
                with open(path, "rb") as body:
                    _ok(self.session.put(f"{url}/api/2.0/mlflow-artifacts/artifacts/"
                                         f"{experiment}/{run}/artifacts/model/{relative}",
                                         data=body))
            _ok(self.session.post(f"{api}/registered-models/create", json={"name": name}))
            self.runs[name] = run

    def register(self, name: str) -> float:
        start = time.perf_counter()
        created = _ok(self.session.post(f"{self.url}/api/2.0/mlflow/model-versions/create",
                                        json={"name": name, "run_id": self.runs[name],
                                              "source": f"runs:/{self.runs[name]}/model"}))
        elapsed = time.perf_counter() - start
        if created["model_version"]["status"] != "READY":
            raise RuntimeError(f"registration of {name} not READY: {created}")
        return elapsed


def bench_registration(args: argparse.Namespace) -> None:
    from mlflow_share.artifacts import oms

    root = temp_dir("mlflow-share-signing-bench-")
    key = root / "signing.pem"
    oms.generate_key(key, root / "signing.pub")
    models = {"large": _model(root / "large", args.size_mb, args.files),
              "small": _model(root / "small", 0, args.files)}
    targets = {}
    for variant in VARIANTS:
        (root / variant).mkdir()
        server = make_server("mlflow-share", root / variant, 1, fix_nodelay=True,
                             checksum_artifacts=True)
        if variant == "signed":
            server.env["MLFLOW_SHARE_SIGNING_KEY"] = str(key)
        server.start().wait_ready()
        targets[variant] = Target(server.url, user_headers(server), models)
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds + 1):  # round 0 warms both up (imports, caches), not counted
        order = VARIANTS if round_ % 2 else tuple(reversed(VARIANTS))
        for name in ("large", "small"):
            for variant in order:
                elapsed = targets[variant].register(name)
                if round_:
                    times.setdefault((variant, name), []).append(elapsed)
    print(f"\nmodel-versions/create, median of {args.rounds} rounds (one worker, SQLite):")
    for name, what in (("large", f"{args.size_mb} MB + {args.files} small files"),
                       ("small", f"{args.files} files of 4 KB")):
        unsigned = statistics.median(times[("unsigned", name)])
        signed = statistics.median(times[("signed", name)])
        print(f"  {what:28}  unsigned {unsigned * 1000:8.1f} ms  signed {signed * 1000:8.1f} ms"
              f"   signed/unsigned {signed / unsigned:.3f}x")
    bench_signing_alone(key, models["large"], args.size_mb)


def bench_signing_alone(key: Path, files: dict[str, Path], size_mb: int) -> None:
    from mlflow_share.artifacts import oms

    keys = oms.SigningKeys.load(key.read_bytes())
    keys.warm()
    start = time.perf_counter()
    digests = []
    for relative, path in sorted(files.items()):
        sha = hashlib.sha256()
        with open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                sha.update(chunk)
        digests.append((relative, sha.hexdigest()))
    one_pass = time.perf_counter() - start
    rounds = 50
    start = time.perf_counter()
    for _ in range(rounds):
        bundle = oms.sign(keys, "bench/1", digests)
    signing = (time.perf_counter() - start) / rounds
    start = time.perf_counter()
    for _ in range(rounds):
        oms.check(keys, bundle.text, dict(digests), "bench/1")
    checking = (time.perf_counter() - start) / rounds
    print(f"\nIn process, {len(files)} files, {size_mb} MB: one SHA-256 pass over the bytes "
          f"{one_pass * 1000:.1f} ms; signing their digests {signing * 1000:.2f} ms "
          f"({signing / one_pass:.4f} of a pass; it reads no bytes); checking a signature "
          f"{checking * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 MB, 3 rounds")
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.size_mb, args.rounds = 50, 3
    bench_registration(args)


if __name__ == "__main__":
    sys.exit(main())
