"""The settings of issue 12's experiment (`llm_training`): its own TOML, and the trainers' TOMLs it points at.

The experiment owns only what it compares on (test sets, sample, depth, the zero-shot scorer) and the SFT and
contrastive settings; DeAR, ProRank and Rank-R1 each keep their own config file, the one `routerank train ...`
reads, so a method trains the same way alone and in the experiment. Every error names the file and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from routerank.errors import RouterankError, SpecError
from routerank.r2r.trainer import ExpertConfig
from routerank.stages import read_toml_config
from routerank.train.dear import TERMS, DeARConfig
from routerank.train.distill import check_alpha_setting
from routerank.train.prorank import ProRankConfig
from routerank.train.rank_r1 import RankR1Config
from studies.cli import parse_kinds

METHODS = ("sft", "contrastive", "dear", "prorank", "rank-r1")
ALL_TERMS = "+".join(TERMS)
UNTRAINED = ("bm25", "zero-shot", "teacher")
INFERENCE_VARIANTS = {"shuffled-dear": "dear"}
"""Rows that rerank with another row's adapter under another inference setting (no training of their own):
`shuffled-dear` shows DeAR's listwise student its candidates in a seeded random order, not BM25's."""
ONLY_KINDS = ("train", "score")
# ExpertConfig fields the experiment sets itself: the same backbone, prompt and passage length as zero-shot
EXPERT_FIXED = ("dataset", "domain", "objective", "backbone", "template", "max_doc_tokens")


@dataclass(frozen=True)
class LLMTrainingConfig:
    """profile: names the work dir and the report. datasets: the test sets (SFT and contrastive train on their
    pooled train splits; DeAR, ProRank and Rank-R1 on what their own configs name). test_queries: a seeded sample
    per dataset (None: all); depth: BM25 candidates reranked.
    backbone, template, max_doc_tokens: the zero-shot scorer, which SFT and contrastive train; every method config
    must name the same backbone. methods: the trained families this profile runs (`METHODS`).
    expert: ExpertConfig settings for SFT and contrastive (all but `EXPERT_FIXED`).
    dear_config, prorank_config, rank_r1_config: the trainers' TOML files (relative to this file when loaded).
    dear_ablations: stage-1 loss-term sets, each trained and scored (`ce`, `ranknet+kl`, ...).
    teacher, teacher_alpha: the teacher row's reranker and its mix with BM25 (a number, "auto" or "none");
    empty: the DeAR config's, so the row is the teacher that was distilled.
    rank_r1_options: extra setwise options for the Rank-R1 row, e.g. "think=0" (label logits, no reasoning)."""

    profile: str
    datasets: tuple[str, ...] = ("scifact", "nfcorpus")
    test_queries: int | None = 100
    depth: int = 20
    seed: int = 13
    backbone: str = "smollm2"
    template: str = "chatml"
    max_doc_tokens: int = 128
    methods: tuple[str, ...] = METHODS
    expert: dict = field(default_factory=dict)
    dear_config: str = "configs/dear-cpu.toml"
    prorank_config: str = "configs/prorank-cpu.toml"
    rank_r1_config: str = "configs/rank-r1-cpu.toml"
    dear_ablations: tuple[str, ...] = ("ce", "ranknet", "kl", ALL_TERMS)
    teacher: str = ""
    teacher_alpha: float | str = ""
    rank_r1_options: str = ""

    def __post_init__(self) -> None:
        if not self.profile.strip():
            raise SpecError("profile is empty", fix='name the profile, e.g. profile = "cpu"')
        if not self.datasets:
            raise SpecError("name at least one test dataset", fix='datasets = ["scifact", "nfcorpus"]')
        if self.depth < 2:
            raise SpecError(f"depth must be at least 2, got {self.depth}")
        if self.test_queries is not None and self.test_queries < 1:
            raise SpecError(f"test_queries must be positive (0: all), got {self.test_queries}")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise SpecError(f"unknown methods {unknown}", fix=f"choose from {list(METHODS)}")
        for terms in self.dear_ablations:
            parts = terms.split("+")
            if not terms or not set(parts) <= set(TERMS) or len(set(parts)) != len(parts):
                raise SpecError(f"bad DeAR ablation {terms!r}", fix="terms joined by '+': ce, ranknet, kl, ce+kl, ...")
        canonical = ("+".join(t for t in TERMS if t in terms.split("+")) for terms in self.dear_ablations)
        object.__setattr__(self, "dear_ablations", tuple(dict.fromkeys(canonical)))  # "kl+ce" is "ce+kl"
        fields = set(ExpertConfig.__dataclass_fields__)
        stray = sorted(set(self.expert) - fields)
        if stray:
            raise SpecError(f"expert settings {stray} are not ExpertConfig fields", fix=f"known: {sorted(fields)}")
        fixed = sorted(set(self.expert) & set(EXPERT_FIXED))
        if fixed:
            raise SpecError(f"expert settings {fixed} are set by the experiment", fix="set them at the top level")
        if self.teacher_alpha != "":
            check_alpha_setting(self.teacher_alpha)

    @classmethod
    def load(cls, path: str | Path) -> LLMTrainingConfig:
        """The TOML file; the method config paths in it are read relative to it."""
        path = Path(path)
        try:
            config = read_toml_config(
                cls, path, tuples=("datasets", "methods", "dear_ablations"), none_if_zero=("test_queries",)
            )
        except RouterankError as exc:
            if exc.path is not None:
                raise
            raise type(exc)(exc.message, path=path, fix=exc.fix) from None
        moved = {}
        for key in ("dear_config", "prorank_config", "rank_r1_config"):
            given = Path(getattr(config, key)).expanduser()
            moved[key] = str(given if given.is_absolute() else Path(os.path.normpath(path.parent / given)))
        return replace(config, **moved)


@dataclass(frozen=True)
class MethodConfigs:
    """Each trainer's own config, None where the profile does not run that method (DeAR's is still read for the
    teacher row's defaults)."""

    dear: DeARConfig | None
    prorank: ProRankConfig | None
    rank_r1: RankR1Config | None


def load_method_configs(config: LLMTrainingConfig) -> MethodConfigs:
    """Each trainer's config from its TOML, for the methods this profile runs; each must train `config.backbone`."""

    def read(cls, key: str, method: str, tuples: tuple[str, ...]):
        if method not in config.methods:
            return None
        path = getattr(config, key)
        loaded = read_toml_config(cls, path, tuples=tuples, none_if_zero=("max_queries",))
        if loaded.backbone != config.backbone:
            raise SpecError(
                f"{key} trains backbone {loaded.backbone!r}, not the experiment's {config.backbone!r}",
                path=path,
                fix="every method trains one backbone, so their rows compare: make the two backbones the same",
            )
        return loaded

    dear = read(DeARConfig, "dear_config", "dear", ("datasets", "target_modules"))
    teacher_needs_dear = not config.teacher or config.teacher_alpha == ""
    if dear is None and teacher_needs_dear:  # the teacher row defaults to DeAR's teacher
        dear = read_toml_config(DeARConfig, config.dear_config, tuples=("datasets", "target_modules"))
    return MethodConfigs(
        dear,
        read(ProRankConfig, "prorank_config", "prorank", ("target_modules",)),
        read(RankR1Config, "rank_r1_config", "rank-r1", ("target_modules",)),
    )


def parse_only(only: str | None) -> set[str] | None:
    """`--only train,score` as a set of stage kinds (None: all)."""
    return parse_kinds(only, ONLY_KINDS)
