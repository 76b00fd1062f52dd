from __future__ import annotations

import re

import pytest

from routerank.data.types import Corpus, Document
from routerank.errors import CorruptIndexError, SpecError
from routerank.understand.noise import add_typos
from routerank.understand.speller import (
    SETTINGS,
    CorpusSpeller,
    Edit,
    SpellerSettings,
    count_words,
    speller_folder,
    speller_for,
)

WORD = re.compile(r"[^\W_]+")


@pytest.fixture(scope="module")
def speller(scifact):
    return CorpusSpeller.from_corpus(scifact.corpus)


def tiny_corpus() -> Corpus:
    texts = ["vitamin deficiency in mice", "vitamin levels and deficiency", "mice and statutes", "rare wurd 2019"]
    return Corpus(Document(str(i), t) for i, t in enumerate(texts))


def test_corrects_typos_with_spans_and_casing(speller):
    query = "Vitamn D deficency, in 2019: VITAMINN levels"
    fixed = speller.correct(query)
    assert fixed.text == "Vitamin D deficiency, in 2019: VITAMIN levels"
    assert fixed.changed and fixed.original == query
    first, second, third = fixed.edits
    assert first == Edit(0, 6, "Vitamn", "Vitamin", 1, speller.counts["vitamin"])
    assert query[second.start : second.end] == "deficency" and second.replacement == "deficiency"
    assert query[third.start : third.end] == "VITAMINN" and third.replacement == "VITAMIN"


def test_known_words_numbers_short_and_symbols_are_left_alone(speller):
    for query in ("vitamin d deficiency", "IL6 covid19 2019 12.5 mg", "xq zz", "dLNs aPKCz PGK", "  odd ,  spacing  "):
        assert speller.correct(query).text == query
        assert not speller.correct(query).edits


def test_only_words_seen_min_count_times_are_proposed():
    corpus = tiny_corpus()
    speller = CorpusSpeller.from_corpus(corpus, min_count=2)
    assert speller.correct("vitamn deficincy mcie").text == "vitamin deficiency mice"
    assert speller.known("wurd")  # seen once: left alone, never proposed
    assert speller.correct("wurds").text == "wurds"
    assert CorpusSpeller.from_corpus(corpus, min_count=1).correct("wurds").text == "wurd"


def test_max_edit_distance_bounds_corrections():
    corpus = tiny_corpus()
    assert CorpusSpeller.from_corpus(corpus, max_edit_distance=1).correct("vtamn").text == "vtamn"
    assert CorpusSpeller.from_corpus(corpus, max_edit_distance=2).correct("vtamn").text == "vitamin"


def test_recovers_most_injected_typos(scifact, speller):
    restored = corrupted = clean_changed = clean = 0
    for seed in (1, 2):
        for query in scifact.split_queries("test")[:30]:
            noisy = add_typos(query.text, 0.2, seed)
            fixed = speller.correct(noisy).text
            for a, b, c in zip(WORD.findall(query.text), WORD.findall(noisy), WORD.findall(fixed), strict=True):
                if a != b:
                    corrupted += 1
                    restored += c.lower() == a.lower()
                else:
                    clean += 1
                    clean_changed += c != a
    assert corrupted > 80
    assert restored / corrupted >= 0.7  # measured 88/109 = 0.81 (0.79 seed 1, 0.82 seed 2)
    assert clean_changed / clean <= 0.02


def test_save_load_round_trip(tmp_path, speller):
    folder = speller.save(tmp_path / "speller")
    loaded = CorpusSpeller.load(folder)
    assert loaded.fingerprint == speller.fingerprint
    assert loaded.settings == speller.settings and loaded.corpus_fingerprint == speller.corpus_fingerprint
    assert loaded.correct("vitamn deficency").text == "vitamin deficiency"
    vocabulary = (folder / "vocabulary.tsv").read_text(encoding="utf-8")
    (folder / "vocabulary.tsv").write_text(vocabulary.replace("\t", "\t1", 1), encoding="utf-8")
    with pytest.raises(CorruptIndexError, match="fingerprint"):
        CorpusSpeller.load(folder)
    (folder / "vocabulary.tsv").unlink()
    with pytest.raises(CorruptIndexError, match="build it again"):
        CorpusSpeller.load(folder)


def test_speller_for_builds_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTERANK_CACHE", str(tmp_path))
    corpus = tiny_corpus()
    first = speller_for(corpus, max_edit_distance=1)
    folder = speller_folder(corpus, SpellerSettings(max_edit_distance=1))
    assert folder.is_relative_to(tmp_path / "spellers") and (folder / "speller.json").exists()
    stamp = (folder / "vocabulary.tsv").stat().st_mtime_ns
    second = speller_for(corpus, max_edit_distance=1)
    assert (folder / "vocabulary.tsv").stat().st_mtime_ns == stamp
    assert second.fingerprint == first.fingerprint
    assert speller_folder(corpus, SpellerSettings()) != folder  # other settings, other entry
    (folder / "speller.json").write_text("{", encoding="utf-8")
    assert speller_for(corpus, max_edit_distance=1).fingerprint == first.fingerprint  # a corrupt entry is rebuilt


def test_settings_are_documented_and_checked():
    assert set(SETTINGS) == {"max_edit_distance", "min_count", "prefix_length", "lowercase", "min_length"}
    with pytest.raises(SpecError, match="unknown speller settings"):
        speller_for(tiny_corpus(), edit_distance=1)
    with pytest.raises(SpecError, match="corrects nothing"):
        SpellerSettings(max_edit_distance=0)


def test_case_sensitive_counts():
    corpus = tiny_corpus()
    assert count_words(corpus)["vitamin"] == 2
    assert count_words(Corpus([Document("a", "DNA dna")]), lowercase=False) == {"DNA": 1, "dna": 1}
