"""On-disk generation cache: one SQLite file per generator configuration, one row per (query, context).

The file name carries the generator key (model fingerprint, template and version, decoding settings); a row key
hashes the query text and the ordered context documents (id and a hash of the text). Each finished batch
commits in one transaction, so a killed run keeps every batch it finished and a rerun generates only the rest.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from routerank.data.types import Document
from routerank.fsutil import cache_root


@dataclass(frozen=True)
class CachedGeneration:
    """One stored generation: the raw decoded text, why decoding stopped, and the prompt's length in tokens."""

    raw: str
    stopped_by: str
    prompt_tokens: int


def generation_key(query: str, documents: Sequence[Document]) -> str:
    """The row key of a query and its context: a hash of the query text and each document's id and text, in order."""
    h = hashlib.sha256()
    parts = [query]
    for doc in documents:
        parts += [doc.id, hashlib.sha256(doc.full_text.encode("utf-8")).hexdigest()]
    for part in parts:
        encoded = part.encode("utf-8")
        h.update(len(encoded).to_bytes(8, "little"))
        h.update(encoded)
    return h.hexdigest()


class GenerationCache:
    """Row key → the raw generation, why it stopped, and the prompt's length in tokens."""

    def __init__(self, generator_key: str, folder: str | Path | None = None):
        folder = Path(folder) if folder is not None else cache_root() / "generations"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{generator_key}.sqlite"
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS generations "
            "(key TEXT PRIMARY KEY, raw TEXT NOT NULL, stopped_by TEXT NOT NULL, prompt_tokens INTEGER NOT NULL)"
        )
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedGeneration]:
        """The stored generations of those keys the cache holds, by key; keys it lacks are left out."""
        found: dict[str, CachedGeneration] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, raw, stopped_by, prompt_tokens FROM generations WHERE key IN ({marks})", chunk
            )
            found.update((key, CachedGeneration(raw, stop, tokens)) for key, raw, stop, tokens in rows)
        return found

    def put_many(self, items: dict[str, CachedGeneration]) -> None:
        """Store generations by row key, replacing any already there, in one committed transaction."""
        rows = [(key, g.raw, g.stopped_by, g.prompt_tokens) for key, g in items.items()]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?)", rows)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        """Close the cache's SQLite connection."""
        self._db.close()
