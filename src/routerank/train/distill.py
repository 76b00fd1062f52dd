"""Teacher-scored candidate lists: what a student reranker is distilled from.

A `ScoredList` is one training query's first-stage top `depth` documents, each with the teacher's score and its
judged grade. The teacher is any reranker spec (`ce:<folder>`, `pointwise:<llm>`, ...), optionally interpolated with
the first stage: `Teacher("ce:ce-pooled", alpha=0.2)` scores a list exactly as the pipeline
`bm25>>ce:ce-pooled@8~0.2` would (`routerank.rerank.interpolate`), `alpha="auto"` takes the weight chosen on dev
data and saved beside the model, and `alpha=None` keeps the teacher's raw scores.

Why the scores are cached, and how:
- the teacher is the costly model, and a student is trained many times from the same lists (one run per
  ablation), so the teacher scores each (query, document) pair once;
- the raw scores are stored per (query text, document text) in a `ScoreCache` named after the teacher spec and a
  hash of its weight files; the interpolation is recomputed on reading, so a new `alpha` never rescores;
- queries are scored in chunks, each committed at once: a killed run keeps every finished chunk, a rerun scores
  only the rest, and when nothing is missing the teacher model is not even loaded (unless `alpha="auto"` must
  read its saved weight).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from tqdm.auto import tqdm

from routerank.data.registry import load_dataset
from routerank.data.types import Dataset, Query, Ranking, Run
from routerank.errors import RouterankError, SpecError
from routerank.fsutil import cache_root, sha256_file
from routerank.pipeline import build, canonical
from routerank.rerank.interpolate import mix, saved_alpha
from routerank.rerank.registry import make_reranker
from routerank.rerank.score_cache import ScoreCache, pair_key
from routerank.train.groups import select_queries

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf", "config.json")


@dataclass(frozen=True)
class ScoredList:
    """One query's candidates in first-stage order, each with the teacher's score and its judged grade (0 for not
    relevant or unjudged). `pairs()` is what the yes/no student scores, so it trains like a `TrainGroup`."""

    query_id: str
    query: str
    doc_ids: tuple[str, ...]
    documents: tuple[str, ...]
    teacher: tuple[float, ...]
    labels: tuple[int, ...]

    def pairs(self) -> list[tuple[str, str]]:
        """(query, document) pairs in list order: what the yes/no student scores."""
        return [(self.query, doc) for doc in self.documents]

    def teacher_order(self) -> list[int]:
        """Positions into the list, the teacher's best first; ties keep the first-stage order."""
        return sorted(range(len(self.documents)), key=lambda i: (-self.teacher[i], i))


def check_alpha_setting(alpha: float | str | None) -> float | str | None:
    """A number in [0, 1], "auto", or None / "none" (raw teacher scores); numbers given as text become numbers."""
    if alpha is None or (isinstance(alpha, str) and alpha.strip().lower() == "none"):
        return None
    if isinstance(alpha, str) and alpha.strip() == "auto":
        return "auto"
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise SpecError(f"bad teacher alpha {alpha!r}", fix='a number in [0, 1], "auto" or "none"') from None
    if not 0.0 <= value <= 1.0:
        raise SpecError(f"teacher alpha {value} is outside [0, 1]", fix='a number in [0, 1], "auto" or "none"')
    return value


def teacher_fingerprint(spec: str) -> str:
    """16 hex digits over the spec and the content of the weight files of any folder (or file) it names, so a
    retrained teacher in the same folder gets a fresh cache."""
    h = hashlib.sha256(spec.strip().encode())
    for part in filter(None, (p.strip() for p in re.split(r"[:,=]", spec))):
        path = Path(part).expanduser()
        if not path.exists() and "/" not in part:
            path = cache_root() / "models" / part  # a bare model name, as `ce:` resolves one
        files = [path] if path.is_file() else sorted(f for g in WEIGHT_FILES for f in path.glob(g))
        for file in files:
            h.update(f"{file.name}:{sha256_file(file)}".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Teacher:
    """spec: any reranker spec. alpha: see `check_alpha_setting`. first_stage: the retriever whose top `depth`
    documents make each list. chunk: queries scored (and committed to the cache) at a time."""

    spec: str
    alpha: float | str | None = None
    first_stage: str = "bm25"
    depth: int = 8
    chunk: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_alpha_setting(self.alpha))
        if not self.spec.strip():
            raise SpecError("the teacher spec is empty", fix="e.g. ce:~/.cache/routerank/models/ce-pooled")
        if self.depth < 2:
            raise SpecError(f"a candidate list needs at least 2 documents, got depth {self.depth}")
        if self.chunk < 1:
            raise SpecError(f"chunk must be at least 1, got {self.chunk}")


