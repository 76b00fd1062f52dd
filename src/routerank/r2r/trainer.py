"""Train one R2R domain expert: a LoRA adapter over a frozen reranker backbone, a yes/no LLM or a cross-encoder.

Hard negatives come from the shared miner (`routerank.train.groups`): each query's best judged positive against
the miner's top n documents below it. The loss is InfoNCE (tau = 1.0) or BCE (`routerank.train.losses`). With
EAG, stage 1 trains on entity-abstracted groups and stage 2 continues on the original ones. The loop is the shared
resumable `GroupTrainer`: checkpoints in `<out>.state/`, and a rerun with the same config reaches the same
weights as an unbroken run. The backbone is any spec `routerank.rerank.backbones` loads (`smollm2`,
`ce:<folder>`); LoRA targets default to the backbone's attention (and, on an encoder, dense) layers.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from routerank.data.devsplit import held_out_queries
from routerank.data.registry import load_dataset
from routerank.data.types import Dataset, Query
from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_dir, cache_root, without_later_defaults
from routerank.r2r.eag import GRANULARITIES, EntityAbstractor
from routerank.rerank.backbones import folder_of, load_backbone
from routerank.train.groups import TrainGroup, mine_pools, top_groups
from routerank.train.loop import GroupTrainer, adapter_trainer_config
from routerank.train.lora import LoRASettings, LoraTrainable, attach_lora
from routerank.train.losses import canonical_objective

MANIFEST = "routerank_expert.json"


@dataclass(frozen=True)
class ExpertConfig(LoRASettings):
    """One domain expert's training run: its data, negatives, optimisation and LoRA adapter. The whole record
    (`config_json`) is the run's identity: it names the default output folder, keys the resumable checkpoint and
    is kept in the expert's manifest. The comments at the fields say why some of them exist.

    dataset: comma-separated dataset names; several is pooled training, `max_queries` and `dev_queries` per dataset.
    domain: the expert's domain label (manifest, default folder name, progress bar).
    backbone: the frozen reranker the adapter sits on: an LLM spec (`smollm2`, `hf:...`, `gguf:...`) or `ce:<folder>`.
    template: yes/no prompt template of an LLM backbone (chatml: SmolLM2-Instruct's); a cross-encoder ignores it.
    objective: `infonce` (the positive against its negatives) or `bce` (on each pair); the older names `contrastive`
        and `sft` are accepted and stored as these (`routerank.train.losses.canonical_objective`).
    eag: Entity Abstraction for Generalization: a first stage on entity-abstracted groups, then the original ones.
    granularity: what EAG abstracts: "ner" (spaCy entities) or "ner+patterns" (plus the dataset's domain patterns,
        `PATTERN_DOMAINS`); "none" only without EAG, which does not read it (it still counts in the record).
    miner: the retriever (a pipeline spec) whose ranking supplies the hard negatives.
    negatives: documents per group below the positive; queries with fewer are left out.
    graded_negatives: a grade-2 positive also meets grade-1 documents as negatives; off.
    negative_skip: the miner's first n non-relevant documents are passed over before negatives are taken; 0.
    dev_measure: what early stopping and the kept checkpoint minimise on dev groups: "mrr" (1 - MRR) or "loss".
    max_queries: training queries per dataset, taken after any dev hold-out; None = all.
    dev_queries: dev queries per dataset: the dev split's first ones, else held out of the seeded train queries.
    dev_from_backbone: without a dev split, hold out the queries the backbone's training manifest held out; off.
    max_doc_tokens: document tokens per pair on an LLM backbone; on a cross-encoder, the pair length (query +
        document).
    epochs: passes over each stage's groups.
    grad_accum: groups per optimizer step; each group is its own forward/backward, so memory holds one group.
    temperature: InfoNCE divides the logits by it; 1.0 as in the R2R paper. BCE ignores it.
    lora_r, lora_alpha, lora_dropout, target_modules, lr: the adapter and its optimiser (`LoRASettings`); here
        rank 32, alpha 64, and AdamW at a constant rate: no warmup, weight decay or gradient clipping
        (`adapter_trainer_config`).
    eval_every: the dev measure every that many optimizer steps, and once before the first, so the untrained
        adapter (the bare backbone) competes and an expert never ships worse on dev than where it started.
    patience: stop after this many evaluations without a new best (0 = never stop early).
    save_every: checkpoint interval in optimizer steps, for resuming after a kill.
    seed: the train/dev query shuffle, the positive's pick among equals, the LoRA init and the data order.
    """

    dataset: str
    domain: str
    backbone: str = "smollm2"
    template: str = "chatml"
    objective: str = "infonce"
    eag: bool = False
    granularity: str = "ner+patterns"
    miner: str = "bm25"
    negatives: int = 3
    # False: negatives are documents not judged relevant. True: a grade-2 positive also meets grade-1 documents.
    # NFCorpus's train qrels are all grade 1 while dev has grades 1 and 2, so graded dev groups would measure a
    # distinction that training never teaches (the generalist starts above chance on them).
    graded_negatives: bool = False
    # Pass over the miner's first n non-relevant documents before taking negatives. Where judgments are sparse
    # (NFCorpus links), the very top unjudged documents are often relevant: the generalist CE ranks its judged
    # positive below them more often than chance, and an expert trained against them collapses.
    negative_skip: int = 0
    # What the early stop and the kept checkpoint minimise on dev groups: "mrr" (1 - MRR of the positive, ties
    # against it) or "loss". With "loss", a collapse to equal scores can look like progress (see TrainerConfig).
    dev_measure: str = "mrr"
    max_queries: int | None = 300
    dev_queries: int = 50
    # Where the dataset has no dev split. True: dev queries come from those the backbone's training manifest held
    # out (an encoder folder trained by routerank), and none of those is trained on, so step 0 (the backbone
    # itself) is judged on queries it never saw and they stay free for choosing an interpolation weight. False:
    # the first seeded train queries are held out.
    dev_from_backbone: bool = False
    max_doc_tokens: int = 128
    epochs: int = 1
    grad_accum: int = 4
    temperature: float = 1.0
    lora_r: int = field(default=32, kw_only=True)  # LoRASettings' field, with the experts' own default
    lora_alpha: int = field(default=64, kw_only=True)
    eval_every: int = 25
    patience: int = 3
    save_every: int = 10
    seed: int = 13
    autocast: str = "none"  # "bf16": forward passes under bfloat16 autocast (`routerank.train.loop.TrainerConfig`)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "objective", canonical_objective(self.objective))
        if self.negatives < 1 or self.grad_accum < 1 or self.epochs < 1:
            raise SpecError("negatives, grad_accum and epochs must be at least 1")
        if self.negative_skip < 0:
            raise SpecError(f"negative_skip must be 0 or more, got {self.negative_skip}")

        if self.granularity not in GRANULARITIES:
            raise SpecError(f"unknown masking granularity {self.granularity!r}", fix=f"choose one of {GRANULARITIES}")
        if self.eag and self.granularity == "none":
            raise SpecError(
                "EAG with masking granularity 'none' is plain training",
                fix="use eag=False, or granularity 'ner' / 'ner+patterns'",
            )


TrainExample = TrainGroup  # the name the expert API used before the stacks were merged


def mine_examples(
    ds: Dataset,
    queries: list[Query],
    split: str,
    negatives: int,
    miner: str = "bm25",
    seed: int = 13,
    graded: bool = False,
    skip: int = 0,
) -> list[TrainGroup]:
    """One group per query: its best judged positive (seeded among equals) against the miner's top `negatives`
    documents that rank below it (`graded`: lower grades count as below; otherwise only non-relevant documents
    do), after the first `skip` of them; queries without enough such documents are left out."""
    pools = mine_pools(ds, queries, split, depth=negatives + skip, minimum=0, miner=miner, seed=seed)
    return top_groups(pools, negatives, seed, graded, skip)


def abstract_examples(examples: list[TrainExample], abstractor) -> list[TrainExample]:
    """EAG stage-1 data: each group (query, positive, negatives) shares one placeholder table."""
    groups = abstractor.abstract_groups([[ex.query, ex.positive, *ex.negatives] for ex in examples])
    return [
        TrainExample(ex.query_id, texts[0], texts[1], tuple(texts[2:]))
        for ex, (texts, _) in zip(examples, groups, strict=True)
    ]


def split_train_dev(ds: Dataset, config: ExpertConfig) -> tuple[list[Query], list[Query], str, str]:
    """Train queries from `train`; dev from `dev` when the dataset has one, else held out of train: the backbone's
    held-out queries with `dev_from_backbone`, otherwise the first seeded ones."""
    train = ds.split_queries("train")
    random.Random(config.seed).shuffle(train)
    if "dev" in ds.qrels:
        dev = ds.split_queries("dev")[: config.dev_queries]
        return train[: config.max_queries], dev, "train", "dev"
    if config.dev_from_backbone:
        held = held_out_queries(ds, [folder_of(config.backbone)])
        if held is None or held[1] != "train":
            raise RouterankError(
                f"dev_from_backbone: backbone {config.backbone!r} holds out no train queries of {ds.name}",
                fix="train the backbone with dev queries held out, or set dev_from_backbone = false",
            )
        ids = {q.id for q in held[0]}
        dev = [q for q in train if q.id in ids][: config.dev_queries]
        return [q for q in train if q.id not in ids][: config.max_queries], dev, "train", "train"
    dev, train = train[: config.dev_queries], train[config.dev_queries :]
    return train[: config.max_queries], dev, "train", "train"


class ExpertTrainer:
    """One expert's training run: LoRA on the backbone, then the shared resumable loop.

    `loaded` passes an already-loaded backbone model (an LLM's (model, tokenizer), or a CrossEncoder); the
    default loads `config.backbone`."""

    def __init__(self, config: ExpertConfig, out: str | Path, *, loaded=None, progress: bool = True):
        self.config, self.out, self.progress = config, Path(out), progress
        self.state_dir = self.out.with_name(self.out.name + ".state")
        self.backbone = load_backbone(
            config.backbone,
            template=config.template,
            max_doc_tokens=config.max_doc_tokens,
            progress=False,
            loaded=loaded,
        )
        self.model = attach_lora(self.backbone.module, config, self.backbone.default_targets, config.seed)
        self.trainable = LoraTrainable(self.model, self.backbone)
        trainer_config = adapter_trainer_config(
            objective=config.objective,
            temperature=config.temperature,
            lr=config.lr,
            epochs=config.epochs,
            grad_accum=config.grad_accum,
            max_grad_norm=0.0,
            eval_every=config.eval_every,
            patience=config.patience,
            save_every=config.save_every,
            dev_measure=config.dev_measure,
            seed=config.seed,
            autocast=config.autocast,
        )
        self.loop = GroupTrainer(
            self.trainable,
            trainer_config,
            self.state_dir,
            key={"expert": config_json(config)},
            progress=progress,
            desc=f"expert {config.domain}",
        )
        self.params, self.optimizer = self.loop.params, self.loop.optimizer
        self.log_path = self.loop.log_path
        self.sources: dict = {}  # what the groups came from, recorded in the manifest

    def logits(self, groups: list[list[tuple[str, str]]]):
        """Relevance logits [groups, 1 + negatives] with gradients through the LoRA weights."""
        pairs = [pair for group in groups for pair in group]
        return self.backbone.relevance_logits(pairs).view(len(groups), -1)

    def accumulate(self, batch: list[TrainGroup]) -> float:
        """Gradients of the batch's mean loss, one forward/backward per group, so memory holds a single group
        whatever the effective batch; returns the mean loss. The optimizer does not step."""
        self.optimizer.zero_grad()
        return self.loop.accumulate([[group] for group in batch])

    def fit(
        self,
        train: list[TrainGroup],
        dev: list[TrainGroup],
        *,
        abstracted: list[TrainGroup] | None = None,
        stop_after_steps: int | None = None,
    ) -> Path:
        """Run (or resume) all stages; `stop_after_steps` simulates a kill right after a checkpoint."""
        if not train:
            raise RouterankError("no training examples: every query lacked a positive or enough negatives")
        stages = [abstracted, train] if abstracted is not None else [train]
        summary = self.loop.fit(
            [(lambda _epoch, data=data: data) for data in stages], dev, stop_after_steps=stop_after_steps
        )
        metrics = {
            "train_seconds": summary.state.seconds,
            "dev_loss": summary.dev_loss,
            "best_dev_loss": summary.state.best_dev if dev else None,
            "dev_measure": self.config.dev_measure,
            "best_step": summary.state.best_step if dev else None,  # 0: no step beat the bare backbone on dev
            "resumed": summary.resumed,
            "train_seconds_this_run": summary.seconds_this_run,
            "examples": len(train),
            "steps": summary.state.total_steps,
            "stages": len(stages),
            "device": str(next(self.model.parameters()).device),
        }
        return self.save_expert(metrics)

    def save_expert(self, metrics: dict) -> Path:
        """Write the expert folder (adapter, manifest with config, metrics and data sources, training log) in one
        swap and delete the checkpoints; returns the folder."""
        manifest = {
            "domain": self.config.domain,
            "backbone": self.config.backbone,
            "backbone_fingerprint": self.backbone.fingerprint,
            "template": self.config.template,
            "config": config_json(self.config),
            "metrics": metrics,
            "training_data": self.sources,
        }
        with atomic_dir(self.out) as tmp:
            self.model.save_pretrained(str(tmp))
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            if self.log_path.exists():
                shutil.copy(self.log_path, tmp / "train_log.jsonl")
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return self.out


# Settings added after adapters had been trained, at the value that reproduces the old behaviour: the record
# leaves them out at that value, so an adapter trained before they existed still matches its config.
ADDED_LATER = {"dev_from_backbone": False, "autocast": "none"}


def config_json(config: ExpertConfig) -> dict:
    """The config as a JSON record, leaving out settings added later when they hold their old-behaviour value
    (`ADDED_LATER`), so an expert trained before they existed still matches."""
    record = json.loads(json.dumps(asdict(config)))
    return without_later_defaults(record, ADDED_LATER)


# dataset name -> the domain whose entity patterns EAG applies (others get NER only)
PATTERN_DOMAINS = {
    "scifact": "medical",
    "nfcorpus": "medical",
    "pubmedqa": "medical",
    "tatqa": "finance",
    "coliee-statutes": "legal",
    "aila-statutes": "legal",
    "aila-cases": "legal",
}


@dataclass(frozen=True)
class PreparedData:
    """An expert's mined groups: train, dev, the EAG-abstracted train groups (None without EAG), and per-dataset
    sources for the manifest."""

    train: list[TrainGroup]
    dev: list[TrainGroup]
    abstracted: list[TrainGroup] | None
    sources: dict  # per dataset: splits and query counts, for the manifest


def prepare_data(config: ExpertConfig, *, progress: bool = True) -> PreparedData:
    """Mine (and, with EAG, abstract) the training and dev examples of every dataset in `config.dataset`.

    `dataset` may name several comma-separated datasets: that is pooled training, with `max_queries` and
    `dev_queries` applied per dataset.
    """
    names = [n.strip() for n in config.dataset.split(",") if n.strip()]
    if not names:
        raise SpecError("ExpertConfig.dataset names no dataset")
    train, dev, abstracted, sources = [], [], [] if config.eag else None, {}
    for name in names:
        ds = load_dataset(name)
        train_q, dev_q, train_split, dev_split = split_train_dev(ds, config)
        mine = dict(
            negatives=config.negatives,
            miner=config.miner,
            seed=config.seed,
            graded=config.graded_negatives,
            skip=config.negative_skip,
        )
        examples = mine_examples(ds, train_q, train_split, **mine)
        dev_examples = mine_examples(ds, dev_q, dev_split, **mine)
        if not examples:
            raise RouterankError(
                f"no training examples from {name!r}: no query had a judged positive and "
                f"{config.negatives} unjudged negatives",
                fix="lower --negatives or check the qrels",
            )
        train += examples
        dev += dev_examples
        if abstracted is not None:
            domain = PATTERN_DOMAINS.get(name)
            abstractor = EntityAbstractor(config.granularity, domains=[domain] if domain else [])
            abstracted += abstract_examples(examples, abstractor)
        sources[name] = {
            "train_split": train_split,
            "dev_split": dev_split,
            "train_queries": len(train_q),
            "train_examples": len(examples),
            "dev_queries": len(dev_q),
            "dev_examples": len(dev_examples),
        }
        if progress:
            print(f"{name}: {len(examples)} training groups, {len(dev_examples)} dev groups", file=sys.stderr)
    return PreparedData(train, dev, abstracted, sources)


def default_expert_dir(config: ExpertConfig) -> Path:
    """The cache folder named by the domain and a hash of the config: `<cache>/experts/<domain>-<digest>`."""
    digest = hashlib.sha256(json.dumps(config_json(config), sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / "experts" / f"{config.domain}-{digest}"


def train_expert(config: ExpertConfig, out: str | Path | None = None, *, loaded=None, progress: bool = True) -> Path:
    """Mine data, train (resuming any checkpoint for the same config), and save the expert folder."""
    out = Path(out) if out is not None else default_expert_dir(config)
    data = prepare_data(config, progress=progress)
    trainer = ExpertTrainer(config, out, loaded=loaded, progress=progress)
    trainer.sources = data.sources
    return trainer.fit(data.train, data.dev, abstracted=data.abstracted)
