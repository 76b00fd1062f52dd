from __future__ import annotations

import json

import numpy as np
import pytest

from routerank.errors import DataFormatError, RouterankError
from routerank.r3ag.labels import RoutingLabels, score_routes


def small() -> RoutingLabels:
    return RoutingLabels(
        ("R0", "bm25", "dense"),
        ("q1", "q2", "q3"),
        ("who wrote it", "aspirin and heart attacks", "statins"),
        quality=[[0.0, 0.5, 0.5], [0.0, 0.9, 0.2], [0.0, 0.1, 0.3]],
        utility=[[0.7, 0.7, 0.2], [0.1, 0.2, 0.2], [0.0, 0.1, 0.6]],
        abstain=("R0",),
        meta={"dataset": "toy"},
    )


def test_best_breaks_ties_by_the_other_dimension_then_pool_order():
    labels = small()
    assert labels.best("utility") == ["bm25", "bm25", "dense"]  # q1: R0 and bm25 tie; bm25 retrieves better
    assert labels.best("quality") == ["bm25", "bm25", "dense"]  # q1: bm25 and dense tie; bm25 is more useful
    tie = RoutingLabels(("R0", "bm25"), ("q",), ("t",), [[0.0, 0.0]], [[0.5, 0.5]], abstain=("R0",))
    assert tie.best() == ["R0"]  # a full tie goes to the first member: not retrieving
    assert labels.mean("utility") == pytest.approx({"R0": 0.8 / 3, "bm25": 1.0 / 3, "dense": 1.0 / 3})


def test_save_load_round_trip_and_format(tmp_path):
    labels = small()
    labels.save(tmp_path / "labels")
    record = json.loads((tmp_path / "labels" / "labels.json").read_text())
    assert record["retrievers"] == ["R0", "bm25", "dense"] and record["format"] == 1
    loaded = RoutingLabels.load(tmp_path / "labels")
    assert loaded.retrievers == labels.retrievers and loaded.query_ids == labels.query_ids
    assert loaded.queries == labels.queries and loaded.abstain == ("R0",) and loaded.meta == {"dataset": "toy"}
    assert np.array_equal(loaded.quality, labels.quality) and np.array_equal(loaded.utility, labels.utility)
    with pytest.raises(DataFormatError, match="not a routing label folder"):
        RoutingLabels.load(tmp_path / "nothing")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"quality": np.zeros((3, 2))}, "shape"),
        ({"utility": [[np.nan, 0, 0]] * 3}, "NaN"),
        ({"query_ids": ("q1", "q1", "q3")}, "duplicate query ids"),
        ({"abstain": ("R9",)}, "abstaining members"),
        ({"queries": ("a", "b")}, "query texts"),
    ],
)
def test_bad_labels_are_refused(change, message):
    fields = {
        "retrievers": ("R0", "bm25", "dense"),
        "query_ids": ("q1", "q2", "q3"),
        "queries": ("a", "b", "c"),
        "quality": np.zeros((3, 3)),
        "utility": np.zeros((3, 3)),
    }
    with pytest.raises(DataFormatError, match=message):
        RoutingLabels(**{**fields, **change})


def test_select_subset_concat_and_with_retriever():
    labels = small()
    two = labels.select(["dense", "R0"])
    assert two.retrievers == ("dense", "R0") and two.quality[1].tolist() == pytest.approx([0.2, 0.0])
    assert labels.subset([2]).query_ids == ("q3",)
    both = RoutingLabels.concat([labels.subset([0]), labels.subset([1, 2])])
    assert both.query_ids == labels.query_ids and np.array_equal(both.utility, labels.utility)
    grown = labels.with_retriever("rm3", [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    assert grown.retrievers[-1] == "rm3" and grown.utility[:, -1].tolist() == pytest.approx([0.3, 0.2, 0.1])
    with pytest.raises(RouterankError, match="already"):
        labels.with_retriever("bm25", [0, 0, 0], [0, 0, 0])
    with pytest.raises(DataFormatError, match="one quality and one utility value per query"):
        labels.with_retriever("x", [0, 0], [0, 0])


def test_score_routes_counts_what_the_choices_earn():
    labels = small()
    scores = score_routes({"q1": "R0", "q2": "bm25", "q3": "bm25"}, labels)
    assert scores.utility == pytest.approx((0.7 + 0.2 + 0.1) / 3)
    assert scores.quality == pytest.approx((0.0 + 0.9 + 0.1) / 3)
    assert scores.retrieval_rate == pytest.approx(2 / 3) and scores.oracle_agreement == pytest.approx(1 / 3)
    with pytest.raises(RouterankError, match="no routing choice"):
        score_routes({"q1": "R0"}, labels)
