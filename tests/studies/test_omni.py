"""The Omni-RAG study's config, its per-query measures, and the report it writes from its results."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from studies.omni.config import OmniConfig
from studies.omni.llm import stage_name
from studies.omni.measures import both_at, pair_hits, pair_qrels
from studies.omni.report import markdown

from routerank.data.types import Qrels, Ranking, Run
from routerank.understand.benchmark import Intent, IntentPair

ROOT = Path(__file__).resolve().parents[2]


def test_the_cpu_config_loads_and_what_changes_results_keys_the_work_dir():
    config = OmniConfig.load(ROOT / "studies" / "omni" / "configs" / "cpu.toml")
    assert config.decomposition == "rules" and 0.1 in config.noise_rates
    assert replace(config, profile="x").digest() == config.digest()
    assert replace(config, test_pairs=10).digest() != config.digest()


def test_both_at_needs_every_relevant_document_in_the_top_k():
    run = Run(
        MappingProxyType({"a": Ranking(("d1", "d2", "d3"), (3.0, 2.0, 1.0)), "b": Ranking(("d1", "d9"), (2.0, 1.0))})
    )
    qrels = Qrels(MappingProxyType({"a": {"d1": 1, "d3": 1}, "b": {"d1": 1, "d2": 1}, "c": {"d1": 1}}))
    assert both_at(run, qrels, 3) == {"a": 1.0, "b": 0.0, "c": 0.0}
    assert both_at(run, qrels, 2) == {"a": 0.0, "b": 0.0, "c": 0.0}


def test_pair_measures_count_each_intent():
    intents = (Intent("scifact", "1", "x", ("scifact/a",)), Intent("tatqa", "2", "y", ("tatqa/b", "tatqa/c")))
    pair = IntentPair("p", "test", "{a}; {b}", "x; y", {0.0: "x; y"}, intents)
    run = Run(MappingProxyType({"p": Ranking(("scifact/a", "other"), (2.0, 1.0))}))
    recall, both = pair_hits(run, [pair], k=10)
    assert recall == {"p": 0.5} and both == {"p": 0.0}
    assert pair_qrels([pair])["p"] == {"scifact/a": 1, "tatqa/b": 1, "tatqa/c": 1}


def test_the_report_renders_the_committed_results():
    results = json.loads((ROOT / "reports" / "omni-rag.json").read_text())
    text = markdown(results, "python -m studies.omni --config c.toml", "omni-rag.png")
    assert "## hotpotqa-500: both supporting paragraphs in the top 5" in text
    assert "## The noisy multi-intent benchmark" in text and "![metrics against the typo rate](omni-rag.png)" in text
    assert "## Per-intent routing" in text


def test_the_llm_stage_leaves_the_work_dir_alone_and_has_its_own_file():
    config = OmniConfig.load(ROOT / "studies" / "omni" / "configs" / "cpu.toml")
    with_llm = replace(config, llm_pairs=100, llm_hotpot=300)
    assert with_llm.digest() == config.digest()
    assert stage_name(with_llm) != stage_name(replace(with_llm, llm_pairs=50))
    assert stage_name(with_llm).startswith("llm-")


def test_the_report_renders_the_llm_stage():
    row = {"nDCG@10": 0.5, "intent_recall@10": 0.6, "both_intents@10": 0.25, "ms_per_query": 3.0}
    vs = {"nDCG@10": {"delta": 0.05, "p": 0.01}, "both_intents@10": {"delta": 0.1, "p": 0.2}}
    llm = {
        "model": "smollm2",
        "first_stage": "bm25",
        "synthetic": {
            "pairs": 100,
            "noise": 0.1,
            "clean_raw_nDCG@10": 0.6,
            "denoising_recovery": {"speller": 0.69, "llm-rewrite": None},
            "systems": {
                "raw": {**row, "llm_calls_per_query": 0.0},
                "llm-rewrite": {**row, "nDCG@10": 0.55, "llm_calls_per_query": 1.0, "vs_raw": vs},
            },
        },
        "hotpot": {
            "questions": 300,
            "aggregate": "round-robin",
            "systems": {
                "multi-query-rr": {
                    "both@5": 0.62,
                    "nDCG@10": 0.8,
                    "ms_per_query": 9.0,
                    "llm_calls_per_query": 1.0,
                }
            },
        },
    }
    text = markdown({"llm": llm}, "python -m studies.omni --config c.toml", None)
    assert "## With an LLM" in text and "speller 69%, llm-rewrite –" in text
    assert "| llm-rewrite | 0.5500 | 0.6000 | 0.2500 | +0.0500 (p 0.010)" in text
    assert "| multi-query-rr | 0.6200 | 0.8000 |" in text
