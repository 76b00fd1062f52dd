"""GenRead as a member of an R3AG pool: added to a trained router with `add_retriever` (only its token learns; the
encoders and the other members' tokens stay as they were), saved, and routed to through an `r3ag:` pipeline that
returns the generated passages."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from routerank.data.beir import read_queries
from routerank.data.types import Corpus, Dataset, Document, Query
from routerank.generate import genread
from routerank.pipeline import build
from routerank.r3ag.labelling import member_runs
from routerank.r3ag.labels import RoutingLabels
from routerank.r3ag.pool import PoolConfig
from routerank.r3ag.router import R3AGConfig, R3AGRouter
from routerank.r3ag.trainer import R3AGTrainer
from tests.conftest import CachedFeatures, shared_dataset
from tests.generate.test_genread import VITAMIN, writer_for

N = 30


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], list[str]]:
    science = [q.text for q in read_queries(shared_dataset("scifact") / "queries.jsonl").values()]
    finance = [q.text for q in read_queries(shared_dataset("tatqa") / "queries.jsonl").values()]
    return science, finance


@pytest.mark.slow
def test_genread_joins_a_trained_pool_without_retraining_the_encoders(texts, tmp_path, monkeypatch):
    science, finance = texts
    train = science[:N] + finance[:N]
    labels = RoutingLabels(
        ("R0", "bm25"),
        tuple(f"t{i}" for i in range(2 * N)),
        tuple(train),
        quality=np.array([[0.0, 0.8]] * N + [[0.0, 0.3]] * N),
        utility=np.array([[0.1, 0.8]] * N + [[0.6, 0.1]] * N),
        abstain=("R0",),
    )
    features = CachedFeatures()
    router = R3AGRouter(
        ["R0", "bm25"],
        R3AGConfig(hidden=64, dim=32, space_dim=16, heads=2),
        features=features,
        pool=PoolConfig.from_specs({"R0": "null", "bm25": "bm25"}),
    )
    trainer = R3AGTrainer(router, labels, features=features(train))
    trainer.fit()
    probe = [science[200], finance[200]]
    assert [d.choice for d in router.route(probe)] == ["bm25", "R0"]
    before = {k: v.clone() for k, v in router.net.state_dict().items()}

    # the generated passages answer the finance questions better than closed-book, and the science ones worse
    # (60 queries are few steps: the new token gets a higher rate and more passes than the default to converge)
    training = replace(trainer.training, epochs=trainer.training.epochs * 6, lr=0.1)
    trainer.add_retriever("genread", [0.2] * N + [0.5] * N, [0.05] * N + [0.9] * N, spec="genread", training=training)

    after = router.net.state_dict()
    assert set(after) - set(before) == {"tokens.2"}
    assert all(torch.equal(before[k], after[k]) for k in before)  # encoders, fusion and old tokens untouched
    assert router.pool["genread"].spec == "genread"
    assert [d.choice for d in router.route(probe)] == ["bm25", "genread"]

    folder = router.save(tmp_path / "router")
    monkeypatch.setattr("routerank.r3ag.router.encoder_features", lambda spec: features)
    monkeypatch.setitem(genread._WRITERS, ("smollm2", ()), writer_for([VITAMIN], tmp_path))
    corpus = Corpus([Document("d1", science[200]), Document("d2", "Cats purr.")])
    routed = build(f"r3ag:{folder}", corpus, cache=False)
    run = routed.search([Query("s", science[200]), Query("f", finance[200])], 5)
    assert [d.choice for d in routed.last_decisions] == ["bm25", "genread"]
    assert run["s"].doc_ids[0] == "d1"
    [generated] = run["f"].doc_ids
    assert generated.startswith("gen:") and run.documents[generated].text == VITAMIN


def test_label_runs_keep_generated_passages_across_a_restart(tmp_path, monkeypatch):
    """The labeller saves each member's run; genread's passages are saved beside it and come back on reload."""
    monkeypatch.setitem(genread._WRITERS, ("smollm2", ()), writer_for([VITAMIN], tmp_path))
    corpus = Corpus([Document("d1", "Vitamin D and bones."), Document("d2", "Cats purr.")])
    queries = {"q1": Query("q1", "does vitamin D help bones")}
    dataset = Dataset("tiny", corpus, queries, {})
    pool = PoolConfig.from_specs({"R0": "null", "bm25": "bm25", "genread": "genread"})
    runs, _ = member_runs(dataset, list(queries.values()), pool, tmp_path / "runs", depth=3, progress=False)
    [generated] = runs["genread"]["q1"].doc_ids
    monkeypatch.setitem(genread._WRITERS, ("smollm2", ()), None)  # a reload must not generate
    again, _ = member_runs(dataset, list(queries.values()), pool, tmp_path / "runs", depth=3, progress=False)
    assert again["genread"]["q1"].doc_ids == (generated,)
    assert again["genread"].documents[generated].text == VITAMIN
    assert again["genread"].documents[generated].metadata["generated"] is True
    assert again["bm25"]["q1"].doc_ids[0] == "d1" and not again["bm25"].documents
