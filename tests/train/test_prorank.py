from __future__ import annotations

import dataclasses
import json
import time

import pytest

from routerank.errors import RouterankError, SpecError
from routerank.rerank.adapters import MANIFEST
from routerank.train.grpo import load_pools, train_grpo
from routerank.train.loop import TrainingInterrupted
from routerank.train.prorank import (
    ProRankConfig,
    correct_reward,
    format_reward,
    judgement_prompt,
    judgement_records,
    stage1_task,
    train_prorank,
    train_stage2,
)
from tests.train.grpo_support import task_on_pools, tiny


def config(**overrides) -> ProRankConfig:
    base = dict(
        dataset="scifact",
        max_queries=4,
        dev_queries=2,
        negative_depth=5,
        max_doc_tokens=24,
        num_generations=2,
        prompts_per_step=2,
        max_completion_length=3,
        max_steps=2,
        save_every=1,
        lora_r=4,
        lora_alpha=8,
        lr=1e-3,
        stage2_negatives=2,
        stage2_grad_accum=2,
        stage2_eval_every=1,
        stage2_save_every=1,
        stage2_patience=99,
    )
    base.update(overrides)
    return ProRankConfig(**base)


@pytest.fixture(scope="module")
def pools(scifact):
    return load_pools(config())


def task(cfg, pools):
    return task_on_pools(stage1_task(cfg), judgement_records, cfg, pools)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, pools):
    out = tmp_path_factory.mktemp("prorank") / "stage1"
    return train_grpo(task(config(), pools), out, loaded=tiny(), progress=False)


