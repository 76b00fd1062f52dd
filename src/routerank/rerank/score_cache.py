"""On-disk score cache: (model, template, settings, query, doc) → score, so no pair is computed twice.

SQLite, one file per scorer configuration; each batch of new scores commits in one transaction, so a
killed run keeps everything it finished and never a half-written row. One cache may be used from several threads
(the server scores in worker threads): its connection is shared under a lock.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from routerank.fsutil import cache_root


def pair_key(query: str, doc: str) -> str:
    """A sha256 hex digest of the (query, document) pair, each part length-prefixed so no two pairs share a key."""
    h = hashlib.sha256()
    for part in (query, doc):
        encoded = part.encode("utf-8")
        h.update(len(encoded).to_bytes(8, "little"))
        h.update(encoded)
    return h.hexdigest()


class ScoreCache:
    """One scorer configuration's scores in a SQLite file, `<folder>/<scorer_key>.sqlite` (default folder
    `<cache>/scores`), safe to share between threads."""

    def __init__(self, scorer_key: str, folder: str | Path | None = None):
        folder = Path(folder) if folder is not None else cache_root() / "scores"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{scorer_key}.sqlite"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        """The stored score of each key that has one; keys not yet scored are absent."""
        found: dict[str, float] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                query = f"SELECT key, score FROM scores WHERE key IN ({','.join('?' * len(chunk))})"
                found.update(self._db.execute(query, chunk).fetchall())
        return found

    def put_many(self, items: dict[str, float]) -> None:
        """Store the scores in one transaction, replacing any under the same keys."""
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", list(items.items()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
