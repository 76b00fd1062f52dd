"""Fine-tune a cross-encoder (MiniLM + a fresh 1-logit head) on the train splits of one or more datasets.

`CrossEncoderTrainConfig("scifact,nfcorpus,tatqa,coliee-statutes")` trains the pooled generalist: every
dataset's training queries in one shuffled stream. Each group is one judged-relevant document against
`negatives` hard negatives drawn afresh each epoch from the miner's top `negative_depth` (hybrid BM25 + MiniLM
by default); graded qrels count (a grade-2 positive also meets the grade-1 documents as negatives). NFCorpus
judges ~43 documents per query, so `positives_per_query` caps the groups one query contributes per epoch.

Objectives come from routerank.train.losses (`infonce`, `bce`). Training runs on the shared resumable
`GroupTrainer`: a killed run continues from `<out>.state/` to the same weights, and early stopping keeps the
weights with the best mean loss on dev groups (each dataset's dev split, or queries held out of train where a
set has none). The result is a sentence-transformers CrossEncoder folder (safetensors), written atomically,
that the `ce:<folder>` reranker loads; beside the weights sit `routerank_train.json` (the manifest, with the
dev query ids that score interpolation tunes on) and `train_log.jsonl` (one line per optimizer step).

Cost on 2 CPU cores: the starter build records one run (MiniLM-L6, 128 tokens, 1 + 7 documents a group, bf16
autocast) under `training.generalist` in reports/starter.json.
"""

from __future__ import annotations

import json
import platform
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import routerank
from routerank.data.registry import load_dataset
from routerank.data.types import Dataset, Query
from routerank.errors import SpecError
from routerank.fsutil import atomic_dir, atomic_write, cache_root
from routerank.models.spec import resolve_model
from routerank.rerank.backbones import ENCODER_TARGETS
from routerank.rerank.cross_encoder import new_cross_encoder
from routerank.train.groups import NegativePool, TrainGroup, mine_pools, sample_groups, select_queries, top_groups
from routerank.train.loop import GroupTrainer, TrainerConfig, TrainSummary
from routerank.train.lora import LoRASettings, LoraTrainable, attach_lora
from routerank.train.losses import canonical_objective, ranking_loss

MANIFEST = "routerank_train.json"
LOG = "train_log.jsonl"
MINERS = ("bm25", "dense", "hybrid")


