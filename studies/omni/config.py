"""The Omni-RAG study's settings, read from TOML; the digest keys its work dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from routerank.stages import read_toml_config
from studies.base import StudyConfig


@dataclass(frozen=True)
class OmniConfig(StudyConfig):
    """What the study runs.

    first_stage: the pipeline every query (or sub-query) runs through. hotpot: the two-paragraph multi-hop set.
    decomposition: the decomposer mode ("rules" costs no LLM call). aggregates: the aggregations tried; one is chosen
    on train queries per set. datasets / train_pairs / test_pairs / seed: the multi-intent benchmark (train pairs
    from train splits choose, test pairs from test splits measure). noise_rates: typo rates. speller_distances: the
    speller's max edit distances tried on train pairs at `choose_at_noise`. router: the R2R model whose router
    routes each sub-query (its domains are the datasets it was trained on).

    llm_model / llm_pairs / llm_hotpot: the LLM stage (`studies.omni.llm`): LLM denoising, LLM decomposition and the
    multi-query baseline on the first `llm_pairs` test pairs at `choose_at_noise` and the first `llm_hotpot`
    hotpotqa-500 test questions (0 and 0: no LLM stage). Its file is keyed by these, so they leave the other stages'
    work dir as it is.
    """

    profile: str = "cpu"
    first_stage: str = "bm25"
    hotpot: str = "hotpotqa-500"
    decomposition: str = "rules"
    aggregates: tuple[str, ...] = ("rrf", "round-robin", "max")
    datasets: tuple[str, ...] = ("scifact", "nfcorpus", "tatqa", "coliee-statutes", "squad-dev", "pubmedqa")
    train_pairs: int = 200
    test_pairs: int = 300
    seed: int = 13
    noise_rates: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2)
    choose_at_noise: float = 0.1
    speller_distances: tuple[int, ...] = (1, 2)
    router: str = "starter"
    llm_model: str = "smollm2"
    llm_pairs: int = 0
    llm_hotpot: int = 0

    UNKEYED = ("profile", "llm_model", "llm_pairs", "llm_hotpot")

    @classmethod
    def load(cls, path: str | Path) -> OmniConfig:
        """The config at `path` (unknown keys are an error)."""
        return read_toml_config(cls, path, tuples=("aggregates", "datasets", "noise_rates", "speller_distances"))
