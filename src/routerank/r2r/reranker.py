"""R2R, Route-to-Rerank: the latent router picks a domain expert per query, the expert reranks.

A bank folder holds `bank.json` (backbone, expert folders by domain), the router, and is named in
pipelines as `r2r:<folder>`, e.g. `bm25>>r2r:runs/bank@100`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from routerank.data.types import Corpus, Query, Ranking, Run
from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_write
from routerank.r2r.bank import ExpertBank
from routerank.r2r.routers import SoftmaxRouter
from routerank.rerank.base import BaseReranker, as_documents, as_query, assemble_run, candidates

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
        self.routing_seconds = self.scoring_seconds = 0.0

    @classmethod
    def from_spec(cls, arg: str, **options) -> R2RReranker:
        folder = Path(arg).expanduser()
        if not arg or not (folder / BANK_FILE).exists():
            raise SpecError(
                f"r2r:{arg} is not an expert bank (no {BANK_FILE})",
                fix="build one with `routerank experiment r2r` or routerank.r2r.reranker.save_bank",
            )
        meta = json.loads((folder / BANK_FILE).read_text())
        experts = {d: folder / p for d, p in meta["experts"].items()}
        bank = ExpertBank(experts, meta["backbone"], **options)
        return cls(bank, SoftmaxRouter.load(folder / meta["router"], bank.hidden_state), name=f"r2r:{folder.name}")

    def route(self, queries: list[Query]) -> list[str]:
        start = time.perf_counter()
        self.last_decisions = self.router.route(queries)
        self.routing_seconds += time.perf_counter() - start
        return [self.experts.get(d.choice, d.choice) for d in self.last_decisions]

    def rerank(self, query: Query | str, docs, top_k: int | None = None) -> Ranking:
        query, documents = as_query(query), as_documents(docs)
        [expert] = self.route([query])
        scores = self._score([(query.text, d.full_text) for d in documents], [expert] * len(documents))
        return Ranking.from_scores(dict(zip((d.id for d in documents), scores, strict=True)), top_k)

    def rerank_run(
        self, queries: Iterable[Query] | Mapping[str, Query], run: Run, corpus: Corpus, depth: int = 100
    ) -> Run:
        from routerank.retrieve.base import as_query_list

        query_list = as_query_list(queries)
        experts = self.route(query_list)
        per_query = [(q, candidates(run, q.id, corpus, depth)) for q in query_list]
        pairs, names = [], []
        for (query, docs), expert in zip(per_query, experts, strict=True):
            pairs += [(query.text, d.full_text) for d in docs]
            names += [expert] * len(docs)
        return assemble_run(per_query, self._score(pairs, names), run, depth, f"{run.name}>>{self.name}")

    def _score(self, pairs, experts) -> list[float]:
        start = time.perf_counter()
        scores = self.bank.score_pairs(pairs, experts).tolist() if pairs else []
        self.scoring_seconds += time.perf_counter() - start
        return scores
