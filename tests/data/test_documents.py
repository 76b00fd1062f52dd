from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path

import pytest

from routerank.data.documents import (
    KINDS,
    DocumentMap,
    chunk_corpus,
    load_documents,
    passage_kind,
    read_documents,
)
from routerank.data.registry import load_dataset
from routerank.data.types import Corpus, Document, Qrels, Ranking, Run
from routerank.errors import DataFormatError, DuplicateIdError, EmptyFileError, RouterankError, UnknownIdError
from tests.conftest import shared_dataset

HEADER = "document-id\tpassage-id\tposition\n"


@pytest.fixture(scope="module")
def tatqa():
    return load_dataset(str(shared_dataset("tatqa")))


@pytest.fixture(scope="module")
def tatqa_map(tatqa) -> DocumentMap:
    documents = load_documents(tatqa)
    assert documents is not None
    return documents


@pytest.fixture
def tiny() -> Corpus:
    return Corpus(
        [
            Document("t1", "Item | 2019 | 2018\nSales | 10 | 9"),
            Document("p1", "Sales grew.", "Report A"),
            Document("p2", "Costs fell."),
            Document("p3", "A passage no line lists."),
        ]
    )


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "documents.tsv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_tatqa_pages_cover_every_passage(tatqa, tatqa_map):
    assert len(tatqa_map) == 555 and len(tatqa_map.document_ids) == 555
    listed = [p for doc in tatqa_map.document_ids for p in tatqa_map.passages(doc)]
    assert len(listed) == len(set(listed)) == len(tatqa.corpus) == 3190
    assert Counter(tatqa_map.kinds.values()) == {"text": 2635, "table": 555}
    assert all((kind == "table") == pid.startswith("t-") for pid, kind in tatqa_map.kinds.items())
    sizes = [len(p) for p in tatqa_map.parts.values()]
    assert (min(sizes), statistics.median(sizes), max(sizes)) == (3, 5, 27)


def test_tatqa_passages_come_in_position_order_table_first(tatqa_map):
    rows = [line.split("\t") for line in (shared_dataset("tatqa") / "documents.tsv").read_text().splitlines()[1:]]
    position = {passage: int(pos) for _, passage, pos in rows}
    for doc in tatqa_map.document_ids:
        passages = tatqa_map.passages(doc)
        assert passages[0] == "t-" + doc.removeprefix("d-")
        assert [position[p] for p in passages] == sorted(position[p] for p in passages)
        assert all(tatqa_map.document_of(p) == doc for p in passages)
    assert tatqa_map.document_ids[0] == rows[0][0]  # documents in the order the file first names them


def test_tatqa_qrels_lift_to_pages(tatqa, tatqa_map):
    passage_qrels = tatqa.split_qrels("test")
    lifted = tatqa_map.lift_qrels(passage_qrels)
    assert set(lifted) == set(passage_qrels)
    assert {grade for docs in lifted.judgments.values() for grade in docs.values()} == {1}
    assert lifted.num_pairs <= passage_qrels.num_pairs
    for query_id, docs in passage_qrels.judgments.items():
        relevant = lifted.relevant(query_id)
        assert relevant and relevant == {tatqa_map.document_of(p) for p, g in docs.items() if g >= 1}


def test_tatqa_document_corpus_holds_each_passage_in_order(tatqa, tatqa_map):
    documents = tatqa_map.document_corpus(tatqa.corpus)
    assert documents.ids == tatqa_map.document_ids
    for doc in documents.documents[:50]:
        passages = tatqa_map.passages(doc.id)
        assert doc.metadata == {"passages": list(passages)}
        assert doc.text == "\n\n".join(tatqa.corpus[p].text for p in passages)
    statements = tatqa_map.document_corpus(tatqa.corpus, table_style="statements", separator="\n")
    first = statements[tatqa_map.document_ids[0]]
    table, *paragraphs = tatqa_map.passages(first.id)
    assert " | " not in first.text and first.text.endswith(tatqa.corpus[paragraphs[-1]].text)


