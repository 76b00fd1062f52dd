from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from studies.r3ag.experiment import R3AGExperiment, R3AGExperimentConfig

from routerank.errors import SpecError
from routerank.r3ag.labels import RoutingLabels

CONFIGS = Path(__file__).resolve().parents[2] / "studies" / "r3ag" / "configs"
MEMBERS = ("R0", "bm25", "rm3", "dense")
TOPICS = {"alpha": "bm25", "beta": "R0", "gamma": "dense", "delta": "rm3"}  # each topic's best member


def fake_encoder(texts):
    """Deterministic 384-d features: a topic direction plus per-text noise, so topics are learnable."""
    out = []
    for text in texts:
        topic = next(i for i, t in enumerate(TOPICS) if t in text)
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        vector = np.random.default_rng(seed).normal(0, 0.3, 384)
        vector[topic * 10 : topic * 10 + 10] += 3.0
        out.append(vector / np.linalg.norm(vector))
    return np.asarray(out, dtype=np.float32)


def synthetic(dataset: str, split: str, n: int, seed: int) -> RoutingLabels:
    rng = np.random.default_rng(seed)
    topics = [list(TOPICS)[i % len(TOPICS)] for i in range(n)]
    utility = rng.uniform(0, 0.3, (n, len(MEMBERS))).astype(np.float32)
    quality = rng.uniform(0, 0.5, (n, len(MEMBERS))).astype(np.float32)
    quality[:, 0] = 0
    for row, topic in enumerate(topics):
        column = MEMBERS.index(TOPICS[topic])
        utility[row, column] = 0.9
        if column:
            quality[row, column] = 0.9
    ids = [f"{dataset}-{split}-{i}" for i in range(n)]
    meta = {
        "pool": list(MEMBERS),
        "em": {q: (row > 0.5).astype(float).tolist() for q, row in zip(ids, utility, strict=True)},
        "search_seconds_per_query": {m: 0.01 for m in MEMBERS[1:]},
        "generation": {m: {"seconds": 2.0, "generated": 4} for m in MEMBERS},
    }
    texts = [f"{topic} question {i} of {dataset}" for i, topic in enumerate(topics)]
    return RoutingLabels(MEMBERS, ids, texts, quality, utility, ("R0",), meta)


@pytest.fixture
def experiment(tmp_path: Path) -> R3AGExperiment:
    pool = tmp_path / "pool.toml"
    pool.write_text('[pool]\nR0 = "null"\nbm25 = "bm25"\nrm3 = "bm25+rm3"\ndense = "dense"\n')
    config = R3AGExperimentConfig(
        datasets=("a", "b"), pool=str(pool), train_queries=24, test_queries=12, epochs=8, extend="rm3"
    )
    exp = R3AGExperiment(config, tmp_path / "work", tmp_path / "reports" / "r3ag.md")
    exp.encoder = lambda: fake_encoder
    for i, ds in enumerate(config.datasets):
        synthetic(ds, "train", 24, i).save(exp.label_dir(ds, "train") / "labels")
        synthetic(ds, "test", 12, 10 + i).save(exp.label_dir(ds, "test") / "labels")
    return exp


