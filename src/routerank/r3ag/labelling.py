"""R3AG routing labels from a QA dataset with qrels: every pool member's retrieval quality and generation utility.

    routerank r3ag labels -d squad-dev --pool configs/r3ag-pool.toml --split train --sample 120

For each (seeded) query of a split and each pool member:
    quality   nDCG@10 of the member's run against the split's qrels (an abstaining member, R0, scores 0)
    utility   the generator's answer token F1 with the member's top k as context (R0: closed-book)
EM is kept beside F1 in `meta["em"]` (query id -> one value per member; `em_matrix` reads it), with each
member's retrieval and generation time, so the experiment can weigh routing overhead against them.

Three stages, each resumable: member runs are TREC files in the work dir (a finished run is read back, not
searched again); answers go through the Generator's SQLite cache, which commits batch by batch (a killed build
regenerates only the batches it lost, and identical contexts, e.g. bm25 and hybrid agreeing on a top 3, share
one generation); the labels folder is written atomically at the end, so it exists only when complete.
With `quality="judge"` an LLM judge (`routerank.r3ag.judge`) scores each member's top k on relevance, coverage
and redundancy instead of qrels, for data whose qrels are missing or too sparse to trust; where qrels exist, the
labels' meta also records how well the judge agrees with nDCG@10 over the retrieving members.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from tqdm.auto import tqdm

from routerank.data.registry import load_dataset
from routerank.data.trec import read_run, write_run
from routerank.data.types import Dataset, Document, Query, Run, sample_queries
from routerank.errors import RouterankError, SpecError
from routerank.evaluate.measures import evaluate
from routerank.evaluate.qa import exact_match, token_f1
from routerank.fsutil import atomic_write, cache_root, safe_name, without_later_defaults
from routerank.generate.context import retrieved_contexts
from routerank.generate.generator import Generator
from routerank.generate.scoring import require_answers
from routerank.generate.templates import get_template
from routerank.pipeline import build_pool
from routerank.r3ag.judge import CRITERIA, LLMJudge
from routerank.r3ag.labels import RoutingLabels
from routerank.r3ag.pool import PoolConfig

QUALITY = "nDCG@10"
QUALITY_SOURCES = ("qrels", "judge")
# Settings added after label folders had been keyed, at the value that reproduces the old behaviour.
ADDED_LATER = {"quality": "qrels", "judge": ""}


@dataclass(frozen=True)
class LabelSettings:
    """How labels are made (every field keys the work dir, so changing one never reuses stale state).

    split / sample / seed: which queries (a seeded sample of `sample`; None = the whole split).
    k: context documents per query (3 fits SQuAD paragraphs whole in 1024 tokens). depth: retrieval depth of the
    saved runs (nDCG@10 needs 10; 100 keeps the runs reusable). model / template / max_new_tokens /
    context_tokens / batch_size: the generator (plain: EM 0.17 vs chatml's 0.03 on squad-dev with gold context).
    quality: "qrels" (nDCG@10) or "judge" (the LLM judge on each member's top k); judge: its LLM spec (empty =
    the generator's model, sharing its weights).
    """

    split: str = "train"
    sample: int | None = None
    seed: int = 13
    k: int = 3
    depth: int = 100
    model: str = "smollm2"
    template: str = "plain"
    max_new_tokens: int = 32
    context_tokens: int = 1024
    batch_size: int = 8
    quality: str = "qrels"
    judge: str = ""

    def __post_init__(self) -> None:
        if self.quality not in QUALITY_SOURCES:
            raise SpecError(f"unknown quality label source {self.quality!r}", fix=" | ".join(QUALITY_SOURCES))

    def generator_options(self) -> dict:
        """The `Generator` keyword options these settings fix: template, token budgets and batch size."""
        return {
            "template": self.template,
            "max_new_tokens": self.max_new_tokens,
            "context_tokens": self.context_tokens,
            "batch_size": self.batch_size,
        }


def work_dir_for(dataset: str, pool: PoolConfig, settings: LabelSettings, root: Path | None = None) -> Path:
    """`<cache>/r3ag/labels/<dataset>-<split>-<sample>-<hash>`: one folder per dataset, pool and settings. The
    answer template's version is in the hash too: editing a template bumps it, and its answers change."""
    record = {
        "pool": pool.to_json(),
        "template_version": get_template(settings.template).version,
        **without_later_defaults(asdict(settings), ADDED_LATER),
    }
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:10]
    sample = settings.sample or "all"
    name = safe_name(f"{Path(dataset).name}-{settings.split}-{sample}-{digest}")
    return (root or cache_root() / "r3ag" / "labels") / name


def _documents_path(path: Path) -> Path:
    return path.with_name(path.stem + ".documents.json")


def _save_run(run: Run, path: Path) -> None:
    if run.documents:  # generated passages (genread): kept beside the run, written first so the run marks both done
        record = {d: {"text": doc.text, "metadata": dict(doc.metadata)} for d, doc in run.documents.items()}
        with atomic_write(_documents_path(path)) as out:
            json.dump(record, out)
    if any(len(run[q]) for q in run):
        write_run(run, path, tag=safe_name(run.name or "run"))
    else:
        with atomic_write(path) as out:  # an empty file: this member found nothing for any query
            out.write("")


def _load_run(path: Path, name: str) -> Run:
    run = Run(MappingProxyType({}), name) if path.stat().st_size == 0 else read_run(path)
    documents = _documents_path(path)
    if documents.exists():
        record = json.loads(documents.read_text(encoding="utf-8"))
        run = run.with_documents({d: Document(d, v["text"], metadata=v["metadata"]) for d, v in record.items()})
    return run


def member_runs(
    dataset: Dataset, queries: Sequence[Query], pool: PoolConfig, folder: Path, depth: int, progress: bool = True
) -> tuple[dict[str, Run], dict[str, float]]:
    """Every retrieving member's run (read from `folder` when saved there) and its search seconds per query."""

    folder.mkdir(parents=True, exist_ok=True)
    timing_path = folder / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    runs: dict[str, Run] = {}
    retrieving = [m for m in pool.members if m.name not in pool.abstain]
    built = None
    for member in tqdm(retrieving, desc="runs", unit="member", disable=not progress):
        path = folder / f"{safe_name(member.name)}.trec"
        if path.exists():
            runs[member.name] = _load_run(path, member.name)
            continue
        if built is None:
            built = build_pool(pool, dataset.corpus, progress=progress)
        began = time.perf_counter()
        run = built[member.name].search(list(queries), depth)
        timing[member.name] = (time.perf_counter() - began) / max(1, len(queries))
        _save_run(run, path)
        with atomic_write(timing_path) as out:
            json.dump(timing, out, indent=1)
        runs[member.name] = run
    return runs, timing


def _quality(queries: Sequence[Query], runs: dict[str, Run], names: Sequence[str], qrels) -> np.ndarray:
    quality = np.zeros((len(queries), len(names)), dtype=np.float32)
    judged = qrels.subset(q.id for q in queries)
    for column, name in enumerate(names):
        if name not in runs:
            continue
        per_query = evaluate(runs[name], judged, QUALITY).per_query[QUALITY]
        quality[:, column] = [per_query.get(q.id, 0.0) for q in queries]
    return quality


def _contexts(queries: Sequence[Query], runs: dict[str, Run], names: Sequence[str], corpus, k: int) -> dict:
    """Each member's top k documents per query, what the judge reads and the generator answers from (R0: none)."""
    return {
        name: retrieved_contexts(queries, runs[name], corpus, k) if name in runs else [[] for _ in queries]
        for name in names
    }


def _judged_quality(queries: Sequence[Query], contexts: dict, names: Sequence[str], abstain, judge, k: int):
    """[query, member] list quality from the LLM judge over each member's top k (0 for an abstaining member), and
    each retrieving member's mean per criterion."""
    quality = np.zeros((len(queries), len(names)), dtype=np.float32)
    criteria: dict[str, dict[str, float]] = {}
    texts = [q.text for q in queries]
    for column, name in enumerate(names):
        if name in abstain:
            continue
        judged = judge.judge(texts, contexts[name], k)
        quality[:, column] = [j.quality for j in judged]
        criteria[name] = {
            c: float(np.mean([np.mean(getattr(j, c)) for j in judged if getattr(j, c)] or [0.0])) for c in CRITERIA
        }
    return quality, criteria


def _agreement(judged: np.ndarray, qrels_quality: np.ndarray, columns: Sequence[int]) -> dict:
    """How the judge's list quality agrees with nDCG@10 over the retrieving members' (query, member) cells."""
    # deferred: scipy costs ~0.2 s at import and only this path needs it
    from scipy.stats import pearsonr, spearmanr

    a, b = judged[:, columns].ravel(), qrels_quality[:, columns].ravel()
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"cells": len(a), "pearson": None, "spearman": None}
    return {"cells": len(a), "pearson": float(pearsonr(a, b)[0]), "spearman": float(spearmanr(a, b)[0])}


