"""GRPO for LLM rerankers (ProRank stage 1, Rank-R1): TRL's `GRPOTrainer` with a LoRA adapter on a backbone spec,
resumable and logged the way routerank's other trainers are.

A task (`prorank.py`, `rank_r1.py`) supplies a `GRPOTask`: prompt records (a "prompt" text in the reranker's own
template, plus the columns its rewards read), reward functions (plain callables: completions and columns -> one
float each) and what its reranker needs in the manifest. This module does the rest:
- the records are built once per run (seeded: which queries, which documents, in which order) and kept in the state
  folder, so a resumed run trains on exactly the records the broken one had;
- TRL samples `num_generations` completions per prompt, scores them, and normalises each reward within its group;
  one optimizer step takes `prompts_per_step` prompts (one generation batch);
- every `save_every` steps TRL checkpoints to `<out>.state/trl/checkpoint-N` (the adapter as safetensors, optimizer,
  scheduler, RNG, data position); rerunning the same config resumes from the last one and the step count continues;
- each step appends one JSONL line (loss, reward, each reward function's mean, completion length, lr, seconds) to
  `<out>.state/log.jsonl` and moves a progress bar that shows the running loss and reward;
- a task may ask for a supervised format SFT first (`FormatSFT`, a "cold start": Rank-R1 on a 135M model, whose
  sampled completions otherwise never hold the format, so every reward and advantage is 0): LoRA is trained on
  well-formed target completions of other training queries, saved to `<out>.state/sft`, and GRPO goes on from it.
  It is short (minutes) and not checkpointed inside: a kill during it redoes it;
- the finished adapter goes atomically to `<out>`: `adapter_model.safetensors`, `routerank_adapter.json` (the
  config, steps, seconds, reward curve) and `train_log.jsonl`; then the state folder is removed. A rerun of a
  finished config returns the folder as it is.

On CPU (no GPU found) the run is fp32 with `use_cpu`; on a GPU, bf16 when the card has it. `hf:<hub-id>` backbones
such as `hf:Qwen/Qwen2.5-0.5B-Instruct` load like any LLM spec (`routerank.models.llm`).
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from routerank.data.registry import load_dataset
from routerank.errors import MissingDependencyError, RouterankError, SpecError
from routerank.fsutil import atomic_dir, atomic_write
from routerank.models.llm import load_causal_lm, resolve_llm
from routerank.rerank.adapters import MANIFEST, WEIGHTS
from routerank.rerank.backbones import LLM_TARGETS
from routerank.rerank.reasoning import stop_ids
from routerank.train.groups import NegativePool, mine_pools, select_queries
from routerank.train.loop import TrainingInterrupted
from routerank.train.lora import LoRASettings

# the loss formulations GRPOConfig.loss_type takes in TRL 1.16 (trl/trainer/grpo_config.py)
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")


@dataclass(frozen=True, kw_only=True)
class GRPOSettings(LoRASettings):
    """What every GRPO reranker trainer shares: data, sampling, optimisation and the LoRA adapter.

    backbone: LLM spec (`smollm2`, `hf:Qwen/Qwen2.5-0.5B-Instruct`, `hf:<folder>`, `gguf:<file>`).
    dataset: comma-separated dataset names; `max_queries` (per dataset; None = all) training queries come from each
        one's train split, after `dev_queries` are held out (seeded), so a later evaluation never saw them.
    miner, negative_depth: the retriever whose top `negative_depth` non-relevant documents are the hard negatives.
    max_doc_tokens: each document is cut to this many tokens in the prompt, as the reranker cuts it at inference.
    num_generations: completions sampled per prompt (the group GRPO normalises rewards in); at least 2.
    prompts_per_step: prompts per optimizer step, so a step scores prompts_per_step * num_generations completions.
    max_completion_length: the completion budget in tokens; temperature: sampling temperature.
    beta: KL weight against the starting model; 0 loads no reference model (half the forward passes). With LoRA
        and beta > 0, TRL uses the backbone with the adapter switched off as the reference.
    loss_type: TRL's loss aggregation (`LOSS_TYPES`); `dapo`, TRL's default, normalises by the tokens in the batch
        and so has no length bias.
    lr, epochs, max_steps: AdamW learning rate (constant), passes over the prompts, or a step cap (0 = none).
    lora_r, lora_alpha, lora_dropout, target_modules (with lr, `LoRASettings`): the adapter; empty targets = every
        attention projection.
    save_every: checkpoint interval in optimizer steps. gradient_checkpointing: trade compute for memory (GPU).
    """

    backbone: str = "smollm2"
    dataset: str = "scifact,nfcorpus"
    max_queries: int | None = 75
    dev_queries: int = 10
    miner: str = "bm25"
    negative_depth: int = 30
    max_doc_tokens: int = 96
    num_generations: int = 4
    prompts_per_step: int = 2
    max_completion_length: int = 8
    temperature: float = 1.0
    beta: float = 0.0
    loss_type: str = "dapo"
    lr: float = 5e-5  # LoRASettings' field, with GRPO's own default
    epochs: int = 1
    max_steps: int = 0
    save_every: int = 10
    gradient_checkpointing: bool = False
    seed: int = 13

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_generations < 2:
            raise SpecError(
                f"num_generations must be at least 2, got {self.num_generations}",
                fix="GRPO compares completions within a group: use 2 or more",
            )
        for name in ("prompts_per_step", "max_completion_length", "epochs", "save_every", "max_doc_tokens"):
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps < 0 or self.dev_queries < 0 or self.beta < 0:
            raise SpecError("max_steps, dev_queries and beta must be 0 or more")
        if self.max_queries is not None and self.max_queries < 1:
            raise SpecError(f"max_queries must be positive or None (all), got {self.max_queries}")
        if self.loss_type not in LOSS_TYPES:
            raise SpecError(f"unknown GRPO loss_type {self.loss_type!r}", fix=f"choose one of {', '.join(LOSS_TYPES)}")
        if self.lr <= 0 or self.temperature <= 0:
            raise SpecError("lr and temperature must be positive")
        if not [n for n in self.dataset.split(",") if n.strip()]:
            raise SpecError("dataset names no dataset", fix='e.g. dataset = "scifact,nfcorpus"')


def config_json(config) -> dict:
    """A settings dataclass as a plain JSON record, as the adapter's manifest keeps it."""
    return json.loads(json.dumps(asdict(config)))


