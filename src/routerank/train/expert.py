"""Train one R2R domain expert: a LoRA adapter over the frozen yes/no reranker backbone.

Hard negatives are mined by a retriever; the loss is InfoNCE (tau = 1.0) over one positive and n negatives,
or SFT (binary cross-entropy on yes/no). With EAG, stage 1 trains on entity-abstracted pairs and stage 2
continues from it on the original pairs. Training is resumable: every `save_every` optimizer steps the adapter,
optimizer, RNG state and data cursor are written atomically (safetensors + JSON) to `<out>.state/`; a rerun
with the same config continues from there and reaches the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from routerank.data.types import Dataset, Query
from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_dir
from routerank.train.losses import canonical_objective, ranking_loss

MANIFEST = "routerank_expert.json"


@dataclass(frozen=True)
class ExpertConfig:
    dataset: str
    domain: str
    backbone: str = "smollm2"
    template: str = "chatml"
    objective: str = "contrastive"
    eag: bool = False
    granularity: str = "ner+patterns"
    miner: str = "bm25"
    negatives: int = 3
    max_queries: int | None = 300
    dev_queries: int = 50
    max_doc_tokens: int = 128
    epochs: int = 1
    lr: float = 2e-4
    grad_accum: int = 4
    temperature: float = 1.0
    lora_r: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    eval_every: int = 25
    patience: int = 3
    save_every: int = 10
    seed: int = 13

    def __post_init__(self):
        object.__setattr__(self, "objective", canonical_objective(self.objective))
        if self.negatives < 1 or self.grad_accum < 1 or self.epochs < 1:
            raise SpecError("negatives, grad_accum and epochs must be at least 1")
        from routerank.train.eag import GRANULARITIES

        if self.granularity not in GRANULARITIES:
            raise SpecError(f"unknown masking granularity {self.granularity!r}", fix=f"choose one of {GRANULARITIES}")
        if self.eag and self.granularity == "none":
            raise SpecError(
                "EAG with masking granularity 'none' is plain training",
                fix="use eag=False, or granularity 'ner' / 'ner+patterns'",
            )


@dataclass(frozen=True)
class TrainExample:
    query_id: str
    query: str
    positive: str
    negatives: tuple[str, ...]

    def pairs(self) -> list[tuple[str, str]]:
        return [(self.query, self.positive), *((self.query, n) for n in self.negatives)]


@dataclass
class TrainState:
    stage: int = 0
    epoch: int = 0
    cursor: int = 0  # examples consumed in this epoch
    step: int = 0  # optimizer steps in this stage
    best_dev: float = float("inf")
    bad_evals: int = 0
    done_stages: list[int] = field(default_factory=list)
    seconds: float = 0.0  # training time over every sitting, checkpoints included


def mine_examples(
    ds: Dataset, queries: list[Query], split: str, negatives: int, miner: str = "bm25", seed: int = 13
) -> list[TrainExample]:
    """One positive (seeded choice among judged-relevant) and the retriever's top non-relevant docs per query."""
    from routerank.pipeline import build

    qrels = ds.split_qrels(split)
    run = build(miner, ds.corpus).search(queries, negatives + 30)
    rng = random.Random(seed)
    out = []
    for query in queries:
        relevant = sorted(qrels.relevant(query.id))
        judged = qrels.judgments.get(query.id, {})
        mined = [d for d in run[query.id].doc_ids if d not in judged][:negatives]
        if not relevant or len(mined) < negatives:
            continue
        positive = ds.corpus[rng.choice(relevant)].full_text
        out.append(TrainExample(query.id, query.text, positive, tuple(ds.corpus[d].full_text for d in mined)))
    return out


def abstract_examples(examples: list[TrainExample], abstractor) -> list[TrainExample]:
    """EAG stage-1 data: each group (query, positive, negatives) shares one placeholder table."""
    groups = abstractor.abstract_groups([[ex.query, ex.positive, *ex.negatives] for ex in examples])
    return [
        TrainExample(ex.query_id, texts[0], texts[1], tuple(texts[2:]))
        for ex, (texts, _) in zip(examples, groups, strict=True)
    ]


def split_train_dev(ds: Dataset, config: ExpertConfig) -> tuple[list[Query], list[Query], str, str]:
    """Train queries from `train`; dev from `dev` when the dataset has one, else held out of train."""
    train = ds.split_queries("train")
    random.Random(config.seed).shuffle(train)
    if "dev" in ds.qrels:
        dev = ds.split_queries("dev")[: config.dev_queries]
        return train[: config.max_queries], dev, "train", "dev"
    dev, train = train[: config.dev_queries], train[config.dev_queries :]
    return train[: config.max_queries], dev, "train", "train"


