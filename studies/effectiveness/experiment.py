"""The effectiveness table: each reranker over BM25 and hybrid candidates, plain and interpolated, on test sets.

    python -m studies.effectiveness --config studies/effectiveness/configs/effectiveness.toml --markdown

For every dataset and first stage (default `bm25` and `hybrid`), the test queries' top `depth` are reranked by
each configured reranker and scored three ways: the first stage alone, the reranker alone, and the two mixed
(`routerank.rerank.interpolate`) with the weight chosen on dev queries: the dev split where a dataset has one,
or the queries the model's own manifest held out of training. Test queries never choose anything.

Every first-stage run, reranked run and alpha record is a stage under the work dir (`<cache>/effectiveness/
<hash>`), and cross-encoder scores sit in the score cache, so the table can be built over several sittings
(`--max-minutes`) and by several processes. The report (`studies.effectiveness.report`) is written from whatever
stages exist, with each row's protocol (full test set, or a seeded sample and its size) stated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from routerank.data.devsplit import dev_queries
from routerank.data.trec import read_run, write_run
from routerank.data.types import Query, Run
from routerank.fsutil import safe_name
from routerank.pipeline import ShardedReranker, StageSpec, build, canonical
from routerank.rerank.interpolate import GRID, pooled_alpha, save_alphas
from routerank.rerank.registry import make_reranker
from routerank.scale import executor_for
from routerank.stages import Stage, Step, run_plan
from routerank.tune import tune_fusion
from studies.base import AlphaChoice, Study
from studies.effectiveness.config import DEV_TUNED, EffectivenessConfig

KEY = "nDCG@10"


class EffectivenessExperiment(Study):
    """The staged effectiveness table over one work dir (`<cache>/effectiveness/<digest>`). `ray` (or the config's
    `ray`): rerank stages run in query shards on Ray actors."""

    FOLDER = "effectiveness"

    def __init__(
        self,
        config: EffectivenessConfig,
        work_dir: str | Path | None = None,
        *,
        progress: bool = True,
        ray: str | None = None,
    ):
        super().__init__(config, work_dir, progress=progress)
        self.ray = ray if ray is not None else config.ray
        self._rerankers: dict[str, Any] = {}

    def work_name(self) -> str:
        """The config's digest alone (no profile)."""
        return self.config.digest()

    # inputs ----------------------------------------------------------------------------------------------

    def test_sample(self, name: str) -> int | None:
        """The configured sample of `name`'s test queries (absent or 0: all)."""
        return self.config.test_queries.get(name) or None

    def reranker(self, label: str) -> Any:
        """The reranker configured under `label`, made once."""
        if label not in self._rerankers:
            spec = self.config.rerankers[label]
            self._rerankers[label] = make_reranker(spec, progress=self.progress, **self.reranker_options(label))
        return self._rerankers[label]

    def reranker_options(self, label: str) -> dict:
        """A cross-encoder's scores are cached on disk; then the config's own options for this label."""
        options = {"cache": True} if self.config.rerankers[label].startswith("ce:") else {}
        return {**options, **self.config.options.get(label, {})}

    def dev_queries(self, name: str, label: str) -> tuple[list[Query], str]:
        """(queries, qrels split) on which alpha is chosen for this reranker on this dataset."""
        folder = getattr(self.reranker(label), "folder", None)
        return dev_queries(self.dataset(name), [folder], self.config.dev_queries, self.config.seed, who=label)

    # stages ----------------------------------------------------------------------------------------------

    def run_path(self, dataset: str, split: str, system: str) -> Path:
        """Test runs of a sample live apart from full-set runs (`test-300` vs `test`): a changed sample size never
        reads a stale run; scores are shared through the score cache all the same."""
        safe = safe_name(system.replace(">>", "__"), extra="=")
        if split == "test" and self.config.test_queries.get(dataset):
            split = f"test-{self.config.test_queries[dataset]}"
        return self.work / "runs" / dataset / split / f"{safe}.trec"

    def fusion_choice(self, dataset: str, stage: str) -> dict | None:
        """For a `weighted(...)~dev` first stage, the weights chosen on `dataset`'s dev queries (chosen once, then
        read from the work dir); None for any other first stage."""
        if not stage.endswith(DEV_TUNED):
            return None
        path = self.work / "fusion" / dataset / f"{safe_name(stage, extra='=')}.json"
        if not path.exists():
            tune_fusion(
                [dataset],
                stage[: -len(DEV_TUNED)],
                k=self.config.depth,
                dev_queries=self.config.dev_queries,
                seed=self.config.seed,
                out=path,
                progress=self.progress,
            )
        return self.read_json(path)["datasets"][dataset]

    def stage_spec(self, dataset: str, stage: str) -> str:
        """The pipeline spec a first stage runs as on `dataset` (a `~dev` fusion with its chosen weights)."""
        choice = self.fusion_choice(dataset, stage)
        return stage if choice is None else choice["spec"]

    def first_stage(self, dataset: str, split: str, stage: str) -> Run:
        """The first stage's run over the test sample, or over every reranker's dev queries (written once)."""

        def make() -> Run:
            queries = self.test_queries(dataset) if split == "test" else self._all_dev_queries(dataset)
            spec = self.stage_spec(dataset, stage)
            return build(spec, self.dataset(dataset).corpus, progress=self.progress).search(queries, self.config.depth)

        return self.cached_run(self.run_path(dataset, split, stage), make, tag=stage)

    def _all_dev_queries(self, dataset: str) -> list[Query]:
        """The union of every reranker's dev queries on this dataset (one first-stage run serves them all)."""
        seen: dict[str, Query] = {}
        for label in self.config.rerankers:
            for query in self.dev_queries(dataset, label)[0]:
                seen.setdefault(query.id, query)
        return list(seen.values())

    def rerank(self, dataset: str, split: str, stage: str, label: str) -> None:
        """Rerank the first stage's run of `split` with the reranker `label`, and write the run."""
        first = self.first_stage(dataset, split, stage)
        queries = self.test_queries(dataset) if split == "test" else self.dev_queries(dataset, label)[0]
        run = self._stage_reranker(label, stage).rerank_run(
            queries, first, self.dataset(dataset).corpus, self.config.depth
        )
        write_run(run, self.run_path(dataset, split, f"{stage}>>{label}"), tag=label)

    def _stage_reranker(self, label: str, stage: str) -> Any:
        """The label's reranker here, or (with `ray`) the same spec and options reranking in shards on Ray."""
        if not self.ray:
            return self.reranker(label)
        options = {"progress": False, **self.reranker_options(label)}
        stage_spec = StageSpec(self.config.rerankers[label], self.config.depth)
        return ShardedReranker(stage_spec, stage, options, executor_for(self.ray))

    # alpha -----------------------------------------------------------------------------------------------

    def alpha_path(self, label: str, stage: str) -> Path:
        """The saved alpha choice of reranker `label` over first stage `stage`."""
        return self.run_path("_alpha", label, stage).with_suffix(".json")

    def alpha_record(self, label: str, stage: str) -> dict | None:
        """The saved alpha choice; or, while some datasets' dev runs are missing, one over those that exist
        (marked partial, not saved); None before any exists."""
        if self._alpha_complete(label, stage):
            return self.read_json(self.alpha_path(label, stage))
        ready = [n for n in self.config.datasets if n not in self._missing_dev(label, stage)]
        return self.choose_alpha(label, stage, ready, save=False) if ready else None

    def _corpus_alpha(self, name: str, label: str, stage: str) -> tuple[dict, AlphaChoice]:
        """(its alpha entry, the choice): the weight chosen on `name`'s dev queries, with its curve."""
        queries, split = self.dev_queries(name, label)
        qrels = self.dataset(name).split_qrels(split).subset(q.id for q in queries)
        first = self.first_stage(name, "dev", stage)
        reranked = read_run(self.run_path(name, "dev", f"{stage}>>{label}"))
        ids = {q.id for q in queries}
        first = Run({q: r for q, r in first.rankings.items() if q in ids}, first.name)
        chosen = self.dev_alpha(reranked, first, qrels, self.config.depth, KEY)
        entry = {"dataset": name, "alpha": chosen.alpha, "dev_split": split, "dev_queries": len(queries)}
        return {**entry, "curve": chosen.rounded_curve()}, chosen

    def choose_alpha(self, label: str, stage: str, datasets: list[str] | None = None, save: bool = True) -> dict:
        """Grid-search alpha on each dataset's dev queries; save per corpus and pooled (the best mean curve over
        the datasets, `routerank.rerank.interpolate.pooled_alpha`)."""
        datasets = list(self.config.datasets) if datasets is None else datasets
        record: dict = {"chosen_on": "dev", "measure": KEY, "depth": self.config.depth, "grid": list(GRID)}
        record["partial"] = datasets != list(self.config.datasets)
        by_corpus, curves = {}, []
        for name in datasets:
            entry, chosen = self._corpus_alpha(name, label, stage)
            by_corpus[self.dataset(name).corpus.fingerprint] = entry
            curves.append(chosen.curve)
        best, curve = pooled_alpha(curves)
        record["pooled"] = {"alpha": best, "curve": curve}
        record["by_corpus"] = by_corpus
        if not save:
            return record
        save_alphas(self.reranker(label), canonical(stage), record)
        self.write_json(self.alpha_path(label, stage), record)
        return record

    def _alpha_complete(self, label: str, stage: str) -> bool:
        """A saved choice that covers every configured dataset (adding a dataset makes it stale)."""
        if not self.alpha_path(label, stage).exists():
            return False
        record = self.read_json(self.alpha_path(label, stage))
        return {e["dataset"] for e in record["by_corpus"].values()} >= set(self.config.datasets)

    def _missing_dev(self, label: str, stage: str) -> list[str]:
        return [n for n in self.config.datasets if not self.run_path(n, "dev", f"{stage}>>{label}").exists()]

    # the plan --------------------------------------------------------------------------------------------

    def reranked_stages(self) -> tuple[str, ...]:
        """The first stages whose candidates the rerankers rerank."""
        return self.config.rerank_first_stages or self.config.first_stages

    def plan(self) -> list[Step]:
        """Per dataset: dev reranks (for alpha), test first stages, test reranks; then the alpha choices."""
        c, steps = self.config, []
        for name in c.datasets:
            for stage in self.reranked_stages():
                steps += [self._rerank_step(name, "dev", stage, label) for label in c.rerankers]
            for stage in c.first_stages:
                steps.append(
                    Step(
                        f"first stage {stage} on {name} test",
                        "first",
                        (lambda n=name, st=stage: self.run_path(n, "test", st).exists()),
                        (lambda n=name, st=stage: self.first_stage(n, "test", st)),
                    )
                )
                if stage in self.reranked_stages():
                    steps += [self._rerank_step(name, "test", stage, label) for label in c.rerankers]
        for label in c.rerankers:
            for stage in self.reranked_stages():
                steps.append(
                    Step(
                        f"alpha {label} over {stage}",
                        "alpha",
                        (lambda lb=label, st=stage: self._alpha_complete(lb, st)),
                        (lambda lb=label, st=stage: self.choose_alpha(lb, st)),
                        needs=(lambda lb=label, st=stage: not self._missing_dev(lb, st)),
                    )
                )
        return steps

    def _rerank_step(self, name: str, split: str, stage: str, label: str) -> Step:
        return Step(
            f"rerank {stage} with {label} on {name} {split}",
            "dev" if split == "dev" else "rerank",
            lambda: self.run_path(name, split, f"{stage}>>{label}").exists(),
            lambda: self.rerank(name, split, stage, label),
        )

    def run(self, max_minutes: float | None = None, only: set[str] | None = None) -> list[Stage]:
        """One pass over the plan (see routerank.stages.run_plan)."""
        return run_plan(
            self.plan(), self.work / "locks", max_minutes=max_minutes, only=only, progress=self.progress, tag="eff"
        )


__all__ = ["DEV_TUNED", "KEY", "EffectivenessConfig", "EffectivenessExperiment"]
