"""Documents made of passages: which passages form each document, in order, and which passages are tables.

A BEIR corpus is flat, but many collections are documents cut into passages: TAT-QA's report pages are one table and
its paragraphs, a court case is many pages of text. A `DocumentMap` keeps that grouping beside the corpus, so one
corpus can be searched at either level: `document_corpus` builds the documents' texts, `lift_qrels` and `lift_run`
move judgments and rankings from passages up to their documents (a document is as relevant as its best passage, and
scores as high as its best passage: MaxP), and `passage_corpus` rewrites table passages for a text model.

On disk the map is an optional `documents.tsv` beside corpus.jsonl, one line per passage under the header
`document-id  passage-id  position` (tab-separated), with an optional fourth column `kind` (text or table) where
detection would guess wrong. Positions order a document's passages; they need not start at 0 or be consecutive.
Without that file, `DocumentMap.singletons` treats every passage as its own document, and `chunk_corpus` cuts long
documents into passages of about a given number of words.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from routerank.data.beir import iter_lines
from routerank.data.tables import STYLES, linearise, looks_like_table
from routerank.data.types import Corpus, Dataset, Document, Qrels, Ranking, Run
from routerank.errors import DataFormatError, DuplicateIdError, EmptyFileError, RouterankError, UnknownIdError

KINDS = ("text", "table")
FILENAME = "documents.tsv"
HEADER = ("document-id", "passage-id", "position")
_HEADER_TEXT = "document-id<TAB>passage-id<TAB>position"
_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class DocumentMap:
    """Which passages form each document, in position order, and each passage's kind ("text" or "table").

    parts: document id → its passage ids in position order; documents keep the order given (for a file, the order
    in which each document first appears). kinds: passage id → "text" or "table", for exactly the passages in
    `parts`. A passage belongs to one document only; every document has at least one passage."""

    parts: Mapping[str, tuple[str, ...]]
    kinds: Mapping[str, str]
    _owner: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _digest: list[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = MappingProxyType({doc: tuple(passages) for doc, passages in self.parts.items()})
        kinds = MappingProxyType(dict(self.kinds))
        owner: dict[str, str] = {}
        for doc, passages in parts.items():
            if not passages:
                raise RouterankError(f"document {doc!r} has no passages", fix="give every document at least one")
            for passage in passages:
                if passage in owner:
                    raise DuplicateIdError(
                        f"passage {passage!r} is in two documents ({owner[passage]!r} and {doc!r})",
                        fix="a passage belongs to one document only",
                    )
                owner[passage] = doc
        unkinded = [p for p in owner if kinds.get(p) not in KINDS]
        if unkinded:
            raise RouterankError(
                f"{len(unkinded)} passages have no kind or an unknown one, e.g. {unkinded[0]!r}: "
                f"{kinds.get(unkinded[0])!r}",
                fix=f"give every passage one of {', '.join(KINDS)}",
            )
        strays = [p for p in kinds if p not in owner]
        if strays:
            raise RouterankError(
                f"{len(strays)} passages have a kind but no document, e.g. {strays[0]!r}",
                fix="give kinds only for the passages of `parts`",
            )
        object.__setattr__(self, "parts", parts)
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_digest", [])

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __len__(self) -> int:
        """The number of documents."""
        return len(self.parts)

    @property
    def document_ids(self) -> list[str]:
        """The document ids, in map order."""
        return list(self.parts)

    def document_of(self, passage_id: str) -> str:
        """The document a passage belongs to; a passage of no document raises `UnknownIdError`."""
        try:
            return self._owner[passage_id]
        except KeyError:
            raise UnknownIdError(
                f"passage {passage_id!r} belongs to no document of this map ({len(self)} documents)",
                fix="build the map from the corpus the passage ids come from",
            ) from None

    def passages(self, document_id: str) -> tuple[str, ...]:
        """A document's passage ids in position order; an unknown document raises `UnknownIdError`."""
        try:
            return self.parts[document_id]
        except KeyError:
            raise UnknownIdError(
                f"no document {document_id!r} in this map ({len(self)} documents)",
                fix="use an id from `document_ids`",
            ) from None

    @property
    def fingerprint(self) -> str:
        """sha256 over the documents in order, their passages in order and each passage's kind: a cache key."""
        if not self._digest:
            h = hashlib.sha256()
            for doc, passages in self.parts.items():
                for part in (doc, str(len(passages)), *(f"{p}\t{self.kinds[p]}" for p in passages)):
                    encoded = part.encode("utf-8")
                    h.update(len(encoded).to_bytes(8, "little"))
                    h.update(encoded)
            self._digest.append(h.hexdigest())
        return self._digest[0]

    def lift_qrels(self, qrels: Qrels) -> Qrels:
        """Document-level qrels: a document's grade is the highest grade of its judged passages. Every query stays,
        so each query judged relevant at passage level has a relevant document."""
        lifted: dict[str, dict[str, int]] = {}
        for query_id, judged in qrels.judgments.items():
            grades: dict[str, int] = {}
            for passage_id, grade in judged.items():
                doc = self.document_of(passage_id)
                grades[doc] = max(grade, grades.get(doc, grade))
            lifted[query_id] = grades
        return Qrels(MappingProxyType(lifted))

    def lift_run(self, run: Run, k: int | None = None) -> Run:
        """A document run by MaxP: a document scores its best passage's score. Documents rank by that score, ties
        by where their first passage appears in the passage ranking; `k` keeps each query's top k documents."""
        rankings = {}
        for query_id, ranking in run.rankings.items():
            best: dict[str, float] = {}
            for passage_id, score in zip(ranking.doc_ids, ranking.scores, strict=True):
                doc = self.document_of(passage_id)
                if doc not in best or score > best[doc]:
                    best[doc] = score
            first = {doc: i for i, doc in enumerate(best)}
            ordered = sorted(best, key=lambda doc: (-best[doc], first[doc]))[:k]
            rankings[query_id] = Ranking(tuple(ordered), tuple(float(best[doc]) for doc in ordered))
        return Run(rankings, run.name)

    def document_corpus(self, corpus: Corpus, table_style: str = "pipe", separator: str = "\n\n") -> Corpus:
        """The documents as a corpus, in map order: each one's text is its passages' texts in order, joined by
        `separator` (tables written in `table_style`, one of `tables.STYLES`), its title the first non-empty title of
        its passages, and its metadata {"passages": [passage ids]}."""
        _check_style(table_style)
        docs = []
        for doc_id, passage_ids in self.parts.items():
            members = [self._passage(corpus, doc_id, p) for p in passage_ids]
            texts = [self._shown(member, table_style) for member in members]
            title = next((m.title for m in members if m.title.strip()), "")
            docs.append(Document(doc_id, separator.join(t for t in texts if t), title, {"passages": list(passage_ids)}))
        return Corpus(docs)

    def passage_corpus(self, corpus: Corpus, table_style: str = "pipe") -> Corpus:
        """The passages with each table written in `table_style`; `pipe` returns `corpus` itself. Passages this map
        does not list keep their text unless `passage_kind` finds a table."""
        _check_style(table_style)
        if table_style == "pipe":
            return corpus
        return Corpus(
            Document(d.id, self._shown(d, table_style), d.title, d.metadata) if d.text else d for d in corpus.documents
        )

    @classmethod
    def singletons(cls, corpus: Corpus) -> DocumentMap:
        """Every passage its own document, under its own id: the map of a corpus without documents.tsv."""
        return cls({d.id: (d.id,) for d in corpus.documents}, {d.id: passage_kind(d) for d in corpus.documents})

    def _shown(self, passage: Document, table_style: str) -> str:
        kind = self.kinds.get(passage.id) or passage_kind(passage)
        return linearise(passage.text, table_style) if kind == "table" else passage.text

    @staticmethod
    def _passage(corpus: Corpus, doc_id: str, passage_id: str) -> Document:
        try:
            return corpus[passage_id]
        except KeyError:
            raise UnknownIdError(
                f"passage {passage_id!r} of document {doc_id!r} is not in the corpus ({len(corpus)} passages)",
                fix="use the corpus the document map was read with",
            ) from None


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise RouterankError(f"unknown table style {style!r}", fix=f"choose one of {', '.join(STYLES)}")


