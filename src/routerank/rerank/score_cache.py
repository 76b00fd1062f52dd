"""On-disk score cache: (model, template, settings, query, doc) → score, so no pair is computed twice.

SQLite, one file per scorer configuration; each batch of new scores commits in one transaction, so a
killed run keeps everything it finished and never a half-written row.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from routerank.fsutil import cache_root


def pair_key(query: str, doc: str) -> str:
    h = hashlib.sha256()
    for part in (query, doc):
        encoded = part.encode("utf-8")
        h.update(len(encoded).to_bytes(8, "little"))
        h.update(encoded)
    return h.hexdigest()


class ScoreCache:
    def __init__(self, scorer_key: str, folder: str | Path | None = None):
        folder = Path(folder) if folder is not None else cache_root() / "scores"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{scorer_key}.sqlite"
        self._db = sqlite3.connect(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, score REAL NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, float]:
        found: dict[str, float] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = self._db.execute(f"SELECT key, score FROM scores WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            found.update(rows)
        return found

    def put_many(self, items: dict[str, float]) -> None:
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", list(items.items()))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        self._db.close()
