"""Which queries choose a setting (an interpolation weight, fusion weights): never test queries.

A dataset's dev split where it has one; otherwise the queries a trained model's manifest (`routerank_train.json`)
held out of its training split, so that a weight is never chosen on queries the model was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from routerank.data.types import Dataset, Query, sample_queries
from routerank.errors import RouterankError

MANIFEST = "routerank_train.json"


def held_out_queries(ds: Dataset, folders: Iterable[str | Path | None]) -> tuple[list[Query], str] | None:
    """The first manifest among `folders` that holds out queries of `ds`: (those queries, their qrels split)."""
    for folder in folders:
        if folder is None:
            continue
        manifest = Path(folder).expanduser() / MANIFEST
        if not manifest.exists():
            continue
        source = json.loads(manifest.read_text()).get("sources", {}).get(ds.name)
        if source and source.get("dev_queries"):
            ids = set(source["dev_queries"])
            return [q for q in ds.split_queries(source["dev_split"]) if q.id in ids], source["dev_split"]
    return None


def trained_on(ds: Dataset, folders: Iterable[str | Path | None]) -> bool:
    """Whether any of `folders` is a model whose training manifest lists `ds` among its sources."""
    manifests = [Path(f).expanduser() / MANIFEST for f in folders if f is not None]
    return any(ds.name in json.loads(m.read_text()).get("sources", {}) for m in manifests if m.exists())


def dev_queries(
    ds: Dataset, folders: Iterable[str | Path | None], n: int, seed: int, *, who: str = "this model"
) -> tuple[list[Query], str]:
    """(queries, qrels split) for choosing a setting on `ds`: a model's held-out queries, else `n` judged queries
    of the dev split, seeded; an error that says what to do when neither exists."""
    held = held_out_queries(ds, folders)
    if held is not None:
        return held
    if "dev" in ds.qrels:
        qrels = ds.split_qrels("dev")
        judged = [q for q in ds.split_queries("dev") if qrels.relevant(q.id)]
        return sample_queries(judged, n, seed), "dev"
    raise RouterankError(
        f"{ds.name} has no dev split and {who} holds out no queries of it",
        fix="train the model with dev_queries > 0, or leave the dataset out of the choice",
    )
