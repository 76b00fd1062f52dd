from __future__ import annotations

import json
import math

import numpy as np
import pytest

from routerank.errors import RouterankError, SpecError
from routerank.train.cross_encoder import (
    LOG,
    MANIFEST,
    CrossEncoderTrainConfig,
    mean_loss,
    new_cross_encoder,
    train_cross_encoder,
)
from routerank.train.groups import mine_pools, sample_groups, select_queries
from routerank.train.loop import TrainingInterrupted
from routerank.train.losses import ranking_loss

TINY = dict(
    miner="bm25",
    max_queries=12,
    negatives=1,
    max_length=48,
    epochs=3,
    batch_groups=4,
    grad_accum=1,
    lr=2e-4,
    positives_per_query=None,
    dev_queries=4,
    eval_every=1000,  # dev loss once, at the end: the shipped weights are the last ones
    patience=0,
    seed=7,
)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(objective="listwise"), "unknown objective"),
        (dict(negatives=0), "negatives must be at least 1"),
        (dict(negatives=5, negative_depth=3), "negative_depth"),
        (dict(max_length=1024), "max_length"),
        (dict(max_queries=0), "max_queries"),
        (dict(temperature=0.0), "positive"),
        (dict(miner="splade"), "unknown miner"),
        (dict(positives_per_query=0), "positives_per_query"),
        (dict(dataset=" , "), "at least one dataset"),
    ],
)
def test_bad_config_is_a_spec_error(bad, match):
    with pytest.raises(SpecError, match=match):
        CrossEncoderTrainConfig(**{"dataset": "scifact", **bad})


def test_pooled_config_names_every_dataset_and_old_objective_names_still_work():
    config = CrossEncoderTrainConfig("scifact, nfcorpus,tatqa", objective="contrastive")
    assert config.names == ["scifact", "nfcorpus", "tatqa"] and config.objective == "infonce"
    assert config.default_out().name == "ce-scifact+nfcorpus+tatqa-infonce"
    assert config.trainer().lr == config.lr and config.trainer().objective == "infonce"


def test_default_output_folder_is_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTERANK_CACHE", str(tmp_path))
    config = CrossEncoderTrainConfig("/data/beir/scifact", objective="bce")
    assert config.default_out() == tmp_path / "models" / "ce-scifact-bce"


def test_losses_on_known_logits():
    import torch

    flat = torch.zeros(2, 4)
    assert math.isclose(float(ranking_loss("infonce", flat)), math.log(4), rel_tol=1e-6)
    assert math.isclose(float(ranking_loss("bce", flat)), math.log(2), rel_tol=1e-6)
    assert float(ranking_loss("contrastive", flat)) == float(ranking_loss("infonce", flat))
    separated = torch.tensor([[5.0, -5.0, -5.0]])
    assert float(ranking_loss("infonce", separated)) < 1e-3
    assert float(ranking_loss("bce", separated)) < 1e-2
    sharper = float(ranking_loss("infonce", torch.tensor([[1.0, 0.0]]), temperature=0.1))
    assert sharper < float(ranking_loss("infonce", torch.tensor([[1.0, 0.0]]), temperature=1.0))
    with pytest.raises(SpecError):
        ranking_loss("hinge", flat)


def test_select_queries_holds_out_a_seeded_disjoint_dev_set(scifact):
    train, held = select_queries(scifact, "train", 50, seed=3, holdout=20)
    again, held_again = select_queries(scifact, "train", 50, seed=3, holdout=20)
    assert len(train) == 50 and len(held) == 20
    assert [q.id for q in train] == [q.id for q in again] and [q.id for q in held] == [q.id for q in held_again]
    assert not {q.id for q in train} & {q.id for q in held}
    qrels = scifact.split_qrels("train")
    assert all(qrels.relevant(q.id) for q in train + held)
    everything, _ = select_queries(scifact, "train", None, seed=3)
    assert len(everything) == len([q for q in scifact.split_queries("train") if qrels.relevant(q.id)])
    with pytest.raises(RouterankError, match="too few"):
        select_queries(scifact, "train", None, seed=3, holdout=10_000)


def test_hard_negatives_come_from_the_miner_skip_relevant_documents_and_are_redrawn_per_seed(scifact):
    from routerank.pipeline import build

    queries, _ = select_queries(scifact, "train", 10, seed=1)
    pools = mine_pools(scifact, queries, "train", depth=10, minimum=3, seed=1, miner="bm25")
    qrels = scifact.split_qrels("train")
    bm25 = build("bm25", scifact.corpus).search(queries, 30)
    for query, pool in zip(queries, pools, strict=True):
        relevant = qrels.relevant(query.id)
        assert pool.query_id == query.id and {d for d, _ in pool.positives} == relevant
        assert pool.negatives_for(1) == [d for d in bm25[query.id].doc_ids if d not in relevant][:10]

    groups = sample_groups(pools, negatives=3, seed=1)
    assert len(groups) == sum(len(qrels.relevant(q.id)) for q in queries)
    texts = {d.full_text for q in queries for d in (scifact.corpus[x] for x in qrels.relevant(q.id))}
    for group in groups:
        assert len(set(group.negatives)) == 3 and not texts & set(group.negatives)
        assert group.pairs()[0] == (group.query, group.positive) and len(group.pairs()) == 4
    assert groups == sample_groups(pools, negatives=3, seed=1)
    assert groups != sample_groups(pools, negatives=3, seed=2)
    capped = sample_groups(pools, negatives=3, seed=1, positives_per_query=1)
    assert len(capped) == len(queries)