@dataclass(frozen=True)
class CrossEncoderTrainConfig:
    """What to train on and how.

    dataset: one name (or BEIR folder), or several joined by commas: the pooled generalist.
    objective: infonce (1 positive against its negatives; the default, it ranks) or bce (pointwise).
    base_model: encoder to start from; the packaged MiniLM-L6 is the only one offline.
    miner / negatives / negative_depth: hard negatives per group, drawn from the miner's top `negative_depth`.
    max_queries: training queries per dataset (None = all); the quick profile caps it.
    query_caps: per-dataset overrides of max_queries, as (dataset, cap) pairs; cap 0 = all of that dataset.
    positives_per_query: groups one query gives per epoch (None = one per judged-relevant document).
    dev_queries: per dataset, for early stopping and for choosing the interpolation weight; from the `dev`
        split where the dataset has one, else held out of train (and then never trained on).
    max_length: tokens per (query, document) pair; 192 keeps an epoch of the pooled set to about an hour.
    epochs, batch_groups, grad_accum, lr, weight_decay, warmup_ratio, temperature, max_grad_norm,
    eval_every, patience, save_every, autocast: see routerank.train.loop.TrainerConfig.
    lora_r: 0 (the default) fine-tunes every weight; above 0 trains a LoRA adapter of that rank on the encoder's
        attention and feed-forward layers plus the 1-logit head (peft's `modules_to_save`) over the frozen base
        model, and saves the adapter alone (a few MB). lora_alpha: its scaling.
    freeze_embeddings: keep the token, position and type embeddings at the base model's values (a full fine-tune of
        every other weight). They are 45% of MiniLM; frozen, a model can ship without them and take them from the
        installed base model, as the starter bundle's generalist does (`routerank.rerank.cross_encoder`).
    """

    dataset: str
    objective: str = "infonce"
    base_model: str = "minilm"
    split: str = "train"
    miner: str = "hybrid"
    negatives: int = 7
    negative_depth: int = 30
    max_queries: int | None = None
    query_caps: tuple[tuple[str, int], ...] = ()
    positives_per_query: int | None = 2
    dev_queries: int = 50
    epochs: int = 1
    max_length: int = 192
    batch_groups: int = 4
    grad_accum: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    temperature: float = 1.0
    max_grad_norm: float = 1.0
    eval_every: int = 100
    patience: int = 3
    save_every: int = 25
    seed: int = 13
    autocast: str = "none"
    lora_r: int = 0
    lora_alpha: int = 32
    freeze_embeddings: bool = False

    def __post_init__(self):
        object.__setattr__(self, "objective", canonical_objective(self.objective))
        if self.lora_r < 0:
            raise SpecError(f"lora_r must be 0 (full fine-tune) or more, got {self.lora_r}")
        if not self.names:
            raise SpecError("name at least one dataset to train on", fix="e.g. scifact or scifact,nfcorpus")
        positive = {
            "negatives": self.negatives,
            "epochs": self.epochs,
            "batch_groups": self.batch_groups,
            "grad_accum": self.grad_accum,
        }
        for name, value in positive.items():
            if value < 1:
                raise SpecError(f"{name} must be at least 1, got {value}")
        if self.negative_depth < self.negatives:
            raise SpecError(f"negative_depth ({self.negative_depth}) must be at least negatives ({self.negatives})")
        if self.dev_queries < 0:
            raise SpecError(f"dev_queries must be 0 or more, got {self.dev_queries}")
        for name in ("max_queries", "positives_per_query"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SpecError(f"{name} must be at least 1 (or None for all), got {value}")
        object.__setattr__(self, "query_caps", tuple((str(n), int(c)) for n, c in self.query_caps))
        strays = sorted({n for n, _ in self.query_caps} - set(self.names))
        if strays or any(c < 0 for _, c in self.query_caps):
            raise SpecError(f"query caps must name training datasets with a cap >= 0, got {self.query_caps}")
        if not 8 <= self.max_length <= 512:
            raise SpecError(f"max_length must be between 8 and 512 tokens, got {self.max_length}")
        if self.miner not in MINERS:
            raise SpecError(f"unknown miner {self.miner!r}", fix=f"choose one of {', '.join(MINERS)}")
        self.trainer()  # validates lr, temperature and the rest

    @property
    def names(self) -> list[str]:
        """The dataset names `dataset` joins with commas, in order."""
        return [part.strip() for part in self.dataset.split(",") if part.strip()]

    def cap_for(self, dataset: str) -> int | None:
        """Training queries to take from `dataset` (None = all)."""
        caps = dict(self.query_caps)
        if dataset in caps:
            return caps[dataset] or None
        return self.max_queries

    def trainer(self) -> TrainerConfig:
        """The shared loop's `TrainerConfig`, from the fields this config has in common with it."""
        shared = {f.name for f in fields(TrainerConfig)}
        return TrainerConfig(**{k: v for k, v in asdict(self).items() if k in shared})

    def default_out(self) -> Path:
        """Where a run is saved by default: `<cache>/models/ce-<datasets>-<objective>`, plus `-lora<r>` for LoRA."""
        label = "+".join(Path(name).name or name for name in self.names)
        lora = f"-lora{self.lora_r}" if self.lora_r else ""
        return cache_root() / "models" / f"ce-{label}-{self.objective}{lora}"


@dataclass(frozen=True)
class TrainResult:
    """A finished run: the model folder, optimizer steps, training seconds over every sitting, groups per epoch,
    the first and last step losses, and the manifest written beside the weights."""

    path: Path
    steps: int
    seconds: float
    groups: int
    first_loss: float
    last_loss: float
    manifest: dict


@dataclass(frozen=True)
class PreparedData:
    """Every dataset's mined training pools, the fixed dev groups, and per-dataset sources for the manifest."""

    pools: list[NegativePool]
    dev: list[TrainGroup]
    sources: dict  # per dataset: query counts, dev split, dev query ids


def prepare_data(config: CrossEncoderTrainConfig, datasets: Sequence[Dataset]) -> PreparedData:
    """Mine every dataset's training pools and its fixed dev groups."""
    pools, dev, sources = [], [], {}
    pooled = len(datasets) > 1
    for name, ds in zip(config.names, datasets, strict=True):
        prefix = f"{ds.name}:" if pooled else ""
        has_dev = "dev" in ds.qrels and config.split != "dev"
        train, held = select_queries(
            ds, config.split, config.cap_for(name), config.seed, holdout=0 if has_dev else config.dev_queries
        )
        if has_dev:
            held = _sample_judged(ds, "dev", config.dev_queries, config.seed)
        dev_split = "dev" if has_dev else config.split
        pools += mine_pools(
            ds,
            train,
            config.split,
            depth=config.negative_depth,
            minimum=config.negatives,
            miner=config.miner,
            seed=config.seed,
            id_prefix=prefix,
        )
        dev_pools = mine_pools(
            ds,
            held,
            dev_split,
            depth=config.negative_depth,
            minimum=config.negatives,
            miner=config.miner,
            seed=config.seed,
            id_prefix=prefix,
        )
        dev += top_groups(dev_pools, config.negatives, config.seed)
        sources[ds.name] = {
            "split": config.split,
            "queries": len(train),
            "dev_split": dev_split,
            "dev_queries": [q.id for q in held],
            "corpus_fingerprint": ds.corpus.fingerprint,
        }
    return PreparedData(pools, dev, sources)


def training_sets(config: CrossEncoderTrainConfig, dataset: Dataset | Sequence[Dataset] | None) -> list[Dataset]:
    """The datasets `config` names, loaded; or the already-loaded ones a caller (a test) passes."""
    if dataset is None:
        return [load_dataset(name) for name in config.names]
    return [dataset] if isinstance(dataset, Dataset) else list(dataset)


def epoch_sampler(config: CrossEncoderTrainConfig, data: PreparedData):
    """epoch -> that epoch's groups, drawn afresh from the pools with a seed of its own (the trainer's data)."""

    def epoch_groups(epoch: int) -> list[TrainGroup]:
        return sample_groups(data.pools, config.negatives, config.seed + epoch, config.positives_per_query)

    return epoch_groups


def _sample_judged(ds: Dataset, split: str, n: int, seed: int) -> list[Query]:
    qrels = ds.split_qrels(split)
    judged = [q for q in ds.split_queries(split) if qrels.relevant(q.id)]
    if n >= len(judged):
        return judged
    chosen = {q.id for q in random.Random(seed).sample(judged, n)}
    return [q for q in judged if q.id in chosen]


class FullTrainable:
    """A `Trainable` whose every weight trains and is checkpointed; subclasses say how groups become logits."""

    def __init__(self, model):
        self.model = model

    def parameters(self) -> list:
        """Every weight that requires gradients."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def trainable_state(self) -> dict:
        """The model's whole state dict."""
        return dict(self.model.state_dict())

    def load_trainable_state(self, tensors: dict) -> None:
        """Load a whole state dict that `trainable_state` handed out."""
        self.model.load_state_dict(tensors)

    def train(self, mode: bool = True):
        """Switch training mode (dropout) on or off; returns the model."""
        return self.model.train(mode)


class CrossEncoderTrainable(FullTrainable):
    """The `Trainable` view of a sentence-transformers CrossEncoder."""

    def group_logits(self, groups: Sequence[TrainGroup]):
        """A [groups, 1 + negatives] logit matrix for one batch of groups."""
        # heavy: sentence-transformers loads only when a model is used
        from sentence_transformers.util import batch_to_device

        pairs = [pair for group in groups for pair in group.pairs()]
        features = batch_to_device(self.model.preprocess(pairs), self.model.device)
        return self.model(features)["scores"].view(len(groups), -1)


class LoraCrossEncoderTrainable(CrossEncoderTrainable):
    """A CrossEncoder whose encoder carries a LoRA adapter (and a trainable head): only those train and are saved,
    as the shared `LoraTrainable` keeps them; the logits are the CrossEncoder's own."""

    def __init__(self, model, peft_model):
        super().__init__(model)
        self.adapter = LoraTrainable(peft_model, backbone=None)

    def parameters(self) -> list:
        """The adapter's and the head's trainable parameters."""
        return self.adapter.parameters()

    def trainable_state(self) -> dict:
        """The adapter and head tensors alone, by name."""
        return self.adapter.trainable_state()

    def load_trainable_state(self, tensors: dict) -> None:
        """Load adapter and head tensors that `trainable_state` handed out."""
        self.adapter.load_trainable_state(tensors)


def with_lora(model, config: CrossEncoderTrainConfig):
    """The CrossEncoder's encoder wrapped in place by a fresh LoRA adapter with a trainable head (seeded)."""
    settings = LoRASettings(lora_r=config.lora_r, lora_alpha=config.lora_alpha)
    # the head reads the pooler, which MiniLM never trained for pairs: both train whole
    return attach_lora(model.model, settings, ENCODER_TARGETS, config.seed, modules_to_save=["classifier", "pooler"])


def mean_loss(
    model, groups: Sequence[TrainGroup], objective: str, temperature: float = 1.0, batch_groups: int = 16
) -> float:
    """Mean loss of a CrossEncoder over `groups` in eval mode: comparable before and after training."""
    # heavy: torch loads only when a model runs
    import torch

    view = CrossEncoderTrainable(model)
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(groups), batch_groups):
            batch = groups[start : start + batch_groups]
            total += float(ranking_loss(objective, view.group_logits(batch).float(), temperature)) * len(batch)
    return total / max(len(groups), 1)