class ExpertTrainer:
    def __init__(self, config: ExpertConfig, out: str | Path, *, loaded=None, progress: bool = True):
        import torch
        from peft import LoraConfig, get_peft_model

        from routerank.models.llm import load_causal_lm
        from routerank.rerank.pointwise import PointwiseLLMReranker

        self.config, self.out, self.progress = config, Path(out), progress
        self.state_dir = self.out.with_name(self.out.name + ".state")
        model, tokenizer = loaded if loaded is not None else load_causal_lm(config.backbone)
        torch.manual_seed(config.seed)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            bias="none",
        )
        self.model = get_peft_model(model, lora)
        self.scorer = PointwiseLLMReranker.from_model(
            model, tokenizer, template=config.template, max_doc_tokens=config.max_doc_tokens, progress=False
        )
        self.answer = (self.scorer._answer_rows[0] - self.scorer._answer_rows[1]).to(self.scorer.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr)
        self.state = TrainState()
        self.log_path = self.state_dir / "log.jsonl"
        self._mark = time.perf_counter()
        self.sources: dict = {}  # what the examples came from, recorded in the manifest

    # scoring ---------------------------------------------------------------------------------------------

    def logits(self, groups: list[list[tuple[str, str]]]):
        """Relevance logits [groups, 1 + negatives] with gradients through the LoRA weights."""
        import torch

        rows = [self.scorer.prompt_ids(q, d) for group in groups for q, d in group]
        ids, mask = self.scorer.right_pad(rows)
        hidden = self.scorer._decoder(input_ids=ids, attention_mask=mask).last_hidden_state
        last = hidden[torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows]).to(ids.device)]
        return (last.float() @ self.answer).view(len(groups), -1)

    def dev_loss(self, dev: list[TrainExample]) -> float:
        import torch

        self.model.eval()
        with torch.no_grad():
            losses = [
                ranking_loss(self.config.objective, self.logits([ex.pairs()]), self.config.temperature).item()
                for ex in dev
            ]
        self.model.train()
        return sum(losses) / max(len(losses), 1)

    # checkpoints -----------------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.perf_counter()
        self.state.seconds += now - self._mark
        self._mark = now

    def save_state(self) -> None:
        import torch
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        tensors = {
            f"adapter.{k}": v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(self.model).items()
        }
        opt = self.optimizer.state_dict()
        for index, slots in opt["state"].items():
            for name, value in slots.items():
                tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().contiguous().cpu()
        tensors["rng.torch"] = torch.get_rng_state()
        self._tick()
        with atomic_dir(self.state_dir) as tmp:
            save_file(tensors, str(tmp / "state.safetensors"))
            meta = {"config": _jsonable(self.config), "state": asdict(self.state), "param_groups": opt["param_groups"]}
            (tmp / "state.json").write_text(json.dumps(meta, indent=2))
            if self.log_path.exists():
                (tmp / "log.jsonl").write_bytes(self.log_path.read_bytes())

    def load_state(self) -> bool:
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        if not (self.state_dir / "state.json").exists():
            return False
        meta = json.loads((self.state_dir / "state.json").read_text())
        if meta["config"] != _jsonable(self.config):
            raise RouterankError(
                "a checkpoint from a different training config is in the way",
                path=self.state_dir,
                fix="delete it, or rerun with the same settings to resume",
            )
        tensors = load_file(str(self.state_dir / "state.safetensors"))
        set_peft_model_state_dict(self.model, {k[8:]: v for k, v in tensors.items() if k.startswith("adapter.")})
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        self.state = TrainState(**meta["state"])
        return True

    def log(self, **record) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    # the loop --------------------------------------------------------------------------------------------

    def fit(
        self,
        train: list[TrainExample],
        dev: list[TrainExample],
        *,
        abstracted: list[TrainExample] | None = None,
        stop_after_steps: int | None = None,
    ) -> Path:
        """Run (or resume) all stages; `stop_after_steps` simulates a kill right after a checkpoint."""
        from tqdm.auto import tqdm

        if not train:
            raise RouterankError("no training examples: every query lacked a positive or enough negatives")
        resumed = self.load_state()
        stages = [abstracted, train] if abstracted is not None else [train]
        start, steps_this_run = time.perf_counter(), 0
        self._mark = start
        self.model.train()
        for stage in range(self.state.stage, len(stages)):
            data = stages[stage]
            if stage != self.state.stage:
                self.state = TrainState(
                    stage=stage, done_stages=[*self.state.done_stages, self.state.stage], seconds=self.state.seconds
                )
                self.optimizer.state.clear()
            while self.state.epoch < self.config.epochs:
                order = list(range(len(data)))
                random.Random(self.config.seed * 1000 + stage * 100 + self.state.epoch).shuffle(order)
                bar = tqdm(
                    total=len(order),
                    initial=self.state.cursor,
                    disable=not self.progress,
                    leave=False,
                    desc=f"expert {self.config.domain} stage {stage + 1}/{len(stages)}",
                )
                while self.state.cursor < len(order):
                    batch = [data[i] for i in order[self.state.cursor : self.state.cursor + self.config.grad_accum]]
                    loss = self._step(batch)
                    self.state.cursor += len(batch)
                    self.state.step += 1
                    steps_this_run += 1
                    bar.update(len(batch))
                    bar.set_postfix(loss=f"{loss:.4f}")
                    record = {"stage": stage, "epoch": self.state.epoch, "step": self.state.step, "loss": loss}
                    if self.state.step % self.config.eval_every == 0 and dev:
                        record["dev_loss"] = self.dev_loss(dev)
                        if record["dev_loss"] < self.state.best_dev:
                            self.state.best_dev, self.state.bad_evals = record["dev_loss"], 0
                        else:
                            self.state.bad_evals += 1
                    self.log(**record)
                    if self.state.bad_evals >= self.config.patience:
                        self.state.cursor = len(order)
                        self.state.epoch = self.config.epochs - 1
                    if self.state.step % self.config.save_every == 0:
                        self.save_state()
                        if stop_after_steps is not None and steps_this_run >= stop_after_steps:
                            bar.close()
                            raise TrainingInterrupted(self.state.step)
                bar.close()
                self.state.epoch += 1
                self.state.cursor = 0
        self._tick()
        metrics = {
            "train_seconds": self.state.seconds,
            "dev_loss": self.dev_loss(dev) if dev else None,
            "resumed": resumed,
            "train_seconds_this_run": time.perf_counter() - start,
            "examples": len(train),
            "steps": self.state.step,
            "stages": len(stages),
            "device": str(self.scorer.device),
        }
        return self.save_expert(metrics)

    def accumulate(self, batch: list[TrainExample]) -> float:
        """Gradients of the batch's mean loss, one forward/backward per group (gradient accumulation), so memory
        holds a single group (1 positive + n negatives) whatever the effective batch; returns the mean loss."""
        self.optimizer.zero_grad()
        total = 0.0
        for example in batch:
            loss = ranking_loss(self.config.objective, self.logits([example.pairs()]), self.config.temperature)
            (loss / len(batch)).backward()
            total += float(loss.item())
        return total / len(batch)

    def _step(self, batch: list[TrainExample]) -> float:
        loss = self.accumulate(batch)
        self.optimizer.step()
        return loss

    def save_expert(self, metrics: dict) -> Path:
        import shutil

        from routerank.models.llm import resolve_llm

        manifest = {
            "domain": self.config.domain,
            "backbone": self.config.backbone,
            "backbone_fingerprint": resolve_llm(self.config.backbone).fingerprint,
            "template": self.config.template,
            "config": _jsonable(self.config),
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


class TrainingInterrupted(RouterankError):
    """Raised by `stop_after_steps` once a checkpoint is on disk (used to test resuming)."""

    def __init__(self, step: int):
        super().__init__(f"training stopped after step {step}; rerun to resume")
        self.step = step


def _jsonable(config: ExpertConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))


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
    train: list[TrainExample]
    dev: list[TrainExample]
    abstracted: list[TrainExample] | None
    sources: dict  # per dataset: splits and query counts, for the manifest


