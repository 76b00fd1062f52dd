"""LLM denoising and the multi-query baseline on scripted generators: exact prompts, the parsers' guards, word
edits, and the merged runs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from routerank.data.types import Corpus, Document, Query
from routerank.errors import RouterankError
from routerank.retrieve.bm25 import BM25Retriever
from routerank.understand.decompose import Decomposer
from routerank.understand.rewrite import (
    MULTI_QUERY_PROMPT,
    REWRITE_PROMPT,
    LLMRewriter,
    MultiQuery,
    levenshtein,
    parse_rewrite,
    word_edits,
)


@dataclass(frozen=True)
class Said:
    raw: str


class Scripted:
    """Stands in for `routerank.generate.Generator`: one fixed output for every query; counts what it saw."""

    def __init__(self, output: str):
        self.output, self.seen = output, []

    def generate(self, queries, contexts=None):
        self.seen.extend(q.text for q in queries)
        return [Said(self.output) for _ in queries]


def test_the_rewrite_prompt_is_exact():
    assert REWRITE_PROMPT.render("Who wrote Hamlte?") == (
        "<|im_start|>system\nFix the spelling and typing mistakes in the question. Change nothing else. Write only "
        "the corrected question.<|im_end|>\n"
        "<|im_start|>user\nQuestion: Who desinged the Eifel Tower and wehn was it bulit?<|im_end|>\n"
        "<|im_start|>assistant\nWho designed the Eiffel Tower and when was it built?<|im_end|>\n"
        "<|im_start|>user\nQuestion: What is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>user\nQuestion: Who wrote Hamlte?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "Write 3 search queries" in MULTI_QUERY_PROMPT.render("x")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Who wrote Hamlet?", "Who wrote Hamlet?"),
        ('Corrected question: "Who wrote Hamlet?"\nextra', "Who wrote Hamlet?"),
        ("\n\n  Who wrote Hamlet?<|im_end|>", "Who wrote Hamlet?"),
        ("", "Who wrote Hamlte?"),  # nothing written: keep the query
        ("Hamlet was written by William Shakespeare around 1600 in London, England.", "Who wrote Hamlte?"),  # answered
    ],
)
def test_parse_rewrite_keeps_the_query_when_the_output_is_unusable(raw, expected):
    assert parse_rewrite(raw, "Who  wrote Hamlte?") == expected


def test_word_edits_give_spans_of_the_original():
    original = "Who wrote Hamlte in teh year?"
    [first, second] = word_edits(original, "Who wrote Hamlet? in the year?")
    assert (original[first.start : first.end], first.replacement) == ("Hamlte", "Hamlet?")
    assert (second.original, second.replacement, second.distance) == ("teh", "the", 2)
    assert levenshtein("kitten", "sitting") == 3 and word_edits("same words", "same words") == ()


def test_the_rewriter_plugs_into_the_decomposer():
    rewriter = LLMRewriter(Scripted("Who wrote Hamlet and when was it first staged?"))
    understanding = Decomposer("rules", speller=rewriter).understand("Who wrote Hamlte and when was it frist staged?")
    assert understanding.cleaned == "Who wrote Hamlet and when was it first staged?"
    assert [(e.original, e.replacement) for e in understanding.corrections] == [
        ("Hamlte", "Hamlet"),
        ("frist", "first"),
    ]
    assert rewriter.llm_calls == 1
    unchanged = LLMRewriter(Scripted("")).correct("Who wrote Hamlet?")
    assert unchanged.text == "Who wrote Hamlet?" and not unchanged.changed
    with pytest.raises(RouterankError, match="max_growth"):
        LLMRewriter(Scripted(""), max_growth=0.5)


CORPUS = Corpus(
    [
        Document("a1", "vitamin D supplements and fracture risk"),
        Document("a2", "vitamin D and bone density"),
        Document("b1", "broken bones in older adults"),
        Document("b2", "falls and broken bones"),
    ]
)


@pytest.fixture(scope="module")
def bm25():
    retriever = BM25Retriever()
    retriever.index(CORPUS)
    return retriever


def test_multi_query_merges_the_rephrasings(bm25):
    generator = Scripted("1. vitamin D fracture\n2. broken bones older adults\n3. vitamin D fracture")
    multi = MultiQuery(bm25, generator, n=3)
    run = multi.search([Query("q", "does vitamin D prevent fractures")], 4)
    assert multi.last_queries["q"] == ["vitamin D fracture", "broken bones older adults"]  # duplicate dropped
    assert run["q"].doc_ids[:2] == ("a1", "b1")  # round-robin: each rephrasing's best first
    concat = MultiQuery(bm25, generator, n=3, order="concat").search([Query("q", "x")], 4)
    assert concat["q"].doc_ids[:2] == ("a1", "a2")  # the frameworks' union: all of the first rephrasing first
    with_original = MultiQuery(bm25, generator, include_original=True)
    with_original.search([Query("q", "falls")], 4)
    assert with_original.last_queries["q"][0] == "falls" and with_original.llm_calls == 1
    with pytest.raises(RouterankError, match="unknown multi-query order"):
        MultiQuery(bm25, generator, order="rrf")
