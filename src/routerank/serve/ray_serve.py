"""The same server on Ray Serve: `routerank serve --config C --ray-replicas N [--ray-address ADDRESS]`.

The app is the one `routerank serve` runs: `create_app(config)`, with its guard (keys, body size, requests in
flight), its routes and its lifespan. Ray Serve only replaces uvicorn as the process that holds it:

- **Each replica loads its own models.** A replica is a Ray actor (its own process, possibly on another node);
  it builds the app in its constructor, so the models load once per replica and stay there. Nothing is shared
  between replicas: each is a whole server on its own CPUs (or GPU), so N replicas run N forward passes at once,
  where one process sharing its weights would run them one after another; and a replica that dies takes no other
  down. No weights travel through Ray's object store either: a replica reads the same spec (`ce:/path`, a cache
  name, ...) from the disk of the node it lands on, so every node needs the models (and N times their memory).
- **Batching is per replica.** The app's lifespan starts one `Batcher` per model inside each replica, and Ray
  Serve runs that lifespan at replica start and its shutdown at replica stop (draining the queue, as uvicorn
  does). Requests that land on the same replica are batched together; requests on different replicas never are.
- **The proxy.** Serve's HTTP proxy (one per node) listens on the config's host and port (or --host/--port),
  and forwards each request, as raw ASGI, to a replica chosen by Ray's router (the less busy of two at random).
  It does not parse or check anything: auth, limits and every error body come from the replica's app, so
  clients get the responses of the uvicorn server. Each response also names its replica (`x-routerank-replica`).
- **Limits.** Ray may send a replica twice `[limits] max_concurrent_requests` at once, so that the replica's own
  guard, not Ray, refuses the excess with its 429; past that Ray queues up to `max_concurrent_requests` more per
  proxy and then answers 503 itself. A replica that dies mid-request is also answered by the proxy (500), and
  Serve starts a new one.
- **Keys are read once, by the caller.** `ROUTERANK_API_KEYS` and `api_keys_file` are resolved where
  `routerank serve` runs (a missing key fails there, before anything is deployed), and handed to each replica
  with its constructor arguments, because a replica on another node has neither the variable nor the file. They
  are then held by the Serve controller as part of the deployment, so use a cluster you trust.

Ray is imported only here, and this module only when `--ray-replicas` is given.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from routerank.errors import RouterankError
from routerank.scale.options import connect, ray_options
from routerank.serve.app import create_app
from routerank.serve.config import ServeConfig, load_api_keys

log = logging.getLogger("routerank.serve")

APP_NAME = "routerank"
DEPLOYMENT = "RouterankReplica"
REPLICA_HEADER = b"x-routerank-replica"


class ReplicaHeader:
    """ASGI: add `x-routerank-replica: <id>` to every HTTP response; everything else passes through unchanged."""

    def __init__(self, app: Any, replica: str):
        self.app, self.replica = app, replica.encode("latin-1", "replace")

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, self.replica)]}
            await send(message)

        await self.app(scope, receive, send_named)


def _replica_id() -> str:
    try:
        # heavy, optional: Ray loads only when ray= asks for it
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (unit use): the process is the replica
        return f"pid-{os.getpid()}"


class RouterankReplica:
    """One Serve replica: the app of `create_app(config)`, its models loaded once in this process.

    `serve.ingress()` wraps this class at deploy time and asks `__serve_build_asgi_app__` for the ASGI app; Serve
    then runs the app's lifespan (the batchers) in the replica's event loop.
    """

    def __init__(self, config: ServeConfig, keys: list[str], cwd: str | None = None):
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)  # relative model paths in the config mean what they mean to `routerank serve`

        self.replica = _replica_id()
        self.routerank_app = ReplicaHeader(create_app(config, keys=keys), self.replica)
        log.info("routerank replica %s: models %s loaded", self.replica, sorted(config.models))

    def __serve_build_asgi_app__(self) -> Any:
        return self.routerank_app


def _replica_error(serve: Any) -> str:
    """The last line of the replicas' own error (a model that failed to load), as Serve recorded it."""
    try:
        deployments = serve.status().applications[APP_NAME].deployments
        message = deployments[DEPLOYMENT].message
    except Exception:
        return ""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _wait_routable(url: str, timeout_s: float = 120.0) -> None:
    """Wait until Serve's proxy routes to a ready replica (`/ready` answers 200 through it). `serve.run` returns when
    the replicas are up, but the proxy learns of them a moment later; until then it answers 503 or queues, and a
    request past the deployment's small queue is refused, so "started" must mean "answering"."""

    deadline, last = time.monotonic() + timeout_s, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=10) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.25)
    raise RouterankError(
        f"the Ray Serve proxy did not route to the replicas within {timeout_s:g} s ({last or 'no answer'})",
        fix="check `ray status` and the replicas' logs; a busy machine may need fewer replicas",
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class RayServed:
    """The app on Ray Serve with `replicas` replicas; `with RayServed(config, replicas=2, port=0) as url:` ...

    ray: where Ray runs, as `routerank.scale.options.ray_options` reads it (None: a local Ray, or the one this
    process already joined). host/port: where Serve's proxy listens (default: the config's; port 0 picks a free
    one). cpus_per_replica: each replica's CPU reservation; None gives min(1, cluster CPUs / replicas), so any
    number of replicas fits on a small machine (fractions are reservations for Ray's scheduler, not limits).
    On exit the app is deleted; Serve itself (proxy and controller) is shut down too when this started it.
    """

    def __init__(
        self,
        config: ServeConfig,
        replicas: int = 1,
        *,
        ray: Any = None,
        host: str | None = None,
        port: int | None = None,
        cpus_per_replica: float | None = None,
    ):
        if not isinstance(replicas, int) or replicas < 1:
            raise RouterankError(
                f"--ray-replicas must be a whole number >= 1, got {replicas!r}",
                fix="pass --ray-replicas 2 (or more) for Ray Serve, or leave it out to serve with uvicorn alone",
            )
        if cpus_per_replica is not None and cpus_per_replica <= 0:
            raise RouterankError(f"cpus_per_replica must be positive, got {cpus_per_replica!r}")
        self.config, self.replicas = config, replicas
        self.ray = ray
        self.host = host or config.server.host
        self.port = config.server.port if port is None else port
        self.cpus_per_replica = cpus_per_replica
        self.keys = load_api_keys(config.auth, config.path)  # fails here, before anything is deployed
        self.started_serve = False
        self.running = False

    @property
    def url(self) -> str:
        """The base URL of Serve's proxy, `http://host:port` (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _cpus(self, ray: Any) -> float:
        if self.cpus_per_replica is not None:
            return self.cpus_per_replica
        total = float(ray.cluster_resources().get("CPU", 1.0))
        return round(min(1.0, total / self.replicas), 3)

    def start(self) -> str:
        """Join or start Ray, start Serve's proxy, deploy the replicas and wait until all are ready; the URL."""
        options = ray_options(self.ray if self.ray not in (None, False) else True)
        ray = connect(options)
        # heavy, optional: Ray loads only when ray= asks for it
        from ray import serve

        cpus = self._cpus(ray)
        if options.address is None:
            free = float(ray.available_resources().get("CPU", 0.0))
            if cpus * self.replicas > free + 1e-9:
                raise RouterankError(
                    f"{self.replicas} replicas of {cpus:g} CPU need {cpus * self.replicas:g} CPUs; "
                    f"this local Ray has {free:g} free",
                    fix="use fewer replicas, or fewer CPUs per replica",
                )
        if self.port == 0:
            self.port = _free_port(self.host)
        self.started_serve = not serve.status().proxies
        serve.start(http_options={"host": self.host, "port": self.port})
        limits, server = self.config.limits, self.config.server
        deployment = serve.deployment(
            serve.ingress()(RouterankReplica),
            name=DEPLOYMENT,
            num_replicas=self.replicas,
            ray_actor_options={"num_cpus": cpus},
            max_ongoing_requests=2 * limits.max_concurrent_requests,
            max_queued_requests=limits.max_concurrent_requests,
            graceful_shutdown_timeout_s=server.shutdown_grace_s,
            max_constructor_retry_count=self.replicas,
        )
        log.info("routerank serve: deploying %d replicas (%g CPU each) on Ray Serve", self.replicas, cpus)
        try:
            serve.run(deployment.bind(self.config, self.keys, os.getcwd()), name=APP_NAME, route_prefix="/")
        except Exception as exc:
            why = _replica_error(serve) or str(exc).strip() or type(exc).__name__
            self._teardown(serve)
            raise RouterankError(
                f"the Ray Serve replicas did not start: {why}",
                fix="check the model specs by running `routerank serve --config` without --ray-replicas",
            ) from exc
        except BaseException:  # Ctrl-C while the replicas start: take down what was deployed
            self._teardown(serve)
            raise
        self.running = True
        try:
            _wait_routable(self.url)
        except BaseException:
            self.stop()
            raise
        log.info("routerank serve: %d replicas ready at %s", self.replicas, self.url)
        return self.url

    def _teardown(self, serve: Any) -> None:
        try:
            if self.started_serve:
                serve.shutdown()  # the app, its replicas (drained), the proxy and the controller
            else:
                serve.delete(APP_NAME)  # Serve was there before us: remove our app only
        finally:
            self.running = False

    def stop(self) -> None:
        """Delete the app (each replica drains its queue first), and shut Serve down if this started it."""
        if not self.running:
            return
        # heavy, optional: Ray loads only when ray= asks for it
        from ray import serve

        self._teardown(serve)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def run_on_ray(
    config: ServeConfig,
    replicas: int,
    *,
    ray: Any = None,
    host: str | None = None,
    port: int | None = None,
    cpus_per_replica: float | None = None,
    blocking: bool = True,
) -> RayServed:
    """Serve `config` on Ray Serve with `replicas` replicas; with `blocking`, until SIGINT/SIGTERM, then stop.

    Without `blocking` the returned `RayServed` is running, and its `stop()` ends it.
    """
    served = RayServed(config, replicas, ray=ray, host=host, port=port, cpus_per_replica=cpus_per_replica)
    if not blocking:
        served.start()
        return served
    done = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        done.set()
        if not served.running:  # still starting: abandon the start (its cleanup runs as the exception unwinds)
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = served.start()
        print(f"routerank serve: {replicas} Ray Serve replicas at {url} (Ctrl-C stops)", flush=True)
        while not done.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        served.stop()
    return served
