"""R2R, Route-to-Rerank: the latent router picks a domain expert per query, the expert reranks.

A bank folder holds `bank.json` (backbone, expert folders by domain, optional default bank options such as
`max_doc_tokens`), the router, and is named in
pipelines as `r2r:<folder>`, e.g. `bm25>>r2r:runs/bank@100`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from routerank.data.types import Corpus, Query, Ranking, Run
from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_write
from routerank.r2r.bank import ExpertBank
from routerank.r2r.routers import SoftmaxRouter
from routerank.rerank.base import BaseReranker, as_documents, as_query, assemble_run, candidates, split_arg
from routerank.retrieve.base import as_query_list
from routerank.route import RouteDecision

BANK_FILE = "bank.json"


def save_bank(folder: str | Path, backbone: str, experts: Mapping[str, str | Path], router: SoftmaxRouter) -> Path:
    """Write a bank: expert folders are referenced (relative to the bank when inside it), the router copied in."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    router.save(folder / "router")
    refs = {d: os.path.relpath(Path(p).resolve(), folder.resolve()) for d, p in experts.items()}
    with atomic_write(folder / BANK_FILE) as out:
        json.dump({"backbone": backbone, "experts": refs, "router": "router"}, out, indent=2)
    return folder


class R2RReranker(BaseReranker):
    """Route each query with `router`, then score its candidates with the chosen expert of `bank`.

    bank: an `ExpertBank`, or anything with `score_pairs(pairs, expert_names)` (the R2R experiment passes itself,
    so that its scoring may run on Ray). experts: router label -> the bank's name for that expert (default: the
    label itself); a query routed to the generalist is scored by the bare backbone.

    Its public face is the `routerank.route.RoutedScorer` role: `route` (the router's decisions), `score_pairs`
    (pairs of any queries, each with its decision) and `score_kind`; `routerank.Reranker` and the server use
    nothing else.
    """

    def __init__(
        self, bank: ExpertBank, router: SoftmaxRouter, name: str = "r2r", *, experts: Mapping[str, str] | None = None
    ):
        self.experts = dict(experts) if experts else {label: label for label in router.labels}
        missing = [label for label in router.labels if label not in self.experts]
        known = getattr(bank, "domains", None)
        unknown = missing or [e for e in self.experts.values() if known is not None and e not in known]
        if unknown:
            raise RouterankError(f"router labels {router.labels} have no expert in the bank ({known}): {unknown}")
        self.bank, self.router, self.name = bank, router, name
        self.last_decisions: list = []
        self.folder: Path | None = None  # a bank loaded from a folder: where its interpolation weights are kept
        self.routing_seconds = self.scoring_seconds = 0.0

    @classmethod
    def from_spec(cls, arg: str, **options) -> R2RReranker:
        """The reranker of a bank folder (`r2r:<folder>`, optionally followed by `,key=value` bank options such as
        `backend=`), with its saved router; `options` and inline options override the bank's own."""
        arg, inline = split_arg(arg) if "," in arg else (arg, {})  # r2r:<bank>,backend=openvino-int8
        options = {**options, **inline}
        folder = Path(arg).expanduser()
        if not arg or not (folder / BANK_FILE).exists():
            raise SpecError(
                f"r2r:{arg} is not an expert bank (no {BANK_FILE})",
                fix="build one with `python -m studies.r2r` in a checkout or routerank.r2r.reranker.save_bank",
            )
        meta = json.loads((folder / BANK_FILE).read_text())
        experts = {d: folder / p for d, p in meta["experts"].items()}
        bank = ExpertBank(experts, meta["backbone"], **{**meta.get("options", {}), **options})
        router = SoftmaxRouter.load(folder / meta["router"], bank.hidden_state)
        name = "r2r:starter" if "starter" in meta else f"r2r:{folder.name}"
        reranker = cls(bank, router, name=name)
        reranker.folder = folder  # its dev-chosen interpolation weights live beside the bank
        return reranker

    def route(self, queries: Iterable[Query] | Mapping[str, Query] | Sequence[str]) -> list[RouteDecision]:
        """The router's decision per query (its `choice`: a router label, or GENERALIST), also kept in
        `last_decisions`; queries are `Query` objects, a {id: Query} mapping, or plain strings."""
        query_list = as_query_list(queries)
        start = time.perf_counter()
        self.last_decisions = list(self.router.route(query_list))
        self.routing_seconds += time.perf_counter() - start
        return list(self.last_decisions)

    def expert_for(self, choice: str) -> str:
        """The bank's expert for a router choice; GENERALIST (the bare backbone) stays itself."""
        return self.experts.get(choice, choice)

    def score_pairs(self, pairs: Sequence[tuple[str, str]], experts: Sequence[str] | None = None) -> np.ndarray:
        """Raw scores of (query, document) pairs of any mix of queries, each scored by its query's expert.

        experts: each pair's router choice (a `RouteDecision.choice`, as `route` gives it); None routes each
        distinct query text first.
        """
        pairs = list(pairs)
        if experts is None:
            texts = list(dict.fromkeys(query for query, _ in pairs))
            chosen = {text: decision.choice for text, decision in zip(texts, self.route(texts), strict=True)}
            experts = [chosen[query] for query, _ in pairs]
        elif len(experts) != len(pairs):
            raise RouterankError(f"score_pairs got {len(pairs)} pairs but {len(experts)} experts; give one per pair")
        return self._score(pairs, [self.expert_for(choice) for choice in experts])

    @property
    def runtime(self) -> str:
        """What the experts score on: "torch" or the bank's exported backend."""
        return str(getattr(self.bank, "backend", "torch"))

    @property
    def backbone(self) -> str:
        """The spec of the backbone the experts share (an LLM spec, or `ce:<folder>`); "" if the bank names none."""
        return str(getattr(self.bank, "backbone", ""))

    def score_kind(self) -> str:
        """What the raw scores are: "logit" for experts over a cross-encoder, else "probability" (a yes/no LLM)."""
        return "logit" if self.backbone.startswith("ce:") else "probability"

    def _experts(self, queries: list[Query]) -> list[str]:
        return [self.expert_for(decision.choice) for decision in self.route(queries)]

    def rerank(self, query: Query | str, docs, top_k: int | None = None) -> Ranking:
        """One query's documents best first (at most `top_k`), all scored by the expert its router picks."""
        query, documents = as_query(query), as_documents(docs)
        [expert] = self._experts([query])
        scores = self._score([(query.text, d.full_text) for d in documents], [expert] * len(documents)).tolist()
        return Ranking.from_scores(dict(zip((d.id for d in documents), scores, strict=True)), top_k)

    def rerank_run(
        self, queries: Iterable[Query] | Mapping[str, Query], run: Run, corpus: Corpus, depth: int = 100
    ) -> Run:
        """Each query's top `depth` candidates from `run`, reranked by the expert its router picks; every query's
        pairs are scored in one call to the bank."""
        query_list = as_query_list(queries)
        experts = self._experts(query_list)
        per_query = [(q, candidates(run, q.id, corpus, depth)) for q in query_list]
        pairs, names = [], []
        for (query, docs), expert in zip(per_query, experts, strict=True):
            pairs += [(query.text, d.full_text) for d in docs]
            names += [expert] * len(docs)
        return assemble_run(per_query, self._score(pairs, names).tolist(), run, depth, f"{run.name}>>{self.name}")

    def _score(self, pairs: list[tuple[str, str]], experts: list[str]) -> np.ndarray:
        """The bank's scores of pairs, each by the bank expert named (already mapped from router labels)."""
        start = time.perf_counter()
        scores = np.asarray(self.bank.score_pairs(pairs, experts), dtype=np.float64) if pairs else np.zeros(0)
        self.scoring_seconds += time.perf_counter() - start
        return scores
