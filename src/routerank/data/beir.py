"""Read and write BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), validating as we go."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

from routerank.data.types import Corpus, Dataset, Document, Qrels, Query, check_references
from routerank.errors import DataFormatError, DuplicateIdError, EmptyFileError, SplitNotFoundError
from routerank.fsutil import atomic_write

QRELS_HEADER = ("query-id", "corpus-id", "score")


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, decoded line) for non-blank lines; refuse bytes that are not UTF-8."""
    if not path.exists():
        raise DataFormatError("file not found", path=path, fix="check the dataset folder and ROUTERANK_DATA")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFormatError(
                    f"bytes are not UTF-8 (0x{raw[exc.start]:02x} at column {exc.start + 1})",
                    path=path,
                    line=number,
                    fix="re-encode the file as UTF-8",
                ) from None
            if number == 1:
                line = line.removeprefix("\ufeff")
            if line.strip():
                yield number, line


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, JSON object) per non-blank line; bad JSON, a non-object line or an empty file raises."""
    path = Path(path)
    empty = True
    for number, line in iter_lines(path):
        empty = False
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"malformed JSON: {exc.msg} at column {exc.colno}", path=path, line=number) from None
        if not isinstance(record, dict):
            raise DataFormatError(f"expected a JSON object, got {type(record).__name__}", path=path, line=number)
        yield number, record
    if empty:
        raise EmptyFileError("file is empty", path=path, fix="a BEIR file holds one JSON object per line")


def _record_id(record: dict[str, Any], path: Path, number: int) -> str:
    raw = record.get("_id")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise DataFormatError('record has no "_id"', path=path, line=number, fix='every line needs an "_id" field')
    if not isinstance(raw, (str, int)):
        raise DataFormatError(f'"_id" must be a string or integer, got {type(raw).__name__}', path=path, line=number)
    return str(raw)


def _text_field(record: dict[str, Any], key: str, path: Path, number: int) -> str:
    value = record.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(f'"{key}" must be a string, got {type(value).__name__}', path=path, line=number)
    return value


def _check_unique(seen: dict[str, int], record_id: str, path: Path, number: int) -> None:
    if record_id in seen:
        raise DuplicateIdError(
            f"duplicate id {record_id!r} (first seen on line {seen[record_id]})", path=path, line=number
        )
    seen[record_id] = number


def read_corpus(path: str | Path) -> Corpus:
    """The documents of a BEIR corpus.jsonl, in file order; duplicate ids and documents without title or text raise."""
    path = Path(path)
    seen: dict[str, int] = {}
    docs = []
    for number, record in read_jsonl(path):
        doc_id = _record_id(record, path, number)
        _check_unique(seen, doc_id, path, number)
        title = _text_field(record, "title", path, number)
        text = _text_field(record, "text", path, number)
        if not title.strip() and not text.strip():
            raise DataFormatError(
                f"document {doc_id!r} has neither title nor text", path=path, line=number, fix="drop it or fill it in"
            )
        metadata = record.get("metadata") or {}
        docs.append(Document(doc_id, text, title, metadata))
    return Corpus(docs)


def read_queries(path: str | Path) -> dict[str, Query]:
    """Query id → query from a BEIR queries.jsonl, with its optional `answers` (one string or a list) and metadata."""
    path = Path(path)
    seen: dict[str, int] = {}
    queries: dict[str, Query] = {}
    for number, record in read_jsonl(path):
        query_id = _record_id(record, path, number)
        _check_unique(seen, query_id, path, number)
        text = _text_field(record, "text", path, number)
        if not text.strip():
            raise DataFormatError(f"query {query_id!r} has no text", path=path, line=number)
        answers = record.get("answers") or ()
        if isinstance(answers, str):
            answers = (answers,)
        if not all(isinstance(a, str) for a in answers):
            raise DataFormatError(f'query {query_id!r}: "answers" must be a list of strings', path=path, line=number)
        queries[query_id] = Query(query_id, text, tuple(answers), record.get("metadata") or {})
    return queries


def read_qrels(path: str | Path) -> Qrels:
    """Read BEIR (`qid docid score`, with header) or TREC (`qid 0 docid score`) qrels."""
    path = Path(path)
    judgments: dict[str, dict[str, int]] = {}
    seen: dict[tuple[str, str], int] = {}
    for number, line in iter_lines(path):
        stripped = line.strip()
        cols = [c.strip() for c in stripped.split("\t")] if "\t" in stripped else stripped.split()
        if number == 1 and tuple(c.lower() for c in cols) == QRELS_HEADER:
            continue
        if len(cols) == 3:
            qid, did, rel = cols
        elif len(cols) == 4:
            qid, _, did, rel = cols
        else:
            raise DataFormatError(
                f"expected 3 columns (query-id corpus-id score) or 4 (TREC), got {len(cols)}", path=path, line=number
            )
        try:
            grade = int(float(rel))
        except ValueError:
            raise DataFormatError(f"relevance {rel!r} is not a number", path=path, line=number) from None
        if (qid, did) in seen:
            raise DuplicateIdError(
                f"duplicate judgment for query {qid!r}, doc {did!r} (first on line {seen[qid, did]})",
                path=path,
                line=number,
            )
        seen[qid, did] = number
        judgments.setdefault(qid, {})[did] = grade
    if not judgments:
        raise EmptyFileError("qrels file has no judgments", path=path)
    return Qrels(MappingProxyType(judgments))


def qrels_splits(folder: str | Path) -> dict[str, Path]:
    """Split name → qrels file (`qrels/<split>.tsv`) of a BEIR folder, by name; empty when it has no qrels folder."""
    qrels_dir = Path(folder) / "qrels"
    if not qrels_dir.is_dir():
        return {}
    return {p.stem: p for p in sorted(qrels_dir.glob("*.tsv"))}


def load_beir(
    folder: str | Path,
    *,
    splits: Iterable[str] | None = None,
    lenient: bool = False,
    name: str | None = None,
    on_drop=None,
) -> Dataset:
    """Load and validate a BEIR folder. `on_drop(split, pairs)` hears what lenient mode dropped."""
    folder = Path(folder)
    corpus = read_corpus(folder / "corpus.jsonl")
    queries = read_queries(folder / "queries.jsonl")
    available = qrels_splits(folder)
    wanted = list(available) if splits is None else list(splits)
    qrels: dict[str, Qrels] = {}
    for split in wanted:
        if split not in available:
            raise SplitNotFoundError(
                f"no qrels for split {split!r}", path=folder / "qrels", fix=f"choose one of {sorted(available)}"
            )
        raw = read_qrels(available[split])
        clean, dropped = check_references(raw, corpus, queries, path=available[split], lenient=lenient)
        if dropped and on_drop is not None:
            on_drop(split, dropped)
        qrels[split] = clean
    return Dataset(name or folder.name, corpus, MappingProxyType(queries), MappingProxyType(qrels), folder)


def write_beir(dataset: Dataset, folder: str | Path) -> None:
    """Write a dataset as a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), each file atomically."""
    folder = Path(folder)
    with atomic_write(folder / "corpus.jsonl") as out:
        for doc in dataset.corpus.documents:
            record: dict[str, Any] = {"_id": doc.id, "title": doc.title, "text": doc.text}
            if doc.metadata:
                record["metadata"] = dict(doc.metadata)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    with atomic_write(folder / "queries.jsonl") as out:
        for query in dataset.queries.values():
            record = {"_id": query.id, "text": query.text}
            if query.answers:
                record["answers"] = list(query.answers)
            if query.metadata:
                record["metadata"] = dict(query.metadata)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    for split, qrels in dataset.qrels.items():
        with atomic_write(folder / "qrels" / f"{split}.tsv") as out:
            out.write("\t".join(QRELS_HEADER) + "\n")
            for qid, docs in qrels.judgments.items():
                for did, rel in docs.items():
                    out.write(f"{qid}\t{did}\t{rel}\n")
