"""Issue 12's experiment: every trainer on a tiny random-init backbone and real SciFact/NFCorpus slices, end to end;
partial runs; the claims on hand-made tables; config errors."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from studies.llm_training.__main__ import main
from studies.llm_training.claims import TARGET_GAIN, check_claims
from studies.llm_training.experiment import LLMTrainingConfig, LLMTrainingExperiment, parse_only
from studies.llm_training.report import write_report

from routerank.errors import RouterankError, SpecError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"  # the trainers' own configs
STUDY_CONFIGS = ROOT / "studies" / "llm_training" / "configs"

DEAR = """datasets = ["scifact"]
max_queries = 3
dev_queries = 0
depth = 3
teacher = "ce:{ce}"
alpha = 0.5
max_doc_tokens = 16
lora_r = 4
lora_alpha = 8
grad_accum = 2
stage2_grad_accum = 2
eval_every = 100
save_every = 100
"""
GRPO = """dataset = "scifact"
max_queries = 2
dev_queries = 1
negative_depth = 5
max_doc_tokens = 16
num_generations = 2
max_steps = 1
lora_r = 4
lora_alpha = 8
"""
PRORANK = GRPO + "prompts_per_step = 2\nmax_completion_length = 2\nstage2_negatives = 1\nstage2_grad_accum = 2\n"
RANK_R1 = GRPO + "k = 2\nprompts_per_step = 1\nmax_completion_length = 4\nsft_queries = 1\nsft_epochs = 1\n"


def factory():
    from routerank.models.llm import tiny_llm

    return tiny_llm(seed=0)


def tiny_config(folder: Path, ce: Path, **overrides) -> LLMTrainingConfig:
    """Tiny trainer configs in `folder`, and a 3-query, top-3 experiment over them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("dear", DEAR.format(ce=ce)), ("prorank", PRORANK), ("rank-r1", RANK_R1)):
        (folder / f"{name}.toml").write_text(text)
    base = dict(
        profile="test",
        test_queries=3,
        depth=3,
        max_doc_tokens=16,
        expert={"max_queries": 3, "dev_queries": 2, "negatives": 1, "eval_every": 100, "lora_r": 4, "lora_alpha": 8},
        dear_config=str(folder / "dear.toml"),
        prorank_config=str(folder / "prorank.toml"),
        rank_r1_config=str(folder / "rank-r1.toml"),
    )
    return LLMTrainingConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, fresh_ce, scifact, nfcorpus):
    work = tmp_path_factory.mktemp("llm-training")
    experiment = LLMTrainingExperiment(
        tiny_config(work / "configs", fresh_ce), work / "work", progress=False, loaded_factory=factory
    )
    stages = experiment.run()
    report = write_report(experiment, stages, work / "reports" / "llm-training.md")
    return experiment, stages, report


