from __future__ import annotations

import pytest

from routerank.errors import SpecError
from routerank.generate.templates import TEMPLATES, get_template, template_for

EIFFEL = (
    "[1] The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It was designed by the engineering "
    "firm of Gustave Eiffel."
)
CURIE = (
    "[1] Marie Curie shared the 1903 Nobel Prize in Physics with Pierre Curie and Henri Becquerel for their research "
    "on radioactivity."
)


def test_chatml_open_book_prompt_exact_text():
    text = get_template("chatml").render("Who won?", ["Denver won the game.", "Carolina lost."])
    assert text == (
        "<|im_start|>system\nAnswer each question with a short phrase copied from the context.<|im_end|>\n"
        f"<|im_start|>user\nContext:\n{EIFFEL}\n\nQuestion: When was the Eiffel Tower completed?<|im_end|>\n"
        "<|im_start|>assistant\n1889<|im_end|>\n"
        f"<|im_start|>user\nContext:\n{CURIE}\n\n"
        "Question: Who shared the 1903 Nobel Prize in Physics with Marie Curie?<|im_end|>\n"
        "<|im_start|>assistant\nPierre Curie and Henri Becquerel<|im_end|>\n"
        "<|im_start|>user\nContext:\n[1] Denver won the game.\n[2] Carolina lost.\n\nQuestion: Who won?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_closed_book_prompt_exact_text_has_no_context():
    text = get_template("chatml").render("Who won?", [])
    assert text == (
        "<|im_start|>system\nAnswer each question with a short phrase.<|im_end|>\n"
        "<|im_start|>user\nQuestion: What is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis<|im_end|>\n"
        "<|im_start|>user\nQuestion: Who wrote Hamlet?<|im_end|>\n"
        "<|im_start|>assistant\nWilliam Shakespeare<|im_end|>\n"
        "<|im_start|>user\nQuestion: Who won?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "Context" not in text


def test_plain_prompts_exact_text():
    plain = get_template("plain")
    assert plain.render("Who won?", ["Denver won.", "Carolina lost."]) == (
        "Answer each question with a short phrase copied from the context.\n\n"
        f"Context:\n{EIFFEL[4:]}\nQuestion: When was the Eiffel Tower completed?\nAnswer: 1889\n\n"
        f"Context:\n{CURIE[4:]}\nQuestion: Who shared the 1903 Nobel Prize in Physics with Marie Curie?\n"
        "Answer: Pierre Curie and Henri Becquerel\n\n"
        "Context:\nRegular exercise lowered resting blood pressure in all three trial groups compared with controls.\n"
        "Question: Does regular exercise lower blood pressure?\nAnswer: yes\n\n"
        "Context:\nDenver won.\n\nCarolina lost.\nQuestion: Who won?\nAnswer:"
    )
    assert plain.render("Who won?") == (
        "Answer each question with a short phrase.\n\n"
        "Question: Is the Sun a planet?\nAnswer: no\n\n"
        "Question: What is the capital of France?\nAnswer: Paris\n\n"
        "Question: Who wrote Hamlet?\nAnswer: William Shakespeare\n\n"
        "Question: Who won?\nAnswer:"
    )
    assert plain.version == 3  # v2 numbered its documents and had no yes/no example: answers changed, so did the key


def test_chatml_equals_the_tokenizers_own_chat_template(tiny):
    _, tokenizer = tiny
    template = TEMPLATES["chatml"]
    for docs in ([], ["Denver won the game."]):
        instruction = template.open_instruction if docs else template.closed_instruction
        messages = [{"role": "system", "content": instruction}]
        for example in template.open_examples if docs else template.closed_examples:
            ask = template.ask(example.question, example.documents)
            messages += [
                {"role": "user", "content": ask.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]},
                {"role": "assistant", "content": example.answer},
            ]
        user = template.ask("Who won?", docs).split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
        messages.append({"role": "user", "content": user})
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert template.render("Who won?", docs) == expected


def test_family_is_picked_from_the_tokenizer(tiny):
    class NoChatMarkers:
        def get_vocab(self):
            return {"hello": 0}

    assert template_for(tiny[1]).name == "chatml"
    assert template_for(NoChatMarkers()).name == "plain"


def test_unknown_template():
    with pytest.raises(SpecError, match="chatml"):
        get_template("alpaca")
