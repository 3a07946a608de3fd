"""Adopting an artifact root (`mlflow-share adopt artifacts`) against `sha256sum` on the same files.

    .venv/bin/python bench/adopt_artifacts.py [--quick] [--files 200] [--big 3] [--rounds 3]

Makes ``--files`` files of 1 MB and ``--big`` of 50 MB in a temp root (read once, so every
run meets them in the page cache), then alternates, round by round: the adoption pass
(``Adoption.adopt``: listing, ledger look-ups, SHA-256 in 1 MiB reads on ``--jobs`` threads,
batched inserts with their audit events, on a fresh SQLite database each round), the same
pass on one thread, and ``sha256sum`` over every file. Reports the median MB/s of each and
the ratios to ``sha256sum``; then the whole command once (``python -m
mlflow_share.adopt.artifacts``: interpreter start-up, the counting pass, the progress bar).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import PYTHON, temp_dir

MB = 1024 * 1024


def make_root(root: Path, files: int, big: int) -> tuple[list[Path], int]:
    paths = []
    block = os.urandom(MB)
    for index in range(files):
        path = root / "1" / f"run{index // 20:03d}" / "artifacts" / f"part-{index:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(16) + block[16:])  # distinct files, cheap to make
        paths.append(path)
    for index in range(big):
        path = root / "1" / "big" / "artifacts" / f"weights-{index}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for _ in range(50):
                out.write(os.urandom(MB))
        paths.append(path)
    total = sum(path.stat().st_size for path in paths)
    for path in paths:  # into the page cache: both sides read from memory
        path.read_bytes()
    return paths, total


def adoption_pass(root: Path, workdir: Path, round_: int, jobs: int) -> float:
    from mlflow_share import db
    from mlflow_share.artifacts.adoption import Adoption
    from mlflow_share.artifacts.ledger import Ledger
    from mlflow_share.artifacts.roots import server_root

    uri = f"sqlite:///{workdir / f'round-{round_}-{jobs}.db'}"
    db.ensure_schema(uri)
    adoption = Adoption(Ledger(db.get_engine(uri)), jobs=jobs)
    start = time.perf_counter()
    tally = adoption.adopt(server_root(f"checksum+file://{root}"))
    elapsed = time.perf_counter() - start
    if tally.failed or tally.refused or tally.skipped:
        raise RuntimeError(f"adoption did not hash every file: {tally}")
    return elapsed


def sha256sum(paths: list[Path]) -> float:
    start = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, paths)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def command(root: Path, workdir: Path) -> float:
    database = workdir / "command.db"
    database.touch()
    start = time.perf_counter()
    subprocess.run([PYTHON, "-m", "mlflow_share.adopt.artifacts", "--backend-store-uri",
                    f"sqlite:///{database}", "--artifacts-destination",
                    f"checksum+file://{root}", "--root", f"file://{workdir / 'empty'}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 x 1 MB + 1 x 50 MB, 2 rounds")
    parser.add_argument("--files", type=int, default=200, help="files of 1 MB")
    parser.add_argument("--big", type=int, default=3, help="files of 50 MB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="hashing threads (the command's default)")
    args = parser.parse_args()
    if args.quick:
        args.files, args.big, args.rounds = 50, 1, 2
    workdir = temp_dir("mlflow-share-adopt-bench-")
    (workdir / "empty").mkdir()
    root = workdir / "root"
    paths, total = make_root(root, args.files, args.big)
    size_mb = total / MB
    times: dict[str, list[float]] = {"adopt": [], "adopt-1": [], "sha256sum": []}
    for round_ in range(args.rounds + 1):  # round 0 warms up (imports, caches), not counted
        runs = [("adopt", lambda: adoption_pass(root, workdir, round_, args.jobs)),
                ("adopt-1", lambda: adoption_pass(root, workdir, round_, 1)),
                ("sha256sum", lambda: sha256sum(paths))]
        for name, run in runs if round_ % 2 else reversed(runs):
            elapsed = run()
            if round_:
                times[name].append(elapsed)
    rates = {name: size_mb / statistics.median(values) for name, values in times.items()}
    print(f"\n{len(paths)} files, {size_mb:.0f} MB (page cache), median of {args.rounds} "
          "rounds, MB/s:")
    print(f"  sha256sum                       {rates['sha256sum']:8.1f}")
    print(f"  adoption pass, {args.jobs} thread(s)        {rates['adopt']:8.1f}   "
          f"ratio to sha256sum {rates['adopt'] / rates['sha256sum']:.2f}x")
    print(f"  adoption pass, 1 thread          {rates['adopt-1']:8.1f}   "
          f"ratio to sha256sum {rates['adopt-1'] / rates['sha256sum']:.2f}x")
    whole = command(root, workdir)
    print(f"  whole command (start-up, counting pass, progress bar): {whole:.2f} s, "
          f"{size_mb / whole:.1f} MB/s")


if __name__ == "__main__":
    sys.exit(main())
