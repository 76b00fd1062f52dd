"""On-disk indexes: atomic writes, a manifest with checksums, and a cache keyed by corpus and config.

A corrupt index (files missing or altered) or a stale one (built for another corpus or config)
is detected on load. The cache rebuilds it; an explicit `load()` refuses it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from routerank.data.types import Corpus
from routerank.errors import CorruptIndexError, StaleIndexError
from routerank.fsutil import atomic_dir, cache_root, sha256_file
from routerank.retrieve.registry import retriever_class
from routerank.scale import ShardStore

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def index_key(kind: str, config: dict[str, Any], fingerprint: str) -> str:
    """16 hex digits that name an index in the cache: a hash of its kind, config, corpus fingerprint and the
    index format version."""
    blob = json.dumps({"kind": kind, "config": config, "corpus": fingerprint, "v": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_index(retriever, path: str | Path) -> Path:
    """Write an indexed retriever's files and a manifest with their checksums to `path`, atomically; the path."""
    if retriever.corpus_fingerprint is None:
        raise CorruptIndexError("nothing to save: call index() first", path=path)
    path = Path(path)
    with atomic_dir(path) as tmp:
        retriever._write_files(tmp)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "format": FORMAT_VERSION,
            "kind": retriever.kind,
            "config": retriever.config(),
            "corpus_fingerprint": retriever.corpus_fingerprint,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    """An index folder's manifest; a missing or unreadable one raises `CorruptIndexError`, another format version
    `StaleIndexError`."""
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise CorruptIndexError(
            "index has no manifest.json (incomplete or not an index)",
            path=path,
            fix="rebuild it with `routerank index`",
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CorruptIndexError("manifest.json is not valid JSON", path=manifest_path) from None
    if manifest.get("format") != FORMAT_VERSION:
        raise StaleIndexError(
            f"index format {manifest.get('format')} != {FORMAT_VERSION}",
            path=path,
            fix="rebuild it with `routerank index`",
        )
    return manifest


def verify_files(path: Path, manifest: dict[str, Any]) -> None:
    """Check every file the manifest lists is present with its recorded checksum; raise `CorruptIndexError` if not."""
    for name, digest in manifest.get("files", {}).items():
        file = path / name
        if not file.exists():
            raise CorruptIndexError(f"index file {name} is missing", path=path, fix="rebuild the index")
        if sha256_file(file) != digest:
            raise CorruptIndexError(f"index file {name} fails its checksum", path=path, fix="rebuild the index")


def load_index(path: str | Path, expected=None, corpus: Corpus | None = None, config: dict | None = None):
    """The retriever saved at `path`, with its index read back and verified. It raises `StaleIndexError` if the
    index is not an `expected` retriever or was built for another `corpus` or `config` (each checked when given)."""
    path = Path(path)
    manifest = read_manifest(path)
    cls = retriever_class(manifest["kind"], path=path)
    if expected is not None and not issubclass(cls, expected):
        raise StaleIndexError(f"index holds a {manifest['kind']!r} retriever, not {expected.kind!r}", path=path)
    if corpus is not None and manifest["corpus_fingerprint"] != corpus.fingerprint:
        raise StaleIndexError("index was built for a different corpus", path=path, fix="rebuild the index")
    if config is not None and manifest["config"] != config:
        raise StaleIndexError(f"index config {manifest['config']} != requested {config}", path=path)
    verify_files(path, manifest)
    retriever = cls.from_config(manifest["config"])
    retriever._read_files(path, manifest)
    retriever._fingerprint = manifest["corpus_fingerprint"]
    return retriever


def cached_index(retriever, corpus: Corpus, cache_dir: str | Path | None = None, rebuild: bool = False, executor=None):
    """Load `retriever`'s index for `corpus` from the cache, or build and store it.

    A shardable retriever (dense) builds through `executor` (in-process by default, or Ray), keeping finished
    shards under `<index cache>/.shards/` until the index is saved, so a killed build resumes where it stopped.
    """
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "indexes"
    path = root / f"{retriever.kind}-{index_key(retriever.kind, retriever.config(), corpus.fingerprint)}"
    if path.exists() and not rebuild:
        try:
            return load_index(path, expected=type(retriever), corpus=corpus, config=retriever.config())
        except CorruptIndexError as exc:
            print(f"routerank: rebuilding index: {exc}", file=sys.stderr)
    if getattr(retriever, "shardable", False):
        store = ShardStore.for_job("index", {"index": path.name}, root=root / ".shards" / path.name)
        retriever.index(corpus, executor=executor, store=store)
        save_index(retriever, path)
        store.clear()
    else:
        retriever.index(corpus)
        save_index(retriever, path)
    return retriever
