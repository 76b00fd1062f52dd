from __future__ import annotations

import json
import time

import pytest

from routerank.errors import RouterankError, SpecError
from routerank.rerank.adapters import MANIFEST, AdapterMismatchError
from routerank.rerank.reasoning import ReasoningChooser, parse_answer
from routerank.rerank.setwise import SetwiseReranker
from routerank.rerank.templates import get_choice_template
from routerank.train.grpo import load_pools, train_grpo
from routerank.train.loop import TrainingInterrupted
from routerank.train.rank_r1 import RankR1Config, answer_reward, candidate_records, format_reward, rank_r1_task
from tests.train.grpo_support import task_on_pools, tiny

DOCS = [
    "Aspirin reduces the risk of a first heart attack.",
    "Cats are small carnivorous mammals.",
    "Statins lower LDL cholesterol.",
    "Heart attacks follow the blockage of a coronary artery.",
    "Dogs bark at strangers.",
]


def config(**overrides) -> RankR1Config:
    base = dict(
        dataset="scifact",
        max_queries=4,
        dev_queries=2,
        negative_depth=5,
        max_doc_tokens=16,
        k=3,
        num_generations=2,
        prompts_per_step=1,
        max_completion_length=6,
        max_steps=2,
        save_every=1,
        lora_r=4,
        lora_alpha=8,
        lr=1e-3,
    )
    base.update(overrides)
    return RankR1Config(**base)


@pytest.fixture(scope="module")
def pools(scifact):
    return load_pools(config())


def task(cfg, pools):
    return task_on_pools(rank_r1_task(cfg), candidate_records, cfg, pools)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, pools):
    out = tmp_path_factory.mktemp("rank-r1") / "rank-r1"
    return train_grpo(task(config(), pools), out, loaded=tiny(), progress=False)


def test_rank_r1_prompt_exact_text():
    template = get_choice_template("setwise", "rank-r1")
    text = template.render("is aspirin safe", ["Aspirin is safe.", "Cats purr.", "Ok."], cue=False)
    assert text == (
        "<|im_start|>system\n"
        "You are a search relevance judge. You first think about which passage best answers the query, then name "
        "it. The reasoning goes inside <think> </think> and the passage label inside <answer> </answer>.<|im_end|>\n"
        "<|im_start|>user\n"
        'Given a query "is aspirin safe", which of the following passages is the most relevant one to the query?\n\n'
        'Passage A: "Aspirin is safe."\n\n'
        'Passage B: "Cats purr."\n\n'
        'Passage C: "Ok."\n\n'
        "Think step by step inside <think> </think>, then write only the label of the most relevant passage "
        "(A, B or C) inside <answer> </answer>, e.g. <think> ... </think> <answer>A</answer>.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert template.render("q", ["a", "b"]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n<answer>")
    assert template.answer_tokens(3) == ["A", "B", "C"] and template.reasons
    assert not get_choice_template("setwise", "chatml").reasons


@pytest.mark.parametrize(
    "completion, label",
    [
        ("<think>B has the trial.</think><answer>B</answer>", "B"),
        ("  <think>\nreasons\n</think>\n<answer> Passage C </answer>\n", "C"),
        ("<think>x</think> <answer>[D]</answer>", "D"),
        ("<answer>B</answer>", None),  # no reasoning
        ("<think>x</think><answer>B</answer> and more", None),  # text after the answer
        ("<think><think>x</think><answer>B</answer>", None),  # two think tags
        ("<think>x</think><answer>BC</answer>", None),  # two labels
        ("<think>x</think>B", None),  # no answer tags
        ("<think>cut off by the token limit", None),
    ],
)
def test_parse_answer_holds_the_format(completion, label):
    assert parse_answer(completion) == label


