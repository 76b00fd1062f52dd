from __future__ import annotations

from types import MappingProxyType

import numpy as np
import pytest

from routerank.data.types import Corpus, Ranking, Run
from routerank.errors import RouterankError, SpecError
from routerank.pipeline import Pipeline, build, build_pool
from routerank.r3ag.baselines import FixedRouter
from routerank.r3ag.pool import PoolConfig, PoolMember, RetrieverPool, RoutedRetriever
from routerank.retrieve.base import as_query_list
from tests.r3ag.conftest import POOL_CONFIG

QUERIES = ["does aspirin prevent heart attacks", "what lowers cholesterol", "zzyzzx", "statins for adults"]


class KeywordRetriever:
    """A user retriever behind the protocol: documents that contain the query's first word."""

    def __init__(self, boost: float = 1.0):
        self.name, self.boost, self.corpus = "keyword", boost, None

    def index(self, corpus: Corpus) -> None:
        self.corpus = corpus

    def search(self, queries, k: int = 100) -> Run:
        rankings = {}
        for query in as_query_list(queries):
            word = query.text.split()[0].lower()
            hits = [d.id for d in self.corpus.documents if word in d.full_text.lower()][:k]
            rankings[query.id] = Ranking(tuple(hits), tuple(self.boost for _ in hits))
        return Run(MappingProxyType(rankings), self.name)

    def save(self, path) -> None:
        pass


def make_keyword(boost: float = 1.0) -> KeywordRetriever:
    return KeywordRetriever(boost)


def test_default_pool_config_has_five_members_with_r0_first():
    config = PoolConfig.read(POOL_CONFIG)
    assert config.names == ["R0", "bm25", "rm3", "dense", "hybrid"]
    assert config.abstain == ("R0",) and config["rm3"].spec == "bm25+rm3"
    assert PoolConfig.from_json(config.to_json()) == PoolConfig(config.members)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('R0 = "null"\n', "no \\[pool\\] table"),
        ('[pool]\nR0 = "null"\n', "at least two members"),
        ('[pool]\nR0 = "null"\n"bad name" = "bm25"\n', "bad pool member name"),
        ('[pool]\nR0 = "null"\nx = { spec = "bm25", factory = "m:f" }\n', "exactly one"),
        ('[pool]\nR0 = "null"\nx = 3\n', "spec string"),
        ("[pool\n", "not valid TOML"),
    ],
)
def test_bad_pool_configs_say_what_to_fix(tmp_path, text, message):
    path = tmp_path / "pool.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        PoolConfig.read(path)


def test_pool_builds_specs_and_user_retrievers(tiny_beir, tmp_path):
    from routerank.data.beir import load_beir

    corpus = load_beir(tiny_beir).corpus
    config = PoolConfig.from_json(
        {"R0": "null", "bm25": "bm25", "rm3": "rm3:fb_docs=2", "mine": {"factory": f"{__name__}:make_keyword"}}
    )
    pool = build_pool(config, corpus, cache_dir=tmp_path)
    runs = pool.search(QUERIES, k=3)
    assert list(runs) == ["R0", "bm25", "rm3", "mine"]
    assert all(len(r) == 0 for r in runs["R0"].rankings.values())
    assert runs["bm25"]["q0"].doc_ids[0] == "d1" and runs["mine"]["q1"].doc_ids == ()
    assert runs["mine"]["q0"].doc_ids == () and runs["mine"]["q3"].doc_ids == ("d2",)
    routed = pool.search_routed(QUERIES, ["bm25", "R0", "rm3", "mine"], k=3)
    assert routed["q0"] == runs["bm25"]["q0"] and len(routed["q1"]) == 0 and routed["q3"] == runs["mine"]["q3"]
    with pytest.raises(RouterankError, match="not pool members"):
        pool.search_routed(QUERIES, ["bm25", "R0", "R0", "elsewhere"])
    with pytest.raises(SpecError, match="rerank stages"):
        build_pool(PoolConfig.from_specs({"R0": "null", "ce": "bm25>>ce:/m@10"}), corpus, cache_dir=tmp_path)
    with pytest.raises(SpecError, match="cannot import"):
        PoolMember("x", factory="no_such_module:make").create()


def test_routed_retriever_serves_each_query_from_its_choice(tiny_beir, tmp_path):
    from routerank.data.beir import load_beir

    corpus = load_beir(tiny_beir).corpus
    pool = build_pool(PoolConfig.from_specs({"R0": "null", "bm25": "bm25"}), corpus, cache_dir=tmp_path)
    routed = RoutedRetriever(FixedRouter(pool.names, "bm25"), pool)
    assert routed.search(QUERIES, 3).as_dict() == pool["bm25"].search(QUERIES, 3).as_dict()
    never = RoutedRetriever(FixedRouter(pool.names, "R0"), pool)
    assert all(len(r) == 0 for r in never.search(QUERIES, 3).rankings.values())
    with pytest.raises(RouterankError, match="pool lacks"):
        RoutedRetriever(FixedRouter(["R0", "bm25", "dense"], "dense"), pool)
    with pytest.raises(RouterankError, match="at least two"):
        RetrieverPool({"R0": pool["R0"]})


def test_r3ag_spec_routes_then_reranks(clusters, r3ag_router, tiny_beir, tmp_path, fresh_ce):
    from routerank.data.beir import load_beir

    corpus = load_beir(tiny_beir).corpus
    router = r3ag_router
    router.save(tmp_path / "router")
    texts = [clusters.test.queries[i] for i in (0, 25, 45, 65)] + ["Aspirin reduces the risk of heart attack."]
    choices = [d.choice for d in router.route(texts)]
    assert "R0" in choices and len(set(choices)) >= 3

    retriever = build(f"r3ag:{tmp_path / 'router'}", corpus, cache_dir=tmp_path / "cache")
    run = retriever.search(texts, 3)
    assert [d.choice for d in retriever.last_decisions] == choices
    for i, choice in enumerate(choices):
        expected = retriever.pool[choice].search([texts[i]], 3)["q0"]
        assert run[f"q{i}"].doc_ids == expected.doc_ids
        assert np.allclose(run[f"q{i}"].scores, expected.scores, atol=1e-5)
    assert any(len(run[f"q{i}"]) for i, c in enumerate(choices) if c != "R0")

    pipeline = build(f"r3ag:{tmp_path / 'router'}>>ce:{fresh_ce}@10", corpus, cache_dir=tmp_path / "cache")
    assert isinstance(pipeline, Pipeline)
    reranked = pipeline.search(texts, 3)
    for qid in run:
        assert set(reranked[qid].doc_ids) == set(run[qid].doc_ids)
    with pytest.raises(SpecError, match="not an R3AG router folder"):
        build(f"r3ag:{tmp_path / 'missing'}", corpus)
