from __future__ import annotations

import pytest

from routerank.data.beir import load_beir, read_corpus, read_qrels, read_queries, write_beir
from routerank.errors import DataFormatError, DuplicateIdError, EmptyFileError, SplitNotFoundError, UnknownIdError


def test_valid_folder_loads_with_answers_and_title_only_docs(tiny_beir):
    ds = load_beir(tiny_beir)
    assert len(ds.corpus) == 3 and ds.splits == ["test"]
    assert ds.corpus["d3"].full_text == "Only a title"
    assert ds.queries["q1"].answers == ("yes",)
    assert ds.split_qrels("test")["q2"] == {"d2": 2}
    assert [q.id for q in ds.split_queries("test")] == ["q1", "q2"]


def test_malformed_json_names_file_and_line(tiny_beir):
    path = tiny_beir / "corpus.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = '{"_id": "d2", "text": "unterminated'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as err:
        read_corpus(path)
    assert err.value.line == 2 and str(path) in str(err.value) and "malformed JSON" in str(err.value)


def test_missing_id_is_refused(tiny_beir):
    path = tiny_beir / "queries.jsonl"
    path.write_text('{"_id": "q1", "text": "a"}\n{"text": "no id here"}\n')
    with pytest.raises(DataFormatError, match='no "_id"') as err:
        read_queries(path)
    assert err.value.line == 2


def test_document_with_neither_title_nor_text_is_refused(tiny_beir):
    path = tiny_beir / "corpus.jsonl"
    path.write_text('{"_id": "d1", "title": "", "text": "body"}\n{"_id": "d2", "title": " ", "text": ""}\n')
    with pytest.raises(DataFormatError, match="neither title nor text") as err:
        read_corpus(path)
    assert err.value.line == 2


@pytest.mark.parametrize("filename", ["corpus.jsonl", "queries.jsonl"])
def test_duplicate_ids_are_refused_with_both_lines(tiny_beir, filename):
    path = tiny_beir / filename
    first = path.read_text().splitlines()[0]
    path.write_text(path.read_text() + first + "\n")
    with pytest.raises(DuplicateIdError, match="first seen on line 1"):
        load_beir(tiny_beir)


def test_duplicate_qrels_pair_is_refused(tiny_beir):
    path = tiny_beir / "qrels" / "test.tsv"
    path.write_text(path.read_text() + "q1\td1\t0\n")
    with pytest.raises(DuplicateIdError, match="duplicate judgment") as err:
        read_qrels(path)
    assert err.value.line == 4


def test_unknown_ids_in_qrels_raise_with_count_and_examples(tiny_beir):
    path = tiny_beir / "qrels" / "test.tsv"
    path.write_text(path.read_text() + "q1\tghost-doc\t1\nq9\td1\t1\n")
    with pytest.raises(UnknownIdError) as err:
        load_beir(tiny_beir)
    message = str(err.value)
    assert "2 judgments" in message and "ghost-doc" in message and "q9" in message and "--lenient" in message


def test_lenient_drops_unknown_ids_and_reports_them(tiny_beir):
    path = tiny_beir / "qrels" / "test.tsv"
    path.write_text(path.read_text() + "q1\tghost-doc\t1\nq9\td1\t1\n")
    heard = []
    ds = load_beir(tiny_beir, lenient=True, on_drop=lambda split, pairs: heard.append((split, pairs)))
    assert heard == [("test", [("q1", "ghost-doc"), ("q9", "d1")])]
    assert ds.split_qrels("test").num_pairs == 2 and "q9" not in ds.split_qrels("test")


def test_non_utf8_bytes_are_refused_with_line(tiny_beir):
    path = tiny_beir / "corpus.jsonl"
    path.write_bytes(path.read_bytes() + b'{"_id": "d4", "text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match="not UTF-8") as err:
        read_corpus(path)
    assert err.value.line == 4


@pytest.mark.parametrize("filename", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_empty_files_are_refused(tiny_beir, filename):
    path = tiny_beir / filename
    path.write_text("query-id\tcorpus-id\tscore\n" if filename.endswith(".tsv") else "\n")
    with pytest.raises(EmptyFileError):
        load_beir(tiny_beir)


def test_missing_split_lists_the_available_ones(tiny_beir):
    with pytest.raises(SplitNotFoundError, match=r"\['test'\]"):
        load_beir(tiny_beir, splits=["dev"])
    with pytest.raises(SplitNotFoundError):
        load_beir(tiny_beir).split_qrels("train")


def test_qrels_with_wrong_columns_or_grade(tiny_beir):
    path = tiny_beir / "qrels" / "test.tsv"
    path.write_text("q1\td1\n")
    with pytest.raises(DataFormatError, match="expected 3 columns"):
        read_qrels(path)
    path.write_text("q1\td1\thigh\n")
    with pytest.raises(DataFormatError, match="not a number"):
        read_qrels(path)


def test_trec_style_qrels_are_read(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 d1 2\nq1 0 d2 0\n")
    assert read_qrels(path)["q1"] == {"d1": 2, "d2": 0}


def test_write_then_load_round_trips(tiny_beir, tmp_path):
    ds = load_beir(tiny_beir)
    write_beir(ds, tmp_path / "copy")
    again = load_beir(tmp_path / "copy")
    assert again.corpus.fingerprint == ds.corpus.fingerprint
    assert again.queries == ds.queries
    assert again.split_qrels("test").as_dict() == ds.split_qrels("test").as_dict()


def test_real_scifact_counts(scifact):
    assert len(scifact.corpus) == 5183
    assert len(scifact.split_queries("test")) == 300 and len(scifact.split_queries("train")) == 809
    assert scifact.split_qrels("test").num_pairs == 339
