from __future__ import annotations

import pytest

from routerank.generate.stops import clean_answer, cut_at_stop


@pytest.mark.parametrize(
    ("text", "stops", "cut"),
    [
        ("Denver Broncos\nQuestion: next", ("\n",), "Denver Broncos"),
        ("\n\nDenver\nmore", ("\n",), "\n\nDenver"),  # leading whitespace does not end the answer
        ("Paris, France. It is", ("\n", ". "), "Paris, France"),
        ("no stop here", ("\n",), "no stop here"),
        ("a<|x|>b\nc", ("<|x|>", "\n"), "a"),  # the earliest stop wins
    ],
)
def test_cut_at_stop(text, stops, cut):
    assert cut_at_stop(text, stops) == cut


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Denver Broncos. ", "Denver Broncos"),
        ("Answer: Denver Broncos", "Denver Broncos"),
        ("The answer is: 1990", "1990"),
        ('"Santa Clara"', "Santa Clara"),
        ("U.S.", "U.S."),
        ("", ""),
    ],
)
def test_clean_answer(raw, clean):
    assert clean_answer(raw) == clean
