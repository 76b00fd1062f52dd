"""Routers: which domain expert judges a query (R2R), and which retriever, if any, serves it (R3AG).

The R3AG model itself (`routerank.route.r3ag`) imports torch, so it is not imported here.
"""

from routerank.route.base import GENERALIST, RouteDecision, Router
from routerank.route.baselines import FixedRouter, NecessityRouter
from routerank.route.expert import CentroidRouter, OracleRouter, RandomRouter, SoftmaxRouter, calibrate_threshold
from routerank.route.labels import RouteScores, RoutingLabels, score_routes
from routerank.route.pool import PoolConfig, PoolMember, RetrieverPool, RoutedRetriever

__all__ = [
    "GENERALIST",
    "CentroidRouter",
    "FixedRouter",
    "NecessityRouter",
    "OracleRouter",
    "PoolConfig",
    "PoolMember",
    "RandomRouter",
    "RetrieverPool",
    "RouteDecision",
    "RouteScores",
    "RoutedRetriever",
    "Router",
    "RoutingLabels",
    "SoftmaxRouter",
    "calibrate_threshold",
    "score_routes",
]
