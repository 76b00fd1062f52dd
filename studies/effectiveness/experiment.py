"""The effectiveness table: each reranker over BM25 and hybrid candidates, plain and interpolated, on test sets.

    routerank experiment effectiveness --config configs/effectiveness.toml

For every dataset and first stage (default `bm25` and `hybrid`), the test queries' top `depth` are reranked by
each configured reranker and scored three ways: the first stage alone, the reranker alone, and the two mixed
(`routerank.rerank.interpolate`) with the weight chosen on dev queries: the dev split where a dataset has one,
or the queries the model's own manifest held out of training. Test queries never choose anything.

Every first-stage run, reranked run and alpha record is a stage under the work dir (`<cache>/effectiveness/
<hash>`), and cross-encoder scores sit in the score cache, so the table can be built over several sittings
(`--max-minutes`) and by several processes. The report is written from whatever stages exist, with each
row's protocol (full test set, or a seeded sample and its size) stated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from routerank.data.types import Query, Run, sample_queries
from routerank.errors import SpecError
from routerank.fsutil import atomic_write, cache_root, safe_name
from routerank.stages import Stage, Step, read_toml_config, run_plan

MEASURES = "nDCG@10 MRR@10 R@100"
KEY = "nDCG@10"
DEV_TUNED = "~dev"  # a first stage `weighted(...)~dev`: fusion weights chosen on each dataset's dev queries
ANCHORS = {  # published nDCG@10, reranking BM25 top 100 (BEIR paper; monoT5 from its BEIR evaluation)
    "scifact": {"MS MARCO MiniLM-L6 CE": 0.688, "monoT5-3B": 0.766},
    "nfcorpus": {"MS MARCO MiniLM-L6 CE": 0.350, "monoT5-3B": 0.37},
}


@dataclass(frozen=True)
class EffectivenessConfig:
    """datasets: test sets to report. rerankers: label -> reranker spec (e.g. {"ce-pooled" = "ce:ce-pooled"});
    none at all reports the first stages alone.
    first_stages: candidate generators; the first is the significance baseline "BM25", and `hybrid` the second.
    A weighted fusion with `~dev` after it (`weighted(bm25,dense:st:<folder>)~dev`) has its weights chosen on each
    dataset's dev queries first (`routerank.tune`), and the row says which.
    depth: candidates reranked per query. test_queries: per-dataset cap, a seeded sample (absent or 0 = all).
    dev_queries: per dataset, for choosing alpha (dev split; else the model's held-out train queries).
    options: label -> reranker options (e.g. {"ce-pooled" = {dtype = "bf16"}}).
    llm_rows: a rerank-table JSON whose sampled LLM rows are carried into the report, labelled as samples.
    ray: "local" or a cluster address: rerank stages run in query shards on Ray actors (None: in-process).
    rerank_first_stages: the first stages the rerankers rerank (empty: all); the others are reported alone."""

    datasets: tuple[str, ...]
    rerankers: dict[str, str] = field(default_factory=dict)
    first_stages: tuple[str, ...] = ("bm25", "hybrid")
    depth: int = 100
    test_queries: dict[str, int] = field(default_factory=dict)
    dev_queries: int = 50
    options: dict[str, dict] = field(default_factory=dict)
    llm_rows: str | None = "reports/rerank-table.json"
    seed: int = 13
    ray: str | None = None
    rerank_first_stages: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.datasets:
            raise SpecError("name at least one dataset")
        stray = [s for s in self.rerank_first_stages if s not in self.first_stages]
        if stray:
            raise SpecError(f"rerank_first_stages {stray} are not among the first_stages")
        for stage in self.first_stages:
            if stage.endswith(DEV_TUNED):
                from routerank.pipeline import fusion_children

                if fusion_children(stage[: -len(DEV_TUNED)])[0] != "weighted":
                    raise SpecError(f"{stage!r}: only a weighted fusion has weights to choose on dev")
        if self.depth < 1 or self.dev_queries < 1:
            raise SpecError("depth and dev_queries must be at least 1")
        unknown = sorted(set(self.test_queries) - set(self.datasets))
        if unknown:
            raise SpecError(f"test_queries names datasets {unknown} that are not in `datasets`")

    @classmethod
    def load(cls, path: str | Path) -> EffectivenessConfig:
        return read_toml_config(cls, path, tuples=("datasets", "first_stages", "rerank_first_stages"), none_if_zero=())

    def digest(self) -> str:
        """Keys the work dir. Stage outputs are per (dataset, split, system) and test samples have their own
        folders, so adding a dataset or a first stage, or resizing a sample, reuses every finished stage."""
        unkeyed = ("test_queries", "llm_rows", "datasets", "first_stages", "ray", "rerank_first_stages")
        keep = {k: v for k, v in asdict(self).items() if k not in unkeyed}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]


class EffectivenessExperiment:
    def __init__(
        self, config: EffectivenessConfig, work_dir: str | Path | None = None, *, progress: bool = True, ray=None
    ):
        self.config = config
        self.ray = ray if ray is not None else config.ray
        self.work = Path(work_dir) if work_dir else cache_root() / "effectiveness" / config.digest()
        self.progress = progress
        self._datasets: dict = {}
        self._rerankers: dict = {}

    # inputs ----------------------------------------------------------------------------------------------

    def dataset(self, name: str):
        from routerank.data.registry import load_dataset

        if name not in self._datasets:
            self._datasets[name] = load_dataset(name)
        return self._datasets[name]

    def reranker(self, label: str):
        from routerank.rerank.registry import make_reranker

        if label not in self._rerankers:
            spec = self.config.rerankers[label]
            self._rerankers[label] = make_reranker(spec, progress=self.progress, **self.reranker_options(label))
        return self._rerankers[label]

    def reranker_options(self, label: str) -> dict:
        """A cross-encoder's scores are cached on disk; then the config's own options for this label."""
        options = {"cache": True} if self.config.rerankers[label].startswith("ce:") else {}
        return {**options, **self.config.options.get(label, {})}

    def test_queries(self, name: str) -> list[Query]:
        cap = self.config.test_queries.get(name) or None
        return sample_queries(self.dataset(name).split_queries("test"), cap, self.config.seed)

    def dev_queries(self, name: str, label: str) -> tuple[list[Query], str]:
        """(queries, qrels split) on which alpha is chosen for this reranker on this dataset."""
        from routerank.data.devsplit import dev_queries

        folder = getattr(self.reranker(label), "folder", None)
        return dev_queries(self.dataset(name), [folder], self.config.dev_queries, self.config.seed, who=label)

    # stages ----------------------------------------------------------------------------------------------

    def run_path(self, dataset: str, split: str, system: str) -> Path:
        """Test runs of a sample live apart from full-set runs (`test-300` vs `test`): a changed sample size never
        reads a stale run; scores are shared through the score cache all the same."""
        safe = safe_name(system.replace(">>", "__"), extra="=")
        if split == "test" and self.config.test_queries.get(dataset):
            split = f"test-{self.config.test_queries[dataset]}"
        return self.work / "runs" / dataset / split / f"{safe}.trec"

    def fusion_choice(self, dataset: str, stage: str) -> dict | None:
        """For a `weighted(...)~dev` first stage, the weights chosen on `dataset`'s dev queries (chosen once, then
        read from the work dir); None for any other first stage."""
        if not stage.endswith(DEV_TUNED):
            return None
        from routerank.tune import tune_fusion

        path = self.work / "fusion" / dataset / f"{safe_name(stage, extra='=')}.json"
        if not path.exists():
            tune_fusion(
                [dataset],
                stage[: -len(DEV_TUNED)],
                k=self.config.depth,
                dev_queries=self.config.dev_queries,
                seed=self.config.seed,
                out=path,
                progress=self.progress,
            )
        return json.loads(path.read_text())["datasets"][dataset]

    def stage_spec(self, dataset: str, stage: str) -> str:
        """The pipeline spec a first stage runs as on `dataset` (a `~dev` fusion with its chosen weights)."""
        choice = self.fusion_choice(dataset, stage)
        return stage if choice is None else choice["spec"]

    def first_stage(self, dataset: str, split: str, stage: str) -> Run:
        from routerank.data.trec import read_run, write_run
        from routerank.pipeline import build

        path = self.run_path(dataset, split, stage)
        if path.exists():
            return read_run(path)
        queries = self.test_queries(dataset) if split == "test" else self._all_dev_queries(dataset)
        spec = self.stage_spec(dataset, stage)
        run = build(spec, self.dataset(dataset).corpus, progress=self.progress).search(queries, self.config.depth)
        write_run(run, path, tag=stage)
        return run

    def _all_dev_queries(self, dataset: str) -> list[Query]:
        """The union of every reranker's dev queries on this dataset (one first-stage run serves them all)."""
        seen: dict[str, Query] = {}
        for label in self.config.rerankers:
            for query in self.dev_queries(dataset, label)[0]:
                seen.setdefault(query.id, query)
        return list(seen.values())

    def rerank(self, dataset: str, split: str, stage: str, label: str) -> None:
        from routerank.data.trec import write_run

        first = self.first_stage(dataset, split, stage)
        queries = self.test_queries(dataset) if split == "test" else self.dev_queries(dataset, label)[0]
        run = self._stage_reranker(label, stage).rerank_run(
            queries, first, self.dataset(dataset).corpus, self.config.depth
        )
        write_run(run, self.run_path(dataset, split, f"{stage}>>{label}"), tag=label)

    def _stage_reranker(self, label: str, stage: str):
        """The label's reranker here, or (with `ray`) the same spec and options reranking in shards on Ray."""
        if not self.ray:
            return self.reranker(label)
        from routerank.pipeline import ShardedReranker, StageSpec
        from routerank.scale import executor_for

        options = {"progress": False, **self.reranker_options(label)}
        stage_spec = StageSpec(self.config.rerankers[label], self.config.depth)
        return ShardedReranker(stage_spec, stage, options, executor_for(self.ray))

    def alpha_path(self, label: str, stage: str) -> Path:
        return self.run_path("_alpha", label, stage).with_suffix(".json")

    def alpha_record(self, label: str, stage: str) -> dict | None:
        """The saved alpha choice; or, while some datasets' dev runs are missing, one over those that exist
        (marked partial, not saved); None before any exists."""
        if self._alpha_complete(label, stage):
            return json.loads(self.alpha_path(label, stage).read_text())
        ready = [n for n in self.config.datasets if n not in self._missing_dev(label, stage)]
        return self.choose_alpha(label, stage, ready, save=False) if ready else None

    def choose_alpha(self, label: str, stage: str, datasets: list[str] | None = None, save: bool = True) -> dict:
        """Grid-search alpha on each dataset's dev queries; save per corpus and pooled (mean over datasets)."""
        from routerank.data.trec import read_run
        from routerank.pipeline import canonical
        from routerank.rerank.interpolate import GRID, alpha_curve, save_alphas

        datasets = list(self.config.datasets) if datasets is None else datasets
        record: dict = {"chosen_on": "dev", "measure": KEY, "depth": self.config.depth, "grid": list(GRID)}
        record["partial"] = datasets != list(self.config.datasets)
        by_corpus, curves = {}, []
        for name in datasets:
            queries, split = self.dev_queries(name, label)
            qrels = self.dataset(name).split_qrels(split).subset(q.id for q in queries)
            first = self.first_stage(name, "dev", stage)
            reranked = read_run(self.run_path(name, "dev", f"{stage}>>{label}"))
            ids = {q.id for q in queries}
            first = Run({q: r for q, r in first.rankings.items() if q in ids}, first.name)
            best, curve = alpha_curve(reranked, first, qrels, self.config.depth, KEY)
            by_corpus[self.dataset(name).corpus.fingerprint] = {
                "dataset": name,
                "alpha": best,
                "dev_split": split,
                "dev_queries": len(queries),
                "curve": [round(v, 5) for v in curve],
            }
            curves.append(curve)
        pooled = np.mean(curves, axis=0)
        record["pooled"] = {"alpha": GRID[int(np.argmax(pooled))], "curve": [round(v, 5) for v in pooled]}
        record["by_corpus"] = by_corpus
        if not save:
            return record
        save_alphas(self.reranker(label), canonical(stage), record)
        with atomic_write(self.alpha_path(label, stage)) as out:
            json.dump(record, out, indent=2)
        return record

    def reranked_stages(self) -> tuple[str, ...]:
        """The first stages whose candidates the rerankers rerank."""
        return self.config.rerank_first_stages or self.config.first_stages

    def plan(self) -> list[Step]:
        """Per dataset: dev reranks (for alpha), test first stages, test reranks; then the alpha choices."""
        c, steps = self.config, []
        for name in c.datasets:
            for stage in self.reranked_stages():
                steps += [self._rerank_step(name, "dev", stage, label) for label in c.rerankers]
            for stage in c.first_stages:
                steps.append(
                    Step(
                        f"first stage {stage} on {name} test",
                        "first",
                        (lambda n=name, st=stage: self.run_path(n, "test", st).exists()),
                        (lambda n=name, st=stage: self.first_stage(n, "test", st)),
                    )
                )
                if stage in self.reranked_stages():
                    steps += [self._rerank_step(name, "test", stage, label) for label in c.rerankers]
        for label in c.rerankers:
            for stage in self.reranked_stages():
                steps.append(
                    Step(
                        f"alpha {label} over {stage}",
                        "alpha",
                        (lambda lb=label, st=stage: self._alpha_complete(lb, st)),
                        (lambda lb=label, st=stage: self.choose_alpha(lb, st)),
                        needs=(lambda lb=label, st=stage: not self._missing_dev(lb, st)),
                    )
                )
        return steps

    def _alpha_complete(self, label: str, stage: str) -> bool:
        """A saved choice that covers every configured dataset (adding a dataset makes it stale)."""
        if not self.alpha_path(label, stage).exists():
            return False
        record = json.loads(self.alpha_path(label, stage).read_text())
        return {e["dataset"] for e in record["by_corpus"].values()} >= set(self.config.datasets)

    def _missing_dev(self, label: str, stage: str) -> list[str]:
        return [n for n in self.config.datasets if not self.run_path(n, "dev", f"{stage}>>{label}").exists()]

    def _rerank_step(self, name: str, split: str, stage: str, label: str) -> Step:
        return Step(
            f"rerank {stage} with {label} on {name} {split}",
            "dev" if split == "dev" else "rerank",
            lambda: self.run_path(name, split, f"{stage}>>{label}").exists(),
            lambda: self.rerank(name, split, stage, label),
        )

    def run(self, max_minutes: float | None = None, only: set[str] | None = None) -> list[Stage]:
        return run_plan(
            self.plan(), self.work / "locks", max_minutes=max_minutes, only=only, progress=self.progress, tag="eff"
        )

    # the report ------------------------------------------------------------------------------------------

    def collect(self) -> dict:
        """{dataset: {system: {measures, p_vs_<first stage>, queries, protocol, alpha?}}} from the runs on disk."""
        from routerank.data.trec import read_run
        from routerank.evaluate import evaluate, paired_test
        from routerank.rerank.interpolate import interpolate_runs

        c, table = self.config, {}
        records: dict[tuple[str, str], dict | None] = {}  # one alpha choice per (reranker, first stage), not per set
        for name in c.datasets:
            ds = self.dataset(name)
            queries = self.test_queries(name)
            qrels = ds.split_qrels("test").subset(q.id for q in queries)
            total = len(ds.split_queries("test"))
            protocol = (
                f"all {total} test queries" if len(queries) == total else f"{len(queries)} of {total} seeded"
            ) + f", top {c.depth}"
            runs: dict[str, tuple[Run, float | None]] = {}
            tuned: dict[str, list[float]] = {}
            for stage in c.first_stages:
                if not self.run_path(name, "test", stage).exists():
                    continue
                first = read_run(self.run_path(name, "test", stage))
                runs[stage] = (first, None)
                choice = self.fusion_choice(name, stage)
                if choice is not None:
                    tuned[stage] = choice["weights"]
                for label in c.rerankers:
                    path = self.run_path(name, "test", f"{stage}>>{label}")
                    if not path.exists():
                        continue
                    reranked = read_run(path)
                    runs[f"{stage}>>{label}"] = (reranked, None)
                    if (label, stage) not in records:
                        records[label, stage] = self.alpha_record(label, stage)
                    record = records[label, stage]
                    entry = (record or {}).get("by_corpus", {}).get(ds.corpus.fingerprint)
                    if entry is not None:
                        alpha = entry["alpha"]
                        mixed = interpolate_runs(reranked, first, c.depth, alpha)
                        runs[f"{stage}>>{label}~dev"] = (mixed, alpha)
            evals = {system: evaluate(run, qrels, MEASURES) for system, (run, _) in runs.items()}
            rows = {}
            for system, ev in evals.items():
                row = {m: ev.means[m] for m in ev.means}
                row.update(queries=ev.num_queries, protocol=protocol)
                if runs[system][1] is not None:
                    row["alpha"] = runs[system][1]
                if system in tuned:
                    row["weights"] = tuned[system]
                    row["protocol"] += ", weights chosen on dev"
                for base in c.first_stages:
                    if base in evals and base != system:
                        test = paired_test(evals[base].per_query[KEY], ev.per_query[KEY])
                        row[f"p_vs_{base}"] = test.t_pvalue
                rows[system] = row
            table[name] = rows
        return table

    def llm_rows(self) -> list[dict]:
        """Sampled LLM reranker rows from the rerank table, kept with their own protocols."""
        path = Path(self.config.llm_rows) if self.config.llm_rows else None
        if path is None or not path.exists():
            return []
        rows = json.loads(path.read_text())
        return [
            r
            for r in rows
            if r["dataset"] in self.config.datasets and r["system"] != "bm25" and "ce:" not in r["system"]
        ]

    def write_report(self, json_path: Path, stages: list[Stage] | None = None) -> dict:
        table = self.collect()
        best = {}
        for name, rows in table.items():
            rerank_rows = {s: r for s, r in rows.items() if s not in self.config.first_stages}
            if rows:
                top = max(rows, key=lambda s: rows[s][KEY])
                best[name] = {"system": top, KEY: rows[top][KEY]}
            if rerank_rows:
                top = max(rerank_rows, key=lambda s: rerank_rows[s][KEY])
                best[name]["best_reranked"] = top
        report = {
            **table,
            "_meta": {
                "config": asdict(self.config),
                "work_dir": str(self.work),
                "best": best,
                "anchors": {k: v for k, v in ANCHORS.items() if k in table},
                "llm_sample_rows": self.llm_rows(),
                "stages": [asdict(s) for s in stages or []],
            },
        }
        with atomic_write(json_path) as out:
            json.dump(report, out, indent=2)
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
            p = [_p(row.get("p_vs_bm25")), _p(row.get("p_vs_hybrid"))]
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
        p = _p(row.get("p_vs_bm25_nDCG@10"))
        lines.append(
            f"| {row['dataset']} | `{row['system']}` (sample) | {row['nDCG@10']:.4f} | {row['MRR@10']:.4f} | "
            f"{row['R@100']:.4f} | {p} | | | {row['protocol']} |"
        )
    return "\n".join(lines)


def _p(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def main_from_cli(
    config_path: Path,
    work_dir: Path | None,
    report: Path,
    max_minutes: float | None,
    only: str | None,
    ray: str | None = None,
) -> dict:
    config = EffectivenessConfig.load(config_path)
    experiment = EffectivenessExperiment(config, work_dir, ray=ray)
    kinds = set(only.split(",")) if only else None
    if kinds and not kinds <= {"dev", "first", "rerank", "alpha"}:
        raise SpecError(f"--only {only!r}", fix="a comma list of dev, first, rerank, alpha")
    stages = experiment.run(max_minutes, kinds)
    return experiment.write_report(report, stages)
