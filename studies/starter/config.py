"""The starter bundle's build settings (`StarterConfig`), from its TOML in studies/starter/configs/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from routerank.errors import SpecError
from routerank.stages import read_toml_config
from studies.base import StudyConfig


@dataclass(frozen=True)
class StarterConfig(StudyConfig):
    """What the starter is trained on, how, and how it is measured.

    datasets: the domains; each gets an expert named after its dataset, and the router learns to tell them apart.
    base_model: the frozen encoder under every adapter (the packaged MiniLM). max_length: tokens per pair.
    autocast: "bf16" trains (and scores, in this build) under bfloat16 autocast; "none" is fp32.
    train_queries: training queries per dataset for the generalist and each expert (0 = every one).
    generalist_*: the generalist's learning rate and epochs: every weight but the embeddings trains, and it ships
        as those weights in fp16; hard negatives per group (`negatives`) from the hybrid miner.
    lora_r, lora_lr: the alternative the build measures on dev against it: a LoRA adapter plus head over the frozen
        base model, with the same data and budget.
    expert_*: each expert's LoRA rank, learning rate and epochs, trained over the shipped generalist.
    dev_queries: per dataset, held out (or from the dev split) for early stopping and for choosing alpha.
    router_queries: training queries per dataset the router learns from. ood_datasets: queries that belong to no
        domain (their train split, else test), against which the threshold is set on dev: below it a query goes
        to the generalist. They never score anything.
    first_stage: the candidates every system reranks on test; depth: how many of them.
    also_tune: more first stages whose interpolation weights are chosen on dev and shipped (not measured on test).
    test_queries: per-dataset cap on the test sets (0 = all).
    reference_pairs: query-document pairs per dataset whose scores the manifest keeps.
    """

    profile: str = "cpu"
    datasets: tuple[str, ...] = ("scifact", "nfcorpus", "tatqa", "coliee-statutes")
    base_model: str = "minilm"
    max_length: int = 128
    autocast: str = "bf16"
    train_queries: int = 0
    negatives: int = 7
    generalist_lr: float = 1e-4
    generalist_epochs: int = 1
    lora_r: int = 16
    lora_lr: float = 2e-3
    expert_lora_r: int = 8
    expert_lr: float = 3e-4
    expert_epochs: int = 1
    expert_negatives: int = 7
    dev_queries: int = 50
    eval_every: int = 100
    patience: int = 3
    router_queries: int = 300
    ood_datasets: tuple[str, ...] = ("squad-dev", "hotpotqa-500")
    first_stage: str = "hybrid"
    also_tune: tuple[str, ...] = ("bm25",)
    depth: int = 20
    test_queries: int = 0
    reference_pairs: int = 4
    seed: int = 13

    # what is measured, not what is trained: resizing the test sample or the reference set keeps every trained stage
    UNKEYED = ("test_queries", "reference_pairs")

    def __post_init__(self) -> None:
        if len(self.datasets) < 2:
            raise SpecError("the starter needs at least two domains to route between")
        if self.max_length < 16 or self.depth < 1 or self.dev_queries < 1:
            raise SpecError("max_length must be at least 16, depth and dev_queries at least 1")
        if self.autocast not in ("none", "bf16"):
            raise SpecError(f"autocast is none or bf16, got {self.autocast!r}")

    @classmethod
    def load(cls, path: str | Path) -> StarterConfig:
        """The TOML file."""
        return read_toml_config(cls, path, tuples=("datasets", "ood_datasets", "also_tune"))
