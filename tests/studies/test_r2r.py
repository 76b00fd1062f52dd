"""The staged R2R experiment runner, end to end on a tiny random-init backbone and real data slices."""

from __future__ import annotations

import json

import pytest
from studies.r2r.experiment import R2RConfig, R2RExperiment
from studies.r2r.report import write_report

from routerank.data.trec import read_run
from routerank.errors import RouterankError, SpecError
from routerank.evaluate import evaluate


def tiny_config(**overrides) -> R2RConfig:
    base = dict(
        profile="test",
        domains={"scifact": "science", "nfcorpus": "medical"},
        train_queries=4,
        dev_queries=2,
        negatives=1,
        max_doc_tokens=24,
        eval_every=100,
        test_queries=3,
        depth=3,
        candidates=10,
        ablation=("ner",),
        ablation_domains=("scifact",),
        router_train_queries=30,
    )
    base.update(overrides)
    return R2RConfig(**base)


def factory():
    from routerank.models.llm import tiny_llm

    return tiny_llm(seed=0)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, scifact, nfcorpus):
    work = tmp_path_factory.mktemp("r2r")
    experiment = R2RExperiment(tiny_config(), work / "work", progress=False, loaded_factory=factory)
    stages = experiment.run()
    return experiment, stages, work


@pytest.mark.slow
def test_every_stage_runs_and_the_report_has_every_section(finished):
    experiment, stages, work = finished
    assert stages and all(s.done and s.note == "ran" for s in stages)
    report = write_report(experiment, stages, work / "reports" / "r2r.md")
    text = report.read_text()
    for section in (
        "## nDCG@10",
        "## MRR@10",
        "## R@100",
        "## Routing",
        "## Forgetting matrix",
        "## The cost of misrouting",
        "## EAG masking granularity",
        "## Training",
        "## The claims",
    ):
        assert section in text
    data = json.loads(report.with_suffix(".json").read_text())
    for system in ("bm25", "generalist", "pooled", "plain", "r2r", "oracle"):
        assert set(data["table"][system]) >= {"scifact", "nfcorpus"}, system
    assert data["table"]["r2r"]["scifact"]["queries"] == 3
    assert "p_vs_generalist" in data["table"]["r2r"]["scifact"]
    assert all(v is not None for row in data["forgetting"]["values"] for v in row)
    # the ablation expert reorders only BM25's top `depth` of the same 10 candidates: R@100 is BM25's exactly, and
    # its nDCG@10 is the one its run on disk earns on the sampled test queries
    ablated, bm25 = data["table"]["eag_ner"]["scifact"], data["table"]["bm25"]["scifact"]
    assert ablated["R@100"] == pytest.approx(bm25["R@100"]) and ablated["queries"] == bm25["queries"] == 3
    run = read_run(experiment.run_path("eag_ner-scifact", "scifact"))
    candidates = experiment.candidates("scifact")
    assert all(set(run[q].doc_ids) == set(candidates[q].doc_ids) for q in candidates)
    earned = evaluate(run, experiment.test_qrels("scifact"), "nDCG@10").means["nDCG@10"]
    assert ablated["nDCG@10"] == pytest.approx(earned) and ablated["nDCG@10"] != pytest.approx(0.0)
    assert (work / "reports" / "r2r" / "forgetting.png").exists()
    routing = data["routing"]["routers"]
    assert routing["oracle"]["accuracy"] == 1.0 and "confusion" in routing["latent-linear (backbone h_q)"]
    # training times are recorded from the adapters' manifests
    assert data["training"]["eag-scifact"]["stages"] == 2 and data["training"]["plain-scifact"]["stages"] == 1
    assert data["training"]["pooled"]["data"].keys() == {"scifact", "nfcorpus"}


@pytest.mark.slow
def test_a_rerun_skips_every_stage_and_recomputes_only_what_is_missing(finished):
    experiment, _, _ = finished
    again = R2RExperiment(experiment.config, experiment.work, progress=False, loaded_factory=factory)
    assert all(s.note == "cached" for s in again.run())
    experiment.run_path("generalist", "nfcorpus").unlink()
    stages = R2RExperiment(experiment.config, experiment.work, progress=False, loaded_factory=factory).run()
    assert [s.name for s in stages if s.note == "ran"] == ["score generalist on nfcorpus"]


