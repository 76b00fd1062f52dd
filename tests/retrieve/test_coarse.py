"""Coarse to fine: documents first, then the passages of the top documents ranked by any fine stage."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pytest

from routerank.data.documents import DocumentMap
from routerank.data.types import Corpus, Document, Query, Ranking, Run
from routerank.errors import RouterankError
from routerank.rerank.passage_select import BM25PassageSelector, SelectorFineStage
from routerank.retrieve.coarse import CoarseToFine, VectorFine

PASSAGES = Corpus(
    [
        Document("t1", "Revenue | 2019 | 2018\nTotal | 10 | 8"),
        Document("p1", "Revenue grew because of new contracts."),
        Document("p2", "The board met twice."),
        Document("t2", "Costs | 2019\nTotal | 4"),
        Document("p3", "Costs fell as staff left."),
        Document("p4", "An unrelated remark."),
    ]
)
MAP = DocumentMap(
    parts=MappingProxyType({"d1": ("t1", "p1", "p2"), "d2": ("t2", "p3"), "d3": ("p4",)}),
    kinds=MappingProxyType({"t1": "table", "p1": "text", "p2": "text", "t2": "table", "p3": "text", "p4": "text"}),
)


class FixedDocuments:
    """A coarse stage with a fixed document order per query."""

    name = "fixed"

    def __init__(self, order: dict[str, list[str]]):
        self.order = order

    def search(self, queries, k: int = 100) -> Run:
        rankings = {
            q.id: Ranking(tuple(self.order[q.id][:k]), tuple(-float(i) for i in range(len(self.order[q.id][:k]))))
            for q in queries
        }
        return Run(MappingProxyType(rankings), self.name)


class WordOverlap:
    """A fine stage that counts query words in the passage, and records what it was asked to score."""

    name = "overlap"

    def __init__(self):
        self.seen: dict[str, list[str]] = {}

    def rerank_run(self, queries, run, corpus, depth):
        out = {}
        for query in queries:
            ids = list(run[query.id].doc_ids[:depth])
            self.seen[query.id] = ids
            words = set(query.text.lower().split())
            scored = sorted(ids, key=lambda p: -len(words & set(corpus[p].text.lower().replace(".", "").split())))
            out[query.id] = Ranking(tuple(scored), tuple(float(len(scored) - i) for i in range(len(scored))))
        return Run(MappingProxyType(out), f"{run.name}>>{self.name}")


class StoredVectors:
    def __init__(self, scores: dict[str, float]):
        self.scores = scores

    def passage_scores(self, query_text: str, passage_ids: list[str]) -> np.ndarray:
        return np.array([self.scores[p] for p in passage_ids])


QUERIES = [Query("q1", "revenue grew because of what"), Query("q2", "why costs fell")]
COARSE = FixedDocuments({"q1": ["d1", "d2", "d3"], "q2": ["d2", "d3", "d1"]})


def test_the_fine_stage_sees_exactly_the_passages_of_the_top_documents():
    fine = WordOverlap()
    system = CoarseToFine(COARSE, MAP, PASSAGES, fine=fine, depth=2)
    run = system.search(QUERIES, k=10)
    assert fine.seen == {"q1": ["t1", "p1", "p2", "t2", "p3"], "q2": ["t2", "p3", "p4"]}
    assert system.last_scored == {"q1": 5, "q2": 3}
    assert run["q1"].doc_ids[0] == "p1" and run["q2"].doc_ids[0] == "p3"
    assert [system.document_of(p) for p in run["q1"].doc_ids[:2]] == ["d1", "d1"]
    assert system.last_documents["q1"].doc_ids == ("d1", "d2")


def test_without_a_fine_stage_passages_keep_document_then_position_order():
    run = CoarseToFine(COARSE, MAP, PASSAGES, depth=2).search(QUERIES, k=4)
    assert run["q1"].doc_ids == ("t1", "p1", "p2", "t2")
    assert run["q2"].doc_ids == ("t2", "p3", "p4")


def test_vector_fine_orders_candidates_by_stored_passage_scores():
    vectors = StoredVectors({"t1": 0.1, "p1": 0.9, "p2": 0.3, "t2": 0.5, "p3": 0.7, "p4": 0.0})
    run = CoarseToFine(COARSE, MAP, PASSAGES, fine=VectorFine(vectors), depth=1).search(QUERIES, k=10)
    assert run["q1"].doc_ids == ("p1", "p2", "t1")
    assert run["q1"].scores == pytest.approx((0.9, 0.3, 0.1))
    assert run["q2"].doc_ids == ("p3", "t2")


def test_localisation_ranks_only_the_gold_documents_passages():
    system = CoarseToFine(COARSE, MAP, PASSAGES, fine=WordOverlap(), depth=1)
    run = system.locate(QUERIES, {"q1": "d1", "q2": "d2"})
    assert run["q1"].doc_ids[0] == "p1" and set(run["q1"].doc_ids) == {"t1", "p1", "p2"}
    assert run["q2"].doc_ids == ("p3", "t2")
    order = CoarseToFine(COARSE, MAP, PASSAGES, depth=1).locate(QUERIES, {"q2": "d2"})
    assert list(order) == ["q2"] and order["q2"].doc_ids == ("t2", "p3")


def test_a_depth_below_one_is_refused():
    with pytest.raises(RouterankError, match="depth must be 1 or more"):
        CoarseToFine(COARSE, MAP, PASSAGES, depth=0)


def test_an_idcm_selector_scores_each_documents_passages_with_its_own_statistics():
    fine = SelectorFineStage(BM25PassageSelector(), MAP)
    run = CoarseToFine(COARSE, MAP, PASSAGES, fine=fine, depth=2).search(QUERIES, k=10)
    assert fine.name == "idcm-selector:bm25"
    assert run["q1"].doc_ids[0] == "p1" and set(run["q1"].doc_ids) == {"t1", "p1", "p2", "t2", "p3"}
    assert run["q2"].doc_ids[0] == "p3"
    located = CoarseToFine(COARSE, MAP, PASSAGES, fine=fine).locate(QUERIES, {"q1": "d1"})
    assert located["q1"].doc_ids[0] == "p1" and located["q1"].scores[-1] == 0.0  # p2 shares no query word
