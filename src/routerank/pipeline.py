"""Pipeline specs: short strings that name a retrieval setup, the same in the CLI and in Python.

    bm25                          BM25 (bm25s defaults: k1=1.5, b=0.75, Lucene IDF)
    bm25:k1=0.9,b=0.4             BM25 with parameters
    rm3 | bm25+rm3                BM25 with RM3 feedback (fb_docs=10,fb_terms=10,original_weight=0.5; BM25's index)
    rm3:fb_docs=5,k1=0.9          ... with parameters, RM3's and BM25's alike
    dense | dense:<model-spec>    bi-encoder + exact FAISS (default model: the packaged MiniLM)
    null                          R0, retrieve nothing
    r3ag:<router-folder>          per query, the R3AG router picks a member of the pool it was trained for (or R0)
    docs:merge=mean,depth=5       documents made of passages (a documents.tsv): rank documents by merged passage
                                  vectors (mean, max, attention with pooling=<folder>, first, concat, maxp) or
                                  merge=bm25 over whole documents, then return the passages of the top `depth`
                                  documents in document order; a rerank stage after it is the fine stage
                                  (docs:merge=maxp,depth=3>>ce:starter@60). Options: model=, tables=, backend=
    genread | genread:n=2         the LLM writes n passages per query (1-3, default 1; default LLM: the packaged
                                  SmolLM2; genread:<llm-spec> or genread:llm=<spec>,n=2,tokens=96 for another)
    hyde(A)                       search A with the query plus an LLM-written passage (mode=passage: the passage
                                  alone; llm=<spec>), e.g. hyde(bm25), hyde(dense,mode=passage)
    hybrid                        rrf(bm25,dense)
    rrf(A,B,...)                  reciprocal rank fusion of any specs
    weighted(0.3*A,0.7*B)         min-max normalised score fusion
    mix(2*A,1*B)                  stacked: A's first 2 documents, then B's first 1 (retrieved plus generated)
    RETRIEVER>>RERANKER@N         rerank the retriever's top N (e.g. bm25>>ce:/models/ce@100)
    RETRIEVER>>RERANKER@N~0.6     ... and mix its scores with the retriever's: 0.6 * rerank + 0.4 * first stage
    RETRIEVER>>RERANKER@N~auto    ... with the weight chosen on dev data (`routerank tune-alpha`)

Stages chain left to right: `bm25>>ce:/m@100>>pointwise@20` reranks 100, then the top 20 of that.

    understand(P,mode=rules,aggregate=round-robin,speller=1,against=sub-query)
                                  query understanding around a whole pipeline P: denoise, split into intents,
                                  run each through P, aggregate (routerank.understand; a `routerank.pipelines`
                                  entry point, as other packages may add wrappers of their own)

With `ray=` (the CLI's `--ray`), dense indexes are encoded in shards on Ray actors, and each rerank stage
runs as a `ShardedReranker`: query shards, each reranked by an actor that built the stage's reranker once.
The driver then loads no reranker model at all. Results equal the in-process ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import MappingProxyType

from routerank.data.documents import DocumentMap
from routerank.data.types import Corpus, Ranking, Run
from routerank.errors import SpecError
from routerank.generate.genread import GenRead, HyDE, WriterCost
from routerank.models.backends import TORCH
from routerank.models.llm import DEFAULT_LLM
from routerank.r3ag.pool import PoolConfig, RetrieverPool, RoutedRetriever
from routerank.r3ag.router import R3AGRouter
from routerank.rerank.base import candidates
from routerank.rerank.interpolate import InterpolatedReranker
from routerank.rerank.registry import make_reranker
from routerank.retrieve.base import IndexedRetriever, as_query_list
from routerank.retrieve.bm25 import BM25Retriever
from routerank.retrieve.coarse import CoarseToFine, WholeDocuments
from routerank.retrieve.dense import DEFAULT_MODEL, DenseRetriever, dense_options
from routerank.retrieve.documents import DocumentRetriever
from routerank.retrieve.fusion import FusionRetriever
from routerank.retrieve.null import NullRetriever
from routerank.retrieve.pooling import AttentionPooling
from routerank.retrieve.rm3 import PARAMETERS, RM3Retriever
from routerank.retrieve.store import cached_index
from routerank.scale import LazyShards, ShardStore, chunks, executor_for
from routerank.starter import resolve_spec as resolve_starter

ALIASES = {"hybrid": "rrf(bm25,dense)"}
FUSIONS = ("rrf", "weighted", "mix")
COUNTED = ("weighted", "mix")  # fusions whose children carry a number: a weight, or mix's count
WRAPPERS = ("hyde",)
LEAVES = ("bm25", "rm3", "bm25+rm3", "dense", "null", "r3ag", "docs", "genread")
HYDE_OPTIONS = ("llm", "mode", "tokens")
GENREAD_OPTIONS = ("llm", "n", "tokens")


@dataclass(frozen=True)
class Spec:
    """A parsed first-stage spec: a leaf retriever's name and its argument (the text after the `:`), or a fusion's
    name with its children and, for `weighted`, their weights."""

    name: str
    arg: str = ""
    children: tuple[Spec, ...] = ()
    weights: tuple[float, ...] = field(default=())


def _split_top_level(text: str, spec: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced ')' in pipeline {spec!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise SpecError(f"unbalanced '(' in pipeline {spec!r}")
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _merge_params(parts: list[str]) -> list[str]:
    """`rrf(bm25:k1=0.9,b=0.4,dense)`: a bare key=value continues the previous retriever's parameters."""
    merged: list[str] = []
    for part in parts:
        if merged and re.match(r"^\w+=", part):
            merged[-1] = f"{merged[-1]},{part}"
        else:
            merged.append(part)
    return merged


