"""R2R on a cross-encoder backbone: the same expert trainer, bank, router and `r2r:` spec as on an LLM."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routerank.models.backends import CalibrationGroup
from routerank.r2r import bank as bank_module
from routerank.r2r.bank import GENERALIST, ExpertBank, ExpertMismatchError
from routerank.r2r.trainer import ExpertConfig, ExpertTrainer, mine_examples


def _config(backbone: str, dataset: str, domain: str) -> ExpertConfig:
    return ExpertConfig(
        dataset,
        domain,
        backbone=backbone,
        negatives=2,
        max_doc_tokens=64,
        grad_accum=2,
        epochs=1,
        lr=5e-3,
        lora_r=4,
        lora_alpha=8,
        save_every=2,
        eval_every=2,
        patience=99,
    )


@pytest.fixture(scope="module")
def experts(fresh_ce, scifact, nfcorpus, tmp_path_factory):
    backbone = f"ce:{fresh_ce}"
    out = {}
    for ds, domain in ((scifact, "science"), (nfcorpus, "medical")):
        groups = mine_examples(ds, ds.split_queries("train")[:8], "train", negatives=2)
        trainer = ExpertTrainer(
            _config(backbone, ds.name, domain), tmp_path_factory.mktemp(domain) / domain, progress=False
        )
        out[domain] = trainer.fit(groups[:6], groups[:2])  # dev seen in training: a step beats the start
    return backbone, out


def test_encoder_experts_are_lora_adapters_on_the_attention_and_dense_layers(experts):
    backbone, folders = experts
    manifest = json.loads((folders["science"] / "routerank_expert.json").read_text())
    assert manifest["backbone"] == backbone and manifest["backbone_fingerprint"].startswith("ce-")
    adapter = json.loads((folders["science"] / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"query", "key", "value", "dense"}
    from safetensors.torch import load_file

    weights = load_file(str(folders["science"] / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # training moved them


def test_bank_switches_encoder_experts_and_the_generalist_is_the_bare_cross_encoder(experts, fresh_ce, scifact):
    from routerank.rerank.registry import make_reranker

    backbone, folders = experts
    bank = ExpertBank(folders, backbone, max_doc_tokens=64, cache=False)
    query = scifact.split_queries("test")[0]
    pairs = [(query.text, d.full_text) for d in scifact.corpus.documents[:5]]
    plain = make_reranker(f"ce:{fresh_ce}", max_length=64, progress=False).score_pairs(pairs)
    np.testing.assert_allclose(bank.score_pairs(pairs, [GENERALIST] * 5), plain, atol=1e-5)
    science = bank.score_pairs(pairs, ["science"] * 5)
    medical = bank.score_pairs(pairs, ["medical"] * 5)
    assert np.abs(science - plain).max() > 1e-4 and np.abs(science - medical).max() > 1e-4
    mixed = bank.score_pairs(pairs, ["science", "medical", GENERALIST, "science", "medical"])
    np.testing.assert_allclose(mixed, [science[0], medical[1], plain[2], science[3], medical[4]], atol=1e-5)
    states = bank.hidden_state(["aspirin and heart attacks", "tax on capital gains"])
    assert states.shape == (2, 384) and np.abs(states[0] - states[1]).max() > 1e-3


def test_the_bank_scores_with_the_adapter_merged_and_restores_the_base_weights_exactly(experts, scifact):
    from peft.tuners.lora import LoraLayer

    backbone, folders = experts
    bank = ExpertBank(folders, backbone, max_doc_tokens=64, cache=False)
    layers = [m for m in bank.peft.modules() if isinstance(m, LoraLayer)]
    before = [m.get_base_layer().weight.detach().clone() for m in layers]
    query = scifact.split_queries("test")[2]
    pairs = [(query.text, d.full_text) for d in scifact.corpus.documents[:6]]
    merged = bank.score_pairs(pairs, ["science"] * 3 + ["medical"] * 3)
    assert all(m.merged_adapters == [] for m in layers)  # nothing stays merged
    for layer, weight in zip(layers, before, strict=True):
        assert layer.get_base_layer().weight.equal(weight)  # bit for bit, not merely close
    unmerged = []
    for expert, rows in (("science", pairs[:3]), ("medical", pairs[3:])):
        bank.peft.set_adapter(expert)  # peft's own unmerged LoRA forward, the reference
        unmerged += bank.scorers[expert].score_pairs(rows).tolist()
    np.testing.assert_allclose(merged, unmerged, atol=1e-4)


def test_a_bf16_bank_loads_fp32_trained_experts_scores_close_to_fp32_and_caches_apart(experts, scifact, tmp_path):
    from routerank.errors import SpecError
    from routerank.rerank.backbones import LLMBackbone

    backbone, folders = experts
    fp32 = ExpertBank(folders, backbone, max_doc_tokens=64, cache=False)
    bf16 = ExpertBank(folders, backbone, max_doc_tokens=64, cache=True, dtype="bf16")  # same fingerprint: loads
    assert bf16.base.fingerprint == fp32.base.fingerprint and bf16.base.ce.dtype == "bf16"
    assert all(scorer.dtype == "bf16" for scorer in bf16.scorers.values())
    assert (
        bf16.scorers["science"]._cache.path
        != ExpertBank(folders, backbone, max_doc_tokens=64).scorers["science"]._cache.path
    )  # bf16 scores never answer an fp32 lookup
    query = scifact.split_queries("test")[1]
    pairs = [(query.text, d.full_text) for d in scifact.corpus.documents[:6]]
    for expert in ("science", GENERALIST):
        low, full = bf16.score_pairs(pairs, [expert] * 6), fp32.score_pairs(pairs, [expert] * 6)
        assert np.abs(low - full).max() < 0.05 * (np.abs(full).max() + 1)
    with pytest.raises(SpecError, match="cross-encoder backbone option"):
        LLMBackbone("smollm2", dtype="bf16")


def test_an_encoder_bank_with_a_latent_router_reranks_as_an_r2r_spec(experts, scifact, nfcorpus, tmp_path):
    from routerank.pipeline import build
    from routerank.r2r.reranker import save_bank
    from routerank.r2r.routers import SoftmaxRouter

    backbone, folders = experts
    bank = ExpertBank(folders, backbone, max_doc_tokens=64, cache=False)
    texts = [q.text for q in scifact.split_queries("train")[:40]] + [
        q.text for q in nfcorpus.split_queries("train")[:40]
    ]
    labels = ["science"] * 40 + ["medical"] * 40
    router = SoftmaxRouter(["science", "medical"], bank.hidden_state).fit(texts, labels, epochs=200)
    test = [q.text for q in scifact.split_queries("test")[:20]] + [q.text for q in nfcorpus.split_queries("test")[:20]]
    accuracy = np.mean(
        [d.choice == t for d, t in zip(router.route(test), ["science"] * 20 + ["medical"] * 20, strict=True)]
    )
    assert accuracy >= 0.8, accuracy
    save_bank(tmp_path / "bank", backbone, folders, router)
    queries = scifact.split_queries("test")[:2]
    run = build(
        f"bm25>>r2r:{tmp_path / 'bank'}@5", scifact.corpus, reranker_options={"max_doc_tokens": 64, "cache": False}
    ).search(queries, 5)
    bm25 = build("bm25", scifact.corpus).search(queries, 5)
    for query in queries:
        assert sorted(run[query.id].doc_ids) == sorted(bm25[query.id].doc_ids)


def test_an_expert_from_another_backbone_is_refused(experts, tmp_path):
    import torch

    from routerank.train.cross_encoder import new_cross_encoder

    _, folders = experts
    torch.manual_seed(1)
    other = tmp_path / "other-ce"
    new_cross_encoder("minilm", max_length=64, device="cpu").save_pretrained(str(other), create_model_card=False)
    with pytest.raises(ExpertMismatchError, match="trained on backbone"):
        ExpertBank(folders, f"ce:{other}", max_doc_tokens=64, cache=False)


@pytest.mark.slow  # three ONNX exports
def test_each_expert_scores_with_its_own_exported_graph(experts, scifact, monkeypatch):
    pytest.importorskip("onnxruntime")
    backbone, folders = experts
    docs = tuple(d.full_text for d in scifact.corpus.documents[:6])
    groups = tuple(CalibrationGroup(q.text, docs) for q in scifact.split_queries("train")[:3])
    monkeypatch.setattr(bank_module, "calibration_groups", lambda: (groups, "hand-written"))
    torch_bank = ExpertBank(folders, backbone, max_doc_tokens=64, cache=False)
    fast = ExpertBank(folders, backbone, max_doc_tokens=64, cache=False, backend="onnx")
    assert fast.backend == "onnx" and all(s.exported is not None for s in fast.scorers.values())
    query = scifact.split_queries("test")[0]
    pairs = [(query.text, d) for d in docs[:4]]
    experts_named = ["science", "medical", GENERALIST, "science"]
    np.testing.assert_allclose(
        fast.score_pairs(pairs, experts_named), torch_bank.score_pairs(pairs, experts_named), atol=1e-4
    )
    graphs = {s.exported.folder for s in fast.scorers.values()}
    assert len(graphs) == 3  # the generalist and each expert: three merged models, three graphs