def _versions() -> dict[str, str]:
    # heavy: sentence_transformers, torch, transformers load only when this runs, not at import
    import sentence_transformers
    import torch
    import transformers

    return {
        "routerank": routerank.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "python": platform.python_version(),
    }


def train_cross_encoder(
    config: CrossEncoderTrainConfig,
    out: str | Path | None = None,
    *,
    dataset: Dataset | Sequence[Dataset] | None = None,
    device: str | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Mine hard negatives, fine-tune (resuming from `<out>.state/` if a run broke off), and save the model
    folder atomically at `out` (default: the cache). `dataset` passes already-loaded datasets (tests)."""

    # heavy: torch loads only when a model runs
    import torch

    datasets = training_sets(config, dataset)
    out = Path(out).expanduser() if out is not None else config.default_out()
    began = time.perf_counter()
    data = prepare_data(config, datasets)
    mined = time.perf_counter()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = new_cross_encoder(config.base_model, config.max_length, device)
    if config.freeze_embeddings:
        for parameter in model.model.base_model.embeddings.parameters():
            parameter.requires_grad = False
    peft_model = with_lora(model, config) if config.lora_r else None
    trainable = LoraCrossEncoderTrainable(model, peft_model) if peft_model else CrossEncoderTrainable(model)
    state_dir = out.with_name(out.name + ".state")
    key = {"config": asdict(config), "sources": data.sources}
    trainer = GroupTrainer(
        trainable,
        config.trainer(),
        state_dir,
        key=key,
        progress=progress,
        desc=f"train ce ({config.objective})",
    )

    epoch_groups = epoch_sampler(config, data)
    summary = trainer.fit([epoch_groups], data.dev, stop_after_steps=stop_after_steps)
    trained = time.perf_counter()
    model.eval()
    groups = len(epoch_groups(0))
    state = summary.state
    with atomic_dir(out) as tmp:
        if peft_model is not None:
            peft_model.save_pretrained(str(tmp))  # the adapter and head alone; `merge_adapter_folder` makes a model
        else:
            model.save_pretrained(str(tmp), create_model_card=False)
        if trainer.log_path.exists():
            shutil.copy(trainer.log_path, tmp / LOG)
        manifest = _manifest(config, data, summary, groups, str(model.device), (began, mined, trained))
        with atomic_write(tmp / MANIFEST) as handle:
            json.dump(manifest, handle, indent=2)
    shutil.rmtree(state_dir, ignore_errors=True)
    return TrainResult(out, state.total_steps, state.seconds, groups, state.first_loss, state.last_loss, manifest)


def _manifest(
    config: CrossEncoderTrainConfig,
    data: PreparedData,
    summary: TrainSummary,
    groups: int,
    device: str,
    clock: tuple[float, float, float],
) -> dict[str, Any]:
    """The trained folder's manifest; `clock` holds the perf_counter times the run began, mined and trained at."""
    # heavy: torch loads only when a model runs
    import torch

    began, mined, trained = clock
    state = summary.state
    return {
        "kind": "cross-encoder",
        "dataset": config.dataset,
        "datasets": config.names,
        "split": config.split,
        "config": asdict(config),
        "base_model": {"spec": config.base_model, "location": resolve_model(config.base_model).location},
        "negatives": {
            "miner": config.miner,
            "per_group": config.negatives,
            "depth": config.negative_depth,
            "skip": "judged at or above the positive's grade",
        },
        "sources": data.sources,
        "queries": sum(s["queries"] for s in data.sources.values()),
        "held_out_queries": [
            q for s in data.sources.values() if s["dev_split"] == config.split for q in s["dev_queries"]
        ],
        "groups": groups,
        "pairs_per_epoch": groups * (1 + config.negatives),
        "dev_groups": len(data.dev),
        "steps": state.total_steps,
        "first_loss": state.first_loss,
        "last_loss": state.last_loss,
        "dev": {
            "best_loss": state.best_dev if data.dev else None,
            "best_step": state.best_step,
            "final_loss": summary.dev_loss,
            "stopped_early": state.stopped_early,
        },
        "resumed": summary.resumed,
        "device": device,
        "threads": torch.get_num_threads(),
        "seconds": {
            "mining": round(mined - began, 2),
            "training": round(state.seconds, 2),
            "training_this_sitting": round(trained - mined, 2),
            "total": round(time.perf_counter() - began, 2),
        },
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
