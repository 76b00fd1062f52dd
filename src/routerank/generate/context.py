"""Which documents go into an answer prompt, and how much of each fits the token budget.

The prompt holds a prefix of the ranking, in rank order: whole documents while they fit, then the next one cut
to the tokens left (if at least `min_doc_tokens` are left), and every later one dropped. A document is never
skipped for a shorter one below it, so the context stays "the top of the ranking". The budget counts document
tokens only; the template's framing around them is small and fixed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from routerank.data.types import Corpus, Document, Qrels, Query, Run
from routerank.errors import RouterankError


@dataclass(frozen=True)
class ContextFit:
    """What one prompt's context holds: the texts as the model sees them, and which documents were cut or left out."""

    texts: tuple[str, ...] = ()
    used: tuple[str, ...] = ()
    truncated: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    tokens: int = 0


def as_documents(items: Sequence[Document | str]) -> list[Document]:
    """Documents as given; a plain string becomes a Document whose id is a hash of its text."""
    out = []
    for item in items:
        if isinstance(item, Document):
            out.append(item)
        elif isinstance(item, str):
            out.append(Document(f"text-{hashlib.sha256(item.encode()).hexdigest()[:12]}", item))
        else:
            raise RouterankError(f"a context document must be a Document or a str, not {type(item).__name__}")
    return out


def fit_context(documents: Sequence[Document], tokenizer, budget: int, min_doc_tokens: int = 32) -> ContextFit:
    """What of `documents` (in rank order) fits `budget` tokens: whole documents while they fit, then the next one
    cut to the tokens left if at least `min_doc_tokens` are left (the top document is cut to fit however few),
    and every later one dropped."""
    if budget < 0:
        raise RouterankError(f"context budget must be >= 0 tokens, got {budget}")
    if not documents:
        return ContextFit()
    encoded = tokenizer([d.full_text for d in documents], add_special_tokens=False)["input_ids"]
    texts, used, truncated, dropped = [], [], [], []
    left = budget
    for doc, ids in zip(documents, encoded, strict=True):
        if dropped or left <= 0:
            dropped.append(doc.id)
        elif len(ids) <= left:
            texts.append(doc.full_text)
            used.append(doc.id)
            left -= len(ids)
        elif left >= min_doc_tokens or not used:
            texts.append(tokenizer.decode(ids[:left]).rstrip("\ufffd").rstrip())
            used.append(doc.id)
            truncated.append(doc.id)
            left = 0
        else:
            dropped.append(doc.id)
    return ContextFit(tuple(texts), tuple(used), tuple(truncated), tuple(dropped), budget - left)


def _check_k(k: int) -> None:
    if k < 0:
        raise RouterankError(f"k must be 0 or more documents per query, got {k}", fix="k=0 means no context (R0)")


def retrieved_contexts(queries: Sequence[Query], run: Run, corpus: Corpus, k: int) -> list[list[Document]]:
    """Each query's top k documents from a run (fewer if the run has fewer; none for a query it lacks); a passage
    the run made itself (`Run.documents`, e.g. genread's) is taken from the run."""
    _check_k(k)
    out = []
    for query in queries:
        ranking = run.rankings.get(query.id)
        ids = ranking.doc_ids[:k] if ranking is not None else ()
        found = (run.lookup(d, corpus) for d in ids)
        out.append([doc for doc in found if doc is not None])
    return out


def gold_contexts(queries: Sequence[Query], qrels: Qrels, corpus: Corpus, k: int) -> list[list[Document]]:
    """Each query's judged-relevant documents, highest grade first (ties by id), at most k."""
    _check_k(k)
    out = []
    for query in queries:
        judged = qrels.judgments.get(query.id, {})
        ranked = sorted((d for d, rel in judged.items() if rel > 0 and d in corpus), key=lambda d: (-judged[d], d))
        out.append([corpus[d] for d in ranked[:k]])
    return out
