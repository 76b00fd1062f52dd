"""Evaluation: IR measures, paired significance, and answer EM/F1."""

from routerank.evaluate.measures import DEFAULT_MEASURES, Evaluation, evaluate, parse_measures
from routerank.evaluate.qa import exact_match, normalize_answer, token_f1
from routerank.evaluate.significance import PairedTest, paired_test

__all__ = [
    "DEFAULT_MEASURES",
    "Evaluation",
    "PairedTest",
    "evaluate",
    "exact_match",
    "normalize_answer",
    "paired_test",
    "parse_measures",
    "token_f1",
]
