"""Issue 12: every LLM reranker trainer on one backbone, scored on the same seeded test queries.

    python -m studies.llm_training.experiment --config configs/llm-training-cpu.toml [--max-minutes 60]
    routerank experiment llm-training --config configs/llm-training-cpu.toml

Systems, all reranking BM25's top `depth` of the same `test_queries` seeded test queries of each dataset:
bm25 alone; `zero-shot` (the untrained backbone's yes/no score); `sft` and `contrastive` (a LoRA trained with BCE,
or with InfoNCE as R2R's experts are, `train.expert`); `prorank-stage1` and `prorank` (`train.prorank`); DeAR's
stage 1 with all its loss terms (`dear-stage1`), stages 1 + 2 listwise (`dear`) and each stage-1 loss ablation
(`dear-ce`, ...; `train.dear`); `rank-r1` (setwise, `train.rank_r1`); and the `teacher` DeAR distils.

Each trainer reads its own TOML (`configs/{dear,prorank,rank-r1}-cpu.toml`); the experiment adds only where the
adapters go and what scores them. Every adapter lives under the work dir (`<cache>/llm-training/<profile>`) in a
folder named by its config's hash, and every trainer resumes from its checkpoint after a kill, so a stage that is
finished is skipped and a changed method config trains anew beside the old one. Scoring stages persist
every 10 queries (`<run>.partial.jsonl`), so a killed one resumes too. Each scored run records the
reranker spec that made it; a run made by another spec (a retrained adapter) is scored again. The report
(`llm_training_report`) is written from whatever exists: a stage that has not run shows as pending, its cells –.
Nothing here is chosen on test queries: the trainers hold their dev queries out of the train split.

`--systems rank-r1,zero-shot` runs only those rows' stages. `--carry-from reports/llm-training.json` fills the rows
this work dir has no run for (a lost cache, another machine) from an earlier report of the same protocol, marked
*carried* in the report; a row trained here with another spec is never filled in from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from routerank.data.types import Query, Run, sample_queries
from routerank.errors import RouterankError, SpecError
from routerank.fsutil import atomic_write, cache_root
from routerank.stages import Stage, Step, run_plan
from routerank.train.dear import TERMS
from studies.llm_training.config import (
    INFERENCE_VARIANTS,
    UNTRAINED,
    LLMTrainingConfig,
    load_method_configs,
    parse_only,
)

SCORE_CHUNK = 10
"""Queries per persisted piece of a scoring stage: what a kill can lose."""
COST_COUNTERS = ("calls", "forward_passes")


def _read_chunks(path: Path) -> list[dict]:
    """The finished chunks of a partial scoring run; a line torn by a kill ends the list."""
    chunks = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                chunks.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return chunks


def _append_chunk(path: Path, record: dict) -> None:
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


class LLMTrainingExperiment:
    """The plan: per method a training stage (then its scoring stages), after the untrained rows' scoring stages.
    `loaded_factory` () -> (model, tokenizer) stands in for the backbone everywhere (tests: a tiny model); scores
    are then not cached, so a test model never writes under the real backbone's cache key."""

    def __init__(self, config: LLMTrainingConfig, work_dir=None, *, progress: bool = True, loaded_factory=None):
        self.config = config
        self.methods = load_method_configs(config)
        self.work = Path(work_dir) if work_dir else cache_root() / "llm-training" / config.profile
        self.progress = progress
        self._loaded_factory = loaded_factory
        self._datasets: dict = {}
        self._dear: tuple | None = None

    # data ------------------------------------------------------------------------------------------------

    def dataset(self, name: str):
        from routerank.data.registry import load_dataset

        if name not in self._datasets:
            self._datasets[name] = load_dataset(name)
        return self._datasets[name]

    def test_queries(self, name: str) -> list[Query]:
        return sample_queries(self.dataset(name).split_queries("test"), self.config.test_queries, self.config.seed)

    def test_qrels(self, name: str):
        """The test judgments of the sampled queries (`test_queries`)."""
        return self.dataset(name).split_qrels("test").subset(q.id for q in self.test_queries(name))

    def protocol(self) -> str:
        c = self.config
        return f"test{c.test_queries or '-all'}-seed{c.seed}-top{c.depth}"

    def run_path(self, system: str, dataset: str) -> Path:
        return self.work / "runs" / self.protocol() / system / f"{dataset}.trec"

    def candidates(self, dataset: str) -> Run:
        from routerank.data.trec import read_run

        path = self.run_path("bm25", dataset)
        if not path.exists():
            self.score("bm25", dataset)
        return read_run(path)

    # systems ---------------------------------------------------------------------------------------------

    def expert_config(self, system: str):
        """The ExpertConfig of `sft` (BCE) or `contrastive` (InfoNCE): both datasets' train splits, pooled."""
        from routerank.r2r.trainer import ExpertConfig

        c = self.config
        settings = {"seed": c.seed, **{k: tuple(v) if isinstance(v, list) else v for k, v in c.expert.items()}}
        if settings.get("max_queries") == 0:  # as at the top level: 0 means every training query
            settings["max_queries"] = None
        return ExpertConfig(
            ",".join(c.datasets),
            system,
            backbone=c.backbone,
            template=c.template,
            objective="bce" if system == "sft" else "infonce",
            max_doc_tokens=c.max_doc_tokens,
            **settings,
        )

    def dear_configs(self) -> dict:
        """DeAR system name -> its config: `dear-stage1` (the DeAR config) and one per ablation, named by its
        terms (`dear-ce`); an ablation equal to the DeAR config is `dear-stage1` itself."""
        return self._dear_plan()[0]

    def ablations(self) -> dict[str, str]:
        """Each configured ablation (its terms, e.g. "ce") -> the system that trains it."""
        return self._dear_plan()[1]

    def _dear_plan(self) -> tuple[dict, dict[str, str]]:
        if self._dear is None:
            main = self.methods.dear
            configs, ablations = {"dear-stage1": main}, {}
            for terms in self.config.dear_ablations:
                on = set(terms.split("+"))
                weights = {f"w_{t}": (getattr(main, f"w_{t}") or 1.0) if t in on else 0.0 for t in TERMS}
                ablation = replace(main, **weights)
                system = "dear-stage1" if ablation == main else ablation.name
                configs.setdefault(system, ablation)
                ablations[terms] = system
            self._dear = configs, ablations
        return self._dear

    def train_dir(self, system: str) -> Path:
        from routerank.r2r.trainer import config_json as expert_json
        from routerank.train.grpo import config_json
        from routerank.train.prorank import stage1_key

        if system in ("sft", "contrastive"):
            return self.work / "train" / f"{system}-{_digest(expert_json(self.expert_config(system)))}"
        if system.startswith("dear"):
            cfg = self.dear_configs()["dear-stage1" if system == "dear" else system]
            return self.work / "train" / "dear" / f"{cfg.name}-{_digest(asdict(cfg))}"
        if system.startswith("prorank"):
            return self.work / "train" / f"prorank-{_digest(stage1_key(self.methods.prorank))}"
        return self.work / "train" / f"rank-r1-{_digest(config_json(self.methods.rank_r1))}"

    def systems(self) -> list[str]:
        """Every row of the report, in its order; the trained ones only where the profile runs their method."""
        out = ["bm25", "zero-shot"]
        methods = self.config.methods
        out += [m for m in ("sft", "contrastive") if m in methods]
        if "dear" in methods:
            out += ["dear-stage1", "dear", "shuffled-dear", *[s for s in self.dear_configs() if s != "dear-stage1"]]
        if "prorank" in methods:
            out += ["prorank-stage1", "prorank"]
        if "rank-r1" in methods:
            out.append("rank-r1")
        return [*out, "teacher"]

    def adapter_dir(self, system: str) -> Path:
        """The adapter folder a trained system reranks with."""
        system = INFERENCE_VARIANTS.get(system, system)
        folder = self.train_dir(system)
        if system in ("dear", "prorank"):
            return folder / "stage2"
        if system.startswith("dear") or system == "prorank-stage1":
            return folder / "stage1"
        return folder

    def trained(self, system: str) -> bool:
        """Whether the adapter this system reranks with is finished (true for the untrained rows)."""
        if system in UNTRAINED:
            return True
        if system in INFERENCE_VARIANTS:
            return self.trained(INFERENCE_VARIANTS[system])
        folder = self.adapter_dir(system)
        if system in ("sft", "contrastive"):
            from routerank.r2r.trainer import MANIFEST

            return (folder / MANIFEST).exists()
        if system.startswith("dear"):
            from routerank.train.dear import stage_done

            return stage_done(folder, self.dear_configs()["dear-stage1" if system == "dear" else system])
        from routerank.train.grpo import config_json, finished

        if system == "prorank-stage1":
            from routerank.train.prorank import stage1_task

            return finished(folder, stage1_task(self.methods.prorank).key)
        if system == "prorank":
            from routerank.rerank.adapters import MANIFEST, WEIGHTS

            if not (folder / MANIFEST).exists() or not (folder / WEIGHTS).exists():
                return False
            return json.loads((folder / MANIFEST).read_text()).get("config") == config_json(self.methods.prorank)
        from routerank.train.rank_r1 import rank_r1_task

        return finished(folder, rank_r1_task(self.methods.rank_r1).key)

    def manifest(self, system: str) -> dict | None:
        """The manifest of a trained system's adapter (None: an untrained row, or not trained yet)."""
        from routerank.rerank.adapters import read_adapter_manifest

        if system in UNTRAINED or system in INFERENCE_VARIANTS or not self.trained(system):
            return None
        return read_adapter_manifest(self.adapter_dir(system))

    def teacher_setting(self) -> tuple[str, float | str | None]:
        from routerank.train.distill import check_alpha_setting

        dear = self.methods.dear
        spec = self.config.teacher or dear.teacher
        alpha = check_alpha_setting(self.config.teacher_alpha if self.config.teacher_alpha != "" else dear.alpha)
        return spec, alpha

    def spec(self, system: str) -> str | None:
        """The reranker spec a system scores with; None while its adapter is not trained."""
        c = self.config
        if system == "bm25":
            return "bm25"
        if system == "zero-shot":
            return f"pointwise:{c.backbone},template={c.template},max_doc_tokens={c.max_doc_tokens}"
        if system == "teacher":
            spec, alpha = self.teacher_setting()
            return spec if alpha is None else f"{spec}~{alpha}"
        if not self.trained(system):
            return None
        if system == "shuffled-dear":
            return f"{self.spec('dear')},shuffle={c.seed}"
        folder = self.adapter_dir(system)
        if system in ("sft", "contrastive"):
            return f"pointwise:{c.backbone},adapter={folder},template={c.template},max_doc_tokens={c.max_doc_tokens}"
        if system.startswith("dear"):
            return self.manifest(system)["reranker_spec"]
        if system.startswith("prorank"):
            pr = self.methods.prorank
            return f"pointwise:{c.backbone},template={pr.template},adapter={folder},max_doc_tokens={pr.max_doc_tokens}"
        extra = f",{c.rank_r1_options}" if c.rank_r1_options else ""
        return f"setwise:{c.backbone},adapter={folder},k={self.methods.rank_r1.k}{extra}"

    # stages ----------------------------------------------------------------------------------------------

    def _loaded(self):
        return self._loaded_factory() if self._loaded_factory else None

    def train(self, system: str) -> None:
        from routerank.r2r.trainer import train_expert
        from routerank.train.dear import train_dear
        from routerank.train.prorank import train_prorank
        from routerank.train.rank_r1 import train_rank_r1

        folder, progress = self.train_dir(system), self.progress
        if system in ("sft", "contrastive"):
            train_expert(self.expert_config(system), folder, loaded=self._loaded(), progress=progress)
        elif system.startswith("dear"):
            cfg = self.dear_configs()["dear-stage1" if system == "dear" else system]
            stages = (2,) if system == "dear" else (1,)
            train_dear(cfg, folder, stages=stages, load=self._loaded_factory, progress=progress)
        elif system.startswith("prorank"):
            stage = 1 if system == "prorank-stage1" else 2
            train_prorank(self.methods.prorank, folder, stage=stage, loaded=self._loaded(), progress=progress)
        else:
            train_rank_r1(self.methods.rank_r1, folder, loaded=self._loaded(), progress=progress)

    def reranker(self, system: str):
        """The system's reranker; the teacher mixed with BM25 as DeAR's lists mix it (`teacher_alpha`)."""
        from routerank.pipeline import StageSpec, stage_reranker

        spec, alpha = self.teacher_setting() if system == "teacher" else (self.spec(system), None)
        family = spec.partition(":")[0]
        options: dict = {}
        if family in ("pointwise", "ce"):
            options = {"cache": self._loaded_factory is None or family == "ce", "progress": self.progress}
        elif family in ("setwise", "listwise"):
            options = {"progress": self.progress}
        if family in ("pointwise", "setwise", "listwise") and self._loaded_factory is not None:
            options["_loaded"] = self._loaded_factory()
        return stage_reranker(StageSpec(spec, self.config.depth, alpha), "bm25", options)

    def score(self, system: str, dataset: str, chunk: int = SCORE_CHUNK) -> None:
        """Rerank the dataset's BM25 candidates with the system; the run, and beside it its spec and costs.

        Queries are reranked `chunk` at a time and each finished chunk is appended to `<run>.partial.jsonl` (with
        the spec, its seconds and LLM passes), so a killed scoring stage resumes at the first unfinished chunk; a
        partial file made by another spec is discarded."""
        from routerank.data.trec import write_run
        from routerank.data.types import Ranking
        from routerank.pipeline import build

        queries, corpus = self.test_queries(dataset), self.dataset(dataset).corpus
        path, spec = self.run_path(system, dataset), self.spec(system)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.jsonl")
        chunks = [c for c in _read_chunks(partial) if c.get("spec") == spec]
        if partial.exists():  # rewritten without another spec's chunks or a line torn by a kill, then appended to
            with atomic_write(partial) as out:
                out.writelines(json.dumps(c) + "\n" for c in chunks)
        done = {q for c in chunks for q in c["rankings"]}
        todo = [q for q in queries if q.id not in done]
        reranker = inner = None  # nothing is loaded when every chunk is already on disk
        if todo and system == "bm25":
            retriever = build("bm25", corpus)
        elif todo:
            reranker, candidates = self.reranker(system), self.candidates(dataset)
            inner = getattr(reranker, "reranker", reranker)  # an interpolated teacher's own reranker counts
        for begin in range(0, len(todo), chunk):
            part = todo[begin : begin + chunk]
            before = {k: getattr(inner, k, None) for k in COST_COUNTERS}
            start = time.perf_counter()  # bm25: the search alone, not loading the index or the model
            if reranker is None:
                run = retriever.search(part, self.config.depth)
            else:
                run = reranker.rerank_run(part, candidates, corpus, self.config.depth)
            record = {"spec": spec, "seconds": time.perf_counter() - start, "rankings": {}}
            for key, was in before.items():
                now = getattr(inner, key, None)
                if isinstance(now, int) and isinstance(was, int):
                    record[key] = now - was
            record["rankings"] = {q: [list(r.doc_ids), list(r.scores)] for q, r in run.rankings.items()}
            _append_chunk(partial, record)
            chunks.append(record)
        rankings = {q: Ranking(tuple(ids), tuple(scores)) for c in chunks for q, (ids, scores) in c["rankings"].items()}
        run = Run({q.id: rankings[q.id] for q in queries if q.id in rankings}, system)
        meta = {"spec": spec, "queries": len(queries), "seconds": sum(c["seconds"] for c in chunks)}
        for key in COST_COUNTERS:
            if chunks and all(key in c for c in chunks):
                meta[key] = sum(c[key] for c in chunks)
        write_run(run, path, tag=system)
        with atomic_write(path.with_suffix(".json")) as out:
            json.dump(meta, out, indent=2)
        partial.unlink(missing_ok=True)

    def scored(self, system: str, dataset: str) -> bool:
        """A run exists and was made by the spec the system has now."""
        path = self.run_path(system, dataset)
        meta = path.with_suffix(".json")
        if not path.exists() or not meta.exists():
            return False
        spec = self.spec(system)
        return spec is not None and json.loads(meta.read_text()).get("spec") == spec

    def pick_systems(self, systems: str | None) -> set[str] | None:
        """`--systems rank-r1,zero-shot`: the rows whose stages run (None: all); an unknown name is an error."""
        if not systems:
            return None
        picked = {s.strip() for s in systems.split(",") if s.strip()}
        stray = sorted(picked - set(self.systems()))
        if stray or not picked:
            raise SpecError(
                f"unknown systems {stray} in --systems {systems!r}" if stray else "--systems names no system",
                fix=f"a comma list of {', '.join(self.systems())}",
            )
        return picked

    def plan(self, systems: set[str] | None = None) -> list[Step]:
        """Untrained rows first; then per method its training stage and right after it its scoring stages, so a
        run stopped by its time budget reports every method it trained. `systems` keeps only those rows' stages
        (a row's training stage included; BM25's candidates are scored when a reranker needs them)."""
        steps = []
        rows = [s for s in self.systems() if systems is None or s in systems]

        def score(system: str, dataset: str) -> Step:
            return Step(
                f"score {system} on {dataset}",
                "score",
                lambda: self.scored(system, dataset),
                lambda: self.score(system, dataset),
                needs=lambda: self.trained(system),
            )

        for system in (s for s in UNTRAINED if s in rows):
            steps += [score(system, d) for d in self.config.datasets]
        for system in rows:
            if system in UNTRAINED:
                continue
            if system in INFERENCE_VARIANTS:  # no training of its own: scored once its base is trained
                steps += [score(system, d) for d in self.config.datasets]
                continue
            needs = {"dear": "dear-stage1", "prorank": "prorank-stage1"}.get(system)
            steps.append(
                Step(
                    f"train {system}",
                    "train",
                    lambda s=system: self.trained(s),
                    lambda s=system: self.train(s),
                    needs=(lambda n=needs: self.trained(n)) if needs else (lambda: True),
                )
            )
            steps += [score(system, d) for d in self.config.datasets]
        return steps

    def run(
        self, max_minutes: float | None = None, only: set[str] | None = None, systems: set[str] | None = None
    ) -> list[Stage]:
        return run_plan(
            self.plan(systems),
            self.work / "locks",
            max_minutes=max_minutes,
            only=only,
            progress=self.progress,
            tag="llm",
        )


