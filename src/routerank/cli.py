"""The `routerank` command. Bad input becomes one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from routerank.errors import RouterankError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Domain-aware retrieval and reranking for RAG.",
)

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="name under ROUTERANK_DATA, or a BEIR folder")]
PipelineOpt = Annotated[str, typer.Option("--pipeline", "-p", help="bm25 | dense[:model] | hybrid | rrf(..) | null")]
MeasuresOpt = Annotated[str, typer.Option("--measures", "-m", help="ir_measures names, space separated")]
LenientOpt = Annotated[bool, typer.Option("--lenient", help="drop judgments naming unknown ids (and say which)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="run dense encoding and reranking in shards on Ray: alone, a local Ray on this machine's cores; "
        "with ADDRESS, that cluster",
        metavar="[ADDRESS]",
    ),
]


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


def _report_drops(split: str, dropped: list[tuple[str, str]]) -> None:
    examples = ", ".join(f"{q}/{d}" for q, d in dropped[:5])
    print(
        f"routerank: --lenient dropped {len(dropped)} judgments from split {split!r} naming unknown ids "
        f"(e.g. {examples})",
        file=sys.stderr,
    )


def _load(dataset: str, split: str | None, lenient: bool):
    from routerank.data.registry import load_dataset

    return load_dataset(dataset, splits=None if split is None else [split], lenient=lenient, on_drop=_report_drops)


def _parse_options(items: list[str] | None) -> dict:
    """`--rerank-opt max_doc_tokens=128` → {"max_doc_tokens": 128}; numbers become numbers."""
    options = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise RouterankError(f"bad --rerank-opt {item!r}", fix="use KEY=VALUE, e.g. max_doc_tokens=128")
        for cast in (int, float):
            try:
                options[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            options[key] = {"true": True, "false": False}.get(value.lower(), value)
    return options


def _retrieve(ds, pipeline: str, queries, k: int, rebuild: bool = False, rerank_options: dict | None = None, ray=None):
    from routerank.pipeline import build

    retriever = build(pipeline, ds.corpus, rebuild=rebuild, progress=True, reranker_options=rerank_options, ray=ray)
    return retriever.search(queries, k)


@app.command()
def datasets(
    root: Annotated[Path | None, typer.Option(help="data root (default: ROUTERANK_DATA)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the datasets under the data root, with docs, queries and judged pairs per split."""
    from routerank.data.registry import data_root, list_datasets

    root = root or data_root()
    summaries = list_datasets(root)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": s.name,
                        "path": str(s.path),
                        "docs": s.docs,
                        "queries": s.queries,
                        "splits": {k: {"queries": q, "pairs": p} for k, (q, p) in s.splits.items()},
                    }
                    for s in summaries
                ],
                indent=2,
            )
        )
        return
    if not summaries:
        raise RouterankError(f"no BEIR datasets under {root}", fix="set ROUTERANK_DATA to a folder of datasets")
    from rich.table import Table

    table = Table(title=f"datasets in {root}")
    for col in ("name", "docs", "queries", "splits (judged queries / pairs)"):
        table.add_column(col, justify="left" if col == "name" or col.startswith("splits") else "right")
    for s in summaries:
        splits = "  ".join(f"{k}: {q:,}/{p:,}" for k, (q, p) in s.splits.items())
        table.add_row(s.name, f"{s.docs:,}", f"{s.queries:,}", splits)
    _console().print(table)


@app.command()
def index(
    dataset: DatasetOpt,
    pipeline: PipelineOpt = "bm25",
    rebuild: Annotated[bool, typer.Option(help="ignore a cached index")] = False,
    out: Annotated[Path | None, typer.Option(help="also save the index to this folder")] = None,
    ray: RayOpt = None,
) -> None:
    """Build (or verify) the cached index for a pipeline on a dataset's corpus."""
    from routerank.data.registry import load_dataset
    from routerank.pipeline import build

    ds = load_dataset(dataset, splits=[])
    retriever = build(pipeline, ds.corpus, rebuild=rebuild, progress=True, ray=ray)
    if out is not None:
        retriever.save(out)
    print(f"indexed {len(ds.corpus):,} docs of {ds.name} with {retriever.name}", file=sys.stderr)


