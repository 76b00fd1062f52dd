"""The framework-independent part of the integrations: install hints, corpora from user documents, input checks,
and the routing decisions a pipeline search reports."""

from __future__ import annotations

import importlib
import sys

import pytest

from routerank.data.types import Corpus, Document
from routerank.errors import MissingDependencyError, RouterankError, SpecError
from routerank.integrations.common import (
    EXPERT,
    EXPERT_CONFIDENCE,
    ROUTE,
    ROUTE_CONFIDENCE,
    PipelineSearch,
    Routing,
    check_top,
    framework_missing,
    load_corpus,
)
from routerank.route import RouteDecision

FRAMEWORKS = [("langchain", "langchain_core"), ("llamaindex", "llama_index"), ("haystack", "haystack")]


@pytest.mark.parametrize(("extra", "top_level"), FRAMEWORKS)
def test_a_missing_framework_is_one_line_that_names_the_extra(monkeypatch, extra, top_level):
    for name in [n for n in sys.modules if n == top_level or n.startswith(f"{top_level}.")]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: "not installed" to the import system
    monkeypatch.setitem(sys.modules, top_level, None)
    monkeypatch.delitem(sys.modules, f"routerank.integrations.{extra}", raising=False)
    with pytest.raises(MissingDependencyError) as info:
        importlib.import_module(f"routerank.integrations.{extra}")
    message = str(info.value)
    assert "\n" not in message and message.endswith(f"(fix: pip install 'routerank[{extra}]')")
    assert info.value.__suppress_context__ and info.value.__cause__ is None  # no ImportError chain


def test_a_broken_install_keeps_its_own_error():
    broken = ModuleNotFoundError("No module named 'pydantic_core._x'", name="pydantic_core._x")
    assert framework_missing(broken, "langchain_core", "langchain") is broken


def test_user_documents_keep_their_ids_unless_missing_or_repeated():
    def text_of(item):
        return (item["text"], item.get("id")) if isinstance(item, dict) else None

    corpus, items = load_corpus([{"text": "a", "id": "x"}, "b plain"], text_of, "dict")
    assert corpus.ids == ["0", "1"] and items[1] == "b plain"  # a string has no id: all are numbered
    corpus, _ = load_corpus([{"text": "a", "id": "x"}, {"text": "b", "id": "y"}], text_of, "dict")
    assert corpus.ids == ["x", "y"] and corpus["y"].text == "b"
    corpus, _ = load_corpus([{"text": "a", "id": "x"}, {"text": "b", "id": "x"}], text_of, "dict")
    assert corpus.ids == ["0", "1"]
    own = Corpus([Document("d1", "text")])
    assert load_corpus(own, text_of, "dict") == (own, None)
    with pytest.raises(RouterankError, match="document 2 is a int, not a dict document or a string"):
        load_corpus(["a", {"text": "b"}, 3], text_of, "dict")
    with pytest.raises(RouterankError, match="no documents to search"):
        load_corpus([], text_of, "dict")
    with pytest.raises(RouterankError, match="cannot search a dict"):
        load_corpus({"text": "a"}, text_of, "dict")


def test_sizes_must_be_positive_whole_numbers():
    assert check_top(None, "top_n") is None and check_top(3, "top_n") == 3
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(RouterankError, match="top_n must be a whole number of 1 or more"):
            check_top(bad, "top_n")
    with pytest.raises(RouterankError, match="k must be a whole number of 1 or more, got None"):
        check_top(None, "k", optional=False)


def test_routing_metadata_names_the_member_and_the_expert():
    member = RouteDecision("q0", "bm25", 0.9, {"R0": 0.1, "bm25": 0.9})
    expert = RouteDecision("q0", "scifact", 0.8, {"scifact": 0.8, "nfcorpus": 0.2})
    assert Routing().metadata() == {} and Routing().expert is None
    routing = Routing(member, expert)
    assert routing.retriever == "bm25" and routing.expert == "scifact" and not routing.abstained
    assert routing.metadata() == {ROUTE: "bm25", ROUTE_CONFIDENCE: 0.9, EXPERT: "scifact", EXPERT_CONFIDENCE: 0.8}


def test_a_search_checks_its_spec_and_query(sample):
    with pytest.raises(SpecError, match="unknown retriever 'bm26'"):
        PipelineSearch("bm26", sample.corpus, cache=False)
    with pytest.raises(RouterankError, match="not a string"):
        PipelineSearch(["bm25"], sample.corpus, cache=False)
    search = PipelineSearch("bm25", sample.corpus, cache=False)
    with pytest.raises(RouterankError, match="the query is a list, not a string"):
        search.search(["a query"], 3)
    hits, routing = search.search("ADAR1 binds to Dicer", 2)
    assert [h.rank for h in hits] == [1, 2] and routing == Routing()
