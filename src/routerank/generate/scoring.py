"""Generated answers scored against the queries' gold `answers`: SQuAD EM and token F1 from `evaluate.qa`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from routerank.data.types import Query
from routerank.errors import RouterankError
from routerank.evaluate.qa import exact_match, token_f1
from routerank.generate.generator import Answer


@dataclass(frozen=True)
class QAScores:
    """Mean EM and F1 over the queries, and each query's (EM, F1)."""

    em: float
    f1: float
    n: int
    per_query: dict[str, tuple[float, float]] = field(default_factory=dict)


def require_answers(queries: Sequence[Query], source: str = "these queries") -> None:
    """Refuse queries without gold answers before any model is loaded."""
    missing = [q.id for q in queries if not q.answers]
    if missing:
        raise RouterankError(
            f"{len(missing)} of {len(queries)} queries in {source} have no gold answers, e.g. {missing[:3]}",
            fix='use a QA dataset (squad-dev, xquad-en, pubmedqa, tatqa), or add "answers" to queries.jsonl',
        )


def score_answers(queries: Sequence[Query], answers: Sequence[Answer]) -> QAScores:
    """Mean SQuAD EM and token F1 of the answers against the queries' gold answers, with each query's pair;
    `answers[i]` must answer `queries[i]`."""
    require_answers(queries)
    if len(queries) != len(answers):
        raise RouterankError(f"got {len(queries)} queries but {len(answers)} answers")
    per_query = {}
    for query, answer in zip(queries, answers, strict=True):
        if answer.query_id != query.id:
            raise RouterankError(f"answer for {answer.query_id!r} stands where query {query.id!r} should")
        per_query[query.id] = (exact_match(answer.text, query.answers), token_f1(answer.text, query.answers))
    n = len(per_query)
    em = sum(e for e, _ in per_query.values()) / n if n else 0.0
    f1 = sum(f for _, f in per_query.values()) / n if n else 0.0
    return QAScores(em, f1, n, per_query)
