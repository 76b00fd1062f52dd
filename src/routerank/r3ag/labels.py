"""Routing labels: how well each retriever of a pool serves each query, in two dimensions.

R3AG learns from two matrices over the same queries (rows) and pool members (columns):
    quality[q, r]   retrieval quality of member r on query q, e.g. nDCG@10 or R@10 against the qrels (R0 scores 0)
    utility[q, r]   generation utility of member r's top-k as context, e.g. answer EM/F1 (R0 = closed-book)
Any float scale works (the router learns from the order within a row), but one scale per matrix.

On disk a label set is a folder (what a label builder writes and `RoutingLabels.load` reads):
    labels.json         {"format": 1, "retrievers": [...], "abstain": [...], "query_ids": [...], "queries": [...],
                         "meta": {...}}
    labels.safetensors  "quality" and "utility", float32 [len(query_ids), len(retrievers)]
Row q is query_ids[q] with text queries[q]; column r is retrievers[r], a pool member name. `abstain` names the
members that retrieve nothing (R0). `meta` is free JSON: dataset, split, measures, the pool config, the generator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from routerank.errors import DataFormatError, RouterankError
from routerank.fsutil import atomic_dir

FORMAT_VERSION = 1
DIMENSIONS = ("quality", "utility")
JSON_FILE, TENSOR_FILE = "labels.json", "labels.safetensors"


def _frozen(matrix, name: str, shape: tuple[int, int]) -> np.ndarray:
    array = np.array(matrix, dtype=np.float32)
    if array.shape != shape:
        raise DataFormatError(f"{name} labels have shape {array.shape}, expected {shape} (queries, retrievers)")
    if not np.isfinite(array).all():
        raise DataFormatError(f"{name} labels hold NaN or infinite values", fix="give every (query, retriever) a score")
    array.setflags(write=False)
    return array


def _unique(values: Sequence[str], what: str) -> tuple[str, ...]:
    seen: set[str] = set()
    dupes = [v for v in values if v in seen or seen.add(v)]
    if dupes:
        raise DataFormatError(f"{len(dupes)} duplicate {what}, e.g. {dupes[:3]}")
    return tuple(values)


@dataclass(frozen=True, eq=False)
class RoutingLabels:
    """Quality and utility of every pool member on every query (see the module docstring for the file format).

    retrievers: pool member names, the column order. query_ids / queries: the rows' ids and texts.
    quality / utility: [queries, retrievers] floats, higher is better. abstain: members that retrieve nothing (R0).
    meta: free JSON about where the labels came from.
    """

    retrievers: tuple[str, ...]
    query_ids: tuple[str, ...]
    queries: tuple[str, ...]
    quality: np.ndarray
    utility: np.ndarray
    abstain: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "retrievers", _unique(list(self.retrievers), "retriever names"))
        object.__setattr__(self, "query_ids", _unique(list(self.query_ids), "query ids"))
        object.__setattr__(self, "queries", tuple(self.queries))
        object.__setattr__(self, "abstain", tuple(self.abstain))
        if len(self.retrievers) < 2:
            raise DataFormatError(f"routing needs at least two retrievers, got {list(self.retrievers)}")
        if len(self.queries) != len(self.query_ids):
            raise DataFormatError(f"{len(self.query_ids)} query ids but {len(self.queries)} query texts")
        unknown = [a for a in self.abstain if a not in self.retrievers]
        if unknown:
            raise DataFormatError(f"abstaining members {unknown} are not among the retrievers {list(self.retrievers)}")
        shape = (len(self.query_ids), len(self.retrievers))
        object.__setattr__(self, "quality", _frozen(self.quality, "quality", shape))
        object.__setattr__(self, "utility", _frozen(self.utility, "utility", shape))

    def __len__(self) -> int:
        return len(self.query_ids)

    def matrix(self, dimension: str) -> np.ndarray:
        """The [queries, retrievers] labels of one dimension, "quality" or "utility"."""
        if dimension not in DIMENSIONS:
            raise RouterankError(f"unknown label dimension {dimension!r}", fix=f"one of {DIMENSIONS}")
        return self.quality if dimension == "quality" else self.utility

    def column(self, name: str) -> int:
        """The column of a member; an unknown name is refused."""
        if name not in self.retrievers:
            raise RouterankError(f"no retriever {name!r} in the labels", fix=f"one of {list(self.retrievers)}")
        return self.retrievers.index(name)

    def best(self, dimension: str = "utility") -> list[str]:
        """Each query's best member: by `dimension`, ties by the other dimension, then by column order (so with R0
        first, a tie between not retrieving and retrieving goes to not retrieving)."""
        primary = self.matrix(dimension)
        secondary = self.matrix("quality" if dimension == "utility" else "utility")
        order = np.arange(len(self.retrievers))
        best = []
        for row_primary, row_secondary in zip(primary, secondary, strict=True):
            index = np.lexsort((order, -row_secondary, -row_primary))[0]
            best.append(self.retrievers[index])
        return best

    def mean(self, dimension: str = "utility") -> dict[str, float]:
        """Each member's mean label over the queries: how good it is as the one fixed choice."""
        return dict(zip(self.retrievers, self.matrix(dimension).mean(0).tolist(), strict=True))

    def subset(self, rows: Sequence[int] | np.ndarray) -> RoutingLabels:
        """The labels of the given rows only (query positions), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        return RoutingLabels(
            self.retrievers,
            tuple(self.query_ids[i] for i in rows),
            tuple(self.queries[i] for i in rows),
            self.quality[rows],
            self.utility[rows],
            self.abstain,
            self.meta,
        )

    def select(self, names: Sequence[str]) -> RoutingLabels:
        """Only the named members, in that order."""
        columns = [self.column(n) for n in names]
        abstain = tuple(a for a in self.abstain if a in names)
        return RoutingLabels(
            tuple(names),
            self.query_ids,
            self.queries,
            self.quality[:, columns],
            self.utility[:, columns],
            abstain,
            self.meta,
        )

    def with_retriever(
        self, name: str, quality: Sequence[float] | np.ndarray, utility: Sequence[float] | np.ndarray
    ) -> RoutingLabels:
        """These labels plus one member's columns (one value per query, in row order)."""
        if name in self.retrievers:
            raise RouterankError(f"retriever {name!r} already has labels", fix="pick a new name")
        q, u = np.asarray(quality, dtype=np.float32), np.asarray(utility, dtype=np.float32)
        if q.shape != (len(self),) or u.shape != (len(self),):
            raise DataFormatError(f"{name!r} needs one quality and one utility value per query ({len(self)})")
        return RoutingLabels(
            (*self.retrievers, name),
            self.query_ids,
            self.queries,
            np.column_stack([self.quality, q]),
            np.column_stack([self.utility, u]),
            self.abstain,
            self.meta,
        )

    @classmethod
    def concat(cls, parts: Sequence[RoutingLabels], meta: Mapping[str, Any] | None = None) -> RoutingLabels:
        """Label sets over the same retrievers stacked by rows (e.g. several datasets)."""
        first = parts[0]
        if any(p.retrievers != first.retrievers or p.abstain != first.abstain for p in parts):
            raise DataFormatError("label sets to concatenate must share retrievers and abstaining members")
        return cls(
            first.retrievers,
            tuple(q for p in parts for q in p.query_ids),
            tuple(t for p in parts for t in p.queries),
            np.concatenate([p.quality for p in parts]),
            np.concatenate([p.utility for p in parts]),
            first.abstain,
            dict(meta if meta is not None else first.meta),
        )

    def save(self, path: str | Path) -> Path:
        """Write the label folder (`labels.json` and `labels.safetensors`), replacing any there in one swap;
        returns the path."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            save_file(
                {"quality": np.ascontiguousarray(self.quality), "utility": np.ascontiguousarray(self.utility)},
                str(tmp / TENSOR_FILE),
            )
            record = {
                "format": FORMAT_VERSION,
                "retrievers": list(self.retrievers),
                "abstain": list(self.abstain),
                "query_ids": list(self.query_ids),
                "queries": list(self.queries),
                "meta": dict(self.meta),
            }
            (tmp / JSON_FILE).write_text(json.dumps(record, indent=1, ensure_ascii=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RoutingLabels:
        """The labels of a folder that `save` wrote, checked like new ones (format, shapes, finite values)."""
        path = Path(path)
        if not (path / JSON_FILE).exists() or not (path / TENSOR_FILE).exists():
            raise DataFormatError(
                f"not a routing label folder (needs {JSON_FILE} and {TENSOR_FILE})",
                path=path,
                fix="write one with RoutingLabels(...).save(folder)",
            )
        try:
            record = json.loads((path / JSON_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFormatError(f"{JSON_FILE} is not valid JSON: {exc}", path=path) from None
        if record.get("format") != FORMAT_VERSION:
            raise DataFormatError(f"label format {record.get('format')} != {FORMAT_VERSION}", path=path)
        tensors = load_file(str(path / TENSOR_FILE))
        try:
            return cls(
                tuple(record["retrievers"]),
                tuple(record["query_ids"]),
                tuple(record["queries"]),
                tensors["quality"],
                tensors["utility"],
                tuple(record.get("abstain", ())),
                record.get("meta", {}),
            )
        except KeyError as exc:
            raise DataFormatError(f"label folder lacks {exc}", path=path) from None
        except DataFormatError as exc:
            raise DataFormatError(exc.message, path=path, fix=exc.fix) from None


@dataclass(frozen=True)
class RouteScores:
    """What a set of routing choices earns on labelled queries.

    utility / quality: mean label of the chosen member. retrieval_rate: share of queries sent to a retrieving member.
    oracle_agreement: share of queries routed to their best member (by utility).
    """

    utility: float
    quality: float
    retrieval_rate: float
    oracle_agreement: float
    queries: int


def score_routes(choices: Mapping[str, str] | Sequence[str], labels: RoutingLabels) -> RouteScores:
    """Score per-query choices (a query id -> member mapping, or a list in the labels' row order)."""
    if isinstance(choices, Mapping):
        missing = [q for q in labels.query_ids if q not in choices]
        if missing:
            raise RouterankError(f"no routing choice for {len(missing)} labelled queries, e.g. {missing[:3]}")
        choices = [choices[q] for q in labels.query_ids]
    if len(choices) != len(labels):
        raise RouterankError(f"{len(choices)} choices for {len(labels)} labelled queries")
    columns = np.array([labels.column(c) for c in choices], dtype=np.int64)
    rows = np.arange(len(labels))
    best = labels.best("utility")
    return RouteScores(
        utility=float(labels.utility[rows, columns].mean()) if len(rows) else 0.0,
        quality=float(labels.quality[rows, columns].mean()) if len(rows) else 0.0,
        retrieval_rate=float(np.mean([c not in labels.abstain for c in choices])) if len(rows) else 0.0,
        oracle_agreement=float(np.mean([c == b for c, b in zip(choices, best, strict=True)])) if len(rows) else 0.0,
        queries=len(rows),
    )
