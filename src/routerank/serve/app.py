"""The FastAPI app: Cohere-compatible rerank (v1, v2), routing, search, health, readiness and metrics.

Models are loaded once, before the app is built (`load_models`), so a bad spec fails at start with the
spec layer's own error, and /ready means "every model is loaded and the server is not draining". Each model
gets one `Batcher`, which groups concurrent requests into token-budget batches (see batcher.py). A request
flows: guard (auth, body size, concurrency) -> schema check (422) -> limits (413) -> fit documents to the
window (truncate or chunk; never an error) -> batcher (429 when its queue is full) -> timeout (503).
Every error is JSON `{"message", "code"}`, and the message says what to change. An exception while scoring
fails that request alone (500); the worker and every other request carry on.
"""

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from routerank.api import Reranker, order
from routerank.data.types import Query, Ranking
from routerank.serve.batcher import Overloaded
from routerank.serve.config import ServeConfig, load_api_keys
from routerank.serve.guard import Guard
from routerank.serve.metrics import Metrics
from routerank.serve.schemas import (
    ApiVersion,
    BilledUnits,
    ErrorBody,
    Meta,
    RerankResponse,
    RerankResult,
    RerankV1Request,
    RerankV2Request,
    ResultDocument,
    RouteRequest,
    RouteResponse,
    RouteResult,
    SearchRequest,
    SearchResponse,
    SearchResult,
)
from routerank.serve.state import SearchIndex, ServedModel, ServeError, State, load_models, load_searches, served_model
from routerank.serve.text import max_per_owner

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations, and those name classes that
# the `_add_*` functions import (fastapi loads when an app is built, so `routerank serve`'s modules import without it).

log = logging.getLogger("routerank.serve")
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 413, 422, 429, 503)}
DOCS_PER_SEARCH_UNIT = 100


def _document_texts(documents: list, rank_fields: list[str] | None) -> list[str]:
    texts = []
    for i, doc in enumerate(documents):
        if isinstance(doc, str):
            texts.append(doc)
            continue
        fields = rank_fields or ["text"]
        missing = [f for f in fields if f not in doc]
        if missing:
            raise ServeError(
                422,
                f"documents[{i}] has no field {missing[0]!r}: send strings, objects with 'text', "
                "or name the fields to rank on in rank_fields",
            )
        texts.append(str(doc[fields[0]]) if len(fields) == 1 else "\n".join(f"{f}: {doc[f]}" for f in fields))
    return texts


async def _timed(state: State, awaitable):
    try:
        return await asyncio.wait_for(awaitable, state.config.server.request_timeout_s)
    except TimeoutError:
        raise ServeError(
            503,
            f"the request took longer than {state.config.server.request_timeout_s:g} s: "
            "send fewer documents per request, or retry when the server is less busy",
        ) from None
    except Overloaded as exc:
        if state.draining:
            raise ServeError(503, "the server is shutting down: retry on another instance or in a moment") from None
        raise ServeError(
            429, f"the server is busy ({exc}): retry after a moment, or send fewer requests at once"
        ) from None


def _check_limits(state: State, query: str, count: int) -> None:
    limits = state.config.limits
    if not state.ready or state.draining:
        raise ServeError(503, "the server is not ready (starting or shutting down): retry in a moment")
    if count > limits.max_documents:
        raise ServeError(
            413,
            f"{count} documents in one request; the limit is {limits.max_documents}: split them over several requests",
        )
    if len(query) > limits.max_query_chars:
        raise ServeError(
            413, f"the query is {len(query):,} characters; the limit is {limits.max_query_chars:,}: shorten it"
        )
    if not query.strip():
        raise ServeError(400, "the query is empty: send the text to rank the documents against")


async def _score_texts(
    state: State, model: ServedModel, query: str, texts: list[str], *, max_tokens: int, chunk: bool, max_chunks: int
) -> tuple[np.ndarray, int]:
    """Raw scores per document (max over its chunks) and the number of pieces scored; callers bound its time."""
    pieces = model.fitter.fit(query, texts, max_tokens_per_doc=max_tokens, chunk=chunk, max_chunks=max_chunks)
    if len(pieces.texts) > state.config.limits.max_queued_pairs:
        raise ServeError(
            413,
            f"this request needs {len(pieces.texts):,} model passes (documents and their chunks); "
            f"the queue holds {state.config.limits.max_queued_pairs:,}: send fewer documents, or fewer "
            "chunks per document",
        )
    if pieces.truncated:
        state.metrics.truncated.labels(model.config.name).inc(pieces.truncated)
    experts = None
    if model.reranker.has_router:
        decisions = await model.batcher.call(model.reranker.route, [query])
        experts = [decisions[0].choice] * len(pieces.texts)
    pairs = [(query, text) for text in pieces.texts]
    state.metrics.queue_pairs.labels(model.config.name).set(model.batcher.pending_pairs + len(pairs))
    scores = await model.batcher.score(pairs, pieces.tokens, experts)
    state.metrics.queue_pairs.labels(model.config.name).set(model.batcher.pending_pairs)
    return np.asarray(max_per_owner(scores.tolist(), pieces.owners, len(texts))), len(pieces.texts)


