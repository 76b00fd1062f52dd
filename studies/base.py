"""What every study repeats, written once: the `StudyConfig` digest that keys a work dir, and the `Study` base with
its datasets, seeded test samples, cached runs, JSON records and dev-chosen interpolation weights."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from routerank.data.registry import load_dataset
from routerank.data.trec import read_run, write_run
from routerank.data.types import Dataset, Qrels, Query, Run, sample_queries
from routerank.fsutil import atomic_write, cache_root, without_later_defaults
from routerank.rerank.interpolate import alpha_curve


def short_hash(data: Any, length: int = 10) -> str:
    """The first `length` hex digits of the SHA-256 of `data` as sorted JSON (what is not JSON is its str)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]


def config_digest(
    record: Mapping[str, Any],
    *,
    unkeyed: tuple[str, ...] = (),
    added_later: Mapping[str, Any] = MappingProxyType({}),
    extra: Mapping[str, Any] = MappingProxyType({}),
) -> str:
    """The digest of a config's fields less `unkeyed` ones. A field in `added_later` (added after work dirs had been
    made) counts only away from the value that reproduces the old behaviour, so a work dir made before it existed
    is still found; `extra` is keyed beside the fields (e.g. a template's version)."""
    keyed = without_later_defaults({k: v for k, v in record.items() if k not in unkeyed}, added_later)
    return short_hash({**keyed, **extra})


class StudyConfig:
    """The base of a study's frozen config dataclass: `digest()` keys its work dir. `UNKEYED`: fields that do not
    change results (where it runs, what it reports); `ADDED_LATER`: fields added after work dirs existed, at the
    value that reproduces the old behaviour (`config_digest`)."""

    UNKEYED: ClassVar[tuple[str, ...]] = ()
    ADDED_LATER: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def digest_extra(self) -> dict[str, Any]:
        """What the digest keys beyond the fields (nothing, unless a study says otherwise)."""
        return {}

    def digest(self) -> str:
        """Ten hex digits that key the work dir."""
        return config_digest(
            asdict(self),  # type: ignore[call-overload]  # every StudyConfig is a dataclass
            unkeyed=self.UNKEYED,
            added_later=self.ADDED_LATER,
            extra=self.digest_extra(),
        )


@dataclass(frozen=True)
class AlphaChoice:
    """An interpolation weight chosen on dev queries: the best alpha on the grid, and the measure at every alpha."""

    alpha: float
    curve: list[float]

    def rounded_curve(self) -> list[float]:
        """The curve to 5 places, as the records keep it."""
        return [round(v, 5) for v in self.curve]


class Study:
    """A staged study over one work dir (default `<cache>/<FOLDER>/<work_name()>`): datasets loaded once, the
    seeded test sample of each (`config.test_queries`, `config.seed`), cached runs and JSON records."""

    FOLDER: ClassVar[str] = "study"

    def __init__(self, config: Any, work_dir: str | Path | None = None, *, progress: bool = True):
        self.config = config
        self.progress = progress
        self.work = Path(work_dir) if work_dir else cache_root() / self.FOLDER / self.work_name()
        self._datasets: dict[str, Dataset] = {}

    def work_name(self) -> str:
        """The default work dir's name: `<profile>-<config digest>`."""
        return f"{self.config.profile}-{self.config.digest()}"

    # data ------------------------------------------------------------------------------------------------

    def dataset(self, name: str) -> Dataset:
        """The dataset, loaded on first use and kept."""
        if name not in self._datasets:
            self._datasets[name] = load_dataset(name)
        return self._datasets[name]

    def test_sample(self, name: str) -> int | None:
        """How many of `name`'s test queries the study samples (None: all)."""
        return self.config.test_queries

    def test_queries(self, name: str) -> list[Query]:
        """The seeded sample of `name`'s test queries."""
        return sample_queries(self.dataset(name).split_queries("test"), self.test_sample(name), self.config.seed)

    def test_qrels(self, name: str) -> Qrels:
        """The test judgments of the sampled queries (`test_queries`)."""
        return self.dataset(name).split_qrels("test").subset(q.id for q in self.test_queries(name))

    # files -----------------------------------------------------------------------------------------------

    def stage_file(self, name: str) -> Path:
        """The JSON file that the stage `name` writes in the work dir."""
        return self.work / f"{name}.json"

    @staticmethod
    def cached_run(path: Path, make: Callable[[], Run], tag: str) -> Run:
        """The run at `path`; made by `make` and written there (as `tag`) the first time."""
        if path.exists():
            return read_run(path)
        run = make()
        write_run(run, path, tag=tag)
        return run

    @staticmethod
    def write_json(path: Path, record: Any, indent: int = 2) -> Path:
        """`record` as JSON at `path`, atomically (no trailing newline)."""
        with atomic_write(path) as out:
            json.dump(record, out, indent=indent)
        return path

    @staticmethod
    def read_json(path: Path) -> Any:
        """The JSON at `path`."""
        return json.loads(Path(path).read_text())

    # interpolation ---------------------------------------------------------------------------------------

    @staticmethod
    def dev_alpha(reranked: Run, first: Run, qrels: Qrels, depth: int, measure: str = "nDCG@10") -> AlphaChoice:
        """The weight that best mixes `reranked` with the first stage it reranked on these dev qrels, and the whole
        curve (`routerank.rerank.interpolate.alpha_curve`)."""
        return AlphaChoice(*alpha_curve(reranked, first, qrels, depth, measure))
