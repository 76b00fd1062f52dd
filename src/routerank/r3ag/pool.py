"""Retriever pools: the named retrievers a retriever router chooses among, and the retriever that routes over them.

A pool is configured in TOML, one member per line, in column order (the order labels and router tokens use):

    [pool]
    R0 = "null"                  # a pipeline spec: R0 retrieves nothing, so routing to it is abstaining
    bm25 = "bm25"
    dense = "dense"
    mine = { factory = "mypackage.retrievers:make", args = { depth = 200 } }   # any Retriever, from your code

Members are first-stage retrievers; reranking composes after routing (`r3ag:<folder>>>ce:<model>@100`).
`routerank.pipeline.build_pool` indexes a config's members on a corpus (each leaf index from the cache), and
`RoutedRetriever` sends each query to the member its router picks. This module builds nothing from spec strings
itself: pipelines sit above routers, so the pipeline module turns specs into retrievers and hands them here.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from routerank.data.types import Corpus, Query, Ranking, Run, documents_of
from routerank.errors import RouterankError, SpecError
from routerank.retrieve.base import Retriever, as_query_list

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class PoolMember:
    """One named choice of a pool.

    name: the member's name in labels, routers and reports. spec: a first-stage pipeline spec ("bm25", "rm3",
    "dense:st:/m", "hybrid", "null"). factory: instead of a spec, "package.module:callable" that returns a
    Retriever; args: its keyword arguments.
    """

    name: str
    spec: str = ""
    factory: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise SpecError(f"bad pool member name {self.name!r}", fix="letters, digits and _ . + - (e.g. R0, bm25)")
        if bool(self.spec) == bool(self.factory):
            raise SpecError(
                f"pool member {self.name!r} needs exactly one of a spec or a factory",
                fix=f'{self.name} = "bm25", or {self.name} = {{ factory = "package.module:make" }}',
            )
        if self.factory and ":" not in self.factory:
            raise SpecError(f"factory {self.factory!r} of {self.name!r} is not 'package.module:callable'")

    def create(self) -> Retriever:
        """The user's retriever, from `factory(**args)`."""
        module_name, _, attr = self.factory.partition(":")
        try:
            make = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise SpecError(
                f"cannot import the factory {self.factory!r} of pool member {self.name!r}: {exc}",
                fix="put the module on PYTHONPATH, or check its name",
            ) from None
        retriever = make(**dict(self.args))
        if not callable(getattr(retriever, "search", None)):
            raise SpecError(f"{self.factory}() returned {type(retriever).__name__}, which has no search(queries, k)")
        return retriever

    def as_json(self) -> str | dict[str, Any]:
        """The member's TOML/JSON value: its spec string, or {"factory": ..., "args": {...}}."""
        return self.spec if self.spec else {"factory": self.factory, "args": dict(self.args)}

    @classmethod
    def from_json(cls, name: str, value: Any, path: str | Path | None = None) -> PoolMember:
        """A member from its TOML/JSON value: a spec string, or a table with `spec` or `factory` (and `args`);
        `path` names the file in errors."""
        if isinstance(value, str):
            return cls(name, spec=value.strip())
        if isinstance(value, Mapping) and set(value) <= {"spec", "factory", "args"}:
            return cls(name, str(value.get("spec", "")), str(value.get("factory", "")), dict(value.get("args", {})))
        raise SpecError(
            f"pool member {name!r} must be a spec string or {{ factory = ..., args = {{...}} }}, got {value!r}",
            path=path,
        )


@dataclass(frozen=True)
class PoolConfig:
    """The members of a pool, in column order. source: the file it was read from, if any."""

    members: tuple[PoolMember, ...]
    source: str = ""

    def __post_init__(self) -> None:
        names = [m.name for m in self.members]
        if len(names) < 2:
            raise SpecError(f"a pool needs at least two members, got {names}", path=self.source or None)
        if len(set(names)) != len(names):
            raise SpecError(f"pool member names repeat: {names}", path=self.source or None)

    @property
    def names(self) -> list[str]:
        """The member names, in column order."""
        return [m.name for m in self.members]

    @property
    def abstain(self) -> tuple[str, ...]:
        """Members that retrieve nothing (spec `null`): routing to them is abstaining."""
        return tuple(m.name for m in self.members if m.spec == "null")

    def __getitem__(self, name: str) -> PoolMember:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(name)

    def with_member(self, member: PoolMember) -> PoolConfig:
        """This pool with `member` added as the last column."""
        return PoolConfig((*self.members, member), self.source)

    def to_json(self) -> dict[str, Any]:
        """The pool as a JSON record: member name -> its spec string or factory table, in column order."""
        return {m.name: m.as_json() for m in self.members}

    @classmethod
    def from_json(cls, record: Mapping[str, Any], source: str = "") -> PoolConfig:
        """A pool from a name -> value record, as `to_json` writes it or a TOML `[pool]` table holds it."""
        return cls(tuple(PoolMember.from_json(n, v, source or None) for n, v in record.items()), source)

    @classmethod
    def from_specs(cls, specs: Mapping[str, str]) -> PoolConfig:
        """A pool from name -> spec, e.g. {"R0": "null", "bm25": "bm25", "dense": "dense"}."""
        return cls.from_json(specs)

    @classmethod
    def read(cls, path: str | Path, section: str = "pool") -> PoolConfig:
        """The `[section]` table of a TOML file (see the module docstring)."""

        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RouterankError("no such pool config file", path=path, fix="e.g. configs/r3ag-pool.toml") from None
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"not valid TOML: {exc}", path=path) from None
        table = raw.get(section)
        if not isinstance(table, Mapping):
            raise SpecError(
                f"no [{section}] table", path=path, fix=f'add [{section}] with one member per line, e.g. bm25 = "bm25"'
            )
        return cls.from_json(table, str(path))


