"""Split long documents into overlapping word windows, each carrying the document's title."""

from __future__ import annotations

from dataclasses import dataclass

from routerank.data.types import Document
from routerank.errors import SpecError

DEFAULT_SIZE = 128
DEFAULT_STRIDE = 96


@dataclass(frozen=True, slots=True)
class Passage:
    """One word window of a document: the document's id, the window's index, its text, the document's title, and
    the offset of its first word in the body."""

    doc_id: str
    index: int
    text: str
    title: str = ""
    start: int = 0  # offset of the first word in the document body

    @property
    def full_text(self) -> str:
        """Title and window joined, the text a scorer sees."""
        if self.title and self.text:
            return f"{self.title} {self.text}"
        return self.title or self.text


def check_window(size: int, stride: int) -> None:
    """A SpecError unless size >= 1 and 1 <= stride <= size."""
    if size < 1:
        raise SpecError(f"passage size must be at least 1 word, got {size}", fix="e.g. size=128")
    if not 1 <= stride <= size:
        raise SpecError(
            f"passage stride must be between 1 and the size ({size}), got {stride}",
            fix="stride = size - overlap, e.g. size=128 stride=96",
        )


def window_starts(num_words: int, size: int, stride: int) -> list[int]:
    """Window offsets; the last window is the first one that reaches the end, so no window is a suffix of another."""
    starts = [0]
    while starts[-1] + size < num_words:
        starts.append(starts[-1] + stride)
    return starts


def split_passages(
    document: Document | str, size: int = DEFAULT_SIZE, stride: int = DEFAULT_STRIDE, *, doc_id: str = "0"
) -> list[Passage]:
    """`size`-word windows every `stride` words (overlap = size - stride) over the body.

    A body of at most `size` words is one passage. A document with a title but no body is one passage of
    its title; a document with neither has none.
    """
    check_window(size, stride)
    doc = document if isinstance(document, Document) else Document(doc_id, document)
    words = doc.text.split()
    if not words:
        return [Passage(doc.id, 0, "", doc.title.strip())] if doc.title.strip() else []
    return [
        Passage(doc.id, i, " ".join(words[start : start + size]), doc.title.strip(), start)
        for i, start in enumerate(window_starts(len(words), size, stride))
    ]
