from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from routerank.errors import RouterankError, SpecError
from routerank.train.dear import DeARConfig, Stage1Trainer, Stage2Trainer, stage1_loss, train_dear
from routerank.train.distill import ScoredList, Teacher, TeacherCache
from routerank.train.loop import TrainingInterrupted
from routerank.train.losses import distill_ce, distillation_loss, listwise_kl, ranknet

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


# losses against hand computation ---------------------------------------------------------------------------------


def test_distill_ce_is_binary_cross_entropy_on_judged_labels():
    import torch

    logits = torch.tensor([[2.0, -1.0, 0.5]])
    labels = torch.tensor([[1, 0, 2]])  # grade 2 counts as relevant
    by_hand = -(math.log(sigmoid(2.0)) + math.log(1 - sigmoid(-1.0)) + math.log(sigmoid(0.5))) / 3
    assert distill_ce(logits, labels).item() == pytest.approx(by_hand, rel=1e-6)


def test_ranknet_scores_every_pair_the_teacher_orders_and_skips_ties():
    import torch

    logits = torch.tensor([[1.0, 0.0, 2.0]])
    teacher = torch.tensor([[0.9, 0.5, 0.5]])  # 0 above 1 and above 2; 1 and 2 tie
    by_hand = (math.log1p(math.exp(0.0 - 1.0)) + math.log1p(math.exp(2.0 - 1.0))) / 2
    assert ranknet(logits, teacher).item() == pytest.approx(by_hand, rel=1e-6)
    assert ranknet(logits, torch.tensor([[0.3, 0.3, 0.3]])).item() == 0.0


def test_listwise_kl_is_the_teacher_to_student_divergence_with_both_temperatures():
    import torch

    p = softmax([1.0 / 0.5, 0.0 / 0.5, 0.5 / 0.5])  # teacher at temperature 0.5
    q = softmax([0.0 / 2, 1.0 / 2, 3.0 / 2])  # student at temperature 2
    by_hand = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True)) * 2**2
    value = listwise_kl(torch.tensor([[0.0, 1.0, 3.0]]), torch.tensor([[1.0, 0.0, 0.5]]), 2.0, 0.5)
    assert value.item() == pytest.approx(by_hand, rel=1e-5)
    same = listwise_kl(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 2.0]]))
    assert same.item() == pytest.approx(0.0, abs=1e-7)


def test_the_distillation_loss_is_the_weighted_sum_and_a_zero_weight_removes_its_term():
    import torch

    logits = torch.tensor([[1.0, -0.5, 0.2, 0.0], [0.3, 0.1, -1.0, 2.0]], requires_grad=True)
    teacher = torch.tensor([[0.9, 0.1, 0.5, 0.0], [0.2, 0.8, 0.4, 1.0]])
    labels = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0]])
    ce, rn, kl = distill_ce(logits, labels), ranknet(logits, teacher), listwise_kl(logits, teacher, 1.0, 0.1)
    weights = dict(w_ce=0.5, w_ranknet=2.0, w_kl=3.0, teacher_temperature=0.1)
    total, terms = distillation_loss(logits, teacher, labels, **weights)
    assert total.item() == pytest.approx(0.5 * ce.item() + 2.0 * rn.item() + 3.0 * kl.item(), rel=1e-6)
    assert terms == pytest.approx({"ce": ce.item(), "ranknet": rn.item(), "kl": kl.item()})
    without_kl, terms = distillation_loss(logits, teacher, labels, w_ce=0.5, w_ranknet=2.0, w_kl=0.0)
    assert set(terms) == {"ce", "ranknet"}
    assert without_kl.item() == pytest.approx(0.5 * ce.item() + 2.0 * rn.item(), rel=1e-6)
    only_kl, terms = distillation_loss(logits, teacher, labels, w_ce=0, w_ranknet=0, w_kl=1.0, teacher_temperature=0.1)
    assert set(terms) == {"kl"} and only_kl.item() == pytest.approx(kl.item(), rel=1e-6)
    only_kl.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


# config ----------------------------------------------------------------------------------------------------------


def test_the_run_name_says_which_terms_are_on():
    assert DeARConfig().name == "dear-ce+ranknet+kl"
    assert DeARConfig(w_ce=0).name == "dear-ranknet+kl"
    assert DeARConfig(w_ranknet=0, w_kl=0).name == "dear-ce"


