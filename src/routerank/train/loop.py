"""The training loop every ranking model shares (`GroupTrainer`): the cross-encoder, its LoRA experts, the LLM experts.

The trainer knows nothing about architectures. A model plugs in through `Trainable`: it turns a batch of
`TrainGroup`s into a [groups, 1 + negatives] logit matrix with gradients, and it can hand out and take back the
tensors that change in training (all weights for a full fine-tune, the adapter alone for LoRA).

Why it is built this way:
- Work on 2 CPU cores spans sittings. Every `save_every` optimizer steps the trainable tensors, the optimizer
  and scheduler state, the torch RNG (dropout) and the data cursor are written atomically (safetensors + JSON) to
  `state_dir`. A rerun with the same config continues there and ends with the same weights as an unbroken run.
- Data comes from a function of the epoch (`epoch -> groups`), so a resumed run redraws exactly the groups and
  the order the broken one had, without storing them.
- Training stages (EAG's abstracted pass, then the plain pass) share the loop; the optimizer state is reset
  between stages, the weights carry over.
- Early stopping reads the mean loss on fixed dev groups every `eval_every` steps; the best weights are kept
  on disk (`best.safetensors`) and restored at the end, so a late bad stretch never ships.
- The loss is `config.objective` over the logit matrix, unless the trainer is given a `loss_fn(logits, batch)`:
  then a batch may be anything the model and that function agree on (distillation passes each candidate list
  with its teacher scores and labels). The function may also return `(loss, {term: value})`; the terms are
  logged beside the loss.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_dir
from routerank.train.groups import TrainGroup
from routerank.train.losses import canonical_objective, ranking_loss

EpochData = Callable[[int], Sequence[TrainGroup]]
LossFn = Callable[[Any, Sequence[Any]], Any]  # (logits, batch) -> loss, or (loss, {term: float})
DEV_MEASURES = ("loss", "mrr")
AUTOCASTS = ("none", "bf16")


class Trainable(Protocol):
    """What `GroupTrainer` needs of a model: logits of a batch with gradients, its parameters, and the tensors
    training changes."""

    def group_logits(self, groups: Sequence[TrainGroup]) -> Any:
        """A [groups, 1 + negatives] logit matrix of a batch, the positive in column 0, with gradients (a custom
        `loss_fn` may agree on another batch and output)."""

    def parameters(self) -> list:
        """The model's parameters; those that require gradients are optimised."""

    def trainable_state(self) -> dict[str, Any]:
        """The tensors training changes, by name: what a checkpoint saves."""

    def load_trainable_state(self, tensors: dict[str, Any]) -> None:
        """Load tensors that `trainable_state` handed out."""

    def train(self, mode: bool = True) -> Any:
        """Switch training mode (dropout) on or off, as `torch.nn.Module.train` does."""


