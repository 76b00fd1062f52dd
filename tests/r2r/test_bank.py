from __future__ import annotations

import json

import numpy as np
import pytest

from routerank.models.llm import tiny_llm
from routerank.r2r.bank import GENERALIST, ExpertBank, ExpertMismatchError
from routerank.r2r.trainer import ExpertConfig, ExpertTrainer, mine_examples
from routerank.rerank.pointwise import PointwiseLLMReranker

# trains two tiny LoRA experts (~16 s) and scores with each (4-5 s a test) on 2 idle cores: out of the fast lane
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def experts(scifact, tmp_path_factory):
    """Two tiny LoRA experts trained on different SciFact query slices."""
    root = tmp_path_factory.mktemp("experts")
    folders = {}
    for domain, queries in (
        ("science", scifact.split_queries("train")[:4]),
        ("medicine", scifact.split_queries("train")[4:8]),
    ):
        examples = mine_examples(scifact, queries, "train", negatives=1)
        config = ExpertConfig(
            dataset="scifact",
            domain=domain,
            negatives=1,
            max_doc_tokens=16,
            lr=2e-2,
            lora_r=4,
            lora_alpha=8,
            grad_accum=1,
            save_every=100,
            eval_every=100,
        )
        folders[domain] = ExpertTrainer(config, root / domain, loaded=tiny_llm(seed=0), progress=False).fit(
            examples, []
        )
    return folders


PAIRS = [
    ("does aspirin help", "Aspirin lowers the risk of heart attack."),
    ("does aspirin help", "Cats purr."),
    ("statins and cholesterol", "Statins lower LDL cholesterol."),
]


@pytest.fixture(scope="module")
def bank(experts):
    return ExpertBank(experts, loaded=tiny_llm(seed=0), cache=False, max_doc_tokens=16)


def test_switching_adapters_changes_scores_and_generalist_is_the_bare_backbone(bank):
    science = bank.score_pairs(PAIRS, ["science"] * 3)
    medicine = bank.score_pairs(PAIRS, ["medicine"] * 3)
    generalist = bank.score_pairs(PAIRS, [GENERALIST] * 3)
    assert not np.allclose(science, medicine, atol=1e-6) and not np.allclose(science, generalist, atol=1e-6)
    bare = PointwiseLLMReranker.from_model(*tiny_llm(seed=0), progress=False, max_doc_tokens=16)
    assert np.allclose(generalist, bare.score_pairs(PAIRS), atol=1e-6)


def test_a_mixed_batch_matches_scoring_each_expert_alone(bank):
    mixed = bank.score_pairs(PAIRS, ["science", "medicine", GENERALIST])
    alone = [bank.score_pairs([p], [e])[0] for p, e in zip(PAIRS, ["science", "medicine", GENERALIST], strict=True)]
    assert np.allclose(mixed, alone, atol=1e-6)


def test_an_expert_from_another_backbone_is_refused(experts, tmp_path):
    import shutil

    copy = tmp_path / "foreign"
    shutil.copytree(experts["science"], copy)
    manifest = json.loads((copy / "routerank_expert.json").read_text())
    manifest["backbone_fingerprint"] = "0" * 16
    (copy / "routerank_expert.json").write_text(json.dumps(manifest))
    with pytest.raises(ExpertMismatchError, match="trained on backbone"):
        ExpertBank({"science": copy}, loaded=tiny_llm(seed=0), cache=False)


def test_r2r_routes_then_reranks_with_the_chosen_expert(experts, bank, scifact, tmp_path):
    from routerank.pipeline import build
    from routerank.r2r.reranker import R2RReranker, save_bank
    from routerank.r2r.routers import SoftmaxRouter

    train = scifact.split_queries("train")[:20]
    labels = ["science" if i % 2 else "medicine" for i in range(len(train))]
    router = SoftmaxRouter(["science", "medicine"], bank.hidden_state).fit([q.text for q in train], labels, epochs=50)
    save_bank(tmp_path / "bank", "smollm2", experts, router)
    r2r = R2RReranker.from_spec(str(tmp_path / "bank"), loaded=tiny_llm(seed=0), cache=False, max_doc_tokens=16)
    queries = scifact.split_queries("test")[:3]
    run = build("bm25", scifact.corpus).search(queries, 5)
    reranked = r2r.rerank_run(queries, run, scifact.corpus, depth=5)
    chosen = [d.choice for d in r2r.last_decisions]
    for query, expert in zip(queries, chosen, strict=True):
        docs = [scifact.corpus[d] for d in run[query.id].doc_ids]
        expected = r2r.bank.score_pairs([(query.text, d.full_text) for d in docs], [expert] * len(docs))
        assert sorted(reranked[query.id].scores, reverse=True) == pytest.approx(sorted(expected, reverse=True))
    assert r2r.routing_seconds > 0 and r2r.scoring_seconds > 0
