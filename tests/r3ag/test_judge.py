"""The R3AG LLM judge: its prompts (exact text), its list-quality formula by hand, and a tiny model's judgements."""

from __future__ import annotations

import numpy as np
import pytest

from routerank.data.types import Document
from routerank.errors import RouterankError
from routerank.r3ag.judge import INSTRUCTIONS, QUESTION_TEMPLATE, REDUNDANCY_TEMPLATE, LLMJudge, list_quality


def test_judge_prompts_exact_text():
    relevance = QUESTION_TEMPLATE.render("who wrote Hamlet", "Hamlet is a play.", INSTRUCTIONS["relevance"])
    assert relevance == (
        "<|im_start|>system\n"
        'Judge the Document against the Instruct, given the Question. Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n"
        "<Instruct>: Is the Document relevant to the Question?\n"
        "<Question>: who wrote Hamlet\n"
        "<Document>: Hamlet is a play.<|im_end|>\n<|im_start|>assistant\n"
    )
    coverage = QUESTION_TEMPLATE.render("who wrote Hamlet", "Hamlet is a play.", INSTRUCTIONS["coverage"])
    assert "<Instruct>: Does the Document contain the information needed to answer the Question?\n" in coverage
    redundancy = REDUNDANCY_TEMPLATE.render("A play. | A poem.", "Hamlet is a play.", INSTRUCTIONS["redundancy"])
    assert redundancy == (
        "<|im_start|>system\n"
        "Judge the Document against the Instruct, given the Earlier documents. "
        'Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n"
        "<Instruct>: Does the Document only repeat information that the Earlier documents already give?\n"
        "<Earlier documents>: A play. | A poem.\n"
        "<Document>: Hamlet is a play.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_list_quality_by_hand():
    # slot 1: (0.8 + 0.6) / 2 * 1 = 0.7; slot 2: (1.0 + 0.5) / 2 * (1 - 0.5) = 0.375; slot 3 missing: 0
    assert list_quality([0.8, 1.0], [0.6, 0.5], [0.0, 0.5], k=3) == pytest.approx((0.7 + 0.375) / 3)
    assert list_quality([], [], [], k=3) == 0.0
    assert list_quality([1.0], [1.0], [0.0], k=1) == 1.0
    with pytest.raises(RouterankError):
        list_quality([0.5, 0.5], [0.5], [0.0, 0.0], k=3)
    with pytest.raises(RouterankError):
        list_quality([0.5, 0.5], [0.5, 0.5], [0.0, 0.0], k=1)


@pytest.fixture(scope="module")
def judge():
    from routerank.models.llm import tiny_llm

    return LLMJudge.from_model(*tiny_llm(seed=1), progress=False)


def test_a_tiny_model_judges_each_slot(judge):
    docs = [Document("a", "Paris is the capital of France."), Document("b", "Paris is in France.")]
    one, empty, single = judge.judge(["capital of France", "x", "capital of France"], [docs, [], docs[:1]], k=3)
    assert len(one.relevance) == len(one.coverage) == len(one.redundancy) == 2
    assert one.redundancy[0] == 0.0 and 0 < one.redundancy[1] < 1
    assert all(0 < p < 1 for p in (*one.relevance, *one.coverage))
    assert one.quality == pytest.approx(list_quality(one.relevance, one.coverage, one.redundancy, 3))
    assert empty.quality == 0.0 and empty.relevance == ()
    # the same (question, document) prompt gets the same probability wherever it appears
    assert single.relevance[0] == pytest.approx(one.relevance[0])
    assert single.coverage[0] == pytest.approx(one.coverage[0])
    # relevance and coverage are different questions, so the model answers them differently
    assert not np.allclose(one.relevance, one.coverage)


def test_the_judge_refuses_bad_input(judge):
    docs = [Document("a", "x"), Document("b", "y")]
    with pytest.raises(RouterankError, match="more than k"):
        judge.judge(["q"], [docs], k=1)
    with pytest.raises(RouterankError, match="questions"):
        judge.judge(["q", "r"], [docs], k=2)
