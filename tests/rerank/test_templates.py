from __future__ import annotations

import pytest

from routerank.errors import SpecError
from routerank.rerank.templates import (
    ICR_CALIBRATION_QUERY,
    ICR_TEMPLATE,
    LISTWISE_TEMPLATE,
    QLM_PROMPT,
    get_template,
)


def test_chatml_yes_no_prompt_exact_text():
    text = get_template("chatml").render("is aspirin safe", "Aspirin is safe.", instruction="Find evidence")
    assert text == (
        "<|im_start|>system\n"
        "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
        'Note that the answer can only be "yes" or "no".<|im_end|>\n'
        "<|im_start|>user\n<Instruct>: Find evidence\n<Query>: is aspirin safe\n<Document>: Aspirin is safe."
        "<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen3_adds_the_empty_think_block():
    assert get_template("qwen3").render("q", "d").endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_unknown_template():
    with pytest.raises(SpecError, match="chatml"):
        get_template("alpaca")


def test_setwise_chatml_prompt_exact_text():
    from routerank.rerank.templates import get_choice_template

    text = get_choice_template("setwise", "chatml").render("is aspirin safe", ["Aspirin is safe.", "Cats purr.", "Ok."])
    assert text == (
        "<|im_start|>system\n"
        "You are a search relevance judge. You read a query and passages, and name the most relevant passage."
        "<|im_end|>\n<|im_start|>user\n"
        'Given a query "is aspirin safe", which of the following passages is the most relevant one to the query?\n\n'
        'Passage A: "Aspirin is safe."\n\n'
        'Passage B: "Cats purr."\n\n'
        'Passage C: "Ok."\n\n'
        "Output only the passage label of the most relevant passage: A, B or C.<|im_end|>\n"
        "<|im_start|>assistant\nPassage"
    )


def test_pairwise_chatml_prompt_exact_text():
    from routerank.rerank.templates import get_choice_template

    text = get_choice_template("pairwise", "chatml").render("is aspirin safe", ["Aspirin is safe.", "Cats purr."])
    assert text == (
        "<|im_start|>system\n"
        "You are a search relevance judge. You read a query and passages, and name the most relevant passage."
        "<|im_end|>\n<|im_start|>user\n"
        'Given a query "is aspirin safe", which of the following two passages is more relevant to the query?\n\n'
        'Passage A: "Aspirin is safe."\n\n'
        'Passage B: "Cats purr."\n\n'
        "Output Passage A or Passage B.<|im_end|>\n"
        "<|im_start|>assistant\nPassage"
    )


def test_choice_templates_answer_tokens_qwen3_and_errors():
    from routerank.rerank.templates import get_choice_template

    setwise = get_choice_template("setwise", "chatml")
    assert setwise.answer_tokens(4) == [" A", " B", " C", " D"]
    qwen3 = get_choice_template("pairwise", "qwen3").render("q", ["a", "b"])
    assert qwen3.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nPassage")
    with pytest.raises(SpecError, match="2 to 20 passages"):
        setwise.render("q", ["only one"])
    with pytest.raises(SpecError, match="chatml"):
        get_choice_template("setwise", "alpaca")


def test_listwise_prompt_exact_text():
    assert LISTWISE_TEMPLATE.system == (
        "You rank search results. You answer only with passage identifiers in order of relevance."
    )
    assert LISTWISE_TEMPLATE.render("is aspirin safe", ["Aspirin is safe.", "Cats purr."]) == (
        "Below are 2 passages, each with an identifier in square brackets.\n"
        "Query: is aspirin safe\n\n"
        "[1] Aspirin is safe.\n"
        "[2] Cats purr.\n\n"
        "Order all 2 passages by how relevant they are to the query: is aspirin safe\n"
        "List the most relevant first, every identifier exactly once, in the form [2] > [1]. Write nothing else."
    )


def test_icr_prompt_exact_text():
    assert ICR_TEMPLATE.render("is aspirin safe", ["Aspirin is safe.", "Cats purr."]) == (
        "<|im_start|>user\nHere are some passages:\n"
        "\n[1] Aspirin is safe."
        "\n[2] Cats purr."
        "\n\nFind the information relevant to this query in the passages above.\nQuery: is aspirin safe"
    )
    assert ICR_CALIBRATION_QUERY == "N/A"


def test_query_likelihood_prompt_exact_text():
    assert QLM_PROMPT.format(document="Aspirin is safe.") == (
        "Passage: Aspirin is safe.\nPlease write a question based on this passage.\nQuestion:"
    )
