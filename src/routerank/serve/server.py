"""Run the app with uvicorn: in the foreground (`routerank serve`), or on a loopback thread (tests, benchmarks).

uvicorn stops on SIGINT/SIGTERM by closing the listening socket and letting requests in flight finish (up to
`shutdown_grace_s`); the app's shutdown then drains each model's queue before the workers stop.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from routerank.errors import RouterankError
from routerank.serve.app import create_app
from routerank.serve.config import ServeConfig


def _uvicorn_config(app: Any, config: ServeConfig, host: str, port: int, log_level: str):
    # heavy, optional serving extra: uvicorn loads only when a server starts
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=int(config.server.shutdown_grace_s),
        timeout_keep_alive=30,
        server_header=False,
    )


def run(config: ServeConfig, *, host: str | None = None, port: int | None = None, log_level: str = "info") -> None:
    """Load the models, then serve until SIGINT/SIGTERM."""
    # heavy, optional serving extra: uvicorn loads only when a server starts
    import uvicorn

    app = create_app(config)
    uvicorn.Server(
        _uvicorn_config(
            app, config, host or config.server.host, config.server.port if port is None else port, log_level
        )
    ).run()


class BackgroundServer:
    """`with BackgroundServer(app, config) as url:` serves on 127.0.0.1 at a free port, then stops and drains."""

    def __init__(self, app: Any, config: ServeConfig, *, startup_timeout: float = 30.0, log_level: str = "warning"):
        # heavy, optional serving extra: uvicorn loads only when a server starts
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(_uvicorn_config(app, config, "127.0.0.1", self.port, log_level))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True, name=f"routerank-serve-{self.port}"
        )
        self.startup_timeout = startup_timeout

    @property
    def url(self) -> str:
        """The base URL it serves at, `http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RouterankError(f"the test server did not start within {self.startup_timeout:g} s")
            time.sleep(0.01)
        return self.url

    def stop(self, timeout: float = 30.0) -> None:
        """Ask uvicorn to exit (finishing requests in flight and draining the queues), wait up to `timeout` seconds
        for its thread, and close the socket."""
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __exit__(self, *exc_info) -> None:
        self.stop()
