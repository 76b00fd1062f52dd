"""The R3AG experiment: label, train, evaluate and report retriever routing for RAG, on the shared stage runner.

    python -m studies.r3ag --config studies/r3ag/configs/r3ag-cpu.toml

Stages (each skipped when its output exists, so a killed run resumes):
    labels:<set>:<split>   `routerank.r3ag.labelling.build_labels` on a seeded sample of the split (shared cache
                           folder)
    train                  R3AG pooled over all sets or per set, chosen on held-out *train* queries, then refit on
                           all train labels; the ablations (no quality space, no utility space, mean fusion) and the
                           extensibility router (trained without one member, which `add_retriever` then adds)
                           (`studies.r3ag.training`)
    evaluate               every system on every set's test labels: a system's EM/F1 on a query is the label of
                           the member it routes that query to (`studies.r3ag.evaluation`)
    report                 reports/r3ag.json and reports/r3ag.md (`studies.r3ag.report`)

State lives in `<cache>/r3ag/<profile>-<hash>` (routers, results) and `<cache>/r3ag/labels/...` (runs, labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from routerank.r3ag.labelling import build_labels, work_dir_for
from routerank.r3ag.labels import RoutingLabels
from routerank.r3ag.pool import PoolConfig
from routerank.r3ag.router import encoder_features
from routerank.stages import Stage, Step, run_plan
from studies.base import Study
from studies.r3ag import evaluation, training
from studies.r3ag.config import R3AGExperimentConfig
from studies.r3ag.report import write as write_report

Features = Callable[[Sequence[str]], np.ndarray]


class R3AGExperiment(Study):
    """The plan's steps over one work dir; the actions are small functions in `training`, `evaluation` and
    `report`."""

    FOLDER = "r3ag"

    def __init__(self, config: R3AGExperimentConfig, work_dir: str | Path | None = None, report: Path | None = None):
        super().__init__(config, work_dir)
        self.pool = PoolConfig.read(config.pool)
        self.report = Path(report) if report is not None else Path("reports/r3ag.md")
        self._features: Features | None = None

    def label_dir(self, dataset: str, split: str) -> Path:
        """Where `dataset`'s labels of `split` live (shared by every experiment with the same label settings)."""
        return work_dir_for(dataset, self.pool, self.config.label_settings(split))

    def labels(self, dataset: str, split: str) -> RoutingLabels:
        """`dataset`'s routing labels of `split`."""
        return RoutingLabels.load(self.label_dir(dataset, split) / "labels")

    def has_labels(self, dataset: str, split: str) -> bool:
        """Whether those labels are built."""
        return (self.label_dir(dataset, split) / "labels" / "labels.json").exists()

    def eval_label_dir(self, dataset: str) -> Path:
        """Where the second generator's test labels live (`generator_eval`)."""
        return work_dir_for(dataset, self.pool, self.config.eval_label_settings())

    def eval_labels(self, dataset: str) -> RoutingLabels:
        """The second generator's test labels of `dataset`."""
        return RoutingLabels.load(self.eval_label_dir(dataset) / "labels")

    def has_eval_labels(self, dataset: str) -> bool:
        """Whether those labels are built."""
        return (self.eval_label_dir(dataset) / "labels" / "labels.json").exists()

    def encoder(self) -> Features:
        """The routers' frozen query encoder, unmemoised (texts -> [n, d]); loads on its first call."""
        return encoder_features(self.config.features)

    def features(self) -> Features:
        """One memoised frozen encoder for every router: texts -> [n, d] features."""
        if self._features is None:
            encode, memo = self.encoder(), {}

            def features(texts: Sequence[str]) -> np.ndarray:
                missing = [t for t in dict.fromkeys(texts) if t not in memo]
                if missing:
                    memo.update(zip(missing, encode(missing), strict=True))
                return np.stack([memo[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)

            self._features = features
        return self._features

    def _label_steps(self) -> list[Step]:
        """Labels per set and split, and the second generator's test labels where one is configured."""
        c = self.config
        steps = [
            Step(
                f"labels:{ds}:{split}",
                "labels",
                done=lambda ds=ds, split=split: self.has_labels(ds, split),
                action=lambda ds=ds, split=split: build_labels(
                    ds, self.pool, c.label_settings(split), work_dir=self.label_dir(ds, split)
                ),
            )
            for ds in c.datasets
            for split in (c.train_split, c.test_split)
        ]
        if c.generator_eval:
            steps += [
                Step(
                    f"labels:{ds}:{c.test_split}:{c.generator_eval}",
                    "labels",
                    done=lambda ds=ds: self.has_eval_labels(ds),
                    action=lambda ds=ds: build_labels(
                        ds, self.pool, c.eval_label_settings(), work_dir=self.eval_label_dir(ds)
                    ),
                )
                for ds in c.datasets
            ]
        return steps

    def labelled(self) -> bool:
        """Whether every label the train stage needs is built."""
        c = self.config
        firsts = all(self.has_labels(ds, s) for ds in c.datasets for s in (c.train_split, c.test_split))
        return firsts and (not c.generator_eval or all(map(self.has_eval_labels, c.datasets)))

    def steps(self) -> list[Step]:
        """The plan: labels, train, evaluate, report."""
        trained = lambda: (self.work / "train.json").exists()  # noqa: E731
        evaluated = lambda: (self.work / "results.json").exists()  # noqa: E731
        return self._label_steps() + [
            Step("train", "train", trained, lambda: training.train(self), self.labelled),
            Step("evaluate", "evaluate", evaluated, lambda: evaluation.evaluate(self), trained),
            Step("report", "report", lambda: False, lambda: write_report(self, self.report), evaluated),
        ]

    def run(self, max_minutes: float | None = None, only: set[str] | None = None) -> list[Stage]:
        """One pass over the plan (see routerank.stages.run_plan)."""
        return run_plan(self.steps(), self.work / "locks", max_minutes=max_minutes, only=only, tag="r3ag")


__all__ = ["R3AGExperiment", "R3AGExperimentConfig"]
