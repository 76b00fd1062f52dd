"""The trainers' own target texts, exact: an adapter learns to write them, so they never change in place."""

from __future__ import annotations

from routerank.rerank.reasoning import parse_answer
from routerank.train.rank_r1 import target_completion
from routerank.train.templates import RANK_R1_GENERIC_REASON, RANK_R1_SHARED_REASON, RANK_R1_TARGET


def test_rank_r1_target_texts_exact():
    assert RANK_R1_TARGET == "<think>{reason}</think>\n<answer>{label}</answer>"
    assert RANK_R1_SHARED_REASON == "Passage {label} mentions {words}, as the query does."
    assert RANK_R1_GENERIC_REASON == "Passage {label} is about what the query asks."


def test_rank_r1_target_completion_exact():
    shared = target_completion(
        "Does aspirin lower heart attack risk?", "Aspirin lowers the risk of a heart attack.", "B"
    )
    assert (
        shared
        == "<think>Passage B mentions aspirin, heart, attack, risk, as the query does.</think>\n<answer>B</answer>"
    )
    generic = target_completion("quantum chromodynamics", "Cats purr.", "C")
    assert generic == "<think>Passage C is about what the query asks.</think>\n<answer>C</answer>"
    assert parse_answer(shared) == "B" and parse_answer(generic) == "C"