def prepare_data(config: ExpertConfig, *, progress: bool = True) -> PreparedData:
    """Mine (and, with EAG, abstract) the training and dev examples of every dataset in `config.dataset`.

    `dataset` may name several comma-separated datasets: that is pooled training, with `max_queries` and
    `dev_queries` applied per dataset.
    """
    from routerank.data.registry import load_dataset

    names = [n.strip() for n in config.dataset.split(",") if n.strip()]
    if not names:
        raise SpecError("ExpertConfig.dataset names no dataset")
    train, dev, abstracted, sources = [], [], [] if config.eag else None, {}
    for name in names:
        ds = load_dataset(name)
        train_q, dev_q, train_split, dev_split = split_train_dev(ds, config)
        examples = mine_examples(ds, train_q, train_split, config.negatives, config.miner, config.seed)
        dev_examples = mine_examples(ds, dev_q, dev_split, config.negatives, config.miner, config.seed)
        if not examples:
            raise RouterankError(
                f"no training examples from {name!r}: no query had a judged positive and "
                f"{config.negatives} unjudged negatives",
                fix="lower --negatives or check the qrels",
            )
        train += examples
        dev += dev_examples
        if abstracted is not None:
            from routerank.train.eag import EntityAbstractor

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
    import hashlib

    from routerank.fsutil import cache_root

    digest = hashlib.sha256(json.dumps(_jsonable(config), sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / "experts" / f"{config.domain}-{digest}"


def train_expert(config: ExpertConfig, out: str | Path | None = None, *, loaded=None, progress: bool = True) -> Path:
    """Mine data, train (resuming any checkpoint for the same config), and save the expert folder."""
    out = Path(out) if out is not None else default_expert_dir(config)
    data = prepare_data(config, progress=progress)
    trainer = ExpertTrainer(config, out, loaded=loaded, progress=progress)
    trainer.sources = data.sources
    return trainer.fit(data.train, data.dev, abstracted=data.abstracted)
