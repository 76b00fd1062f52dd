"""Routers: which domain expert judges a query (R2R), and which retriever, if any, serves it (R3AG)."""

from routerank.route.base import GENERALIST, RouteDecision, Router
from routerank.route.expert import CentroidRouter, OracleRouter, RandomRouter, SoftmaxRouter, calibrate_threshold

__all__ = [
    "GENERALIST",
    "CentroidRouter",
    "OracleRouter",
    "RandomRouter",
    "RouteDecision",
    "Router",
    "SoftmaxRouter",
    "calibrate_threshold",
]