def passage_kind(document: Document) -> str:
    """The passage's kind, "table" or "text": its metadata `kind` when that is one of the two, else "table" when its
    text reads as a pipe table (two or more rows of " | "-joined cells, all of one width; `tables.looks_like_table`)."""
    declared = document.metadata.get("kind") if isinstance(document.metadata, Mapping) else None
    if declared in KINDS:
        return declared
    return "table" if looks_like_table(document.text) else "text"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.rstrip("\r\n").split("\t")]


def _shorten(line: str, limit: int = 80) -> str:
    line = line.rstrip("\r\n")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _read_header(path: Path, first: tuple[int, str] | None) -> int:
    """The number of columns the header announces (3, or 4 with `kind`)."""
    fix = f"start the file with the line {_HEADER_TEXT} (and <TAB>kind for a 4th column)"
    if first is None:
        raise EmptyFileError("file is empty", path=path, fix=fix)
    number, line = first
    header = tuple(cell.lower() for cell in _cells(line))
    if header in (HEADER, (*HEADER, "kind")):
        return len(header)
    if len(header) >= 3 and _INTEGER.match(header[2]):
        raise DataFormatError(f"the header line is missing, found {_shorten(line)!r}", path=path, line=number, fix=fix)
    raise DataFormatError(f"wrong header {_shorten(line)!r}", path=path, line=number, fix=fix)


