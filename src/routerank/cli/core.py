"""The root `routerank` app and its own commands: datasets, documents, index, search, evaluate, compare, qa, the
dev-set tuners and serve."""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from routerank import __version__, tune
from routerank import starter as starter_bundle
from routerank.cli.common import (
    DatasetOpt,
    JsonOpt,
    LenientOpt,
    MeasuresOpt,
    PipelineOpt,
    RayOpt,
    console,
    documents_for,
    load,
    parse_options,
    retrieve,
)
from routerank.data.documents import FILENAME as DOCUMENTS_FILE
from routerank.data.documents import HEADER as DOCUMENTS_HEADER
from routerank.data.documents import load_documents
from routerank.data.registry import data_root, list_datasets, load_dataset
from routerank.data.trec import read_run, write_run
from routerank.data.types import Query, sample_queries
from routerank.errors import RouterankError
from routerank.evaluate.measures import evaluate as score
from routerank.evaluate.measures import parse_measures
from routerank.evaluate.significance import paired_test
from routerank.fsutil import atomic_write
from routerank.generate.qa_run import run_qa
from routerank.pipeline import build
from routerank.route import RoutedScorer, count_choices
from routerank.serve.config import load_config

try:  # the serving extras (fastapi, uvicorn) are optional: without them only `routerank serve` fails, saying so
    from routerank.serve.ray_serve import run_on_ray
    from routerank.serve.server import run as run_server
except ImportError as exc:
    run_on_ray = run_server = None
    SERVE_MISSING: str | None = exc.name
else:
    SERVE_MISSING = None

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Domain-aware retrieval and reranking for RAG.",
)


