"""Training groups for every ranking trainer: one positive against n hard negatives, and the miner that finds them.

A `TrainGroup` is what a loss sees: a query, one judged-relevant document (column 0 of the logit row) and n
documents that should rank below it. A `NegativePool` is what mining produces, once per query: the judged
positives with their grades and the retriever's top candidates with theirs (0 = unjudged). Groups are drawn from
pools afresh each epoch, so a long run sees many negatives per positive, and graded qrels are honoured: a grade-2
positive is trained against the query's grade-1 documents too, never against an equal or better one.

Pools hold document ids and a reference to the corpus, not texts: NFCorpus alone has 110k training judgments.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from routerank.data.types import Corpus, Dataset, Query
from routerank.errors import RouterankError
from routerank.pipeline import build


@dataclass(frozen=True)
class TrainGroup:
    """What a loss sees: a query, the text of one judged-relevant document (column 0 of the logit row) and the
    texts of documents that should rank below it."""

    query_id: str
    query: str
    positive: str
    negatives: tuple[str, ...]

    def pairs(self) -> list[tuple[str, str]]:
        """(query, document) pairs: the positive first, then the negatives in order."""
        return [(self.query, self.positive), *((self.query, doc) for doc in self.negatives)]


@dataclass(frozen=True)
class NegativePool:
    """One query's mining result: its graded positives and the miner's graded candidates, as document ids into
    `corpus`."""

    query_id: str
    query: str
    positives: tuple[tuple[str, int], ...]  # (doc id, grade >= 1), best grade first
    candidates: tuple[tuple[str, int], ...]  # (doc id, grade) in the miner's order; 0 = unjudged or judged 0
    corpus: Corpus

    def negatives_for(self, grade: int, graded: bool = True) -> list[str]:
        """Candidate doc ids that rank below a positive of `grade`: unjudged, judged 0, or (when `graded`) of a
        lower grade. Without `graded`, only documents judged not relevant (grade 0 or unjudged) qualify."""
        return [doc for doc, g in self.candidates if g < (grade if graded else 1)]


def select_queries(
    ds: Dataset, split: str, max_queries: int | None, seed: int, holdout: int = 0
) -> tuple[list[Query], list[Query]]:
    """(training queries, held-out queries) from the split's queries with a relevant document, in file order.

    A seeded shuffle puts `holdout` queries aside first (a dev set drawn from the train split); training then
    takes `max_queries` of the rest, or all of them.
    """
    qrels = ds.split_qrels(split)
    queries = [q for q in ds.split_queries(split) if qrels.relevant(q.id)]
    if len(queries) <= holdout:
        raise RouterankError(
            f"split {split!r} of {ds.name} has {len(queries)} queries with a relevant document, "
            f"too few to hold out {holdout}",
            path=ds.path,
            fix="hold out fewer queries, or train on a split with positive judgments",
        )
    shuffled = random.Random(seed).sample(queries, len(queries))
    held, pool = shuffled[:holdout], shuffled[holdout:]
    train = pool if max_queries is None else pool[:max_queries]
    chosen, aside = {q.id for q in train}, {q.id for q in held}
    return [q for q in queries if q.id in chosen], [q for q in queries if q.id in aside]


def mine_pools(
    ds: Dataset,
    queries: Sequence[Query],
    split: str,
    *,
    depth: int = 30,
    minimum: int = 3,
    miner: str = "hybrid",
    seed: int = 13,
    id_prefix: str = "",
) -> list[NegativePool]:
    """Each query's graded positives and the miner's top `depth` candidates that are not judged relevant.

    Judged-relevant documents in the miner's list stay in `candidates` with their grade (so a better positive
    can use them as negatives); a query whose list holds fewer than `minimum` grade-0 documents is topped up with
    random corpus documents. `id_prefix` keeps query ids apart when several datasets are pooled.
    """
    if not queries:
        return []
    qrels = ds.split_qrels(split)
    most = max(len(qrels.relevant(q.id)) for q in queries)
    run = build(miner, ds.corpus).search(list(queries), depth + most)
    rng = random.Random(seed)
    corpus_ids = ds.corpus.ids
    pools = []
    for query in queries:
        judged = qrels.judgments.get(query.id, {})
        positives = sorted(((d, g) for d, g in judged.items() if g >= 1), key=lambda item: (-item[1], item[0]))
        ranked = run[query.id].doc_ids if query.id in run else ()
        candidates = [(d, judged.get(d, 0)) for d in ranked]
        unjudged = [d for d, g in candidates if g < 1][:depth]
        keep = set(unjudged) | {d for d, g in candidates if g >= 1}
        candidates = [(d, g) for d, g in candidates if d in keep]
        zeros = len(unjudged)
        while zeros < minimum:
            filler = rng.choice(corpus_ids)
            if judged.get(filler, 0) < 1 and all(filler != d for d, _ in candidates):
                candidates.append((filler, 0))
                zeros += 1
        pools.append(NegativePool(f"{id_prefix}{query.id}", query.text, tuple(positives), tuple(candidates), ds.corpus))
    return pools


def sample_groups(
    pools: Sequence[NegativePool], negatives: int, seed: int, positives_per_query: int | None = None
) -> list[TrainGroup]:
    """Groups for one epoch: per query up to `positives_per_query` positives (seeded draw, all if None), each with
    `negatives` documents drawn from those that rank below it. A positive with too few such documents is skipped."""
    rng = random.Random(seed)
    groups = []
    for pool in pools:
        chosen = list(pool.positives)
        if positives_per_query is not None and len(chosen) > positives_per_query:
            chosen = rng.sample(chosen, positives_per_query)
        for doc_id, grade in chosen:
            below = pool.negatives_for(grade)
            if len(below) < negatives:
                continue
            picked = rng.sample(below, negatives)
            groups.append(
                TrainGroup(
                    pool.query_id,
                    pool.query,
                    pool.corpus[doc_id].full_text,
                    tuple(pool.corpus[d].full_text for d in picked),
                )
            )
    return groups


def top_groups(
    pools: Sequence[NegativePool], negatives: int, seed: int, graded: bool = True, skip: int = 0
) -> list[TrainGroup]:
    """Fixed groups (for dev loss and for trainers that keep one draw): each query's best positive (seeded among
    equals) against the top `negatives` documents that rank below it (`graded`: lower-graded relevant documents
    count as below; otherwise only non-relevant ones do), after passing over the first `skip` of them."""
    rng = random.Random(seed)
    groups = []
    for pool in pools:
        if not pool.positives:
            continue
        best = pool.positives[0][1]
        doc_id = rng.choice([d for d, g in pool.positives if g == best])
        below = pool.negatives_for(best, graded)[skip : skip + negatives]
        if len(below) < negatives:
            continue
        groups.append(
            TrainGroup(
                pool.query_id, pool.query, pool.corpus[doc_id].full_text, tuple(pool.corpus[d].full_text for d in below)
            )
        )
    return groups
