"""The Router role: map each query to a decision (a domain expert, a retriever, or the generalist).

`RoutedScorer` is the role of a reranker built on a router (R2R's `R2RReranker`): it routes each query, then
scores (query, document) pairs with the expert each query was routed to. `routerank.Reranker` and the server
use a routed backend through that role only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

__all__ = ["GENERALIST", "RouteDecision", "RoutedScorer", "Router", "count_choices"]

GENERALIST = "generalist"  # the bare backbone, adapters off: no domain expert is likely enough


@dataclass(frozen=True)
class RouteDecision:
    """One query's routing: its id, the label chosen, the router's confidence in it, and every label's probability."""

    query_id: str
    choice: str  # a domain label, or GENERALIST when no domain is likely enough
    confidence: float
    probabilities: dict[str, float]


def count_choices(decisions: Iterable[RouteDecision]) -> dict[str, int]:
    """How many decisions chose each expert (or GENERALIST): what a routed run reports beside its scores."""
    return dict(Counter(decision.choice for decision in decisions))


@runtime_checkable
class Router(Protocol):
    """Anything with a `name`, the `labels` it chooses among, and `route`; R2R's and R3AG's routers fit it."""

    name: str
    labels: Sequence[str]

    def route(self, queries) -> list[RouteDecision]:
        """One decision per query, in order (queries as `Query` objects, a mapping, or plain strings)."""


@runtime_checkable
class RoutedScorer(Protocol):
    """A reranker that routes each query to one of its experts, then scores pairs with the chosen expert (R2R).

    `router` is the Router it routes with.
    """

    router: Router

    def route(self, queries) -> list[RouteDecision]:
        """One decision per query, in order (queries as `Query` objects, a mapping, or plain strings)."""

    def score_pairs(self, pairs: Sequence[tuple[str, str]], experts: Sequence[str] | None = None) -> np.ndarray:
        """Raw scores of (query, document) pairs of any mix of queries; `experts` gives each pair's decision
        (a `RouteDecision.choice`), or None to route each distinct query first."""

    def score_kind(self) -> str:
        """What the raw scores are: "probability" (a yes/no LLM judge) or "logit" (a cross-encoder)."""
