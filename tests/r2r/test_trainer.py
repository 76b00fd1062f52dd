from __future__ import annotations

import json

import pytest

from routerank.errors import SpecError
from routerank.r2r.trainer import ExpertConfig, ExpertTrainer, abstract_examples, mine_examples
from routerank.train.loop import TrainingInterrupted
from routerank.train.losses import infonce, pointwise_bce


@pytest.fixture(scope="module")
def examples(scifact):
    queries = scifact.split_queries("train")[:6]
    return mine_examples(scifact, queries, "train", negatives=2)


def config(tmp_objective="contrastive", **overrides):
    base = dict(
        dataset="scifact",
        domain="science",
        objective=tmp_objective,
        negatives=2,
        max_doc_tokens=24,
        grad_accum=2,
        epochs=2,
        lr=5e-3,
        lora_r=4,
        lora_alpha=8,
        save_every=1,
        eval_every=2,
        patience=99,
    )
    base.update(overrides)
    return ExpertConfig(**base)


def lora_weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_mined_examples_have_a_judged_positive_and_unjudged_negatives(scifact, examples):
    qrels = scifact.split_qrels("train")
    assert len(examples) >= 5
    for ex in examples:
        assert len(ex.negatives) == 2 and ex.positive not in ex.negatives
        relevant_texts = {scifact.corpus[d].full_text for d in qrels.relevant(ex.query_id)}
        assert ex.positive in relevant_texts and not relevant_texts & set(ex.negatives)


def test_losses():
    import torch

    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    assert infonce(logits)[()] == pytest.approx(
        (torch.log1p(2 * torch.exp(torch.tensor(-5.0))) + torch.log(2 + torch.exp(torch.tensor(5.0)))).item() / 2,
        rel=1e-5,
    )
    assert pointwise_bce(torch.tensor([[10.0, -10.0]])).item() < 1e-3
    with pytest.raises(SpecError):
        ExpertConfig(dataset="x", domain="y", objective="ranknet")


@pytest.mark.slow
def test_resume_after_kill_reaches_the_same_weights(examples, tmp_path):
    import torch

    from routerank.models.llm import tiny_llm

    dev = examples[:2]  # seen in training, so some step beats the start (which would otherwise ship unchanged)
    full = ExpertTrainer(config(), tmp_path / "full", loaded=tiny_llm(seed=0), progress=False)
    full_out = full.fit(examples[:-1], dev)
    killed = ExpertTrainer(config(), tmp_path / "resumed", loaded=tiny_llm(seed=0), progress=False)
    with pytest.raises(TrainingInterrupted):
        killed.fit(examples[:-1], dev, stop_after_steps=3)
    assert (tmp_path / "resumed.state" / "state.safetensors").exists()
    resumed = ExpertTrainer(config(), tmp_path / "resumed", loaded=tiny_llm(seed=0), progress=False)
    resumed_out = resumed.fit(examples[:-1], dev)
    a, b = lora_weights(full_out), lora_weights(resumed_out)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)  # training moved the weights
    manifest = json.loads((resumed_out / "routerank_expert.json").read_text())
    assert manifest["domain"] == "science" and manifest["metrics"]["resumed"] is True
    assert not (tmp_path / "resumed.state").exists()
    log = [json.loads(line) for line in (resumed_out / "train_log.jsonl").read_text().splitlines()]
    assert any("dev_loss" in r for r in log)


@pytest.mark.slow
def test_a_different_config_will_not_resume_someone_elses_checkpoint(examples, tmp_path):
    from routerank.errors import RouterankError
    from routerank.models.llm import tiny_llm

    trainer = ExpertTrainer(config(), tmp_path / "x", loaded=tiny_llm(seed=0), progress=False)
    with pytest.raises(TrainingInterrupted):
        trainer.fit(examples, [], stop_after_steps=1)
    other = ExpertTrainer(config(lr=1e-3), tmp_path / "x", loaded=tiny_llm(seed=0), progress=False)
    with pytest.raises(RouterankError, match="different training run"):
        other.fit(examples, [])


@pytest.mark.slow
def test_eag_trains_two_stages_on_abstracted_then_original(examples, tmp_path):
    from routerank.models.llm import tiny_llm
    from routerank.r2r.eag import EntityAbstractor

    abstracted = abstract_examples(examples, EntityAbstractor())
    assert any("[" in ex.query + ex.positive for ex in abstracted)
    trainer = ExpertTrainer(
        config("sft", eag=True, epochs=1), tmp_path / "eag", loaded=tiny_llm(seed=0), progress=False
    )
    out = trainer.fit(examples, [], abstracted=abstracted)
    stages = {json.loads(line)["stage"] for line in (out / "train_log.jsonl").read_text().splitlines()}
    assert stages == {0, 1}


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_gradient_accumulation_equals_the_full_batch_gradient(examples, tmp_path):
    from routerank.models.llm import tiny_llm
    from routerank.train.losses import ranking_loss

    trainer = ExpertTrainer(config(), tmp_path / "acc", loaded=tiny_llm(seed=0), progress=False)
    trainer.model.eval()  # LoRA dropout off, so both paths see the same function
    batch = examples[:3]
    trainer.optimizer.zero_grad()
    ranking_loss("contrastive", trainer.logits([ex.pairs() for ex in batch])).backward()
    full = [p.grad.clone() for p in trainer.params]
    loss = trainer.accumulate(batch)
    accumulated = [p.grad.clone() for p in trainer.params]
    assert loss > 0 and any(g.abs().sum() > 0 for g in full)
    assert all(torch_allclose(a, b) for a, b in zip(full, accumulated, strict=True))


def torch_allclose(a, b) -> bool:
    import torch

    return torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_dev_from_backbone_takes_the_backbones_held_out_queries_and_never_trains_on_them(tmp_path, scifact):
    from routerank.data.devsplit import MANIFEST
    from routerank.errors import RouterankError
    from routerank.r2r.trainer import config_json, split_train_dev

    folder = tmp_path / "ce"
    folder.mkdir()
    held = [q.id for q in scifact.split_queries("train")[:30]]
    (folder / MANIFEST).write_text(
        json.dumps({"sources": {"scifact": {"split": "train", "dev_split": "train", "dev_queries": held}}})
    )
    clean = config(backbone=f"ce:{folder}", dev_from_backbone=True, max_queries=None, dev_queries=20)
    train, dev, _, dev_split = split_train_dev(scifact, clean)
    assert dev_split == "train" and len(dev) == 20 and {q.id for q in dev} <= set(held)
    assert not {q.id for q in train} & set(held) and len(train) == len(scifact.split_queries("train")) - 30
    old = config(backbone=f"ce:{folder}", max_queries=None, dev_queries=20)
    old_train = {q.id for q in split_train_dev(scifact, old)[0]}
    assert old_train & set(held)  # the seeded split trains on some of the backbone's held-out queries
    # the setting is recorded only away from its old value, so adapters trained before it still match
    assert "dev_from_backbone" not in config_json(old) and config_json(clean)["dev_from_backbone"] is True
    (folder / MANIFEST).write_text(json.dumps({"sources": {}}))
    with pytest.raises(RouterankError, match="holds out no train queries of scifact"):
        split_train_dev(scifact, clean)