def test_graded_positives_meet_lower_grades_as_negatives_never_equal_or_better(nfcorpus):
    queries = [q for q in nfcorpus.split_queries("test")[:40]]
    qrels = nfcorpus.split_qrels("test")
    pools = mine_pools(nfcorpus, queries, "test", depth=20, minimum=2, seed=3, miner="bm25")
    grades = {(p.query_id, nfcorpus.corpus[d].full_text): g for p in pools for d, g in p.candidates}
    saw_graded = False
    for group in sample_groups(pools, negatives=2, seed=3):
        judged = qrels.judgments[group.query_id]
        positive_grade = max(g for d, g in judged.items() if nfcorpus.corpus[d].full_text == group.positive)
        below = [grades[group.query_id, text] for text in group.negatives]
        assert all(g < positive_grade for g in below)
        saw_graded |= any(g >= 1 for g in below)
    assert saw_graded, "no grade-2 positive met a grade-1 negative: the graded path went untested"


@pytest.fixture(scope="module", params=["bce", "infonce"])
def trained(request, scifact, tmp_path_factory):
    config = CrossEncoderTrainConfig("scifact", objective=request.param, **TINY)
    out = tmp_path_factory.mktemp("models") / f"ce-{request.param}"
    return config, train_cross_encoder(config, out, dataset=scifact, device="cpu", progress=False)


def _fresh_model(config):
    import torch

    torch.manual_seed(config.seed)
    return new_cross_encoder(config.base_model, config.max_length, device="cpu")


@pytest.mark.slow
def test_training_lowers_the_loss_on_its_groups(trained, scifact):
    config, result = trained
    queries, _ = select_queries(scifact, "train", config.max_queries, config.seed, holdout=config.dev_queries)
    pools = mine_pools(
        scifact, queries, "train", depth=config.negative_depth, minimum=1, seed=config.seed, miner="bm25"
    )
    groups = sample_groups(pools, config.negatives, config.seed)
    before = mean_loss(_fresh_model(config), groups, config.objective, config.temperature)
    from routerank.rerank.cross_encoder import load_cross_encoder

    after = mean_loss(load_cross_encoder(result.path, device="cpu"), groups, config.objective, config.temperature)
    assert after < before - 0.05, (before, after)


@pytest.mark.slow
def test_the_folder_holds_safetensors_a_manifest_and_a_step_log(trained):
    config, result = trained
    assert (result.path / "model.safetensors").is_file()
    assert not list(result.path.parent.glob(".*.tmp"))
    manifest = json.loads((result.path / MANIFEST).read_text())
    assert manifest["datasets"] == ["scifact"] and manifest["config"]["objective"] == config.objective
    assert manifest["negatives"]["miner"] == "bm25" and manifest["negatives"]["per_group"] == 1
    assert manifest["steps"] == result.steps and manifest["config"]["seed"] == config.seed
    assert manifest["seconds"]["training"] > 0 and manifest["queries"] == config.max_queries
    log = [json.loads(line) for line in (result.path / LOG).read_text().splitlines()]
    assert [r["total_step"] for r in log] == list(range(1, result.steps + 1))
    assert log[0]["loss"] == pytest.approx(result.first_loss, abs=1e-5)
    assert len(manifest["held_out_queries"]) == config.dev_queries and manifest["dev_groups"] >= 1
    assert manifest["dev"]["best_loss"] == pytest.approx(manifest["dev"]["final_loss"])
    assert not result.path.with_name(result.path.name + ".state").exists()


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights(scifact, tmp_path):
    from safetensors.torch import load_file

    config = CrossEncoderTrainConfig(
        "scifact", **{**TINY, "epochs": 2, "max_queries": 8, "save_every": 2, "eval_every": 2}
    )
    whole = train_cross_encoder(config, tmp_path / "whole", dataset=scifact, device="cpu", progress=False)
    with pytest.raises(TrainingInterrupted):
        train_cross_encoder(
            config, tmp_path / "broken", dataset=scifact, device="cpu", progress=False, stop_after_steps=2
        )
    assert (tmp_path / "broken.state" / "state.json").exists() and not (tmp_path / "broken").exists()
    resumed = train_cross_encoder(config, tmp_path / "broken", dataset=scifact, device="cpu", progress=False)
    assert resumed.manifest["resumed"] and resumed.steps == whole.steps
    a, b = load_file(str(whole.path / "model.safetensors")), load_file(str(resumed.path / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), atol=1e-6, err_msg=name)
    log = [json.loads(line) for line in (resumed.path / LOG).read_text().splitlines()]
    assert [r["total_step"] for r in log] == list(range(1, whole.steps + 1))
    assert [r["dev_loss"] for r in log if "dev_loss" in r] == pytest.approx(
        [r["dev_loss"] for r in map(json.loads, (whole.path / LOG).read_text().splitlines()) if "dev_loss" in r]
    )