@dataclass(frozen=True)
class TrainerConfig:
    """How to optimise, whatever the model.

    objective: `infonce` (contrastive) or `bce` (pointwise SFT); see routerank.train.losses.
    temperature: InfoNCE divides logits by it; 1.0 as in the R2R paper.
    lr, weight_decay: AdamW. warmup_ratio: linear warmup share of the steps, then linear decay (`schedule`
        "linear"); "constant" keeps lr flat (LoRA experts).
    epochs: passes over each stage's data. batch_groups: groups per forward pass (memory);
        grad_accum: forward passes per optimizer step (effective batch = batch_groups * grad_accum).
    max_grad_norm: clipping; 0 turns it off.
    eval_every / patience: dev loss every that many steps; stop after `patience` evaluations without a new best
        (0 = never stop early). save_every: checkpoint interval in optimizer steps.
    dev_measure: what early stopping and the best checkpoint minimise on dev. "loss" is the training loss; "mrr" is
        1 - the mean reciprocal rank of each group's positive among its negatives, ties counted against the
        positive. A model that collapses to equal scores lowers InfoNCE towards ln(1 + n) when it started above
        that (sparse judgments, false negatives), but it cannot fool a rank measure.
    autocast: "bf16" runs every forward pass (training and dev) under bfloat16 autocast: about 2x faster on CPUs
        with AVX512-BF16 and on GPUs; the weights and the optimizer stay fp32. "none" (the default) is plain fp32.
    eval_at_start: also measure the dev loss before the first step and let it compete for the best weights. For an
        adapter whose initial state is the identity (LoRA), that means a run that only makes the backbone worse on
        dev ships the backbone unchanged instead of its damage.
    """

    objective: str = "infonce"
    temperature: float = 1.0
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    schedule: str = "linear"
    epochs: int = 1
    batch_groups: int = 4
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    eval_every: int = 100
    patience: int = 3
    save_every: int = 50
    eval_at_start: bool = False
    dev_measure: str = "loss"
    seed: int = 13
    autocast: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", canonical_objective(self.objective))
        for name in ("epochs", "batch_groups", "grad_accum", "eval_every", "save_every"):
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.temperature <= 0:
            raise SpecError("lr and temperature must be positive")
        if self.dev_measure not in DEV_MEASURES:
            raise SpecError(f"unknown dev_measure {self.dev_measure!r}", fix=f"choose one of {', '.join(DEV_MEASURES)}")
        if self.schedule not in ("linear", "constant"):
            raise SpecError(f"unknown schedule {self.schedule!r}", fix="linear or constant")
        if not 0 <= self.warmup_ratio < 1:
            raise SpecError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.autocast not in AUTOCASTS:
            raise SpecError(f"unknown autocast {self.autocast!r}", fix=f"choose one of {', '.join(AUTOCASTS)}")

    def precision(self):
        """The context every forward pass runs in: bfloat16 autocast, or nothing."""
        # heavy: torch loads only when a model runs
        import torch

        if self.autocast == "bf16":
            return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def adapter_trainer_config(**settings) -> TrainerConfig:
    """The optimisation every LoRA adapter trainer here shares (R2R experts, DeAR's stages, ProRank's stage 2):
    AdamW at a constant rate with no weight decay or warmup, one group per forward pass, and the untrained adapter
    (the identity) competing on dev, so a stage never ships worse than where it started. `settings` override any
    field (objective, lr, epochs, grad_accum, eval_every, patience, save_every, seed, ...)."""
    base = dict(weight_decay=0.0, warmup_ratio=0.0, schedule="constant", batch_groups=1, eval_at_start=True)
    return TrainerConfig(**{**base, **settings})


@dataclass
class TrainState:
    """Where a `GroupTrainer` run stands; saved in every checkpoint's state.json, so a resumed run carries on from it.

    stage, epoch: the training stage and the epoch within it (0-based). cursor: batches of this epoch consumed.
    step: optimizer steps in this stage. total_steps: over every stage; what `eval_every` and `save_every` count.
    best_dev, best_step: the lowest dev measure so far and the total step it was reached at (0: the starting weights).
    bad_evals: evaluations since the last new best, in this stage; stopped_early: it reached `patience`.
    seconds: training time over every sitting, checkpoints included.
    first_loss, last_loss: the first step's training loss and the latest one's.
    """

    stage: int = 0
    epoch: int = 0
    cursor: int = 0
    step: int = 0  # optimizer steps in this stage
    total_steps: int = 0  # over every stage
    best_dev: float = float("inf")
    best_step: int = 0
    bad_evals: int = 0
    stopped_early: bool = False
    seconds: float = 0.0  # training time over every sitting, checkpoints included
    first_loss: float | None = None
    last_loss: float | None = None


@dataclass(frozen=True)
class TrainSummary:
    """How a `GroupTrainer.fit` call ended: the final state, whether it resumed a checkpoint, this sitting's
    seconds, the final dev measure (None without dev groups) and this sitting's step losses."""

    state: TrainState
    resumed: bool
    seconds_this_run: float
    dev_loss: float | None
    losses: list[float] = field(default_factory=list)  # this sitting's step losses


def positive_reciprocal_rank(logits):
    """Per group, 1 / rank of column 0 (the positive) among its row, every negative scoring at least as high
    ranked above it: equal scores are no better than wrong ones."""
    ahead = (logits[:, 1:] >= logits[:, :1]).sum(dim=1)
    return 1.0 / (1.0 + ahead.float())


