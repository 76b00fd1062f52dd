from __future__ import annotations

import json

import pytest

from routerank.data.types import Corpus, Document
from routerank.errors import CorruptIndexError, StaleIndexError
from routerank.fsutil import atomic_dir
from routerank.retrieve import BM25Retriever, NullRetriever, cached_index, load_index


@pytest.fixture
def corpus():
    return Corpus(
        [
            Document("a", "aspirin and heart attack"),
            Document("b", "statins lower cholesterol"),
            Document("c", "vitamin d and bone density"),
        ]
    )


def built(corpus, path):
    retriever = BM25Retriever()
    retriever.index(corpus)
    retriever.save(path)
    return retriever


def test_altered_index_file_is_detected(corpus, tmp_path):
    built(corpus, tmp_path / "idx")
    victim = tmp_path / "idx" / "doc_ids.json"
    victim.write_text(json.dumps(["a", "c", "b"]))
    with pytest.raises(CorruptIndexError, match="checksum"):
        BM25Retriever.load(tmp_path / "idx")


def test_missing_index_file_is_detected(corpus, tmp_path):
    built(corpus, tmp_path / "idx")
    (tmp_path / "idx" / "vocab.index.json").unlink()
    with pytest.raises(CorruptIndexError, match="missing"):
        BM25Retriever.load(tmp_path / "idx")


def test_index_without_manifest_is_refused(corpus, tmp_path):
    built(corpus, tmp_path / "idx")
    (tmp_path / "idx" / "manifest.json").unlink()
    with pytest.raises(CorruptIndexError, match="manifest"):
        load_index(tmp_path / "idx")


def test_index_for_another_corpus_is_stale(corpus, tmp_path):
    built(corpus, tmp_path / "idx")
    edited = Corpus([*corpus.documents[:2], Document("c", "vitamin d and bone mass")])
    with pytest.raises(StaleIndexError, match="different corpus"):
        BM25Retriever.load(tmp_path / "idx", corpus=edited)


def test_loading_as_the_wrong_kind_is_refused(corpus, tmp_path):
    built(corpus, tmp_path / "idx")
    with pytest.raises(StaleIndexError, match="bm25"):
        NullRetriever.load(tmp_path / "idx")


def test_cache_rebuilds_a_corrupt_index(corpus, tmp_path, capsys):
    first = cached_index(BM25Retriever(), corpus, tmp_path)
    [folder] = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    (folder / "doc_ids.json").write_text("[]")
    again = cached_index(BM25Retriever(), corpus, tmp_path)
    assert "rebuilding index" in capsys.readouterr().err
    assert again.search(["aspirin"], 2).as_dict() == first.search(["aspirin"], 2).as_dict()
    load_index(folder, corpus=corpus)  # the rebuilt index verifies


def test_cache_keys_on_corpus_and_config(corpus, tmp_path):
    cached_index(BM25Retriever(), corpus, tmp_path)
    cached_index(BM25Retriever(k1=0.9), corpus, tmp_path)
    cached_index(BM25Retriever(), corpus.subset(["a", "b"]), tmp_path)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 3


def test_killed_write_leaves_no_index(tmp_path):
    target = tmp_path / "idx"
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "half.npy").write_bytes(b"\x00" * 10)
        raise KeyboardInterrupt
    assert not target.exists() and list(tmp_path.iterdir()) == []
