"""Serving: a Cohere-compatible HTTP rerank server over routerank models (`routerank serve --config serve.toml`).

    config.py    the TOML config, checked on load; API keys
    text.py      fit long documents to the window (truncate, or chunk and keep the best chunk)
    batcher.py   batching across requests by token budget, with a bounded queue
    guard.py     auth, body-size and concurrency limits, per-request metrics (outer ASGI layer)
    schemas.py   Cohere v1/v2 request and response bodies; route and search bodies
    state.py     loaded models (each with its fitter and batcher), search indexes, readiness
    app.py       the FastAPI routes
    server.py    uvicorn in the foreground, or on a loopback thread for tests and benchmarks
    ray_serve.py the same app as a Ray Serve deployment of N replicas (`routerank serve --ray-replicas N`)

FastAPI, uvicorn and prometheus-client come with `pip install 'routerank[serve]'`, Ray Serve with `routerank[ray]`;
importing this package does not import them.
"""