def parse(spec: str) -> Spec:
    """The `Spec` tree of a first-stage spec (no `>>` stages), aliases expanded; a malformed or unknown spec raises
    `SpecError`."""
    text = ALIASES.get(spec.strip(), spec.strip())
    if not text:
        raise SpecError("empty pipeline spec", fix="e.g. bm25, dense, hybrid")
    head, paren, rest = text.partition("(")
    if paren and head.strip() in WRAPPERS and rest.endswith(")"):
        return _parse_wrapper(head.strip(), rest[:-1], spec)
    if paren:
        name = head.strip()
        if name not in FUSIONS or not rest.endswith(")"):
            raise SpecError(f"cannot parse pipeline {spec!r}", fix=f"fusions are {FUSIONS}, e.g. rrf(bm25,dense)")
        children, weights = [], []
        for part in _merge_params(_split_top_level(rest[:-1], spec)):
            weight, star, child = part.partition("*")
            if star and name in COUNTED:
                try:
                    weights.append(float(weight))
                except ValueError:
                    raise SpecError(f"weight {weight!r} in {spec!r} is not a number") from None
                part = child
            children.append(parse(part))
        if weights and len(weights) != len(children):
            raise SpecError(f"give a weight for every retriever in {spec!r}, or none")
        if name == "mix" and (len(weights) != len(children) or any(w < 1 or w != int(w) for w in weights)):
            raise SpecError(
                f"mix needs a whole count of documents for every source in {spec!r}", fix="e.g. mix(2*bm25,1*genread)"
            )
        return Spec(name, children=tuple(children), weights=tuple(weights))
    name, _, arg = text.partition(":")
    if name not in LEAVES:
        raise SpecError(
            f"unknown retriever {name!r} in pipeline {spec!r}",
            fix="use bm25, rm3, dense[:model], null, genread, r3ag:<folder>, docs:merge=..., hybrid, rrf(...), "
            "weighted(...), mix(...), hyde(...)",
        )
    return Spec(name, arg.strip())


def _parse_wrapper(name: str, inner: str, spec: str) -> Spec:
    """`hyde(dense,mode=passage)`: one wrapped spec, then the wrapper's own key=value options."""
    parts = _split_top_level(inner, spec)
    options = [p for p in parts if re.match(rf"^({'|'.join(HYDE_OPTIONS)})=", p)]
    wrapped = [p for p in parts if p not in options]
    wrapped = _merge_params(wrapped)
    if len(wrapped) != 1 or not wrapped[0]:
        raise SpecError(f"{name}(...) wraps exactly one retriever in {spec!r}", fix=f"e.g. {name}(bm25)")
    return Spec(name, ",".join(options), children=(parse(wrapped[0]),))


