"""The starter build's config and report: what keys the work dir, and the table its figures print as."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from studies.starter.config import StarterConfig
from studies.starter.report import markdown, results_table

from routerank.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]


def test_the_cpu_config_loads_and_only_what_is_trained_keys_the_work_dir():
    config = StarterConfig.load(ROOT / "studies" / "starter" / "configs" / "cpu.toml")
    assert config.datasets == ("scifact", "nfcorpus", "tatqa", "coliee-statutes") and config.autocast == "bf16"
    assert replace(config, test_queries=50).digest() == config.digest()
    assert replace(config, train_queries=10).digest() != config.digest()


def test_a_bad_config_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('datasets = ["scifact"]\n')
    with pytest.raises(SpecError, match="two domains"):
        StarterConfig.load(path)
    path.write_text('datasets = ["scifact", "nfcorpus"]\ntypo = 1\n')
    with pytest.raises(SpecError, match="unknown config keys"):
        StarterConfig.load(path)


def test_the_table_marks_significant_differences_and_counts_experts():
    ones, zeros = {f"q{i}": 1.0 for i in range(20)}, {f"q{i}": 0.0 for i in range(20)}
    half = {f"q{i}": float(i % 2) for i in range(20)}
    record = {
        "queries": 20,
        "depth": 20,
        "routed_to": {"scifact": 18, "generalist": 2},
        "per_query": {"bm25": half, "first": half, "generalist": ones, "expert": ones, "routed": zeros},
    }
    table = results_table({"scifact": record})
    routed = table["scifact"]["systems"]["routed"]
    assert routed["nDCG@10"] == 0.0 and routed["vs_bm25"]["delta"] == -0.5 and routed["vs_bm25"]["p"] < 0.05
    text = markdown(table)
    assert "| routed~auto | 0.000-†-‡ |" in text and "| generalist~auto | 1.000†‡ |" in text
    assert "scifact: generalist 2 scifact 18" in text