@pytest.mark.slow
def test_every_method_trains_scores_and_reports(finished):
    experiment, stages, report = finished
    assert stages and all(s.done and s.note == "ran" for s in stages), [(s.name, s.note) for s in stages]
    systems = experiment.systems()
    assert systems == [
        "bm25",
        "zero-shot",
        "sft",
        "contrastive",
        "dear-stage1",
        "dear",
        "shuffled-dear",
        "dear-ce",
        "dear-ranknet",
        "dear-kl",
        "prorank-stage1",
        "prorank",
        "rank-r1",
        "teacher",
    ]
    data = json.loads(report.with_suffix(".json").read_text())
    for system in systems:
        for dataset in ("scifact", "nfcorpus"):
            row = data["table"][system][dataset]
            assert row["queries"] == 3 and 0 <= row["nDCG@10"] <= 1, (system, dataset)
            if system != "bm25":
                assert set(row["p_vs_bm25"]) == {"nDCG@10", "MRR@10"}
    assert "p_vs_zero-shot" in data["table"]["sft"]["scifact"] and "p_vs_zero-shot" not in data["table"]["zero-shot"]
    assert data["table"]["rank-r1"]["scifact"]["calls_per_query"] > 0  # setwise counts its prompts
    trained = [s for s in systems if s not in ("bm25", "zero-shot", "teacher", "shuffled-dear")]
    assert set(data["training"]) == set(trained)
    assert all(data["training"][s]["steps"] >= 1 for s in trained)
    assert data["training"]["prorank"]["total_seconds"] > data["training"]["prorank"]["seconds"]
    sft = data["training"]["rank-r1"]["format_sft"]  # Rank-R1's cold start: its time counts in the total
    assert sft["records"] >= 1 and sft["steps"] >= 1 and sft["loss"]["first"] is not None
    assert data["training"]["rank-r1"]["total_seconds"] > data["training"]["rank-r1"]["seconds"]
    assert "`rank-r1` first trained a format SFT (a cold start)" in report.read_text()
    assert set(data["reward_curves"]) == {"prorank-stage1", "rank-r1"}
    assert data["reward_curves"]["prorank-stage1"]["reward"][0][0] == 1
    assert {"format_reward", "correct_reward"} <= set(data["reward_curves"]["prorank-stage1"])
    assert (report.parent / "llm-training" / "reward-curves.png").exists()
    assert set(data["unchanged_adapters"]) <= {"prorank-stage1", "rank-r1"}
    for system in data["unchanged_adapters"]:  # a GRPO run that never moved says so in the report
        assert f"`{system}` never changed its adapter" in report.read_text()
    assert data["dear_ablations"] == {
        "ce": "dear-ce",
        "ranknet": "dear-ranknet",
        "kl": "dear-kl",
        "ce+ranknet+kl": "dear-stage1",
    }
    assert [c["status"] for c in data["claims"]] != [] and all(
        c["status"] in ("holds", "fails") for c in data["claims"]
    )
    assert data["specs"]["dear"].startswith("listwise:smollm2,adapter=")
    assert data["specs"]["shuffled-dear"] == data["specs"]["dear"] + ",shuffle=13"  # same adapter, shuffled input
    assert any("with them shuffled (`shuffled-dear`)" in n for n in data["notes"]["gain"])
    assert data["specs"]["rank-r1"].startswith("setwise:smollm2,adapter=") and ",k=2" in data["specs"]["rank-r1"]
    text = report.read_text()
    for section in ("## Effectiveness", "## Claims", "## Training time and steps", "## GRPO reward curves"):
        assert section in text
    assert "## DeAR loss ablation" in text and "| CE + RankNet + KL | `dear-stage1` |" in text
    assert "pending" not in text.split("## Claims")[0]
    assert any("a random order of BM25's candidates scores scifact" in n for n in data["notes"]["gain"])
    assert any("optimizer steps" in n for n in data["notes"]["gain"])
    for dataset in ("scifact", "nfcorpus"):  # Rank-R1's position check: its heapsort under an always-first judge
        check = data["first_pick"][dataset]
        assert 0 <= check["nDCG@10"] <= 1 and 0 <= check["same_top"] <= check["queries"] == 3
    assert sum("always picks the first passage" in n or "always-first judge" in n for n in data["notes"]["gain"]) == 2
    assert set(data["training"]["dear-ce"]["loss_terms"]) == {"ce"}  # the ablation logs only its own term
    assert set(data["training"]["dear-stage1"]["loss_terms"]) == {"ce", "ranknet", "kl"}
    assert any(n.startswith("`dear-ranknet` RankNet loss") for n in data["notes"]["dear"])