async def _rerank(
    state: State,
    body: RerankV1Request | RerankV2Request,
    version: str,
    max_chunks_per_doc: int | None = None,
    rank_fields: list[str] | None = None,
) -> RerankResponse:
    model = state.model(body.model)
    _check_limits(state, body.query, len(body.documents))
    texts = _document_texts(body.documents, rank_fields)
    chunk = model.config.long_documents == "chunk" or (max_chunks_per_doc or 1) > 1
    scores, pieces = await _timed(
        state,
        _score_texts(
            state,
            model,
            body.query,
            texts,
            max_tokens=body.max_tokens_per_doc or model.config.max_tokens_per_doc,
            chunk=chunk,
            max_chunks=max_chunks_per_doc or model.config.max_chunks_per_doc,
        ),
    )
    relevance = model.reranker.relevance(scores)
    best = order(scores)[: body.top_n or len(texts)]
    results = [
        RerankResult(
            index=i,
            relevance_score=float(relevance[i]),
            document=ResultDocument(text=texts[i]) if body.return_documents else None,
        )
        for i in best
    ]
    meta = Meta(
        api_version=ApiVersion(version=version),
        billed_units=BilledUnits(search_units=max(1, math.ceil(pieces / DOCS_PER_SEARCH_UNIT))),
    )
    return RerankResponse(id=str(uuid.uuid4()), results=results, meta=meta)


def _error(code: int, message: str) -> "JSONResponse":
    from fastapi.responses import JSONResponse  # heavy, optional serving extra: loaded by create_app already

    return JSONResponse({"message": message, "code": code}, status_code=code)


def _validation_message(exc: "RequestValidationError") -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts) + " (the schema is at /docs)"


async def _route(state: State, body: RouteRequest) -> RouteResponse:
    """R2R's expert choice for each query of `body`, from the named model or the first routed one."""
    routed = [n for n, m in state.models.items() if m.reranker.has_router]
    model = state.model(body.model or (routed[0] if routed else None))
    if not model.reranker.has_router:
        raise ServeError(
            400,
            f"model {model.config.name!r} has no router: /v1/route needs an r2r:<bank> model "
            f"(routed models here: {routed or 'none'})",
        )
    for query in body.queries:
        _check_limits(state, query, 0)
    decisions = await _timed(state, model.batcher.call(model.reranker.route, body.queries))
    return RouteResponse(
        id=str(uuid.uuid4()),
        model=model.config.name,
        results=[
            RouteResult(query_index=i, choice=d.choice, confidence=d.confidence, probabilities=d.probabilities)
            for i, d in enumerate(decisions)
        ],
    )


async def _search(state: State, body: SearchRequest) -> SearchResponse:
    """Retrieve from the requested index, then rerank its top `depth` with the index's model (if it has one)."""
    if not state.searches:
        raise ServeError(400, "this server has no search index: add a [search.NAME] table to its config")
    name = body.index or next(iter(state.searches))
    if name not in state.searches:
        raise ServeError(400, f"unknown index {name!r}: this server has {sorted(state.searches)}")
    index = state.searches[name]
    _check_limits(state, body.query, 0)
    run = await asyncio.to_thread(index.retriever.search, [Query("q0", body.query)], index.config.depth)
    ranking = run.rankings.get("q0", Ranking())
    docs = [index.corpus[d] for d in ranking.doc_ids]
    retrieval = list(ranking.scores)
    model = state.model(index.config.model) if index.config.model else None
    if model is None or not docs:
        scores, relevance = np.asarray(retrieval), np.asarray(retrieval)
    else:
        fitted = _score_texts(
            state,
            model,
            body.query,
            [d.full_text for d in docs],
            max_tokens=model.config.max_tokens_per_doc,
            chunk=model.config.long_documents == "chunk",
            max_chunks=model.config.max_chunks_per_doc,
        )
        scores, _ = await _timed(state, fitted)
        relevance = model.reranker.relevance(scores)
    results = [
        SearchResult(
            doc_id=docs[i].id,
            relevance_score=float(relevance[i]),
            retrieval_score=retrieval[i],
            title=docs[i].title if body.return_documents else None,
            text=docs[i].text if body.return_documents else None,
        )
        for i in order(scores)[: body.top_n]
    ]
    return SearchResponse(id=str(uuid.uuid4()), index=name, model=index.config.model or None, results=results)


def _build_state(
    config: ServeConfig, models: dict[str, Reranker] | None, searches: dict[str, tuple[Any, Any]] | None
) -> State:
    """The shared server state: every model served with its own batcher, every search index, fresh metrics."""
    metrics = Metrics()
    loaded = models if models is not None else load_models(config)
    served = {name: served_model(config, name, loaded[name], metrics) for name in config.models}
    found = searches if searches is not None else load_searches(config)
    return State(
        config,
        served,
        {n: SearchIndex(config.search[n], *found[n]) for n in config.search},
        metrics,
        aliases={m.spec: n for n, m in config.models.items()},
    )


