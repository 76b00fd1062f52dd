from __future__ import annotations

from types import MappingProxyType

import pytest

from routerank.data.types import Corpus, Document, Qrels, Query, Ranking, Run
from routerank.errors import RouterankError
from routerank.generate.context import as_documents, fit_context, gold_contexts, retrieved_contexts

DOCS = [
    Document("a", "alpha " * 10),
    Document("b", "beta " * 40),
    Document("c", "gamma " * 5),
]


def lengths(tokenizer, docs):
    return [len(tokenizer(d.full_text, add_special_tokens=False)["input_ids"]) for d in docs]


def test_everything_fits_whole(tiny):
    _, tokenizer = tiny
    fit = fit_context(DOCS, tokenizer, budget=1000)
    assert fit.used == ("a", "b", "c") and fit.truncated == () and fit.dropped == ()
    assert fit.texts == tuple(d.full_text for d in DOCS)
    assert fit.tokens == sum(lengths(tokenizer, DOCS))


def test_the_budget_cuts_one_document_and_drops_the_rest_in_rank_order(tiny):
    _, tokenizer = tiny
    first = lengths(tokenizer, DOCS)[0]
    fit = fit_context(DOCS, tokenizer, budget=first + 20, min_doc_tokens=8)
    assert fit.used == ("a", "b") and fit.truncated == ("b",) and fit.dropped == ("c",)  # c would fit, but ranks lower
    assert fit.tokens == first + 20
    assert len(tokenizer(fit.texts[1], add_special_tokens=False)["input_ids"]) <= 20
    assert DOCS[1].full_text.startswith(fit.texts[1])


def test_a_stub_below_min_doc_tokens_is_dropped_but_the_first_document_is_always_kept(tiny):
    _, tokenizer = tiny
    first = lengths(tokenizer, DOCS)[0]
    assert fit_context(DOCS, tokenizer, budget=first + 5, min_doc_tokens=8).dropped == ("b", "c")
    only = fit_context(DOCS[1:], tokenizer, budget=5, min_doc_tokens=8)
    assert only.used == ("b",) and only.truncated == ("b",) and only.tokens == 5
    assert fit_context(DOCS, tokenizer, budget=0).used == ()


def test_plain_strings_become_documents_with_stable_ids():
    docs = as_documents(["some text", "some text", Document("x", "y")])
    assert docs[0].id == docs[1].id != "x" and docs[2].id == "x"


def test_gold_and_retrieved_contexts():
    corpus = Corpus(DOCS)
    queries = [Query("q1", "alpha?"), Query("q2", "beta?")]
    qrels = Qrels(MappingProxyType({"q1": {"c": 1, "a": 2, "b": 0}, "q2": {"b": 1}}))
    gold = gold_contexts(queries, qrels, corpus, k=5)
    assert [[d.id for d in docs] for docs in gold] == [["a", "c"], ["b"]]  # by grade; grade 0 is not gold
    assert [[d.id for d in docs] for docs in gold_contexts(queries, qrels, corpus, k=1)] == [["a"], ["b"]]
    run = Run({"q1": Ranking(("c", "b", "a"), (3.0, 2.0, 1.0))})
    assert [[d.id for d in docs] for docs in retrieved_contexts(queries, run, corpus, k=2)] == [["c", "b"], []]
    assert retrieved_contexts(queries, run, corpus, k=0) == [[], []]


def test_negative_k_is_refused():
    with pytest.raises(RouterankError, match="k must be 0 or more"):
        retrieved_contexts([Query("q", "x")], Run({}), Corpus(DOCS), k=-1)
