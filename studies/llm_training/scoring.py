"""A scoring stage of issue 12's experiment, in persisted chunks: queries are reranked `chunk` at a time and each
finished chunk is appended to `<run>.partial.jsonl` (with the spec, its seconds and LLM passes), so a killed stage
resumes at the first unfinished chunk; a partial file made by another spec is discarded."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routerank.data.trec import write_run
from routerank.data.types import Query, Ranking, Run
from routerank.fsutil import atomic_write
from routerank.pipeline import build

if TYPE_CHECKING:
    from studies.llm_training.experiment import LLMTrainingExperiment

SCORE_CHUNK = 10
"""Queries per persisted piece of a scoring stage: what a kill can lose."""
COST_COUNTERS = ("calls", "forward_passes")


def read_chunks(path: Path) -> list[dict]:
    """The finished chunks of a partial scoring run; a line torn by a kill ends the list."""
    chunks = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                chunks.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return chunks


def append_chunk(path: Path, record: dict) -> None:
    """Append one finished chunk and make it durable."""
    with path.open("a") as out:
        out.write(json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _kept_chunks(partial: Path, spec: str | None) -> list[dict]:
    """The partial file's chunks made by `spec`; the file is rewritten without another spec's chunks or a line torn
    by a kill, then appended to."""
    chunks = [c for c in read_chunks(partial) if c.get("spec") == spec]
    if partial.exists():
        with atomic_write(partial) as out:
            out.writelines(json.dumps(c) + "\n" for c in chunks)
    return chunks


class ChunkScorer:
    """Reranks (or for BM25, retrieves) one chunk of queries at a time and records what it cost."""

    def __init__(self, experiment: LLMTrainingExperiment, system: str, dataset: str):
        self.depth = experiment.config.depth
        self.corpus = experiment.dataset(dataset).corpus
        self.retriever = self.reranker = self.inner = self.candidates = None  # nothing is loaded when all is on disk
        self.experiment, self.system, self.dataset = experiment, system, dataset

    def load(self) -> None:
        """The retriever or reranker, once some query is still to score."""
        if self.system == "bm25":
            self.retriever = build("bm25", self.corpus)
        else:
            self.reranker = self.experiment.reranker(self.system)
            self.candidates = self.experiment.candidates(self.dataset)
            self.inner = getattr(self.reranker, "reranker", self.reranker)  # an interpolated teacher's own counts

    def chunk(self, queries: list[Query], spec: str | None) -> dict[str, Any]:
        """One chunk's record: the spec, the seconds, the LLM passes it took, and its rankings."""
        before = {k: getattr(self.inner, k, None) for k in COST_COUNTERS}
        start = time.perf_counter()  # bm25: the search alone, not loading the index or the model
        if self.reranker is None:
            run = self.retriever.search(queries, self.depth)
        else:
            run = self.reranker.rerank_run(queries, self.candidates, self.corpus, self.depth)
        record: dict[str, Any] = {"spec": spec, "seconds": time.perf_counter() - start, "rankings": {}}
        for key, was in before.items():
            now = getattr(self.inner, key, None)
            if isinstance(now, int) and isinstance(was, int):
                record[key] = now - was
        record["rankings"] = {q: [list(r.doc_ids), list(r.scores)] for q, r in run.rankings.items()}
        return record


def score_system(experiment: LLMTrainingExperiment, system: str, dataset: str, chunk: int = SCORE_CHUNK) -> None:
    """Rerank the dataset's BM25 candidates with the system in persisted chunks; the run, and beside it its spec
    and costs."""
    queries = experiment.test_queries(dataset)
    path, spec = experiment.run_path(system, dataset), experiment.spec(system)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.jsonl")
    chunks = _kept_chunks(partial, spec)
    done = {q for c in chunks for q in c["rankings"]}
    todo = [q for q in queries if q.id not in done]
    scorer = ChunkScorer(experiment, system, dataset)
    if todo:
        scorer.load()
    for begin in range(0, len(todo), chunk):
        record = scorer.chunk(todo[begin : begin + chunk], spec)
        append_chunk(partial, record)
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