@dataclass(frozen=True)
class FormatSFT:
    """Supervised steps before GRPO. `records(tokenizer)` builds {"prompt", "completion"} records (the completion
    without the end-of-turn token, which is added); each is trained on its completion tokens only (cross-entropy),
    `epochs` passes in a seeded order, one optimizer step (AdamW, constant `lr`) per `grad_accum` records."""

    records: Callable[[Any], list[dict]]
    epochs: int = 2
    lr: float = 2e-4
    grad_accum: int = 4


@dataclass(frozen=True)
class GRPOTask:
    """One GRPO job. `records(tokenizer)` builds the prompt records (each with a "prompt" text); `rewards` are
    called by TRL as `f(completions=..., prompts=..., **columns)`; `reward_weights` (None = all 1) may give a
    logged-only reward weight 0. `key` identifies the run (resume and "already done" compare it); `manifest` is
    added to the adapter's manifest (reranker family, template, ...)."""

    kind: str
    records: Callable[[Any], list[dict]]
    rewards: Sequence[Callable]
    settings: GRPOSettings
    key: dict
    manifest: dict
    reward_weights: Sequence[float] | None = None
    desc: str = ""
    sft: FormatSFT | None = None


def dataset_names(settings: GRPOSettings) -> list[str]:
    """The names `settings.dataset` joins with commas, in order."""
    return [name.strip() for name in settings.dataset.split(",") if name.strip()]


def load_pools(settings: GRPOSettings, part: str = "train", extra: int = 0) -> list[NegativePool]:
    """Each dataset's training queries (`part="train"`), held-out dev queries (`"dev"`), or `extra` further training
    queries that the GRPO run does not use (`"extra"`, the next ones in the same seeded order: a format SFT's), with
    their judged positives and the miner's top `negative_depth` non-relevant candidates. Query ids get a
    `<dataset>/` prefix."""
    if part not in ("train", "dev", "extra"):
        raise ValueError(f"part must be train, dev or extra, got {part!r}")
    if part == "extra" and settings.max_queries is None:
        raise SpecError("no training queries are left over when max_queries takes all of them", fix="set max_queries")
    pools: list[NegativePool] = []
    for name in dataset_names(settings):
        ds = load_dataset(name)
        train, dev = select_queries(ds, "train", settings.max_queries, settings.seed, holdout=settings.dev_queries)
        queries = {"train": train, "dev": dev}.get(part)
        if part == "extra":
            more, _ = select_queries(
                ds, "train", settings.max_queries + extra, settings.seed, holdout=settings.dev_queries
            )
            taken = {q.id for q in train}
            queries = [q for q in more if q.id not in taken]
        pools += mine_pools(
            ds,
            queries,
            "train",
            depth=settings.negative_depth,
            minimum=1,
            miner=settings.miner,
            seed=settings.seed,
            id_prefix=f"{name}/",
        )
    return pools


