from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

from routerank.errors import SpecError
from routerank.rerank import registry
from routerank.rerank.base import PairScoringReranker


class CountingScorer(PairScoringReranker):
    """A plugin family: scores a pair by how many query words the document holds."""

    name = "counting"

    def __init__(self, arg: str = "", **options):
        self.arg, self.options = arg, options

    @classmethod
    def from_spec(cls, arg: str, **options):
        return cls(arg, **options)

    def score_pairs(self, pairs):
        return np.array([len(set(q.split()) & set(d.split())) for q, d in pairs], dtype=float)


@pytest.fixture
def declared(monkeypatch):
    """Stand in for the installed packages' entry points: what `entry_points(group=...)` would return."""

    def install(*points: tuple[str, str]):
        found = [EntryPoint(name, value, registry.PLUGIN_GROUP) for name, value in points]
        monkeypatch.setattr(registry, "entry_points", lambda group: found if group == registry.PLUGIN_GROUP else [])
        registry.plugins.cache_clear()

    yield install
    registry.plugins.cache_clear()


def test_r2r_comes_from_the_route_layer_as_a_plugin_never_named_by_the_rerank_layer():
    from routerank.r2r.reranker import R2RReranker

    assert registry.reranker_class("r2r") is R2RReranker  # through pyproject's routerank.rerankers entry point
    assert "r2r" not in registry.FAMILIES and registry.families()[-1] == "r2r"
    source = Path(registry.__file__).read_text()
    assert "routerank.route" not in source  # the rerank layer imports nothing above it, by string or otherwise


def test_a_declared_plugin_family_works_in_specs_and_cannot_shadow_a_built_in(declared):
    declared(("counting", f"{__name__}:CountingScorer"), ("ce", f"{__name__}:CountingScorer"))
    reranker = registry.make_reranker("counting:words,", progress=False)
    assert isinstance(reranker, CountingScorer) and reranker.arg == "words," and reranker.options == {"progress": False}
    ranking = reranker.rerank("red apple", ["a red apple", "blue sky", "red car"])
    assert ranking.doc_ids == ("0", "2", "1")
    assert registry.reranker_class("ce").__name__ == "CrossEncoderReranker"  # the built-in wins
    assert registry.families().count("ce") == 1 and "counting" in registry.families()


def test_unknown_and_broken_plugins_are_errors_that_say_what_to_do(declared):
    declared(("gone", "routerank_no_such_package.mod:Reranker"), ("typo", f"{__name__}:NoSuchClass"))
    with pytest.raises(SpecError, match=r"reranker plugin 'gone' \(routerank_no_such_package.mod:Reranker"):
        registry.make_reranker("gone:x")
    with pytest.raises(SpecError, match="reranker plugin 'typo'.*does not load"):
        registry.reranker_class("typo")
    with pytest.raises(SpecError, match="unknown reranker 'nope'") as caught:
        registry.reranker_class("nope")
    assert "gone" in str(caught.value.fix) and "pointwise" in str(caught.value.fix)
