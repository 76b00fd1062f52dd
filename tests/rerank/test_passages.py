from __future__ import annotations

import pytest

from routerank.data.types import Document
from routerank.errors import RouterankError
from routerank.rerank.passages import split_passages, window_starts


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_short_document_is_one_passage_with_its_title():
    passages = split_passages(Document("d1", "a short body", title="Case A"), size=10, stride=5)
    assert len(passages) == 1
    assert passages[0].text == "a short body"
    assert passages[0].full_text == "Case A a short body"
    assert (passages[0].doc_id, passages[0].index, passages[0].start) == ("d1", 0, 0)


def test_body_of_exactly_size_words_is_one_passage():
    assert len(split_passages(words(10), size=10, stride=5)) == 1


def test_windows_overlap_by_size_minus_stride_and_cover_every_word():
    passages = split_passages(Document("d", words(25), title="T"), size=10, stride=7)
    assert [p.start for p in passages] == [0, 7, 14, 21]
    first, second = passages[0].text.split(), passages[1].text.split()
    assert first[-3:] == second[:3]
    covered = {w for p in passages for w in p.text.split()}
    assert covered == set(words(25).split())
    assert all(p.title == "T" and p.full_text.startswith("T ") for p in passages)
    assert [p.index for p in passages] == [0, 1, 2, 3]


def test_no_empty_passages_and_no_window_inside_the_last_one():
    for n in range(1, 40):
        passages = split_passages(words(n), size=8, stride=3)
        assert all(p.text for p in passages)
        assert passages[-1].text.split()[-1] == f"w{n - 1}"
        assert all(p.start + 8 < n for p in passages[:-1])


def test_stride_equal_to_size_gives_disjoint_windows():
    passages = split_passages(words(20), size=5, stride=5)
    assert [p.text.split()[0] for p in passages] == ["w0", "w5", "w10", "w15"]


def test_whitespace_runs_do_not_make_empty_words():
    passages = split_passages("  alpha \n\n beta\t\tgamma  ", size=2, stride=1)
    assert [p.text for p in passages] == ["alpha beta", "beta gamma"]


def test_title_only_document_is_one_title_passage_and_empty_document_has_none():
    assert [p.full_text for p in split_passages(Document("d", "", title="Only a title"))] == ["Only a title"]
    assert split_passages(Document("d", "   ")) == []


@pytest.mark.parametrize("size,stride", [(0, 1), (5, 0), (5, 6), (-1, -1)])
def test_bad_windows_are_refused_with_a_fix(size, stride):
    with pytest.raises(RouterankError, match="fix"):
        split_passages(words(5), size=size, stride=stride)


def test_window_starts_count():
    assert window_starts(100, 10, 10) == list(range(0, 100, 10))
    assert window_starts(0, 10, 5) == [0]