def test_the_plan_trains_evaluates_and_reports_from_labels(experiment):
    stages = experiment.run(only={"train", "evaluate", "report"})
    assert [s.note for s in stages][:4] == ["cached"] * 4 and all(s.done for s in stages)
    results = json.loads(experiment.report.with_suffix(".json").read_text())
    a = results["sets"]["a"]["systems"]
    assert a["oracle"]["f1"] == pytest.approx(0.9)
    assert a["r3ag"]["f1"] > a["random"]["f1"]  # topics decide the best member, and R3AG learns them
    assert a["r3ag"]["f1"] > a["never-retrieve"]["f1"]
    assert {"r3ag-no-quality", "r3ag-no-utility", "r3ag-mean-fusion", "r3ag+rm3-added"} <= set(a)
    assert "rm3" not in a["r3ag-without-rm3"]["routes"]
    abstention = results["sets"]["a"]["abstention"]
    assert abstention["queries"] == a["r3ag"]["routes"].get("R0", 0)
    text = experiment.report.read_text()
    assert "## Headline" in text and "| a |" in text and "Cross-generator transfer" in text
    # the targets section judges each target from the results, and the label table shows the train labels too
    sets = list(results["sets"].values())
    mean = lambda name: sum(r["systems"][name]["f1"] for r in sets) / len(sets)  # noqa: E731
    baselines = ("always-retrieve", "never-retrieve", "random", "centroid", "classifier", "necessity")
    best = max(mean(b) for b in baselines)
    target = next(line for line in text.splitlines() if line.startswith("| R3AG beats the best non-oracle"))
    verdict = "holds" if mean("r3ag") > best else "fails"
    named = next(b for b in baselines if f" vs {b} " in target)
    assert f"| {verdict}: R3AG {mean('r3ag'):.3f} vs {named} {best:.3f} " in target and mean(named) == best
    average = results["average"]  # one paired test over both sets' test queries, against that same baseline
    assert average["baseline"] == named and average["queries"] == 24
    assert average["delta_f1"] == pytest.approx(mean("r3ag") - best, abs=1e-6)
    assert f", p = {average['randomization_pvalue']:.2f})" in target
    fixed = results["sets"]["a"]["vs_oracle_fixed"]
    assert fixed["delta_f1"] == pytest.approx(a["r3ag"]["f1"] - a["oracle-fixed"]["f1"], abs=1e-6)
    assert "per_query_f1" not in results["sets"]["a"]
    assert "| a | F1 (train) |" in text and "| a | EM |" in text
    assert set(results["sets"]["a"]["train_label_means"]["em"]) == set(results["sets"]["a"]["label_means"]["f1"])
    again = experiment.run(only={"train", "evaluate"})
    assert [s.note for s in again][4:6] == ["cached", "cached"]


def test_the_average_test_pools_every_set_without_merging_equal_query_ids():
    from studies.r3ag.evaluation import average_test

    per_query = {  # both sets use the ids q1, q2: pooled they are four queries, not two
        "a": {"r3ag": {"q1": 1.0, "q2": 0.0}, "random": {"q1": 0.0, "q2": 0.0}, "centroid": {"q1": 1.0, "q2": 1.0}},
        "b": {"r3ag": {"q1": 1.0, "q2": 1.0}, "random": {"q1": 0.0, "q2": 1.0}, "centroid": {"q1": 0.0, "q2": 0.0}},
    }
    f1 = {ds: {n: {"f1": sum(v.values()) / 2} for n, v in rows.items()} for ds, rows in per_query.items()}
    results = {ds: {"systems": systems} for ds, systems in f1.items()}
    test = average_test(per_query, results)
    assert test["queries"] == 4 and test["baseline"] == "centroid"  # centroid averages 0.5, random 0.25
    assert test["delta_f1"] == pytest.approx(0.75 - 0.5)
    assert 0.0 < test["randomization_pvalue"] <= 1.0


def test_the_abstain_margin_is_chosen_on_held_out_train_queries(experiment):
    from dataclasses import replace

    experiment.config = replace(experiment.config, abstain_margins=(1.0, 2.0))
    experiment.run(only={"train", "evaluate", "report"})
    selection = json.loads((experiment.work / "train.json").read_text())["selection"]
    assert len(selection["grid"]) == 4  # two modes x two margins
    best = max(g["macro"] for g in selection["grid"])
    chosen = next(g for g in selection["grid"] if g["mode"] == selection["chosen"] and g["macro"] == best)
    assert selection["abstain_margin"] == chosen["margin"]
    results = json.loads(experiment.report.with_suffix(".json").read_text())
    for r in results["sets"].values():  # the margin holds R0 back; the same router at margin 0 is its own row
        routed = r["systems"]["r3ag"]["routes"].get("R0", 0)
        assert routed <= r["systems"]["r3ag-argmax"]["routes"].get("R0", 0)
    text = experiment.report.read_text()
    assert f"Abstain margin: **{selection['abstain_margin']:g}**" in text and "| r3ag-argmax |" in text


def test_k_fold_selection_holds_out_every_train_query_once(experiment):
    from dataclasses import replace

    from studies.r3ag.training import _splits, choose_mode

    labels = experiment.labels("a", "train")
    splits = _splits(labels, 0.25, 3, seed=13)
    held = [q for _, out in splits for q in out.query_ids]
    assert sorted(held) == sorted(labels.query_ids) and len(splits) == 3
    assert all(not set(fit.query_ids) & set(out.query_ids) for fit, out in splits)
    [(fit, out)] = _splits(labels, 0.25, 1, seed=13)
    assert len(out) == 6 and len(fit) == 18
    experiment.config = replace(experiment.config, folds=3, abstain_margins=(0.0, 2.0))
    selection = choose_mode(experiment)
    assert selection["folds"] == 3 and selection["held_out_share"] == 1.0
    assert selection["abstain_margin"] == 0.0  # one topic in four is best served by R0: never abstaining loses it
    assert experiment.config.digest() != replace(experiment.config, folds=1, abstain_margins=(0.0,)).digest()


