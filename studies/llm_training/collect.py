"""The figures of issue 12's report, from whatever stages exist: every scored run evaluated with paired tests,
training records, reward curves, the position checks (a random order, an always-first judge), and rows carried
from an earlier report."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from routerank.data.trec import read_run
from routerank.data.types import Ranking, Run
from routerank.errors import RouterankError
from routerank.evaluate import evaluate, paired_test
from routerank.rerank.adapters import adapter_is_noop
from routerank.rerank.setwise import SetwiseReranker
from routerank.rerank.sorting import setwise_heapsort
from routerank.train.dear import TERMS

if TYPE_CHECKING:
    from studies.llm_training.experiment import LLMTrainingExperiment

MEASURES = ("nDCG@10", "MRR@10")
KEY = "nDCG@10"
REFERENCES = ("bm25", "zero-shot")
STEP_UNITS = {
    "sft": "grad_accum groups",
    "contrastive": "grad_accum groups",
    "dear": "grad_accum lists",
    "prorank-stage1": "prompts × completions",
    "prorank": "grad_accum groups",
    "rank-r1": "prompts × completions",
}


RANDOM_SHUFFLES = 100


# the table ---------------------------------------------------------------------------------------------------------


def collect(experiment: LLMTrainingExperiment) -> dict:
    """{system: {dataset: {nDCG@10, MRR@10, queries, p_vs_<ref>: {measure: p}, seconds/query, passes/query}}}
    for every system with a run made by its current spec."""
    table: dict[str, dict] = {}
    for dataset in experiment.config.datasets:
        qrels = experiment.test_qrels(dataset)
        evals = {}
        for system in experiment.systems():
            if not experiment.scored(system, dataset):
                continue
            path = experiment.run_path(system, dataset)
            evals[system] = evaluate(read_run(path), qrels, list(MEASURES))
            meta = json.loads(path.with_suffix(".json").read_text())
            row = {**evals[system].means, "queries": meta["queries"]}
            row["seconds_per_query"] = meta["seconds"] / max(meta["queries"], 1)
            for key in ("forward_passes", "calls"):
                if key in meta:
                    row[f"{key}_per_query"] = meta[key] / max(meta["queries"], 1)
            table.setdefault(system, {})[dataset] = row
        for system, ev in evals.items():
            for ref in (r for r in REFERENCES if r != system and r in evals):
                tests = {m: paired_test(evals[ref].per_query[m], ev.per_query[m]).t_pvalue for m in MEASURES}
                table[system][dataset][f"p_vs_{ref}"] = tests
    return table


def training(experiment: LLMTrainingExperiment) -> dict:
    """Per trained system: seconds and optimizer steps of its own stage, and in all (with the stages before it)."""
    out = {}
    for system in experiment.systems():
        manifest = experiment.manifest(system)
        if manifest is None:
            continue
        metrics = manifest.get("metrics", manifest)  # expert and DeAR manifests nest them; GRPO's do not
        seconds = metrics.get("train_seconds", metrics.get("seconds"))
        record = {"seconds": seconds, "steps": metrics.get("steps"), "best_step": metrics.get("best_step")}
        # with dev data, best step 0 means no step beat the start on dev, and the start's weights were kept
        record["kept_start"] = metrics.get("best_step") == 0 and metrics.get("best_dev_loss") is not None
        record["unit"] = STEP_UNITS.get(system, STEP_UNITS["dear"] if system.startswith("dear") else "")
        before = {"dear": "dear-stage1", "prorank": "prorank-stage1"}.get(system)
        earlier = out.get(before) if before else None
        record["total_seconds"] = (seconds or 0.0) + (earlier["total_seconds"] if earlier else 0.0)
        sft = manifest.get("format_sft")
        if sft:  # Rank-R1's format SFT before GRPO: its own steps, and its time counted in the total
            record["format_sft"] = {k: sft.get(k) for k in ("records", "epochs", "steps", "seconds")}
            record["format_sft"]["loss"] = curve_summary(list(enumerate(sft.get("loss_curve", []))))
            record["total_seconds"] += sft.get("seconds") or 0.0
        if system.startswith("dear") and system != "dear":
            record["loss_terms"] = loss_terms(experiment.adapter_dir(system) / "train_log.jsonl")
        out[system] = record
    return out


def loss_terms(log: Path) -> dict[str, dict]:
    """Each loss term's curve summary (first and last tenth of its logged steps) from a step log."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    out = {}
    for term in TERMS:
        curve = [[r["total_step"], r[term]] for r in records if isinstance(r.get(term), int | float)]
        if curve:
            out[term] = curve_summary(curve)
    return out


def reward_curves(experiment: LLMTrainingExperiment) -> dict:
    """Per GRPO run: the reward curve (step, mean reward) and each reward function's mean per step."""
    out = {}
    for system in ("prorank-stage1", "rank-r1"):
        manifest = experiment.manifest(system) if system in experiment.systems() else None
        if manifest is None:
            continue
        curves = {"reward": manifest.get("reward_curve", [])}
        log = experiment.adapter_dir(system) / "train_log.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
        names = sorted({k for r in records for k in r if k.endswith("_reward")})
        for name in names:
            curves[name] = [[r["step"], r[name]] for r in records if r.get(name) is not None]
        out[system] = curves
    return out


def unchanged_adapters(experiment: LLMTrainingExperiment) -> list[str]:
    """The GRPO runs whose adapter is still the identity (`adapter_is_noop`): their rows score the backbone."""
    return [
        system
        for system in ("prorank-stage1", "rank-r1")
        if system in experiment.systems()
        and experiment.manifest(system) is not None
        and adapter_is_noop(experiment.adapter_dir(system))
    ]