def test_passage_corpus_rewrites_tables_only(tatqa, tatqa_map):
    assert tatqa_map.passage_corpus(tatqa.corpus) is tatqa.corpus
    markdown = tatqa_map.passage_corpus(tatqa.corpus, "markdown")
    assert markdown.ids == tatqa.corpus.ids
    for pid in tatqa.corpus.ids[:200]:
        if tatqa_map.kinds[pid] == "table":
            assert markdown[pid].text.startswith("| ") and "| --- |" in markdown[pid].text
        else:
            assert markdown[pid].text == tatqa.corpus[pid].text
    with pytest.raises(RouterankError, match="unknown table style 'latex'"):
        tatqa_map.passage_corpus(tatqa.corpus, "latex")


def test_fingerprint_follows_content(tiny):
    a = DocumentMap({"d": ("p1", "p2")}, {"p1": "text", "p2": "text"})
    same = DocumentMap({"d": ("p1", "p2")}, {"p1": "text", "p2": "text"})
    reordered = DocumentMap({"d": ("p2", "p1")}, {"p1": "text", "p2": "text"})
    rekinded = DocumentMap({"d": ("p1", "p2")}, {"p1": "table", "p2": "text"})
    assert a == same and a.fingerprint == same.fingerprint and hash(a) == hash(same)
    assert len({a.fingerprint, reordered.fingerprint, rekinded.fingerprint}) == 3
    assert len(a.fingerprint) == 64


def test_lift_run_takes_each_documents_best_passage():
    documents = DocumentMap(
        {"A": ("a1", "a2"), "B": ("b1",), "C": ("c1", "c2"), "D": ("d1",)},
        {p: "text" for p in ("a1", "a2", "b1", "c1", "c2", "d1")},
    )
    passages = Run(
        {
            "q1": Ranking(("c2", "a1", "b1", "c1", "a2", "d1"), (0.9, 0.7, 0.7, 0.5, 0.3, 0.1)),
            "q2": Ranking(("d1", "b1"), (2.0, 2.0)),
        },
        name="bm25",
    )
    lifted = documents.lift_run(passages)
    assert lifted.name == "bm25"
    assert lifted["q1"].doc_ids == ("C", "A", "B", "D") and lifted["q1"].scores == (0.9, 0.7, 0.7, 0.1)
    assert lifted["q2"].doc_ids == ("D", "B")  # a tie keeps the passage ranking's order
    assert documents.lift_run(passages, k=2)["q1"].doc_ids == ("C", "A")
    unsorted = Run({"q": Ranking(("a1", "b1", "a2"), (0.1, 0.5, 0.8))})
    assert documents.lift_run(unsorted)["q"].as_dict() == {"A": 0.8, "B": 0.5}


def test_lift_qrels_keeps_the_best_grade_and_every_query():
    documents = DocumentMap({"A": ("a1", "a2"), "B": ("b1",)}, {"a1": "text", "a2": "text", "b1": "text"})
    qrels = Qrels({"q1": {"a1": 1, "a2": 2, "b1": 0}, "q2": {}})
    assert documents.lift_qrels(qrels).as_dict() == {"q1": {"A": 2, "B": 0}, "q2": {}}


def test_unknown_ids_raise_routerank_errors():
    documents = DocumentMap({"A": ("a1",)}, {"a1": "text"})
    with pytest.raises(UnknownIdError, match="passage 'zz' belongs to no document"):
        documents.document_of("zz")
    with pytest.raises(UnknownIdError, match="no document 'Z'"):
        documents.passages("Z")
    with pytest.raises(UnknownIdError, match="passage 'zz'"):
        documents.lift_qrels(Qrels({"q": {"zz": 1}}))
    with pytest.raises(UnknownIdError, match="passage 'a1' of document 'A' is not in the corpus"):
        documents.document_corpus(Corpus([Document("x", "y")]))