@pytest.mark.parametrize(
    "settings, needle",
    [
        ({"w_kl": -1.0}, "must be 0 or more: w_kl"),
        ({"w_ce": 0, "w_ranknet": 0, "w_kl": 0}, "every stage-1 loss weight is 0"),
        ({"alpha": "sometimes"}, "bad teacher alpha"),
        ({"alpha": 1.5}, "outside [0, 1]"),
        ({"depth": 1}, "at least 2 documents"),
        ({"backbone": "ce:/models/ce"}, "not a cross-encoder"),
        ({"datasets": ()}, "at least one training dataset"),
        ({"teacher": " "}, "teacher spec is empty"),
        ({"teacher_temperature": 0}, "teacher_temperature must be positive"),
        ({"max_queries": -3}, "max_queries must be at least 1"),
    ],
)
def test_bad_settings_are_spec_errors_that_say_what_is_wrong(settings, needle):
    with pytest.raises(SpecError, match=None) as caught:
        DeARConfig(**settings)
    assert needle in str(caught.value)


def test_alpha_accepts_numbers_auto_and_none_and_datasets_a_comma_list():
    assert DeARConfig(alpha="0.3").alpha == 0.3 and DeARConfig(alpha="none").teacher_setting().alpha is None
    assert DeARConfig(datasets="scifact, nfcorpus").datasets == ("scifact", "nfcorpus")
    assert DeARConfig(max_queries=0).max_queries is None


def test_the_cpu_and_gpu_configs_parse_and_the_cpu_one_is_small():
    from routerank.stages import read_toml_config

    def read(name):
        return read_toml_config(
            DeARConfig, CONFIGS / name, tuples=("datasets", "target_modules"), none_if_zero=("max_queries",)
        )

    cpu, gpu = read("dear-cpu.toml"), read("dear-gpu.toml")
    assert cpu.backbone == "smollm2" and set(cpu.datasets) == {"scifact", "nfcorpus"}
    assert cpu.max_queries * len(cpu.datasets) <= 300 and cpu.max_doc_tokens == 128 and cpu.depth <= 10
    assert gpu.max_queries is None and gpu.depth > cpu.depth
    assert "hf:Qwen/Qwen2.5-0.5B-Instruct" in (CONFIGS / "dear-gpu.toml").read_text()


# the teacher's lists ---------------------------------------------------------------------------------------------


class RefusingTeacher:
    """Stands in for the teacher when every score must come from the cache."""

    name = "refusing"

    def rerank_run(self, *args, **kwargs):
        raise AssertionError("the teacher was asked to score")


def test_teacher_scores_are_cached_once_and_equal_the_interpolated_pipeline(scifact, fresh_ce, tmp_path):
    from routerank.pipeline import build

    queries = scifact.split_queries("train")[:5]
    teacher = Teacher(f"ce:{fresh_ce}", alpha=0.5, depth=4, chunk=2)
    first = TeacherCache(teacher, cache_dir=tmp_path, progress=False)
    partial = first.lists(scifact, queries[:3], "train")
    assert first.scored == 3 * 4
    lists = TeacherCache(teacher, cache_dir=tmp_path, progress=False).lists(scifact, queries, "train")
    again = TeacherCache(teacher, cache_dir=tmp_path, reranker=RefusingTeacher(), progress=False)
    assert again.lists(scifact, queries, "train") == lists and again.scored == 0
    assert lists[:3] == partial
    pipeline = build(f"bm25>>ce:{fresh_ce}@4~0.5", scifact.corpus).search(queries, 4)
    qrels = scifact.split_qrels("train")
    for item in lists:
        expected = pipeline[item.query_id].as_dict()
        assert item.teacher == pytest.approx([expected[d] for d in item.doc_ids], abs=1e-6)  # float32 batches
        assert item.labels == tuple(qrels.judgments[item.query_id].get(d, 0) for d in item.doc_ids)
        assert item.documents == tuple(scifact.corpus[d].full_text for d in item.doc_ids)
    raw = TeacherCache(Teacher(f"ce:{fresh_ce}", depth=4), cache_dir=tmp_path, reranker=RefusingTeacher())
    assert raw.lists(scifact, queries, "train")[0].teacher != lists[0].teacher  # raw scores: re-mixed, not rescored


# stage 1 on a tiny model -----------------------------------------------------------------------------------------

DOCS = [
    "Aspirin lowers the risk of heart attack in adults.",
    "Statins reduce LDL cholesterol.",
    "Cats purr when they are content.",
    "The stock market fell on Tuesday.",
]