def main_from_cli(
    config_path: Path,
    work_dir: Path | None = None,
    report: Path = Path("reports/llm-training.md"),
    max_minutes: float | None = None,
    only: str | None = None,
    progress: bool = True,
    systems: str | None = None,
    carry_from: Path | None = None,
) -> Path:
    """Run the plan (or the `systems` rows of it) and write the report; `carry_from` names an earlier report's JSON
    whose rows fill in the systems that have no run in this work dir (`llm_training_report.carry`)."""
    from studies.llm_training.report import read_carried, write_report

    kinds = parse_only(only)
    experiment = LLMTrainingExperiment(LLMTrainingConfig.load(config_path), work_dir, progress=progress)
    picked = experiment.pick_systems(systems)
    carried = read_carried(experiment, Path(carry_from)) if carry_from is not None else None
    stages = experiment.run(max_minutes, kinds, picked)
    return write_report(experiment, stages, Path(report), config_path, carried=carried)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="e.g. configs/llm-training-cpu.toml")
    parser.add_argument("--work-dir", type=Path, help="stages live here (default: cache/llm-training/PROFILE)")
    parser.add_argument("--report", type=Path, default=Path("reports/llm-training.md"))
    parser.add_argument("--max-minutes", type=float, help="start no new stage after this long")
    parser.add_argument("--only", help="run only these stage kinds: train,score")
    parser.add_argument("--systems", help="run only these rows' stages, e.g. rank-r1,zero-shot")
    parser.add_argument("--carry-from", type=Path, help="an earlier report's JSON: its rows fill the unscored ones")
    args = parser.parse_args(argv)
    try:
        path = main_from_cli(
            args.config,
            args.work_dir,
            args.report,
            args.max_minutes,
            args.only,
            systems=args.systems,
            carry_from=args.carry_from,
        )
    except RouterankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {path}", file=sys.stderr)


__all__ = ["LLMTrainingConfig", "LLMTrainingExperiment", "main", "main_from_cli", "parse_only"]


if __name__ == "__main__":
    main()