@pytest.mark.parametrize(
    ("parts", "kinds", "needle"),
    [
        ({"A": ("a1",), "B": ("a1",)}, {"a1": "text"}, "passage 'a1' is in two documents ('A' and 'B')"),
        ({"A": ()}, {}, "document 'A' has no passages"),
        ({"A": ("a1",)}, {}, "1 passages have no kind"),
        ({"A": ("a1",)}, {"a1": "figure"}, "'figure'"),
        ({"A": ("a1",)}, {"a1": "text", "b1": "text"}, "have a kind but no document"),
    ],
)
def test_an_inconsistent_map_is_refused(parts, kinds, needle):
    with pytest.raises(RouterankError, match=re.escape(needle)):
        DocumentMap(parts, kinds)


def test_singletons_and_passage_kind(tiny):
    documents = DocumentMap.singletons(tiny)
    assert documents.parts == {pid: (pid,) for pid in tiny.ids}
    assert documents.kinds == {"t1": "table", "p1": "text", "p2": "text", "p3": "text"}
    assert passage_kind(Document("x", "a | b\nc | d", metadata={"kind": "text"})) == "text"
    assert passage_kind(Document("x", "prose", metadata={"kind": "table"})) == "table"
    assert passage_kind(Document("x", "prose", metadata={"kind": "chart"})) == "text"
    assert KINDS == ("text", "table")


def test_read_documents_orders_by_position_and_keeps_unlisted_passages(tmp_path, tiny):
    path = write(tmp_path, "B\tp2\t7\nA\tp1\t2\nA\tt1\t0\n")
    documents = read_documents(path, tiny)
    assert documents.parts == {"B": ("p2",), "A": ("t1", "p1"), "p3": ("p3",)}
    assert documents.kinds["t1"] == "table" and documents.document_of("p3") == "p3"
    corpus = documents.document_corpus(tiny)
    assert corpus["A"].text == "Item | 2019 | 2018\nSales | 10 | 9\n\nSales grew." and corpus["A"].title == "Report A"
    statements = documents.document_corpus(tiny, table_style="statements", separator=" ")
    assert statements["A"].text == "Sales, 2019: 10. Sales, 2018: 9. Sales grew."


def test_a_kind_column_overrides_detection(tmp_path, tiny):
    header = HEADER.replace("position\n", "position\tkind\n")
    documents = read_documents(write(tmp_path, "A\tt1\t0\ttext\nA\tp1\t1\t\nA\tp2\t2\tTable\n", header), tiny)
    assert documents.kinds == {"t1": "text", "p1": "text", "p2": "table", "p3": "text"}


def test_load_documents_is_none_without_a_file(tmp_path, tiny_beir):
    dataset = load_dataset(str(tiny_beir))
    assert load_documents(dataset) is None
    (tiny_beir / "documents.tsv").write_text(HEADER + "X\td1\t0\nX\td2\t1\n")
    documents = load_documents(load_dataset(str(tiny_beir)))
    assert documents is not None and documents.parts == {"X": ("d1", "d2"), "d3": ("d3",)}


