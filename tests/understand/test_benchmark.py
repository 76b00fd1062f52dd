from __future__ import annotations

import json

import pytest

from routerank.data.types import Ranking, Run
from routerank.errors import RouterankError
from routerank.understand.benchmark import (
    CONNECTIVES,
    DEFAULT_DATASETS,
    Intent,
    IntentPair,
    benchmark_paths,
    both_intents,
    build_pairs,
    combined_corpus,
    intent_recall,
    join,
    load_sources,
    main,
    pair_queries,
    read_benchmark,
)
from routerank.understand.noise import NOISE_RATES
from tests.conftest import shared_dataset

SMALL = ("scifact", "coliee-statutes", "pubmedqa", "squad-dev")


@pytest.fixture(scope="module")
def sources():
    for name in SMALL:
        shared_dataset(name)
    return load_sources("test", SMALL)


@pytest.fixture(scope="module")
def pairs(sources):
    return build_pairs("test", 60, 13, SMALL, sources=sources)


def test_pairs_join_two_datasets_with_prefixed_gold(sources, pairs):
    assert len(pairs) == 60 and len({p.id for p in pairs}) == 60
    couples = {(p.intents[0].dataset, p.intents[1].dataset) for p in pairs}
    assert all(a != b for a, b in couples) and len(couples) == 12  # every ordered couple of 4 datasets, dealt evenly
    for pair in pairs:
        for intent in pair.intents:
            ds = sources.datasets[intent.dataset]
            assert intent.relevant and all(d.startswith(f"{intent.dataset}/") for d in intent.relevant)
            assert {d.split("/", 1)[1] for d in intent.relevant} == ds.split_qrels("test").relevant(intent.query_id)
            assert intent.text == ds.queries[intent.query_id].text.strip()
            assert intent.answers == ds.queries[intent.query_id].answers
        assert pair.text == join(pair.intents[0].text, pair.intents[1].text, pair.connective)
        assert pair.text_at(0.0) == pair.text and set(pair.noisy) == set(NOISE_RATES)
    assert len({p.connective for p in pairs}) >= 5
    assert any(i.answers for p in pairs for i in p.intents if i.dataset == "squad-dev")
    assert not any(i.answers for p in pairs for i in p.intents if i.dataset == "scifact")


def test_join_reads_naturally():
    assert join("Is aspirin safe?", "What is a lien?", "{a}? Also, {b}") == "Is aspirin safe? Also, What is a lien?"
    assert join("Statins lower LDL.", "Who won?", "{a} and {b}") == "Statins lower LDL and Who won?"
    assert all("{a}" in c and "{b}" in c for c in CONNECTIVES)


def test_noise_grows_with_rate(pairs):
    changed = [sum(p.text_at(r) != p.text for p in pairs) for r in NOISE_RATES]
    assert changed[0] == 0 and changed[1] < changed[3] and changed[3] > len(pairs) // 2


def test_same_seed_same_bytes_other_seed_other_pairs(tmp_path):
    for name in SMALL:
        shared_dataset(name)
    paths = [
        main(
            [
                "--split",
                "test",
                "--pairs",
                "25",
                "--seed",
                "13",
                "--out",
                str(tmp_path / f"run{i}"),
                "--datasets",
                *SMALL,
            ]
        )
        for i in range(2)
    ]
    assert paths == [0, 0]
    first, second = (benchmark_paths(tmp_path / f"run{i}", "test") for i in range(2))
    assert first[0].read_bytes() == second[0].read_bytes() and first[1].read_bytes() == second[1].read_bytes()
    manifest = json.loads(first[1].read_text(encoding="utf-8"))
    assert manifest["seed"] == 13 and manifest["pairs"] == 25 and sum(manifest["pair_counts"].values()) == 25
    assert set(manifest["datasets"]) == set(SMALL) and manifest["skipped"] == []
    assert all(len(v["corpus_fingerprint"]) == 64 for v in manifest["datasets"].values())
    loaded = read_benchmark(first[0])
    assert [p.to_json() for p in loaded] == [p.to_json() for p in build_pairs("test", 25, 13, SMALL)]
    assert [p.text for p in build_pairs("test", 25, 14, SMALL)] != [p.text for p in loaded]


def test_split_missing_from_some_datasets_is_skipped_and_named():
    for name in ("scifact", "coliee-statutes", "tatqa"):
        shared_dataset(name)
    sources = load_sources("dev", ("scifact", "coliee-statutes", "tatqa"))
    assert sources.skipped == ("scifact",) and set(sources.datasets) == {"coliee-statutes", "tatqa"}
    with pytest.raises(RouterankError, match="pairs need two datasets"):
        load_sources("dev", ("scifact", "tatqa"))


def test_combined_corpus_prefixes_ids(sources):
    corpus = combined_corpus([sources.datasets["scifact"], "coliee-statutes"])
    assert len(corpus) == len(sources.datasets["scifact"].corpus) + len(sources.datasets["coliee-statutes"].corpus)
    doc = corpus[f"scifact/{sources.datasets['scifact'].corpus.ids[0]}"]
    assert doc.metadata["dataset"] == "scifact"
    assert all(i.split("/", 1)[0] in {"scifact", "coliee-statutes"} for i in corpus.ids)


def test_metrics_on_a_hand_made_run():
    def pair(pid, first, second):
        intents = (Intent("a", "q1", "x", first), Intent("b", "q2", "y", second))
        return IntentPair(pid, "test", "{a} and {b}", "x and y", {0.0: "x and y"}, intents)

    pairs = [pair("p1", ("a/1",), ("b/9",)), pair("p2", ("a/2",), ("b/3",)), pair("p3", ("a/4",), ("b/5",))]
    run = Run({"p1": Ranking(("a/1", "x/0", "b/9"), (3.0, 2.0, 1.0)), "p2": Ranking(("b/3", "a/7"), (2.0, 1.0))})
    assert intent_recall(run, pairs, k=3) == pytest.approx(3 / 6)  # p1 both, p2 one, p3 missing from the run
    assert both_intents(run, pairs, k=3) == pytest.approx(1 / 3)
    assert intent_recall(run, pairs, k=1) == pytest.approx(2 / 6)
    assert both_intents(run, pairs, k=2) == 0.0
    with pytest.raises(RouterankError, match="no pairs"):
        intent_recall(run, [], k=10)


def test_pair_queries_carry_noisy_text_and_answers(pairs):
    queries = pair_queries(pairs, 0.2)
    assert [q.id for q in queries] == [p.id for p in pairs]
    assert all(q.text == p.text_at(0.2) for q, p in zip(queries, pairs, strict=True))
    with pytest.raises(RouterankError, match="no text at typo rate"):
        pairs[0].text_at(0.3)


def test_default_datasets_train_and_test():
    for name in DEFAULT_DATASETS:
        shared_dataset(name)
    for split in ("train", "test"):
        built = build_pairs(split, 90, 13)
        assert {i.dataset for p in built for i in p.intents} == set(DEFAULT_DATASETS)
        assert all(p.intents[0].dataset != p.intents[1].dataset for p in built)
