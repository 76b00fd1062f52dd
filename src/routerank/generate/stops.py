"""Stop rules and answer clean-up for short generated answers.

A stop string ends the answer at its first occurrence after the answer has begun (leading whitespace is
skipped, so a model that opens with a newline is not cut to nothing); the stop string itself is never part of
the answer. `clean_answer` then removes what small chat models wrap around a short answer: an "Answer:" label,
surrounding quotes, a final full stop (unless the answer has other dots, as "U.S." has). EM/F1 apply SQuAD
normalisation on top of this.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

DEFAULT_STOPS: tuple[str, ...] = ("\n",)
_LABEL = re.compile(r"^(the\s+)?answer\s*(is\s*)?[:\-]\s*", re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`"}


def find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """(position, stop) of the earliest stop string after the leading whitespace, or None."""
    start = len(text) - len(text.lstrip())
    hits = [(text.find(stop, start), stop) for stop in stops if stop]
    hits = [(pos, stop) for pos, stop in hits if pos >= 0]
    return min(hits) if hits else None


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The text up to its first stop string (as `find_stop` finds it), or all of it when none occurs."""
    hit = find_stop(text, stops)
    return text if hit is None else text[: hit[0]]


def clean_answer(text: str) -> str:
    """The answer without surrounding whitespace, an "Answer:" label, enclosing quotes or a lone final full stop."""
    answer = _LABEL.sub("", text.strip()).strip()
    if len(answer) >= 2 and _QUOTES.get(answer[0]) == answer[-1]:
        answer = answer[1:-1].strip()
    if answer.endswith(".") and answer.count(".") == 1:  # keep the dots of "U.S." or "St. Louis."
        answer = answer[:-1].rstrip()
    return answer
