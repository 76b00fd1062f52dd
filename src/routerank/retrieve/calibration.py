"""Calibration groups for fast backends: train queries with their BM25 candidates, never test.

A static int8 graph is calibrated on these (query, document) pairs, and every backend's parity with torch is
judged on them (`routerank.models.backends`). The default draws a few train queries from each domain set found under
the data root, so the sample covers science, medicine, finance and law as the starter's experts do.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import lru_cache

from routerank.data.registry import dataset_path, load_dataset
from routerank.errors import DatasetNotFoundError, RouterankError
from routerank.models.backends import CalibrationGroup
from routerank.retrieve.bm25 import BM25Retriever

DOMAIN_SETS = ("scifact", "nfcorpus", "tatqa", "coliee-statutes")
SPLIT = "train"


@lru_cache(maxsize=4)  # one process exporting several models or lengths samples and indexes once
def calibration_groups(
    datasets: Sequence[str] = DOMAIN_SETS, queries_per_set: int = 8, depth: int = 12, seed: int = 13
) -> tuple[tuple[CalibrationGroup, ...], str]:
    """`queries_per_set` random train queries of each set in `datasets` that is present, each with its top `depth`
    BM25 documents; returns the groups and a line naming where they came from. Sets that are missing are skipped;
    none at all is an error that says how to point routerank at them."""
    groups, used = [], []
    for name in datasets:
        try:
            dataset_path(name)
        except DatasetNotFoundError:
            continue
        dataset = load_dataset(name, splits=[SPLIT])
        if SPLIT not in dataset.qrels:
            continue
        queries = dataset.split_queries(SPLIT)
        chosen = random.Random(seed).sample(queries, min(queries_per_set, len(queries)))
        retriever = BM25Retriever()
        retriever.index(dataset.corpus)
        run = retriever.search(chosen, k=depth)
        for query in chosen:
            docs = tuple(dataset.corpus[doc_id].full_text for doc_id in run[query.id].doc_ids)
            if len(docs) >= 2:
                groups.append(CalibrationGroup(query.text, docs))
        used.append(name)
    if not groups:
        raise RouterankError(
            f"no calibration data: none of {', '.join(datasets)} with a train split was found",
            fix="set ROUTERANK_DATA to a folder of BEIR datasets, or use backend=torch",
        )
    source = f"{SPLIT} split of {', '.join(used)}: {queries_per_set} queries each, BM25 top {depth}, seed {seed}"
    return tuple(groups), source
