"""The effectiveness report: reports/effectiveness.json from whatever stages exist, and the README's table from it
(`markdown`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from routerank.data.trec import read_run
from routerank.data.types import Run
from routerank.evaluate import evaluate, paired_test
from routerank.rerank.interpolate import interpolate_runs
from routerank.stages import Stage
from studies.effectiveness.experiment import KEY, EffectivenessExperiment
from studies.report_format import format_p

MEASURES = "nDCG@10 MRR@10 R@100"
ANCHORS = {  # published nDCG@10, reranking BM25 top 100 (BEIR paper; monoT5 from its BEIR evaluation)
    "scifact": {"MS MARCO MiniLM-L6 CE": 0.688, "monoT5-3B": 0.766},
    "nfcorpus": {"MS MARCO MiniLM-L6 CE": 0.350, "monoT5-3B": 0.37},
}

Runs = dict[str, tuple[Run, float | None]]  # system -> (its test run, the alpha that mixed it, if any)


class Collector:
    """Evaluates one experiment's test runs; each (reranker, first stage) alpha choice is read once, not per set."""

    def __init__(self, experiment: EffectivenessExperiment):
        self.x = experiment
        self.records: dict[tuple[str, str], dict | None] = {}

    def protocol(self, name: str) -> str:
        """The rows' protocol on `name`: all test queries or a seeded sample, and the depth."""
        total = len(self.x.dataset(name).split_queries("test"))
        queries = len(self.x.test_queries(name))
        sample = f"all {total} test queries" if queries == total else f"{queries} of {total} seeded"
        return sample + f", top {self.x.config.depth}"

    def runs(self, name: str) -> tuple[Runs, dict[str, list[float]]]:
        """(every test run on disk for `name`, with each reranked run's dev-interpolated mix; the `~dev` fusion
        first stages' chosen weights)."""
        c, fingerprint = self.x.config, self.x.dataset(name).corpus.fingerprint
        runs: Runs = {}
        tuned: dict[str, list[float]] = {}
        for stage in c.first_stages:
            if not self.x.run_path(name, "test", stage).exists():
                continue
            first = read_run(self.x.run_path(name, "test", stage))
            runs[stage] = (first, None)
            choice = self.x.fusion_choice(name, stage)
            if choice is not None:
                tuned[stage] = choice["weights"]
            for label in c.rerankers:
                path = self.x.run_path(name, "test", f"{stage}>>{label}")
                if not path.exists():
                    continue
                reranked = read_run(path)
                runs[f"{stage}>>{label}"] = (reranked, None)
                if (label, stage) not in self.records:
                    self.records[label, stage] = self.x.alpha_record(label, stage)
                entry = (self.records[label, stage] or {}).get("by_corpus", {}).get(fingerprint)
                if entry is not None:
                    alpha = entry["alpha"]
                    runs[f"{stage}>>{label}~dev"] = (interpolate_runs(reranked, first, c.depth, alpha), alpha)
        return runs, tuned

    def rows(self, name: str) -> dict[str, dict]:
        """{system: {measures, queries, protocol, alpha?, weights?, p_vs_<first stage>}} on `name`."""
        runs, tuned = self.runs(name)
        qrels = self.x.test_qrels(name)
        protocol = self.protocol(name)
        evals = {system: evaluate(run, qrels, MEASURES) for system, (run, _) in runs.items()}
        rows = {}
        for system, ev in evals.items():
            row: dict[str, Any] = {m: ev.means[m] for m in ev.means}
            row.update(queries=ev.num_queries, protocol=protocol)
            if runs[system][1] is not None:
                row["alpha"] = runs[system][1]
            if system in tuned:
                row["weights"] = tuned[system]
                row["protocol"] += ", weights chosen on dev"
            for base in self.x.config.first_stages:
                if base in evals and base != system:
                    row[f"p_vs_{base}"] = paired_test(evals[base].per_query[KEY], ev.per_query[KEY]).t_pvalue
            rows[system] = row
        return rows