@pytest.mark.slow
def test_r2r_routes_each_query_to_an_expert_and_mixes_adapters_in_one_run(finished):
    experiment, _, _ = finished
    meta = json.loads(experiment.run_path("r2r", "scifact").with_suffix(".json").read_text())
    assert set(meta["adapters"]) <= {"eag-scifact", "eag-nfcorpus", "generalist"}
    bank = json.loads((experiment.work / "bank" / "bank.json").read_text())
    assert set(bank["experts"]) == {"science", "medical"}


def test_a_time_budget_of_zero_starts_nothing_but_still_reports(tmp_path, scifact, nfcorpus):
    experiment = R2RExperiment(tiny_config(seed=99), tmp_path / "w", progress=False, loaded_factory=factory)
    stages = experiment.run(max_minutes=0)
    assert stages and not any(s.done for s in stages)
    report = write_report(experiment, stages, tmp_path / "r.md")
    assert "pending" in report.read_text()


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(SpecError, match="at least two domains"):
        tiny_config(domains={"scifact": "science"})
    with pytest.raises(SpecError, match="ablation_domains"):
        tiny_config(ablation_domains=("tatqa",))
    bad = tmp_path / "bad.toml"
    bad.write_text('profile = "cpu"\ndomains = { scifact = "science", nfcorpus = "medical" }\nnegativs = 3\n')
    with pytest.raises(SpecError, match="unknown config keys \\['negativs'\\]"):
        R2RConfig.load(bad)
    bad.write_text("profile = \n")
    with pytest.raises(SpecError, match="not valid TOML"):
        R2RConfig.load(bad)
    with pytest.raises(RouterankError, match="no such config"):
        R2RConfig.load(tmp_path / "missing.toml")


def test_the_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "studies" / "r2r" / "configs"
    cpu, gpu = R2RConfig.load(root / "r2r-cpu.toml"), R2RConfig.load(root / "r2r-gpu.toml")
    assert cpu.profile == "cpu" and gpu.profile == "gpu" and len(cpu.domains) >= 3 and len(gpu.domains) >= 3
    assert gpu.test_queries is None and gpu.train_queries is None and gpu.depth == 100 and gpu.negatives == 7
    assert cpu.digest() != gpu.digest()
    ce, quick = R2RConfig.load(root / "r2r-ce.toml"), R2RConfig.load(root / "r2r-ce-quick.toml")
    assert ce.backbone == quick.backbone and ce.backbone.startswith("ce:") and set(ce.domains) == set(quick.domains)
    assert ce.test_queries is None and ce.train_queries is None and ce.depth == 100
    assert quick.test_queries and quick.train_queries and ce.digest() != quick.digest()


