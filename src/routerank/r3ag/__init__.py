"""R3AG: route each query to a retriever of a pool, or to none (R0), trained on answer-utility labels.

One package holds the whole method:
- `pool`: the retriever pool (`PoolConfig`, `RetrieverPool`, `RoutedRetriever`, the `r3ag:` spec's retriever)
- `labels`: quality and utility labels per query and member (`RoutingLabels`), and scoring routes against them
- `labelling`: building those labels (retrieve, answer with the generator, score; resumable)
- `judge`: the LLM relevance judge that can stand in for qrels
- `router`: the router itself (two encoders fused by attention, routing by cosine); torch loads when one is built
- `trainer`: its trainer on the labels; torch loads when it trains
- `baselines`: fixed, necessity and query-classifier routers with the same interface

Nothing here imports torch at import time: `router` defines its torch network on first use (`net_class`).
"""

from routerank.r3ag.baselines import FixedRouter, NecessityRouter
from routerank.r3ag.labels import RouteScores, RoutingLabels, score_routes
from routerank.r3ag.pool import PoolConfig, PoolMember, RetrieverPool, RoutedRetriever

__all__ = [
    "FixedRouter",
    "NecessityRouter",
    "PoolConfig",
    "PoolMember",
    "RetrieverPool",
    "RouteScores",
    "RoutedRetriever",
    "RoutingLabels",
    "score_routes",
]
