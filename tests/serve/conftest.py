from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

KEY = "test-key-0123456789"


@pytest.fixture(scope="session")
def ce(fresh_ce):
    import routerank

    return routerank.Reranker(f"ce:{fresh_ce}", device="cpu", progress=False)


def config_for(ce_folder, **sections):
    """A ServeConfig with one model named `ce` and a test key, plus any section overrides."""
    from routerank.serve.config import parse_config

    raw = {"models": {"ce": {"spec": f"ce:{ce_folder}"}}, "auth": {"api_keys_env": "ROUTERANK_TEST_KEYS"}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return parse_config(raw)


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("ROUTERANK_TEST_KEYS", KEY)
    return {"Authorization": f"Bearer {KEY}"}


@contextmanager
def serving(config, ce, searches=None, models=None):
    """A server on 127.0.0.1 at a free port, sharing the loaded model(s); stops (and drains) on exit."""
    from routerank.serve.app import create_app
    from routerank.serve.server import BackgroundServer

    app = create_app(config, models=models or {"ce": ce}, searches=searches or {})
    server = BackgroundServer(app, config)
    with server as url:
        yield url, server, app


def wait_until(predicate, timeout: float = 30.0) -> None:
    """Poll until `predicate()` holds: tests wait for a server state, never for a fixed sleep (CPUs may be busy)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the server never reached the expected state"
        time.sleep(0.005)


def pending(app, model: str = "ce") -> int:
    """Pairs admitted and not yet answered by the model's batcher."""
    return app.app.state.routerank.models[model].batcher.pending_pairs


def expected_order(ce, query, docs):
    """The order the cross-encoder itself gives, scoring the same pairs directly: best first, ties by index."""
    scores = ce.backend.score_pairs([(query, d) for d in docs])
    return sorted(range(len(docs)), key=lambda i: (-scores[i], i)), 1 / (1 + np.exp(-scores))