@pytest.mark.slow
def test_the_same_runner_trains_and_scores_r2r_on_a_cross_encoder_backbone(tmp_path, fresh_ce, nfcorpus):
    config = tiny_config(
        domains={"nfcorpus": "medical", "coliee-statutes": "legal"},
        backbone=f"ce:{fresh_ce}",
        objective="infonce",
        train_queries=3,
        max_doc_tokens=32,
        ablation=(),
        ablation_domains=(),
        interpolate=True,
        first_stage="weighted(0.6*bm25,0.4*bm25)",  # not plain BM25: the report then adds a BM25 row beside it
        dtype="bf16",
        forgetting=False,
    )
    experiment = R2RExperiment(config, tmp_path / "work", progress=False)
    stages = experiment.run()
    assert stages and all(s.done and s.note == "ran" for s in stages)
    routing = json.loads((experiment.work / "router" / "routing.json").read_text())
    coliee = experiment.dataset("coliee-statutes")
    assert routing["test_queries"] == len(nfcorpus.split_queries("test")) + len(coliee.split_queries("test"))
    for dataset in config.domains:
        for system in ("generalist", "r2r", "pooled", f"eag-{dataset}", f"plain-{dataset}"):
            assert experiment.run_path(system, dataset).exists()
    generalist = experiment.run_path("generalist", "nfcorpus").read_text()
    assert generalist != experiment.run_path("eag-nfcorpus", "nfcorpus").read_text()  # a trained LoRA moves scores
    # alpha is chosen on each domain's dev split, and every system gets an interpolated row with p vs the first stage
    alphas = json.loads(experiment.alpha_path().read_text())
    assert {alphas[d]["dev_split"] for d in config.domains} == {"dev"} and alphas["nfcorpus"]["dev_queries"] == 2
    test_ids = {q.id for d in config.domains for q in experiment.test_queries(d)}
    assert not test_ids & {
        line.split()[0] for line in (experiment.work / "dev" / "nfcorpus.trec").read_text().splitlines()
    }
    # every system also chose its own alpha on dev, and its ~ row uses it (no * in the weight table)
    for system in ("pooled", "plain", "oracle", "r2r"):
        for dataset in config.domains:
            record = json.loads(experiment.system_alpha_path(system, dataset).read_text())
            assert record["chosen_on"] == "dev" and record["dev_queries"] == 2 and len(record["curve"]) == 21
    text = write_report(experiment, stages, tmp_path / "r2r.md").read_text()
    assert "(d~) R2R: EAG experts + latent router, interpolated" in text
    own = json.loads(experiment.system_alpha_path("r2r", "nfcorpus").read_text())["alpha"]
    assert f"| (d) r2r | {own:.2f} |" in text and "*" not in text.split("| (d) r2r |")[1].splitlines()[0]
    assert "(d~) beats the generalist interpolated (a~) on average" in text
    assert "Not run in this profile (`forgetting = false`)" in text
    assert not experiment.run_path("eag-nfcorpus", "coliee-statutes").exists()
    assert "beats the first stage in every domain" in text and "beats BM25 in every domain" in text
    table = json.loads((tmp_path / "r2r.json").read_text())["table"]
    assert {"p_vs_bm25", "p_vs_first"} <= table["r2r~dev"]["nfcorpus"].keys()
    assert table["first"]["nfcorpus"]["queries"] == table["bm25"]["nfcorpus"]["queries"]


def test_a_system_chooses_its_alpha_on_dev_queries_none_of_its_adapters_trained_on(tmp_path, scifact, nfcorpus):
    """SciFact has no dev split: the weight is chosen on the queries the backbone held out of training, less those
    an expert then trained on (the expert's seeded split of the train queries)."""
    from routerank.data.devsplit import MANIFEST

    folder = tmp_path / "ce-model"
    folder.mkdir()
    train = scifact.split_queries("train")
    held = [q.id for q in train[:40]]
    manifest = {"sources": {"scifact": {"split": "train", "dev_split": "train", "dev_queries": held}}}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    config = tiny_config(backbone=f"ce:{folder}", train_queries=300, first_stage="bm25")
    experiment = R2RExperiment(config, tmp_path / "work", progress=False)
    trained = experiment.trained_queries(experiment.system_adapters("oracle", "scifact"), "scifact")
    assert len(trained) == 300 and trained <= {q.id for q in train}
    assert trained == experiment.trained_queries(["eag-scifact", "eag-nfcorpus"], "scifact")  # r2r's adapters
    assert len(experiment.trained_queries(["pooled"], "nfcorpus")) == 300
    assert not experiment.trained_queries(["eag-nfcorpus"], "scifact")  # it never saw scifact
    queries, qrels, first, split = experiment.dev_set("scifact", trained)
    ids = {q.id for q in queries}
    assert split == "train" and ids == set(held) - trained and 0 < len(ids) < len(held)  # some overlap is dropped
    assert set(first) == ids and set(qrels.judgments) <= ids
    with pytest.raises(RouterankError, match="no dev query of scifact is left"):
        experiment.dev_set("scifact", frozenset(held))
    # dev_from_backbone: no expert trains on the held-out queries, so all of them choose the weight
    clean = R2RExperiment(R2RConfig(**{**vars(config), "dev_from_backbone": True}), tmp_path / "w2", progress=False)
    trained = clean.trained_queries(clean.system_adapters("r2r", "scifact"), "scifact")
    assert len(trained) == 300 and not trained & set(held)
    assert {q.id for q in clean.dev_set("scifact", trained)[0]} == set(held)
    assert clean.config.digest() != config.digest()


