"""ProRank for small LLMs: GRPO prompt warmup (stage 1), then fine-grained score learning on P("1") (stage 2).

Stage 1 teaches a small model the task before any score is asked of it. The prompt is the `prorank` yes/no template
(`rerank.templates`): query and document, and an answer that is one digit, 1 (relevant) or 0. GRPO samples a group
of completions per prompt and rewards each with `format_reward` (the completion is exactly one digit, whitespace
allowed) plus `correct_reward` (that digit is the qrels label). Prompts are balanced: each training query gives one
judged-relevant document (label 1) and one of the miner's top non-relevant documents (label 0).

Stage 2 turns the judgement into a score with no added layer: s(q, d) = logit("1") - logit("0") at the answer
position, i.e. log P("1") - log P("0") over the two digits, trained with the shared ranking loss (InfoNCE over one
positive and `stage2_negatives` hard negatives) on the shared resumable loop (`train.loop.GroupTrainer`). It
*continues* the stage-1 adapter (loaded trainable) rather than merging it and stacking a new one: one adapter is
the whole reranker, and LoRA's rank bounds both stages' change together. The dev loss is measured before the first
step too, so stage 2 never ships a model worse on dev than the stage-1 one it started from.

Both stages' adapters are pointwise rerankers over the same prompt:
`pointwise:<backbone>,template=prorank,adapter=<out>/stage2` (or `/stage1`).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_dir, cache_root, safe_name
from routerank.rerank.adapters import MANIFEST, adapter_digest, read_adapter_manifest
from routerank.rerank.backbones import LLMBackbone
from routerank.rerank.templates import DEFAULT_INSTRUCTION, get_template
from routerank.train.groups import sample_groups, top_groups
from routerank.train.grpo import GRPOSettings, GRPOTask, config_json, finished, load_pools, train_grpo
from routerank.train.loop import GroupTrainer, adapter_trainer_config
from routerank.train.lora import LoraTrainable
from routerank.train.losses import canonical_objective

STAGES = (1, 2)


@dataclass(frozen=True, kw_only=True)
class ProRankConfig(GRPOSettings):
    """ProRank's two stages. GRPO settings as in `GRPOSettings` (stage 1); the `stage2_*` fields drive stage 2.
    The defaults are the cpu sizes (configs/prorank-cpu.toml).

    template: a yes/no template whose answers are "1"/"0" (`prorank`).
    max_completion_length: 2 is the digit and the end of the turn (or line). A longer budget also asks the model to
        stop there, which untrained SmolLM2-135M almost never does: it opens with "1" (its top first token, P ~0.2)
        and runs on ("1. The document ..."), so every completion of a group scores 0 and GRPO has no signal.
    stage2_negatives: hard negatives per positive in the ranking loss; stage2_objective: `infonce` (ranking) or
        `bce`; stage2_lr, stage2_epochs, stage2_grad_accum (query groups per optimizer step); stage2_eval_every and
        stage2_patience: dev loss every that many steps, stop after that many evaluations without a new best;
        stage2_save_every: checkpoint interval.
    """

    template: str = "prorank"
    max_completion_length: int = 2
    stage2_negatives: int = 3
    stage2_objective: str = "infonce"
    stage2_lr: float = 1e-4
    stage2_epochs: int = 1
    stage2_grad_accum: int = 4
    stage2_eval_every: int = 10
    stage2_patience: int = 3
    stage2_save_every: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()

        template = get_template(self.template)
        if (template.yes, template.no) != ("1", "0"):
            raise SpecError(
                f"ProRank judges with the digits 1 and 0; template {self.template!r} answers "
                f"{template.yes!r}/{template.no!r}",
                fix='use template = "prorank"',
            )
        object.__setattr__(self, "stage2_objective", canonical_objective(self.stage2_objective))
        for name in ("stage2_negatives", "stage2_epochs", "stage2_grad_accum", "stage2_eval_every"):
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be at least 1, got {getattr(self, name)}")


def stage1_key(config: ProRankConfig) -> dict:
    """What stage 1 depends on: every field but stage 2's, so tuning stage 2 never retrains stage 1."""
    return {"prorank_stage1": {k: v for k, v in config_json(config).items() if not k.startswith("stage2_")}}