def _read_position(text: str, path: Path, number: int) -> int:
    if not _INTEGER.match(text):
        raise DataFormatError(
            f"position {text!r} is not a whole number", path=path, line=number, fix="number each passage 0, 1, 2, …"
        )
    position = int(text)
    if position < 0:
        raise DataFormatError(
            f"position {position} is negative", path=path, line=number, fix="number each passage 0, 1, 2, …"
        )
    return position


def _read_kind(text: str, path: Path, number: int) -> str | None:
    if not text:
        return None
    if text.lower() not in KINDS:
        raise DataFormatError(
            f"unknown kind {text!r}", path=path, line=number, fix=f"use {' or '.join(KINDS)}, or leave it empty"
        )
    return text.lower()


def read_documents(path: str | Path, corpus: Corpus) -> DocumentMap:
    """The document map of a documents.tsv (see the module docstring for its format), checked against `corpus`.

    Documents come in the order of their first line, passages by position. A kind column, where given, overrides
    `passage_kind`. Passages of the corpus that no line lists are not dropped: each becomes a document of its own,
    under its own id, after the listed documents and in corpus order. A bad line raises a `DataFormatError` (or its
    `DuplicateIdError`/`UnknownIdError` kin) naming the file, the line and the fix; a file that lists no passage
    raises `EmptyFileError`."""
    path = Path(path)
    lines = iter_lines(path)
    columns = _read_header(path, next(lines, None))
    slots: dict[str, dict[int, tuple[str, int]]] = {}  # document → position → (passage, line)
    listed: dict[str, tuple[int, str]] = {}  # passage → (line, document)
    first_line: dict[str, int] = {}
    declared: dict[str, str] = {}
    for number, line in lines:
        cells = _cells(line)
        if len(cells) != columns:
            raise DataFormatError(
                f"expected {columns} tab-separated columns, got {len(cells)}: {_shorten(line)!r}",
                path=path,
                line=number,
                fix=f"one passage per line: {_HEADER_TEXT}" + ("<TAB>kind" if columns == 4 else ""),
            )
        doc_id, passage_id = cells[0], cells[1]
        for name, value in (("document-id", doc_id), ("passage-id", passage_id)):
            if not value:
                raise DataFormatError(f"empty {name}", path=path, line=number, fix=f"fill in the {name} column")
        position = _read_position(cells[2], path, number)
        if passage_id in listed:
            earlier, owner = listed[passage_id]
            raise DuplicateIdError(
                f"passage {passage_id!r} is listed twice (first on line {earlier}, in document {owner!r})",
                path=path,
                line=number,
                fix="list each passage once, in the one document it belongs to",
            )
        if passage_id not in corpus:
            raise UnknownIdError(
                f"passage {passage_id!r} is not in the corpus ({len(corpus)} passages)",
                path=path,
                line=number,
                fix="correct the id or drop the line: documents.tsv lists passages of the corpus.jsonl beside it",
            )
        taken = slots.setdefault(doc_id, {})
        if position in taken:
            other, earlier = taken[position]
            raise DuplicateIdError(
                f"document {doc_id!r} has two passages at position {position} ({other!r} on line {earlier})",
                path=path,
                line=number,
                fix="give each passage of a document its own position",
            )
        taken[position] = (passage_id, number)
        listed[passage_id] = (number, doc_id)
        first_line.setdefault(doc_id, number)
        kind = _read_kind(cells[3], path, number) if columns == 4 else None
        if kind is not None:
            declared[passage_id] = kind
    if not slots:
        raise EmptyFileError(
            "the file lists no passages, only its header", path=path, fix=f"add one line per passage: {_HEADER_TEXT}"
        )
    parts = {doc: tuple(passage for _, (passage, _) in sorted(taken.items())) for doc, taken in slots.items()}
    for doc in corpus.documents:
        if doc.id in listed:
            continue
        if doc.id in parts:
            raise DuplicateIdError(
                f"passage {doc.id!r} is listed nowhere, so it becomes a document of its own, but a document of that "
                f"id exists",
                path=path,
                line=first_line[doc.id],
                fix="list that passage in a document, or rename the document",
            )
        parts[doc.id] = (doc.id,)
    kinds = {p: declared.get(p) or passage_kind(corpus[p]) for passages in parts.values() for p in passages}
    return DocumentMap(parts, kinds)


