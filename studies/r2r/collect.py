"""Every figure of the R2R report, from whatever stages of the experiment exist: each run on disk evaluated (systems
c, e and f stitched per domain from their own runs), paired tests, the routing record, the training manifests."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from routerank.data.trec import read_run
from routerank.evaluate import evaluate, paired_test
from routerank.r2r.trainer import MANIFEST
from routerank.rerank.interpolate import interpolate_runs
from routerank.stages import Stage
from studies.r2r.systems import FIRST, INTERPOLATED, KEY, MEASURES, REFERENCES, SYSTEMS

if TYPE_CHECKING:
    from studies.r2r.experiment import R2RExperiment


class Evaluated:
    """The evaluations of one experiment's runs: system -> dataset -> Evaluation, each run's metadata, and the
    interpolation weight each ~ row used."""

    def __init__(self, experiment: R2RExperiment):
        self.x = experiment
        self.qrels = {d: experiment.test_qrels(d) for d in experiment.config.domains}
        self.first = functools.cache(experiment.candidates)  # each dataset's candidates, read once for every system
        self.evals: dict[str, dict[str, Any]] = {}
        self.meta: dict[str, dict[str, dict]] = {}
        self.used: dict[str, dict[str, dict]] = {}  # system -> dataset -> the interpolation weight its ~ row used

    def first_stages(self, dataset: str) -> None:
        """The candidates' run (and plain BM25 beside a first stage that is not BM25), once they exist."""
        own = "bm25" if self.x.config.first_stage == "bm25" else FIRST
        if (self.x.work / "candidates" / f"{dataset}.trec").exists():
            self.evals.setdefault(own, {})[dataset] = evaluate(self.first(dataset), self.qrels[dataset], MEASURES)
            if own != "bm25":
                bm25 = self.x.bm25_run(dataset)
                self.evals.setdefault("bm25", {})[dataset] = evaluate(bm25, self.qrels[dataset], MEASURES)

    def load(self, system: str, dataset: str, run_name: str | None = None) -> None:
        """Evaluate `system`'s run on `dataset` where it exists, and its interpolated row where a weight exists."""
        path = self.x.run_path(run_name or system, dataset)
        if not path.exists():
            return
        run = read_run(path)
        self.evals.setdefault(system, {})[dataset] = evaluate(run, self.qrels[dataset], MEASURES)
        weight = self.x.alpha_for(system, dataset) if system in SYSTEMS else None  # ce: the generalist's
        if weight:  # the same run mixed with the first stage, alpha from dev
            mixed = interpolate_runs(run, self.first(dataset), self.x.config.depth, weight["alpha"])
            self.evals.setdefault(f"{system}{INTERPOLATED}", {})[dataset] = evaluate(
                mixed, self.qrels[dataset], MEASURES
            )
            self.used.setdefault(system, {})[dataset] = weight
        side = path.with_suffix(".json")
        if side.exists():
            self.meta.setdefault(system, {})[dataset] = json.loads(side.read_text())

    def load_all(self, dataset: str) -> None:
        """Every system's run on `dataset`, in the report's order."""
        self.first_stages(dataset)
        self.load("generalist", dataset)
        self.load("pooled", dataset)
        self.load("plain", dataset, f"plain-{dataset}")
        self.load("r2r", dataset)
        self.load("oracle", dataset, f"eag-{dataset}")
        self.load("ce", dataset)
        for expert in self.x.config.domains:
            self.load(f"eag-{expert}", dataset)
        for adapter in self.x.expert_configs():
            if adapter.startswith("eag_") and adapter.endswith(f"-{dataset}"):
                self.load(adapter.split("-", 1)[0], dataset, adapter)

    def rows(self, system: str, names: list[str]) -> dict[str, dict]:
        """`system`'s table rows: per dataset its means, query count and paired tests against each reference; and
        the average over the domains once every one is there."""
        per = self.evals[system]
        rows: dict[str, dict] = {d: {**e.means, "queries": e.num_queries} for d, e in per.items()}
        for ref in REFERENCES:
            for d, e in per.items():
                if system != ref and ref in self.evals and d in self.evals[ref]:
                    test = paired_test(self.evals[ref][d].per_query[KEY], e.per_query[KEY])
                    rows[d][f"p_vs_{ref}"] = {
                        "t": test.t_pvalue,
                        "randomization": test.randomization_pvalue,
                        "delta": test.delta,
                    }
        if all(d in per for d in names):
            rows["average"] = {m: sum(per[d].means[m] for d in names) / len(names) for m in per[names[0]].means}
        return rows


def collect(experiment: R2RExperiment) -> dict[str, Any]:
    """{"table": system -> dataset -> row, "meta": each run's metadata, "alpha_used": the ~ rows' weights}."""
    names = list(experiment.config.domains)
    evaluated = Evaluated(experiment)
    for dataset in names:
        evaluated.load_all(dataset)
    table = {system: evaluated.rows(system, names) for system in evaluated.evals}
    return {"table": table, "meta": evaluated.meta, "alpha_used": evaluated.used}


def training_times(experiment: R2RExperiment) -> dict[str, dict]:
    """Per trained adapter, from its manifest: seconds, groups, steps, stages, device, dev loss and training data."""
    out = {}
    for adapter in experiment.expert_configs():
        path = experiment.expert_dir(adapter) / MANIFEST
        if path.exists():
            manifest = json.loads(path.read_text())
            m = manifest["metrics"]
            out[adapter] = {
                "seconds": m.get("train_seconds"),
                "groups": m.get("examples"),
                "steps": m.get("steps"),
                "stages": m.get("stages"),
                "device": m.get("device"),
                "dev_loss": m.get("dev_loss"),
                "data": manifest.get("training_data"),
            }
    return out


def forgetting_matrix(table: dict, names: list[str]) -> dict[str, list]:
    """nDCG@10 of every EAG expert (and the generalist) on every domain: rows, columns, values (None: not run)."""
    return {
        "rows": [f"eag-{n}" for n in names] + ["generalist"],
        "columns": names,
        "values": [[table.get(f"eag-{e}", {}).get(d, {}).get(KEY) for d in names] for e in names]
        + [[table.get("generalist", {}).get(d, {}).get(KEY) for d in names]],
    }


def gather(experiment: R2RExperiment, stages: list[Stage]) -> dict[str, Any]:
    """The report's JSON: the table, the routing record (less its per-query decisions), training times, the
    generalist's weights, the forgetting matrix, the stages and the config."""
    c = experiment.config
    data = collect(experiment)
    routing_path = experiment.work / "router" / "routing.json"
    if routing_path.exists():
        routing = json.loads(routing_path.read_text())
        routing.pop("decisions", None)
        data["routing"] = routing
    data["training"] = training_times(experiment)
    if experiment.alpha_path().exists():
        data["alpha"] = json.loads(experiment.alpha_path().read_text())
    data["forgetting"] = forgetting_matrix(data["table"], list(c.domains))
    data["stages"] = [vars(s) for s in stages]
    data["config"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(c).items()}
    return data
