"""`routerank train ...`: one command per trainer. Each option's default comes from the trainer's config
dataclass, so the CLI and the code never disagree."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from routerank.cli.common import JsonOpt, RayOpt, config_defaults, on_ray
from routerank.errors import RouterankError, SpecError
from routerank.r2r.trainer import ExpertConfig, train_expert
from routerank.rerank.adapters import read_adapter_manifest
from routerank.stages import read_toml_config
from routerank.train.cross_encoder import CrossEncoderTrainConfig
from routerank.train.cross_encoder import train_cross_encoder as fit_cross_encoder
from routerank.train.dear import DeARConfig, train_dear
from routerank.train.dense import DenseTrainConfig, train_dense
from routerank.train.prorank import ProRankConfig, train_prorank
from routerank.train.rank_r1 import RankR1Config, train_rank_r1

train_app = typer.Typer(no_args_is_help=True, help="Fine-tune rerankers on a dataset's train split.")


def _ce_defaults() -> dict:
    return config_defaults(CrossEncoderTrainConfig)


CE = _ce_defaults()


def _parse_caps(text: str) -> tuple[int, tuple[tuple[str, int], ...]]:
    """`300,scifact=0` → (300, (("scifact", 0),)): a bare number for every dataset, NAME=N for one."""
    default, caps = 0, []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, value = item.rpartition("=")
        if not value.isdigit() or (eq and not name):
            raise RouterankError(f"bad --max-queries item {item!r}", fix="e.g. 300 or 300,scifact=0")
        if eq:
            caps.append((name, int(value)))
        else:
            default = int(value)
    return default, tuple(caps)


@train_app.command("cross-encoder")
def train_cross_encoder(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset name; comma-separate several to pool")],
    objective: Annotated[str, typer.Option(help="infonce (1 positive vs its negatives) | bce (pointwise)")] = CE[
        "objective"
    ],
    miner: Annotated[str, typer.Option(help="retriever that mines hard negatives: bm25 | dense | hybrid")] = CE[
        "miner"
    ],
    negatives: Annotated[int, typer.Option(help="hard negatives per positive")] = CE["negatives"],
    negative_depth: Annotated[int, typer.Option(help="negatives are drawn from the miner's top N")] = CE[
        "negative_depth"
    ],
    max_queries: Annotated[
        str, typer.Option(help="training queries per dataset (0 = all); per set: 300,scifact=0,nfcorpus=400")
    ] = "0",
    positives_per_query: Annotated[int, typer.Option(help="groups per query and epoch (0 = every positive)")] = CE[
        "positives_per_query"
    ],
    dev_queries: Annotated[int, typer.Option(help="dev queries per dataset (dev split, else held out of train)")] = CE[
        "dev_queries"
    ],
    epochs: Annotated[int, typer.Option(help="passes over the training queries")] = CE["epochs"],
    max_length: Annotated[int, typer.Option(help="tokens per (query, document) pair")] = CE["max_length"],
    lr: Annotated[float, typer.Option(help="peak AdamW learning rate")] = CE["lr"],
    temperature: Annotated[float, typer.Option(help="InfoNCE softmax temperature")] = CE["temperature"],
    batch_groups: Annotated[int, typer.Option(help="groups (1 positive + negatives) per forward pass")] = CE[
        "batch_groups"
    ],
    grad_accum: Annotated[int, typer.Option(help="forward passes per optimizer step")] = CE["grad_accum"],
    eval_every: Annotated[int, typer.Option(help="dev loss every N optimizer steps")] = CE["eval_every"],
    patience: Annotated[int, typer.Option(help="stop after N dev evaluations without a new best (0 = never)")] = CE[
        "patience"
    ],
    split: Annotated[str, typer.Option(help="qrels split to train on")] = CE["split"],
    base_model: Annotated[str, typer.Option(help="encoder to start from (model spec)")] = CE["base_model"],
    out: Annotated[Path | None, typer.Option(help="model folder (default: cache/models/ce-DATASETS-OBJECTIVE)")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling, negatives, head init and shuffling")] = CE["seed"],
    as_json: JsonOpt = False,
    ray: RayOpt = None,
) -> None:
    """Fine-tune a cross-encoder with hard negatives; resumes after a kill; the folder reranks as `ce:<folder>`.

    With --ray, the run is one Ray task (with a GPU when the cluster has one)."""
    default_cap, caps = _parse_caps(max_queries)
    config = CrossEncoderTrainConfig(
        dataset,
        objective=objective,
        base_model=base_model,
        split=split,
        miner=miner,
        negatives=negatives,
        negative_depth=negative_depth,
        max_queries=default_cap or None,
        query_caps=caps,
        positives_per_query=positives_per_query or None,
        dev_queries=dev_queries,
        epochs=epochs,
        max_length=max_length,
        batch_groups=batch_groups,
        grad_accum=grad_accum,
        lr=lr,
        temperature=temperature,
        eval_every=eval_every,
        patience=patience,
        seed=seed,
    )
    result = on_ray(ray, fit_cross_encoder, config, out)
    if as_json:
        print(json.dumps({"path": str(result.path), **result.manifest}, indent=2))
    print(
        f"trained {result.groups:,} groups for {result.steps} steps in {result.seconds:.0f}s "
        f"(loss {result.first_loss:.4f} -> {result.last_loss:.4f}); rerank with ce:{result.path}",
        file=sys.stderr,
    )


@train_app.command("dense")
def train_dense_command(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset name; comma-separate several to pool")],
    max_queries: Annotated[
        str, typer.Option(help="training queries per dataset (0 = all); per set: 300,scifact=0,nfcorpus=400")
    ] = "0",
    positives_per_query: Annotated[int, typer.Option(help="groups per query and epoch (0 = every positive)")] = 1,
    negatives: Annotated[int, typer.Option(help="hard negatives per group (the batch adds more)")] = 1,
    miner: Annotated[str, typer.Option(help="retriever that mines hard negatives: bm25 | dense | hybrid")] = "hybrid",
    epochs: Annotated[int, typer.Option(help="passes over the training queries")] = 1,
    batch_groups: Annotated[int, typer.Option(help="groups per step; each query meets every batch document")] = 16,
    lr: Annotated[float, typer.Option(help="peak AdamW learning rate")] = 2e-5,
    max_length: Annotated[int, typer.Option(help="tokens per text")] = 192,
    out: Annotated[Path | None, typer.Option(help="model folder (default: cache/models/dense-DATASETS)")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling, negatives and shuffling")] = 13,
    ray: RayOpt = None,
) -> None:
    """Fine-tune the packaged MiniLM bi-encoder (in-batch + hard negatives); retrieve with `dense:st:<folder>`."""
    default_cap, caps = _parse_caps(max_queries)
    config = DenseTrainConfig(
        dataset,
        miner=miner,
        negatives=negatives,
        max_queries=default_cap or None,
        query_caps=caps,
        positives_per_query=positives_per_query or None,
        epochs=epochs,
        batch_groups=batch_groups,
        lr=lr,
        max_length=max_length,
        seed=seed,
    )
    path = on_ray(ray, train_dense, config, out)
    print(f"trained; retrieve with dense:st:{path}", file=sys.stderr)


def _expert_defaults() -> dict:
    return config_defaults(ExpertConfig)


EX = _expert_defaults()


@train_app.command("expert")
def train_expert_command(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset name; comma-separate several to pool")],
    domain: Annotated[str, typer.Option(help="the expert's domain label (what the router predicts)")],
    eag: Annotated[bool, typer.Option("--eag/--no-eag", help="stage 1 on entity-abstracted pairs, then original")] = EX[
        "eag"
    ],
    granularity: Annotated[str, typer.Option(help="EAG masking: ner | ner+patterns")] = EX["granularity"],
    objective: Annotated[
        str, typer.Option(help="infonce (1 positive vs its negatives) | bce (yes/no, pointwise)")
    ] = EX["objective"],
    backbone: Annotated[str, typer.Option(help="spec of the frozen backbone: smollm2 | ce:<folder>")] = EX["backbone"],
    miner: Annotated[str, typer.Option(help="retriever that mines hard negatives: bm25 | dense | hybrid")] = EX[
        "miner"
    ],
    negatives: Annotated[int, typer.Option(help="hard negatives per positive")] = EX["negatives"],
    negative_skip: Annotated[
        int, typer.Option(help="pass over the miner's first N non-relevant documents (sparse judgments)")
    ] = EX["negative_skip"],
    graded_negatives: Annotated[
        bool, typer.Option("--graded-negatives/--binary-negatives", help="lower-graded relevant docs as negatives")
    ] = EX["graded_negatives"],
    max_queries: Annotated[int, typer.Option(help="training queries per dataset (0 = all)")] = EX["max_queries"],
    dev_queries: Annotated[int, typer.Option(help="dev queries per dataset, for the early stop")] = EX["dev_queries"],
    dev_from_backbone: Annotated[
        bool,
        typer.Option(
            "--dev-from-backbone/--dev-from-train",
            help="without a dev split: dev = the queries the backbone's manifest held out (none trained on)",
        ),
    ] = EX["dev_from_backbone"],
    max_doc_tokens: Annotated[int, typer.Option(help="document tokens kept per pair")] = EX["max_doc_tokens"],
    epochs: Annotated[int, typer.Option(help="passes over the training queries (per stage)")] = EX["epochs"],
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = EX["lr"],
    grad_accum: Annotated[int, typer.Option(help="query groups per optimizer step")] = EX["grad_accum"],
    lora_r: Annotated[int, typer.Option(help="LoRA rank")] = EX["lora_r"],
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha")] = EX["lora_alpha"],
    eval_every: Annotated[int, typer.Option(help="optimizer steps between dev evaluations")] = EX["eval_every"],
    out: Annotated[Path | None, typer.Option(help="expert folder (default: cache/experts/DOMAIN-HASH)")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling, positives, LoRA init and shuffling")] = EX["seed"],
    as_json: JsonOpt = False,
) -> None:
    """Train a LoRA domain expert for R2R; rerunning after a kill resumes from the last checkpoint."""
    config = ExpertConfig(
        dataset,
        domain,
        backbone=backbone,
        objective=objective,
        eag=eag,
        granularity=granularity,
        miner=miner,
        negatives=negatives,
        negative_skip=negative_skip,
        graded_negatives=graded_negatives,
        max_queries=max_queries or None,
        dev_queries=dev_queries,
        dev_from_backbone=dev_from_backbone,
        max_doc_tokens=max_doc_tokens,
        epochs=epochs,
        lr=lr,
        grad_accum=grad_accum,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        eval_every=eval_every,
        seed=seed,
    )
    path = train_expert(config, out)
    manifest = json.loads((path / "routerank_expert.json").read_text())
    if as_json:
        print(json.dumps({"path": str(path), **manifest}, indent=2))
    metrics = manifest["metrics"]
    print(
        f"trained expert {domain!r} on {metrics['examples']:,} groups in {metrics['train_seconds']:.0f}s "
        f"(dev loss {metrics['dev_loss']}); it is at {path}",
        file=sys.stderr,
    )


def _dear_defaults() -> dict:
    return config_defaults(DeARConfig)


DEAR = _dear_defaults()


def _dear_help(text: str, field: str) -> str:
    value = DEAR[field]
    shown = ",".join(value) if isinstance(value, tuple) else value
    return f"{text} (default: the --config file's, else {shown})"


@train_app.command("dear")
def train_dear_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="a TOML file of DeARConfig fields")] = None,
    stage: Annotated[str, typer.Option(help="1 (pointwise distillation), 2 (listwise SFT) or both")] = "both",
    datasets: Annotated[str | None, typer.Option(help=_dear_help("comma-separated datasets", "datasets"))] = None,
    teacher: Annotated[str | None, typer.Option(help=_dear_help("teacher reranker spec", "teacher"))] = None,
    alpha: Annotated[
        str | None, typer.Option(help=_dear_help("teacher weight vs first stage: 0-1|auto|none", "alpha"))
    ] = None,
    backbone: Annotated[str | None, typer.Option(help=_dear_help("student LLM spec", "backbone"))] = None,
    depth: Annotated[int | None, typer.Option(help=_dear_help("candidates per list", "depth"))] = None,
    max_queries: Annotated[
        int | None, typer.Option(help=_dear_help("training queries per dataset, 0 = all", "max_queries"))
    ] = None,
    w_ce: Annotated[float | None, typer.Option(help=_dear_help("weight of BCE on labels, 0 = off", "w_ce"))] = None,
    w_ranknet: Annotated[float | None, typer.Option(help=_dear_help("weight of RankNet, 0 = off", "w_ranknet"))] = None,
    w_kl: Annotated[float | None, typer.Option(help=_dear_help("weight of listwise KL, 0 = off", "w_kl"))] = None,
    epochs: Annotated[int | None, typer.Option(help=_dear_help("stage-1 passes", "epochs"))] = None,
    stage2_epochs: Annotated[int | None, typer.Option(help=_dear_help("stage-2 passes", "stage2_epochs"))] = None,
    seed: Annotated[int | None, typer.Option(help=_dear_help("seed for queries, LoRA init and order", "seed"))] = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default: cache/dear/RUN-NAME-HASH)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """DeAR: distill the teacher into a yes/no LLM student (stage 1), then a listwise LoRA on its permutations
    (stage 2). Resumes after a kill; a finished stage is skipped."""

    stages = {"1": (1,), "2": (2,), "both": (1, 2)}.get(stage)
    if stages is None:
        raise SpecError(f"unknown --stage {stage!r}", fix="1, 2 or both")
    base = (
        read_toml_config(DeARConfig, config, tuples=("datasets", "target_modules"), none_if_zero=("max_queries",))
        if config is not None
        else DeARConfig()
    )
    given = {
        "datasets": datasets,
        "teacher": teacher,
        "alpha": alpha,
        "backbone": backbone,
        "depth": depth,
        "max_queries": max_queries,
        "w_ce": w_ce,
        "w_ranknet": w_ranknet,
        "w_kl": w_kl,
        "epochs": epochs,
        "stage2_epochs": stage2_epochs,
        "seed": seed,
    }
    overrides = {k: v for k, v in given.items() if v is not None}
    if overrides.get("max_queries") == 0:
        overrides["max_queries"] = None
    settings = replace(base, **overrides) if overrides else base
    result = train_dear(settings, out, stages=stages)
    specs = {}
    for name, folder in (("stage1", result.stage1), ("stage2", result.stage2)):
        if folder is not None:
            specs[name] = json.loads((folder / "routerank_adapter.json").read_text())["reranker_spec"]
    if as_json:
        print(json.dumps({"name": result.name, "out": str(result.out), "rerankers": specs}, indent=2))
    print(
        f"{result.name}: teacher scored {result.teacher_scored:,} new pairs; run folder {result.out}", file=sys.stderr
    )
    for name, spec in specs.items():
        print(f"  {name}: rerank with {spec}", file=sys.stderr)


def load_grpo_config(config_class, path: Path | None):
    """A GRPO trainer's config: the TOML file's keys over the dataclass defaults (no file: the defaults)."""
    if path is None:
        return config_class()

    try:
        return read_toml_config(config_class, path, tuples=("target_modules",), none_if_zero=("max_queries",))
    except RouterankError as exc:
        if exc.path is not None:
            raise
        raise type(exc)(exc.message, path=path, fix=exc.fix) from None


GRPOConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML of config fields (default: the dataclass's, the cpu sizes)")
]
GRPOOutOpt = Annotated[Path | None, typer.Option(help="run folder (default: cache/<trainer>/BACKBONE-HASH)")]


def _grpo_summary(path: Path) -> dict:
    manifest = read_adapter_manifest(path)
    curve = [reward for _, reward in manifest.get("reward_curve", [])]
    tail = curve[-max(1, len(curve) // 10) :] if curve else []
    return {
        "path": str(path),
        "steps": manifest.get("steps"),
        "seconds": manifest.get("seconds"),
        "first_reward": curve[0] if curve else None,
        "last_reward": sum(tail) / len(tail) if tail else None,
        "dev_loss": manifest.get("dev_loss"),
        "stage": manifest.get("stage"),
    }


@train_app.command("prorank")
def train_prorank_command(
    config: GRPOConfigOpt = None,
    stage: Annotated[
        int | None, typer.Option(help='one stage: 1 (GRPO prompt warmup) or 2 (ranking loss on P("1")); default both')
    ] = None,
    out: GRPOOutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """ProRank: GRPO prompt warmup of a small LLM's 0/1 judgement, then a ranking loss on P("1"); resumable.
    Rerank with `pointwise:BACKBONE,template=prorank,adapter=OUT/stage2`."""
    settings = load_grpo_config(ProRankConfig, config)
    path = train_prorank(settings, out, stage=stage)
    summary = _grpo_summary(path)
    if as_json:
        print(json.dumps(summary, indent=2))
    print(
        f"trained ProRank stage {summary['stage']} for {summary['steps']} steps in {summary['seconds']:.0f}s; "
        f"rerank with pointwise:{settings.backbone},template={settings.template},adapter={path}",
        file=sys.stderr,
    )


@train_app.command("rank-r1")
def train_rank_r1_command(config: GRPOConfigOpt = None, out: GRPOOutOpt = None, as_json: JsonOpt = False) -> None:
    """Rank-R1: setwise reranking that reasons in <think> and answers in <answer>, trained by GRPO; resumable.
    Rerank with `setwise:BACKBONE,adapter=OUT` (add think=0 to skip the reasoning)."""
    settings = load_grpo_config(RankR1Config, config)
    path = train_rank_r1(settings, out)
    summary = _grpo_summary(path)
    if as_json:
        print(json.dumps(summary, indent=2))
    first, last = summary["first_reward"], summary["last_reward"]
    reward = "" if last is None else f" (reward {first:.3f} -> {last:.3f})"
    print(
        f"trained Rank-R1 for {summary['steps']} steps in {summary['seconds']:.0f}s{reward}; rerank with "
        f"setwise:{settings.backbone},adapter={path}",
        file=sys.stderr,
    )
