"""SQuAD-style answer scoring: normalised exact match and token F1, best over the gold answers."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """The text lowercased, without punctuation or articles (a, an, the), and with whitespace collapsed."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    """1.0 when the prediction equals any gold answer after normalisation, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def _f1(prediction: str, answer: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(answer).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Iterable[str]) -> float:
    """The best token-overlap F1 of the prediction against any gold answer (normalised); 0.0 with no answers."""
    return max((_f1(prediction, a) for a in answers), default=0.0)


def answer_in_text(text: str, answers: Iterable[str]) -> bool:
    """Whether any gold answer occurs in `text` as whole words, both normalised (DPR's answer recall: does the
    context hold the answer string?). An answer that normalises to nothing never counts."""
    padded = f" {normalize_answer(text)} "
    return any(norm and f" {norm} " in padded for norm in (normalize_answer(a) for a in answers))