def toy_lists() -> list[ScoredList]:
    """Four medical queries over the same four documents: the teacher ranks them by topic, the same in each list,
    and judges the first relevant; the candidates arrive in a different order per query."""
    queries = ["does aspirin prevent heart attacks", "heart attack risk", "aspirin dosage", "aspirin and the heart"]
    grades = {0: (1.0, 1), 1: (0.6, 0), 2: (0.3, 0), 3: (0.0, 0)}
    lists = []
    for i, query in enumerate(queries):
        order = [(j + i) % 4 for j in range(4)]
        lists.append(
            ScoredList(
                f"q{i}",
                query,
                tuple(f"d{j}" for j in order),
                tuple(DOCS[j] for j in order),
                tuple(grades[j][0] for j in order),
                tuple(grades[j][1] for j in order),
            )
        )
    return lists


def tiny_config(**overrides) -> DeARConfig:
    base = dict(
        datasets=("scifact",),
        max_queries=6,
        dev_queries=0,
        depth=4,
        max_doc_tokens=16,
        lora_r=4,
        lora_alpha=8,
        lr=5e-3,
        stage2_lr=5e-3,
        epochs=2,
        stage2_epochs=2,
        grad_accum=2,
        stage2_grad_accum=2,
        save_every=1,
        eval_every=2,
        patience=99,
    )
    base.update(overrides)
    return DeARConfig(**base)


def adapter_weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "adapter_model.safetensors"))


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_stage1_lowers_the_distillation_loss_and_logs_each_term(tmp_path):
    from routerank.models.llm import tiny_llm

    config = tiny_config(epochs=4, grad_accum=1, save_every=100, eval_every=4)
    lists = toy_lists()
    out = Stage1Trainer(config, tmp_path / "stage1", loaded=tiny_llm(seed=0), progress=False).fit(lists, lists)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    start = log[0]["dev_loss"]  # measured before the first step
    assert log[0]["total_step"] == 0 and min(r["dev_loss"] for r in log if "dev_loss" in r) < 0.7 * start
    steps = [r for r in log if "loss" in r]
    assert all({"ce", "ranknet", "kl"} <= set(r) for r in steps)
    manifest = json.loads((out / "routerank_adapter.json").read_text())
    assert manifest["reranker"] == "pointwise" and manifest["run"] == "dear-ce+ranknet+kl" and manifest["stage"] == 1
    assert manifest["reranker_spec"].startswith(f"pointwise:smollm2,adapter={out}")
    assert not (tmp_path / "stage1.state").exists()


@pytest.mark.slow
def test_stage1_resumed_after_a_kill_reaches_the_weights_of_an_unbroken_run(tmp_path):
    import torch

    from routerank.models.llm import tiny_llm

    config, lists = tiny_config(), toy_lists()
    full = Stage1Trainer(config, tmp_path / "full", loaded=tiny_llm(seed=0), progress=False).fit(lists, [])
    killed = Stage1Trainer(config, tmp_path / "resumed", loaded=tiny_llm(seed=0), progress=False)
    with pytest.raises(TrainingInterrupted):
        killed.fit(lists, [], stop_after_steps=3)
    assert (tmp_path / "resumed.state" / "state.safetensors").exists()
    resumed = Stage1Trainer(config, tmp_path / "resumed", loaded=tiny_llm(seed=0), progress=False).fit(lists, [])
    a, b = adapter_weights(full), adapter_weights(resumed)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)  # training moved the weights
    log = (resumed / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["total_step"] for line in log] == [1, 2, 3, 4]


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_the_stage1_adapter_loads_as_a_pointwise_reranker_with_the_trained_scores(tmp_path):
    import torch

    from routerank.models.llm import tiny_llm
    from routerank.rerank.pointwise import PointwiseLLMReranker

    config, lists = tiny_config(epochs=1), toy_lists()
    trainer = Stage1Trainer(config, tmp_path / "stage1", loaded=tiny_llm(seed=0), progress=False)
    folder = trainer.fit(lists, [])
    pairs = lists[0].pairs()
    trainer.model.eval()
    with torch.inference_mode():
        trained = torch.sigmoid(trainer.backbone.relevance_logits(pairs)).tolist()
    reranker = PointwiseLLMReranker.from_spec(
        f"custom,adapter={folder},max_doc_tokens=16", _loaded=tiny_llm(seed=0), cache=False, progress=False
    )
    assert reranker.score_pairs(pairs) == pytest.approx(trained, abs=1e-5)
    bare = PointwiseLLMReranker.from_model(*tiny_llm(seed=0), max_doc_tokens=16, progress=False)
    assert bare.score_pairs(pairs) != pytest.approx(trained, abs=1e-5)
    assert "+stage1@" in reranker.name and reranker.scorer_key != bare.scorer_key


