"""DeAR (Abdallah et al., EMNLP Findings 2025): a small LLM reranker distilled in two stages, one LoRA adapter each.

Stage 1, pointwise. The student's yes/no logit (`PointwiseLLMReranker.relevance_logits`) is trained on each training
query's first-stage top `depth`, which the teacher scored once (`routerank.train.distill`), with
    w_ce * BCE(judged labels) + w_ranknet * RankNet(teacher's pairs) + w_kl * KL(teacher softmax || student softmax)
(`routerank.train.losses.distillation_loss`). A weight of 0 turns its term off, and the run's name says which terms
are on (`dear-ce+ranknet+kl`, `dear-kl`, ...), so ablations sit side by side under one cache folder.

Stage 2, listwise. A second LoRA adapter, on the backbone with the stage-1 adapter merged in, learns by SFT to write
the teacher's permutation of each list in the listwise reranker's own prompt and answer format
(`routerank.train.permutations`). The paper trains this stage on GPT-4o's chain-of-thought rankings; nothing like them
is available offline, so here the target is the permutation alone, with no reasoning before it.

Both stages run on the shared resumable `GroupTrainer` (checkpoints in `<out>/stage1.state`, `<out>/stage2.state`: a
rerun after a kill ends with the weights of an unbroken run), log every loss term to JSONL, and save an adapter
folder with a manifest, which the rerankers load:
    pointwise:<backbone>,adapter=<out>/stage1
    listwise:<backbone>,adapter=<out>/stage2,window=<depth>,step=<depth/2>
The backbone is any causal-LM spec (`smollm2`, `hf:<folder or hub id>`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_dir, cache_root
from routerank.models.llm import load_causal_lm, resolve_llm
from routerank.rerank.adapters import LISTWISE, MANIFEST, POINTWISE, apply_adapter
from routerank.rerank.backbones import LLM_TARGETS, LLMBackbone
from routerank.train.distill import ScoredList, Teacher, TeacherCache, check_alpha_setting, lists_digest, teacher_lists
from routerank.train.loop import GroupTrainer, TrainerConfig, adapter_trainer_config
from routerank.train.lora import LoRASettings, LoraTrainable, attach_lora
from routerank.train.losses import distillation_loss
from routerank.train.permutations import PermutationTrainable, permutation_example, permutation_loss

TERMS = ("ce", "ranknet", "kl")


@dataclass(frozen=True)
class DeARConfig(LoRASettings):
    """Every setting of a DeAR run; the CLI and the TOML configs take their defaults from here.

    Data. datasets: trained on together (`max_queries` and `dev_queries` apply to each). split: the qrels split the
    queries come from; dev queries are held out of it by a seeded draw. first_stage, depth: each list is the first
    stage's top `depth`. teacher: any reranker spec; the default is the best routerank has, the cross-encoder fine-tuned
    on all domains. alpha: mix the teacher with the first stage as `@depth~alpha` would (a number in [0, 1]), "auto"
    for the weight tuned on dev and saved beside the teacher, or "none" for its raw scores. teacher_chunk: queries the
    teacher scores per cache commit.
    Student. backbone: a causal-LM spec. template: its yes/no prompt. max_doc_tokens: per passage, in both stages.
    lora_r, lora_alpha, lora_dropout, target_modules (`LoRASettings`): each stage's adapter; target_modules empty
    means the attention projections.
    Stage 1. w_ce, w_ranknet, w_kl: the loss weights (0 turns a term off). temperature: divides the student's logits
    in the KL term. teacher_temperature: divides the teacher's scores there; an interpolated teacher's scores span
    [0, 1], and 0.1 makes that a spread of 10, the size of a confident reranker's logits (use ~1 with alpha "none").
    lr (`LoRASettings`), epochs, grad_accum: AdamW at a constant rate, passes, lists per optimizer step.
    batch_lists: lists per forward pass (memory).
    Stage 2. stage2_lr, stage2_epochs, stage2_grad_accum: as above. stage2_on_stage1: train the listwise adapter on
    the backbone with stage 1 merged in, as the paper stacks them (False: on the bare backbone). shuffle_passages:
    show each list in a seeded shuffle per epoch, so the order of the prompt carries no answer.
    Both. eval_every, patience: dev loss every that many steps, early stop after `patience` evaluations without a new
    best (the dev loss of the untrained adapter competes too, so a stage never ships worse than its start).
    save_every: checkpoint interval in steps.
    """

    datasets: tuple[str, ...] = ("scifact", "nfcorpus")
    split: str = "train"
    max_queries: int | None = 150
    dev_queries: int = 20
    first_stage: str = "bm25"
    depth: int = 8
    teacher: str = "ce:~/.cache/routerank/models/ce-pooled"
    alpha: float | str = "auto"
    teacher_chunk: int = 16
    backbone: str = "smollm2"
    template: str = "chatml"
    max_doc_tokens: int = 128
    w_ce: float = 1.0
    w_ranknet: float = 1.0
    w_kl: float = 1.0
    temperature: float = 1.0
    teacher_temperature: float = 0.1
    epochs: int = 1
    grad_accum: int = 4
    batch_lists: int = 1
    stage2_lr: float = 2e-4
    stage2_epochs: int = 1
    stage2_grad_accum: int = 4
    stage2_on_stage1: bool = True
    shuffle_passages: bool = True
    eval_every: int = 25
    patience: int = 3
    save_every: int = 10
    seed: int = 13

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.datasets, str):
            object.__setattr__(self, "datasets", tuple(d.strip() for d in self.datasets.split(",") if d.strip()))
        object.__setattr__(self, "datasets", tuple(self.datasets))
        if self.max_queries == 0:
            object.__setattr__(self, "max_queries", None)
        alpha = check_alpha_setting(self.alpha)
        object.__setattr__(self, "alpha", "none" if alpha is None else alpha)
        if not self.datasets:
            raise SpecError("DeAR needs at least one training dataset", fix='e.g. datasets = ["scifact", "nfcorpus"]')
        if self.backbone.strip().startswith("ce:"):
            raise SpecError(
                f"the DeAR student is a causal LM scored yes/no, not a cross-encoder ({self.backbone!r})",
                fix="use smollm2 or hf:<model>",
            )
        weights = {"w_ce": self.w_ce, "w_ranknet": self.w_ranknet, "w_kl": self.w_kl}
        negative = [name for name, w in weights.items() if w < 0]
        if negative:
            raise SpecError(f"loss weights must be 0 or more: {', '.join(negative)}", fix="0 turns a term off")
        if not any(weights.values()):
            raise SpecError("every stage-1 loss weight is 0", fix="give w_ce, w_ranknet or w_kl a positive weight")
        for name in ("temperature", "teacher_temperature", "lr", "stage2_lr"):
            if getattr(self, name) <= 0:
                raise SpecError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("epochs", "grad_accum", "batch_lists", "stage2_epochs", "stage2_grad_accum", "max_doc_tokens"):
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queries is not None and self.max_queries < 1:
            raise SpecError(f"max_queries must be at least 1 (0 or None: all), got {self.max_queries}")
        if self.dev_queries < 0:
            raise SpecError(f"dev_queries must be 0 or more, got {self.dev_queries}")
        self.teacher_setting()  # checks the teacher spec, depth and chunk

    def teacher_setting(self) -> Teacher:
        """The teacher these settings name: its spec, alpha (None for raw scores), first stage, depth and chunk size."""
        alpha = None if self.alpha == "none" else self.alpha
        return Teacher(self.teacher, alpha, self.first_stage, self.depth, self.teacher_chunk)

    @property
    def name(self) -> str:
        """`dear-` and the stage-1 loss terms that are on, e.g. `dear-ranknet+kl` for the ablation without CE."""
        weights = {"ce": self.w_ce, "ranknet": self.w_ranknet, "kl": self.w_kl}
        return "dear-" + "+".join(term for term in TERMS if weights[term] > 0)


def config_json(config: DeARConfig) -> dict:
    """The config as a plain JSON record: the run's identity in checkpoint keys, manifests and folder names."""
    return json.loads(json.dumps(asdict(config)))