def test_reward_is_one_only_for_the_right_format_and_a_relevant_answer():
    completions = [
        "<think>B says so</think><answer>B</answer>",  # right
        "<think>A says so</think><answer>A</answer>",  # right format, wrong answer
        "B",  # wrong format, right letter
        "<answer>B</answer>",  # no reasoning
    ]
    assert answer_reward(completions, relevant=["B"] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert format_reward(completions) == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_candidate_sets_hold_one_relevant_document_and_are_seeded(scifact, pools):
    _, tokenizer = tiny()
    records = candidate_records(config(), tokenizer, pools)
    assert records == candidate_records(config(), tokenizer, pools) and len(records) == len(pools)
    qrels = scifact.split_qrels("train")
    for record in records:
        judged = qrels.judgments.get(record["query_id"].split("/", 1)[1], {})
        relevant = ["ABC"[i] for i, d in enumerate(record["doc_ids"]) if judged.get(d, 0) >= 1]
        assert len(record["doc_ids"]) == 3 and relevant == [record["relevant"]]
        assert 'Passage C: "' in record["prompt"] and record["prompt"].endswith("<|im_start|>assistant\n")
    reseeded = candidate_records(config(seed=14), tokenizer, pools)
    assert [r["doc_ids"] for r in reseeded] != [r["doc_ids"] for r in records]


@pytest.mark.slow
def test_two_grpo_steps_write_the_log_and_the_adapter(adapter):
    manifest = json.loads((adapter / MANIFEST).read_text())
    assert manifest["reranker"] == "setwise" and manifest["template"] == "rank-r1" and manifest["k"] == 3
    assert manifest["steps"] == 2 and manifest["max_completion_length"] == 6
    log = [json.loads(line) for line in (adapter / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and {"answer_reward", "format_reward", "reward"} <= set(log[0])


@pytest.mark.slow
def test_resume_continues_the_step_count(tmp_path, pools):
    cfg = config(max_steps=3)
    with pytest.raises(TrainingInterrupted):
        train_grpo(task(cfg, pools), tmp_path / "r1", loaded=tiny(), progress=False, stop_after_steps=2)
    assert (tmp_path / "r1.state" / "trl" / "checkpoint-2").exists()
    train_grpo(task(cfg, pools), tmp_path / "r1", loaded=tiny(), progress=False)
    log = [json.loads(line) for line in (tmp_path / "r1" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and log[2]["seconds"] >= log[1]["seconds"]


@pytest.mark.slow
def test_setwise_loads_the_adapter_reasons_and_falls_back(adapter):
    thinking = SetwiseReranker.from_model(*tiny(), adapter=str(adapter), k=3, max_new_tokens=5)
    assert isinstance(thinking.chooser, ReasoningChooser) and thinking.chooser.labels.max_doc_tokens == 16
    ranking = thinking.rerank("aspirin heart attack", DOCS)
    assert sorted(ranking.doc_ids) == sorted(str(i) for i in range(len(DOCS)))
    chooser = thinking.chooser
    assert chooser.prompts == thinking.last_stats.prompts > 0 and chooser.fallbacks == chooser.prompts
    # a random tiny model never writes the format, so every pick is the label-logit pick: think=0's ranking
    logits_only = SetwiseReranker.from_model(*tiny(), adapter=str(adapter), k=3, think=0)
    assert logits_only.rerank("aspirin heart attack", DOCS) == ranking
    assert "think=0" in logits_only.name and "rank-r1@" in logits_only.name


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_a_well_formed_answer_is_used_and_a_bad_one_falls_back():
    model, tokenizer = tiny()
    chooser = ReasoningChooser(model, tokenizer, get_choice_template("setwise", "rank-r1"), max_new_tokens=2)
    scripted = iter([["<think>C has it</think><answer>C</answer>", "<think>?</think><answer>D</answer>"]])
    chooser.generate = lambda prompts: next(scripted)
    sets = [DOCS[:3], DOCS[2:5]]
    fallback = chooser.labels.choose("aspirin", [sets[1]])[0]
    assert chooser.choose("aspirin", sets) == [2, fallback] and chooser.fallbacks == 1


def test_generation_stops_at_the_token_budget():
    model, tokenizer = tiny()
    chooser = ReasoningChooser(model, tokenizer, get_choice_template("setwise", "rank-r1"), max_new_tokens=3)
    texts = chooser.generate(["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"])
    assert len(texts) == 1 and chooser.generated_tokens <= 3


@pytest.mark.slow
def test_bad_configs_and_mismatched_adapters(adapter):
    for overrides, message in [
        ({"k": 1}, "k must be"),
        ({"k": 21}, "k must be"),
        ({"template": "chatml"}, "reasoning prompt"),
        ({"num_generations": 1}, "num_generations"),
    ]:
        with pytest.raises(SpecError, match=message):
            config(**overrides)
    with pytest.raises(RouterankError, match="think=1 needs a reasoning prompt") as error:
        SetwiseReranker.from_model(*tiny(), think=1)
    assert "rank-r1" in error.value.fix
    with pytest.raises(RouterankError, match="think must be true or false"):
        SetwiseReranker.from_model(*tiny(), template="rank-r1", think="maybe")
    with pytest.raises(RouterankError, match="trained with prompt template"):
        SetwiseReranker.from_model(*tiny(), adapter=str(adapter), template="chatml")
    from routerank.rerank.pointwise import PointwiseLLMReranker

    with pytest.raises(AdapterMismatchError, match="setwise reranker"):
        PointwiseLLMReranker.from_model(*tiny(), adapter=str(adapter))
    with pytest.raises(RouterankError, match="not an adapter folder"):
        SetwiseReranker.from_model(*tiny(), adapter=str(adapter.parent))


@pytest.mark.slow
def test_real_smollm2_rank_r1_smoke(tmp_path, pools):
    from routerank.rerank.registry import make_reranker

    cfg = config(max_steps=1, max_completion_length=16, k=2, max_doc_tokens=24, lr=5e-5)
    started = time.perf_counter()
    out = train_grpo(task(cfg, pools), tmp_path / "rank-r1", progress=False)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["steps"] == 1 and manifest["backbone_fingerprint"]
    print(f"\nSmolLM2 Rank-R1 GRPO: {manifest['seconds']:.1f} s per step, {time.perf_counter() - started:.1f} s in all")
    reranker = make_reranker(f"setwise:smollm2,adapter={out},k=2,top=1,max_new_tokens=16")
    assert sorted(reranker.rerank("aspirin heart attack", DOCS[:3]).doc_ids) == ["0", "1", "2"]


def test_target_completion_is_well_formed_and_states_only_shared_words():
    from routerank.train.rank_r1 import target_completion

    text = target_completion("Does aspirin lower the risk of heart attack?", DOCS[0], "B")
    assert parse_answer(text) == "B"
    reason = "Passage B mentions aspirin, risk, heart, attack, as the query does."
    assert text == f"<think>{reason}</think>\n<answer>B</answer>"
    assert parse_answer(target_completion("quantum chromodynamics", DOCS[1], "A")) == "A"
    assert "is about what the query asks" in target_completion("quantum chromodynamics", DOCS[1], "A")


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_format_sft_records_use_other_queries_and_name_the_relevant_passage(pools):
    from routerank.train.rank_r1 import sft_records

    _, tokenizer = tiny()
    cfg = config(sft_queries=3)
    records = sft_records(cfg, tokenizer)
    assert records and not {r["query_id"] for r in records} & {p.query_id for p in pools}
    dev = {p.query_id for p in load_pools(cfg, "dev")}
    assert not {r["query_id"] for r in records} & dev
    for record in records:
        assert parse_answer(record["completion"]) == record["relevant"]


@pytest.mark.slow
def test_format_sft_runs_first_is_kept_on_resume_and_is_in_the_manifest(tmp_path, pools):
    import dataclasses

    from routerank.train.rank_r1 import sft_records

    cfg = config(max_steps=3, sft_queries=3, sft_epochs=3, sft_lr=5e-3, sft_grad_accum=2)
    built = []

    def records(tokenizer):
        built.append(1)
        return sft_records(cfg, tokenizer)

    base = task(cfg, pools)
    sft_task = dataclasses.replace(base, sft=dataclasses.replace(base.sft, records=records))
    with pytest.raises(TrainingInterrupted):
        train_grpo(sft_task, tmp_path / "r1", loaded=tiny(), progress=False, stop_after_steps=2)
    assert (tmp_path / "r1.state" / "sft" / "format_sft.json").exists() and built == [1]
    out = train_grpo(sft_task, tmp_path / "r1", loaded=tiny(), progress=False)
    assert built == [1]  # the resumed run went on from the saved SFT, it did not train it again
    summary = json.loads((out / MANIFEST).read_text())["format_sft"]
    assert summary["epochs"] == 3 and summary["steps"] == len(summary["loss_curve"]) >= 3
    assert summary["loss_curve"][-1] < summary["loss_curve"][0]  # the targets got likelier
    assert json.loads((out / MANIFEST).read_text())["steps"] == 3


def test_format_sft_settings_are_checked():
    for overrides, message in [
        ({"sft_queries": -1}, "sft_queries"),
        ({"sft_queries": 2, "sft_epochs": 0}, "sft_epochs"),
        ({"sft_queries": 2, "max_queries": None}, "max_queries"),
    ]:
        with pytest.raises(SpecError, match=message):
            config(**overrides)
    assert rank_r1_task(config()).sft is None and rank_r1_task(config(sft_queries=2)).sft.epochs == 2