@pytest.mark.slow
def test_an_hf_backbone_trains_and_its_adapter_loads_through_the_reranker_spec(tmp_path):
    from routerank.models.llm import tiny_llm
    from routerank.rerank.adapters import AdapterMismatchError
    from routerank.rerank.registry import make_reranker

    model, tokenizer = tiny_llm(seed=0)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    backbone = f"hf:{tmp_path / 'tiny'}"
    config = tiny_config(backbone=backbone, epochs=1)
    folder = Stage1Trainer(config, tmp_path / "stage1", progress=False).fit(toy_lists(), [])
    manifest = json.loads((folder / "routerank_adapter.json").read_text())
    reranker = make_reranker(manifest["reranker_spec"], cache=False, progress=False)
    bare = make_reranker(f"pointwise:{backbone},max_doc_tokens=16", cache=False, progress=False)
    pairs = toy_lists()[0].pairs()
    assert reranker.adapter is not None and reranker.score_pairs(pairs) != pytest.approx(bare.score_pairs(pairs))
    (tmp_path / "other").mkdir()
    model.save_pretrained(tmp_path / "other")
    tokenizer.save_pretrained(tmp_path / "other")
    with pytest.raises(AdapterMismatchError, match="trained on backbone"):
        make_reranker(f"pointwise:hf:{tmp_path / 'other'},adapter={folder}", cache=False, progress=False)


def test_stage1_loss_hook_reads_the_teacher_and_labels_of_each_list():
    import torch

    config = tiny_config(w_ce=0.0, w_ranknet=1.0, w_kl=0.0)
    lists = toy_lists()[:2]
    logits = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    loss, terms = stage1_loss(config)(logits, lists)
    teacher = torch.tensor([x.teacher for x in lists])
    assert set(terms) == {"ranknet"} and loss.item() == pytest.approx(ranknet(logits, teacher).item())


# stage 2 ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_a_permutation_example_is_the_listwise_prompt_answered_with_the_teachers_order():
    from routerank.models.llm import tiny_llm
    from routerank.rerank.listwise import ListwiseReranker, chat_ids, parse_permutation
    from routerank.train.permutations import permutation_example, shown_order

    _, tokenizer = tiny_llm(seed=0)
    item = ScoredList("q", "what lowers cholesterol", ("a", "b", "c"), tuple(DOCS[:3]), (0.2, 0.9, 0.5), (0, 1, 0))
    plain = permutation_example(item, tokenizer, max_doc_tokens=6, shuffle=False)
    assert plain.answer == "[2] > [3] > [1]" and parse_permutation(plain.answer, 3).repairs.total == 0
    reranker = ListwiseReranker(generate=lambda prompt: "", tokenizer=tokenizer, max_doc_tokens=6)
    assert list(plain.prompt_ids) == chat_ids(tokenizer, reranker.prompt(item.query, item.documents))
    assert tokenizer.decode(plain.answer_ids) == "[2] > [3] > [1]" + tokenizer.eos_token
    shuffled = permutation_example(item, tokenizer, max_doc_tokens=6, seed=5, epoch=1, shuffle=True)
    shown = shown_order(item, 5, 1, True)
    read_back = [shown[i] for i in parse_permutation(shuffled.answer, 3).order]
    assert read_back == item.teacher_order() == [1, 2, 0]
    assert shown_order(item, 5, 2, True) != shown or shown_order(item, 5, 3, True) != shown  # a new draw each epoch


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_permutation_logits_of_a_padded_batch_equal_each_row_alone():
    import torch
    from peft import LoraConfig, get_peft_model

    from routerank.models.llm import tiny_llm
    from routerank.train.permutations import PermutationExample, PermutationTrainable, permutation_loss

    model, tokenizer = tiny_llm(seed=0)
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    trainable = PermutationTrainable(peft, tokenizer.pad_token_id)
    trainable.train(False)
    long = PermutationExample("a", tuple(range(100, 130)), (5, 6, 7), "x")
    short = PermutationExample("b", tuple(range(200, 210)), (8, 9), "y")
    with torch.inference_mode():
        both = trainable.group_logits([long, short])
        alone = [trainable.group_logits([e]) for e in (long, short)]
        plain = peft(input_ids=torch.tensor([[*short.prompt_ids, *short.answer_ids]])).logits
    assert both.shape[:2] == (2, 3)
    assert torch.allclose(both[0], alone[0][0], atol=1e-4)
    assert torch.allclose(both[1, 1:], alone[1][0], atol=1e-4)
    assert torch.allclose(alone[1][0], plain[0, -3:-1], atol=1e-4)  # the logits that predict the answer tokens
    by_hand = -torch.log_softmax(plain[0, -3:-1], -1)[[0, 1], [8, 9]].mean()
    assert permutation_loss(alone[1], [short]).item() == pytest.approx(by_hand.item(), rel=1e-4)


