"""The R2R multi-domain experiment, staged and cached so it can be finished over several sittings.

    python -m studies.r2r --config studies/r2r/configs/r2r-cpu.toml

Every trained adapter and every reranked run is a stage under the work dir (default
`<cache>/r2r/<profile>-<config hash>`); a stage that is present and was made by the same config is skipped,
training resumes from its last checkpoint after a kill, and pair scores sit in the on-disk score cache.
`--max-minutes` stops starting new stages after that long and still writes the report of what exists.

Systems, all reranking the same BM25 candidates of each domain's seeded test queries:
  (a) generalist: the bare backbone, zero-shot      (b) pooled: one LoRA on all domains' training data
  (c) experts without EAG, oracle-routed            (d) R2R: EAG experts, chosen per query by the latent router
  (e) R2R with oracle routing                       (f) the trained cross-encoder (an outside reference)
Plus the routing table (router and baselines, on every test query), the forgetting matrix (every EAG expert
on every domain), the cost of misrouting, and the EAG masking-granularity ablation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from routerank.data.trec import write_run
from routerank.data.types import Query, Run
from routerank.errors import RouterankError
from routerank.fsutil import safe_name
from routerank.pipeline import build
from routerank.r2r.bank import ExpertBank
from routerank.r2r.reranker import R2RReranker
from routerank.r2r.routers import SoftmaxRouter
from routerank.r2r.trainer import ExpertConfig
from routerank.rerank.registry import make_reranker
from routerank.retrieve.base import Retriever
from routerank.scale import executor_for
from routerank.scale.executor import Executor
from routerank.stages import Stage, Step, run_plan
from studies.base import Study
from studies.r2r import alpha, routing
from studies.r2r.alpha import DevSet
from studies.r2r.config import R2RConfig
from studies.r2r.experts import Experts
from studies.r2r.plan import build_plan
from studies.r2r.scoring import ExpertScorer


class R2RExperiment(Study):
    """The staged R2R experiment. `ray` (or the config's `ray`): experts still to train run as parallel Ray
    tasks (one per adapter, a GPU each on a GPU cluster), and every scoring stage spreads its pairs over Ray
    actors that each load the expert bank once; finished shards are kept under the work dir. `loaded_factory`
    () -> (model, tokenizer) stands in for the backbone (tests pass a tiny model)."""

    FOLDER = "r2r"

    def __init__(
        self,
        config: R2RConfig,
        work_dir: str | Path | None = None,
        *,
        progress: bool = True,
        loaded_factory: Callable[[], tuple] | None = None,
        ray: str | None = None,
    ):
        super().__init__(config, work_dir, progress=progress)
        self.ray = ray if ray is not None else config.ray
        self._executor: Executor | None = None
        self._loaded_factory = loaded_factory
        self._first_stages: dict[str, Retriever] = {}  # dataset -> the first stage that ranks its dev queries
        self.experts = Experts(config, self.work, progress=progress, loaded=self._loaded)
        self.scorer = ExpertScorer(
            config,
            self.experts,
            self.work / "shards",
            executor=lambda: self.executor,
            loaded=self._loaded,
            progress=progress,
        )
        self.stages: list[Stage] = []

    def _loaded(self) -> tuple | None:
        """A fresh (model, tokenizer) from the test factory, or None: the callee loads the configured backbone."""
        return self._loaded_factory() if self._loaded_factory else None

    # data ------------------------------------------------------------------------------------------------

    def candidates(self, name: str) -> Run:
        """The first stage over `name`'s test queries to the candidates' depth (written once)."""
        return self._test_run(self.config.first_stage, "candidates", name)

    def bm25_run(self, name: str) -> Run:
        """Plain BM25 over the test queries to the candidates' depth: the reference every claim is held to when
        the first stage is something else (a hybrid)."""
        if self.config.first_stage == "bm25":
            return self.candidates(name)
        return self._test_run("bm25", "bm25", name)

    def _test_run(self, spec: str, folder: str, name: str) -> Run:
        """Retriever `spec` over `name`'s test queries to the candidates' depth, written once under `folder`."""
        make = lambda: build(spec, self.dataset(name).corpus).search(self.test_queries(name), self.config.candidates)  # noqa: E731
        return self.cached_run(self.work / folder / f"{name}.trec", make, tag=safe_name(spec, extra="="))

    def first_stage_retriever(self, name: str) -> Retriever:
        """The first stage over `name`'s corpus, built once (it ranks the dev queries weights are chosen on)."""
        if name not in self._first_stages:
            self._first_stages[name] = build(self.config.first_stage, self.dataset(name).corpus)
        return self._first_stages[name]

    # interpolation (studies.r2r.alpha) -------------------------------------------------------------------

    def alpha_path(self) -> Path:
        """The generalist's weights per domain, the fallback of every system."""
        return self.work / "alpha.json"

    def system_alpha_path(self, system: str, dataset: str) -> Path:
        """`system`'s own weight on `dataset`."""
        return self.work / "alpha" / f"{system}-{dataset}.json"

    def system_adapters(self, system: str, dataset: str) -> list[str]:
        """The adapters `system` reranks `dataset` with (`alpha.system_adapters`)."""
        return alpha.system_adapters(self.config, system, dataset)

    def dev_set(self, name: str, exclude: frozenset[str] = frozenset()) -> DevSet:
        """(queries, qrels, first-stage run, split) that choose a weight on `name` (`alpha.dev_set`)."""
        return alpha.dev_set(self, name, exclude)

    def choose_alpha(self) -> dict[str, Any]:
        """The generalist's weight per domain, on dev queries (`alpha.choose_generalist_alpha`)."""
        return alpha.choose_generalist_alpha(self)

    def choose_system_alpha(self, system: str, dataset: str) -> dict[str, Any]:
        """`system`'s own weight on `dataset` (`alpha.choose_system_alpha`)."""
        return alpha.choose_system_alpha(self, system, dataset)

    def alpha_for(self, system: str, dataset: str) -> dict[str, Any] | None:
        """The weight `system`'s interpolated row uses on `dataset` (`alpha.alpha_for`)."""
        return alpha.alpha_for(self, system, dataset)

    # experts (studies.r2r.experts) -----------------------------------------------------------------------

    def expert_configs(self) -> dict[str, ExpertConfig]:
        """Adapter name -> ExpertConfig, in training order (the R2R experts first)."""
        return self.experts.configs

    def expert_dir(self, adapter: str) -> Path:
        """Where `adapter` is trained to."""
        return self.experts.dir(adapter)

    def trained_queries(self, adapters: Iterable[str], dataset: str) -> frozenset[str]:
        """Ids of `dataset`'s queries that any of `adapters` trained on (from their configs' seeded split)."""
        return self.experts.trained_queries(adapters, dataset, self.dataset(dataset))

    @property
    def executor(self) -> Executor | None:
        """The Ray executor when `ray` is set, else None (everything in this process)."""
        if self._executor is None and self.ray:
            if self._loaded_factory is not None:
                raise RouterankError(
                    "a test model factory cannot travel to Ray workers", fix="run with ray=None, or name a backbone"
                )
            self._executor = executor_for(self.ray, self.progress)
        return self._executor

    def train_on_ray(self, adapters: list[str] | None = None) -> list[str]:
        """Train every expert (or those named) not yet trained, as parallel Ray tasks; returns those trained."""
        pending = self.experts.train_on_ray(self.executor, adapters)
        if pending:
            self.scorer.forget_bank()
        return pending

    def train(self, adapter: str) -> None:
        """Train one adapter in this process."""
        self.experts.train(adapter)
        self.scorer.forget_bank()  # the bank must pick the new adapter up

    # scoring ---------------------------------------------------------------------------------------------

    def bank(self) -> ExpertBank:
        """The expert bank over every trained adapter."""
        return self.scorer.bank()

    def score_pairs(self, pairs: list[tuple[str, str]], adapters: list[str]) -> np.ndarray:
        """Scores of (query, document) pairs, each with its adapter (`ExpertScorer.score_pairs`)."""
        return self.scorer.score_pairs(pairs, adapters)

    def run_path(self, system: str, dataset: str) -> Path:
        """The test run of `system` on `dataset`; its metadata sits beside it as .json."""
        return self.work / "runs" / system / f"{dataset}.trec"

    def _save_run(self, run: Run, system: str, dataset: str, tag: str, meta: Mapping[str, Any]) -> None:
        path = self.run_path(system, dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_run(run, path, tag=tag)
        self.write_json(path.with_suffix(".json"), meta)

    def score_run(self, system: str, dataset: str, experts: str | dict[str, str]) -> None:
        """Rerank `dataset`'s candidates with one adapter (or a query -> adapter map) and save the run."""
        corpus = self.dataset(dataset).corpus
        out, names, seconds = self.scorer.rerank(
            self.test_queries(dataset), self.candidates(dataset), corpus, experts, system
        )
        meta = {"pairs": len(names), "seconds": seconds, "adapters": sorted(set(names))}
        self._save_run(out, system, dataset, system.replace(" ", "_"), meta)

    def r2r_reranker(self) -> R2RReranker:
        """`R2RReranker` over this experiment's scorer (so it scores on Ray when the experiment does): the saved
        bank's router, and the EAG expert of each domain label."""
        router = SoftmaxRouter.load(self.work / "bank" / "router", self.bank().hidden_state)
        experts = {label: f"eag-{name}" for name, label in self.config.domains.items()}
        return R2RReranker(self.scorer, router, name="r2r", experts=experts)

    def score_r2r(self, dataset: str) -> None:
        """System (d): the saved bank's router routes each test query, and `R2RReranker` reranks with the chosen
        EAG expert, scoring through this experiment (so on Ray when it runs there)."""
        reranker = self.r2r_reranker()
        experts = reranker.experts
        queries, candidates = self.test_queries(dataset), self.candidates(dataset)  # the run file is read once
        run = reranker.rerank_run(queries, candidates, self.dataset(dataset).corpus, self.config.depth)
        meta = {
            "pairs": sum(min(self.config.depth, len(candidates[q.id])) for q in queries if q.id in candidates),
            "seconds": reranker.routing_seconds + reranker.scoring_seconds,
            "routing_seconds": reranker.routing_seconds,
            "adapters": sorted({experts.get(d.choice, d.choice) for d in reranker.last_decisions}),
        }
        self._save_run(run, "r2r", dataset, "r2r", meta)

    def score_cross_encoder(self, dataset: str) -> None:
        """System (f): the configured cross-encoder over the same candidates."""
        reranker = make_reranker(self.config.cross_encoder)
        queries: list[Query] = self.test_queries(dataset)
        start = time.perf_counter()
        out = reranker.rerank_run(queries, self.candidates(dataset), self.dataset(dataset).corpus, self.config.depth)
        meta = {"seconds": time.perf_counter() - start, "reranker": self.config.cross_encoder}
        self._save_run(out, "ce", dataset, "ce", meta)

    # routing and the plan --------------------------------------------------------------------------------

    def routing(self) -> dict[str, Any]:
        """Fit the latent router and its baselines on train queries; score them on every test query
        (`routing.fit_routing`)."""
        return routing.fit_routing(self)

    def plan(self) -> list[Step]:
        """The stages in order (`plan.build_plan`)."""
        return build_plan(self)

    def run(self, max_minutes: float | None = None, only: set[str] | None = None) -> list[Stage]:
        """One pass over the plan (see routerank.stages.run_plan): two processes, e.g. `--only train`
        and `--only route,score`, can share a work dir."""
        if self.executor is not None and (not only or "train" in only):
            self.train_on_ray()
        self.stages = run_plan(
            self.plan(), self.work / "locks", max_minutes=max_minutes, only=only, progress=self.progress, tag="r2r"
        )
        return self.stages


__all__ = ["R2RConfig", "R2RExperiment", "Stage", "Step"]