def fusion_children(spec: str) -> tuple[str, list[str]]:
    """`weighted(0.3*bm25,0.7*dense)` -> ("weighted", ["bm25", "dense"]): a fusion's method and its children's
    specs as written, weights dropped."""
    parsed = parse(spec)
    if parsed.name not in FUSIONS:
        raise SpecError(f"{spec!r} is not a fusion", fix="e.g. weighted(bm25,dense) or rrf(bm25,dense)")
    text = ALIASES.get(spec.strip(), spec.strip())
    rest = text.partition("(")[2][:-1]
    children = []
    for part in _merge_params(_split_top_level(rest, spec)):
        weight, star, child = part.partition("*")
        children.append(child.strip() if star and parsed.name in COUNTED else part)
    return parsed.name, children


def _bm25_params(arg: str) -> dict[str, float | str]:
    params: dict[str, float | str] = {}
    for item in filter(None, (a.strip() for a in arg.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in ("k1", "b", "method"):
            raise SpecError(f"bad bm25 parameter {item!r}", fix="e.g. bm25:k1=0.9,b=0.4")
        try:
            params[key] = value if key == "method" else float(value)
        except ValueError:
            raise SpecError(f"bm25 parameter {key}={value!r} is not a number") from None
    return params


def _rm3_params(arg: str) -> tuple[dict[str, float | str], dict[str, float | int]]:
    """`rm3:fb_docs=5,k1=0.9` → (BM25's parameters, RM3's)."""
    bm25, rm3 = [], {}
    for item in filter(None, (a.strip() for a in arg.split(","))):
        key, eq, value = item.partition("=")
        if key not in PARAMETERS:
            bm25.append(item)
            continue
        try:
            rm3[key] = PARAMETERS[key](value)
        except ValueError:
            raise SpecError(
                f"rm3 parameter {key}={value!r} is not a {PARAMETERS[key].__name__}",
                fix="e.g. rm3:fb_docs=10,fb_terms=10,original_weight=0.5",
            ) from None
    return _bm25_params(",".join(bm25)), rm3


def _member(member, progress: bool):
    """An un-indexed retriever for one pool member: its spec, or the user's factory."""
    if member.spec:
        if ">>" in member.spec:
            raise SpecError(
                f"pool member {member.name!r} = {member.spec!r} has rerank stages",
                fix="pool members are first-stage retrievers; rerank after routing, e.g. r3ag:<folder>>>ce:<m>@100",
            )
        return make_retriever(member.spec, progress)
    return member.create()


def _routed(folder: str, progress: bool):
    router = R3AGRouter.load(folder)
    if router.pool is None:
        raise SpecError(
            f"r3ag:{folder} records no retriever pool", fix="train it with a pool config (configs/r3ag-pool.toml)"
        )
    members = {member.name: _member(member, progress) for member in router.pool.members}
    return RoutedRetriever(router, RetrieverPool(members, router.pool), name=f"r3ag:{Path(folder).name}")


DOCS_OPTIONS = ("merge", "depth", "model", "tables", "pooling", "backend")


def _documents_stage(arg: str, documents: DocumentMap | None, progress: bool) -> CoarseToFine:
    """`docs:merge=...,depth=...`: the coarse stage over documents, returning the top documents' passages."""
    if documents is None:
        raise SpecError(
            "docs: needs the documents its passages form",
            fix="give a dataset with a documents.tsv beside its corpus, or build(..., documents=load_documents(ds))",
        )
    options = {}
    for item in filter(None, (part.strip() for part in arg.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in DOCS_OPTIONS:
            raise SpecError(f"bad docs option {item!r}", fix=f"key=value with keys {', '.join(DOCS_OPTIONS)}")
        options[key] = value.strip()
    try:
        depth = int(options.pop("depth", "5"))
    except ValueError:
        raise SpecError("docs: depth must be a whole number of documents") from None
    merge, style = options.pop("merge", "mean"), options.pop("tables", "pipe")
    if merge == "bm25":
        coarse = WholeDocuments(BM25Retriever(progress=progress), documents, style)
    else:
        pooling = options.pop("pooling", None)
        coarse = DocumentRetriever(
            documents,
            model=options.pop("model", DEFAULT_MODEL),
            merge=merge,
            pooling=AttentionPooling.load(pooling) if pooling else None,
            table_style=style,
            backend=options.pop("backend", TORCH),
            progress=progress,
        )
    return CoarseToFine(coarse, documents, Corpus([]), depth=depth)


def _options(arg: str, keys: tuple[str, ...], what: str, bare: str | None = None) -> dict[str, str]:
    """`llm=smollm2,n=2` as a dict of the allowed `keys`; a bare first item is the value of `bare`, if given."""
    options: dict[str, str] = {}
    for i, item in enumerate(filter(None, (part.strip() for part in arg.split(",")))):
        key, eq, value = item.partition("=")
        if not eq and i == 0 and bare is not None:
            key, value = bare, item
        elif not eq or key not in keys:
            raise SpecError(f"bad {what} option {item!r}", fix=f"key=value with keys {', '.join(keys)}")
        options[key] = value.strip()
    return options


def _whole(options: dict[str, str], key: str, what: str) -> dict[str, int]:
    if key not in options:
        return {}
    try:
        return {key: int(options[key])}
    except ValueError:
        raise SpecError(f"{what} option {key}={options[key]!r} is not a whole number") from None


def _genread(arg: str) -> GenRead:
    options = _options(arg, GENREAD_OPTIONS, "genread", bare="llm")
    passages = _whole(options, "n", "genread").get("n", 1)
    tokens = _whole(options, "tokens", "genread")
    return GenRead(options.get("llm", DEFAULT_LLM), passages=passages, **_writer_options(tokens))


def _writer_options(tokens: dict[str, int]) -> dict[str, int]:
    return {"max_new_tokens": tokens["tokens"]} if tokens else {}


def _hyde(node: Spec, progress: bool, documents: DocumentMap | None) -> HyDE:
    options = _options(node.arg, HYDE_OPTIONS, "hyde")
    inner = make_retriever(node.children[0], progress, documents)
    tokens = _whole(options, "tokens", "hyde")
    return HyDE(
        inner, options.get("llm", DEFAULT_LLM), mode=options.get("mode", "query+passage"), **_writer_options(tokens)
    )


def llm_cost(obj) -> dict[str, int]:
    """What the LLM context sources inside a retriever or pipeline (GenRead, HyDE) have generated since they were
    made: LLM calls, generated tokens, passages and how many passages came from the cache, summed."""
    total = {"llm_calls": 0, "generated_tokens": 0, "passages": 0, "cached": 0}
    seen: set[int] = set()

    def walk(node) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, WriterCost):
            for key, value in node.cost().items():
                total[key] += value
        for child in getattr(node, "retrievers", None) or []:
            walk(child)
        if isinstance(node, Pipeline):
            walk(node.retriever)

    walk(obj)
    return total


def make_retriever(spec: str | Spec, progress: bool = False, documents: DocumentMap | None = None):
    """An un-indexed retriever for a spec; `documents` is the passage-to-document map that `docs:` needs."""
    node = parse(spec) if isinstance(spec, str) else spec
    if node.name == "genread":
        return _genread(node.arg)
    if node.name == "hyde":
        return _hyde(node, progress, documents)
    if node.name == "docs":
        return _documents_stage(node.arg, documents, progress)
    if node.name == "bm25":
        return BM25Retriever(**_bm25_params(node.arg), progress=progress)
    if node.name in ("rm3", "bm25+rm3"):
        bm25_params, rm3_params = _rm3_params(node.arg)
        return RM3Retriever(BM25Retriever(**bm25_params, progress=progress), **rm3_params)
    if node.name == "r3ag":
        if not node.arg:
            raise SpecError("r3ag needs a router folder", fix="e.g. r3ag:runs/r3ag-router")
        return _routed(node.arg, progress)
    if node.name == "dense":
        model, options = dense_options(node.arg)
        return DenseRetriever(model=model, progress=progress, **options)
    if node.name == "null":
        return NullRetriever()

    children = [make_retriever(child, progress, documents) for child in node.children]
    return FusionRetriever(children, method=node.name, weights=node.weights or None)


DEFAULT_RERANK_DEPTH = 100


WEIGHT = re.compile(r"~([^~/]*)$")  # a trailing ~0.5 / ~auto; a ~ that starts a path (ce:~/m) is not one


@dataclass(frozen=True)
class StageSpec:
    """One rerank stage of a spec: the reranker spec, how many candidates it reranks, and its interpolation weight."""

    reranker: str
    depth: int = DEFAULT_RERANK_DEPTH
    alpha: float | str | None = None  # None: plain rerank; a number or "auto": interpolate with the stage above


def split_stages(spec: str) -> tuple[str, list[StageSpec]]:
    """`bm25>>ce:/m@100~0.5` → ("bm25", [StageSpec("ce:/m", 100, 0.5)])."""
    first, *rest = [part.strip() for part in spec.split(">>")]
    stages = []
    for part in rest:
        weight = WEIGHT.search(part)
        body = part[: weight.start()] if weight else part
        name, at, depth = body.rpartition("@")
        if not at:
            name, depth = body, str(DEFAULT_RERANK_DEPTH)
        if not name or not depth.isdigit() or int(depth) < 1:
            raise SpecError(f"bad rerank stage {part!r} in {spec!r}", fix="e.g. bm25>>pointwise@100 or ...@100~0.5")
        alpha: float | str | None = weight.group(1) if weight else None
        if alpha is not None and alpha != "auto":
            try:
                alpha = float(alpha)
            except ValueError:
                raise SpecError(f"bad interpolation weight in {part!r}", fix="a number in [0, 1], or auto") from None
            if not 0.0 <= alpha <= 1.0:
                raise SpecError(f"interpolation weight {alpha} in {part!r} is outside [0, 1]")
        stages.append(StageSpec(name, int(depth), alpha))
    return first, stages


def canonical(spec: str) -> str:
    """A first-stage spec as saved interpolation weights are keyed: aliases expanded, whitespace dropped."""
    spec = spec.strip()
    return re.sub(r"\s+", "", ALIASES.get(spec, spec))


@dataclass
class Pipeline:
    """A retriever followed by rerank stages; searches like a retriever."""

    retriever: object
    stages: list[tuple[object, int]]
    corpus: Corpus

    @property
    def name(self) -> str:
        """The pipeline as a spec: the retriever's name, then `>>reranker@depth` per stage."""
        return ">>".join([self.retriever.name, *(f"{r.name}@{d}" for r, d in self.stages)])

    def search(self, queries, k: int = 100):
        """Each query's top `k` after every stage; the retriever fetches `k` or the deepest stage's depth, if deeper.
        Passages the retriever generated (`Run.documents`) are reranked like corpus documents and stay in the run."""
        query_list = as_query_list(queries)
        depth = max([k, *(d for _, d in self.stages)])
        run = self.retriever.search(query_list, depth)
        made = run.documents  # generated passages: rerankers score them as corpus documents
        corpus = self.corpus.extended(made)
        for reranker, stage_depth in self.stages:
            run = reranker.rerank_run(query_list, run, corpus, stage_depth)
        return run.top(k).with_documents(made)


def stage_reranker(stage: StageSpec, above: str, options: dict | None = None):
    """The reranker one stage names, interpolated with the stage above when the stage says so."""
    reranker = make_reranker(resolve_starter(stage.reranker), **(options or {}))
    if stage.alpha is not None:
        alpha = None if stage.alpha == "auto" else stage.alpha
        reranker = InterpolatedReranker(reranker, alpha, first_stage=above)
    return reranker


class RerankShardWorker:
    """Lives on a Ray actor: builds the stage's reranker once, then reranks one query shard per call."""

    def __init__(self, stage: StageSpec, above: str, options: dict | None = None):
        self.reranker = stage_reranker(stage, above, options)
        self.depth = stage.depth

    def rerank_shard(self, shard: tuple) -> dict:
        """One shard, (queries, {query id: (doc ids, scores)}, run name, corpus), reranked; returned as plain lists,
        `{"name": ..., "rankings": {query id: [doc ids, scores]}}`, to travel back from the actor."""
        queries, rankings, run_name, corpus = shard
        run = Run(MappingProxyType({q: Ranking(ids, scores) for q, (ids, scores) in rankings.items()}), run_name)
        out = self.reranker.rerank_run(queries, run, corpus, self.depth)
        return {"name": out.name, "rankings": {q: [list(r.doc_ids), list(r.scores)] for q, r in out.rankings.items()}}


class ShardedReranker:
    """One rerank stage spread over an executor's workers in query shards; gathers one Run in query order.

    Finished shards are kept in a `ShardStore` keyed by the stage, its options, the queries, the candidates and
    the corpus, so a rerun (or a driver restarted after a crash) skips them.
    """

    def __init__(self, stage: StageSpec, above: str, options: dict | None, executor, max_shard: int = 64):
        self.stage, self.above, self.options, self.executor = stage, above, dict(options or {}), executor
        self.max_shard = max_shard
        self.name = stage.reranker if stage.alpha is None else f"{stage.reranker}~{stage.alpha}"

    def _shards(self, query_list, run, corpus: Corpus, depth: int):
        """Query shards, each with its candidates' rankings and documents; built one at a time, on demand."""
        size = max(1, min(self.max_shard, -(-len(query_list) // (4 * max(1, self.executor.workers)))))
        parts = chunks(query_list, size)

        def make(index: int) -> tuple:
            part = parts[index]
            rankings = {q.id: run[q.id] if q.id in run else Ranking() for q in part}
            wanted = {d.id for q in part for d in candidates(run, q.id, corpus, depth)}
            heads = {q: (r.doc_ids, r.scores) for q, r in rankings.items()}
            return list(part), heads, run.name, corpus.view(wanted)

        return LazyShards(len(parts), make)

    def _store(self, query_list, run, corpus: Corpus, depth: int):

        digest = hashlib.sha256()
        for query in query_list:
            ranking = run.rankings.get(query.id)
            head = [] if ranking is None else [list(ranking.doc_ids), list(ranking.scores)]
            digest.update(json.dumps([query.id, query.text, head]).encode())
        spec = {
            "stage": [self.stage.reranker, depth, self.stage.alpha, self.above],
            "options": self.options,
            "queries": digest.hexdigest(),
            "corpus": corpus.fingerprint,
            "max_shard": self.max_shard,
            "workers": self.executor.workers,
        }
        return ShardStore.for_job("rerank", spec)

    def rerank_run(self, queries, run, corpus: Corpus, depth: int = DEFAULT_RERANK_DEPTH):
        """The run with each query's top `depth` candidates reranked on the executor's workers, in query order; the same
        run the stage gives in process."""
        query_list = as_query_list(queries)
        stage = StageSpec(self.stage.reranker, depth, self.stage.alpha)
        results = self.executor.map(
            partial(RerankShardWorker, stage, self.above, self.options),
            "rerank_shard",
            self._shards(query_list, run, corpus, depth),
            store=self._store(query_list, run, corpus, depth),
            desc=f"rerank {len(query_list):,} queries with {self.stage.reranker}",
        )
        rankings = {
            q: Ranking(tuple(ids), tuple(scores)) for part in results for q, (ids, scores) in part["rankings"].items()
        }
        name = results[0]["name"] if results else f"{run.name}>>{self.name}"
        return Run(MappingProxyType({q.id: rankings[q.id] for q in query_list}), name)


PIPELINE_PLUGINS = "routerank.pipelines"
WRAPPED = re.compile(r"^\s*([A-Za-z_][\w-]*)\((.*)\)\s*$", re.DOTALL)


def pipeline_plugins() -> dict[str, EntryPoint]:
    """Whole-pipeline wrappers that layers above the pipeline register under the `routerank.pipelines` entry
    point group (`understand(...)` from `routerank.understand`): name -> entry point of a
    `build(arguments, corpus, **build_options)` callable."""
    return {ep.name: ep for ep in entry_points(group=PIPELINE_PLUGINS)}


def _wrapper(spec: str) -> tuple[EntryPoint, str] | None:
    """The registered wrapper a spec is, `name(arguments)` around a whole pipeline, with its arguments; None for
    any other spec. Fusions and `hyde` are first stages, never wrappers."""
    match = WRAPPED.match(spec)
    if not match or match.group(1) in (*FUSIONS, *WRAPPERS):
        return None
    plugin = pipeline_plugins().get(match.group(1))
    return (plugin, match.group(2)) if plugin is not None else None


def build(
    spec: str,
    corpus: Corpus,
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    progress: bool = False,
    reranker_options: dict | None = None,
    ray=None,
    documents: DocumentMap | None = None,
):
    """A retriever (or a Pipeline, if `spec` has `>>` stages) for `spec`, indexed on `corpus`. A spec wrapped in a
    registered pipeline plugin, `understand(bm25>>ce:starter@20,aggregate=round-robin)`, is built by the plugin.

    Leaf indexes come from (and go to) the cache. `ray` (True, an address or `RayOptions`) runs dense encoding
    and every rerank stage in shards on Ray; None keeps everything in this process. `documents`: which passages
    of `corpus` form each document (`routerank.data.documents.load_documents`), for `docs:` specs.
    """
    wrapped = _wrapper(spec)
    if wrapped is not None:
        plugin, arguments = wrapped
        options = {"cache": cache, "cache_dir": cache_dir, "rebuild": rebuild, "progress": progress}
        return plugin.load()(
            arguments, corpus, reranker_options=reranker_options, ray=ray, documents=documents, **options
        )
    executor = None
    if ray is not None and ray is not False:
        executor = executor_for(ray, progress)
    first, stages = split_stages(spec)
    retriever = _ready(make_retriever(first, progress, documents), corpus, cache, cache_dir, rebuild, executor)
    if not stages:
        return retriever
    rerankers = []
    above = canonical(first)
    for stage in stages:
        if executor is None:
            reranker = stage_reranker(stage, above, reranker_options)
        else:
            reranker = ShardedReranker(stage, above, reranker_options, executor)
        rerankers.append((reranker, stage.depth))
        above = f"{above}>>{stage.reranker}@{stage.depth}"
    return Pipeline(retriever, rerankers, corpus)


def build_pool(
    config,
    corpus: Corpus,
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    progress: bool = False,
):
    """Every member of a retriever pool (a `PoolConfig`, or the path of its TOML file) indexed on `corpus`, each
    leaf index from (and to) the cache: a `RetrieverPool` whose `search` gives every member's run."""
    config = config if isinstance(config, PoolConfig) else PoolConfig.read(config)
    members = {m.name: _ready(_member(m, progress), corpus, cache, cache_dir, rebuild) for m in config.members}
    return RetrieverPool(members, config)


def _ready(retriever, corpus: Corpus, cache: bool, cache_dir, rebuild: bool, executor=None):
    children = getattr(retriever, "retrievers", None)
    if children is not None:  # a composite (fusion, rm3, a routed pool): each member comes from the cache
        retriever.retrievers = [_ready(r, corpus, cache, cache_dir, rebuild, executor) for r in children]
        return retriever
    if not cache or not isinstance(retriever, IndexedRetriever):  # a user retriever indexes itself
        if executor is not None and getattr(retriever, "shardable", False):
            retriever.index(corpus, executor=executor)
        else:
            retriever.index(corpus)
        return retriever
    ready = cached_index(retriever, corpus, cache_dir, rebuild, executor)
    if hasattr(retriever, "progress"):
        ready.progress = retriever.progress
    return ready
