"""routerank.Reranker: the three-line API over make_reranker specs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import routerank
from routerank.data.types import Document
from routerank.errors import SpecError

QUERY = "do statins lower LDL cholesterol"
DOCS = ["Cats purr.", "Statins lower LDL cholesterol.", "Rain in Spain.", "LDL falls on statin therapy."]


@pytest.fixture(scope="module")
def ranker(fresh_ce):
    return routerank.Reranker(f"ce:{fresh_ce}", device="cpu", progress=False)


def test_rank_returns_index_document_and_score_in_the_model_order(ranker):
    results = ranker.rank(QUERY, DOCS)
    raw = ranker.backend.score_pairs([(QUERY, d) for d in DOCS])
    assert results.indices == sorted(range(4), key=lambda i: -raw[i])
    assert results.scores == pytest.approx(sorted(raw.tolist(), reverse=True))
    assert [r.document for r in results] == [DOCS[i] for i in results.indices]
    assert [r.rank for r in results] == [1, 2, 3, 4]
    assert results.query == QUERY


def test_top_k_keeps_the_best(ranker):
    full = ranker.rank(QUERY, DOCS)
    top = full.top_k(2)
    assert len(top) == 2 and top.indices == full.indices[:2]
    assert ranker.rank(QUERY, DOCS, top_k=1).indices == full.indices[:1]


def test_ties_break_by_input_order_even_past_ten(ranker):
    docs = ["same words"] * 12
    assert ranker.rank(QUERY, docs).indices == list(range(12))


def test_documents_come_back_as_given(ranker):
    docs = [Document("a", "Statins lower LDL.", "Statins"), "plain text"]
    results = ranker.rank(QUERY, docs)
    assert {id(r.document) for r in results} == {id(d) for d in docs}
    assert results[0].text in ("Statins Statins lower LDL.", "plain text")


def test_relevance_is_in_unit_interval_and_keeps_order(ranker):
    raw = np.array([-30.0, -1.0, 0.0, 2.5, 40.0])
    rel = ranker.relevance(raw)
    assert ((rel >= 0) & (rel <= 1)).all() and (np.diff(rel) >= 0).all()


def test_bad_document_type_is_a_clear_error(ranker):
    with pytest.raises(routerank.errors.RouterankError, match="document 1 is a int"):
        ranker.rank(QUERY, ["ok", 3])


def test_hub_id_offline_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(SpecError, match="HF_HUB_OFFLINE") as err:
        routerank.Reranker("ce:no-such-org/no-such-reranker")
    assert "local folder" in str(err.value)


def test_missing_local_folder_keeps_the_ce_error():
    with pytest.raises(SpecError, match="routerank train cross-encoder"):
        routerank.Reranker("ce:/no/such/folder")


def test_import_routerank_api_loads_no_torch():
    code = (
        "import sys, routerank\nrouterank.Reranker, routerank.RankedResults\n"
        "print([m for m in ('torch', 'transformers', 'sentence_transformers', 'fastapi') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