def collect(experiment: EffectivenessExperiment) -> dict[str, dict]:
    """{dataset: {system: {measures, p_vs_<first stage>, queries, protocol, alpha?}}} from the runs on disk."""
    collector = Collector(experiment)
    return {name: collector.rows(name) for name in experiment.config.datasets}


def llm_rows(experiment: EffectivenessExperiment) -> list[dict]:
    """Sampled LLM reranker rows from the rerank table, kept with their own protocols."""
    config = experiment.config
    path = Path(config.llm_rows) if config.llm_rows else None
    if path is None or not path.exists():
        return []
    rows = json.loads(path.read_text())
    return [r for r in rows if r["dataset"] in config.datasets and r["system"] != "bm25" and "ce:" not in r["system"]]


def best_rows(experiment: EffectivenessExperiment, table: dict[str, dict]) -> dict[str, dict]:
    """Per dataset, the best row on nDCG@10 and the best reranked row."""
    best = {}
    for name, rows in table.items():
        rerank_rows = {s: r for s, r in rows.items() if s not in experiment.config.first_stages}
        if rows:
            top = max(rows, key=lambda s: rows[s][KEY])
            best[name] = {"system": top, KEY: rows[top][KEY]}
        if rerank_rows:
            top = max(rerank_rows, key=lambda s: rerank_rows[s][KEY])
            best[name]["best_reranked"] = top
    return best


def write_report(experiment: EffectivenessExperiment, json_path: Path, stages: list[Stage] | None = None) -> dict:
    """The report's JSON: the table, and under `_meta` the config, work dir, best rows, anchors, the rerank
    table's LLM rows and the stages."""
    table = collect(experiment)
    report = {
        **table,
        "_meta": {
            "config": asdict(experiment.config),
            "work_dir": str(experiment.work),
            "best": best_rows(experiment, table),
            "anchors": {k: v for k, v in ANCHORS.items() if k in table},
            "llm_sample_rows": llm_rows(experiment),
            "stages": [asdict(s) for s in stages or []],
        },
    }
    experiment.write_json(json_path, report)
    return report


def markdown(report: dict) -> str:
    """The README table: one block per dataset, first stages first, the best row in bold, anchors below."""
    lines = [
        "| dataset | system | nDCG@10 | MRR@10 | R@100 | p vs bm25 | p vs hybrid | α (dev) | protocol |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    meta = report.get("_meta", {})
    for name, rows in report.items():
        if name.startswith("_"):
            continue
        top = meta.get("best", {}).get(name, {}).get("system")
        for system, row in rows.items():
            cell = f"**{row[KEY]:.4f}**" if system == top else f"{row[KEY]:.4f}"
            p = [format_p(row.get("p_vs_bm25"), ""), format_p(row.get("p_vs_hybrid"), "")]
            alpha = f"{row['alpha']:.2f}" if "alpha" in row else ""
            if "weights" in row:
                alpha = "w " + "/".join(f"{w:g}" for w in row["weights"])
            lines.append(
                f"| {name} | `{system}` | {cell} | {row['MRR@10']:.4f} | {row['R@100']:.4f} | {p[0]} | {p[1]} "
                f"| {alpha} | {row['protocol']} |"
            )
        for anchor, value in meta.get("anchors", {}).get(name, {}).items():
            lines.append(f"| {name} | {anchor} (published) | {value:.3f} | | | | | | BM25 top 100 |")
    for row in meta.get("llm_sample_rows", []):
        p = format_p(row.get("p_vs_bm25_nDCG@10"), "")
        lines.append(
            f"| {row['dataset']} | `{row['system']}` (sample) | {row['nDCG@10']:.4f} | {row['MRR@10']:.4f} | "
            f"{row['R@100']:.4f} | {p} | | | {row['protocol']} |"
        )
    return "\n".join(lines)
