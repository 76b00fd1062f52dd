"""Fit long documents to the model's window: truncate, or chunk and keep the best chunk. Never fail on length.

A document is first cut to `max_tokens_per_doc` tokens (Cohere's v2 field). Then it must share the model's
window with the query: `room = max_length - query tokens - 3` (the [CLS]/[SEP] markers of a pair).
- truncate: keep the first `room` tokens.
- chunk: split into windows of `room` tokens (at most `max_chunks`), score each; the document's score is the
  maximum over its chunks, as Cohere scores long documents.
Cuts are made on the original string at token offsets (a fast tokenizer's offset mapping), so a kept piece is
the caller's own text, not a detokenized copy. Without a tokenizer, 4 characters count as one token.
The token counts come out too: the batcher fills batches by a token budget.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
PAIR_SPECIAL_TOKENS = 3
MIN_ROOM = 16


@dataclass(frozen=True)
class Pieces:
    """What gets scored for one request: texts, the document each came from, and each pair's token count."""

    texts: list[str]
    owners: list[int]
    tokens: list[int]
    truncated: int  # documents that lost text (cut, or chunks beyond max_chunks)


class DocumentFitter:
    """Fits one request's documents; call it from one thread (the server's event loop).

    It keeps its own copy of the tokenizer: a fast tokenizer must not be used by two threads at once, and the
    model's own copy is busy on the scoring thread.
    """

    def __init__(self, tokenizer: Any | None, max_length: int | None):
        self.tokenizer = copy.deepcopy(tokenizer) if getattr(tokenizer, "is_fast", False) else None
        self.max_length = max_length

    def _offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        if self.tokenizer is None:
            return [[(i, min(i + CHARS_PER_TOKEN, len(t))) for i in range(0, len(t), CHARS_PER_TOKEN)] for t in texts]
        encoded = self.tokenizer(
            texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [[tuple(span) for span in spans] for spans in encoded["offset_mapping"]]

    def fit(self, query: str, docs: list[str], *, max_tokens_per_doc: int, chunk: bool, max_chunks: int) -> Pieces:
        """The pieces to score for `docs`; `max_tokens_per_doc` and `max_chunks` must be at least 1."""
        if not docs:
            return Pieces([], [], [], 0)
        [query_spans] = self._offsets([query])
        query_tokens = len(query_spans)
        if self.max_length is None:
            room = max_tokens_per_doc
        else:
            room = max(self.max_length - min(query_tokens, self.max_length // 2) - PAIR_SPECIAL_TOKENS, MIN_ROOM)
        texts, owners, tokens, truncated = [], [], [], 0
        for index, (doc, spans) in enumerate(zip(docs, self._offsets(docs), strict=True)):
            cut = spans[:max_tokens_per_doc]
            windows = [cut[i : i + room] for i in range(0, len(cut), room)] or [[]]
            kept = windows[:max_chunks] if chunk else windows[:1]
            if len(kept) < len(windows) or len(cut) < len(spans):
                truncated += 1
            for window in kept:
                if not window:
                    texts.append(doc)
                elif len(kept) == 1 and len(window) == len(spans):
                    texts.append(doc)  # nothing cut: the document exactly as sent
                else:
                    texts.append(doc[window[0][0] : window[-1][1]])
                owners.append(index)
                tokens.append(query_tokens + len(window) + PAIR_SPECIAL_TOKENS)
        return Pieces(texts, owners, tokens, truncated)


def max_per_owner(scores: list[float], owners: list[int], count: int) -> list[float]:
    """Each document's score: the maximum over its pieces."""
    best = [float("-inf")] * count
    for score, owner in zip(scores, owners, strict=True):
        best[owner] = max(best[owner], score)
    return best