@pytest.mark.parametrize(
    ("header", "body", "error", "line", "needle"),
    [
        ("", "A\tp1\t0\n", DataFormatError, 1, "the header line is missing, found 'A\\tp1\\t0'"),
        ("doc\tpassage\tpos\n", "A\tp1\t0\n", DataFormatError, 1, "wrong header 'doc\\tpassage\\tpos'"),
        (HEADER, "A\tp1\n", DataFormatError, 2, "expected 3 tab-separated columns, got 2"),
        (HEADER, "A p1 0\n", DataFormatError, 2, "expected 3 tab-separated columns, got 1"),
        (HEADER, "A\tp1\t0\tx\n", DataFormatError, 2, "expected 3 tab-separated columns, got 4"),
        (HEADER, "A\tp1\t0\n\tp2\t1\n", DataFormatError, 3, "empty document-id"),
        (HEADER, "A\t\t0\n", DataFormatError, 2, "empty passage-id"),
        (HEADER, "A\tp1\tfirst\n", DataFormatError, 2, "position 'first' is not a whole number"),
        (HEADER, "A\tp1\t1.5\n", DataFormatError, 2, "position '1.5' is not a whole number"),
        (HEADER, "A\tp1\t-1\n", DataFormatError, 2, "position -1 is negative"),
        (HEADER, "A\tp1\t0\nB\tp1\t0\n", DuplicateIdError, 3, "passage 'p1' is listed twice (first on line 2, in "),
        (HEADER, "A\tp1\t0\nA\tp1\t1\n", DuplicateIdError, 3, "passage 'p1' is listed twice"),
        (HEADER, "A\tp1\t0\nA\tghost\t1\n", UnknownIdError, 3, "passage 'ghost' is not in the corpus"),
        (HEADER, "A\tp1\t0\n\nA\tp2\t0\n", DuplicateIdError, 4, "document 'A' has two passages at position 0"),
        (HEADER, "p3\tp1\t0\n", DuplicateIdError, 2, "passage 'p3' is listed nowhere"),
        (HEADER.replace("\n", "\tkind\n"), "A\tp1\t0\tchart\n", DataFormatError, 2, "unknown kind 'chart'"),
    ],
)
def test_bad_lines_give_one_line_with_file_line_and_fix(tmp_path, tiny, header, body, error, line, needle):
    path = write(tmp_path, body, header)
    with pytest.raises(error) as err:
        read_documents(path, tiny)
    message = str(err.value)
    assert err.value.line == line and err.value.fix
    assert message.startswith(f"{path}:{line}: ") and needle in message and "(fix: " in message
    assert "\n" not in message


@pytest.mark.parametrize(("text", "needle"), [("", "file is empty"), (HEADER, "lists no passages")])
def test_empty_files_are_refused(tmp_path, tiny, text, needle):
    path = tmp_path / "documents.tsv"
    path.write_text(text)
    with pytest.raises(EmptyFileError, match=needle):
        read_documents(path, tiny)


def test_a_header_with_bom_and_crlf_reads(tmp_path, tiny):
    path = tmp_path / "documents.tsv"
    path.write_bytes("\ufeffdocument-id\tpassage-id\tposition\r\nA\tp1\t0\r\nA\tp2\t1\r\n".encode())
    assert read_documents(path, tiny).passages("A") == ("p1", "p2")


def test_chunk_corpus_cuts_long_documents_into_even_passages():
    words = [f"w{i}" for i in range(10)]
    corpus = Corpus(
        [
            Document("long", " ".join(words[:5]) + "\n" + " ".join(words[5:]), "Case 1"),
            Document("short", "just three words"),
            Document("empty", "", "Only a title"),
        ]
    )
    passages, documents = chunk_corpus(corpus, words=4)
    assert documents.parts == {"long": ("long#0", "long#1", "long#2"), "short": ("short#0",), "empty": ("empty#0",)}
    assert [passages[p].text for p in documents.passages("long")] == ["w0 w1 w2", "w3 w4\nw5", "w6 w7 w8 w9"]
    assert passages["long#1"].title == "Case 1" and passages["long#1"].metadata == {"document": "long", "chunk": 1}
    assert set(documents.kinds.values()) == {"text"}
    assert documents.lift_qrels(Qrels({"q": {"long#2": 1}})).as_dict() == {"q": {"long": 1}}
    first_only, capped = chunk_corpus(corpus, words=4, max_chunks=1)
    assert capped.passages("long") == ("long#0",) and len(first_only) == 3
    with pytest.raises(RouterankError, match="pass words=1 or more"):
        chunk_corpus(corpus, words=0)


def test_chunk_corpus_on_a_long_case():
    corpus = Corpus([Document("case", " ".join(f"w{i}" for i in range(1001)))])
    passages, documents = chunk_corpus(corpus, words=200)
    sizes = [len(passages[p].text.split()) for p in documents.passages("case")]
    assert sizes == [166, 167, 167, 167, 167, 167]
