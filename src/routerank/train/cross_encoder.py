"""Fine-tune a cross-encoder (MiniLM + a fresh 1-logit head) on a dataset's train split.

Each training group is one judged-relevant (query, document) pair plus `negatives` hard negatives: documents
BM25 ranks in its top `negative_depth` for that query that are not judged relevant, drawn afresh each epoch.
Objectives:
    bce       binary cross-entropy on every pair: label 1 for the positive, 0 for the negatives
    infonce   softmax cross-entropy of the positive against its group's negatives, logits / temperature

The defaults (200 queries, 3 negatives, max_length 192, 1 epoch) train in a few minutes on a laptop CPU.
The result is a sentence-transformers CrossEncoder folder (safetensors), written atomically, that the
`ce:<folder>` reranker loads; beside the weights sit `routerank_train.json` (the manifest) and
`train_log.jsonl` (one line per optimizer step).
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from routerank.data.types import Dataset, Query
from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_dir, atomic_write, cache_root

OBJECTIVES = ("bce", "infonce")
MANIFEST = "routerank_train.json"
LOG = "train_log.jsonl"


@dataclass(frozen=True)
class CrossEncoderTrainConfig:
    dataset: str
    objective: str = "infonce"
    base_model: str = "minilm"
    split: str = "train"
    negatives: int = 3
    negative_depth: int = 30
    max_queries: int | None = 300
    holdout: int = 0
    epochs: int = 1
    max_length: int = 256
    batch_groups: int = 4
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    temperature: float = 1.0
    max_grad_norm: float = 1.0
    seed: int = 13

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise SpecError(f"unknown objective {self.objective!r}", fix=f"choose one of {', '.join(OBJECTIVES)}")
        positive = {"negatives": self.negatives, "epochs": self.epochs, "batch_groups": self.batch_groups,
                    "grad_accum": self.grad_accum}
        for name, value in positive.items():
            if value < 1:
                raise SpecError(f"{name} must be at least 1, got {value}")
        if self.negative_depth < self.negatives:
            raise SpecError(f"negative_depth ({self.negative_depth}) must be at least negatives ({self.negatives})")
        if self.holdout < 0:
            raise SpecError(f"holdout must be 0 or more, got {self.holdout}")
        if self.max_queries is not None and self.max_queries < 1:
            raise SpecError(f"max_queries must be at least 1 (or None for all), got {self.max_queries}")
        if not 8 <= self.max_length <= 512:
            raise SpecError(f"max_length must be between 8 and 512 tokens, got {self.max_length}")
        if self.lr <= 0 or self.temperature <= 0:
            raise SpecError("lr and temperature must be positive")

    def default_out(self) -> Path:
        name = Path(self.dataset).name or self.dataset
        return cache_root() / "models" / f"ce-{name}-{self.objective}"


@dataclass(frozen=True)
class TrainGroup:
    query_id: str
    query: str
    positive: str
    negatives: tuple[str, ...]

    def pairs(self) -> list[tuple[str, str]]:
        return [(self.query, self.positive), *((self.query, doc) for doc in self.negatives)]


@dataclass(frozen=True)
class NegativePool:
    query_id: str
    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]


@dataclass(frozen=True)
class TrainResult:
    path: Path
    steps: int
    seconds: float
    groups: int
    first_loss: float
    last_loss: float
    manifest: dict


def select_queries(ds: Dataset, split: str, max_queries: int | None, seed: int,
                   holdout: int = 0) -> tuple[list[Query], list[Query]]:
    """(training queries, held-out queries) from the split's queries with a relevant document, in file order.

    A seeded shuffle puts `holdout` queries aside first (a dev set drawn from the train split); training then
    takes `max_queries` of the rest, or all of them.
    """
    qrels = ds.split_qrels(split)
    queries = [q for q in ds.split_queries(split) if qrels.relevant(q.id)]
    if len(queries) <= holdout:
        raise RouterankError(f"split {split!r} of {ds.name} has {len(queries)} queries with a relevant document, "
                             f"too few to hold out {holdout}", path=ds.path,
                             fix="hold out fewer queries, or train on a split with positive judgments")
    shuffled = random.Random(seed).sample(queries, len(queries))
    held, pool = shuffled[:holdout], shuffled[holdout:]
    train = pool if max_queries is None else pool[:max_queries]
    chosen, aside = {q.id for q in train}, {q.id for q in held}
    return [q for q in queries if q.id in chosen], [q for q in queries if q.id in aside]


def mine_pools(ds: Dataset, queries: Sequence[Query], split: str, depth: int, minimum: int, seed: int,
               miner: str = "bm25") -> list[NegativePool]:
    """Each query's relevant documents and the miner's top `depth` minus them (topped up at random to `minimum`)."""
    from routerank.pipeline import build

    qrels = ds.split_qrels(split)
    run = build(miner, ds.corpus).search(list(queries), depth + max(len(qrels.relevant(q.id)) for q in queries))
    rng = random.Random(seed)
    corpus_ids = ds.corpus.ids
    pools = []
    for query in queries:
        relevant = qrels.relevant(query.id)
        hard = [d for d in (run[query.id].doc_ids if query.id in run else ()) if d not in relevant][:depth]
        while len(hard) < minimum:
            filler = rng.choice(corpus_ids)
            if filler not in relevant and filler not in hard:
                hard.append(filler)
        pools.append(NegativePool(query.id, query.text, tuple(ds.corpus[d].full_text for d in sorted(relevant)),
                                  tuple(ds.corpus[d].full_text for d in hard)))
    return pools


def sample_groups(pools: Sequence[NegativePool], negatives: int, seed: int) -> list[TrainGroup]:
    """One group per (query, relevant document), with `negatives` drawn from its pool; a new seed, new draws."""
    rng = random.Random(seed)
    return [TrainGroup(pool.query_id, pool.query, positive, tuple(rng.sample(pool.negatives, negatives)))
            for pool in pools for positive in pool.positives]


def group_loss(objective: str, logits, temperature: float = 1.0):
    """Loss over a [groups, 1 + negatives] logit matrix whose column 0 holds the positives."""
    import torch
    import torch.nn.functional as F

    if objective == "bce":
        labels = logits.new_zeros(logits.shape)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels)
    if objective == "infonce":
        targets = logits.new_zeros(logits.shape[0], dtype=torch.long)
        return F.cross_entropy(logits / temperature, targets)
    raise SpecError(f"unknown objective {objective!r}", fix=f"choose one of {', '.join(OBJECTIVES)}")


def new_cross_encoder(base_model: str, max_length: int, device: str | None = None):
    """A CrossEncoder whose encoder is `base_model` and whose 1-logit head is freshly initialised (seed first)."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Transformer
    from transformers.utils import logging as hf_logging

    from routerank.models.spec import resolve_model
    from routerank.rerank.cross_encoder import default_device

    ref = resolve_model(base_model, default_kind="st")
    local = {"local_files_only": True} if ref.is_local else {}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier weights newly initialised" report is expected here
    try:
        encoder = Transformer(ref.location, transformer_task="sequence-classification",
                              config_kwargs={"num_labels": 1, **local}, model_kwargs=dict(local),
                              processor_kwargs=dict(local), max_seq_length=max_length)
    finally:
        hf_logging.set_verbosity(verbosity)
    return CrossEncoder(modules=[encoder], device=device or default_device())


