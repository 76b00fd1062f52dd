"""The study's per-query measures, free of models: answer recall of a context, the language-modelling split of a
document, leakage of a target into its context and the paired tests every table shows."""

from __future__ import annotations

import random
import re
import statistics
from collections.abc import Mapping, Sequence

from routerank.data.types import Corpus, Document, Query
from routerank.evaluate.qa import answer_in_text, normalize_answer
from routerank.evaluate.significance import paired_test

RECALL_DEPTHS = (1, 5)
_HYDE = re.compile(r"^hyde\((?P<base>[^,]+)(,.*)?\)$")


YES_NO = frozenset(["yes", "no", "maybe"])


def closed_answers(queries: Sequence[Query]) -> bool:
    """Whether every gold answer is yes, no or maybe (PubMedQA): then "the context holds the answer string" says
    nothing about its evidence, and answer recall is left out."""
    return all(normalize_answer(a) in YES_NO for q in queries for a in q.answers)


def hyde_base(spec: str) -> str | None:
    """The retriever a `hyde(...)` spec expands queries for (`hyde(dense,mode=passage)` -> dense), else None."""
    match = _HYDE.match(spec.strip())
    return match["base"].strip() if match else None


def test_pair(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """b against a: delta of the means, paired t-test and randomisation p."""
    result = paired_test(a, b)
    return {"delta": round(result.delta, 4), "p": result.t_pvalue, "p_perm": result.randomization_pvalue}


def answer_recall(queries: Sequence[Query], contexts: Sequence[Sequence[Document]], depth: int) -> dict[str, float]:
    """DPR's top-k answer recall per query: 1.0 when any of the first `depth` documents of its context contains a
    gold answer string (normalised), else 0.0. A context with fewer documents counts what it has."""
    return {
        q.id: float(any(answer_in_text(d.full_text, q.answers) for d in docs[:depth]))
        for q, docs in zip(queries, contexts, strict=True)
    }


def mean(values: Mapping[str, float]) -> float:
    """The mean of per-query values, to 4 places (0.0 for none)."""
    return round(statistics.fmean(values.values()), 4) if values else 0.0


def lm_documents(corpus: Corpus, n: int, min_words: int, seed: int) -> list[Document]:
    """A seeded sample of `n` documents whose text has at least `min_words` words, sorted by id."""
    eligible = sorted(d for d, doc in corpus.items() if len(doc.text.split()) >= min_words)
    picked = random.Random(seed).sample(eligible, min(n, len(eligible)))
    return [corpus[d] for d in sorted(picked)]


def split_halves(text: str, max_words: int) -> tuple[str, str]:
    """The text's first `max_words` words split at the middle word: (first half, second half with a leading space),
    so the target continues the prefix as the text did."""
    words = text.split()[:max_words]
    middle = len(words) // 2
    return " ".join(words[:middle]), " " + " ".join(words[middle:])


def clip_words(text: str, n: int) -> str:
    """The first `n` words of `text`."""
    return " ".join(text.split()[:n])


def with_context(context: Sequence[str], prefix: str) -> str:
    """The language-modelling prompt: the context passages, then the document's first half, a blank line apart."""
    return "\n\n".join([*context, prefix])


def leaks(target: str, context: Sequence[str], words: int = 8) -> bool:
    """Whether a context passage repeats the target's first `words` words (normalised): such a passage would lower
    perplexity by copying, not by knowledge."""
    head = " ".join(normalize_answer(target).split()[:words])
    return bool(head) and any(head in normalize_answer(text) for text in context)


def mean_nll(ids: Sequence[str], nll: Sequence[tuple[float, int]]) -> dict[str, float]:
    """Each passage's mean NLL per target token (nats)."""
    return {i: s / t for i, (s, t) in zip(ids, nll, strict=True) if t}