def _lifespan(state: State) -> Callable[["FastAPI"], AbstractAsyncContextManager[None]]:
    """The app's lifespan: start every batcher and mark ready; on shutdown, drain and stop the batchers."""

    @asynccontextmanager
    async def lifespan(_app: "FastAPI") -> AsyncIterator[None]:
        for model in state.models.values():
            await model.batcher.start()
        state.ready = True
        log.info("routerank serve: ready with models %s", sorted(state.models))
        yield
        state.draining = True
        for model in state.models.values():
            await model.batcher.stop(state.config.server.shutdown_grace_s)

    return lifespan


def _add_error_handlers(app: "FastAPI") -> None:
    """Turn every error (ours, schema, HTTP, crash) into a JSON `{"message", "code"}` response."""
    # heavy, optional serving extra; the handlers' annotations need these names when they are defined
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    # heavy: the server's framework loads only when an app is built
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(ServeError)
    async def serve_error(_request: Request, exc: ServeError) -> JSONResponse:
        return _error(exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return _error(
            500,
            f"internal error ({type(exc).__name__}); this request failed alone and the server "
            "keeps running: retry, and report it if it repeats",
        )


def _add_rerank_routes(app: "FastAPI", state: State) -> None:
    """POST /v1/rerank and /v2/rerank (Cohere-compatible)."""

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=ERRORS)
    async def rerank_v1(body: RerankV1Request) -> RerankResponse:
        """Cohere v1 rerank: documents as strings or objects; `return_documents`; `max_chunks_per_doc`."""
        return await _rerank(state, body, "1", body.max_chunks_per_doc, body.rank_fields)

    @app.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=ERRORS)
    async def rerank_v2(body: RerankV2Request) -> RerankResponse:
        """Cohere v2 rerank: documents as strings; `max_tokens_per_doc` cuts long ones."""
        return await _rerank(state, body, "2")


def _add_route_and_search_routes(app: "FastAPI", state: State) -> None:
    """POST /v1/route (R2R's expert choice) and /v1/search (retrieve, then rerank)."""

    @app.post("/v1/route", response_model=RouteResponse, responses=ERRORS)
    async def route(body: RouteRequest) -> RouteResponse:
        """R2R's expert choice, with its probabilities, for each query."""
        return await _route(state, body)

    @app.post("/v1/search", response_model=SearchResponse, response_model_exclude_none=True, responses=ERRORS)
    async def search(body: SearchRequest) -> SearchResponse:
        """Retrieve from a configured index, then rerank its top `depth` with the index's model."""
        return await _search(state, body)


def _add_health_routes(app: "FastAPI", state: State) -> None:
    """GET /health (alive), /ready (models loaded, not draining) and /metrics (Prometheus)."""
    # heavy, optional serving extra; the routes' return annotations need these names when they are defined
    from fastapi.responses import JSONResponse, Response

    @app.get("/health")
    async def health() -> dict:
        """Alive: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"model": ErrorBody}})
    async def ready() -> Response:
        """Ready: every model is loaded and the server is not shutting down."""
        if not state.ready or state.draining:
            return _error(503, "not ready: models are loading or the server is shutting down")
        return JSONResponse(
            {
                "status": "ready",
                "models": {n: m.config.spec for n, m in state.models.items()},
                "backends": {n: m.reranker.runtime for n, m in state.models.items()},
                "search": sorted(state.searches),
            }
        )

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format."""
        for name, model in state.models.items():
            state.metrics.queue_pairs.labels(name).set(model.batcher.pending_pairs)
            state.metrics.backend.labels(name, model.reranker.runtime).set(1)
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


def create_app(
    config: ServeConfig,
    models: dict[str, Reranker] | None = None,
    searches: dict[str, tuple[Any, Any]] | None = None,
    *,
    keys: list[str] | None = None,
) -> Guard:
    """The ASGI app for `config`; pass `models`/`searches` already loaded to share them (tests, benchmarks).

    `keys` are the API keys when the caller has already read them (Ray Serve replicas get them from the driver);
    by default they are read from the config's env var and file.
    """
    from fastapi import FastAPI  # heavy, optional serving extra: fastapi loads only when an app is built

    keys = keys if keys is not None else load_api_keys(config.auth, config.path)
    state = _build_state(config, models, searches)
    app = FastAPI(
        title="routerank",
        version="0.1.0",
        lifespan=_lifespan(state),
        description="Cohere-compatible reranking, R2R routing and search over routerank models.",
    )
    app.state.routerank = state
    _add_error_handlers(app)
    _add_rerank_routes(app, state)
    _add_route_and_search_routes(app, state)
    _add_health_routes(app, state)
    return Guard(
        app,
        metrics=state.metrics,
        keys=keys,
        max_body_bytes=config.limits.max_body_bytes,
        max_concurrent=config.limits.max_concurrent_requests,
    )