@pytest.mark.slow
def test_stage2_trains_a_listwise_adapter_on_stage1_that_the_listwise_reranker_loads(tmp_path):
    from routerank.models.llm import tiny_llm
    from routerank.rerank.listwise import ListwiseReranker

    config, lists = tiny_config(epochs=1, stage2_epochs=4, stage2_grad_accum=1), toy_lists()
    stage1 = Stage1Trainer(config, tmp_path / "stage1", loaded=tiny_llm(seed=0), progress=False).fit(lists, [])
    trainer = Stage2Trainer(config, tmp_path / "stage2", stage1=stage1, loaded=tiny_llm(seed=0), progress=False)
    out = trainer.fit(lists, lists[:2])
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert sum(losses[-4:]) < sum(losses[:4])  # SFT on the permutations lowers their NLL
    manifest = json.loads((out / "routerank_adapter.json").read_text())
    assert manifest["reranker"] == "listwise" and manifest["base_adapter"] == "base_adapter"
    assert "not available offline" in manifest["targets"]
    assert (out / "base_adapter" / "adapter_model.safetensors").exists()
    assert manifest["reranker_spec"] == f"listwise:smollm2,adapter={out},window=4,step=2,max_doc_tokens=16"
    reranker = ListwiseReranker.from_model(*tiny_llm(seed=0), adapter=str(out), window=4, step=2, max_doc_tokens=16)
    ranking = reranker.rerank(lists[0].query, list(DOCS))
    assert sorted(ranking.doc_ids) == ["0", "1", "2", "3"] and "+stage2@" in reranker.name
    with pytest.raises(RouterankError, match="read by the pointwise reranker, not listwise"):
        ListwiseReranker.from_model(*tiny_llm(seed=0), adapter=str(stage1), window=4, step=2)


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_stage2_on_stage1_needs_the_stage1_folder():
    from routerank.models.llm import tiny_llm

    with pytest.raises(RouterankError, match="stage 2 builds on stage 1"):
        Stage2Trainer(tiny_config(), "unused", loaded=tiny_llm(seed=0), progress=False)


@pytest.mark.slow
def test_train_dear_runs_both_stages_and_a_rerun_scores_and_trains_nothing(scifact, fresh_ce, tmp_path):
    from routerank.models.llm import tiny_llm

    config = tiny_config(teacher=f"ce:{fresh_ce}", alpha=0.5, dev_queries=2, epochs=1, stage2_epochs=1)
    load = lambda: tiny_llm(seed=0)  # noqa: E731
    result = train_dear(config, tmp_path / "run", load=load, cache_dir=tmp_path / "teacher", progress=False)
    assert result.teacher_scored == 8 * 4 and result.stage1 and result.stage2 and result.name == "dear-ce+ranknet+kl"
    manifest = json.loads((result.stage1 / "routerank_adapter.json").read_text())
    assert manifest["training_data"]["scifact"]["train_lists"] == 6
    assert manifest["training_data"]["scifact"]["teacher_alpha"] == 0.5
    stamp = (result.stage2 / "adapter_model.safetensors").stat().st_mtime_ns
    again = train_dear(
        config, tmp_path / "run", load=load, teacher=RefusingTeacher(), cache_dir=tmp_path / "teacher", progress=False
    )
    assert again.teacher_scored == 0 and (result.stage2 / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(RouterankError, match="trained with other settings is in the way"):
        train_dear(
            tiny_config(teacher=f"ce:{fresh_ce}", alpha=0.5, dev_queries=2, w_kl=0.0),
            tmp_path / "run",
            load=load,
            cache_dir=tmp_path / "teacher",
            progress=False,
        )


# the command -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--w-ce", "0", "--w-ranknet", "0", "--w-kl", "0"], "every stage-1 loss weight is 0"),
        (["--stage", "3"], "unknown --stage '3'"),
        (["--config", "no/such/dear.toml"], "no such config file"),
        (["--alpha", "often"], "bad teacher alpha"),
    ],
)
def test_train_dear_bad_settings_are_one_line(args, needle):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "routerank.cli", "train", "dear", *args], capture_output=True, text=True, timeout=120
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], result.stderr