@app.command()
def search(
    dataset: DatasetOpt,
    pipeline: PipelineOpt = "bm25",
    query: Annotated[str | None, typer.Option("--query", "-q", help="one ad-hoc query")] = None,
    split: Annotated[str | None, typer.Option(help="search all queries judged in this split")] = None,
    k: Annotated[int, typer.Option("-k", help="results per query")] = 10,
    output: Annotated[Path | None, typer.Option(help="write a TREC run file")] = None,
    as_json: JsonOpt = False,
    ray: RayOpt = None,
) -> None:
    """Search one query (--query) or a split's queries (--split) and print or save the run."""
    from routerank.data.trec import write_run
    from routerank.data.types import Query

    if (query is None) == (split is None):
        raise RouterankError("give exactly one of --query or --split")
    ds = _load(dataset, split, lenient=False)
    queries = [Query("q0", query)] if query is not None else ds.split_queries(split)
    run = _retrieve(ds, pipeline, queries, k, ray=ray)
    if output is not None:
        write_run(run, output, tag=run.name.replace(" ", "_"))
        print(f"wrote {sum(len(r) for r in run.rankings.values()):,} lines to {output}", file=sys.stderr)
    if as_json:
        print(
            json.dumps(
                {
                    q: [{"doc_id": d.doc_id, "score": d.score, "rank": d.rank} for d in r]
                    for q, r in run.rankings.items()
                },
                indent=2,
            )
        )
    elif query is not None:
        from rich.table import Table

        table = Table(title=f"{run.name}: {query}")
        for col in ("rank", "score", "doc", "text"):
            table.add_column(col)
        for doc in run["q0"]:
            text = ds.corpus[doc.doc_id].full_text
            table.add_row(str(doc.rank), f"{doc.score:.3f}", doc.doc_id, text[:100] + ("…" if len(text) > 100 else ""))
        _console().print(table)


def _print_evaluations(evals, as_json: bool, extra: dict | None = None) -> None:
    if as_json:
        print(json.dumps({**(extra or {}), "runs": {e.run_name: e.means for e in evals}}, indent=2))
        return
    from rich.table import Table

    names = list(evals[0].means)
    table = Table(title=", ".join(f"{k}={v}" for k, v in (extra or {}).items()))
    table.add_column("run")
    for name in names:
        table.add_column(name, justify="right")
    for e in evals:
        table.add_row(e.run_name, *(f"{e.means[n]:.4f}" for n in names))
    _console().print(table)


