"""Request and response bodies. The rerank ones follow Cohere's v1 and v2 schemas field for field.

v1: documents are strings or objects (`text`, or the fields named by `rank_fields`); `return_documents`
echoes them back as `{"text": ...}`; `max_chunks_per_doc` turns on chunked scoring. v2: documents are
strings; `max_tokens_per_doc` cuts long ones. Both answer `id`, `results[{index, relevance_score,
document?}]` and `meta{api_version, billed_units{search_units}}`. Unknown fields are ignored, as Cohere's
clients send some (e.g. `priority`) that change nothing here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RerankV1Request(_Request):
    """A Cohere v1 rerank request: documents as strings or objects, optionally chunked, optionally echoed back."""

    model: str | None = Field(None, description="a model name from the server config; default: the first one")
    query: str
    documents: list[str | dict[str, Any]]
    top_n: int | None = Field(None, ge=1, description="return only the best N (default: all)")
    rank_fields: list[str] | None = Field(None, description="object fields to rank on, in order (default: text)")
    return_documents: bool = False
    max_chunks_per_doc: int | None = Field(None, ge=1, description="> 1: score chunks, keep each doc's best")
    max_tokens_per_doc: int | None = Field(None, ge=1)


class RerankV2Request(_Request):
    """A Cohere v2 rerank request: a model, a query and its documents, with long documents cut to a token budget."""

    model: str
    query: str
    documents: list[str | dict[str, Any]]
    top_n: int | None = Field(None, ge=1)
    max_tokens_per_doc: int | None = Field(None, ge=1, description="long documents are cut to this many tokens")
    return_documents: bool = False  # not in Cohere's v2; accepted for clients written against v1


class ResultDocument(BaseModel):
    """A document echoed back in a rerank result, as the text that was scored."""

    text: str


class RerankResult(BaseModel):
    """One ranked document: its index in the request, its relevance score in [0, 1], and the document if asked."""

    index: int
    relevance_score: float
    document: ResultDocument | None = None


class ApiVersion(BaseModel):
    """The API version a rerank response follows ("1" or "2"), as Cohere reports it."""

    version: str
    is_experimental: bool = False


class BilledUnits(BaseModel):
    """Cohere's billing count: one search unit per 100 scored documents (or chunks), at least one per request."""

    search_units: float


class Meta(BaseModel):
    """The metadata of a rerank response: API version, billed units, and any warnings."""

    api_version: ApiVersion
    billed_units: BilledUnits
    warnings: list[str] | None = None


class RerankResponse(BaseModel):
    """The answer to a rerank request: an id, the documents best first, and metadata."""

    id: str
    results: list[RerankResult]
    meta: Meta


class RouteRequest(_Request):
    """A /v1/route request: the queries to route, and the routed (R2R) model to use (default: the first one)."""

    model: str | None = None
    queries: list[str] = Field(..., min_length=1)


class RouteResult(BaseModel):
    """One query's routing: its index in the request, the expert chosen (or "generalist"), the router's confidence,
    and each expert's probability."""

    query_index: int
    choice: str
    confidence: float
    probabilities: dict[str, float]


class RouteResponse(BaseModel):
    """The answer to a route request: an id, the model that routed, and one result per query in request order."""

    id: str
    model: str
    results: list[RouteResult]


class SearchRequest(_Request):
    """A /v1/search request: a query against a configured search index, for its top N documents."""

    index: str | None = Field(None, description="a [search] name from the server config; default: the first")
    query: str
    top_n: int = Field(10, ge=1, le=1000)
    return_documents: bool = True


class SearchResult(BaseModel):
    """One search hit: the document id, its relevance score, its first-stage score, and its title and text if asked."""

    doc_id: str
    relevance_score: float = Field(description="the reranker's score in [0, 1]; the retrieval score with no model")
    retrieval_score: float
    title: str | None = None
    text: str | None = None


class SearchResponse(BaseModel):
    """The answer to a search request: an id, the index and reranking model used, and the documents best first."""

    id: str
    index: str
    model: str | None
    results: list[SearchResult]


class ErrorBody(BaseModel):
    """The body of every error response: a message that says what to change, and the HTTP status code."""

    message: str
    code: int
