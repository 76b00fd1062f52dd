from __future__ import annotations

import math
from types import MappingProxyType

import pytest

from routerank.data.types import Qrels, Ranking, Run
from routerank.errors import SpecError
from routerank.evaluate import evaluate, parse_measures


def test_ndcg_and_mrr_by_hand():
    qrels = Qrels({"q1": {"a": 2, "b": 1}, "q2": {"c": 1}})
    run = Run(
        MappingProxyType({"q1": Ranking(("b", "x", "a"), (3.0, 2.0, 1.0)), "q2": Ranking(("x", "c"), (2.0, 1.0))})
    )
    result = evaluate(run, qrels, "nDCG@10 MRR@10 R@1")
    # trec_eval (and so BEIR) uses the grade itself as the gain, not 2**grade - 1
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert result.per_query["nDCG@10"]["q1"] == pytest.approx(dcg / ideal)
    assert result.per_query["MRR@10"] == pytest.approx({"q1": 1.0, "q2": 0.5})
    assert result["R@1"] == pytest.approx((0.5 + 0.0) / 2)


def test_queries_missing_from_the_run_count_as_zero():
    qrels = Qrels({"q1": {"a": 1}, "q2": {"b": 1}})
    run = Run(MappingProxyType({"q1": Ranking(("a",), (1.0,))}))
    result = evaluate(run, qrels, "nDCG@10")
    assert result.per_query["nDCG@10"] == {"q1": 1.0, "q2": 0.0}
    assert result["nDCG@10"] == 0.5


def test_unknown_measure_is_a_spec_error():
    with pytest.raises(SpecError, match="foo@3"):
        parse_measures("nDCG@10 foo@3")
    with pytest.raises(SpecError):
        parse_measures("")
