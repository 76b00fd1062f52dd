"""Reranker spec strings → rerankers, importing each family only when named.

pointwise:<llm>      yes/no next-token softmax (default llm: smollm2);
                     ProRank: pointwise:<llm>,template=prorank,adapter=<folder> (P("1") against P("0"))
qlm:<llm>            mean log P(query | doc)
ce:<folder>          sentence-transformers CrossEncoder
listwise:<llm>       RankGPT-style sliding window
setwise:<llm>,k=4,method=heapsort|bubblesort,top=10     pick the best of k labelled passages, from logits;
                     Rank-R1: setwise:<llm>,adapter=<folder>[,think=0] (reasons in <think>, answers in <answer>)
pairwise:<llm>,method=allpair|bubblesort,top=10         PRP: A or B, asked in both orders
icr:<llm>            in-context reranking from attention (2 forward passes)
idcm:<selector>,<scorer>   passage cascade for long documents
r2r:<bank-folder>    route each query to a LoRA domain expert, then rerank with it (a plugin, below)

Plugins: a package adds a family by declaring an entry point in the `routerank.rerankers` group, name = the
family, value = "module:Class" (a class with `from_spec(arg, **options)`). routerank's own `r2r` comes this way,
from pyproject.toml: routing sits a layer above reranking, so this module never names it. A plugin cannot replace
a built-in family; one that fails to import is an error naming its package.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import EntryPoint, entry_points

from routerank.errors import SpecError

PLUGIN_GROUP = "routerank.rerankers"

FAMILIES = {
    "pointwise": "routerank.rerank.pointwise:PointwiseLLMReranker",
    "qlm": "routerank.rerank.qlm:QueryLikelihoodReranker",
    "ce": "routerank.rerank.cross_encoder:CrossEncoderReranker",
    "listwise": "routerank.rerank.listwise:ListwiseReranker",
    "setwise": "routerank.rerank.setwise:SetwiseReranker",
    "pairwise": "routerank.rerank.pairwise:PairwiseReranker",
    "icr": "routerank.rerank.icr:ICRReranker",
    "idcm": "routerank.rerank.idcm:IDCMReranker",
}


@functools.cache
def plugins() -> dict[str, EntryPoint]:
    """Families that installed packages declare in the `routerank.rerankers` entry-point group (built-ins win)."""
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name not in FAMILIES}


def families() -> list[str]:
    """Every family a spec may name: the built-ins, then the plugins."""
    return [*FAMILIES, *sorted(plugins())]


def reranker_class(family: str):
    """The reranker class a family names: a built-in, imported on first use, or an installed plugin's. A
    SpecError for an unknown family or a plugin that does not load."""
    if family not in FAMILIES:
        plugin = plugins().get(family)
        if plugin is None:
            raise SpecError(f"unknown reranker {family!r}", fix=f"choose one of {families()}")
        try:
            return plugin.load()
        except (ImportError, AttributeError) as exc:
            package = plugin.dist.name if plugin.dist else "its package"
            raise SpecError(
                f"reranker plugin {family!r} ({plugin.value}, from {package}) does not load: {exc}",
                fix=f"reinstall {package}, or uninstall it to drop the plugin",
            ) from None
    module, attr = FAMILIES[family].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("routerank"):
            raise SpecError(f"reranker family {family!r} is not available in this version") from None
        raise


def make_reranker(spec: str, **options):
    """`family:arg` → a reranker; each family's `from_spec(arg, **options)` reads its own argument."""
    family, _, arg = spec.strip().partition(":")
    cls = reranker_class(family)
    try:
        return cls.from_spec(arg.strip(), **options)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise SpecError(
            f"reranker {family!r} does not take that option: {exc}",
            fix="check the --rerank-opt names against the reranker's parameters",
        ) from None