class TrainingInterrupted(RouterankError):
    """Raised by `stop_after_steps` once a checkpoint is on disk (used to test resuming)."""

    def __init__(self, step: int):
        super().__init__(f"training stopped after step {step}; rerun to resume")
        self.step = step


def _lr_factor(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


class GroupTrainer:
    """Optimise a `Trainable` on group batches, resumably. `key` is any JSON-able description of the run (data,
    model, config): a checkpoint made under another key is refused rather than silently mixed in. `loss_fn`
    replaces the objective's loss (see the module docstring); what it computes belongs in `key`."""

    def __init__(
        self,
        model: Trainable,
        config: TrainerConfig,
        state_dir: str | Path,
        *,
        key: dict | None = None,
        progress: bool = True,
        desc: str = "train",
        loss_fn: LossFn | None = None,
    ):
        # heavy: torch loads only when a model runs
        import torch

        self.model, self.config, self.progress, self.desc = model, config, progress, desc
        self.loss_fn = loss_fn
        self.last_terms: dict[str, float] = {}  # the last step's loss terms, when loss_fn reports them
        self.state_dir = Path(state_dir)
        self.key = json.loads(json.dumps({"trainer": asdict(config), "run": key or {}}))
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise RouterankError("the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = None
        self._scheduler_state: dict | None = None  # read from a checkpoint, applied once the scheduler exists
        self.state = TrainState()
        self.log_path = self.state_dir / "log.jsonl"
        self._mark = time.perf_counter()

    # checkpoints -----------------------------------------------------------------------------------------

    def _tick(self) -> None:
        now = time.perf_counter()
        self.state.seconds += now - self._mark
        self._mark = now

    def save_state(self) -> None:
        """Checkpoint the trainable tensors, optimizer and scheduler state, torch RNG, run state, log and best weights
        to `state_dir` in one swap."""
        # heavy: torch loads only when a model runs; safetensors.torch imports torch
        import torch
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in self.model.trainable_state().items()}
        opt = self.optimizer.state_dict()
        for index, slots in opt["state"].items():
            for name, value in slots.items():
                tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().contiguous().cpu()
        tensors["rng.torch"] = torch.get_rng_state()
        self._tick()
        best = self.state_dir / "best.safetensors"
        with atomic_dir(self.state_dir) as tmp:
            save_file(tensors, str(tmp / "state.safetensors"))
            meta = {
                "key": self.key,
                "state": asdict(self.state),
                "param_groups": opt["param_groups"],
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            }
            (tmp / "state.json").write_text(json.dumps(meta, indent=2))
            if self.log_path.exists():
                (tmp / "log.jsonl").write_bytes(self.log_path.read_bytes())
            if best.exists():
                (tmp / "best.safetensors").write_bytes(best.read_bytes())

    def load_state(self) -> bool:
        """Resume from the checkpoint in `state_dir`, if there is one; returns whether there was. A checkpoint made
        under another key is refused, and log lines past it are dropped."""
        # heavy: torch loads only when a model runs; safetensors.torch imports torch
        import torch
        from safetensors.torch import load_file

        if not (self.state_dir / "state.json").exists():
            return False
        meta = json.loads((self.state_dir / "state.json").read_text())
        if meta["key"] != self.key:
            raise RouterankError(
                "a checkpoint from a different training run is in the way",
                path=self.state_dir,
                fix="delete it, or rerun with the same settings to resume",
            )
        tensors = load_file(str(self.state_dir / "state.safetensors"))
        self.model.load_trainable_state({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        self.state = TrainState(**meta["state"])
        self._scheduler_state = meta.get("scheduler")
        # log lines written after the checkpoint belong to steps that will be redone
        if self.log_path.exists():
            kept = [line for line in self.log_path.read_text().splitlines() if line.strip()]
            kept = [line for line in kept if json.loads(line)["total_step"] <= self.state.total_steps]
            self.log_path.write_text("".join(f"{line}\n" for line in kept))
        return True

    def _save_best(self) -> None:
        # heavy: safetensors.torch imports torch
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in self.model.trainable_state().items()}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_dir / ".best.safetensors.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(self.state_dir / "best.safetensors")

    def restore_best(self) -> bool:
        """Load the best dev weights kept so far; returns False when none were kept."""
        # heavy: safetensors.torch imports torch
        from safetensors.torch import load_file

        best = self.state_dir / "best.safetensors"
        if not best.exists():
            return False
        self.model.load_trainable_state(load_file(str(best)))
        return True

    def log(self, record: dict) -> None:
        """Append one record to the JSONL training log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    # the loop --------------------------------------------------------------------------------------------

    def loss_of(self, logits, batch: Sequence[Any]) -> tuple[Any, dict[str, float]]:
        """(the batch's loss tensor, its logged terms): `loss_fn` when given, else the objective's loss."""
        if self.loss_fn is None:
            return ranking_loss(self.config.objective, logits, self.config.temperature), {}
        out = self.loss_fn(logits, batch)
        return out if isinstance(out, tuple) else (out, {})

    def dev_loss(self, dev: Sequence[TrainGroup]) -> float:
        """Mean `dev_measure` over `dev` in eval mode (no dropout, no gradients); lower is better."""
        # heavy: torch loads only when a model runs
        import torch

        self.model.train(False)
        total = 0.0
        with torch.inference_mode():
            for start in range(0, len(dev), self.config.batch_groups):
                batch = dev[start : start + self.config.batch_groups]
                with self.config.precision():
                    logits = self.model.group_logits(batch).float()
                if self.config.dev_measure == "mrr":
                    total += float((1.0 - positive_reciprocal_rank(logits)).sum())
                else:
                    total += float(self.loss_of(logits, batch)[0]) * len(batch)
        self.model.train(True)
        return total / max(len(dev), 1)

    def _new_scheduler(self, groups_per_epoch: int):
        # heavy: torch loads only when a model runs
        import torch

        c = self.config
        per_epoch = math.ceil(math.ceil(groups_per_epoch / c.batch_groups) / c.grad_accum)
        total = max(1, per_epoch * c.epochs)
        warmup = max(1, round(c.warmup_ratio * total)) if c.warmup_ratio > 0 else 0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_factor(c.schedule, warmup, total))

    def accumulate(self, window: Sequence[Sequence[TrainGroup]]) -> float:
        """Add the gradients of the window's mean loss, one forward/backward per batch (memory holds one batch);
        returns that mean loss. The optimizer does not step."""
        size = sum(len(batch) for batch in window)
        loss_sum, terms = 0.0, {}
        for batch in window:
            with self.config.precision():
                logits = self.model.group_logits(batch).float()
            loss, parts = self.loss_of(logits, batch)
            (loss * len(batch) / size).backward()
            loss_sum += float(loss.detach()) * len(batch) / size
            for name, value in parts.items():
                terms[name] = terms.get(name, 0.0) + value * len(batch) / size
        self.last_terms = terms
        return loss_sum

    def _step(self, window: list[list[TrainGroup]]) -> float:
        # heavy: torch loads only when a model runs
        import torch

        loss = self.accumulate(window)
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def fit(
        self, stages: Sequence[EpochData], dev: Sequence[TrainGroup] = (), *, stop_after_steps: int | None = None
    ) -> TrainSummary:
        """Run (or resume) every stage; `stop_after_steps` simulates a kill right after a checkpoint."""
        c = self.config
        resumed = self.load_state()
        started, losses = time.perf_counter(), []
        self._mark = started
        if dev and c.eval_at_start and not resumed and self.state.total_steps == 0:
            self.log({"stage": 0, "epoch": 0, "step": 0, "total_step": 0, "dev_loss": self._evaluate(dev)})
        self.model.train(True)
        for stage in range(self.state.stage, len(stages)):
            if stage != self.state.stage:
                self._begin_stage(stage)
            first_epoch = stages[stage](0)
            if not first_epoch:
                raise RouterankError(f"stage {stage + 1} has no training groups", fix="check the data and filters")
            self._start_schedule(len(first_epoch))
            while self.state.epoch < c.epochs and not self.state.stopped_early:
                groups = list(first_epoch if self.state.epoch == 0 else stages[stage](self.state.epoch))
                self._run_epoch(groups, f"stage {stage + 1}/{len(stages)}", dev, losses, stop_after_steps)
                if not self.state.stopped_early:
                    self.state.epoch += 1
                    self.state.cursor = 0
        final_dev = None
        if dev:
            final_dev = self._evaluate(dev, final=True)
            self.restore_best()
        self._tick()
        return TrainSummary(self.state, resumed, time.perf_counter() - started, final_dev, losses)

    def _begin_stage(self, stage: int) -> None:
        """Move on to a new stage: same weights, fresh optimizer moments and schedule, run-wide tallies kept."""
        self.state = TrainState(
            stage=stage,
            total_steps=self.state.total_steps,
            best_dev=self.state.best_dev,
            best_step=self.state.best_step,
            seconds=self.state.seconds,
            first_loss=self.state.first_loss,
            last_loss=self.state.last_loss,
        )
        self.optimizer.state.clear()
        self._scheduler_state = None

    def _start_schedule(self, groups_per_epoch: int) -> None:
        """Build this stage's lr schedule, set back to where a loaded checkpoint left it."""
        self._new_scheduler(groups_per_epoch)
        if self._scheduler_state:
            self.scheduler.load_state_dict(self._scheduler_state)
            self._scheduler_state = None
            # a new LambdaLR sets lr for step 0; put back the lr of the step the checkpoint reached
            for group, lr in zip(self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True):
                group["lr"] = lr

    def _run_epoch(
        self,
        groups: list[TrainGroup],
        where: str,
        dev: Sequence[TrainGroup],
        losses: list[float],
        stop_after_steps: int | None,
    ) -> None:
        """Train on the epoch's shuffled batches from the cursor on, logging, evaluating and checkpointing each step;
        `losses` gathers this sitting's step losses, and a kill is simulated once it holds `stop_after_steps`."""

        c = self.config
        random.Random(c.seed * 1000 + self.state.stage * 100 + self.state.epoch).shuffle(groups)
        batches = [groups[i : i + c.batch_groups] for i in range(0, len(groups), c.batch_groups)]
        bar = tqdm(
            total=len(batches),
            initial=min(self.state.cursor, len(batches)),
            disable=not self.progress,
            desc=f"{self.desc} {where} epoch {self.state.epoch + 1}/{c.epochs}",
            unit="batch",
        )
        while self.state.cursor < len(batches):
            window = batches[self.state.cursor : self.state.cursor + c.grad_accum]
            loss = self._step(window)
            losses.append(loss)
            self._advance(len(window), loss)
            bar.update(len(window))
            record = self._step_record(loss)
            if dev and self.state.total_steps % c.eval_every == 0:
                record["dev_loss"] = self._evaluate(dev)
            recent = losses[-20:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", best_dev=f"{self.state.best_dev:.4f}")
            self.log(record)
            if self.state.stopped_early:
                break
            if self.state.total_steps % c.save_every == 0:
                self.save_state()
                if stop_after_steps is not None and len(losses) >= stop_after_steps:
                    bar.close()
                    raise TrainingInterrupted(self.state.total_steps)
        bar.close()

    def _advance(self, batches: int, loss: float) -> None:
        """Count one optimizer step over `batches` batches that reached `loss`."""
        self.state.cursor += batches
        self.state.step += 1
        self.state.total_steps += 1
        self.state.first_loss = loss if self.state.first_loss is None else self.state.first_loss
        self.state.last_loss = loss

    def _step_record(self, loss: float) -> dict[str, Any]:
        """The log line of the step just taken (before any dev evaluation)."""
        return {
            "stage": self.state.stage,
            "epoch": self.state.epoch,
            "step": self.state.step,
            "total_step": self.state.total_steps,
            "loss": round(loss, 6),
            **{name: round(value, 6) for name, value in self.last_terms.items()},
            "lr": self.scheduler.get_last_lr()[0],
            "seconds": round(self.state.seconds + time.perf_counter() - self._mark, 2),
        }

    def _evaluate(self, dev: Sequence[TrainGroup], final: bool = False) -> float:
        loss = self.dev_loss(dev)
        if loss < self.state.best_dev:
            self.state.best_dev, self.state.best_step, self.state.bad_evals = loss, self.state.total_steps, 0
            self._save_best()
        elif not final:
            self.state.bad_evals += 1
            if self.config.patience and self.state.bad_evals >= self.config.patience:
                self.state.stopped_early = True
        return loss
