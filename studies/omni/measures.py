"""Per-query measures the Omni-RAG study's stages share: both relevant documents in the top k, each intent's hit,
and paired tests."""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from routerank.data.types import Qrels, Run
from routerank.evaluate.significance import paired_test
from routerank.understand.benchmark import IntentPair


def test_pair(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """b against a: delta of the means, paired t-test and randomisation p."""
    result = paired_test(a, b)
    return {"delta": round(result.delta, 4), "p": result.t_pvalue, "p_perm": result.randomization_pvalue}


def both_at(run: Run, qrels: Qrels, k: int) -> dict[str, float]:
    """Per query: 1 when every relevant document is in the top `k`, else 0."""
    return {
        q: float(bool(qrels.relevant(q)) and qrels.relevant(q) <= set(run[q].doc_ids[:k]) if q in run else False)
        for q in qrels
    }


def pair_qrels(pairs: Sequence[IntentPair]) -> Qrels:
    """Each pair's gold: the relevant documents of both intents, grade 1."""
    return Qrels(MappingProxyType({p.id: {d: 1 for i in p.intents for d in i.relevant} for p in pairs}))


def pair_hits(run: Run, pairs: Sequence[IntentPair], k: int = 10) -> tuple[dict[str, float], dict[str, float]]:
    """Per pair: the share of its two intents with a relevant document in the top `k`, and whether both have one."""
    recall, both = {}, {}
    for pair in pairs:
        top = set(run[pair.id].doc_ids[:k]) if pair.id in run else set()
        hits = [bool(top & set(i.relevant)) for i in pair.intents]
        recall[pair.id], both[pair.id] = sum(hits) / 2, float(all(hits))
    return recall, both
