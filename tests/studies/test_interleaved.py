"""The interleaved study's config, and the report it writes from its stages' results."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from studies.interleaved.config import InterleavedConfig
from studies.interleaved.report import markdown

from routerank.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "studies" / "interleaved" / "configs" / "cpu.toml"


def test_the_cpu_config_loads_and_what_changes_results_keys_the_work_dir():
    config = InterleavedConfig.load(CONFIG)
    assert config.dataset == "tatqa" and "maxp" in config.merges and config.table_styles[0] == "pipe"
    assert replace(config, profile="other").digest() == config.digest()
    assert replace(config, depths=(1, 2)).digest() != config.digest()


def test_an_unknown_key_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('dataset = "tatqa"\nmerge = ["mean"]\n')
    with pytest.raises(SpecError, match="unknown config keys"):
        InterleavedConfig.load(path)


def _means(ndcg: float) -> dict:
    return {"means": {"nDCG@10": ndcg, "R@10": ndcg + 0.1}}


def test_the_report_has_a_section_per_finished_stage_and_none_for_the_others():
    results = {
        "documents": {
            "style": "statements",
            "best_merge": "attention",
            "best": "maxp",
            "systems": {
                "first": {"dev": _means(0.4), "test": _means(0.41)},
                "maxp": {"dev": _means(0.5), "test": _means(0.52)},
            },
            "tests": {"attention vs first": {"delta": 0.09, "p": 1e-20, "p_perm": 1e-4}},
        },
        "passages": {
            "systems": {
                "flat>>ce": {**_means(0.4), "passages_scored": 20},
                "coarse@3>>ce": {**_means(0.42), "passages_scored": 19.9},
            },
            "tests": {"ce": {"delta": 0.02, "p": 0.03, "p_perm": 0.04}},
        },
    }
    text = markdown(results, "python -m studies.interleaved --config c.toml")
    assert "## Document retrieval" in text and "| maxp | 0.5000 | 0.5200 | 0.6200 |" in text
    assert "| attention vs first | +0.0900 | 1.0e-20 |" in text
    assert "| coarse@3>>ce | 0.4200 | 0.5200 | 19.9 |" in text and "| ce | +0.0200 | 0.030 | 0.040 |" in text
    assert "## Table linearisation" not in text and "## Long documents" not in text
