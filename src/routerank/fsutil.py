"""Atomic file and folder writes (a killed process never leaves a half-written file that loads), and stable keys."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Fill a temp folder beside `path`, then swap it into place in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, trash / "old")
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cache_root() -> Path:
    """`ROUTERANK_CACHE`, else `$XDG_CACHE_HOME/routerank`, else `~/.cache/routerank`."""
    configured = os.environ.get("ROUTERANK_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "routerank"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's bytes, read in chunks of `chunk` bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_digest(folder: str | Path) -> str:
    """16 hex digits of a sha256 over the sha256 of each `*.safetensors` file in `folder`, in name order: the
    content of a model's weights, whatever the folder is called."""
    weights = sorted(Path(folder).glob("*.safetensors"))
    return hashlib.sha256("".join(sha256_file(w) for w in weights).encode()).hexdigest()[:16]


def safe_name(text: str, extra: str = "") -> str:
    """`text` as a file name: runs of characters other than letters, digits, `_.+-` (and `extra`) become `_`."""

    return re.sub(rf"[^A-Za-z0-9_.+{re.escape(extra)}-]+", "_", text)


def without_later_defaults(record: Mapping[str, Any], added_later: Mapping[str, Any]) -> dict[str, Any]:
    """`record` less the settings that were added after work had been keyed by it, while each keeps the value that
    reproduces the old behaviour: digests and config records made before a setting existed still match."""
    return {k: v for k, v in record.items() if k not in added_later or v != added_later[k]}
