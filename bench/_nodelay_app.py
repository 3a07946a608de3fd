"""A tiny ASGI app factory for bench/keepalive_stall.py (served by ``uvicorn --factory``).

``BENCH_NODELAY_FIX`` picks what the factory does in each worker before uvicorn serves:
  (unset)    nothing: stock uvicorn behaviour
  patch      wrap asyncio's ``base_events._set_nodelay`` so every accepted TCP socket gets
             TCP_NODELAY, whatever ``sock.proto`` says (mlflow-share's fix)
  listener   set TCP_NODELAY on the inherited listening socket(s) found in /proc/self/fd;
             Linux copies it to every accepted socket (an alternative, Linux only)
The response is written the way MLflow's is under uvicorn: headers, then the body.

``new_event_loop`` is a uvicorn ``--loop`` factory that applies the same fix: the benchmarks
pass it to stock MLflow servers (``--uvicorn-opts "--loop _nodelay_app:new_event_loop"``) to
compare like with like.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def enable_tcp_nodelay_on_accepted_sockets() -> None:
    """The fix mlflow-share applies in each worker (``mlflow_share.app.enable_tcp_nodelay``)."""
    from mlflow_share.app import enable_tcp_nodelay

    enable_tcp_nodelay()


def asyncio_event_loop() -> Any:
    """uvicorn ``--loop`` factory: asyncio's selector loop with the fix (keepalive_stall.py)."""
    import asyncio

    enable_tcp_nodelay_on_accepted_sockets()
    return asyncio.SelectorEventLoop()


def new_event_loop() -> Any:
    """uvicorn ``--loop`` factory: the loop uvicorn's ``auto`` would pick, with the fix.

    uvloop (installed with mlflow-share) sets TCP_NODELAY on every TCP connection itself;
    asyncio's selector loop gets the fix applied first.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio_event_loop()
    return uvloop.new_event_loop()


def nodelay_on_inherited_listeners() -> int:
    """The alternative: TCP_NODELAY on inherited, bound, unconnected TCP sockets (Linux)."""
    done = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(fd))  # family/type/proto read from the fd
        except OSError:
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                continue
            try:
                sock.getpeername()
                continue  # connected: not a server socket
            except OSError:
                pass
            if sock.getsockname()[1] == 0:
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            done += 1
    return done


def create_app() -> Any:
    fix = os.environ.get("BENCH_NODELAY_FIX", "")
    if fix == "patch":
        enable_tcp_nodelay_on_accepted_sockets()
    elif fix == "listener":
        nodelay_on_inherited_listeners()

    body = b'{"status": "ok"}'

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app