def load_documents(dataset: Dataset) -> DocumentMap | None:
    """The map in `documents.tsv` beside a dataset's corpus, read with `read_documents`; None when there is none."""
    if dataset.path is None:
        return None
    path = Path(dataset.path) / FILENAME
    return read_documents(path, dataset.corpus) if path.is_file() else None


def chunk_corpus(corpus: Corpus, words: int = 200, max_chunks: int | None = None) -> tuple[Corpus, DocumentMap]:
    """Long documents cut into passages of about `words` words, and the map back to the documents.

    A document of n words becomes ceil(n / words) passages whose lengths differ by one word at most, with ids
    "<doc id>#0", "#1", …, the document's title, kind "text", and metadata {"document": id, "chunk": i}; each passage
    keeps the text's own spacing and line breaks. `max_chunks` keeps only each document's first chunks. A document
    without text gives one empty-text passage with its title."""
    if words < 1:
        raise RouterankError(f"chunks of {words} words", fix="pass words=1 or more")
    if max_chunks is not None and max_chunks < 1:
        raise RouterankError(f"max_chunks={max_chunks}", fix="pass max_chunks=1 or more, or None for all")
    passages: list[Document] = []
    parts: dict[str, tuple[str, ...]] = {}
    for doc in corpus.documents:
        chunks = _chunks(doc.text, words)[:max_chunks]
        ids = tuple(f"{doc.id}#{i}" for i in range(len(chunks)))
        passages.extend(
            Document(pid, text, doc.title, {"document": doc.id, "chunk": i})
            for i, (pid, text) in enumerate(zip(ids, chunks, strict=True))
        )
        parts[doc.id] = ids
    return Corpus(passages), DocumentMap(parts, {p.id: "text" for p in passages})


def _chunks(text: str, words: int) -> list[str]:
    spans = [match.span() for match in re.finditer(r"\S+", text)]
    if not spans:
        return [""]
    count = -(-len(spans) // words)
    bounds = [i * len(spans) // count for i in range(count + 1)]
    return [text[spans[start][0] : spans[end - 1][1]] for start, end in zip(bounds, bounds[1:], strict=False)]