# stage 1: GRPO ---------------------------------------------------------------------------------------------------


def judgement_prompt(template, tokenizer, query: str, document: str, max_doc_tokens: int) -> str:
    """The prompt text for one pair, its document cut to `max_doc_tokens` tokens exactly where the pointwise
    reranker cuts it, so GRPO trains on the text that stage 2 and inference read."""
    prefix, query_part, document_part, suffix = template.segments(query, document, DEFAULT_INSTRUCTION)
    ids = tokenizer(document_part, add_special_tokens=False)["input_ids"][:max_doc_tokens]
    return prefix + query_part + tokenizer.decode(ids) + suffix


def judgement_records(config: ProRankConfig, tokenizer, pools=None) -> list[dict]:
    """Balanced stage-1 prompts: per training query one judged-relevant document (label 1) and one of the miner's
    top non-relevant documents (label 0), drawn and shuffled with `config.seed`."""
    template = get_template(config.template)
    rng = random.Random(config.seed)
    records = []
    for pool in pools if pools is not None else load_pools(config):
        negatives = pool.negatives_for(1)
        if not pool.positives or not negatives:
            continue
        pair = ((rng.choice(pool.positives)[0], 1), (rng.choice(negatives), 0))
        for doc_id, label in pair:
            text = pool.corpus[doc_id].full_text
            prompt = judgement_prompt(template, tokenizer, pool.query, text, config.max_doc_tokens)
            records.append({"prompt": prompt, "label": label, "query_id": pool.query_id, "doc_id": doc_id})
    rng.shuffle(records)
    return records


def judgement(completion: str) -> str | None:
    """The digit a completion answers, when it is exactly one judgement ("0" or "1", whitespace around allowed)."""
    text = completion.strip()
    return text if text in ("0", "1") else None


def format_reward(completions, **_) -> list[float]:
    """1 for a completion that is exactly one judgement, 0 otherwise."""
    return [1.0 if judgement(c) is not None else 0.0 for c in completions]


def correct_reward(completions, label, **_) -> list[float]:
    """1 for a completion whose judgement equals the qrels label, 0 otherwise (a malformed one is never correct)."""
    return [1.0 if judgement(c) == str(int(y)) else 0.0 for c, y in zip(completions, label, strict=True)]


def stage1_task(config: ProRankConfig) -> GRPOTask:
    """Stage 1 as a GRPO job: balanced judgement prompts, rewarded for the format and for the right digit, keyed
    by every field but stage 2's."""
    return GRPOTask(
        kind="prorank",
        records=lambda tokenizer: judgement_records(config, tokenizer),
        rewards=(format_reward, correct_reward),
        settings=config,
        key=stage1_key(config),
        manifest={"reranker": "pointwise", "template": config.template, "stage": 1},
        desc="prorank stage 1 (GRPO)",
    )


# stage 2: ranking loss on P("1") ---------------------------------------------------------------------------------


