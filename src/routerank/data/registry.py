"""Find datasets under the data root (`ROUTERANK_DATA`, default ../shared/datasets beside the repo, else ./data)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from routerank.data.beir import load_beir, qrels_splits
from routerank.data.types import Dataset
from routerank.errors import DatasetNotFoundError

ENV_VAR = "ROUTERANK_DATA"


def _repo_root() -> Path | None:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists():
            return parent
    return None


def data_root() -> Path:
    """The folder datasets are looked up in: `ROUTERANK_DATA` if set, else the first shared/datasets found beside the
    repository or the working directory, else ./data."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    candidates = []
    repo = _repo_root()
    if repo is not None:
        candidates.append(repo.parent / "shared" / "datasets")
    candidates.append(Path.cwd().parent / "shared" / "datasets")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return Path.cwd() / "data"


def dataset_path(name: str, root: Path | None = None) -> Path:
    """A name under the data root, or a path to a BEIR folder."""
    as_path = Path(name).expanduser()
    if as_path.is_dir() and (as_path / "corpus.jsonl").exists():
        return as_path
    root = root or data_root()
    folder = root / name
    if not (folder / "corpus.jsonl").exists():
        known = [d.name for d in list_folders(root)]
        raise DatasetNotFoundError(
            f"no dataset {name!r} under {root}",
            fix=f"set {ENV_VAR} or pick one of {known}" if known else f"set {ENV_VAR} to a folder of BEIR datasets",
        )
    return folder


def list_folders(root: Path | None = None) -> list[Path]:
    """The BEIR folders (those holding a corpus.jsonl) directly under `root`, by default the data root; sorted."""
    root = root or data_root()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "corpus.jsonl").exists())


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset's counts as `list_datasets` reports them: documents, queries, and per split (judged queries, pairs)."""

    name: str
    path: Path
    docs: int
    queries: int
    splits: dict[str, tuple[int, int]]  # split → (judged queries, judged pairs)


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def summarize(folder: Path) -> DatasetSummary:
    """Counts read straight from the files; `load_dataset` does the full validation."""
    splits = {}
    for split, path in qrels_splits(folder).items():
        queries, pairs = set(), 0
        with open(path, encoding="utf-8", errors="replace") as handle:
            for i, line in enumerate(handle):
                cols = line.split()
                if not cols or (i == 0 and cols[0] == "query-id"):
                    continue
                queries.add(cols[0])
                pairs += 1
        splits[split] = (len(queries), pairs)
    return DatasetSummary(
        folder.name, folder, _count_lines(folder / "corpus.jsonl"), _count_lines(folder / "queries.jsonl"), splits
    )


def list_datasets(root: Path | None = None) -> list[DatasetSummary]:
    """A summary of every dataset under `root` (by default the data root), sorted, counted without loading them."""
    return [summarize(folder) for folder in list_folders(root)]


def load_dataset(name: str, *, splits=None, lenient: bool = False, on_drop=None) -> Dataset:
    """Load a dataset by name (under the data root) or by folder path, fully validated."""
    folder = dataset_path(name)
    return load_beir(folder, splits=splits, lenient=lenient, on_drop=on_drop, name=folder.name)