def finished(out: Path, key: dict) -> bool:
    """Whether `out` already holds the adapter this key trains."""
    if not (out / MANIFEST).exists() or not (out / WEIGHTS).exists():
        return False
    return json.loads((out / MANIFEST).read_text()).get("run_key") == key


SFT_SUMMARY = "format_sft.json"


class RunState:
    """The state folder of one GRPO run: its key, its prompt records, TRL's checkpoints and the step log."""

    def __init__(self, out: Path, key: dict):
        self.dir = out.with_name(out.name + ".state")
        self.key = json.loads(json.dumps(key))
        self.trl_dir = self.dir / "trl"
        self.log_path = self.dir / "log.jsonl"
        self.records_path = self.dir / "prompts.jsonl"

    def claim(self) -> None:
        """Refuse a state folder left by a run with other settings; otherwise mark it as this run's."""
        path = self.dir / "run.json"
        if path.exists() and json.loads(path.read_text()) != self.key:
            raise RouterankError(
                "a checkpoint from a different training run is in the way",
                path=self.dir,
                fix="delete it, or rerun with the same settings to resume",
            )
        with atomic_write(path) as handle:
            handle.write(json.dumps(self.key, indent=2))

    def records(self, build: Callable[[], list[dict]]) -> list[dict]:
        """The run's prompt records: those kept in the state folder, or else `build()`'s, saved there first so a
        resumed run trains on the same ones."""
        if self.records_path.exists():
            return [json.loads(line) for line in self.records_path.read_text().splitlines() if line.strip()]
        records = build()
        if not records:
            raise RouterankError("no training prompts: no query had a judged positive and a mined negative")
        with atomic_write(self.records_path) as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)
        return records

    def last_checkpoint(self) -> str | None:
        """The path of TRL's latest checkpoint in the state folder, or None."""
        # heavy: transformers loads only when a model is built
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(str(self.trl_dir)) if self.trl_dir.exists() else None

    def rewind_log(self, step: int) -> float:
        """Drop log lines of steps after `step` (they will be redone); the seconds trained up to it."""
        if not self.log_path.exists():
            return 0.0
        kept = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        kept = [record for record in kept if record["step"] <= step]
        with atomic_write(self.log_path) as handle:
            handle.writelines(json.dumps(r) + "\n" for r in kept)
        return kept[-1]["seconds"] if kept else 0.0

    def sft_summary(self) -> dict | None:
        """The summary record of this run's finished format SFT, or None."""
        path = self.dir / "sft" / SFT_SUMMARY
        return json.loads(path.read_text()) if path.exists() else None

    def log(self) -> list[dict]:
        """Every step record logged so far, in order."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]


def step_logger(state: RunState, desc: str, progress: bool, seconds_before: float, stop_after_steps: int | None):
    """A TrainerCallback: one JSONL line and one progress-bar tick per optimizer step; with `stop_after_steps`, it
    stops the run at the first checkpoint after that many steps of this sitting (to test resuming)."""
    # heavy: transformers loads only when a model is built
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        interrupted = False

        def on_train_begin(self, args, trainer_state, control, **kwargs):
            self.started, self.first = time.perf_counter(), trainer_state.global_step
            self.bar = tqdm(
                total=trainer_state.max_steps, initial=trainer_state.global_step, desc=desc, disable=not progress
            )
            self.recent: list[tuple[float, float]] = []

        def on_step_end(self, args, trainer_state, control, **kwargs):
            self.bar.update(trainer_state.global_step - self.bar.n)
            done = trainer_state.global_step - self.first
            if stop_after_steps is not None and done >= stop_after_steps and control.should_save:
                control.should_training_stop, self.interrupted = True, True

        def on_log(self, args, trainer_state, control, logs=None, **kwargs):
            if not logs or "reward" not in logs:
                return
            record = {
                "step": trainer_state.global_step,
                "epoch": round(trainer_state.epoch or 0.0, 4),
                "loss": logs.get("loss"),
                "reward": logs["reward"],
                "reward_std": logs.get("reward_std"),
                **{
                    key.split("/")[1]: value
                    for key, value in logs.items()
                    if key.startswith("rewards/") and key.endswith("/mean")
                },
                "completion_length": logs.get("completions/mean_length"),
                **({"kl": logs["kl"]} if "kl" in logs else {}),
                "lr": logs.get("learning_rate"),
                "seconds": round(seconds_before + time.perf_counter() - self.started, 2),
            }
            with open(state.log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            self.recent = [*self.recent[-19:], (record["loss"] or 0.0, record["reward"])]
            losses, rewards = zip(*self.recent, strict=True)
            self.bar.set_postfix(
                loss=f"{sum(losses) / len(losses):.4f}", reward=f"{sum(rewards) / len(rewards):.3f}", refresh=False
            )

        def on_train_end(self, args, trainer_state, control, **kwargs):
            self.bar.close()

    return StepLog()


def trl_config(
    settings: GRPOSettings, output_dir: Path, *, on_gpu: bool, bf16: bool, reward_weights: Sequence[float] | None
):
    """TRL's GRPOConfig for these settings (the arguments checked against trl 1.16's grpo_config.py)."""
    # heavy, optional: trl loads only when GRPO trains
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir),
        # one optimizer step = one generation batch = prompts_per_step prompts x num_generations completions
        per_device_train_batch_size=settings.prompts_per_step * settings.num_generations,
        gradient_accumulation_steps=1,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        beta=settings.beta,
        loss_type=settings.loss_type,
        reward_weights=list(reward_weights) if reward_weights is not None else None,
        learning_rate=settings.lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        save_strategy="steps",
        save_steps=settings.save_every,
        save_total_limit=2,
        logging_steps=1,
        report_to="none",
        disable_tqdm=True,
        log_completions=False,
        use_cpu=not on_gpu,
        bf16=bf16,
        activation_checkpointing=settings.gradient_checkpointing,
        dataloader_num_workers=0,
        seed=settings.seed,
    )


def _quiet_trl() -> None:
    """TRL pings the Hub when a trainer is built (huggingface_hub telemetry): routerank makes no network call it
    was not asked for, so the ping is switched off, as HF_HUB_DISABLE_TELEMETRY=1 would."""

    # deferred: the hub client is touched only here, to switch its telemetry off for this run
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_TELEMETRY = True
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def train_grpo(
    task: GRPOTask, out: str | Path, *, loaded=None, progress: bool = True, stop_after_steps: int | None = None
) -> Path:
    """Train (or resume, or find finished) the task's adapter in `out`. `loaded` is an already-loaded (model,
    tokenizer), e.g. a tiny test model; `stop_after_steps` simulates a kill right after a checkpoint."""
    out = Path(out)
    if finished(out, task.key):
        return out
    try:
        # heavy, optional: trl loads only when GRPO trains
        from trl import GRPOTrainer
    except ImportError:
        raise MissingDependencyError("GRPO training needs TRL", fix="pip install 'routerank[llm]'") from None
    # heavy: torch, peft, transformers load only when this runs, not at import
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback

    _quiet_trl()
    settings = task.settings
    state = RunState(out, task.key)
    state.claim()
    model, tokenizer = loaded if loaded is not None else load_causal_lm(settings.backbone)
    records = state.records(lambda: task.records(tokenizer))
    tokenizer.padding_side = "left"
    model.generation_config.eos_token_id = stop_ids(tokenizer)  # a chat turn ends at <|im_end|>, whatever the config
    on_gpu = next(model.parameters()).device.type == "cuda"
    checkpoint = state.last_checkpoint()
    seconds_before = state.rewind_log(int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0)
    logger = step_logger(state, task.desc or f"{task.kind} GRPO", progress, seconds_before, stop_after_steps)
    lora = settings.peft_config(LLM_TARGETS, task_type="CAUSAL_LM")
    if task.sft is not None:  # GRPO goes on training the SFT's adapter
        model, lora = format_sft(model, tokenizer, task, state, lora, progress), None
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=list(task.rewards),
        args=trl_config(
            settings,
            state.trl_dir,
            on_gpu=on_gpu,
            bf16=on_gpu and torch.cuda.is_bf16_supported(),
            reward_weights=task.reward_weights,
        ),
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[logger],
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar and the JSONL log say it instead
    if progress and checkpoint:
        print(f"resuming {task.kind} from {checkpoint}", file=sys.stderr)
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
        if logger.interrupted:
            raise TrainingInterrupted(trainer.state.global_step)
        fingerprint = resolve_llm(settings.backbone).fingerprint if loaded is None else None
        return save_adapter(trainer.model, out, state, task, fingerprint, trainer.state.global_step)
    finally:
        if loaded is not None:  # hand the caller's model back without the LoRA layers GRPO injected into it
            trainer.model.unload()


def format_sft(model, tokenizer, task: GRPOTask, state: RunState, lora, progress: bool):
    """The task's format SFT on a fresh LoRA adapter (or the one a finished SFT saved in the state folder);
    returns the trainable PeftModel."""

    # heavy: torch loads only when a model runs; peft loads only when adapters are used
    import torch
    from peft import PeftModel, get_peft_model
    from tqdm.auto import tqdm

    sft, folder = task.sft, state.dir / "sft"
    if (folder / SFT_SUMMARY).exists():
        return PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    records = sft.records(tokenizer)
    if not records:
        raise RouterankError("no format SFT records: no extra training query had a judged positive and negatives")
    # the completion ends the chat turn: ChatML's end-of-turn token where the vocabulary has one, else EOS
    end = tokenizer.get_vocab().get("<|im_end|>", stop_ids(tokenizer)[0])
    examples = []
    for record in records:
        prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
        completion = [*tokenizer(record["completion"], add_special_tokens=False)["input_ids"], end]
        examples.append((prompt + completion, [-100] * len(prompt) + completion))
    peft = get_peft_model(model, lora)
    device = next(peft.parameters()).device
    optimizer = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=sft.lr, weight_decay=0.0)
    rng, order = random.Random(task.settings.seed), list(range(len(examples)))
    total = -(-len(examples) * sft.epochs // sft.grad_accum)
    bar = tqdm(total=total, desc=f"{task.kind} format SFT", disable=not progress)
    losses: list[float] = []
    step_losses: list[float] = []
    seen, start = 0, time.perf_counter()
    peft.train()
    for _ in range(sft.epochs):
        rng.shuffle(order)
        for index in order:
            ids, labels = examples[index]
            out = peft(input_ids=torch.tensor([ids], device=device), labels=torch.tensor([labels], device=device))
            (out.loss / sft.grad_accum).backward()
            step_losses.append(out.loss.item())
            seen += 1
            if len(step_losses) == sft.grad_accum or seen == len(examples) * sft.epochs:
                optimizer.step()
                optimizer.zero_grad()
                losses.append(round(sum(step_losses) / len(step_losses), 4))
                step_losses = []
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    bar.close()
    summary = {
        "records": len(examples),
        "epochs": sft.epochs,
        "steps": len(losses),
        "lr": sft.lr,
        "seconds": round(time.perf_counter() - start, 2),
        "loss_curve": losses,
    }
    with atomic_dir(folder) as tmp:
        peft.save_pretrained(str(tmp))
        (tmp / SFT_SUMMARY).write_text(json.dumps(summary, indent=2))
    return peft


def save_adapter(peft_model, out: Path, state: RunState, task: GRPOTask, fingerprint: str | None, steps: int) -> Path:
    """Write the finished adapter to `out` in one swap (weights; a manifest with the config, steps, seconds,
    reward curve and any format-SFT summary; the step log), then delete the state folder; returns `out`."""
    log = state.log()
    manifest = {
        **task.manifest,
        "kind": task.kind,
        "backbone": task.settings.backbone,
        "backbone_fingerprint": fingerprint,  # None: trained on a model passed in, not named by a spec
        "max_completion_length": task.settings.max_completion_length,
        "config": config_json(task.settings),
        "run_key": task.key,
        "steps": steps,
        "seconds": log[-1]["seconds"] if log else 0.0,
        "prompts": sum(1 for line in state.records_path.read_text().splitlines() if line.strip()),
        "reward_curve": [[record["step"], record["reward"]] for record in log],
        **({"format_sft": state.sft_summary()} if state.sft_summary() else {}),
    }
    with atomic_dir(out) as tmp:
        peft_model.save_pretrained(str(tmp))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if state.log_path.exists():
            shutil.copy(state.log_path, tmp / "train_log.jsonl")
    shutil.rmtree(state.dir, ignore_errors=True)
    return out
