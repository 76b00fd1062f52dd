from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from studies.effectiveness.experiment import EffectivenessConfig, EffectivenessExperiment

from routerank.errors import RouterankError, SpecError
from routerank.pipeline import build
from routerank.rerank.cross_encoder import CrossEncoderReranker
from routerank.rerank.interpolate import GRID, InterpolatedReranker
from routerank.tune import tune_alpha


@pytest.fixture(scope="module")
def model(fresh_ce, scifact, tmp_path_factory):
    """A copy of the fresh cross-encoder whose manifest holds three scifact train queries out of training (scifact
    has no dev split), so both ways of finding dev queries are used: nfcorpus's dev split, scifact's held-out."""
    ignore = shutil.ignore_patterns("interpolation.json", "routerank_train.json")
    folder = shutil.copytree(fresh_ce, tmp_path_factory.mktemp("tuned") / "ce", ignore=ignore)
    held = [q.id for q in scifact.split_queries("train")[:3]]
    (folder / "routerank_train.json").write_text(
        json.dumps({"sources": {"scifact": {"dev_split": "train", "dev_queries": held}}})
    )
    return folder


@pytest.fixture(scope="module")
def study_record(model, tmp_path_factory):
    config = EffectivenessConfig(
        ("nfcorpus", "scifact"), {"reranker": f"ce:{model}"}, ("bm25",), depth=5, dev_queries=3, llm_rows=None
    )
    experiment = EffectivenessExperiment(config, tmp_path_factory.mktemp("eff"), progress=False)
    experiment.run(only={"dev", "alpha"})
    record = json.loads(experiment.alpha_path("reranker", "bm25").read_text())
    (model / "interpolation.json").unlink()  # what the library writes is checked on its own
    return record


def test_tune_alpha_gives_the_studys_record_and_saves_it_for_auto(model, study_record, nfcorpus, scifact, tmp_path):
    record = tune_alpha(
        ["nfcorpus", "scifact"], f"ce:{model}", "bm25", depth=5, dev_queries=3, work_dir=tmp_path, progress=False
    )
    assert json.loads(json.dumps(record)) == study_record
    assert list(record) == ["chosen_on", "measure", "depth", "grid", "partial", "pooled", "by_corpus"]
    assert record["grid"] == list(GRID) and record["pooled"]["alpha"] in GRID and not record["partial"]
    entries = {e["dataset"]: e for e in record["by_corpus"].values()}
    assert (entries["nfcorpus"]["dev_split"], entries["nfcorpus"]["dev_queries"]) == ("dev", 3)
    assert (entries["scifact"]["dev_split"], entries["scifact"]["dev_queries"]) == ("train", 3)
    assert json.loads((model / "interpolation.json").read_text())["bm25"] == json.loads(json.dumps(record))
    for ds in (nfcorpus, scifact):
        pipeline = build(f"bm25>>ce:{model}@5~auto", ds.corpus, reranker_options={"progress": False})
        stage = pipeline.stages[0][0]
        assert isinstance(stage, InterpolatedReranker)
        assert stage.alpha_for(ds.corpus) == record["by_corpus"][ds.corpus.fingerprint]["alpha"]


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_the_command_prints_each_choice_and_the_spec_to_use(model, study_record, tmp_path):
    args = ["tune-alpha", "-d", "nfcorpus,scifact", "-r", f"ce:{model}", "-p", "bm25", "--depth", "5"]
    result = subprocess.run(
        [sys.executable, "-m", "routerank.cli", *args, "--dev-queries", "3"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    entries = {e["dataset"]: e for e in study_record["by_corpus"].values()}
    assert result.stdout.splitlines() == [
        f"nfcorpus: alpha {entries['nfcorpus']['alpha']:.2f} (3 dev queries)",
        f"scifact: alpha {entries['scifact']['alpha']:.2f} (3 train queries)",
        f"pooled: alpha {study_record['pooled']['alpha']:.2f}; use bm25>>ce:{model}@5~auto",
    ]


def test_a_rerun_reads_both_runs_from_the_work_dir(model, tmp_path, monkeypatch):
    first = tune_alpha(["nfcorpus"], f"ce:{model}", "bm25", depth=5, dev_queries=3, work_dir=tmp_path, progress=False)

    def boom(*args, **kwargs):
        raise AssertionError("a cached run was made again")

    monkeypatch.setattr("routerank.tune.build", boom)
    monkeypatch.setattr(CrossEncoderReranker, "rerank_run", boom)
    again = tune_alpha(["nfcorpus"], f"ce:{model}", "bm25", depth=5, dev_queries=3, work_dir=tmp_path, progress=False)
    assert again == first
    with pytest.raises(AssertionError, match="made again"):  # another depth is another run
        tune_alpha(["nfcorpus"], f"ce:{model}", "bm25", depth=4, dev_queries=3, work_dir=tmp_path, progress=False)


def test_bad_requests_are_refused(fresh_ce, tmp_path):
    with pytest.raises(SpecError, match="at least one dataset"):
        tune_alpha([], f"ce:{fresh_ce}", "bm25", work_dir=tmp_path)
    with pytest.raises(SpecError, match="at least 1"):
        tune_alpha(["nfcorpus"], f"ce:{fresh_ce}", "bm25", depth=0, work_dir=tmp_path)
    with pytest.raises(RouterankError, match="scifact has no dev split"):
        tune_alpha(["scifact"], f"ce:{fresh_ce}", "bm25", depth=5, work_dir=tmp_path, progress=False)