def test_on_a_set_the_backbone_never_trained_on_alpha_is_chosen_on_train_queries_no_adapter_trains_on(tmp_path):
    """AILA statutes has no dev split and the pooled CE never saw it: its dev queries are the train queries that
    no expert of the run trains on (the R2R-CE stress test)."""
    from routerank.data.devsplit import MANIFEST

    folder = tmp_path / "ce-model"
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps({"sources": {"scifact": {"dev_split": "train", "dev_queries": ["1"]}}}))
    config = tiny_config(
        domains={"scifact": "science", "aila-statutes": "legal"}, backbone=f"ce:{folder}", train_queries=10
    )
    experiment = R2RExperiment(config, tmp_path / "work", progress=False)
    every = experiment.trained_queries(list(experiment.expert_configs()), "aila-statutes")
    assert len(every) == 10
    queries, qrels, first, split = experiment.dev_set("aila-statutes")
    assert split == "train" and len(queries) == config.dev_queries and not {q.id for q in queries} & every
    assert all(qrels.relevant(q.id) for q in queries) and set(first) == {q.id for q in queries}


@pytest.mark.slow  # 4-16 s on 2 idle cores: out of the fast lane
def test_stages_wait_for_their_inputs_and_respect_another_process_lock(tmp_path, scifact, nfcorpus):
    import subprocess
    import sys

    from routerank.stages import StageLock

    experiment = R2RExperiment(
        tiny_config(seed=7, test_queries=2, depth=2), tmp_path / "w", progress=False, loaded_factory=factory
    )
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = StageLock(experiment.work / "locks", "score generalist on scifact")
        lock.path.parent.mkdir(parents=True, exist_ok=True)
        lock.path.write_text(f"{sleeper.pid} score generalist on scifact\n")
        stages = {s.name: s for s in experiment.run(only={"score", "route"})}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert stages["score generalist on scifact"].note == f"pending (running in process {sleeper.pid})"
    assert stages["score generalist on nfcorpus"].done  # the generalist needs no trained expert
    assert stages["score eag-scifact on scifact"].note == "pending (its inputs are not ready)"
    assert stages["route (latent router + baselines)"].note == "pending (its inputs are not ready)"
    assert stages["train eag-scifact"].note == "pending" and not stages["train eag-scifact"].done
    # the sleeper is gone now: its lock is stale and is taken over
    again = {s.name: s for s in experiment.run(only={"score"})}
    assert again["score generalist on scifact"].note == "ran" and not lock.path.exists()


def test_the_plan_orders_alpha_after_each_systems_scoring_and_can_skip_the_forgetting_matrix(tmp_path):
    config = tiny_config(interpolate=True)
    names = [s.name for s in R2RExperiment(config, tmp_path / "a", progress=False).plan()]
    assert "score eag-scifact on nfcorpus" in names  # the forgetting matrix, off the diagonal
    for system, last in (("r2r", "score r2r on nfcorpus"), ("pooled", "score pooled on nfcorpus")):
        assert names.index(f"alpha {system} on scifact (dev)") > names.index(last)
    assert names.index("alpha plain on scifact (dev)") > names.index("score plain-nfcorpus on nfcorpus")
    lean = R2RConfig(**{**vars(config), "forgetting": False})
    lean_names = [s.name for s in R2RExperiment(lean, tmp_path / "b", progress=False).plan()]
    assert "score eag-scifact on nfcorpus" not in lean_names and "score eag-scifact on scifact" in lean_names
    assert set(lean_names) < set(names) and lean.digest() != config.digest()
    assert "alpha pooled on scifact (dev)" not in [
        s.name for s in R2RExperiment(tiny_config(), tmp_path / "c", progress=False).plan()
    ]
    with pytest.raises(SpecError, match="unknown dtype"):
        tiny_config(dtype="fp16")
