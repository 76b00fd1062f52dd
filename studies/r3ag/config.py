"""The R3AG experiment's settings (`R3AGExperimentConfig`, from its TOML in studies/r3ag/configs/) and the R3AG
variants it trains; below both the stages that use them (`training`, `evaluation`, `report`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from routerank.errors import SpecError
from routerank.generate.templates import get_template
from routerank.r3ag.labelling import LabelSettings
from routerank.stages import read_toml_config
from studies.base import StudyConfig

VARIANTS = {  # name -> R3AGConfig overrides
    "r3ag": {},
    "r3ag-no-quality": {"quality": False},
    "r3ag-no-utility": {"utility": False},
    "r3ag-mean-fusion": {"fusion": "mean"},
}


@dataclass(frozen=True)
class R3AGExperimentConfig(StudyConfig):
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
    set qualify, and margin 2 (never abstain) is always in the grid (`studies.r3ag.training.choose_mode`).
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

    ADDED_LATER = MappingProxyType(
        {"abstain_margins": (0.0,), "folds": 1, "safe_abstention": False, "switch_margins": (0.0,), "template_eval": ""}
    )  # settings added after work dirs were keyed: at these values they stay out of the digest

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
        """The TOML file; 0 means all for `train_queries` and `test_queries`."""
        return read_toml_config(
            cls,
            path,
            tuples=("datasets", "abstain_margins", "switch_margins"),
            none_if_zero=("train_queries", "test_queries"),
        )

    def label_settings(self, split: str) -> LabelSettings:
        """The label generator's settings for the train or test split's seeded sample."""
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

    def digest_extra(self) -> dict[str, int]:
        """The answer template's version: new answers mean new labels, so new routers."""
        return {"template_version": get_template(self.template).version}
