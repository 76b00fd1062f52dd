from __future__ import annotations

import pytest

from routerank.errors import SpecError
from routerank.rerank.templates import get_template


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