@app.command()
def evaluate(
    dataset: DatasetOpt,
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    pipeline: PipelineOpt = "bm25",
    measures: MeasuresOpt = "nDCG@10 MRR@10 R@100",
    k: Annotated[int, typer.Option("-k", help="retrieval depth")] = 100,
    run: Annotated[Path | None, typer.Option(help="evaluate this TREC run instead")] = None,
    save_run: Annotated[Path | None, typer.Option(help="write the run as a TREC file")] = None,
    sample: Annotated[int | None, typer.Option(help="a seeded sample of N queries")] = None,
    seed: Annotated[int, typer.Option(help="seed for --sample")] = 13,
    rerank_opt: Annotated[
        list[str] | None, typer.Option("--rerank-opt", help="KEY=VALUE passed to rerankers, e.g. max_doc_tokens=128")
    ] = None,
    lenient: LenientOpt = False,
    as_json: JsonOpt = False,
    ray: RayOpt = None,
) -> None:
    """Run a pipeline on a split's queries and score it against the qrels."""
    from routerank.data.trec import read_run, write_run
    from routerank.data.types import sample_queries
    from routerank.evaluate.measures import evaluate as score
    from routerank.evaluate.measures import parse_measures

    parse_measures(measures)
    ds = _load(dataset, split, lenient)
    queries = sample_queries(ds.split_queries(split), sample, seed)
    qrels = ds.split_qrels(split).subset(q.id for q in queries)
    result = (
        read_run(run)
        if run is not None
        else _retrieve(ds, pipeline, queries, k, rerank_options=_parse_options(rerank_opt), ray=ray)
    )
    if save_run is not None:
        write_run(result, save_run, tag=result.name)
    evaluation = score(result, qrels, measures)
    _print_evaluations([evaluation], as_json, {"dataset": ds.name, "split": split, "queries": evaluation.num_queries})


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="baseline TREC run")],
    run_b: Annotated[Path, typer.Argument(help="TREC run to compare")],
    dataset: DatasetOpt,
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    measures: MeasuresOpt = "nDCG@10 MRR@10 R@100",
    lenient: LenientOpt = False,
    trials: Annotated[int, typer.Option(help="randomisation test permutations")] = 10_000,
    as_json: JsonOpt = False,
) -> None:
    """Two runs side by side, with paired t-test and randomisation-test p-values per measure."""
    from routerank.data.trec import read_run
    from routerank.evaluate.measures import evaluate as score
    from routerank.evaluate.measures import parse_measures
    from routerank.evaluate.significance import paired_test

    parse_measures(measures)
    a, b = read_run(run_a), read_run(run_b)
    qrels = _load(dataset, split, lenient).split_qrels(split)
    ea, eb = score(a, qrels, measures), score(b, qrels, measures)
    rows = []
    for name in ea.means:
        test = paired_test(ea.per_query[name], eb.per_query[name], trials=trials)
        rows.append(
            {
                "measure": name,
                "a": test.mean_a,
                "b": test.mean_b,
                "delta": test.delta,
                "t_test_p": test.t_pvalue,
                "randomization_p": test.randomization_pvalue,
                "queries": test.n,
            }
        )
    if as_json:
        print(json.dumps({"a": str(run_a), "b": str(run_b), "split": split, "measures": rows}, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"A = {run_a.name}   B = {run_b.name}   ({split}, {rows[0]['queries']} queries)")
    for col in ("measure", "A", "B", "B-A", "t-test p", "rand. p"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    for r in rows:
        table.add_row(
            r["measure"],
            f"{r['a']:.4f}",
            f"{r['b']:.4f}",
            f"{r['delta']:+.4f}",
            f"{r['t_test_p']:.4g}",
            f"{r['randomization_p']:.4g}",
        )
    _console().print(table)


@app.command()
def qa(
    dataset: DatasetOpt,
    pipeline: PipelineOpt = "bm25",
    k: Annotated[int, typer.Option("--k", "-k", help="context documents per query (0 = none, R0)")] = 3,
    split: Annotated[str, typer.Option(help="qrels split whose queries are asked")] = "test",
    sample: Annotated[int | None, typer.Option(help="a seeded sample of N queries")] = None,
    seed: Annotated[int, typer.Option(help="seed for --sample")] = 13,
    context: Annotated[
        str, typer.Option(help="retrieved (the pipeline's top k) | gold (the qrels' relevant docs) | none (R0)")
    ] = "retrieved",
    model: Annotated[str, typer.Option(help="generator LLM spec: smollm2 | hf:<folder> | gguf:<file>")] = "smollm2",
    template: Annotated[str | None, typer.Option(help="answer template: chatml | plain (default: the model's)")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="answer length limit in tokens")] = 32,
    context_tokens: Annotated[int, typer.Option(help="document tokens a prompt may hold")] = 1024,
    batch_size: Annotated[int, typer.Option(help="prompts decoded together")] = 8,
    save_answers: Annotated[Path | None, typer.Option(help="write each query's answer, EM and F1 as JSONL")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a split's queries from their context with an LLM and print EM/F1 against the gold answers."""
    from routerank.experiments.rag_qa import run_qa

    result = run_qa(
        dataset,
        split=split,
        context=context,
        pipeline=pipeline,
        k=k,
        sample=sample,
        seed=seed,
        model=model,
        template=template,
        max_new_tokens=max_new_tokens,
        context_tokens=context_tokens,
        batch_size=batch_size,
    )
    summary = result.summary()
    if save_answers is not None:
        from routerank.fsutil import atomic_write

        with atomic_write(save_answers) as handle:
            for answer in result.answers:
                em, f1 = result.scores.per_query[answer.query_id]
                record = {"query_id": answer.query_id, "answer": answer.text, "em": em, "f1": f1}
                handle.write(json.dumps({**record, "context": list(answer.context.used)}) + "\n")
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"{result.dataset} {split}, {result.label}, {summary['n']} queries: "
        f"EM {result.scores.em:.4f}  F1 {result.scores.f1:.4f}"
    )
    print(
        f"{summary['generated']} generated, {summary['cached']} from cache, {summary['seconds']:.1f}s; "
        f"{summary['truncated_docs']} documents truncated, {summary['dropped_docs']} dropped to fit "
        f"{context_tokens} tokens",
        file=sys.stderr,
    )


def _on_ray(ray: str | None, fn, *args):
    """`fn(*args)` here, or as one Ray task when --ray is given (a training run is one task)."""
    if ray is None:
        return fn(*args)
    from routerank.scale import executor_for

    return executor_for(ray).run_tasks(fn, [args])[0]


train_app = typer.Typer(no_args_is_help=True, help="Fine-tune rerankers on a dataset's train split.")


def _defaults(config_class) -> dict:
    """A config dataclass's field defaults: the CLI takes its defaults from here, so the two never drift."""
    from dataclasses import MISSING, fields

    return {f.name: f.default for f in fields(config_class) if f.default is not MISSING}


def _ce_defaults() -> dict:
    from routerank.train.cross_encoder import CrossEncoderTrainConfig

    return _defaults(CrossEncoderTrainConfig)


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
    from routerank.train.cross_encoder import CrossEncoderTrainConfig
    from routerank.train.cross_encoder import train_cross_encoder as train

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
    result = _on_ray(ray, train, config, out)
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
    from routerank.train.dense import DenseTrainConfig, train_dense

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
    path = _on_ray(ray, train_dense, config, out)
    print(f"trained; retrieve with dense:st:{path}", file=sys.stderr)


def _expert_defaults() -> dict:
    from routerank.train.expert import ExpertConfig

    return _defaults(ExpertConfig)


EX = _expert_defaults()


@train_app.command("expert")
def train_expert_command(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset name; comma-separate several to pool")],
    domain: Annotated[str, typer.Option(help="the expert's domain label (what the router predicts)")],
    eag: Annotated[bool, typer.Option("--eag/--no-eag", help="stage 1 on entity-abstracted pairs, then original")] = EX[
        "eag"
    ],
    granularity: Annotated[str, typer.Option(help="EAG masking: ner | ner+patterns")] = EX["granularity"],
    objective: Annotated[str, typer.Option(help="contrastive (InfoNCE) | sft (yes/no cross-entropy)")] = EX[
        "objective"
    ],
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
    from routerank.train.expert import ExpertConfig, train_expert

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
    from routerank.train.dear import DeARConfig

    return _defaults(DeARConfig)


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
    from dataclasses import replace

    from routerank.errors import SpecError
    from routerank.experiments.stages import read_toml_config
    from routerank.train.dear import DeARConfig, train_dear

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


def _grpo_config(config_class, path: Path | None):
    """A GRPO trainer's config: the TOML file's keys over the dataclass defaults (no file: the defaults)."""
    if path is None:
        return config_class()
    from routerank.experiments.stages import read_toml_config

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
    from routerank.rerank.adapters import read_adapter_manifest

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
    from routerank.train.prorank import ProRankConfig, train_prorank

    settings = _grpo_config(ProRankConfig, config)
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
    from routerank.train.rank_r1 import RankR1Config, train_rank_r1

    settings = _grpo_config(RankR1Config, config)
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


app.add_typer(train_app, name="train")

r3ag_app = typer.Typer(no_args_is_help=True, help="R3AG retriever routing: routing labels for a retriever pool.")


@r3ag_app.command("labels")
def r3ag_labels(
    dataset: DatasetOpt,
    pool: Annotated[Path, typer.Option(help="pool TOML, e.g. configs/r3ag-pool.toml")] = Path("configs/r3ag-pool.toml"),
    split: Annotated[str, typer.Option(help="qrels split whose queries are labelled")] = "train",
    sample: Annotated[int | None, typer.Option(help="a seeded sample of N queries")] = None,
    seed: Annotated[int, typer.Option(help="seed for --sample")] = 13,
    k: Annotated[int, typer.Option("-k", help="context documents per query")] = 3,
    model: Annotated[str, typer.Option(help="generator LLM spec")] = "smollm2",
    template: Annotated[str, typer.Option(help="answer template: plain | chatml")] = "plain",
    max_new_tokens: Annotated[int, typer.Option(help="answer length limit in tokens")] = 32,
    quality: Annotated[str, typer.Option(help="quality labels from: qrels (nDCG@10) | judge (LLM judge)")] = "qrels",
    judge: Annotated[str, typer.Option(help="the judge's LLM spec (default: the generator's model)")] = "",
    work_dir: Annotated[Path | None, typer.Option(help="runs and labels (default: cache/r3ag/labels/...)")] = None,
) -> None:
    """Quality (nDCG@10, or an LLM judge's) and utility (answer F1; EM in meta) of every pool member on every query;
    resumable."""
    from routerank.experiments.r3ag_labels import LabelSettings, build_labels, work_dir_for
    from routerank.route.pool import PoolConfig

    settings = LabelSettings(
        split,
        sample,
        seed,
        k,
        model=model,
        template=template,
        max_new_tokens=max_new_tokens,
        quality=quality,
        judge=judge,
    )
    config = PoolConfig.read(pool)
    work = work_dir or work_dir_for(dataset, config, settings)
    labels = build_labels(dataset, config, settings, work_dir=work)
    name_of_quality = labels.meta.get("quality", "quality")
    for name, f1 in labels.mean("utility").items():
        print(f"{name}: {name_of_quality} {labels.mean('quality')[name]:.3f}  F1 {f1:.3f}")
    agreement = labels.meta.get("judge_vs_qrels")
    if agreement and agreement.get("spearman") is not None:
        print(f"judge vs nDCG@10 over {agreement['cells']} cells: Spearman {agreement['spearman']:.3f}")
    print(f"wrote {work / 'labels'} ({len(labels)} queries)", file=sys.stderr)


app.add_typer(r3ag_app, name="r3ag")

experiment_app = typer.Typer(no_args_is_help=True, help="Staged, cached experiments that write reports/.")


@experiment_app.command("r2r")
def experiment_r2r(
    config: Annotated[Path, typer.Option(help="TOML config, e.g. configs/r2r-cpu.toml")],
    work_dir: Annotated[Path | None, typer.Option(help="stages live here (default: cache/r2r/PROFILE-HASH)")] = None,
    report: Annotated[Path, typer.Option(help="markdown report; figures go in a folder beside it")] = Path(
        "reports/r2r.md"
    ),
    max_minutes: Annotated[float | None, typer.Option(help="start no new stage after this long")] = None,
    only: Annotated[str | None, typer.Option(help="run only these stage kinds: train,route,score")] = None,
    ray: RayOpt = None,
) -> None:
    """The R2R multi-domain experiment: trains experts, routes, reranks, and writes the report; resumable."""
    from routerank.experiments.r2r_report import main_from_cli

    path = main_from_cli(config, work_dir, report, max_minutes, only, ray=ray)
    print(f"wrote {path}", file=sys.stderr)


@experiment_app.command("effectiveness")
def experiment_effectiveness(
    config: Annotated[Path, typer.Option(help="TOML config, e.g. configs/effectiveness.toml")],
    work_dir: Annotated[Path | None, typer.Option(help="stages live here (default: cache/effectiveness/HASH)")] = None,
    report: Annotated[Path, typer.Option(help="JSON report")] = Path("reports/effectiveness.json"),
    max_minutes: Annotated[float | None, typer.Option(help="start no new stage after this long")] = None,
    only: Annotated[str | None, typer.Option(help="run only these stage kinds: dev,first,rerank,alpha")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="print the README table")] = False,
    ray: RayOpt = None,
) -> None:
    """Every reranker over BM25 and hybrid candidates, plain and dev-interpolated, with paired tests; resumable."""
    from routerank.experiments import effectiveness

    result = effectiveness.main_from_cli(config, work_dir, report, max_minutes, only, ray=ray)
    if markdown:
        print(effectiveness.markdown(result))
    print(f"wrote {report}", file=sys.stderr)


@experiment_app.command("r3ag")
def experiment_r3ag(
    config: Annotated[Path, typer.Option(help="TOML config, e.g. configs/r3ag-cpu.toml")],
    work_dir: Annotated[Path | None, typer.Option(help="stages live here (default: cache/r3ag/PROFILE-HASH)")] = None,
    report: Annotated[Path, typer.Option(help="markdown report; the JSON goes beside it")] = Path("reports/r3ag.md"),
    max_minutes: Annotated[float | None, typer.Option(help="start no new stage after this long")] = None,
    only: Annotated[str | None, typer.Option(help="run only these stage kinds: labels,train,evaluate,report")] = None,
) -> None:
    """R3AG retriever routing: labels per set and split, train, evaluate every system, report; resumable."""
    from routerank.experiments.r3ag_experiment import main_from_cli

    main_from_cli(config, work_dir, report, max_minutes, only)


@experiment_app.command("llm-training")
def experiment_llm_training(
    config: Annotated[Path, typer.Option(help="TOML config, e.g. configs/llm-training-cpu.toml")],
    work_dir: Annotated[Path | None, typer.Option(help="stages go here (default: cache/llm-training/PROFILE)")] = None,
    report: Annotated[Path, typer.Option(help="markdown report; JSON and figures beside it")] = Path(
        "reports/llm-training.md"
    ),
    max_minutes: Annotated[float | None, typer.Option(help="start no new stage after this long")] = None,
    only: Annotated[str | None, typer.Option(help="run only these stage kinds: train,score")] = None,
) -> None:
    """Issue 12: SFT, contrastive, DeAR, ProRank and Rank-R1 on one backbone, scored and compared; resumable."""
    from routerank.experiments.llm_training import main_from_cli

    path = main_from_cli(config, work_dir, report, max_minutes, only)
    print(f"wrote {path}", file=sys.stderr)


app.add_typer(experiment_app, name="experiment")


@app.command("tune-alpha")
def tune_alpha(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset(s) whose dev queries choose; comma list")],
    reranker: Annotated[str, typer.Option("--reranker", "-r", help="reranker spec, e.g. ce:ce-pooled")],
    pipeline: PipelineOpt = "bm25",
    depth: Annotated[int, typer.Option(help="candidates reranked per query")] = 100,
    dev_queries: Annotated[int, typer.Option(help="dev queries per dataset (dev split)")] = 50,
) -> None:
    """Choose the interpolation weight of RERANKER over PIPELINE on dev queries and save it beside the model,
    for `PIPELINE>>RERANKER@DEPTH~auto`."""
    from routerank.experiments.effectiveness import EffectivenessConfig, EffectivenessExperiment

    names = tuple(part.strip() for part in dataset.split(",") if part.strip())
    config = EffectivenessConfig(names, {"reranker": reranker}, (pipeline,), depth=depth, dev_queries=dev_queries)
    experiment = EffectivenessExperiment(config)
    experiment.run(only={"dev", "alpha"})
    record = experiment.alpha_record("reranker", pipeline)
    for entry in record["by_corpus"].values():
        print(f"{entry['dataset']}: alpha {entry['alpha']:.2f} ({entry['dev_queries']} {entry['dev_split']} queries)")
    print(f"pooled: alpha {record['pooled']['alpha']:.2f}; use {pipeline}>>{reranker}@{depth}~auto")


@app.command("tune-fusion")
def tune_fusion(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset(s) whose dev queries choose; comma list")],
    pipeline: Annotated[
        str, typer.Option("--pipeline", "-p", help="a weighted fusion, e.g. weighted(bm25,dense:st:<folder>)")
    ],
    dev_queries: Annotated[int, typer.Option(help="dev queries per dataset (dev split)")] = 50,
    step: Annotated[float, typer.Option(help="grid step of the weights")] = 0.05,
    out: Annotated[Path | None, typer.Option(help="write the choice and every dev curve here (JSON)")] = None,
) -> None:
    """Choose a weighted fusion's weights on dev queries (the dev split, or the queries a fine-tuned retriever held
    out of training) and print the spec to use; test queries never choose."""
    from routerank.experiments.fusion_weights import tune_fusion as tune

    names = tuple(part.strip() for part in dataset.split(",") if part.strip())
    record = tune(names, pipeline, dev_queries=dev_queries, step=step, out=out)
    for entry in record["datasets"].values():
        print(
            f"{entry['dataset']}: {entry['spec']}  nDCG@10 {entry['nDCG@10']:.4f} "
            f"({entry['dev_queries']} {entry['dev_split']} queries)"
        )
    print(f"pooled: {record['pooled']['spec']}  mean nDCG@10 {record['pooled']['nDCG@10']:.4f}")


@app.command()
def serve(
    config: Annotated[Path, typer.Option(help="TOML config naming the models, e.g. configs/serve.toml")],
    host: Annotated[str | None, typer.Option(help="bind address (default: the config's)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: the config's)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    ray_replicas: Annotated[
        int,
        typer.Option(
            "--ray-replicas",
            help="serve the same app on Ray Serve with N replicas, each loading the models once (0: uvicorn alone)",
            metavar="N",
        ),
    ] = 0,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            "--ray",
            help="with --ray-replicas: the Ray cluster to join (default: a local Ray on this machine's cores)",
            metavar="ADDRESS",
        ),
    ] = None,
) -> None:
    """Serve the configured models over HTTP: Cohere-compatible /v1/rerank and /v2/rerank, /v1/route, /v1/search."""
    try:
        from routerank.serve.server import run
    except ImportError as exc:
        raise RouterankError(f"serving needs {exc.name}", fix="pip install 'routerank[serve]'") from None
    from routerank.serve.config import load_config

    if ray_replicas == 0 and ray_address is None:
        run(load_config(config), host=host, port=port, log_level=log_level)
        return
    if ray_replicas < 1:
        raise RouterankError(
            f"--ray-replicas must be 1 or more to serve on Ray, got {ray_replicas}",
            fix="pass --ray-replicas N (N >= 1) with --ray-address, or neither to serve with uvicorn alone",
        )
    from routerank.serve.ray_serve import run_on_ray

    run_on_ray(load_config(config), ray_replicas, ray=ray_address, host=host, port=port)


def normalise_ray_flag(argv: list[str]) -> list[str]:
    """`--ray` alone means a local Ray: give it the value `local` so that the option parser sees one."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = "--ray=local"
    return out


def main() -> None:
    try:
        app(args=normalise_ray_flag(sys.argv[1:]), standalone_mode=True)
    except RouterankError as exc:
        print(f"routerank: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("routerank: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