class TeacherCache:
    """Scores candidate lists with a `Teacher`, through an on-disk cache (see the module docstring).

    `scored` counts the pairs this object had the teacher score: 0 when the cache held everything. `alphas` records
    the interpolation weight used per corpus fingerprint. `reranker` passes an already-built teacher (tests)."""

    def __init__(self, teacher: Teacher, *, cache_dir: str | Path | None = None, reranker=None, progress: bool = True):
        self.teacher, self.progress, self._reranker = teacher, progress, reranker
        self.key = f"teacher-{teacher_fingerprint(teacher.spec)}"
        self.cache = ScoreCache(self.key, cache_dir)
        self.scored = 0
        self.alphas: dict[str, float | None] = {}

    @property
    def reranker(self):
        """The teacher reranker: the one passed in, or built from its spec on first use."""
        if self._reranker is None:
            self._reranker = make_reranker(self.teacher.spec)
        return self._reranker

    def first_stage(self, ds: Dataset, queries: Sequence[Query]) -> Run:
        """The first stage's top `depth` documents for each query: the lists the teacher scores."""
        return build(self.teacher.first_stage, ds.corpus).search(list(queries), self.teacher.depth)

    def alpha_for(self, ds: Dataset) -> float | None:
        """The interpolation weight for this dataset (None: raw teacher scores); "auto" reads the weight saved beside
        the teacher for its corpus. Recorded in `alphas`."""
        alpha = self.teacher.alpha
        if alpha == "auto":
            alpha = saved_alpha(self.reranker, canonical(self.teacher.first_stage), ds.corpus)
        self.alphas[ds.corpus.fingerprint] = alpha
        return alpha

    def lists(self, ds: Dataset, queries: Sequence[Query], split: str, id_prefix: str = "") -> list[ScoredList]:
        """One `ScoredList` per query with at least two first-stage candidates, in query order."""
        run = self.first_stage(ds, queries)
        heads = {q.id: (run[q.id] if q.id in run else Ranking()).top(self.teacher.depth) for q in queries}
        keys = {q.id: [pair_key(q.text, ds.corpus[d].full_text) for d in heads[q.id].doc_ids] for q in queries}
        raw = self.cache.get_many([k for q in queries for k in keys[q.id]])
        missing = [q for q in queries if any(k not in raw for k in keys[q.id])]
        if missing:
            raw.update(self._score(ds, missing, heads, keys))
        alpha = self.alpha_for(ds)
        judged = ds.split_qrels(split).judgments
        out = []
        for query in queries:
            head = heads[query.id]
            if len(head) < 2:
                continue
            scores = [raw[k] for k in keys[query.id]]
            teacher = scores if alpha is None else mix(scores, head.scores, alpha).tolist()
            grades = judged.get(query.id, {})
            out.append(
                ScoredList(
                    f"{id_prefix}{query.id}",
                    query.text,
                    head.doc_ids,
                    tuple(ds.corpus[d].full_text for d in head.doc_ids),
                    tuple(float(s) for s in teacher),
                    tuple(int(grades.get(d, 0)) for d in head.doc_ids),
                )
            )
        return out

    def _score(self, ds: Dataset, queries: list[Query], heads: dict[str, Ranking], keys: dict[str, list[str]]):

        fresh: dict[str, float] = {}
        size = self.teacher.chunk
        chunks = [queries[i : i + size] for i in range(0, len(queries), size)]
        bar = tqdm(total=len(queries), desc=f"teacher {self.teacher.spec}", unit="query", disable=not self.progress)
        for chunk in chunks:
            run = Run(MappingProxyType({q.id: heads[q.id] for q in chunk}), self.teacher.first_stage)
            scored = self.reranker.rerank_run(chunk, run, ds.corpus, self.teacher.depth)
            batch = {}
            for query in chunk:
                values = scored[query.id].as_dict()
                absent = [d for d in heads[query.id].doc_ids if d not in values]
                if absent:
                    raise RouterankError(
                        f"teacher {self.teacher.spec!r} left {len(absent)} of query {query.id}'s candidates unscored",
                        fix="use a reranker that scores every candidate it is given",
                    )
                batch.update(zip(keys[query.id], (values[d] for d in heads[query.id].doc_ids), strict=True))
            self.cache.put_many(batch)
            self.scored += len(batch)
            fresh.update(batch)
            bar.update(len(chunk))
        bar.close()
        if self.progress:
            print(f"teacher scored {len(fresh):,} pairs of {len(queries):,} queries", file=sys.stderr)
        return fresh