@pytest.mark.slow
def test_a_rerun_skips_every_stage_and_rescores_only_what_is_missing(finished):
    experiment, _, _ = finished
    again = LLMTrainingExperiment(experiment.config, experiment.work, progress=False, loaded_factory=factory)
    assert all(s.note == "cached" for s in again.run())
    experiment.run_path("sft", "nfcorpus").unlink()
    stages = LLMTrainingExperiment(experiment.config, experiment.work, progress=False, loaded_factory=factory).run()
    assert [s.name for s in stages if s.note == "ran"] == ["score sft on nfcorpus"]


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_a_partial_run_reports_pending_rows_and_pending_claims(tmp_path, fresh_ce, scifact, nfcorpus):
    config = tiny_config(tmp_path / "configs", fresh_ce, methods=("sft", "dear"), dear_ablations=("ce",))
    experiment = LLMTrainingExperiment(config, tmp_path / "work", progress=False, loaded_factory=factory)
    stages = experiment.run(only={"score"})
    ran = {s.name for s in stages if s.note == "ran"}
    assert ran == {f"score {s} on {d}" for s in ("bm25", "zero-shot", "teacher") for d in ("scifact", "nfcorpus")}
    assert {s.note for s in stages if s.name.startswith("train")} == {"pending"}
    report = write_report(experiment, stages, tmp_path / "r.md")
    text = report.read_text()
    assert "| SFT (BCE on yes/no) | – | – | – | – | – | – | – | – | training pending |" in text
    assert "| DeAR stage 1, CE only | – |" in text and "No GRPO run has finished yet." in text
    data = json.loads(report.with_suffix(".json").read_text())
    assert set(data["table"]) == {"bm25", "zero-shot", "teacher"} and data["training"] == {}
    assert [c["status"] for c in data["claims"]] == ["pending"] * 4
    assert data["specs"]["sft"] is None and data["specs"]["teacher"] == f"ce:{fresh_ce}~0.5"
    assert data["dear_ablations"] == {"ce": "dear-ce"}


class Killed(Exception):
    pass


class Watched:
    """A reranker that records the queries of each `rerank_run` and is "killed" on call number `die_at`."""

    def __init__(self, inner, asked: list, die_at: int | None = None):
        self.inner, self.asked, self.die_at = inner, asked, die_at
        self.reranker = getattr(inner, "reranker", inner)  # where the experiment reads the cost counters

    def rerank_run(self, queries, *args):
        self.asked.append([q.id for q in queries])
        if self.die_at is not None and len(self.asked) >= self.die_at:
            raise Killed
        return self.inner.rerank_run(queries, *args)


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_a_killed_scoring_stage_resumes_at_its_first_unfinished_chunk(tmp_path, fresh_ce, scifact, nfcorpus):
    from routerank.data.trec import read_run

    config = tiny_config(tmp_path / "configs", fresh_ce)
    experiment = LLMTrainingExperiment(config, tmp_path / "work", progress=False, loaded_factory=factory)
    real, asked = experiment.reranker, []
    experiment.reranker = lambda system: Watched(real(system), asked, die_at=2)
    with pytest.raises(Killed):
        experiment.score("zero-shot", "scifact", chunk=1)
    path = experiment.run_path("zero-shot", "scifact")
    partial = path.with_suffix(".partial.jsonl")
    assert not path.exists() and len(partial.read_text().splitlines()) == 1
    partial.write_text(partial.read_text() + '{"spec": "torn by the ki')  # a kill mid-write
    first, asked[:] = asked[0], []
    experiment.reranker = lambda system: Watched(real(system), asked)
    experiment.score("zero-shot", "scifact", chunk=1)
    assert first not in asked and sum(len(a) for a in asked) == 2  # only the two unfinished queries
    assert not partial.exists() and experiment.scored("zero-shot", "scifact")
    fresh = LLMTrainingExperiment(config, tmp_path / "again", progress=False, loaded_factory=factory)
    fresh.score("zero-shot", "scifact")  # one chunk of all three
    resumed, whole = read_run(path).as_dict(), read_run(fresh.run_path("zero-shot", "scifact")).as_dict()
    assert resumed.keys() == whole.keys() and all(resumed[q] == pytest.approx(whole[q], abs=1e-5) for q in whole)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["queries"] == 3 and meta["seconds"] > 0 and meta["forward_passes"] > 0


def test_a_time_budget_of_zero_starts_nothing_but_still_reports(tmp_path, fresh_ce, scifact, nfcorpus):
    experiment = LLMTrainingExperiment(
        tiny_config(tmp_path / "c", fresh_ce), tmp_path / "w", progress=False, loaded_factory=factory
    )
    stages = experiment.run(max_minutes=0)
    assert stages and not any(s.done for s in stages)
    text = write_report(experiment, stages, tmp_path / "r.md").read_text()
    assert "0 of the 38 stages run here are done" in text and "scoring pending (time budget reached)" in text