def test_abstention_check_compares_r0_with_always_retrieve_on_the_routed_queries():
    from studies.r3ag.training import abstention_check

    labels = synthetic("a", "train", 8, 0)
    em = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]] * 2, dtype=np.float32)
    routed = np.array([0, 0, 0, 2, 1, 1, 3, 3])  # queries 0-2 go to R0: EM 2/3 with R0, 2/3 with bm25
    check = abstention_check(labels, em, routed, "bm25")
    third = pytest.approx(2 / 3)
    assert check == {"queries": 3, "of": 8, "safe": True, "em_r0": third, "em_always": third}
    even = abstention_check(labels, em, np.array([0, 0, 0, 0, 1, 1, 1, 1]), "bm25")  # R0 1/2, bm25 1/2: no EM lost
    assert even["safe"] is True and even["em_r0"] == even["em_always"] == 0.5
    unsafe = abstention_check(labels, em, np.array([1, 0, 1, 1, 1, 1, 1, 1]), "bm25")  # query 1: R0 0, bm25 1
    assert unsafe["safe"] is False and unsafe["queries"] == 1 and unsafe["em_always"] == 1.0
    assert abstention_check(labels, em, np.ones(8, dtype=int), "bm25") == {"queries": 0, "of": 8, "safe": True}


def test_safe_abstention_refuses_margins_whose_held_out_r0_routes_lose_em(experiment):
    from dataclasses import replace

    from studies.r3ag.training import choose_mode

    for ds in experiment.config.datasets:  # R0 wins on F1 for the "beta" topic but never answers exactly there
        labels = experiment.labels(ds, "train")
        em = labels.meta["em"]
        for q, text in zip(labels.query_ids, labels.queries, strict=True):
            if text.startswith("beta"):
                em[q] = [0.0, 1.0, 1.0, 1.0]
        labels.save(experiment.label_dir(ds, "train") / "labels")
    experiment.config = replace(experiment.config, folds=2, abstain_margins=(0.0, 0.5))
    plain = choose_mode(experiment)
    assert plain["abstain_margin"] == 0.0 and "safe" not in plain["grid"][0]
    experiment.config = replace(experiment.config, safe_abstention=True)
    safe = choose_mode(experiment)
    assert [g["margin"] for g in safe["grid"]] == [0.0, 0.5, 2.0, 0.0, 0.5, 2.0]  # margin 2 joins the grid
    by_margin = {(g["mode"], g["margin"]): g for g in safe["grid"]}
    zero = by_margin[("pooled", 0.0)]
    assert zero["safe"] is False and zero["macro"] >= by_margin[("pooled", 2.0)]["macro"]
    assert any(c["queries"] and not c["safe"] for c in zero["abstention"].values())
    assert by_margin[("pooled", 2.0)]["abstention"]["a"]["queries"] == 0  # never abstains, so it always qualifies
    chosen = by_margin[(safe["chosen"], safe["abstain_margin"])]
    assert chosen["safe"] and chosen["macro"] == max(g["macro"] for g in safe["grid"] if g["safe"])
    from studies.r3ag.report import _margin_lines

    words = "\n".join(_margin_lines(safe))
    assert "0: " in words and "(unsafe)" in words and "Safe abstention: a margin qualifies only if" in words
    assert experiment.config.digest() != replace(experiment.config, safe_abstention=False).digest()