def _print_version(value: bool) -> None:
    if value:
        print(f"routerank {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", help="print the version and exit", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """Domain-aware retrieval and reranking for RAG."""


@app.command()
def datasets(
    root: Annotated[Path | None, typer.Option(help="data root (default: ROUTERANK_DATA)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the datasets under the data root, with docs, queries and judged pairs per split."""
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
    table = Table(title=f"datasets in {root}")
    for col in ("name", "docs", "queries", "splits (judged queries / pairs)"):
        table.add_column(col, justify="left" if col == "name" or col.startswith("splits") else "right")
    for s in summaries:
        splits = "  ".join(f"{k}: {q:,}/{p:,}" for k, (q, p) in s.splits.items())
        table.add_row(s.name, f"{s.docs:,}", f"{s.queries:,}", splits)
    console().print(table)


@app.command()
def documents(dataset: DatasetOpt, lenient: LenientOpt = False, as_json: JsonOpt = False) -> None:
    """Check a dataset's documents.tsv and summarise it: documents, passages by kind, passages per document, and how
    each split's judged query-passage pairs lift to query-document pairs."""
    ds = load(dataset, None, lenient)
    doc_map = load_documents(ds)
    if doc_map is None:
        raise RouterankError(
            f"dataset {ds.name!r} has no {DOCUMENTS_FILE}",
            path=ds.path,
            fix=f"write one beside corpus.jsonl, tab-separated with the header {' '.join(DOCUMENTS_HEADER)}",
        )
    sizes = sorted(len(passages) for passages in doc_map.parts.values())
    tables = sum(1 for kind in doc_map.kinds.values() if kind == "table")
    splits = {}
    for split in ds.splits:
        qrels = ds.qrels[split]
        splits[split] = {
            "queries": len(qrels),
            "passage_pairs": qrels.num_pairs,
            "document_pairs": doc_map.lift_qrels(qrels).num_pairs,
        }
    summary = {
        "dataset": ds.name,
        "documents": len(doc_map),
        "passages": len(doc_map.kinds),
        "tables": tables,
        "text": len(doc_map.kinds) - tables,
        "passages_per_document": {"min": sizes[0], "median": statistics.median(sizes), "max": sizes[-1]},
        "fingerprint": doc_map.fingerprint,
        "splits": splits,
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    per_doc = summary["passages_per_document"]
    console().print(
        f"{ds.name}: {len(doc_map):,} documents over {len(doc_map.kinds):,} passages "
        f"({tables:,} tables, {len(doc_map.kinds) - tables:,} text)\n"
        f"  passages per document: min {per_doc['min']}, median {per_doc['median']:g}, max {per_doc['max']}"
    )
    if splits:
        table = Table(title="judged pairs, passages → documents")
        for col in ("split", "queries", "passage pairs", "document pairs"):
            table.add_column(col, justify="left" if col == "split" else "right")
        for split, counts in splits.items():
            table.add_row(
                split, f"{counts['queries']:,}", f"{counts['passage_pairs']:,}", f"{counts['document_pairs']:,}"
            )
        console().print(table)


@app.command()
def index(
    dataset: DatasetOpt,
    pipeline: PipelineOpt = "bm25",
    rebuild: Annotated[bool, typer.Option(help="ignore a cached index")] = False,
    out: Annotated[Path | None, typer.Option(help="also save the index to this folder")] = None,
    ray: RayOpt = None,
) -> None:
    """Build (or verify) the cached index for a pipeline on a dataset's corpus."""
    ds = load_dataset(dataset, splits=[])
    retriever = build(
        pipeline, ds.corpus, rebuild=rebuild, progress=True, ray=ray, documents=documents_for(ds, pipeline)
    )
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
    if (query is None) == (split is None):
        raise RouterankError("give exactly one of --query or --split")
    ds = load(dataset, split, lenient=False)
    queries = [Query("q0", query)] if query is not None else ds.split_queries(split)
    run = retrieve(ds, pipeline, queries, k, ray=ray)
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
        table = Table(title=f"{run.name}: {query}")
        for col in ("rank", "score", "doc", "text"):
            table.add_column(col)
        for doc in run["q0"]:
            text = ds.corpus[doc.doc_id].full_text
            table.add_row(str(doc.rank), f"{doc.score:.3f}", doc.doc_id, text[:100] + ("…" if len(text) > 100 else ""))
        console().print(table)


def _print_evaluations(evals, as_json: bool, extra: dict | None = None, routed: dict | None = None) -> None:
    """The runs' means as a table (or JSON); from the second run on, the paired t-test p of its first measure
    against the first run's, and the expert counts of routed runs."""
    names = list(evals[0].means)
    tests = {e.run_name: paired_test(evals[0].per_query[names[0]], e.per_query[names[0]]) for e in evals[1:]}
    if as_json:
        record = {**(extra or {}), "runs": {e.run_name: e.means for e in evals}}
        if tests:
            record["p_vs_first"] = {name: {names[0]: t.t_pvalue} for name, t in tests.items()}
        if routed:
            record["experts"] = routed
        print(json.dumps(record, indent=2))
        return
    table = Table(title=", ".join(f"{k}={v}" for k, v in (extra or {}).items()))
    table.add_column("run")
    for name in names:
        table.add_column(name, justify="right")
    if tests:
        table.add_column(f"p vs {evals[0].run_name}", justify="right")
    for e in evals:
        p = [f"{tests[e.run_name].t_pvalue:.3g}" if e.run_name in tests else ""] if tests else []
        table.add_row(e.run_name, *(f"{e.means[n]:.4f}" for n in names), *p)
    console().print(table)
    for name, counts in (routed or {}).items():
        chosen = ", ".join(f"{expert} {n}" for expert, n in sorted(counts.items(), key=lambda item: -item[1]))
        console().print(f"experts chosen per query ({name}): {chosen}")


def _routed_counts(pipeline) -> dict[str, int]:
    """How many queries each expert judged in the pipeline's last search (routed stages only); {} without one."""
    counts: dict[str, int] = {}
    for reranker, _ in getattr(pipeline, "stages", []):
        inner = getattr(reranker, "reranker", reranker)  # an interpolated stage wraps its reranker
        if isinstance(inner, RoutedScorer):
            for choice, n in count_choices(getattr(inner, "last_decisions", [])).items():
                counts[choice] = counts.get(choice, 0) + n
    return counts


@app.command()
def evaluate(
    dataset: DatasetOpt,
    split: Annotated[str, typer.Option(help="qrels split")] = "test",
    pipeline: Annotated[
        list[str] | None,
        typer.Option(
            "--pipeline",
            "-p",
            help="bm25 | dense[:model] | hybrid | ...>>starter@N~auto; repeat -p to compare pipelines side by side",
        ),
    ] = None,
    measures: MeasuresOpt = "nDCG@10 MRR@10 R@100",
    k: Annotated[int, typer.Option("-k", help="retrieval depth")] = 100,
    run: Annotated[Path | None, typer.Option(help="evaluate this TREC run instead")] = None,
    save_run: Annotated[Path | None, typer.Option(help="write the run as a TREC file (one pipeline)")] = None,
    sample: Annotated[int | None, typer.Option(help="a seeded sample of N queries")] = None,
    seed: Annotated[int, typer.Option(help="seed for --sample")] = 13,
    rerank_opt: Annotated[
        list[str] | None, typer.Option("--rerank-opt", help="KEY=VALUE passed to rerankers, e.g. max_doc_tokens=128")
    ] = None,
    lenient: LenientOpt = False,
    as_json: JsonOpt = False,
    ray: RayOpt = None,
) -> None:
    """Run pipelines on a split's queries and score them against the qrels; with several, each against the first
    (paired t-test p on the first measure) and, for a routed reranker, how many queries each expert judged."""
    parse_measures(measures)
    specs = pipeline or ["bm25"]
    if save_run is not None and len(specs) > 1:
        raise RouterankError("--save-run writes one run", fix="give one --pipeline, or save each separately")
    ds = load(dataset, split, lenient)
    queries = sample_queries(ds.split_queries(split), sample, seed)
    qrels = ds.split_qrels(split).subset(q.id for q in queries)
    results, routed = [], {}
    if run is not None:
        results.append(read_run(run))
    else:
        for spec in specs:
            built = build(
                spec,
                ds.corpus,
                progress=True,
                reranker_options=parse_options(rerank_opt),
                ray=ray,
                documents=documents_for(ds, spec),
            )
            results.append(built.search(queries, k))
            if counts := _routed_counts(built):
                routed[results[-1].name] = counts
    if save_run is not None:
        write_run(results[0], save_run, tag=results[0].name)
    evaluations = [score(result, qrels, measures) for result in results]
    if run is None and len(specs) > 1:  # rows named as the user wrote each pipeline: two runs may share a name
        routed = {spec: routed[r.name] for spec, r in zip(specs, results, strict=True) if r.name in routed}
        evaluations = [replace(e, run_name=spec) for e, spec in zip(evaluations, specs, strict=True)]
    extra = {"dataset": ds.name, "split": split, "queries": evaluations[0].num_queries}
    _print_evaluations(evaluations, as_json, extra, routed)


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
    parse_measures(measures)
    a, b = read_run(run_a), read_run(run_b)
    qrels = load(dataset, split, lenient).split_qrels(split)
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
    console().print(table)


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
    result = run_qa(
        dataset,
        split=split,
        context=context,
        retriever=lambda corpus: build(pipeline, corpus, progress=True),
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
    names = tuple(part.strip() for part in dataset.split(",") if part.strip())
    record = tune.tune_alpha(names, reranker, pipeline, depth=depth, dev_queries=dev_queries)
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
    names = tuple(part.strip() for part in dataset.split(",") if part.strip())
    record = tune.tune_fusion(names, pipeline, dev_queries=dev_queries, step=step, out=out)
    for entry in record["datasets"].values():
        print(
            f"{entry['dataset']}: {entry['spec']}  nDCG@10 {entry['nDCG@10']:.4f} "
            f"({entry['dev_queries']} {entry['dev_split']} queries)"
        )
    print(f"pooled: {record['pooled']['spec']}  mean nDCG@10 {record['pooled']['nDCG@10']:.4f}")


@app.command()
def starter(as_json: JsonOpt = False) -> None:
    """The trained starter bundle inside the package: check it against its manifest, and show what it holds and
    what was measured with it."""
    manifest = starter_bundle.verify()
    if as_json:
        print(json.dumps({k: v for k, v in manifest.items() if k not in ("files", "reference")}, indent=2))
        return
    training = manifest["training"]["generalist"]
    console().print(
        f"starter bundle: {manifest['size_mb']} MB, {len(manifest['files'])} files, checksums match\n"
        f"  names: starter / r2r:starter (routed), starter:generalist / ce:starter (the generalist alone)\n"
        f"  domains: {', '.join(manifest['domains'])} (one expert each; other queries go to the generalist)\n"
        f"  trained on {training['queries']} queries, {manifest['model']['max_length']}-token pairs, "
        f"over {manifest['model']['base_model']}\n"
        f"  rebuild: {manifest['rebuild']} --ship"
    )
    test = manifest["figures"]["test"]
    table = Table(title=f"nDCG@10 on test, reranking the top {next(iter(test.values()))['depth']} of the first stage")
    table.add_column("system")
    for name in test:
        table.add_column(f"{name} ({test[name]['queries']})", justify="right")
    for system in ("bm25", "first", "generalist", "expert", "routed"):
        table.add_row(system, *(f"{test[name]['systems'][system]['nDCG@10']:.3f}" for name in test))
    console().print(table)


@app.command()
def serve(
    config: Annotated[
        Path | None,
        typer.Option(help="TOML config naming the models, e.g. configs/serve.toml (default: the starter bundle)"),
    ] = None,
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
    if SERVE_MISSING is not None:
        raise RouterankError(f"serving needs {SERVE_MISSING}", fix="pip install 'routerank[serve]'")
    if ray_replicas == 0 and ray_address is None:
        run_server(load_config(config), host=host, port=port, log_level=log_level)
        return
    if ray_replicas < 1:
        raise RouterankError(
            f"--ray-replicas must be 1 or more to serve on Ray, got {ray_replicas}",
            fix="pass --ray-replicas N (N >= 1) with --ray-address, or neither to serve with uvicorn alone",
        )
    run_on_ray(load_config(config), ray_replicas, ray=ray_address, host=host, port=port)