@pytest.mark.slow  # the `finished` fixture trains and scores every system: ~20 s on 2 idle cores
def test_systems_runs_only_those_rows_and_carried_rows_fill_the_rest(finished, tmp_path):
    from studies.llm_training.collect import read_carried

    experiment, stages, report = finished
    before = json.loads(report.with_suffix(".json").read_text())
    fresh = LLMTrainingExperiment(experiment.config, tmp_path / "work", progress=False, loaded_factory=factory)
    picked = fresh.pick_systems("zero-shot")
    ran = fresh.run(systems=picked)
    assert [s.name for s in ran] == ["score zero-shot on scifact", "score zero-shot on nfcorpus"]
    assert all(s.note == "ran" for s in ran) and not fresh.scored("sft", "scifact")
    carried = read_carried(fresh, report.with_suffix(".json"))
    out = write_report(fresh, ran, tmp_path / "r.md", carried=carried)
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(data["table"]) == set(before["table"])
    assert {s for s, _ in data["carried_rows"]} == set(before["table"]) - {"zero-shot", "bm25"}  # bm25: candidates
    assert not data["table"]["zero-shot"]["scifact"].get("carried") and data["table"]["sft"]["scifact"]["carried"]
    assert data["table"]["sft"]["scifact"]["nDCG@10"] == before["table"]["sft"]["scifact"]["nDCG@10"]
    assert data["training"]["rank-r1"]["carried"] and data["reward_curves"] == before["reward_curves"]
    assert [c["status"] for c in data["claims"]] == [c["status"] for c in before["claims"]]
    assert data["specs"]["sft"] == before["specs"]["sft"] and data["carried_from"] == str(report.with_suffix(".json"))
    text = out.read_text()
    assert "| carried |" in text and "come from" in text and "SFT (BCE on yes/no) (carried)" in text
    # a row this work dir trains with another spec is not filled in from the earlier report
    other = {**carried, "specs": {**carried["specs"], "sft": "pointwise:another-adapter"}}
    assert ("sft", "scifact") not in carry_pairs(experiment, other, drop="sft")
    assert ("sft", "scifact") in carry_pairs(experiment, carried, drop="sft")


def carry_pairs(experiment, previous, drop: str) -> list:
    from studies.llm_training.collect import carry, collect

    table = collect(experiment)
    table.pop(drop)
    specs = {s: experiment.spec(s) for s in experiment.systems()}
    return carry(previous, experiment.systems(), table, {}, {}, [], specs)


