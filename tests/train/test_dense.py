from __future__ import annotations

import json

import pytest

from routerank.train.dense import DenseTrainConfig, train_dense
from routerank.train.groups import mine_pools, sample_groups, select_queries


def test_defaults_are_the_bi_encoder_ones_and_the_data_fields_are_shared():
    config = DenseTrainConfig("scifact,nfcorpus")
    assert (config.negatives, config.temperature, config.lr) == (1, 0.05, 2e-5)
    assert config.default_out().name == "dense-scifact+nfcorpus" and config.trainer().temperature == 0.05


@pytest.fixture(scope="module")
def trained(scifact, tmp_path_factory):
    config = DenseTrainConfig(
        "scifact",
        miner="bm25",
        max_queries=12,
        batch_groups=4,
        dev_queries=4,
        max_length=64,
        epochs=2,
        lr=1e-4,
        eval_every=1000,
    )
    return config, train_dense(config, tmp_path_factory.mktemp("dense") / "dense", dataset=scifact, progress=False)


@pytest.mark.slow
def test_training_lowers_the_in_batch_loss_and_saves_safetensors(trained, scifact):
    import torch

    from routerank.retrieve.dense import load_sentence_transformer
    from routerank.train.dense import BiEncoderTrainable
    from routerank.train.losses import ranking_loss

    config, folder = trained
    manifest = json.loads((folder / "routerank_train.json").read_text())
    assert manifest["kind"] == "bi-encoder" and (folder / "model.safetensors").is_file()
    queries, _ = select_queries(scifact, "train", config.max_queries, config.seed, holdout=config.dev_queries)
    pools = mine_pools(scifact, queries, "train", depth=30, minimum=1, seed=config.seed, miner="bm25")
    groups = sample_groups(pools, 1, config.seed)[:8]

    def loss(model):
        model.eval()
        with torch.inference_mode():
            logits = BiEncoderTrainable(model).group_logits(groups)
        return float(ranking_loss("infonce", logits, 0.05))

    before = loss(load_sentence_transformer("minilm", device="cpu"))
    after = loss(load_sentence_transformer(f"st:{folder}", device="cpu"))
    assert after < before - 0.05, (before, after)


@pytest.mark.slow
def test_the_folder_retrieves_as_a_dense_spec_and_its_index_is_keyed_by_its_weights(trained, tiny_beir):
    from routerank.data.registry import load_dataset
    from routerank.pipeline import build, make_retriever

    _, folder = trained
    ds = load_dataset(str(tiny_beir))
    run = build(f"rrf(bm25,dense:st:{folder})", ds.corpus).search(ds.split_queries("test"), 3)
    assert run["q1"].doc_ids[0] == "d1" and run["q2"].doc_ids[0] == "d2"
    cached = build(f"rrf(bm25,dense:st:{folder})", ds.corpus).search(ds.split_queries("test"), 3)  # from the cache
    assert cached == run
    plain = make_retriever("dense").config()
    tuned = make_retriever(f"dense:st:{folder}").config()
    assert "weights" not in plain and len(tuned["weights"]) == 16
