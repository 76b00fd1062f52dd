from __future__ import annotations

import json

import pytest
from studies.effectiveness.experiment import EffectivenessConfig, EffectivenessExperiment
from studies.effectiveness.report import markdown, write_report

from routerank.errors import RouterankError, SpecError


def test_config_is_checked(tmp_path):
    with pytest.raises(SpecError, match="at least one"):
        EffectivenessConfig((), {"ce": "ce:x"})
    with pytest.raises(SpecError, match="not in `datasets`"):
        EffectivenessConfig(("scifact",), {"ce": "ce:x"}, test_queries={"nfcorpus": 5})
    bad = tmp_path / "bad.toml"
    bad.write_text('datasets = ["scifact"]\nrerankers = { ce = "ce:x" }\nsurprise = 1\n')
    with pytest.raises(SpecError, match="not among the first_stages"):
        EffectivenessConfig(("scifact",), {"ce": "ce:x"}, ("bm25",), rerank_first_stages=("hybrid",))
    with pytest.raises(SpecError, match="unknown config keys"):
        EffectivenessConfig.load(bad)


@pytest.fixture(scope="module")
def experiment(fresh_ce, tmp_path_factory):
    config = EffectivenessConfig(
        ("nfcorpus",),
        {"fresh": f"ce:{fresh_ce}"},
        ("bm25", "bm25:k1=0.3,b=0.2"),
        rerank_first_stages=("bm25",),
        depth=5,
        test_queries={"nfcorpus": 4},
        dev_queries=3,
        llm_rows=None,
    )
    work = tmp_path_factory.mktemp("eff")
    experiment = EffectivenessExperiment(config, work, progress=False)
    stages = experiment.run()
    return experiment, stages


def test_every_stage_runs_once_and_a_rerun_is_all_cached(experiment):
    exp, stages = experiment
    assert [s.note for s in stages] == ["ran"] * len(stages)
    kinds = [s.name.split()[0] for s in stages]
    assert kinds.count("rerank") == 2 and kinds.count("alpha") == 1
    again = EffectivenessExperiment(exp.config, exp.work, progress=False).run()
    assert [s.note for s in again] == ["cached"] * len(again)


def test_alpha_is_chosen_on_dev_saved_beside_the_model_and_used_for_the_test_row(experiment, fresh_ce, tmp_path):
    exp, stages = experiment
    saved = json.loads((fresh_ce / "interpolation.json").read_text())["bm25"]
    assert saved["chosen_on"] == "dev" and len(saved["grid"]) == 21 and not saved["partial"]
    entry = next(iter(saved["by_corpus"].values()))
    assert entry["dataset"] == "nfcorpus" and entry["dev_split"] == "dev" and entry["dev_queries"] == 3
    test_ids = {q.id for q in exp.test_queries("nfcorpus")}
    dev_ids = {q.id for q in exp.dev_queries("nfcorpus", "fresh")[0]}
    assert not test_ids & dev_ids
    report = write_report(exp, tmp_path / "effectiveness.json", stages)
    rows = report["nfcorpus"]
    assert set(rows) == {"bm25", "bm25:k1=0.3,b=0.2", "bm25>>fresh", "bm25>>fresh~dev"}  # the second: alone
    assert rows["bm25>>fresh~dev"]["alpha"] == entry["alpha"]
    assert rows["bm25>>fresh"]["queries"] == 4 and "4 of 323 seeded" in rows["bm25"]["protocol"]
    assert 0 <= rows["bm25>>fresh"]["p_vs_bm25"] <= 1 and "p_vs_bm25" not in rows["bm25"]
    assert json.loads((tmp_path / "effectiveness.json").read_text())["nfcorpus"] == rows
    table = markdown(report)
    assert "| nfcorpus | `bm25>>fresh~dev` |" in table and "MS MARCO MiniLM-L6 CE (published)" in table


def test_a_dataset_without_dev_queries_for_a_model_is_a_clear_error(fresh_ce, scifact, tmp_path):
    config = EffectivenessConfig(("scifact",), {"fresh": f"ce:{fresh_ce}"}, ("bm25",), depth=5)
    with pytest.raises(RouterankError, match="no dev split"):
        EffectivenessExperiment(config, tmp_path, progress=False).dev_queries("scifact", "fresh")


def test_a_dev_tuned_fusion_first_stage_reports_its_weights_without_any_reranker(nfcorpus, tmp_path):
    tuned = "weighted(bm25,bm25:k1=0.3,b=0.2)~dev"
    with pytest.raises(SpecError, match="only a weighted fusion"):
        EffectivenessConfig(("nfcorpus",), {}, ("bm25", "rrf(bm25,dense)~dev"))
    config = EffectivenessConfig(
        ("nfcorpus",), {}, ("bm25", tuned), depth=5, test_queries={"nfcorpus": 4}, dev_queries=3, llm_rows=None
    )
    exp = EffectivenessExperiment(config, tmp_path / "work", progress=False)
    exp.run()
    choice = exp.fusion_choice("nfcorpus", tuned)
    assert choice["dev_split"] == "dev" and choice["dev_queries"] == 3
    assert exp.stage_spec("nfcorpus", tuned) == choice["spec"] and exp.stage_spec("nfcorpus", "bm25") == "bm25"
    report = write_report(exp, tmp_path / "effectiveness.json")
    row = report["nfcorpus"][tuned]
    assert row["weights"] == choice["weights"] and "weights chosen on dev" in row["protocol"]
    assert "p_vs_bm25" in row and set(report["nfcorpus"]) == {"bm25", tuned}
    assert "w " in markdown(report)
