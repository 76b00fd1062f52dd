"""Fitting documents to the window: pieces are the caller's own text, within the room the query leaves."""

from __future__ import annotations

import pytest

from routerank.serve.text import PAIR_SPECIAL_TOKENS, DocumentFitter, max_per_owner

QUERY = "vitamin d and cancer"
LONG = " ".join(f"sentence {i} about vitamin d, bones and the risk of cancer." for i in range(60))


@pytest.fixture(scope="module")
def fitter(ce):
    return DocumentFitter(ce.tokenizer, ce.max_length)


def count(ce, text):
    return len(ce.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_a_short_document_is_sent_exactly_as_given(fitter, ce):
    pieces = fitter.fit(QUERY, ["Short text.", ""], max_tokens_per_doc=4096, chunk=False, max_chunks=10)
    assert pieces.texts == ["Short text.", ""] and pieces.owners == [0, 1] and pieces.truncated == 0
    assert pieces.tokens[0] == count(ce, QUERY) + count(ce, "Short text.") + PAIR_SPECIAL_TOKENS


def test_truncation_keeps_a_prefix_that_fits_the_window(fitter, ce):
    pieces = fitter.fit(QUERY, [LONG], max_tokens_per_doc=4096, chunk=False, max_chunks=10)
    [piece] = pieces.texts
    assert LONG.startswith(piece) and len(piece) < len(LONG) and pieces.truncated == 1
    assert count(ce, QUERY) + count(ce, piece) + PAIR_SPECIAL_TOKENS <= ce.max_length


def test_chunks_cover_the_document_in_order_and_respect_max_chunks(fitter, ce):
    pieces = fitter.fit(QUERY, ["tiny", LONG], max_tokens_per_doc=4096, chunk=True, max_chunks=100)
    chunks = [t for t, owner in zip(pieces.texts, pieces.owners, strict=True) if owner == 1]
    assert len(chunks) > 2 and pieces.truncated == 0
    position = 0
    for chunk in chunks:
        found = LONG.index(chunk, position)
        assert found >= position and count(ce, QUERY) + count(ce, chunk) + PAIR_SPECIAL_TOKENS <= ce.max_length
        position = found + len(chunk)
    assert position == len(LONG)
    capped = fitter.fit(QUERY, [LONG], max_tokens_per_doc=4096, chunk=True, max_chunks=2)
    assert len(capped.texts) == 2 and capped.truncated == 1


def test_max_tokens_per_doc_cuts_first(fitter, ce):
    pieces = fitter.fit(QUERY, [LONG], max_tokens_per_doc=5, chunk=True, max_chunks=10)
    [piece] = pieces.texts
    assert count(ce, piece) == 5 and LONG.startswith(piece)


def test_without_a_tokenizer_four_characters_count_as_a_token():
    fitter = DocumentFitter(None, None)
    pieces = fitter.fit("abcd", ["x" * 40], max_tokens_per_doc=3, chunk=False, max_chunks=1)
    assert pieces.texts == ["x" * 12] and pieces.tokens == [1 + 3 + PAIR_SPECIAL_TOKENS]


def test_a_document_scores_as_its_best_piece():
    assert max_per_owner([0.1, 0.9, 0.3, -2.0], [0, 0, 1, 2], 3) == [0.9, 0.3, -2.0]