def _utility(queries, contexts: dict, names, generator, progress: bool):
    """[query, member] F1 and EM, and each member's generation seconds per freshly generated answer."""

    f1 = np.zeros((len(queries), len(names)), dtype=np.float32)
    em = np.zeros_like(f1)
    seconds: dict[str, dict[str, float]] = {}
    for column, name in enumerate(tqdm(names, desc="answers", unit="member", disable=not progress)):
        began = time.perf_counter()
        answers = generator.generate(list(queries), contexts[name])
        fresh = sum(not a.cached for a in answers)
        seconds[name] = {"seconds": time.perf_counter() - began, "generated": fresh}
        for row, (query, answer) in enumerate(zip(queries, answers, strict=True)):
            f1[row, column] = token_f1(answer.text, query.answers)
            em[row, column] = exact_match(answer.text, query.answers)
    return f1, em, seconds


def build_labels(
    dataset: str | Dataset,
    pool: str | Path | PoolConfig,
    settings: LabelSettings | None = None,
    *,
    work_dir: str | Path | None = None,
    generator=None,
    judge=None,
    progress: bool = True,
) -> RoutingLabels:
    """Label a split's (sampled) queries for every pool member; returns the saved labels if they exist.

    The labels go to `<work_dir>/labels` (a RoutingLabels folder), runs to `<work_dir>/runs`. `generator`
    reuses a loaded Generator (it must match `settings`); otherwise one loads, only if answers are missing.
    `judge` (an LLMJudge) is used when `settings.quality == "judge"`; otherwise one loads on the generator's
    weights (or `settings.judge`'s)."""
    settings = settings or LabelSettings()
    pool = pool if isinstance(pool, PoolConfig) else PoolConfig.read(pool)
    name = dataset if isinstance(dataset, str) else dataset.name
    work = Path(work_dir) if work_dir is not None else work_dir_for(name, pool, settings)
    target = work / "labels"
    if (target / "labels.json").exists():
        return RoutingLabels.load(target)
    if isinstance(dataset, str):
        dataset = load_dataset(dataset, splits=[settings.split])

    queries = sample_queries(dataset.split_queries(settings.split), settings.sample, settings.seed)
    if not queries:
        raise RouterankError(f"{dataset.name} has no {settings.split} queries to label")
    require_answers(queries, f"{dataset.name} ({settings.split} split)")
    runs, search_seconds = member_runs(dataset, queries, pool, work / "runs", settings.depth, progress)
    names = pool.names
    quality = _quality(queries, runs, names, dataset.split_qrels(settings.split))
    if generator is None:
        generator = Generator(settings.model, progress=progress, **settings.generator_options())
    contexts = _contexts(queries, runs, names, dataset.corpus, settings.k)
    judging = {}
    if settings.quality == "judge":
        if judge is None:
            own = settings.judge and settings.judge != settings.model  # else the judge shares the generator's weights
            shared = None if own else (generator.model, generator.tokenizer)
            judge = LLMJudge(settings.judge or settings.model, progress=progress, _loaded=shared)
        judged, criteria = _judged_quality(queries, contexts, names, pool.abstain, judge, settings.k)
        retrieving = [c for c, n in enumerate(names) if n not in pool.abstain]
        judging = {
            "judge": judge.settings(),
            "judge_criteria": criteria,
            "judge_vs_qrels": _agreement(judged, quality, retrieving),
        }
        quality = judged
    f1, em, generation = _utility(queries, contexts, names, generator, progress)
    meta = {
        "dataset": dataset.name,
        "split": settings.split,
        "quality": QUALITY if settings.quality == "qrels" else "judge",
        **judging,
        "utility": "F1",
        "em": {q.id: row for q, row in zip(queries, em.tolist(), strict=True)},
        "settings": asdict(settings),
        "pool": pool.to_json(),
        "generator": generator.settings(),
        "search_seconds_per_query": search_seconds,
        "generation": generation,
    }
    labels = RoutingLabels(
        tuple(names), tuple(q.id for q in queries), tuple(q.text for q in queries), quality, f1, pool.abstain, meta
    )
    labels.save(target)
    return labels


def em_matrix(labels: RoutingLabels) -> np.ndarray:
    """The EM labels a builder keeps in meta, [query, member] like `labels.utility` (also after `subset`)."""
    table = labels.meta.get("em")
    if not isinstance(table, dict) or any(q not in table for q in labels.query_ids):
        raise RouterankError("these labels carry no EM for every query", fix="build them with routerank r3ag labels")
    built = list(labels.meta.get("pool") or labels.retrievers)
    columns = [built.index(r) for r in labels.retrievers]
    return np.asarray([[table[q][c] for c in columns] for q in labels.query_ids], dtype=np.float32).reshape(
        len(labels), len(columns)
    )
