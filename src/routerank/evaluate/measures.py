"""IR measures via ir_measures (TREC-comparable), with per-query values.

Every judged query counts: a query the run left empty (or omitted) scores 0 instead of vanishing
from the mean, which is what makes a null retriever's score honest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from routerank.data.types import Qrels, Run
from routerank.errors import SpecError

DEFAULT_MEASURES = "nDCG@10 MRR@10 R@100"


def parse_measures(spec: str | Iterable[str]) -> list:
    """ir_measures measure objects for names given as a string (space- or comma-separated) or a list;
    an empty spec or an unknown name raises `SpecError`."""
    # deferred: ir_measures loads its providers (~0.3 s) only when something is evaluated
    import ir_measures

    names = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec)
    if not names:
        raise SpecError("no measures given", fix=f"e.g. --measures '{DEFAULT_MEASURES}'")
    parsed = []
    for name in names:
        try:
            parsed.append(ir_measures.parse_measure(name))
        except (ValueError, NameError, TypeError, SyntaxError, KeyError):
            raise SpecError(
                f"unknown measure {name!r}", fix="use ir_measures names, e.g. nDCG@10 RR@10 R@100 AP"
            ) from None
    return parsed


@dataclass(frozen=True)
class Evaluation:
    """Mean and per-query values, keyed by the measure names as the user wrote them."""

    run_name: str
    means: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False)  # measure → query → value

    def __getitem__(self, measure: str) -> float:
        return self.means[measure]

    @property
    def num_queries(self) -> int:
        """The number of queries evaluated (those with a relevant judgment)."""
        return len(next(iter(self.per_query.values()), {}))


def evaluate(run: Run, qrels: Qrels, measures: str | Sequence[str] = DEFAULT_MEASURES) -> Evaluation:
    """Mean and per-query values of each measure over the queries with at least one relevant judgment;
    queries the run left empty or omitted score 0."""
    # deferred: ir_measures loads its providers (~0.3 s) only when something is evaluated
    import ir_measures

    names = measures.replace(",", " ").split() if isinstance(measures, str) else list(measures)
    parsed = parse_measures(names)
    judged = [q for q in qrels if any(rel > 0 for rel in qrels[q].values())]
    qrels_dict = {q: dict(qrels[q]) for q in judged}
    run_dict = {q: run[q].as_dict() for q in judged if q in run and len(run[q])}
    per_query = {name: dict.fromkeys(judged, 0.0) for name in names}
    by_measure = {m: name for m, name in zip(parsed, names, strict=True)}
    if run_dict:
        for metric in ir_measures.iter_calc(parsed, qrels_dict, run_dict):
            per_query[by_measure[metric.measure]][metric.query_id] = float(metric.value)
    means = {name: (sum(values.values()) / len(values) if values else 0.0) for name, values in per_query.items()}
    return Evaluation(run.name, means, per_query)
