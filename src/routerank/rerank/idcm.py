"""IDCM, the intra-document cascade (after Hofstätter et al., SIGIR 2021).

A long document is cut into passages; a cheap selector keeps the k best passages of each document, an expensive
pointwise scorer reads only those, and the document's score aggregates its passage scores.

    idcm:<selector>,<scorer-spec>[,k=4][,size=128][,stride=96][,aggregate=max]

    selector   bm25 | minilm | dense:<model-spec> | first | learned:<file> (distilled, see passage_select)
               | all (alias full: score every passage, the baseline)
    scorer     any pair-scoring reranker spec: ce:<folder>, pointwise:smollm2, qlm, ...
    aggregate  max | mean-top<N> (mean of the N best passages) | softmax (softmax(s / temperature)-weighted sum)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from routerank.data.types import Query, Ranking
from routerank.errors import RouterankError, SpecError
from routerank.rerank.base import BaseReranker, DocsLike, PairScoringReranker, as_documents, as_query
from routerank.rerank.passage_select import PassageSelector, make_selector
from routerank.rerank.passage_select import top_k as best_passages
from routerank.rerank.passages import DEFAULT_SIZE, DEFAULT_STRIDE, Passage, check_window, split_passages
from routerank.rerank.registry import make_reranker

DEFAULT_K = 4
OWN_OPTIONS = {"k": int, "size": int, "stride": int, "aggregate": str, "temperature": float}


@dataclass(frozen=True)
class Aggregation:
    """How passage scores become one document score."""

    kind: str = "max"
    top: int = 1
    temperature: float = 1.0

    @classmethod
    def parse(cls, text: str, temperature: float = 1.0) -> Aggregation:
        """`max`, `mean-top<N>` (N >= 1) or `softmax` (with a positive `temperature`) as an Aggregation; a SpecError
        for anything else."""
        text = text.strip()
        if text == "max":
            return cls("max")
        if text == "softmax":
            if temperature <= 0:
                raise SpecError(f"softmax temperature must be positive, got {temperature}")
            return cls("softmax", temperature=temperature)
        if text.startswith("mean-top") and text[len("mean-top") :].isdigit() and int(text[len("mean-top") :]) >= 1:
            return cls("mean-top", top=int(text[len("mean-top") :]))
        raise SpecError(f"unknown IDCM aggregation {text!r}", fix="use max, mean-top2 (any N), or softmax")

    @property
    def name(self) -> str:
        """The aggregation as a spec writes it: `max`, `mean-top<N>` or `softmax`."""
        return f"mean-top{self.top}" if self.kind == "mean-top" else self.kind

    def __call__(self, scores: np.ndarray) -> float:
        if scores.size == 0:
            raise ValueError("no passage scores to aggregate")
        if self.kind == "max":
            return float(scores.max())
        if self.kind == "mean-top":
            return float(np.sort(scores)[::-1][: self.top].mean())
        logits = (scores - scores.max()) / self.temperature
        weights = np.exp(logits) / np.exp(logits).sum()
        return float(weights @ scores)


@dataclass
class CascadeStats:
    """Running counters: how much of each document the expensive scorer actually read."""

    docs: int = 0
    passages: int = 0
    scored_pairs: int = 0
    select_seconds: float = 0.0
    score_seconds: float = 0.0

    @property
    def saving(self) -> float:
        """Fraction of passages the scorer did not have to read."""
        return 1.0 - self.scored_pairs / self.passages if self.passages else 0.0

    def as_dict(self) -> dict[str, float]:
        """The counters, the saving and the seconds, rounded for a report."""
        return {
            "docs": self.docs,
            "passages": self.passages,
            "scored_pairs": self.scored_pairs,
            "saving": round(self.saving, 4),
            "select_seconds": round(self.select_seconds, 3),
            "score_seconds": round(self.score_seconds, 3),
        }


class IDCMReranker(BaseReranker):
    """`idcm:<selector>,<scorer-spec>[,k=4,size=128,stride=96,aggregate=max]`: each document is cut into word
    windows, the selector keeps its k best, the pair scorer reads only those, and the document's score aggregates
    theirs (module docstring).

    selector: a selector spec (`bm25`, `minilm`, `dense:<model-spec>`, `first`, `learned:<file>`) or a selector
        object; None, `all` or `full` sends every passage to the scorer.
    scorer: a PairScoringReranker, which scores each (query, passage) pair on its own.
    k: passages per document that the scorer reads.
    size, stride: window length and step in words (overlap = size - stride).
    aggregate: max, mean-top<N> (mean of the N best), or softmax (weighted by softmax(score / temperature)).
    temperature: the softmax aggregation's temperature, positive."""

    kind = "idcm"

    def __init__(
        self,
        selector: str | PassageSelector | None,
        scorer: PairScoringReranker,
        *,
        k: int = DEFAULT_K,
        size: int = DEFAULT_SIZE,
        stride: int = DEFAULT_STRIDE,
        aggregate: str = "max",
        temperature: float = 1.0,
    ):
        if not isinstance(scorer, PairScoringReranker):
            raise SpecError(
                f"IDCM's scorer must score each (query, passage) pair on its own (a PairScoringReranker), got "
                f"{type(scorer).__name__}",
                fix="use e.g. ce:<folder> or pointwise:smollm2 as the scorer",
            )
        if k < 1:
            raise SpecError(f"IDCM needs k >= 1 passages per document, got {k}")
        check_window(size, stride)
        self.selector = make_selector(selector) if isinstance(selector, str) else selector
        self.scorer, self.k, self.size, self.stride = scorer, k, size, stride
        self.aggregation = Aggregation.parse(aggregate, temperature)
        self.stats = CascadeStats()
        selector_name = self.selector.name if self.selector is not None else "all"
        knobs = "" if self.selector is None else f",k={k}"
        if self.aggregation.name != "max":
            knobs += f",aggregate={self.aggregation.name}"
        self.name = f"idcm:{selector_name},{getattr(scorer, 'name', type(scorer).__name__)}{knobs}"

    @classmethod
    def from_spec(cls, arg: str, **options) -> IDCMReranker:
        """`bm25,ce:/m,k=4`: the first part is the selector, trailing key=value parts are IDCM's, the rest the scorer.

        Keyword options that IDCM does not know (device, progress, ...) go to the scorer.
        """
        selector, _, rest = arg.partition(",")
        parts = [p.strip() for p in rest.split(",")] if rest else []
        inline: dict[str, object] = {}
        while parts and parts[-1].partition("=")[0].strip() in OWN_OPTIONS and "=" in parts[-1]:
            key, _, value = parts.pop().partition("=")
            inline[key.strip()] = value.strip()
        scorer_spec = ",".join(parts).strip()
        if not selector.strip() or not scorer_spec:
            raise SpecError(
                f"idcm needs a selector and a scorer, got 'idcm:{arg}'",
                fix="e.g. idcm:bm25,ce:/path/to/cross-encoder,k=4",
            )
        own = {key: options.pop(key) for key in list(options) if key in OWN_OPTIONS}
        own.update(inline)
        typed = {key: _typed(key, value, arg) for key, value in own.items()}
        passage_selector = make_selector(selector)  # a bad selector fails before the scorer loads

        return cls(passage_selector, make_reranker(scorer_spec, **options), **typed)

    # cascade ---------------------------------------------------------------------------------------------------

    def select(self, query: str, docs: Sequence[Sequence[Passage]]) -> list[list[Passage]]:
        """The passages of each document the scorer will read: the selector's k best, or all of them."""
        if self.selector is None:
            return [list(passages) for passages in docs]
        scores = self.selector.score(query, docs)
        return [[passages[i] for i in best_passages(s, self.k)] for passages, s in zip(docs, scores, strict=True)]

    def score_passages(self, query: str, passages: Sequence[Passage]) -> np.ndarray:
        """The scorer's score for each passage against `query`, in order; counted in `stats.scored_pairs`."""
        if not passages:
            return np.zeros(0)
        scores = np.asarray(self.scorer.score_pairs([(query, p.full_text) for p in passages]), dtype=np.float64)
        if scores.shape != (len(passages),):
            raise RouterankError(
                f"scorer {self.scorer.name!r} returned {scores.shape} scores for {len(passages)} passages",
                fix="its score_pairs must return one score per pair",
            )
        self.stats.scored_pairs += len(passages)
        return scores

    def rerank(self, query: Query | str, docs: DocsLike, top_k: int | None = None) -> Ranking:
        """`docs` by their aggregated passage scores, best first; a document with no text goes last. `top_k` keeps
        the best k. Adds to `stats`."""
        query, documents = as_query(query), as_documents(docs)
        started = time.perf_counter()
        split = [split_passages(d, self.size, self.stride) for d in documents]
        chosen = self.select(query.text, split)
        selected = time.perf_counter()
        flat = [p for passages in chosen for p in passages]
        scores = self.score_passages(query.text, flat)
        self.stats.select_seconds += selected - started
        self.stats.score_seconds += time.perf_counter() - selected
        self.stats.docs += len(documents)
        self.stats.passages += sum(len(p) for p in split)
        doc_scores, start = {}, 0
        for doc, passages in zip(documents, chosen, strict=True):
            if passages:
                doc_scores[doc.id] = self.aggregation(scores[start : start + len(passages)])
            start += len(passages)
        floor = min(doc_scores.values(), default=1.0) - 1.0
        for doc in documents:
            doc_scores.setdefault(doc.id, floor)  # a document with no text at all goes last
        return Ranking.from_scores(doc_scores, top_k)


def _typed(key: str, value: object, arg: str):
    if isinstance(value, OWN_OPTIONS[key]):
        return value
    try:
        return OWN_OPTIONS[key](value)
    except (TypeError, ValueError):
        raise SpecError(
            f"IDCM option {key}={value!r} in 'idcm:{arg}' is not a {OWN_OPTIONS[key].__name__}",
            fix="e.g. idcm:bm25,ce:/m,k=4,size=128,stride=96,aggregate=max",
        ) from None
