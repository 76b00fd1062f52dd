"""Query decomposition: the rules on hand-made and real questions, the LLM output parser (with a fuzz test), the
LLM plumbing through a stand-in generator, the Decomposer's modes, and the exact prompt texts."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerank.data.beir import read_qrels
from routerank.errors import RouterankError
from routerank.generate.templates import cot_answer, get_template
from routerank.understand.decompose import (
    DECOMPOSE_PROMPT,
    Decomposer,
    SubQuery,
    decompose_llm,
    decomposition_generator,
    parse_sub_queries,
    split_rules,
)

DATA = Path(os.environ.get("ROUTERANK_DATA", "/work/shared/datasets"))


def texts(query: str) -> list[str]:
    return [sub.text for sub in split_rules(query)]


def split_queries(name: str, split: str, limit: int | None = None) -> list[str]:
    folder = DATA / name
    if not folder.exists():
        pytest.skip(f"dataset {name} is not under {DATA}")
    by_id = {}
    for line in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        by_id[record["_id"]] = record["text"]
    ids = list(read_qrels(folder / "qrels" / f"{split}.tsv"))
    return [by_id[i] for i in ids[:limit]]


# ------------------------------------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    "query",
    [
        "salt and pepper",
        "What is the effect of salt and pepper on blood pressure?",
        "What was the change in revenue between 2018 and 2019?",
        "What was the change in Revenue between May 2019 and August 2019?",
        "Vitamin D deficiency is associated with Type 2 Diabetes and Obesity.",
        "Who wrote Hamlet?",
        "",
    ],
)
def test_one_intent_stays_one_sub_query_equal_to_the_query(query):
    assert split_rules(query) == [SubQuery(query, (0, len(query)), False, "none")]


def test_whitespace_is_cleaned_in_the_one_sub_query():
    assert split_rules("  Who wrote   Hamlet? ") == [SubQuery("Who wrote Hamlet?", (0, 22), True, "none")]


@pytest.mark.parametrize(
    "query, expected",
    [
        ("Who wrote Hamlet? When was it first staged?", ["Who wrote Hamlet?", "When was it first staged?"]),
        ("Who wrote Hamlet? Also, when was it first staged?", ["Who wrote Hamlet?", "when was it first staged?"]),
        ("how is BM25 scored; what does RM3 add to it", ["how is BM25 scored", "what does RM3 add to it"]),
        ("What is BM25 and how does RM3 work?", ["What is BM25", "how does RM3 work?"]),
    ],
)
def test_two_questions_in_one_split(query, expected):
    subs = split_rules(query)
    assert [s.text for s in subs] == expected
    for sub in subs:
        start, end = sub.span
        assert query[start:end] == sub.text and not sub.rewritten and sub.source == "rules"


def test_or_comparison_keeps_the_frame_per_entity():
    query = "Which battle occurred first, the Battle of Manila or the Battle of Guam?"
    subs = split_rules(query)
    assert [s.text for s in subs] == [
        "Which battle occurred first, the Battle of Manila?",
        "Which battle occurred first, the Battle of Guam?",
    ]
    assert [query[a:b] for a, b in (s.span for s in subs)] == ["the Battle of Manila", "the Battle of Guam"]
    assert all(s.rewritten and s.source == "rules" for s in subs)


def test_both_and_pairs_one_sub_query_per_entity():
    assert texts("What pursuit did both Gevork Minaskanian and George Stambolian have in common?") == [
        "What pursuit did Gevork Minaskanian have in common?",
        "What pursuit did George Stambolian have in common?",
    ]


@pytest.mark.parametrize(
    "query, entities",
    [
        ("who is younger Ulrich Walter or  Luca Parmitano?", ["Ulrich Walter", "Luca Parmitano"]),
        ("Were Thomas H. Ince and Joseph McGrath of the same nationality?", ["Thomas H. Ince", "Joseph McGrath"]),
        (
            '"A Summer in the Cage" and "American Hardcore" are both what kind of film?',
            ['"A Summer in the Cage"', '"American Hardcore"'],
        ),
        ("Which film is newer, The Apple Dumpling Gang or Heavyweights?", ["The Apple Dumpling Gang", "Heavyweights"]),
        (
            "What type of structure does 277 Park Avenue and 126 Madison Avenue have in common?",
            ["277 Park Avenue", "126 Madison Avenue"],
        ),
    ],
)
def test_entity_spans(query, entities):
    assert [query[a:b] for a, b in (s.span for s in split_rules(query))] == entities


def test_rules_split_half_of_hotpotqa_train_into_two():
    questions = split_queries("hotpotqa-500", "train")
    assert len(questions) == 100
    splits = [split_rules(q) for q in questions]
    assert sum(len(s) == 2 for s in splits) >= 45  # measured: 50 of 100
    assert all(len(s) <= 2 for s in splits)
    for question, subs in zip(questions, splits, strict=True):
        for sub in subs:
            assert sub.text and sub.span is not None and 0 <= sub.span[0] < sub.span[1] <= len(question)


def test_rules_keep_tatqa_and_scifact_test_queries_whole():
    queries = split_queries("tatqa", "test", 100) + split_queries("scifact", "test", 100)
    kept = sum(len(split_rules(q)) == 1 for q in queries)
    assert kept / len(queries) >= 0.97  # measured: 200 of 200


# ------------------------------------------------------------------------------------------------------ parser

ORIGINAL = "Who designed the Eiffel Tower and when was the Statue of Liberty built?"
TWO = ["Who designed the Eiffel Tower?", "When was the Statue of Liberty built?"]


@pytest.mark.parametrize(
    "output",
    [
        "Who designed the Eiffel Tower?\nWhen was the Statue of Liberty built?",
        "1. Who designed the Eiffel Tower?\n2. When was the Statue of Liberty built?",
        "1) Who designed the Eiffel Tower?\n2) When was the Statue of Liberty built?",
        "(a) Who designed the Eiffel Tower?\n(b) When was the Statue of Liberty built?",
        "- Who designed the Eiffel Tower?\n* When was the Statue of Liberty built?",
        "• Who designed the Eiffel Tower?\n\n• When was the Statue of Liberty built?",
        "Sub-questions:\nWho designed the Eiffel Tower?\n  who designed the  eiffel tower?\n"
        "When was the Statue of Liberty built?",
        f"Question: {ORIGINAL}\nSub-questions:\n1. Who designed the Eiffel Tower?\n"
        "2. When was the Statue of Liberty built?",
        '"Who designed the Eiffel Tower?"\n---\n"When was the Statue of Liberty built?"<|im_end|>',
        "Who designed the Eiffel Tower?\nWhen was the Statue of Liberty built?\n"
        "Question: What is the capital of Peru?\nLima?",
        f"{ORIGINAL}\nWho designed the Eiffel Tower?\nWhen was the Statue of Liberty built?",
    ],
)
def test_parser_reads_messy_outputs(output):
    assert parse_sub_queries(output, ORIGINAL) == TWO


@pytest.mark.parametrize("output", ["", "   \n\n", "...\n???\n- -", "Sub-questions:", "<|im_end|>"])
def test_parser_falls_back_to_the_original(output):
    assert parse_sub_queries(output, ORIGINAL) == [ORIGINAL]


def test_parser_caps_runaway_output():
    output = "\n".join(f"{i}. question number {i} " + "word " * 200 for i in range(50))
    items = parse_sub_queries(output, ORIGINAL, max_items=3, max_chars=40)
    assert len(items) == 3 and all(len(item) <= 40 for item in items)
    assert items[0].startswith("question number 0")


ANSWER_LINES = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["Question:", "Sub-questions:", "1.", "-", "•", "(a)", "<|im_end|>", "???", ORIGINAL]),
    st.builds(lambda n, t: f"{n}. {t}", st.integers(0, 999), st.text(max_size=60)),
)


def check_parse(output: str, original: str, max_items: int, max_chars: int) -> None:
    items = parse_sub_queries(output, original, max_items, max_chars)
    assert 1 <= len(items) <= max_items
    assert all(isinstance(item, str) and item.strip() and len(item) <= max_chars for item in items)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parser_fuzz_text_never_raises(output):
    check_parse(output, ORIGINAL, 4, 300)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(ANSWER_LINES, max_size=30).map("\n".join),
    st.text(min_size=1).filter(str.strip),
    st.integers(1, 6),
    st.integers(1, 300),
)
def test_parser_fuzz_structured_outputs(output, original, max_items, max_chars):
    check_parse(output, original, max_items, max_chars)


# --------------------------------------------------------------------------------------------------------- LLM


@dataclass(frozen=True)
class Said:
    raw: str


class ScriptedGenerator:
    """Stands in for `routerank.generate.Generator`: answers every query with one fixed output, and counts."""

    def __init__(self, output: str):
        self.output, self.calls, self.seen = output, 0, []

    def generate(self, queries, contexts=None):
        self.calls += 1
        self.seen.extend(q.text for q in queries)
        return [Said(self.output) for _ in queries]


def test_decompose_llm_reads_the_generators_output():
    generator = ScriptedGenerator("1. Who designed the Eiffel Tower?\n2. When was the Statue of Liberty built?")
    subs = decompose_llm(ORIGINAL, generator)
    assert generator.seen == [ORIGINAL]
    assert [s.text for s in subs] == TWO
    assert all(s.source == "llm" and s.span is None and s.rewritten for s in subs)


def test_decompose_llm_gives_the_span_of_a_verbatim_sub_question():
    query = "Who wrote Hamlet? When was it first staged?"
    subs = decompose_llm(query, ScriptedGenerator("Who wrote Hamlet?\nWhen was it first staged?"))
    assert [s.span for s in subs] == [(0, 17), (18, 43)] and not any(s.rewritten for s in subs)


@pytest.mark.parametrize("output", ["What is the capital city of France?", "", "Paris"])
def test_decompose_llm_keeps_a_one_intent_query_whole(output):
    query = "What is the capital of France?"
    assert decompose_llm(query, ScriptedGenerator(output)) == [SubQuery(query, (0, 30), False, "none")]


def test_decompose_llm_refuses_an_answer_generator():
    class Answering(ScriptedGenerator):
        template = get_template("plain")

    with pytest.raises(RouterankError, match="decomposition_generator"):
        decompose_llm(ORIGINAL, Answering(""))


def test_decomposer_modes_and_llm_calls():
    two = "Who wrote Hamlet? When was it first staged?"
    one = "What is the capital of France?"
    generator = ScriptedGenerator("What is the capital of France?")
    auto = Decomposer("auto", generator)
    assert auto.understand(two).llm_calls == 0 and len(auto.understand(two).sub_queries) == 2
    understood = auto.understand(one)
    assert understood.llm_calls == 1 and understood.sub_queries == (SubQuery(one, (0, 30), False, "none"),)
    assert generator.calls == 1
    assert Decomposer("llm", generator).understand(two).llm_calls == 1
    assert Decomposer("rules").understand(two).split
    off = Decomposer("off").understand(two)
    assert not off.split and off.sub_queries[0].text == two and off.llm_calls == 0


def test_decomposer_refuses_bad_settings():
    with pytest.raises(RouterankError, match="unknown decomposition mode"):
        Decomposer("magic")
    with pytest.raises(RouterankError, match="needs an LLM generator"):
        Decomposer("auto")


def test_decompose_prompt_exact_text():
    assert DECOMPOSE_PROMPT.render("Q?") == (
        "<|im_start|>system\n"
        "Split the question into the independent sub-questions that must be answered to answer it. "
        "Write one sub-question per line, with no numbering. "
        "If the question asks only one thing, write it back unchanged on one line.<|im_end|>\n"
        "<|im_start|>user\nQuestion: Who designed the Eiffel Tower and when was the Statue of Liberty built?"
        "<|im_end|>\n<|im_start|>assistant\n"
        "Who designed the Eiffel Tower?\nWhen was the Statue of Liberty built?<|im_end|>\n"
        "<|im_start|>user\nQuestion: What is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        "What is the capital of France?<|im_end|>\n"
        "<|im_start|>user\nQuestion: Q?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert get_template("decompose") is DECOMPOSE_PROMPT


@pytest.mark.slow
def test_smollm2_decomposes_within_the_contract(tmp_path):
    generator = decomposition_generator("smollm2", cache_dir=tmp_path)
    decomposer = Decomposer("llm", generator)
    for query in ("What is the capital of France?", ORIGINAL):
        understood = decomposer.understand(query)
        assert understood.llm_calls == 1 and 1 <= len(understood.sub_queries) <= 4
        assert all(s.text.strip() and len(s.text) <= 300 for s in understood.sub_queries)
    assert decomposer.understand(ORIGINAL) == understood  # the second time comes from the generation cache
    assert generator.model_calls == 2


# ---------------------------------------------------------------------------------------------- chain of thought


def test_cot_template_exact_text():
    cot = get_template("cot")
    assert cot.render("Who won?", ["Denver won."]) == (
        "Answer each question from the context. First reason step by step, then give the short answer on a last "
        'line that starts with "Answer:".\n\n'
        "Context:\nThe Eiffel Tower was completed in 1889 for the World's Fair in Paris. It was designed by the "
        "engineering firm of Gustave Eiffel.\nQuestion: When was the Eiffel Tower completed?\n"
        "Reasoning: The context says the tower was completed in 1889 for the World's Fair.\nAnswer: 1889\n\n"
        "Context:\nRegular exercise lowered resting blood pressure in all three trial groups compared with "
        "controls.\nQuestion: Does regular exercise lower blood pressure?\n"
        "Reasoning: Exercise lowered resting blood pressure in every trial group, so it does.\nAnswer: yes\n\n"
        "Context:\nDenver won.\nQuestion: Who won?\nReasoning:"
    )
    assert cot.render("Who won?") == (
        "Answer each question. First reason step by step, then give the short answer on a last line that starts "
        'with "Answer:".\n\n'
        "Question: Is the Sun a planet?\nReasoning: The Sun is a star, and planets orbit stars.\nAnswer: no\n\n"
        "Question: Who wrote Hamlet?\nReasoning: Hamlet is a tragedy by the English playwright William "
        "Shakespeare.\nAnswer: William Shakespeare\n\n"
        "Question: Who won?\nReasoning:"
    )
    assert get_template("plain").name == "plain"  # the default templates are untouched


@pytest.mark.parametrize(
    "output, answer",
    [
        (" Denver scored more.\nAnswer: Denver", "Denver"),
        ("First, answer: maybe Carolina.\nBut the score says otherwise.\nANSWER:  Denver  \n\nQuestion: x", "Denver"),
        ("Denver scored more.\nSo the winner is Denver\n\n", "So the winner is Denver"),
        ("Answer: Denver\nAnswer: Carolina", "Carolina"),
        ("", ""),
        ("Answer:", ""),
    ],
)
def test_cot_answer_takes_the_last_marker(output, answer):
    assert cot_answer(output) == answer


@pytest.mark.parametrize(
    ("query", "parts"),
    [
        ("Vitamin D lowers cancer risk. In addition, what was the revenue in 2019?", 2),
        ("Statins reduce mortality - and separately, who wrote the novel War and Peace?", 2),
        ("Two questions: does aspirin prevent strokes? Leases are paid monthly by the tenant", 2),
        ("Aspirin prevents strokes. Also: is the contract void if the seller is a minor?", 2),
        ("The seller delivered the goods. The buyer refused to pay for them later.", 1),
        ("A contract is void. It was signed by a minor in 2019.", 1),
    ],
)
def test_sentences_split_only_at_a_connective_or_a_new_question(query, parts):
    assert len(split_rules(query)) == parts