@pytest.mark.slow
def test_the_trained_folder_reranks_as_a_ce_spec_and_differs_from_the_fresh_head(trained, scifact):
    from routerank.pipeline import build
    from routerank.rerank.cross_encoder import CrossEncoderReranker
    from routerank.rerank.registry import make_reranker

    config, result = trained
    reranker = make_reranker(f"ce:{result.path}", device="cpu", progress=False)
    assert reranker.max_length == config.max_length
    queries = scifact.split_queries("test")[:3]
    pairs = [(q.text, d.full_text) for q in queries for d in scifact.corpus.documents[:4]]
    fresh = CrossEncoderReranker.from_model(_fresh_model(config), progress=False)
    assert np.abs(reranker.score_pairs(pairs) - fresh.score_pairs(pairs)).max() > 1e-3

    run = build(f"bm25>>ce:{result.path}@10", scifact.corpus, reranker_options={"device": "cpu"}).search(queries, 10)
    bm25 = build("bm25", scifact.corpus).search(queries, 10)
    for query in queries:
        assert sorted(run[query.id].doc_ids) == sorted(bm25[query.id].doc_ids)
        expected = reranker.score_pairs([(query.text, scifact.corpus[d].full_text) for d in run[query.id].doc_ids])
        np.testing.assert_allclose(run[query.id].scores, expected, atol=1e-5)


def test_cli_trains_and_reports(scifact, tmp_path):
    from typer.testing import CliRunner

    from routerank.cli import app

    out = tmp_path / "cli-model"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "cross-encoder",
            "--dataset",
            str(scifact.path),
            "--objective",
            "bce",
            "--max-queries",
            "4",
            "--miner",
            "bm25",
            "--dev-queries",
            "2",
            "--negatives",
            "1",
            "--max-length",
            "32",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config"]["max_queries"] == 4
    assert (out / MANIFEST).is_file()


def test_cli_bad_objective_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "routerank.cli",
            "train",
            "cross-encoder",
            "--dataset",
            "scifact",
            "--objective",
            "hinge",
            "--out",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "routerank: error: unknown objective 'hinge' (fix: choose one of infonce, bce)"
    ]


@pytest.mark.slow
def test_frozen_embeddings_stay_put_and_the_packed_model_rebuilds_to_the_same_scores(scifact, tmp_path):
    from safetensors.torch import load_file

    from routerank.rerank.cross_encoder import (
        PARTIAL_WEIGHTS,
        CrossEncoderReranker,
        assemble_cross_encoder,
        pack_partial_cross_encoder,
    )

    config = CrossEncoderTrainConfig(
        "scifact", **{**TINY, "epochs": 1, "max_queries": 6}, freeze_embeddings=True, autocast="bf16"
    )
    result = train_cross_encoder(config, tmp_path / "ce", dataset=scifact, device="cpu", progress=False)
    trained = load_file(str(result.path / "model.safetensors"))
    fresh = _fresh_model(config).model.state_dict()
    embeddings = [name for name in trained if "embeddings." in name]
    assert embeddings and all(np.array_equal(trained[n].numpy(), fresh[n].numpy()) for n in embeddings)
    assert not np.array_equal(trained["classifier.weight"].numpy(), fresh["classifier.weight"].numpy())
    packed = pack_partial_cross_encoder(result.path, tmp_path / "packed")
    assert not [name for name in load_file(str(packed / PARTIAL_WEIGHTS)) if "embeddings." in name]
    assert (packed / PARTIAL_WEIGHTS).stat().st_size < 0.6 * (result.path / "model.safetensors").stat().st_size
    rebuilt = assemble_cross_encoder(packed, tmp_path / "rebuilt", max_length=config.max_length)
    pairs = [(q.text, "Vitamin D and cancer risk in older adults.") for q in scifact.split_queries("test")[:4]]
    original = CrossEncoderReranker(result.path, progress=False).score_pairs(pairs)
    again = CrossEncoderReranker(rebuilt, progress=False).score_pairs(pairs)
    np.testing.assert_allclose(again, original, atol=5e-3)  # fp16 weights: close, not bit-equal


def test_a_compact_folder_that_is_neither_kind_is_refused(tmp_path):
    from routerank.rerank.cross_encoder import assemble_cross_encoder

    with pytest.raises(SpecError, match="not a compact model folder"):
        assemble_cross_encoder(tmp_path, tmp_path / "out")


def test_bad_lora_rank_and_autocast_are_spec_errors():
    with pytest.raises(SpecError, match="lora_r"):
        CrossEncoderTrainConfig("scifact", lora_r=-1)
    with pytest.raises(SpecError, match="autocast"):
        CrossEncoderTrainConfig("scifact", autocast="fp8")