def train_stage2(
    config: ProRankConfig,
    stage1: str | Path,
    out: str | Path,
    *,
    loaded=None,
    progress: bool = True,
    stop_after_steps: int | None = None,
) -> Path:
    """Continue the stage-1 adapter with the ranking loss on logit("1") - logit("0"); resumable (`<out>.state`)."""
    # heavy: peft loads only when adapters are used
    from peft import PeftModel

    stage1, out = Path(stage1), Path(out)
    warmup = read_adapter_manifest(stage1)
    if warmup.get("kind") != "prorank" or warmup.get("stage") != 1:
        raise RouterankError("not a ProRank stage-1 adapter", path=stage1, fix="train it with --stage 1")
    key = {"prorank_stage2": config_json(config), "stage1": adapter_digest(stage1)}
    if finished(out, key):
        return out
    backbone = LLMBackbone(
        config.backbone, template=config.template, max_doc_tokens=config.max_doc_tokens, loaded=loaded
    )
    peft = PeftModel.from_pretrained(backbone.module, str(stage1), is_trainable=True)
    trainer_config = adapter_trainer_config(
        objective=config.stage2_objective,
        lr=config.stage2_lr,
        epochs=config.stage2_epochs,
        grad_accum=config.stage2_grad_accum,
        eval_every=config.stage2_eval_every,
        patience=config.stage2_patience,
        save_every=config.stage2_save_every,
        seed=config.seed,
    )
    state_dir = out.with_name(out.name + ".state")
    loop = GroupTrainer(
        LoraTrainable(peft, backbone), trainer_config, state_dir, key=key, progress=progress, desc="prorank stage 2"
    )
    train_pools, dev_pools = load_pools(config), load_pools(config, "dev")
    negatives = config.stage2_negatives
    dev = top_groups(dev_pools, negatives, config.seed, graded=False)
    try:
        summary = loop.fit(
            [lambda epoch: sample_groups(train_pools, negatives, config.seed + epoch, positives_per_query=1)],
            dev,
            stop_after_steps=stop_after_steps,
        )
        return save_stage2(peft, out, loop, summary, key, warmup)
    finally:
        if loaded is not None:  # hand the caller's model back without the adapter's LoRA layers
            peft.unload()


def save_stage2(peft, out: Path, loop, summary, key: dict, warmup: dict) -> Path:
    """Write the stage-2 adapter to `out` in one swap (weights; a manifest that keeps stage 1's entries and adds
    stage 2's config and losses; the step log), then delete the loop's state folder; returns `out`."""
    manifest = {
        **{k: v for k, v in warmup.items() if k not in ("stage", "steps", "seconds", "reward_curve", "run_key")},
        "stage": 2,
        "config": key["prorank_stage2"],
        "run_key": key,
        "stage1": {"digest": key["stage1"], "steps": warmup.get("steps"), "seconds": warmup.get("seconds")},
        "steps": summary.state.total_steps,
        "seconds": summary.state.seconds,
        "dev_loss": summary.dev_loss,
        "best_dev_loss": summary.state.best_dev if summary.dev_loss is not None else None,
        "best_step": summary.state.best_step,
        "first_loss": summary.state.first_loss,
        "last_loss": summary.state.last_loss,
    }
    with atomic_dir(out) as tmp:
        peft.save_pretrained(str(tmp))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if loop.log_path.exists():
            shutil.copy(loop.log_path, tmp / "train_log.jsonl")
    shutil.rmtree(loop.state_dir, ignore_errors=True)
    return out


# both ------------------------------------------------------------------------------------------------------------


def default_prorank_dir(config: ProRankConfig) -> Path:
    """The cache folder named by the backbone and a hash of the stage-1 settings:
    `<cache>/prorank/<backbone>-<digest>`."""
    digest = hashlib.sha256(json.dumps(stage1_key(config), sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / "prorank" / f"{safe_name(config.backbone)}-{digest}"


def train_prorank(
    config: ProRankConfig,
    out: str | Path | None = None,
    *,
    stage: int | None = None,
    loaded=None,
    progress: bool = True,
) -> Path:
    """Run stage 1, stage 2, or both (None) into `out/stage1` and `out/stage2`; returns the last adapter written.
    Each stage resumes a broken run of the same config and skips when its adapter is already done."""
    if stage is not None and stage not in STAGES:
        raise SpecError(f"ProRank has stages 1 and 2, not {stage}", fix="--stage 1 or --stage 2, or leave it out")
    out = Path(out) if out is not None else default_prorank_dir(config)
    stage1 = out / "stage1"
    if stage in (None, 1):
        train_grpo(stage1_task(config), stage1, loaded=loaded, progress=progress)
        if stage == 1:
            return stage1
    if not (stage1 / "adapter_model.safetensors").exists():
        raise RouterankError("stage 2 starts from the stage-1 adapter; it is not there", path=stage1, fix="--stage 1")
    return train_stage2(config, stage1, out / "stage2", loaded=loaded, progress=progress)