def test_the_switch_margin_is_chosen_with_the_abstain_margin_and_saved_with_a_default_member(experiment):
    from dataclasses import replace

    from routerank.r3ag.baselines import best_fixed
    from routerank.r3ag.router import R3AGRouter

    experiment.config = replace(experiment.config, abstain_margins=(0.0, 0.5), switch_margins=(0.0, 2.0))
    experiment.run(only={"train", "evaluate", "report"})
    selection = json.loads((experiment.work / "train.json").read_text())["selection"]
    pooled = [(g["margin"], g["switch"]) for g in selection["grid"][:4]]
    assert pooled == [(0.0, 0.0), (0.0, 2.0), (0.5, 0.0), (0.5, 2.0)]
    best = max(selection["grid"], key=lambda g: g["macro"])
    assert (selection["abstain_margin"], selection["switch_margin"]) == (best["margin"], best["switch"])
    # each topic has its own best member, so leaving the default whenever the router prefers another pays
    assert selection["switch_margin"] == 0.0
    folder = experiment.work / "routers" / "r3ag" / ("pooled" if selection["chosen"] == "pooled" else "a")
    router = R3AGRouter.load(folder, features=fake_encoder)
    labels = experiment.labels("a", "train")
    if selection["chosen"] == "pooled":
        labels = RoutingLabels.concat([labels, experiment.labels("b", "train")])
    assert router.config.default_member == best_fixed(labels, retrieving=True) != "R0"
    assert router.config.switch_margin == selection["switch_margin"]
    text = experiment.report.read_text()
    assert "per abstain/switch margin" in text and f"Switch margin: **{selection['switch_margin']:g}**" in text


def test_cross_generator_transfer_scores_every_route_with_the_second_generators_labels(experiment):
    from dataclasses import replace

    experiment.config = replace(experiment.config, generator_eval="hf:/models/other", template_eval="chatml")
    settings = experiment.config.eval_label_settings()
    assert (settings.model, settings.template, settings.split, settings.sample) == (
        "hf:/models/other",
        "chatml",
        "test",
        12,
    )
    plan = [s.name for s in experiment.steps()]
    assert "labels:a:test:hf:/models/other" in plan and plan.index("labels:b:test:hf:/models/other") < plan.index(
        "train"
    )
    stages = experiment.run(only={"train"})  # the second generator's labels are missing: training waits for them
    assert not any(s.done for s in stages if s.name == "train")
    others = {}
    for i, ds in enumerate(experiment.config.datasets):
        others[ds] = synthetic(ds, "test", 12, 50 + i)  # same queries, other answers
        others[ds].save(experiment.eval_label_dir(ds) / "labels")
    experiment.run(only={"train", "evaluate", "report"})
    results = json.loads(experiment.report.with_suffix(".json").read_text())
    moved = results["sets"]["a"]["transfer"]
    assert moved["model"] == "hf:/models/other"
    assert moved["systems"]["fixed:dense"]["f1"] == pytest.approx(others["a"].mean()["dense"])
    assert moved["systems"]["oracle"]["f1"] == pytest.approx(float(others["a"].utility.max(1).mean()))
    assert moved["systems"]["r3ag"]["f1"] <= moved["systems"]["oracle"]["f1"] + 1e-9
    assert moved["systems"]["r3ag"]["f1"] > moved["systems"]["random"]["f1"]  # topics still decide: routes transfer
    text = experiment.report.read_text()
    assert "| a | r3ag | " in text.split("## Cross-generator transfer")[1] and "Not measured" not in text
    with pytest.raises(SpecError, match="no second generator"):
        replace(experiment.config, generator_eval="").eval_label_settings()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('mode = "sometimes"', "unknown mode"),
        ("epoch = 3", "unknown config keys"),
        ("folds = 0", "folds"),
        ('safe_abstention = "yes"', "safe_abstention must be true or false"),
        ("switch_margins = [3]", "switch_margins must be values in"),
        ("abstain_margins = [0.5, 3]", "abstain_margins"),
    ],
)
def test_config_errors_speak(tmp_path, line, message):
    path = tmp_path / "c.toml"
    path.write_text(f'datasets = ["a"]\n{line}\n')
    with pytest.raises(SpecError, match=message):
        R3AGExperimentConfig.load(path)


def test_zero_queries_means_all(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('datasets = ["a"]\ntrain_queries = 0\n')
    assert R3AGExperimentConfig.load(path).train_queries is None


def test_the_shipped_configs_load():
    cpu = R3AGExperimentConfig.load(CONFIGS / "r3ag-cpu.toml")
    gpu = R3AGExperimentConfig.load(CONFIGS / "r3ag-gpu.toml")
    assert cpu.datasets == gpu.datasets == ("squad-dev", "pubmedqa", "tatqa")
    assert gpu.train_queries is None and gpu.epochs > cpu.epochs and cpu.template == "plain"
