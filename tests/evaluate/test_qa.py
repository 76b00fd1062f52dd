from __future__ import annotations

import pytest

from routerank.evaluate import exact_match, normalize_answer, token_f1
from routerank.evaluate.qa import answer_in_text


def test_normalisation_follows_squad():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"


def test_exact_match_takes_the_best_gold_answer():
    assert exact_match("the Eiffel tower", ["Eiffel Tower", "Paris"]) == 1.0
    assert exact_match("tower", ["Eiffel Tower"]) == 0.0


def test_token_f1():
    assert token_f1("Eiffel tower in Paris", ["the Eiffel Tower"]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("$1,496.5", ["$1,496.5"]) == 1.0
    assert token_f1("nothing", ["Eiffel"]) == 0.0
    assert token_f1("anything", []) == 0.0


def test_answer_in_text_matches_whole_normalised_words():
    text = "The Eiffel Tower was completed in 1889, for the World's Fair."
    assert answer_in_text(text, ["1889"]) and answer_in_text(text, ["worlds fair", "x"])
    assert answer_in_text(text, ["The World's Fair!"])
    assert not answer_in_text(text, ["188"])  # part of a word is not the answer
    assert not answer_in_text(text, ["1890"]) and not answer_in_text(text, [])
    assert not answer_in_text(text, ["the", "!"])  # normalises to nothing