def curve_summary(curve: list) -> dict:
    """Mean of the first and last tenth of a curve (at least one point each)."""
    values = [v for _, v in curve]
    if not values:
        return {"first": None, "last": None}
    tenth = max(1, len(values) // 10)
    return {"first": sum(values[:tenth]) / tenth, "last": sum(values[-tenth:]) / tenth}


# carried rows ----------------------------------------------------------------------------------------------------


def read_carried(experiment: LLMTrainingExperiment, path: Path) -> dict:
    """An earlier report's JSON whose rows may fill in systems that have no run here; it must be of this
    experiment's protocol (test sample, seed, depth), backbone and datasets."""
    fix = "carry only from a report of the same protocol, backbone and datasets (reports/llm-training.json)"
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RouterankError("no report to carry rows from", path=path, fix=fix) from None
    except json.JSONDecodeError as exc:
        raise RouterankError(f"not a report JSON: {exc}", path=path, fix=fix) from None
    if not isinstance(data, dict) or not isinstance(data.get("table"), dict):
        raise RouterankError("not an llm-training report JSON (no table)", path=path, fix=fix)
    config = data.get("config", {})
    mine = (experiment.protocol(), experiment.config.backbone, list(experiment.config.datasets))
    theirs = (data.get("protocol"), config.get("backbone"), config.get("datasets"))
    if theirs != mine:
        raise RouterankError(
            f"the report is of protocol, backbone and datasets {theirs}, this experiment of {mine}", path=path, fix=fix
        )
    return {**data, "source": data.get("carried_from") or str(path)}


def carry(
    previous: dict,
    systems: Iterable[str],
    table: dict,
    trainings: dict,
    curves: dict,
    unchanged: list,
    specs: dict,
) -> list[tuple[str, str]]:
    """Fill in, from `previous` (`read_carried`), the rows of systems that have no run here and whose spec here is
    unknown (not trained in this work dir) or the one that made the earlier row, with their training records,
    reward curves and no-op flags; in place. Returns the (system, dataset) pairs carried."""
    carried = []
    for system in systems:
        before = previous.get("specs", {}).get(system)
        if specs.get(system) is not None and specs[system] != before:
            continue  # trained or configured anew here: the earlier row was made by another model
        for dataset, row in previous["table"].get(system, {}).items():
            if dataset not in table.get(system, {}):
                table.setdefault(system, {})[dataset] = {**row, "carried": True}
                carried.append((system, dataset))
        if specs.get(system) is None and before is not None:
            specs[system] = before
        if system not in trainings and system in previous.get("training", {}):
            trainings[system] = {**previous["training"][system], "carried": True}
            if system in previous.get("unchanged_adapters", []) and system not in unchanged:
                unchanged.append(system)
        if system not in curves and system in previous.get("reward_curves", {}):
            curves[system] = previous["reward_curves"][system]
    return carried


# the position checks ---------------------------------------------------------------------------------------------


class AlwaysFirst:
    """A setwise judge that always picks the first passage shown (no LLM)."""

    def best(self, sets: list) -> list[int]:
        """The first passage of every set."""
        return [0] * len(sets)


def random_order(experiment: LLMTrainingExperiment, shuffles: int = RANDOM_SHUFFLES) -> dict[str, float]:
    """Per dataset: the mean nDCG@10 of `shuffles` seeded random orders of the BM25 candidates (where BM25 is
    scored): the level a reranker that knows nothing reaches."""
    out = {}
    for dataset in experiment.config.datasets:
        if not experiment.scored("bm25", dataset):
            continue
        qrels = experiment.test_qrels(dataset)
        bm25, rng, values = read_run(experiment.run_path("bm25", dataset)), random.Random(experiment.config.seed), []
        for _ in range(shuffles):
            shuffled = {}
            for q, ranking in bm25.rankings.items():
                ids = list(ranking.doc_ids[: experiment.config.depth])
                rng.shuffle(ids)
                shuffled[q] = Ranking(tuple(ids), tuple(float(len(ids) - i) for i in range(len(ids))))
            values.append(evaluate(Run(shuffled), qrels, [KEY]).means[KEY])
        out[dataset] = sum(values) / len(values)
    return out


def first_pick(experiment: LLMTrainingExperiment) -> dict[str, dict]:
    """Per dataset (where BM25 and Rank-R1 are scored here): the nDCG@10 of Rank-R1's setwise heapsort driven by a
    judge that always picks the first passage shown (no LLM), and on how many queries Rank-R1's top 10 is exactly
    that judge's. A setwise reranker that always answers "A" scores this, whatever it reads."""
    if "rank-r1" not in experiment.systems():
        return {}
    k, top = experiment.methods.rank_r1.k, int(SetwiseReranker.defaults["top"])
    out = {}
    for dataset in experiment.config.datasets:
        if not experiment.scored("bm25", dataset) or not experiment.scored("rank-r1", dataset):
            continue
        qrels = experiment.test_qrels(dataset)
        bm25, model = read_run(experiment.run_path("bm25", dataset)), read_run(experiment.run_path("rank-r1", dataset))
        rankings, same = {}, 0
        for q, ranking in bm25.rankings.items():
            ids = list(ranking.doc_ids[: experiment.config.depth])
            order = setwise_heapsort(len(ids), AlwaysFirst(), k=k, top=top)
            rankings[q] = Ranking(tuple(ids[i] for i in order), tuple(float(len(ids) - r) for r in range(len(ids))))
            mine = model.rankings.get(q)
            same += mine is not None and list(mine.doc_ids[:top]) == list(rankings[q].doc_ids[:top])
        value = evaluate(Run(rankings), qrels, [KEY]).means[KEY]
        out[dataset] = {KEY: value, "same_top": same, "queries": len(rankings), "top": top}
    return out
