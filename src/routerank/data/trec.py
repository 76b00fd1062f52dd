"""TREC run files (`qid Q0 docid rank score tag`) and TREC qrels, interoperable with trec_eval and ir_measures."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from routerank.data.beir import iter_lines
from routerank.data.types import Qrels, Ranking, Run
from routerank.errors import DataFormatError, DuplicateIdError, EmptyFileError
from routerank.fsutil import atomic_write


def write_run(run: Run, path: str | Path, tag: str | None = None) -> None:
    """Write a run as a TREC run file, atomically, tagged `tag`, else the run's name, else "routerank".

    A tag with whitespace raises ValueError: it would break the file's columns.
    """
    tag = tag or run.name or "routerank"
    if any(ch.isspace() for ch in tag):
        raise ValueError(f"run tag {tag!r} must not contain whitespace")
    with atomic_write(path) as out:
        for qid, ranking in run.rankings.items():
            for doc in ranking:
                out.write(f"{qid} Q0 {doc.doc_id} {doc.rank} {doc.score:.6f} {tag}\n")


def read_run(path: str | Path) -> Run:
    """A TREC run file as a `Run`, each ranking re-sorted by score (ties by doc id) and named by the file's tag."""
    path = Path(path)
    scores: dict[str, dict[str, float]] = {}
    tag = None
    for number, line in iter_lines(path):
        cols = line.split()
        if len(cols) != 6:
            raise DataFormatError(
                f"expected 6 columns (qid Q0 docid rank score tag), got {len(cols)}", path=path, line=number
            )
        qid, _, did, _, score, tag = cols
        try:
            value = float(score)
        except ValueError:
            raise DataFormatError(f"score {score!r} is not a number", path=path, line=number) from None
        docs = scores.setdefault(qid, {})
        if did in docs:
            raise DuplicateIdError(f"doc {did!r} appears twice for query {qid!r}", path=path, line=number)
        docs[did] = value
    if not scores:
        raise EmptyFileError("run file is empty", path=path)
    rankings = {qid: Ranking.from_scores(docs) for qid, docs in scores.items()}
    return Run(MappingProxyType(rankings), tag or path.stem)


def write_trec_qrels(qrels: Qrels, path: str | Path) -> None:
    """Write qrels in TREC format (`qid 0 docid relevance`), atomically."""
    with atomic_write(path) as out:
        for qid, docs in qrels.judgments.items():
            for did, rel in docs.items():
                out.write(f"{qid} 0 {did} {rel}\n")