def group_logits(model, groups: Sequence[TrainGroup]):
    """Forward one batch of groups through the model; a [groups, 1 + negatives] logit matrix."""
    from sentence_transformers.util import batch_to_device

    pairs = [pair for group in groups for pair in group.pairs()]
    features = batch_to_device(model.preprocess(pairs), model.device)
    return model(features)["scores"].view(len(groups), -1)


def mean_loss(model, groups: Sequence[TrainGroup], objective: str, temperature: float = 1.0,
              batch_groups: int = 16) -> float:
    """Mean loss over `groups` in eval mode (no dropout, no gradients): comparable before and after training."""
    import torch

    model.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(groups), batch_groups):
            batch = groups[start:start + batch_groups]
            total += float(group_loss(objective, group_logits(model, batch).float(), temperature)) * len(batch)
    return total / max(len(groups), 1)


def _linear_schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def fit(model, pools: Sequence[NegativePool], config: CrossEncoderTrainConfig, log_file=None,
        progress: bool = True) -> list[float]:
    """Train in place, drawing fresh negatives from the pools each epoch; returns the loss of every optimizer step."""
    import torch
    from tqdm.auto import tqdm

    rng = random.Random(config.seed)
    micro_batches = math.ceil(sum(len(pool.positives) for pool in pools) / config.batch_groups)
    total_steps = math.ceil(micro_batches / config.grad_accum) * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _linear_schedule(max(1, round(config.warmup_ratio * total_steps)), total_steps))
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(total=total_steps, desc=f"train ce ({config.objective})", unit="step", disable=not progress)
    model.train()
    for epoch in range(config.epochs):
        order = sample_groups(pools, config.negatives, config.seed + epoch)
        rng.shuffle(order)
        batches = [order[i:i + config.batch_groups] for i in range(0, len(order), config.batch_groups)]
        for first in range(0, len(batches), config.grad_accum):
            window = batches[first:first + config.grad_accum]
            size = sum(len(b) for b in window)
            step_loss = 0.0
            for batch in window:
                loss = group_loss(config.objective, group_logits(model, batch).float(), config.temperature)
                (loss * len(batch) / size).backward()
                step_loss += float(loss.detach()) * len(batch) / size
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            if log_file is not None:
                record = {"step": len(losses), "epoch": epoch, "loss": round(step_loss, 6),
                          "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 2)}
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            recent = losses[-20:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", epoch=epoch)
            bar.update(1)
    bar.close()
    model.eval()
    return losses


def _versions() -> dict[str, str]:
    import sentence_transformers
    import torch
    import transformers

    import routerank

    return {"routerank": routerank.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "python": platform.python_version()}


def train_cross_encoder(config: CrossEncoderTrainConfig, out: str | Path | None = None, *,
                        dataset: Dataset | None = None, device: str | None = None,
                        progress: bool = True) -> TrainResult:
    """Mine hard negatives, fine-tune, and save the model folder atomically at `out` (default: the cache)."""
    import torch

    from routerank.data.registry import load_dataset
    from routerank.models.spec import resolve_model

    ds = dataset if dataset is not None else load_dataset(config.dataset, splits=[config.split])
    out = Path(out).expanduser() if out is not None else config.default_out()
    began = time.perf_counter()
    queries, held_out = select_queries(ds, config.split, config.max_queries, config.seed, config.holdout)
    pools = mine_pools(ds, queries, config.split, config.negative_depth, config.negatives, config.seed)
    groups = sum(len(pool.positives) for pool in pools)
    mined = time.perf_counter()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = new_cross_encoder(config.base_model, config.max_length, device)
    with atomic_dir(out) as tmp:
        with open(tmp / LOG, "w", encoding="utf-8") as log_file:
            losses = fit(model, pools, config, log_file, progress)
        trained = time.perf_counter()
        model.save_pretrained(str(tmp), create_model_card=False)
        manifest = {
            "kind": "cross-encoder", "dataset": ds.name, "split": config.split, "config": asdict(config),
            "base_model": {"spec": config.base_model, "location": resolve_model(config.base_model).location},
            "negatives": {"miner": "bm25", "per_group": config.negatives, "depth": config.negative_depth,
                          "skip": "judged-relevant"},
            "queries": len(queries), "held_out_queries": [q.id for q in held_out], "groups": groups,
            "pairs_per_epoch": groups * (1 + config.negatives),
            "steps": len(losses), "first_loss": losses[0], "last_loss": losses[-1],
            "mean_loss_last_10pct": sum(losses[-max(1, len(losses) // 10):]) / max(1, len(losses) // 10),
            "device": str(model.device), "threads": torch.get_num_threads(),
            "seconds": {"mining": round(mined - began, 2), "training": round(trained - mined, 2),
                        "total": round(time.perf_counter() - began, 2)},
            "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with atomic_write(tmp / MANIFEST) as handle:
            json.dump(manifest, handle, indent=2)
    return TrainResult(out, len(losses), manifest["seconds"]["training"], groups, losses[0], losses[-1], manifest)
