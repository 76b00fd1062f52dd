"""The retrieval-vs-generation study's config, its per-query measures, its resumable stages, and the report it
writes from a small results record."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pytest
from studies.rvg.__main__ import main
from studies.rvg.config import RvgConfig
from studies.rvg.measures import answer_recall, closed_answers, hyde_base, leaks, lm_documents, split_halves
from studies.rvg.report import figure, markdown
from studies.rvg.study import RvgStudy, cost_since

from routerank.data.types import Corpus, Document, Query
from routerank.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "studies" / "rvg" / "configs"


def test_the_profiles_load_and_what_changes_results_keys_the_work_dir():
    cpu, gpu = RvgConfig.load(CONFIGS / "cpu.toml"), RvgConfig.load(CONFIGS / "gpu.toml")
    assert cpu.qa_sample == 30 and cpu.choose_sample == 20 and cpu.k == 3 and cpu.rank_sample == 50
    assert gpu.qa_sample is None and gpu.rank_sample is None  # 0 means the full test set
    assert cpu.reranked == "hybrid>>ce:starter@20" and "mix(2*hybrid,1*genread)" in cpu.mixed_candidates
    assert replace(cpu, profile="x", batch_size=1).digest() == cpu.digest()
    assert replace(cpu, qa_sample=61).digest() != cpu.digest()
    assert replace(cpu, profile="gpu", batch_size=32) != gpu


def test_the_shipped_profiles_keep_their_work_dir_digests():
    assert RvgConfig.load(CONFIGS / "cpu.toml").digest() == "ebea7f7206"
    assert RvgConfig.load(CONFIGS / "gpu.toml").digest() == "41a4d6e7f8"


def test_an_unknown_config_key_is_an_error_that_names_it(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('profile = "cpu"\nqa_samples = 10\n')
    with pytest.raises(SpecError, match=r"unknown config keys \['qa_samples'\]"):
        RvgConfig.load(path)


def test_answer_recall_looks_at_the_first_documents_only():
    queries = [Query("a", "q", ("Denver Broncos",)), Query("b", "q", ("1889",)), Query("c", "q", ("x y",))]
    contexts = [
        [Document("1", "The Denver  broncos won."), Document("2", "none")],
        [Document("3", "nothing"), Document("4", "built in 1889")],
        [],
    ]
    assert answer_recall(queries, contexts, 1) == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert answer_recall(queries, contexts, 5) == {"a": 1.0, "b": 1.0, "c": 0.0}


def test_a_document_is_split_at_its_middle_word_after_the_cap():
    assert split_halves("a b c d e", 100) == ("a b", " c d e")
    assert split_halves(" ".join(str(i) for i in range(10)), 4) == ("0 1", " 2 3")
    assert leaks(" the quick brown fox jumps over the lazy dog", ["Quick brown fox jumps over the lazy dog!"], 5)
    assert not leaks(" the quick brown fox", ["a slow fox"], 3)
    assert hyde_base("hyde(dense,mode=passage)") == "dense" and hyde_base("hyde(bm25)") == "bm25"
    assert hyde_base("hybrid") is None


def test_the_language_modelling_sample_is_seeded_and_long_enough():
    corpus = Corpus([Document(str(i), " ".join(["w"] * i)) for i in range(1, 40)])
    picked = lm_documents(corpus, 5, 20, seed=13)
    assert [d.id for d in picked] == [d.id for d in lm_documents(corpus, 5, 20, seed=13)]
    assert len(picked) == 5 and all(len(d.text.split()) >= 20 for d in picked)
    assert [d.id for d in picked] == sorted(d.id for d in picked)
    assert len(lm_documents(corpus, 100, 35, seed=13)) == 5


def test_cost_is_what_grew_between_two_readings():
    before = {"llm_calls": 2, "generated_tokens": 50, "passages": 2}
    after = {"llm_calls": 5, "generated_tokens": 110, "passages": 5}
    assert cost_since(before, after) == {"llm_calls": 3, "generated_tokens": 60, "passages": 3}


def test_a_stage_whose_json_exists_is_skipped_and_read_into_the_results(tmp_path):
    config = replace(RvgConfig(), qa_datasets=("squad-dev",), rank_datasets=("scifact",), lm_datasets=())
    study = RvgStudy(config, tmp_path, progress=False)
    assert [(s.name, s.kind) for s in study.steps()] == [("qa:squad-dev", "qa"), ("rank:scifact", "rank")]
    study.write_json(study.stage_file("qa:squad-dev"), {"dataset": "squad-dev", "per_query_f1": {"q": 1.0}})
    stages = study.run(only={"qa"})
    assert [(s.name, s.note) for s in stages] == [("qa:squad-dev", "cached"), ("rank:scifact", "pending")]
    results = study.results()
    assert results["qa"] == {"squad-dev": {"dataset": "squad-dev"}} and "rank" not in results
    assert list(results["config"]["qa_datasets"]) == ["squad-dev"]


def test_an_unknown_stage_kind_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--config", str(CONFIGS / "cpu.toml"), "--only", "train"])
    assert caught.value.code == 2 and "unknown stage kinds ['train']" in capsys.readouterr().err


def _qa_row(spec, f1, recall1=None, tests=None, **extra):
    row = {
        "spec": spec,
        "n": 60,
        "EM": round(f1 / 2, 4),
        "F1": f1,
        "seconds_per_query": 0.5,
        "context_seconds_per_query": 0.1,
        "answer_seconds_per_query": 0.4,
        "llm_calls_per_query": 1.0,
        "generated_tokens_per_query": 6.0,
        "passage_tokens_per_query": 0.0,
        "cached_answers": 0,
        "cached_passages": None,
        "tests": tests or {},
        **extra,
    }
    if recall1 is not None:
        row["recall@1"], row["recall@5"] = recall1, min(1.0, recall1 + 0.2)
    return row


def fake_results() -> dict:
    test = {"delta": 0.1234, "p": 0.0004, "p_perm": 0.001}
    qa = {
        "dataset": "squad-dev",
        "test_queries": 60,
        "train_queries": 30,
        "k": 3,
        "closed_set": [],
        "answer_recall": True,
        "baseline": "bm25",
        "mixed_on_train": {"mix(2*hybrid,1*genread)": 0.2, "mix(1*genread,2*hybrid)": 0.1},
        "mixed_chosen": "mix(2*hybrid,1*genread)",
        "conditions": {
            "closed-book": _qa_row(None, 0.0512),
            "bm25": _qa_row("bm25", 0.2468, 0.55, {"closed-book": test}),
            "genread": _qa_row("genread", 0.0433, 0.05, llm_calls_per_query=2.0),
            "mixed": _qa_row("mix(2*hybrid,1*genread)", 0.2101, 0.5),
        },
    }
    rank = {
        "dataset": "scifact",
        "test_queries": 100,
        "baseline": "bm25",
        "systems": {
            "bm25": {
                "nDCG@10": 0.6612,
                "seconds_per_query": 0.002,
                "llm_calls_per_query": 0.0,
                "generated_tokens_per_query": 0.0,
            },
            "hyde(bm25)": {
                "nDCG@10": 0.6021,
                "seconds_per_query": 1.5,
                "llm_calls_per_query": 1.0,
                "generated_tokens_per_query": 80.0,
                "vs_baseline": {"delta": -0.0591, "p": 0.02},
                "vs_expanded": {"delta": -0.0591, "p": 0.02},
            },
        },
    }
    lm_row = {"target_tokens": 5000, "leaks": 0}
    lm = {
        "dataset": "nfcorpus",
        "passages": 40,
        "generated_cost": {"llm_calls": 40, "generated_tokens": 3000, "passages": 40, "seconds_per_passage": 1.25},
        "conditions": {
            "none": {**lm_row, "perplexity": 31.25},
            "bm25": {**lm_row, "perplexity": 27.5, "leaks": 3},
            "generated": {**lm_row, "perplexity": 33.75},
        },
        "tests": {
            "bm25 vs none": {"delta": -0.12, "p": 0.001},
            "generated vs none": {"delta": 0.05, "p": 0.2},
            "generated vs bm25": {"delta": 0.17, "p": 0.0001},
        },
    }
    return {"config": asdict(RvgConfig()), "qa": {"squad-dev": qa}, "rank": {"scifact": rank}, "lm": {"nfcorpus": lm}}


def test_the_report_states_the_numbers_and_where_the_small_model_is_too_weak(tmp_path):
    results = fake_results()
    text = markdown(results, "python -m studies.rvg --config studies/rvg/configs/cpu.toml", "rvg.png")
    assert "Reproduce: `python -m studies.rvg --config studies/rvg/configs/cpu.toml`" in text
    assert "| bm25 | `bm25` | 0.123 | 0.247 | 0.550 | 0.750 | +0.1234 (p 4.0e-04) |" in text
    assert "**mix(2*hybrid,1*genread)**" not in text and "**`mix(2*hybrid,1*genread)`**" in text
    assert "| `hyde(bm25)` | 0.6021 | -0.0591 (p 0.020) | 1.500 ‡ | 1 | 80.0 |" in text
    assert "| nfcorpus | 40 | 5000 | 31.25 | 27.50 | 33.75 |" in text
    assert "protocol differs from the full-test effectiveness table" in text
    assert "best context is **bm25** (F1 0.247)" in text
    assert text.count("SmolLM2-135M is too weak for this claim") == 3  # genread, hyde, generated LM context
    assert "studies/rvg/configs/gpu.toml" in text and "![which source wins where](rvg.png)" in text
    assert "3 of 40 BM25 contexts repeat the target's first words" in text
    drawn = figure(results, tmp_path / "rvg.png")
    assert drawn is None or drawn.read_bytes().startswith(b"\x89PNG")


def test_answer_recall_is_left_out_for_yes_no_answers():
    assert closed_answers([Query("a", "q", ("yes",)), Query("b", "q", ("Maybe",))])
    assert not closed_answers([Query("a", "q", ("yes",)), Query("b", "q", ("1889",))])
