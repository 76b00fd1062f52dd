"""The retrieval-vs-generation study's settings, read from TOML; the digest keys its work dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routerank.generate.templates import get_template
from routerank.stages import read_toml_config
from studies.base import StudyConfig

TUPLES = (
    "qa_datasets",
    "closed_set",
    "choices",
    "qa_retrievers",
    "mixed_candidates",
    "rank_datasets",
    "rank_systems",
    "lm_datasets",
)


@dataclass(frozen=True)
class RvgConfig(StudyConfig):
    """What the study runs.

    Question answering. qa_datasets: sets with gold answers. qa_sample / choose_sample: seeded test and train
    queries per set (0: all); the train sample only chooses the mixed context. model / template / max_new_tokens /
    context_tokens / batch_size: the one `Generator` that answers every condition (template "": the model family's).
    closed_set / choices: sets answered by choosing among `choices` (PubMedQA's yes/no/maybe) instead of free text.
    k: documents read per query. qa_retrievers: the retrieve-then-read pipelines; the first is the baseline of the
    paired tests. reranked: the reranked pipeline. genread: the generate-then-read spec. mixed_candidates: mix specs
    of retrieved and generated passages, one chosen per set by mean F1 on the train sample.

    Ranking. rank_datasets / rank_sample: seeded test queries per set (0: all). rank_systems: pipeline specs; the
    first is the baseline of the paired tests.

    Language modelling. lm_datasets / lm_passages: seeded corpus documents per set with at least `lm_min_tokens`
    words, cut to their first `lm_max_words` words, then split at the middle word. lm_k: BM25 documents before the
    first half (each cut to `lm_doc_words` words, so a long table cannot crowd out the prompt). lm_batch_size:
    sequences per forward pass.
    """

    profile: str = "cpu"
    seed: int = 13
    model: str = "smollm2"
    template: str = ""
    max_new_tokens: int = 32
    context_tokens: int = 1024
    batch_size: int = 8
    qa_datasets: tuple[str, ...] = ("squad-dev", "xquad-en", "pubmedqa", "tatqa", "hotpotqa-500")
    qa_sample: int | None = 60
    choose_sample: int | None = 30
    closed_set: tuple[str, ...] = ("pubmedqa",)
    choices: tuple[str, ...] = ("yes", "no", "maybe")
    k: int = 3
    qa_retrievers: tuple[str, ...] = ("bm25", "dense", "hybrid")
    reranked: str = "hybrid>>ce:starter@20"
    genread: str = "genread"
    mixed_candidates: tuple[str, ...] = (
        "mix(2*hybrid,1*genread)",
        "mix(1*genread,2*hybrid)",
        "mix(1*hybrid,1*genread)",
    )
    rank_datasets: tuple[str, ...] = ("scifact", "nfcorpus", "coliee-statutes", "tatqa")
    rank_sample: int | None = 100
    rank_systems: tuple[str, ...] = (
        "bm25",
        "dense",
        "hybrid",
        "hyde(bm25)",
        "hyde(dense)",
        "bm25>>ce:starter@50",
        "hybrid>>ce:starter@50~auto",
    )
    lm_datasets: tuple[str, ...] = ("scifact", "nfcorpus", "coliee-statutes", "tatqa", "squad-dev")
    lm_passages: int = 40
    lm_min_tokens: int = 64
    lm_max_words: int = 256
    lm_k: int = 2
    lm_doc_words: int = 128
    lm_batch_size: int = 4

    UNKEYED = ("profile", "batch_size", "lm_batch_size")

    def digest_extra(self) -> dict[str, Any]:
        """The answer template's version when one is named: a new template means new answers."""
        return {"template_version": get_template(self.template).version} if self.template else {}

    @classmethod
    def load(cls, path: str | Path) -> RvgConfig:
        """The config at `path` (unknown keys are an error; a sample of 0 means all)."""
        return read_toml_config(cls, path, tuples=TUPLES, none_if_zero=("qa_sample", "choose_sample", "rank_sample"))