@dataclass(frozen=True)
class DistillData:
    """Teacher-scored lists for a student: train and dev lists, per-dataset sources for a manifest, and the pairs
    the teacher scored this time."""

    train: list[ScoredList]
    dev: list[ScoredList]
    sources: dict  # per dataset: queries, lists, and the teacher weight used, for a manifest
    teacher_scored: int  # pairs the teacher scored this time (0: all from the cache)


def teacher_lists(
    scorer: TeacherCache,
    datasets: Sequence[str],
    *,
    split: str = "train",
    max_queries: int | None = None,
    dev_queries: int = 0,
    seed: int = 13,
    progress: bool = True,
) -> DistillData:
    """Every dataset's training and dev lists, teacher-scored through the cache: per dataset, `dev_queries` queries
    of `split` held out by a seeded draw and `max_queries` of the rest (`routerank.train.groups.select_queries`).
    Lists shorter than the teacher's depth (a first stage that found fewer documents) are left out, so a batch of
    lists is a full matrix. Query ids get a `<dataset>/` prefix when there are several datasets."""
    depth = scorer.teacher.depth
    train, dev, sources = [], [], {}
    for name in datasets:
        ds = load_dataset(name)
        train_q, dev_q = select_queries(ds, split, max_queries, seed, dev_queries)
        prefix = f"{name}/" if len(datasets) > 1 else ""
        lists = [x for x in scorer.lists(ds, train_q + dev_q, split, prefix) if len(x.documents) == depth]
        held = {f"{prefix}{q.id}" for q in dev_q}
        train_lists = [x for x in lists if x.query_id not in held]
        dev_lists = [x for x in lists if x.query_id in held]
        if not train_lists:
            raise RouterankError(
                f"no training lists from {name!r}: the first stage found fewer than {depth} documents for every query",
                fix="lower the depth",
            )
        train += train_lists
        dev += dev_lists
        sources[name] = {
            "split": split,
            "train_queries": len(train_q),
            "dev_queries": len(dev_q),
            "train_lists": len(train_lists),
            "dev_lists": len(dev_lists),
            "lists_with_a_relevant_document": sum(any(g >= 1 for g in x.labels) for x in train_lists),
            "teacher_alpha": scorer.alphas.get(ds.corpus.fingerprint),
        }
        if progress:
            print(f"{name}: {len(train_lists)} training lists, {len(dev_lists)} dev lists", file=sys.stderr)
    return DistillData(train, dev, sources, scorer.scored)


def lists_digest(lists: Sequence[ScoredList]) -> str:
    """Names training data in a checkpoint's key: resuming on other lists (say, of a retrained teacher) is refused."""
    h = hashlib.sha256()
    for item in lists:
        h.update(json.dumps([item.query_id, item.doc_ids, item.teacher, item.labels]).encode())
    return h.hexdigest()[:16]
