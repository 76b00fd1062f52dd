"""Issue 12: every LLM reranker trainer on one backbone, scored on the same seeded test queries.

    python -m studies.llm_training --config studies/llm_training/configs/llm-training-cpu.toml [--max-minutes 60]

Systems, all reranking BM25's top `depth` of the same `test_queries` seeded test queries of each dataset:
bm25 alone; `zero-shot` (the untrained backbone's yes/no score); `sft` and `contrastive` (a LoRA trained with BCE,
or with InfoNCE as R2R's experts are, `train.expert`); `prorank-stage1` and `prorank` (`train.prorank`); DeAR's
stage 1 with all its loss terms (`dear-stage1`), stages 1 + 2 listwise (`dear`) and each stage-1 loss ablation
(`dear-ce`, ...; `train.dear`); `rank-r1` (setwise, `train.rank_r1`); and the `teacher` DeAR distils.

Each trainer reads its own TOML (`configs/{dear,prorank,rank-r1}-cpu.toml`); the experiment adds only where the
adapters go and what scores them. Every adapter lives under the work dir (`<cache>/llm-training/<profile>`) in a
folder named by its config's hash, and every trainer resumes from its checkpoint after a kill, so a stage that is
finished is skipped and a changed method config trains anew beside the old one. Scoring stages persist
every 10 queries (`<run>.partial.jsonl`), so a killed one resumes too. Each scored run records the
reranker spec that made it; a run made by another spec (a retrained adapter) is scored again. The report
(`studies.llm_training.report`) is written from whatever exists: a stage that has not run shows as pending, its
cells –.
Nothing here is chosen on test queries: the trainers hold their dev queries out of the train split.

`--systems rank-r1,zero-shot` runs only those rows' stages. `--carry-from reports/llm-training.json` fills the rows
this work dir has no run for (a lost cache, another machine) from an earlier report of the same protocol, marked
*carried* in the report; a row trained here with another spec is never filled in from it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from routerank.data.trec import read_run
from routerank.data.types import Run
from routerank.errors import SpecError
from routerank.pipeline import StageSpec, stage_reranker
from routerank.r2r.trainer import ExpertConfig, train_expert
from routerank.stages import Stage, Step, run_plan
from routerank.train.dear import DeARConfig, train_dear
from routerank.train.prorank import train_prorank
from routerank.train.rank_r1 import train_rank_r1
from studies.base import Study
from studies.llm_training.config import (
    INFERENCE_VARIANTS,
    UNTRAINED,
    LLMTrainingConfig,
    load_method_configs,
    parse_only,
)
from studies.llm_training.scoring import SCORE_CHUNK, score_system
from studies.llm_training.systems import STAGE_BEFORE, Systems


class LLMTrainingExperiment(Study):
    """The plan: per method a training stage (then its scoring stages), after the untrained rows' scoring stages.
    `loaded_factory` () -> (model, tokenizer) stands in for the backbone everywhere (tests: a tiny model); scores
    are then not cached, so a test model never writes under the real backbone's cache key."""

    FOLDER = "llm-training"

    def __init__(
        self,
        config: LLMTrainingConfig,
        work_dir: str | Path | None = None,
        *,
        progress: bool = True,
        loaded_factory: Callable[[], tuple] | None = None,
    ):
        super().__init__(config, work_dir, progress=progress)
        self.methods = load_method_configs(config)
        self.rows = Systems(config, self.methods, self.work)
        self._loaded_factory = loaded_factory

    def work_name(self) -> str:
        """The profile alone: adapters are keyed by their own configs' hashes, runs by the protocol."""
        return self.config.profile

    def protocol(self) -> str:
        """The test sample, seed and depth: runs of another protocol never mix with these."""
        c = self.config
        return f"test{c.test_queries or '-all'}-seed{c.seed}-top{c.depth}"

    def run_path(self, system: str, dataset: str) -> Path:
        """`system`'s run on `dataset` under this protocol; its spec and costs sit beside it as .json."""
        return self.work / "runs" / self.protocol() / system / f"{dataset}.trec"

    def candidates(self, dataset: str) -> Run:
        """BM25's run on the test sample (scored first where it is missing)."""
        path = self.run_path("bm25", dataset)
        if not path.exists():
            self.score("bm25", dataset)
        return read_run(path)

    # the rows (studies.llm_training.systems) -------------------------------------------------------------

    def systems(self) -> list[str]:
        """Every row of the report, in its order."""
        return self.rows.names()

    def expert_config(self, system: str) -> ExpertConfig:
        """The ExpertConfig of `sft` or `contrastive`."""
        return self.rows.expert_config(system)

    def dear_configs(self) -> dict[str, DeARConfig]:
        """DeAR system name -> its stage-1 config."""
        return self.rows.dear_configs()

    def ablations(self) -> dict[str, str]:
        """Each configured DeAR ablation (its terms) -> the system that trains it."""
        return self.rows.ablations()

    def adapter_dir(self, system: str) -> Path:
        """The adapter folder a trained system reranks with."""
        return self.rows.adapter_dir(system)

    def trained(self, system: str) -> bool:
        """Whether the adapter this system reranks with is finished (true for the untrained rows)."""
        return self.rows.trained(system)

    def manifest(self, system: str) -> dict | None:
        """The manifest of a trained system's adapter (None: an untrained row, or not trained yet)."""
        return self.rows.manifest(system)

    def spec(self, system: str) -> str | None:
        """The reranker spec a system scores with; None while its adapter is not trained."""
        return self.rows.spec(system)

    # stages ----------------------------------------------------------------------------------------------

    def _loaded(self) -> Any:
        return self._loaded_factory() if self._loaded_factory else None

    def train(self, system: str) -> None:
        """Train one system's adapter (resuming from its checkpoint)."""
        folder, progress = self.rows.train_dir(system), self.progress
        if system in ("sft", "contrastive"):
            train_expert(self.expert_config(system), folder, loaded=self._loaded(), progress=progress)
        elif system.startswith("dear"):
            stages = (2,) if system == "dear" else (1,)
            train_dear(
                self.rows.dear_config(system), folder, stages=stages, load=self._loaded_factory, progress=progress
            )
        elif system.startswith("prorank"):
            stage = 1 if system == "prorank-stage1" else 2
            train_prorank(self.methods.prorank, folder, stage=stage, loaded=self._loaded(), progress=progress)
        else:
            train_rank_r1(self.methods.rank_r1, folder, loaded=self._loaded(), progress=progress)

    def reranker(self, system: str) -> Any:
        """The system's reranker; the teacher mixed with BM25 as DeAR's lists mix it (`teacher_alpha`)."""
        spec, alpha = self.rows.teacher_setting() if system == "teacher" else (self.spec(system), None)
        family = spec.partition(":")[0]
        options: dict = {}
        if family in ("pointwise", "ce"):
            options = {"cache": self._loaded_factory is None or family == "ce", "progress": self.progress}
        elif family in ("setwise", "listwise"):
            options = {"progress": self.progress}
        if family in ("pointwise", "setwise", "listwise") and self._loaded_factory is not None:
            options["_loaded"] = self._loaded_factory()
        return stage_reranker(StageSpec(spec, self.config.depth, alpha), "bm25", options)

    def score(self, system: str, dataset: str, chunk: int = SCORE_CHUNK) -> None:
        """Rerank the dataset's BM25 candidates with the system, in persisted chunks
        (`studies.llm_training.scoring`)."""
        score_system(self, system, dataset, chunk)

    def scored(self, system: str, dataset: str) -> bool:
        """A run exists and was made by the spec the system has now."""
        path = self.run_path(system, dataset)
        meta = path.with_suffix(".json")
        if not path.exists() or not meta.exists():
            return False
        spec = self.spec(system)
        return spec is not None and self.read_json(meta).get("spec") == spec

    def pick_systems(self, systems: str | None) -> set[str] | None:
        """`--systems rank-r1,zero-shot`: the rows whose stages run (None: all); an unknown name is an error."""
        if not systems:
            return None
        picked = {s.strip() for s in systems.split(",") if s.strip()}
        stray = sorted(picked - set(self.systems()))
        if stray or not picked:
            raise SpecError(
                f"unknown systems {stray} in --systems {systems!r}" if stray else "--systems names no system",
                fix=f"a comma list of {', '.join(self.systems())}",
            )
        return picked

    def _score_step(self, system: str, dataset: str) -> Step:
        return Step(
            f"score {system} on {dataset}",
            "score",
            lambda: self.scored(system, dataset),
            lambda: self.score(system, dataset),
            needs=lambda: self.trained(system),
        )

    def _train_step(self, system: str) -> Step:
        needs = STAGE_BEFORE.get(system)
        return Step(
            f"train {system}",
            "train",
            lambda: self.trained(system),
            lambda: self.train(system),
            needs=(lambda: self.trained(needs)) if needs else (lambda: True),
        )

    def plan(self, systems: set[str] | None = None) -> list[Step]:
        """Untrained rows first; then per method its training stage and right after it its scoring stages, so a
        run stopped by its time budget reports every method it trained. `systems` keeps only those rows' stages
        (a row's training stage included; BM25's candidates are scored when a reranker needs them)."""
        rows = [s for s in self.systems() if systems is None or s in systems]
        steps = [self._score_step(s, d) for s in UNTRAINED if s in rows for d in self.config.datasets]
        for system in rows:
            if system in UNTRAINED:
                continue
            if system not in INFERENCE_VARIANTS:  # a variant trains nothing: scored once its base is trained
                steps.append(self._train_step(system))
            steps += [self._score_step(system, d) for d in self.config.datasets]
        return steps

    def run(
        self, max_minutes: float | None = None, only: set[str] | None = None, systems: set[str] | None = None
    ) -> list[Stage]:
        """One pass over the plan (or the `systems` rows of it; see routerank.stages.run_plan)."""
        return run_plan(
            self.plan(systems),
            self.work / "locks",
            max_minutes=max_minutes,
            only=only,
            progress=self.progress,
            tag="llm",
        )


__all__ = ["LLMTrainingConfig", "LLMTrainingExperiment", "parse_only"]
