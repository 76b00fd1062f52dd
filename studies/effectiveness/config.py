"""The effectiveness table's settings (`EffectivenessConfig`), from its TOML in studies/effectiveness/configs/."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from routerank.errors import SpecError
from routerank.pipeline import fusion_children
from routerank.stages import read_toml_config
from studies.base import StudyConfig

DEV_TUNED = "~dev"  # a first stage `weighted(...)~dev`: fusion weights chosen on each dataset's dev queries


@dataclass(frozen=True)
class EffectivenessConfig(StudyConfig):
    """datasets: test sets to report. rerankers: label -> reranker spec (e.g. {"ce-pooled" = "ce:ce-pooled"});
    none at all reports the first stages alone.
    first_stages: candidate generators; the first is the significance baseline "BM25", and `hybrid` the second.
    A weighted fusion with `~dev` after it (`weighted(bm25,dense:st:<folder>)~dev`) has its weights chosen on each
    dataset's dev queries first (`routerank.tune`), and the row says which.
    depth: candidates reranked per query. test_queries: per-dataset cap, a seeded sample (absent or 0 = all).
    dev_queries: per dataset, for choosing alpha (dev split; else the model's held-out train queries).
    options: label -> reranker options (e.g. {"ce-pooled" = {dtype = "bf16"}}).
    llm_rows: a rerank-table JSON whose sampled LLM rows are carried into the report, labelled as samples.
    ray: "local" or a cluster address: rerank stages run in query shards on Ray actors (None: in-process).
    rerank_first_stages: the first stages the rerankers rerank (empty: all); the others are reported alone."""

    datasets: tuple[str, ...]
    rerankers: dict[str, str] = field(default_factory=dict)
    first_stages: tuple[str, ...] = ("bm25", "hybrid")
    depth: int = 100
    test_queries: dict[str, int] = field(default_factory=dict)
    dev_queries: int = 50
    options: dict[str, dict] = field(default_factory=dict)
    llm_rows: str | None = "reports/rerank-table.json"
    seed: int = 13
    ray: str | None = None
    rerank_first_stages: tuple[str, ...] = ()

    # stage outputs are per (dataset, split, system) and test samples have their own folders, so adding a dataset or
    # a first stage, or resizing a sample, reuses every finished stage
    UNKEYED = ("test_queries", "llm_rows", "datasets", "first_stages", "ray", "rerank_first_stages")

    def __post_init__(self) -> None:
        if not self.datasets:
            raise SpecError("name at least one dataset")
        stray = [s for s in self.rerank_first_stages if s not in self.first_stages]
        if stray:
            raise SpecError(f"rerank_first_stages {stray} are not among the first_stages")
        for stage in self.first_stages:
            if stage.endswith(DEV_TUNED) and fusion_children(stage[: -len(DEV_TUNED)])[0] != "weighted":
                raise SpecError(f"{stage!r}: only a weighted fusion has weights to choose on dev")
        if self.depth < 1 or self.dev_queries < 1:
            raise SpecError("depth and dev_queries must be at least 1")
        unknown = sorted(set(self.test_queries) - set(self.datasets))
        if unknown:
            raise SpecError(f"test_queries names datasets {unknown} that are not in `datasets`")

    @classmethod
    def load(cls, path: str | Path) -> EffectivenessConfig:
        """The TOML file."""
        return read_toml_config(cls, path, tuples=("datasets", "first_stages", "rerank_first_stages"), none_if_zero=())