class RetrieverPool:
    """Named retrievers that answer the same queries: the choices of a retriever router.

    members: name -> Retriever, in column order; already indexed (`routerank.pipeline.build_pool` does that from a
    config), or indexed later with `index`. config: the PoolConfig they were built from, if any; routers trained on
    this pool record it.
    """

    def __init__(self, members: Mapping[str, Retriever], config: PoolConfig | None = None):
        if len(members) < 2:
            raise RouterankError(f"a pool needs at least two members, got {list(members)}")
        if config is not None and config.names != list(members):
            raise RouterankError(f"pool members {list(members)} differ from their config's {config.names}")
        self.members: dict[str, Retriever] = dict(members)
        self.config = config

    @property
    def names(self) -> list[str]:
        """The member names, in column order."""
        return list(self.members)

    def __getitem__(self, name: str) -> Retriever:
        if name not in self.members:
            raise RouterankError(f"no pool member {name!r}", fix=f"one of {self.names}")
        return self.members[name]

    def __contains__(self, name: object) -> bool:
        return name in self.members

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def index(self, corpus: Corpus) -> None:
        """Index `corpus` with every member."""
        for retriever in self.members.values():
            retriever.index(corpus)

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> dict[str, Run]:
        """Every member's run on the same queries: what routing labels are built from."""
        query_list = as_query_list(queries)
        return {name: retriever.search(query_list, k) for name, retriever in self.members.items()}

    def search_routed(
        self, queries: Iterable[Query] | Mapping[str, Query], choices: Sequence[str], k: int = 100, name: str = "routed"
    ) -> Run:
        """One run where each query is answered by the member `choices` names for it (in query order)."""
        query_list = as_query_list(queries)
        if len(choices) != len(query_list):
            raise RouterankError(f"{len(choices)} routing choices for {len(query_list)} queries")
        unknown = sorted(set(choices) - set(self.members))
        if unknown:
            raise RouterankError(f"routed to {unknown}, which are not pool members", fix=f"one of {self.names}")
        groups: dict[str, list[Query]] = {}
        for query, choice in zip(query_list, choices, strict=True):
            groups.setdefault(choice, []).append(query)
        rankings: dict[str, Ranking] = {}
        runs = []
        for choice, group in groups.items():
            run = self.members[choice].search(group, k)
            runs.append(run)
            rankings.update({q.id: run[q.id] if q.id in run else Ranking() for q in group})
        return Run(MappingProxyType({q.id: rankings[q.id] for q in query_list}), name, documents_of(runs))


class RoutedRetriever:
    """A retriever that asks `router` which pool member serves each query; that member retrieves, and a query
    routed to R0 gets an empty ranking. Any router over the pool's names works: R3AG or a baseline.

    router: has `labels` (member names it may choose) and `route(queries) -> [RouteDecision]`.
    pool: the RetrieverPool routed over. name: the run name (default: the router's).
    """

    def __init__(self, router, pool: RetrieverPool, name: str | None = None):
        unknown = [label for label in router.labels if label not in pool]
        if unknown:
            raise RouterankError(
                f"router {router.name!r} may choose {unknown}, which the pool lacks",
                fix=f"give the pool those members (it has {pool.names}), or retrain the router on this pool",
            )
        self.router, self.pool = router, pool
        self.name = name or router.name
        self.last_decisions: list = []

    @property
    def retrievers(self) -> list[Retriever]:
        """The pool's members, so pipelines ready each from the index cache."""
        return list(self.pool.members.values())

    @retrievers.setter
    def retrievers(self, value: list[Retriever]) -> None:
        self.pool = RetrieverPool(dict(zip(self.pool.names, value, strict=True)), self.pool.config)

    def index(self, corpus: Corpus) -> None:
        """Index `corpus` with every pool member."""
        self.pool.index(corpus)

    def search(self, queries: Iterable[Query] | Mapping[str, Query], k: int = 100) -> Run:
        """Each query's top k from the member its router picks (decisions kept in `last_decisions`); a query
        routed to R0 gets an empty ranking."""
        query_list = as_query_list(queries)
        self.last_decisions = self.router.route(query_list) if query_list else []
        choices = [d.choice for d in self.last_decisions]
        return self.pool.search_routed(query_list, choices, k, self.name)

    def save(self, path: str | Path) -> None:
        """Save each member retriever to a subfolder of `path` named after the member."""
        for name, retriever in self.pool.members.items():
            retriever.save(Path(path) / name)
