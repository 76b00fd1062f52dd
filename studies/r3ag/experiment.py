"""The R3AG experiment: label, train, evaluate and report retriever routing for RAG, on the shared stage runner.

    routerank experiment r3ag --config configs/r3ag-cpu.toml

Stages (each skipped when its output exists, so a killed run resumes):
    labels:<set>:<split>   `r3ag_labels.build_labels` on a seeded sample of the split (shared cache folder)
    train                  R3AG pooled over all sets or per set, chosen on held-out *train* queries, then refit on
                           all train labels; the ablations (no quality space, no utility space, mean fusion) and the
                           extensibility router (trained without one member, which `add_retriever` then adds)
    evaluate               every system on every set's test labels: a system's EM/F1 on a query is the label of
                           the member it routes that query to (`r3ag_eval`)
    report                 reports/r3ag.json and reports/r3ag.md (`r3ag_report`)

State lives in `<cache>/r3ag/<profile>-<hash>` (routers, results) and `<cache>/r3ag/labels/...` (runs, labels).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from routerank.errors import SpecError
from routerank.fsutil import atomic_write, cache_root, without_later_defaults
from routerank.generate.templates import get_template
from routerank.r3ag.labelling import LabelSettings, build_labels, work_dir_for
from routerank.r3ag.labels import RoutingLabels
from routerank.r3ag.pool import PoolConfig
from routerank.stages import Stage, Step, read_toml_config, run_plan

ADDED_LATER = {
    "abstain_margins": (0.0,),
    "folds": 1,
    "safe_abstention": False,
    "switch_margins": (0.0,),
    "template_eval": "",
}
"""Settings added after work dirs were keyed: at these values they stay out of the digest."""
VARIANTS = {  # name -> R3AGConfig overrides
    "r3ag": {},
    "r3ag-no-quality": {"quality": False},
    "r3ag-no-utility": {"utility": False},
    "r3ag-mean-fusion": {"fusion": "mean"},
}


@dataclass(frozen=True)
class R3AGExperimentConfig:
    """datasets: QA sets with qrels and answers. pool: the pool TOML. train_queries / test_queries: seeded samples
    of the train and test splits per set (0 = all). k, model, template, max_new_tokens, context_tokens,
    batch_size: the label generator. epochs: per R3AG training stage. holdout: share of each set's train labels
    held out to choose pooled vs per-set training. mode: "auto" (that choice), "pooled" or "per-set".
    folds: 1 = one seeded split holding out `holdout`; k > 1 = k-fold cross-validation over the train labels (every
    query held out once), for the same choice.
    abstain_margins: the `R3AGConfig.abstain_margin` values tried on the same held-out queries; the best (mode,
    margin) pair serves every R3AG variant (ties: pooled, then the smaller margin). (0.0,) is the plain argmax.
    switch_margins: the `R3AGConfig.switch_margin` values tried with them: how far another retriever's cosine must
    lead the default member's (the best retriever on the train labels) to serve a query. (0.0,) is the argmax.
    safe_abstention: only (mode, margin) pairs whose held-out R0 routes lose no EM against always-retrieve on every
    set qualify, and margin 2 (never abstain) is always in the grid (`r3ag_eval.choose_mode`).
    extend: the member left out of training and added afterwards with `add_retriever`.
    generator_eval: a second generator's model spec; it labels the test queries again, and every system's routes
    (learned from the first generator's labels) are scored on those labels too (cross-generator transfer); empty =
    none. template_eval: its answer template (empty: `template`).
    features: the router's frozen query encoder. profile: names the work dir."""

    datasets: tuple[str, ...] = ("squad-dev", "pubmedqa", "tatqa")
    pool: str = "configs/r3ag-pool.toml"
    train_split: str = "train"
    test_split: str = "test"
    train_queries: int | None = 120
    test_queries: int | None = 80
    seed: int = 13
    k: int = 3
    model: str = "smollm2"
    template: str = "plain"
    max_new_tokens: int = 32
    context_tokens: int = 1024
    batch_size: int = 8
    epochs: int = 30
    holdout: float = 0.25
    mode: str = "auto"
    folds: int = 1
    abstain_margins: tuple[float, ...] = (0.0,)
    safe_abstention: bool = False
    switch_margins: tuple[float, ...] = (0.0,)
    extend: str = "rm3"
    generator_eval: str = ""
    template_eval: str = ""
    features: str = "minilm"
    profile: str = "cpu"

    def __post_init__(self) -> None:
        if not self.datasets:
            raise SpecError("name at least one dataset")
        if self.mode not in ("auto", "pooled", "per-set"):
            raise SpecError(f"unknown mode {self.mode!r}", fix="auto | pooled | per-set")
        if not 0 < self.holdout < 1:
            raise SpecError(f"holdout must lie in (0, 1), got {self.holdout}")
        if self.folds < 1:
            raise SpecError(f"folds must be at least 1, got {self.folds}")
        if not self.abstain_margins or any(not 0 <= m <= 2 for m in self.abstain_margins):
            raise SpecError(f"abstain_margins must be values in [0, 2], got {list(self.abstain_margins)}")
        if not self.switch_margins or any(not 0 <= m <= 2 for m in self.switch_margins):
            raise SpecError(f"switch_margins must be values in [0, 2], got {list(self.switch_margins)}")
        if not isinstance(self.safe_abstention, bool):
            raise SpecError(f"safe_abstention must be true or false, got {self.safe_abstention!r}")

    @classmethod
    def load(cls, path: str | Path) -> R3AGExperimentConfig:
        return read_toml_config(
            cls,
            path,
            tuples=("datasets", "abstain_margins", "switch_margins"),
            none_if_zero=("train_queries", "test_queries"),
        )

    def label_settings(self, split: str) -> LabelSettings:
        sample = self.train_queries if split == self.train_split else self.test_queries
        return LabelSettings(
            split,
            sample,
            self.seed,
            self.k,
            model=self.model,
            template=self.template,
            max_new_tokens=self.max_new_tokens,
            context_tokens=self.context_tokens,
            batch_size=self.batch_size,
        )

    def eval_label_settings(self) -> LabelSettings:
        """The second generator's test labels: the same queries, contexts and decoding, another model."""
        if not self.generator_eval:
            raise SpecError("no second generator is configured", fix='set generator_eval = "hf:<folder>"')
        template = self.template_eval or self.template
        return replace(self.label_settings(self.test_split), model=self.generator_eval, template=template)

    def digest(self) -> str:
        record = without_later_defaults(asdict(self), ADDED_LATER)
        record["template_version"] = get_template(self.template).version  # new answers: new labels, new routers
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:10]