def default_out(config: DeARConfig) -> Path:
    """`<cache>/dear/<run name>-<hash of the config>`: each ablation in its own folder."""
    digest = hashlib.sha256(json.dumps(config_json(config), sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / "dear" / f"{config.name}-{digest}"


# shared by both stages -------------------------------------------------------------------------------------------


def _trainer_config(config: DeARConfig, lr: float, epochs: int, grad_accum: int, batch: int) -> TrainerConfig:
    return adapter_trainer_config(
        lr=lr,
        epochs=epochs,
        batch_groups=batch,
        grad_accum=grad_accum,
        eval_every=config.eval_every,
        patience=config.patience,
        save_every=config.save_every,
        seed=config.seed,
    )


def _with_lora(module, config: DeARConfig):
    return attach_lora(module, config, LLM_TARGETS, config.seed)


def stage_done(folder: Path, config: DeARConfig) -> bool:
    """True when `folder` holds this config's finished stage; an adapter of another config there is an error."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        return False
    if json.loads(manifest_path.read_text()).get("config") != config_json(config):
        raise RouterankError(
            "an adapter trained with other settings is in the way",
            path=folder,
            fix="give another --out, or delete the folder",
        )
    return True


class _Stage:
    """What both stages share: a LoRA-wrapped model, the resumable loop, and saving the adapter folder."""

    kind = ""
    stage = 0

    def __init__(self, config: DeARConfig, out: str | Path, fingerprint: str):
        self.config, self.out, self.fingerprint = config, Path(out), fingerprint
        self.state_dir = self.out.with_name(self.out.name + ".state")
        self.sources: dict = {}
        self.extra_manifest: dict = {}

    def reranker_spec(self) -> str:
        """The reranker spec that loads this stage's adapter, recorded in the manifest."""
        raise NotImplementedError

    def _loop(self, trainable, trainer_config: TrainerConfig, train: list, loss_fn, progress: bool) -> GroupTrainer:
        key = {"dear": config_json(self.config), "stage": self.stage, "data": lists_digest(train)}
        return GroupTrainer(
            trainable,
            trainer_config,
            self.state_dir,
            key=key,
            progress=progress,
            desc=f"{self.config.name} stage {self.stage}",
            loss_fn=loss_fn,
        )

    def _run(self, loop: GroupTrainer, examples, dev, count: int, stop_after_steps: int | None) -> Path:
        if not count:
            raise RouterankError(f"stage {self.stage} has no training lists", fix="check the datasets and depth")
        summary = loop.fit([examples], dev, stop_after_steps=stop_after_steps)
        metrics = {
            "train_seconds": summary.state.seconds,
            "dev_loss": summary.dev_loss,
            "best_dev_loss": summary.state.best_dev if dev else None,
            "best_step": summary.state.best_step,
            "first_loss": summary.state.first_loss,
            "last_loss": summary.state.last_loss,
            "resumed": summary.resumed,
            "lists": count,
            "steps": summary.state.total_steps,
            "device": str(next(loop.model.peft.parameters()).device),
        }
        return self._save(loop, metrics)

    def _save(self, loop: GroupTrainer, metrics: dict) -> Path:
        manifest = {
            "reranker": self.kind,
            "method": "dear",
            "run": self.config.name,
            "stage": self.stage,
            "backbone": self.config.backbone,
            "backbone_fingerprint": self.fingerprint,
            "template": self.config.template,
            "config": config_json(self.config),
            "metrics": metrics,
            "training_data": self.sources,
            "reranker_spec": self.reranker_spec(),
            **self.extra_manifest,
        }
        with atomic_dir(self.out) as tmp:
            loop.model.peft.save_pretrained(str(tmp))
            base = self.extra_manifest.get("base_adapter")
            if base:
                shutil.copytree(self.base_folder, tmp / base)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            if loop.log_path.exists():
                shutil.copy(loop.log_path, tmp / "train_log.jsonl")
        shutil.rmtree(self.state_dir, ignore_errors=True)
        return self.out


# stage 1 ---------------------------------------------------------------------------------------------------------


def stage1_loss(config: DeARConfig):
    """The `GroupTrainer` loss hook of stage 1: the weighted distillation loss of a batch of lists, and its terms."""

    def loss(logits, batch: list[ScoredList]):
        # heavy: torch loads only when a model runs
        import torch

        teacher = torch.tensor([item.teacher for item in batch], dtype=logits.dtype, device=logits.device)
        labels = torch.tensor([item.labels for item in batch], device=logits.device)
        return distillation_loss(
            logits,
            teacher,
            labels,
            w_ce=config.w_ce,
            w_ranknet=config.w_ranknet,
            w_kl=config.w_kl,
            temperature=config.temperature,
            teacher_temperature=config.teacher_temperature,
        )

    return loss


class Stage1Trainer(_Stage):
    """Stage 1: a LoRA adapter on the yes/no scorer, distilled from the teacher's lists. `loaded` passes an
    already-loaded (model, tokenizer) (tests: a tiny model); the default loads `config.backbone`."""

    kind, stage = POINTWISE, 1

    def __init__(self, config: DeARConfig, out: str | Path, *, loaded=None, progress: bool = True):
        self.backbone = LLMBackbone(
            config.backbone, template=config.template, max_doc_tokens=config.max_doc_tokens, loaded=loaded
        )
        super().__init__(config, out, self.backbone.fingerprint)
        self.model = _with_lora(self.backbone.module, config)
        self.trainable = LoraTrainable(self.model, self.backbone)
        self.progress = progress

    def reranker_spec(self) -> str:
        """The pointwise reranker spec that loads this adapter, with its template and passage length."""
        c = self.config
        return f"pointwise:{c.backbone},adapter={self.out},template={c.template},max_doc_tokens={c.max_doc_tokens}"

    def fit(self, train: list[ScoredList], dev: list[ScoredList], *, stop_after_steps: int | None = None) -> Path:
        """Train (or resume) the pointwise adapter on the teacher's lists, keeping the weights best on `dev`, and save
        its folder; returns the folder. `stop_after_steps` simulates a kill right after a checkpoint."""
        c = self.config
        loop = self._loop(
            self.trainable,
            _trainer_config(c, c.lr, c.epochs, c.grad_accum, c.batch_lists),
            train,
            stage1_loss(c),
            self.progress,
        )
        return self._run(loop, lambda _epoch: train, dev, len(train), stop_after_steps)


# stage 2 ---------------------------------------------------------------------------------------------------------


class Stage2Trainer(_Stage):
    """Stage 2: a second LoRA adapter that writes the teacher's permutation of each list. With `stage2_on_stage1`,
    `stage1` is the stage-1 folder, merged into the backbone first and copied into this stage's folder."""

    kind, stage = LISTWISE, 2
    base_name = "base_adapter"

    def __init__(
        self, config: DeARConfig, out: str | Path, *, stage1: str | Path | None = None, loaded=None, progress=True
    ):
        super().__init__(config, out, resolve_llm(config.backbone).fingerprint)
        model, self.tokenizer = loaded if loaded is not None else load_causal_lm(config.backbone)
        if config.stage2_on_stage1:
            if stage1 is None:
                raise RouterankError("stage 2 builds on stage 1: give its folder", fix="or set stage2_on_stage1 false")
            self.base_folder = Path(stage1)
            model, _ = apply_adapter(model, self.base_folder, kind=POINTWISE, fingerprint=self.fingerprint)
            self.extra_manifest["base_adapter"] = self.base_name
        self.extra_manifest["targets"] = (
            "the teacher's permutations alone: the paper's GPT-4o chain-of-thought rankings are not available offline"
        )
        self.model = _with_lora(model, config)
        self.trainable = PermutationTrainable(self.model, self.tokenizer.pad_token_id or 0)
        self.progress = progress

    def reranker_spec(self) -> str:
        """The listwise reranker spec that loads this adapter: a window of `depth` passages, stepping half of it."""
        c = self.config
        step = max(1, c.depth // 2)
        return (
            f"listwise:{c.backbone},adapter={self.out},window={c.depth},step={step},max_doc_tokens={c.max_doc_tokens}"
        )

    def examples(self, lists: list[ScoredList], epoch: int) -> list:
        """The lists as permutation SFT examples for `epoch` (the passage shuffle changes with the epoch)."""
        c = self.config
        return [
            permutation_example(
                item,
                self.tokenizer,
                max_doc_tokens=c.max_doc_tokens,
                seed=c.seed,
                epoch=epoch,
                shuffle=c.shuffle_passages,
            )
            for item in lists
        ]

    def fit(self, train: list[ScoredList], dev: list[ScoredList], *, stop_after_steps: int | None = None) -> Path:
        """Train (or resume) the listwise adapter on `train`, keeping the weights best on `dev`, and save its folder;
        returns the folder. `stop_after_steps` simulates a kill right after a checkpoint."""
        c = self.config
        trainer_config = _trainer_config(c, c.stage2_lr, c.stage2_epochs, c.stage2_grad_accum, c.batch_lists)
        loop = self._loop(self.trainable, trainer_config, train, permutation_loss, self.progress)
        dev_examples = self.examples(dev, epoch=0)  # one fixed draw, so every evaluation measures the same thing
        return self._run(loop, lambda epoch: self.examples(train, epoch), dev_examples, len(train), stop_after_steps)


# both stages -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeARResult:
    """A DeAR run's outcome: its name, output folder, each stage's adapter folder (None where there is none) and
    the pairs the teacher scored in this run."""

    name: str
    out: Path
    stage1: Path | None
    stage2: Path | None
    teacher_scored: int  # pairs the teacher scored in this run


def train_dear(
    config: DeARConfig,
    out: str | Path | None = None,
    *,
    stages: tuple[int, ...] = (1, 2),
    load=None,
    teacher=None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> DeARResult:
    """Score the teacher's lists (cached), then train (or resume, or skip when finished) each stage in `stages`.

    load: a function returning a fresh (model, tokenizer) for each stage (tests: a tiny model); default loads
    `config.backbone`. teacher: an already-built teacher reranker; default builds `config.teacher`."""
    if not stages or any(s not in (1, 2) for s in stages):
        raise SpecError(f"unknown DeAR stages {stages}", fix="1, 2, or both")
    out = Path(out).expanduser() if out is not None else default_out(config)
    data = teacher_lists(
        TeacherCache(config.teacher_setting(), cache_dir=cache_dir, reranker=teacher, progress=progress),
        config.datasets,
        split=config.split,
        max_queries=config.max_queries,
        dev_queries=config.dev_queries,
        seed=config.seed,
        progress=progress,
    )
    stage1, stage2 = out / "stage1", out / "stage2"
    done1 = stage_done(stage1, config)
    if 1 in stages and not done1:
        trainer = Stage1Trainer(config, stage1, loaded=load() if load else None, progress=progress)
        trainer.sources = data.sources
        trainer.fit(data.train, data.dev)
        done1 = True
    if 2 in stages and not stage_done(stage2, config):
        if config.stage2_on_stage1 and not done1:
            raise RouterankError(
                "stage 2 trains on top of stage 1, which is not trained in this folder yet",
                path=out,
                fix="run stage 1 first (--stage 1, or both), or set stage2_on_stage1 = false",
            )
        trainer = Stage2Trainer(config, stage2, stage1=stage1, loaded=load() if load else None, progress=progress)
        trainer.sources = data.sources
        trainer.fit(data.train, data.dev)
    return DeARResult(
        config.name,
        out,
        stage1 if stage1.exists() else None,
        stage2 if stage2.exists() else None,
        data.teacher_scored,
    )