def test_prorank_prompt_exact_text():
    from routerank.rerank.templates import get_template

    text = get_template("prorank").render("is aspirin safe", "Aspirin is safe.", instruction="Find evidence")
    assert text == (
        "<|im_start|>system\n"
        "Judge whether the Document is relevant to the Query, given the Instruct. "
        "Answer with a single digit: 1 if it is relevant, 0 if it is not.<|im_end|>\n"
        "<|im_start|>user\n<Instruct>: Find evidence\n<Query>: is aspirin safe\n<Document>: Aspirin is safe."
        "<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_the_grpo_prompt_is_token_for_token_what_the_pointwise_reranker_scores():
    from routerank.rerank.pointwise import PointwiseLLMReranker
    from routerank.rerank.templates import get_template

    model, tokenizer = tiny()
    scorer = PointwiseLLMReranker.from_model(model, tokenizer, template="prorank", max_doc_tokens=12)
    document = "Aspirin irreversibly inhibits cyclooxygenase, " * 10
    text = judgement_prompt(get_template("prorank"), tokenizer, "is aspirin safe", document, 12)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == scorer.prompt_ids("is aspirin safe", document)


def test_rewards_score_format_and_correctness_apart():
    completions = ["1", " 0\n", "1 because it says so", "yes", "", "10", "0"]
    labels = [1, 1, 1, 1, 0, 1, 0]
    assert format_reward(completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    # right format and right answer, right format and wrong answer, then wrong formats (never correct)
    assert correct_reward(completions, label=labels) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_prompts_are_balanced_seeded_and_judged_right(scifact, pools):
    _, tokenizer = tiny()
    records = judgement_records(config(), tokenizer, pools)
    assert records == judgement_records(config(), tokenizer, pools)
    assert [r["label"] for r in records].count(1) == [r["label"] for r in records].count(0) == len(pools)
    for query_id in {r["query_id"] for r in records}:
        assert sorted(r["label"] for r in records if r["query_id"] == query_id) == [0, 1]
    qrels = scifact.split_qrels("train")
    for record in records:
        judged = qrels.judgments.get(record["query_id"].split("/", 1)[1], {})
        assert (judged.get(record["doc_id"], 0) >= 1) == (record["label"] == 1)
        assert record["prompt"].endswith("<|im_end|>\n<|im_start|>assistant\n")
    reseeded = judgement_records(config(seed=14), tokenizer, pools)
    assert [r["doc_id"] for r in reseeded] != [r["doc_id"] for r in records]


@pytest.mark.slow
def test_two_grpo_steps_write_the_log_and_the_adapter(stage1):
    manifest = json.loads((stage1 / MANIFEST).read_text())
    assert (stage1 / "adapter_model.safetensors").exists() and (stage1 / "adapter_config.json").exists()
    assert manifest["reranker"] == "pointwise" and manifest["template"] == "prorank" and manifest["stage"] == 1
    assert manifest["steps"] == 2 and [step for step, _ in manifest["reward_curve"]] == [1, 2]
    assert manifest["seconds"] > 0 and manifest["prompts"] == 8
    log = [json.loads(line) for line in (stage1 / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert {"loss", "reward", "format_reward", "correct_reward", "lr", "seconds"} <= set(log[0])
    assert not stage1.with_name("stage1.state").exists()


def odd_length(completions, **_) -> list[float]:
    """A reward that differs within a group even for a random model (a constant one gives GRPO no gradient)."""
    return [float(len(c) % 2) for c in completions]


def varied(pools):
    cfg = config(lr=1e-2, max_completion_length=6)
    return dataclasses.replace(task(cfg, pools), rewards=(odd_length,))


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory, pools):
    return train_grpo(varied(pools), tmp_path_factory.mktemp("varied") / "unbroken", loaded=tiny(), progress=False)


def adapter_weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.mark.slow
def test_rewards_that_differ_within_a_group_move_the_adapter(unbroken):
    import torch

    log = [json.loads(line) for line in (unbroken / "train_log.jsonl").read_text().splitlines()]
    assert any(r["reward_std"] > 0 for r in log) and "odd_length" in log[0]
    lora_b = [v for k, v in adapter_weights(unbroken).items() if "lora_B" in k]
    assert lora_b and any(torch.count_nonzero(v) for v in lora_b)  # LoRA B starts at zero


@pytest.mark.slow
def test_a_resumed_run_continues_the_step_count_and_ends_where_an_unbroken_one_does(tmp_path, pools, unbroken):
    import torch

    out = tmp_path / "stage1"
    with pytest.raises(TrainingInterrupted) as stopped:
        train_grpo(varied(pools), out, loaded=tiny(), progress=False, stop_after_steps=1)
    assert stopped.value.step == 1
    state = tmp_path / "stage1.state"
    assert (state / "trl" / "checkpoint-1" / "adapter_model.safetensors").exists() and not out.exists()
    assert [json.loads(line)["step"] for line in (state / "log.jsonl").read_text().splitlines()] == [1]
    train_grpo(varied(pools), out, loaded=tiny(), progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["steps"] == 2 and [step for step, _ in manifest["reward_curve"]] == [1, 2]
    expected = json.loads((unbroken / MANIFEST).read_text())["reward_curve"]
    assert manifest["reward_curve"] == expected
    resumed, whole = adapter_weights(out), adapter_weights(unbroken)
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_a_checkpoint_of_another_run_is_refused(tmp_path, pools):
    (tmp_path / "other.state").mkdir()
    (tmp_path / "other.state" / "run.json").write_text(json.dumps({"some": "other run"}))
    with pytest.raises(RouterankError, match="different training run"):
        train_grpo(task(config(), pools), tmp_path / "other", loaded=tiny(), progress=False)


@pytest.mark.slow
def test_a_finished_run_is_not_trained_again(stage1, pools):
    started = time.perf_counter()
    assert train_grpo(task(config(), pools), stage1, loaded=tiny(), progress=False) == stage1
    assert time.perf_counter() - started < 5


@pytest.mark.slow
def test_stage2_trains_the_one_token_score_from_the_stage1_adapter(stage1, tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from routerank.rerank.backbones import LLMBackbone
    from routerank.rerank.pointwise import PointwiseLLMReranker

    # the stage-2 score is logit("1") - logit("0") of the whole model at the answer position
    model, tokenizer = tiny()
    backbone = LLMBackbone("smollm2", template="prorank", max_doc_tokens=24, loaded=(model, tokenizer))
    pair = ("is aspirin safe", "Aspirin is safe for most adults.")
    scorer = PointwiseLLMReranker.from_model(model, tokenizer, template="prorank", max_doc_tokens=24)
    ids = torch.tensor([scorer.prompt_ids(*pair)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
        one, zero = tokenizer.convert_tokens_to_ids("1"), tokenizer.convert_tokens_to_ids("0")
        assert backbone.relevance_logits([pair])[0].item() == pytest.approx((logits[one] - logits[zero]).item(), 1e-4)

    # with dev queries, the dev loss is measured before the first step (the stage-1 model competes for best)
    out = train_stage2(config(), stage1, tmp_path / "with-dev", loaded=tiny(), progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["stage"] == 2 and manifest["template"] == "prorank" and manifest["reranker"] == "pointwise"
    assert manifest["steps"] == 2 and manifest["stage1"]["steps"] == 2 and manifest["best_dev_loss"] > 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and "dev_loss" in log[0] and log[1]["loss"] > 0
    # without, the last step ships: the ranking loss moved the stage-1 adapter
    out = train_stage2(
        config(dev_queries=0, stage2_lr=0.05), stage1, tmp_path / "stage2", loaded=tiny(), progress=False
    )
    before = load_file(str(stage1 / "adapter_model.safetensors"))
    after = load_file(str(out / "adapter_model.safetensors"))
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    # the stage-2 adapter loads back as a peft model of the same shape
    assert isinstance(PeftModel.from_pretrained(tiny()[0], str(out)), PeftModel)


@pytest.mark.slow
def test_the_pointwise_spec_loads_the_adapter_and_scores_p_of_one(stage1):
    import torch
    from peft import PeftModel

    from routerank.rerank.pointwise import PointwiseLLMReranker

    pairs = [("is aspirin safe", "Aspirin is safe."), ("is aspirin safe", "Cats purr when content.")]
    scorer = PointwiseLLMReranker.from_model(*tiny(), template="prorank", adapter=str(stage1), max_doc_tokens=24)
    scores = scorer.score_pairs(pairs)
    assert "stage1@" in scorer.name
    model, tokenizer = tiny()  # by hand: the unmerged adapter, the full LM head, softmax over "1" and "0"
    peft = PeftModel.from_pretrained(model, str(stage1)).eval()
    one, zero = tokenizer.convert_tokens_to_ids("1"), tokenizer.convert_tokens_to_ids("0")
    for (query, doc), score in zip(pairs, scores, strict=True):
        with torch.no_grad():
            logits = peft(input_ids=torch.tensor([scorer.prompt_ids(query, doc)])).logits[0, -1]
        assert score == pytest.approx(torch.softmax(logits[[one, zero]], -1)[0].item(), abs=1e-4)
    with pytest.raises(RouterankError, match="template"):
        PointwiseLLMReranker.from_model(*tiny(), adapter=str(stage1))  # trained with prorank, asked with chatml


def test_bad_configs_say_what_to_fix(tmp_path):
    for overrides, message in [
        ({"num_generations": 1}, "num_generations"),
        ({"loss_type": "ppo"}, "loss_type"),
        ({"template": "chatml"}, "digits 1 and 0"),
        ({"stage2_objective": "hinge"}, "objective"),
        ({"prompts_per_step": 0}, "prompts_per_step"),
        ({"dataset": " , "}, "names no dataset"),
    ]:
        with pytest.raises(SpecError, match=message) as error:
            config(**overrides)
        assert error.value.fix or message == "prompts_per_step"
    with pytest.raises(SpecError, match="stages 1 and 2"):
        train_prorank(config(), tmp_path, stage=3)
    with pytest.raises(RouterankError, match="stage-1 adapter"):
        train_prorank(config(), tmp_path / "fresh", stage=2)


def test_cli_reads_the_toml_and_refuses_unknown_keys(tmp_path):
    from typer.testing import CliRunner

    from routerank.cli import app
    from routerank.cli.train import load_grpo_config

    good = tmp_path / "good.toml"
    good.write_text('dataset = "scifact"\nmax_queries = 0\ntarget_modules = ["q_proj"]\n')
    read = load_grpo_config(ProRankConfig, good)
    assert read.max_queries is None and read.target_modules == ("q_proj",) and read.lr == ProRankConfig().lr
    bad = tmp_path / "bad.toml"
    bad.write_text("num_generation = 4\n")
    result = CliRunner().invoke(app, ["train", "prorank", "--config", str(bad)])
    assert result.exit_code != 0 and "unknown config keys" in str(result.exception)


@pytest.mark.slow
def test_real_smollm2_grpo_smoke_and_spec(tmp_path, pools):
    from routerank.rerank.registry import make_reranker

    cfg = config(max_doc_tokens=48, max_completion_length=4, prompts_per_step=1, lr=5e-5)
    started = time.perf_counter()
    out = train_grpo(task(cfg, pools), tmp_path / "stage1", progress=False)
    seconds = time.perf_counter() - started
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["steps"] == 2 and manifest["backbone_fingerprint"]
    print(f"\nSmolLM2 ProRank GRPO: {manifest['seconds'] / 2:.1f} s per step, {seconds:.1f} s in all")
    reranker = make_reranker(f"pointwise:smollm2,template=prorank,adapter={out},max_doc_tokens=48")
    ranking = reranker.rerank("does aspirin prevent heart attacks", ["Aspirin lowers heart attack risk.", "Cats."])
    assert sorted(ranking.doc_ids) == ["0", "1"] and all(0 < s < 1 for s in ranking.scores)
