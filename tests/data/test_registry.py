from __future__ import annotations

import pytest

import routerank
from routerank.data.registry import data_root, list_datasets
from routerank.errors import DatasetNotFoundError


def test_env_var_sets_the_root(monkeypatch, tiny_beir):
    monkeypatch.setenv("ROUTERANK_DATA", str(tiny_beir.parent))
    assert data_root() == tiny_beir.parent
    [summary] = list_datasets()
    assert (summary.name, summary.docs, summary.queries, summary.splits) == ("tiny", 3, 2, {"test": (2, 2)})
    assert len(routerank.load_dataset("tiny").corpus) == 3


def test_unknown_dataset_names_the_known_ones(monkeypatch, tiny_beir):
    monkeypatch.setenv("ROUTERANK_DATA", str(tiny_beir.parent))
    with pytest.raises(DatasetNotFoundError, match="tiny"):
        routerank.load_dataset("nope")


def test_shared_datasets_are_listed(scifact):
    names = {s.name: s for s in list_datasets(scifact.path.parent)}
    assert names["scifact"].docs == 5183
    assert names["scifact"].splits["test"] == (300, 339)
