from __future__ import annotations

import pytest

from routerank.data.types import Ranking, Run
from routerank.errors import RouterankError
from routerank.generate import Generator, QARun, run_qa
from routerank.generate.qa_run import qa_contexts
from tests.conftest import shared_dataset


@pytest.fixture(scope="module")
def squad():
    from routerank.data.registry import load_dataset

    return load_dataset(str(shared_dataset("squad-dev")), splits=["test"])


@pytest.fixture(scope="module")
def generator(tiny):
    return Generator("tiny", loaded=tiny, max_new_tokens=2, cache=False, progress=False)


def _fixed_run(squad, queries, k: int = 3) -> Run:
    """A precomputed run whose top k for each query are arbitrary corpus documents, not what BM25 would pick."""
    doc_ids = list(squad.corpus)
    rankings = {
        q.id: Ranking(
            tuple(doc_ids[(i * 7 + j) % len(doc_ids)] for j in range(k)), tuple(float(k - j) for j in range(k))
        )
        for i, q in enumerate(queries)
    }
    return Run(rankings, "fixed")


def test_a_precomputed_run_gives_each_query_its_top_k(squad, generator):
    run = _fixed_run(squad, squad.split_queries("test"))
    result = run_qa(squad, context="retrieved", retriever=run, k=2, sample=4, generator=generator, progress=False)
    assert isinstance(result, QARun) and result.scores.n == 4 and result.k == 2
    assert all(a.context.used == run[a.query_id].doc_ids[:2] for a in result.answers)
    assert result.label == "fixed top 2" and result.summary()["pipeline"] == "fixed"
    named = run_qa(squad, retriever=run, pipeline="my-run", k=1, sample=2, seed=3, generator=generator)
    assert named.label == "my-run top 1" and named.settings["sample"] == 2 and named.scores.n == 2


def test_a_run_that_misses_an_asked_query_is_refused(squad):
    asked = squad.split_queries("test")[:3]
    partial = _fixed_run(squad, asked[:2])
    with pytest.raises(RouterankError, match="ranks nothing for 1 of 3 queries"):
        qa_contexts(squad, asked, "test", "retrieved", 2, partial)


def test_a_retriever_or_a_builder_is_searched_only_when_its_documents_are_needed(squad):
    asked = squad.split_queries("test")[:2]
    run = _fixed_run(squad, asked)

    class Searcher:
        name = "stub"

        def __init__(self):
            self.calls: list[tuple[list[str], int]] = []

        def search(self, queries, k):
            self.calls.append(([q.id for q in queries], k))
            return run

    searcher = Searcher()
    contexts = qa_contexts(squad, asked, "test", "retrieved", 2, searcher)
    assert searcher.calls == [([q.id for q in asked], 2)]
    assert [[d.id for d in docs] for docs in contexts] == [list(run[q.id].doc_ids[:2]) for q in asked]
    built = []

    def builder(corpus):
        built.append(corpus)
        return searcher

    assert qa_contexts(squad, asked, "test", "gold", 1, builder)[0][0].id in squad.split_qrels("test")[asked[0].id]
    assert qa_contexts(squad, asked, "test", "retrieved", 0, builder) == [[], []]
    assert built == []
    qa_contexts(squad, asked, "test", "retrieved", 1, builder)
    assert built == [squad.corpus]


def test_a_retrieved_context_without_a_retriever_is_refused_before_the_dataset_loads(tmp_path):
    with pytest.raises(RouterankError, match="needs a retriever"):
        run_qa(str(tmp_path / "no-such-dataset"), context="retrieved", k=3)
    with pytest.raises(RouterankError, match="unknown context 'oracle'"):
        run_qa(str(tmp_path / "no-such-dataset"), context="oracle")
