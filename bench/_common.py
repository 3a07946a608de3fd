"""Shared helpers for the benchmarks: servers on loopback, a multi-process load driver, tables.

Servers run in their own session (process group) so stopping one ends its uvicorn workers
too; every process and temp folder a benchmark creates is removed on exit, also on Ctrl+C.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PYTHON = sys.executable
HOST = "127.0.0.1"

# Same for every server: MLflow's job runner (a dozen huey processes per server) is unrelated
# to the read path and would only eat memory and CPU on a 2-core machine.
BASE_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "PYTHONWARNINGS": "ignore",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def temp_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


_SERVERS: list[Server] = []


def _stop_all(*_: object) -> None:
    for server in list(_SERVERS):
        server.stop()


atexit.register(_stop_all)


def _on_signal(signum: int, _frame: object) -> None:
    _stop_all()
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)


@dataclass
class Server:
    """A server process (and its children) on 127.0.0.1:port, logging to a file."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Server:
        env = {**os.environ, **BASE_ENV, **self.env}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv, env=env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        _SERVERS.append(self)
        return self

    def wait_ready(self, path: str = "/health", timeout: float = 150.0) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; log:\n{self.log_tail()}")
            try:
                if requests.get(self.url + path, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if self in _SERVERS:
            _SERVERS.remove(self)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the group this Popen created
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        # Children that outlived the leader (uvicorn workers) are still in the same group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


# -- load driver ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    method: str
    path: str  # with the query string already encoded
    body: bytes | None = None


class RawConnection:
    """A kept-alive HTTP/1.1 connection that sends pre-built requests and reads whole answers.

    About 20 µs of client CPU per call against ~0.5 ms for ``requests``: on a 2-core machine
    the clients' CPU is taken from the servers being measured, so a lean client measures the
    servers, not the client library. Understands Content-Length and chunked answers.
    """

    def __init__(self, url: str) -> None:
        host, _, port = url.split("://", 1)[1].rstrip("/").partition(":")
        self.address = (host, int(port or 80))
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.body = b""  # the last answer's body (chunked answers: as sent)

    def request(self, raw: bytes) -> int:
        if self.sock is None:
            self.sock = socket.create_connection(self.address)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
        try:
            self.sock.sendall(raw)
            return self._answer()
        except Exception:
            self.close()
            raise

    def _fill(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buffer += chunk

    def _answer(self) -> int:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip()
                  for k, _, v in (line.partition(":") for line in lines[1:])}
        if "content-length" in fields:
            size = int(fields["content-length"])
            while len(self.buffer) < size:
                self._fill()
            self.body, self.buffer = self.buffer[:size], self.buffer[size:]
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            while (end := self.buffer.find(b"0\r\n\r\n")) < 0:
                self._fill()
            self.body, self.buffer = self.buffer[:end], self.buffer[end + 5:]
        else:
            self.body = b""
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def raw_request(url: str, call: Call, headers: dict[str, str]) -> bytes:
    host = url.split("://", 1)[1].rstrip("/")
    lines = [f"{call.method} {call.path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if call.body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(call.body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (call.body or b"")


def _raw_sender(url: str, calls: list[Call], headers: dict[str, str], keepalive: bool
                ) -> tuple[Any, Any]:
    hdrs = dict(headers) if keepalive else {**headers, "Connection": "close"}
    raws = [raw_request(url, call, hdrs) for call in calls]
    conn = RawConnection(url)

    def send(k: int) -> str | None:
        status = conn.request(raws[k])
        return None if status == 200 else f"{status} {conn.body[:160].decode(errors='replace')}"

    return send, conn.close


def _requests_sender(url: str, calls: list[Call], headers: dict[str, str], keepalive: bool
                     ) -> tuple[Any, Any]:
    import requests

    session = requests.Session()
    hdrs = dict(headers)
    if not keepalive:
        hdrs["Connection"] = "close"  # the server closes; the next request opens a new one
    hdrs_json = {**hdrs, "Content-Type": "application/json"}

    def send(k: int) -> str | None:
        call = calls[k]
        resp = session.request(call.method, url + call.path, data=call.body,
                               headers=hdrs_json if call.body else hdrs)
        resp.content
        return None if resp.status_code == 200 else f"{resp.status_code} {resp.text[:160]}"

    return send, session.close


def _client_loop(url: str, calls: list[Call], headers: dict[str, str], keepalive: bool,
                 barrier: Any, duration: float, offset: int, queue: Any, raw: bool) -> None:
    send, close = (_raw_sender if raw else _requests_sender)(url, calls, headers, keepalive)
    perf = time.perf_counter
    n = len(calls)
    i = offset
    # Warm-up, not recorded (also opens the kept-alive connection): at most 1 s or one pass.
    # The measured loop goes on from the next call: a replayed write would be a no-op.
    warm_end = perf() + 1.0
    for _ in range(n):
        try:
            send(i % n)
        except Exception:  # noqa: BLE001 - the measured loop counts errors
            pass
        i += 1
        if perf() >= warm_end:
            break
    lat: list[float] = []
    errors = 0
    failures: Counter[str] = Counter()  # what the failed calls got, the first 20 kinds
    barrier.wait(timeout=180)  # every client starts the measured loop at the same moment
    end = perf() + duration
    while True:
        t0 = perf()
        if t0 >= end:
            break
        try:
            failure = send(i % n)
        except Exception as exc:  # noqa: BLE001 - counted, not fatal
            failure = f"{type(exc).__name__}: {str(exc)[:160]}"
        i += 1
        t1 = perf()
        if failure is None:
            lat.append((t1 - t0) * 1000.0)
        else:
            errors += 1
            if failure in failures or len(failures) < 20:
                failures[failure] += 1
    close()
    queue.put((lat, errors, failures))


@dataclass
class LoadResult:
    requests: int
    errors: int
    duration: float
    p50: float
    p99: float
    latencies: list[float] = field(default_factory=list, repr=False)  # sorted, ms
    failures: dict[str, int] = field(default_factory=dict)  # what failed calls got: how often

    @property
    def rps(self) -> float:
        return self.requests / self.duration

    @staticmethod
    def merge(parts: list[LoadResult]) -> LoadResult:
        lat = sorted(x for p in parts for x in p.latencies)
        return LoadResult(len(lat), sum(p.errors for p in parts), sum(p.duration for p in parts),
                          percentile(lat, 50), percentile(lat, 99), lat,
                          dict(sum((Counter(p.failures) for p in parts), Counter())))


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def drive(url: str, calls: list[Call], headers: dict[str, str], *, keepalive: bool,
          clients: int, duration: float, raw: bool = False) -> LoadResult:
    """``clients`` separate processes send ``calls`` round-robin for ``duration`` seconds,
    through ``requests`` or (``raw``) a lean socket client. Client k starts at call
    ``k * len(calls) / clients``: a list of distinct writes is not replayed by the next client
    (a repeated metric or tag is a no-op write, which would flatter both servers)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    barrier = ctx.Barrier(clients)
    procs = [
        ctx.Process(target=_client_loop, daemon=True,
                    args=(url, calls, headers, keepalive, barrier, duration,
                          k * len(calls) // clients, queue, raw))
        for k in range(clients)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=duration + 300) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    lat = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    return LoadResult(len(lat), errors, duration, percentile(lat, 50), percentile(lat, 99), lat,
                      dict(sum((r[2] for r in results), Counter())))


# -- output -----------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
