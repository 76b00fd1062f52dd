"""The Router role: map each query to a decision (a domain expert, a retriever, or the generalist)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["GENERALIST", "RouteDecision", "Router"]

GENERALIST = "generalist"  # the bare backbone, adapters off: no domain expert is likely enough


@dataclass(frozen=True)
class RouteDecision:
    query_id: str
    choice: str  # a domain label, or GENERALIST when no domain is likely enough
    confidence: float
    probabilities: dict[str, float]


@runtime_checkable
class Router(Protocol):
    name: str
    labels: Sequence[str]

    def route(self, queries) -> list[RouteDecision]: ...
