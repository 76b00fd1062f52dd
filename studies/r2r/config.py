"""The R2R experiment's settings (`R2RConfig`), from its TOML in studies/r2r/configs/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from routerank.errors import SpecError
from routerank.r2r.eag import GRANULARITIES
from routerank.stages import read_toml_config
from routerank.train.losses import canonical_objective
from studies.base import StudyConfig

LABEL_SHARD = 512  # (query, doc, expert) triples per Ray scoring shard
ALPHA_SYSTEMS = ("pooled", "plain", "oracle", "r2r")  # systems that choose their own interpolation weight


@dataclass(frozen=True)
class R2RConfig(StudyConfig):
    """One R2R experiment: its domains, the backbone, how the experts train, and how the systems are evaluated.
    Every field but `ray` goes into the work dir's digest (`<cache>/r2r/<profile>-<digest>`), a field added later
    only away from its old default (`ADDED_LATER`). In a TOML file (`load`), 0 means None for `train_queries` and
    `test_queries`.

    profile: the work dir's name prefix (cpu, gpu, ce-quick, ...).
    domains: dataset -> domain label; at least two, each label its own. Each dataset gets an EAG and a plain expert.
    backbone: the reranker every expert adapts: an LLM spec (`smollm2`, `hf:...`) or `ce:<folder>`.
    objective: the experts' loss, `infonce` or `bce` (`ExpertConfig.objective`). The digest keys it as written, so a
        profile keyed with an older name (`contrastive`, `sft`: the cpu and gpu profiles) keeps it to find its work
        dir; the experts' configs store the canonical name either way.
    train_queries: training queries per domain (`ExpertConfig.max_queries`); None = all.
    dev_queries: per domain, the experts' dev queries and the most dev queries an interpolation weight is chosen on.
    dev_from_backbone: `ExpertConfig.dev_from_backbone`: without a dev split, dev = the backbone's held-out queries.
    negatives: documents per training group below the positive (`ExpertConfig.negatives`).
    negative_skip: how many of the miner's top non-relevant documents are passed over before negatives
        (`ExpertConfig.negative_skip`).
    miner: the retriever (a pipeline spec) that mines the experts' negatives.
    max_doc_tokens: document tokens per pair on an LLM backbone, the pair length on a cross-encoder; in training
        and scoring alike.
    epochs, lr, grad_accum, eval_every: the experts' optimisation (`ExpertConfig`); its other fields keep their
        defaults.
    test_queries: test queries per domain, a seeded sample; None = all. The routing table uses every test query.
    depth: how many of each query's candidates are reranked (and the depth interpolation weights are chosen at).
    candidates: depth of each query's first-stage run, its order kept below `depth`; 100, so R@100 can be measured.
    ablation: extra EAG masking granularities, one more expert per ablation domain each; "none" (the plain experts,
        system c) and "ner+patterns" (the EAG experts) always run, so only "ner" can be added.
    ablation_domains: datasets the ablation runs on; empty = all domains.
    router_train_queries: train-split queries per domain, a seeded sample, that the latent router is fitted on.
    router_threshold: a query whose top router probability is below it goes to the generalist (the bare backbone);
        0 sends every query to an expert.
    cross_encoder: reranker spec of system (f), e.g. `ce:<folder>`; None leaves system (f) out.
    first_stage: the candidates' retriever (any pipeline spec without `>>`); plain BM25 stays the reference.
    interpolate: also mix each system with the first stage, its weight chosen on dev queries, and report that.
    seed: the test, dev and router query samples, and every expert's seed.
    dtype: "bf16" scores (never trains) a cross-encoder backbone under bf16 autocast (an LLM backbone refuses it);
        None or "fp32" is fp32.
    forgetting: score every EAG expert on every other domain (the forgetting matrix); off skips those runs.
    ray: "local" or a cluster address: experts train as Ray tasks and pairs are scored on Ray actors; None runs
        everything in this process.
    """

    profile: str
    domains: dict[str, str]  # dataset -> domain label
    backbone: str = "smollm2"
    objective: str = "infonce"  # keyed as written (see above)
    train_queries: int | None = 300
    dev_queries: int = 50
    dev_from_backbone: bool = False  # ExpertConfig.dev_from_backbone: dev = the backbone's held-out train queries
    negatives: int = 3
    negative_skip: int = 0  # miner's top non-relevant documents passed over before negatives (ExpertConfig)
    miner: str = "bm25"  # the retriever that mines the experts' negatives
    max_doc_tokens: int = 192
    epochs: int = 1
    lr: float = 2e-4
    grad_accum: int = 4
    eval_every: int = 25
    test_queries: int | None = 50  # per domain, seeded; None = all
    depth: int = 20
    candidates: int = 100  # BM25 depth kept below the reranked top (R@100)
    ablation: tuple[str, ...] = ("ner",)  # extra EAG granularities (none = system c, ner+patterns = system e)
    ablation_domains: tuple[str, ...] = ()  # datasets the ablation runs on; empty = all
    router_train_queries: int = 300  # per domain
    router_threshold: float = 0.0  # below it a query goes to the generalist
    cross_encoder: str | None = None  # reranker spec for system (f)
    first_stage: str = "bm25"  # the candidates' retriever (any pipeline spec without `>>`)
    interpolate: bool = False  # also report each system mixed with the first stage, alpha chosen on dev
    seed: int = 13
    dtype: str | None = None  # "bf16": score (not train) a cross-encoder backbone under bf16 autocast
    forgetting: bool = True  # score every EAG expert on every other domain (the forgetting matrix)
    ray: str | None = None  # "local" or a cluster address: train experts as Ray tasks, score pairs on Ray actors

    UNKEYED = ("ray",)  # where it runs does not change results
    ADDED_LATER = MappingProxyType({"dev_from_backbone": False, "dtype": None, "forgetting": True})

    def __post_init__(self) -> None:
        canonical_objective(self.objective)  # an unknown name fails here; the field keeps its spelling (the digest)
        if len(self.domains) < 2:
            raise SpecError("the R2R experiment needs at least two domains")
        if len(set(self.domains.values())) != len(self.domains):
            raise SpecError("two datasets share a domain label", fix="give each dataset its own label")
        unknown = [d for d in self.ablation_domains if d not in self.domains]
        if unknown:
            raise SpecError(f"ablation_domains {unknown} are not among the domains {list(self.domains)}")
        if self.dtype not in (None, "fp32", "bf16"):
            raise SpecError(f"unknown dtype {self.dtype!r}", fix="fp32 (default) or bf16 (cross-encoder scoring)")
        bad = [g for g in self.ablation if g not in GRANULARITIES or g in ("none", "ner+patterns")]
        if bad:
            raise SpecError(f"ablation granularities {bad}", fix="'none' and 'ner+patterns' always run; add 'ner'")

    @classmethod
    def load(cls, path: str | Path) -> R2RConfig:
        """The TOML file; 0 means None for `train_queries` and `test_queries`."""
        return read_toml_config(
            cls, path, tuples=("ablation", "ablation_domains"), none_if_zero=("train_queries", "test_queries")
        )