@pytest.mark.slow  # shares the `finished` fixture
def test_carrying_from_another_protocol_or_a_bad_file_and_unknown_systems_are_refused(finished, tmp_path):
    from studies.llm_training.collect import read_carried

    experiment, _, report = finished
    other = LLMTrainingExperiment(replace(experiment.config, test_queries=2), tmp_path, progress=False)
    with pytest.raises(RouterankError, match="protocol"):
        read_carried(other, report.with_suffix(".json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RouterankError, match="not a report JSON"):
        read_carried(experiment, tmp_path / "bad.json")
    with pytest.raises(RouterankError, match="no report to carry"):
        read_carried(experiment, tmp_path / "missing.json")
    with pytest.raises(SpecError, match="unknown systems") as error:
        experiment.pick_systems("rank-r1,rankr1")
    assert "rank-r1" in error.value.fix and experiment.pick_systems(None) is None


# the claims ------------------------------------------------------------------------------------------------------


def table(**rows) -> dict:
    """{system: (scifact nDCG@10, nfcorpus nDCG@10)} -> the report's table shape."""
    return {
        s: {d: {"nDCG@10": v} for d, v in zip(("scifact", "nfcorpus"), values, strict=True)}
        for s, values in rows.items()
    }


def claims(rows: dict, trained=("sft", "dear-stage1", "prorank-stage1", "prorank", "dear-ce")):
    """The four claims, in order: the margin over zero-shot, beating BM25, ProRank's stages, DeAR's terms."""
    return check_claims(rows, ["scifact", "nfcorpus"], trained=list(trained), dear_all="dear-stage1", dear_ce="dear-ce")


def test_a_random_order_of_the_candidates_is_the_reference_level(tmp_path):
    """One query, two candidates, one relevant: a random order puts it first half the time."""
    from types import SimpleNamespace

    from studies.llm_training.collect import random_order

    from routerank.data.trec import write_run
    from routerank.data.types import Qrels, Query, Ranking
    from routerank.data.types import Run as RunType

    run = tmp_path / "bm25.trec"
    write_run(RunType({"q": Ranking(("bad", "good"), (2.0, 1.0))}), run, tag="bm25")
    qrels = Qrels({"q": {"good": 1}})
    experiment = SimpleNamespace(
        config=SimpleNamespace(datasets=("toy", "unscored"), seed=13, depth=20),
        scored=lambda system, dataset: dataset == "toy",
        test_queries=lambda dataset: [Query("q", "a query")],
        test_qrels=lambda dataset: qrels.subset(["q"]),
        run_path=lambda system, dataset: run,
    )
    levels = random_order(experiment)
    assert set(levels) == {"toy"}
    assert levels["toy"] == pytest.approx((1 + 1 / math.log2(3)) / 2, abs=0.06)


def test_claims_hold_when_every_condition_is_met():
    rows = table(
        bm25=(0.60, 0.30),
        **{"zero-shot": (0.20, 0.10)},
        sft=(0.55, 0.25),
        **{"dear-stage1": (0.65, 0.33), "dear-ce": (0.60, 0.32), "prorank-stage1": (0.4, 0.2), "prorank": (0.4, 0.25)},
    )
    result = claims(rows)
    assert [c.status for c in result] == ["holds"] * 4
    assert "`dear-stage1`, the best of 5 trained systems" in result[0].detail and "gain +0.4500" in result[0].detail


def test_the_gain_claim_carries_the_best_rows_position_check():
    rows = table(bm25=(0.6, 0.3), **{"zero-shot": (0.2, 0.2), "dear": (0.55, 0.32), "shuffled-dear": (0.19, 0.25)})
    gain = check_claims(rows, ["scifact", "nfcorpus"], trained=["dear"], dear_all=None, dear_ce=None)[0]
    assert gain.status == "holds" and "shuffled (`shuffled-dear`) it scores 0.1900" in gain.detail
    assert "+0.3600 of its score comes from the order it is shown" in gain.detail


def test_claims_fail_by_how_much():
    rows = table(
        bm25=(0.60, 0.30),
        **{"zero-shot": (0.40, 0.10)},
        sft=(0.62, 0.28),
        **{"dear-stage1": (0.50, 0.31), "dear-ce": (0.55, 0.30), "prorank-stage1": (0.45, 0.2), "prorank": (0.4, 0.21)},
    )
    result = claims(rows)
    gain, beats, prorank, dear = result
    assert gain.status == "fails" and gain.detail.startswith(f"fails by {TARGET_GAIN - 0.22:.4f}")
    assert beats.status == "fails" and beats.detail.startswith("fails by 0.0200 on nfcorpus")
    assert prorank.status == "fails" and prorank.detail.startswith("fails by 0.0500 on scifact")
    assert dear.status == "fails" and dear.detail.startswith("fails by 0.0500 on scifact")


def test_a_tie_with_bm25_is_not_beating_it_and_missing_rows_are_pending():
    rows = table(bm25=(0.60, 0.30), **{"zero-shot": (0.20, 0.10)}, sft=(0.61, 0.30))
    result = claims(rows, trained=("sft", "prorank"))
    gain, beats, prorank, dear = result
    assert gain.status == "holds" and "(1 still pending)" in gain.detail
    assert beats.status == "fails" and beats.detail.startswith("ties BM25")
    assert prorank.status == "pending" and dear.status == "pending"
    none = check_claims({}, ["nfcorpus"], trained=["sft"], dear_all=None, dear_ce=None, prorank=False)
    assert [c.status for c in none] == ["pending"] * 4
    assert [c.detail for c in none] == [
        "scifact is not in this profile",
        "the best is picked on scifact, which is not in this profile",
        *["not in this profile"] * 2,
    ]


# configs ---------------------------------------------------------------------------------------------------------


def test_config_errors_are_clear(tmp_path, fresh_ce):
    with pytest.raises(SpecError, match="unknown methods \\['dpo'\\]"):
        tiny_config(tmp_path, fresh_ce, methods=("sft", "dpo"))
    with pytest.raises(SpecError, match="bad DeAR ablation 'ce\\+mse'"):
        tiny_config(tmp_path, fresh_ce, dear_ablations=("ce+mse",))
    assert tiny_config(tmp_path, fresh_ce, dear_ablations=("kl+ce", "ce+kl")).dear_ablations == ("ce+kl",)
    with pytest.raises(SpecError, match="\\['objective'\\] are set by the experiment"):
        tiny_config(tmp_path, fresh_ce, expert={"objective": "bce"})
    with pytest.raises(SpecError, match="\\['negativs'\\] are not ExpertConfig fields"):
        tiny_config(tmp_path, fresh_ce, expert={"negativs": 3})
    with pytest.raises(SpecError, match="bad teacher alpha"):
        tiny_config(tmp_path, fresh_ce, teacher_alpha="often")
    with pytest.raises(SpecError, match="test_queries must be positive"):
        tiny_config(tmp_path, fresh_ce, test_queries=-1)
    config = tiny_config(tmp_path, fresh_ce)
    (tmp_path / "prorank.toml").write_text(PRORANK + 'backbone = "hf:Qwen/Qwen2.5-0.5B-Instruct"\n')
    with pytest.raises(SpecError, match="prorank_config trains backbone 'hf:Qwen/Qwen2.5-0.5B-Instruct'"):
        LLMTrainingExperiment(config, tmp_path / "w")
    (tmp_path / "rank-r1.toml").unlink()
    with pytest.raises(RouterankError, match="no such config file"):
        LLMTrainingExperiment(tiny_config(tmp_path / "again", fresh_ce, rank_r1_config=str(tmp_path / "rank-r1.toml")))
    with pytest.raises(SpecError, match="unknown stage kinds \\['route'\\]"):
        parse_only("train,route")
    bad = tmp_path / "bad.toml"
    bad.write_text('profile = "x"\ntest_querys = 5\n')
    with pytest.raises(SpecError, match="unknown config keys \\['test_querys'\\]"):
        LLMTrainingConfig.load(bad)
    bad.write_text('profile = "x"\nmethods = ["sft", "dpo"]\n')
    with pytest.raises(SpecError) as caught:
        LLMTrainingConfig.load(bad)
    assert str(bad) in str(caught.value) and "unknown methods ['dpo']" in str(caught.value)
    with pytest.raises(SystemExit) as caught:
        main(["--config", str(tmp_path / "missing.toml")])
    assert caught.value.code == 2


def test_the_shipped_configs_load_and_point_at_the_trainers_configs():
    cpu = LLMTrainingConfig.load(STUDY_CONFIGS / "llm-training-cpu.toml")
    gpu = LLMTrainingConfig.load(STUDY_CONFIGS / "llm-training-gpu.toml")
    assert cpu.profile == "cpu" and gpu.profile == "gpu"
    assert cpu.test_queries == 100 and cpu.depth == 20 and gpu.test_queries is None
    assert set(cpu.datasets) == {"scifact", "nfcorpus"} and set(cpu.methods) == set(gpu.methods)
    assert (
        Path(cpu.dear_config) == CONFIGS / "dear-cpu.toml" and Path(gpu.rank_r1_config) == CONFIGS / "rank-r1-gpu.toml"
    )
    experiment = LLMTrainingExperiment(gpu, "/nonexistent/work", progress=False)
    assert experiment.expert_config("sft").max_queries is None and experiment.expert_config("sft").objective == "bce"
    assert experiment.expert_config("contrastive").objective == "infonce"
    assert experiment.methods.dear.depth == 20 and experiment.spec("teacher").endswith("~auto")
    assert len(experiment.plan()) == 10 + 14 * 2  # one training stage per trained system, one score per row and set