class R3AGExperiment:
    """The plan's steps over one work dir; the actions are small functions in r3ag_eval and r3ag_report."""

    def __init__(self, config: R3AGExperimentConfig, work_dir: str | Path | None = None, report: Path | None = None):
        self.config = config
        self.pool = PoolConfig.read(config.pool)
        self.work = Path(work_dir) if work_dir else cache_root() / "r3ag" / f"{config.profile}-{config.digest()}"
        self.report = Path(report) if report is not None else Path("reports/r3ag.md")
        self._features = None

    def label_dir(self, dataset: str, split: str) -> Path:
        return work_dir_for(dataset, self.pool, self.config.label_settings(split))

    def labels(self, dataset: str, split: str) -> RoutingLabels:
        return RoutingLabels.load(self.label_dir(dataset, split) / "labels")

    def has_labels(self, dataset: str, split: str) -> bool:
        return (self.label_dir(dataset, split) / "labels" / "labels.json").exists()

    def eval_label_dir(self, dataset: str) -> Path:
        """Where the second generator's test labels live (`generator_eval`)."""
        return work_dir_for(dataset, self.pool, self.config.eval_label_settings())

    def eval_labels(self, dataset: str) -> RoutingLabels:
        return RoutingLabels.load(self.eval_label_dir(dataset) / "labels")

    def has_eval_labels(self, dataset: str) -> bool:
        return (self.eval_label_dir(dataset) / "labels" / "labels.json").exists()

    def encoder(self):
        """The routers' frozen query encoder, unmemoised (texts -> [n, d]); loads on its first call."""
        from routerank.r3ag.router import encoder_features

        return encoder_features(self.config.features)

    def features(self):
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

    def steps(self) -> list[Step]:
        from routerank.experiments import r3ag_eval, r3ag_report

        splits = (self.config.train_split, self.config.test_split)
        steps = [
            Step(
                f"labels:{ds}:{split}",
                "labels",
                done=lambda ds=ds, split=split: self.has_labels(ds, split),
                action=lambda ds=ds, split=split: build_labels(
                    ds, self.pool, self.config.label_settings(split), work_dir=self.label_dir(ds, split)
                ),
            )
            for ds in self.config.datasets
            for split in splits
        ]
        if self.config.generator_eval:
            steps += [
                Step(
                    f"labels:{ds}:{self.config.test_split}:{self.config.generator_eval}",
                    "labels",
                    done=lambda ds=ds: self.has_eval_labels(ds),
                    action=lambda ds=ds: build_labels(
                        ds, self.pool, self.config.eval_label_settings(), work_dir=self.eval_label_dir(ds)
                    ),
                )
                for ds in self.config.datasets
            ]

        def ready() -> bool:
            firsts = all(self.has_labels(ds, s) for ds in self.config.datasets for s in splits)
            return firsts and (not self.config.generator_eval or all(map(self.has_eval_labels, self.config.datasets)))

        steps += [
            Step("train", "train", lambda: (self.work / "train.json").exists(), lambda: r3ag_eval.train(self), ready),
            Step(
                "evaluate",
                "evaluate",
                lambda: (self.work / "results.json").exists(),
                lambda: r3ag_eval.evaluate(self),
                lambda: (self.work / "train.json").exists(),
            ),
            Step(
                "report",
                "report",
                lambda: False,
                lambda: r3ag_report.write(self, self.report),
                lambda: (self.work / "results.json").exists(),
            ),
        ]
        return steps

    def run(self, max_minutes: float | None = None, only: set[str] | None = None) -> list[Stage]:
        return run_plan(self.steps(), self.work / "locks", max_minutes=max_minutes, only=only, tag="r3ag")

    def write_json(self, name: str, record: dict) -> Path:
        path = self.work / name
        with atomic_write(path) as out:
            json.dump(record, out, indent=1)
        return path


def main_from_cli(
    config: Path, work_dir: Path | None, report: Path, max_minutes: float | None, only: str | None
) -> list[Stage]:
    experiment = R3AGExperiment(R3AGExperimentConfig.load(config), work_dir, report)
    kinds = {k.strip() for k in only.split(",")} if only else None
    stages = experiment.run(max_minutes, kinds)
    for stage in stages:
        seconds = f" {stage.seconds:.0f}s" if stage.seconds is not None else ""
        print(f"{stage.name}: {stage.note}{seconds}")
    print(f"state: {experiment.work} (labels under {cache_root() / 'r3ag' / 'labels'})")
    return stages
