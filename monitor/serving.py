"""An ASGI app under uvicorn in a background thread, for sync callers (tests, embedding)."""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
from typing import Any, Literal

import uvicorn

Lifespan = Literal["auto", "on", "off"]


def uvicorn_config(app: Any, host: str, port: int, *, lifespan: Lifespan = "off") -> uvicorn.Config:
    # uvloop + httptools: the plain asyncio loop is much slower here (see DEVELOPERS.md).
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http="httptools",
        log_level="warning",
        lifespan=lifespan,
        timeout_graceful_shutdown=1,
    )


class ServerThread:
    """Serve ``app`` on ``host:port`` (0: a free port, read back from ``.port``) until ``stop``."""

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        lifespan: Lifespan = "off",
        name: str = "server",
        startup_timeout_s: float = 10.0,
    ):
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self._lifespan = lifespan
        self._startup_timeout_s = startup_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        # Bind first, so port 0 yields the real port before uvicorn runs; SO_REUSEADDR lets a
        # restarted server take the same port at once (tests stop and start a collector).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn_config(self.app, self.host, self.port, lifespan=self._lifespan)
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=self.name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError(f"{self.name} failed to start on {self.host}:{self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self._startup_timeout_s)
        self._server = self._thread = None

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
