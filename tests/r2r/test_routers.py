from __future__ import annotations

import numpy as np
import pytest

from routerank.data.registry import load_dataset
from routerank.errors import RouterankError
from routerank.r2r.routers import CentroidRouter, OracleRouter, RandomRouter, SoftmaxRouter, calibrate_threshold
from routerank.route import GENERALIST
from tests.conftest import shared_dataset


@pytest.fixture(scope="module")
def domains():
    """30 train + 20 test queries from two real domains, with MiniLM features."""
    from routerank.retrieve.dense import DenseRetriever

    encoder = DenseRetriever(progress=False)
    data = {}
    for name, label in (("scifact", "science"), ("tatqa", "finance")):
        ds = load_dataset(str(shared_dataset(name)))
        data[label] = (ds.split_queries("train")[:30], ds.split_queries("test")[:20])
    train = [(q, label) for label, (tr, _) in data.items() for q in tr]
    test = [(q, label) for label, (_, te) in data.items() for q in te]
    return encoder, train, test


def features(encoder):
    return lambda texts: encoder.encode(texts, progress=False)


@pytest.mark.parametrize("hidden", [0, 32])
def test_softmax_router_separates_real_domains(domains, hidden):
    encoder, train, test = domains
    router = SoftmaxRouter(["science", "finance"], features(encoder), hidden=hidden)
    router.fit([q.text for q, _ in train], [label for _, label in train], epochs=100)
    decisions = router.route([q for q, _ in test])
    accuracy = np.mean([d.choice == label for d, (_, label) in zip(decisions, test, strict=True)])
    assert accuracy >= 0.9
    assert all(abs(sum(d.probabilities.values()) - 1) < 1e-5 for d in decisions)


def test_threshold_sends_unsure_queries_to_the_generalist(domains, tmp_path):
    encoder, train, test = domains
    router = SoftmaxRouter(["science", "finance"], features(encoder), threshold=1.01)
    router.fit([q.text for q, _ in train], [label for _, label in train], epochs=50)
    assert {d.choice for d in router.route([q for q, _ in test[:3]])} == {GENERALIST}
    router.save(tmp_path / "router")
    loaded = SoftmaxRouter.load(tmp_path / "router", features(encoder))
    texts = [q.text for q, _ in test]
    assert np.allclose(loaded.predict_proba(texts), router.predict_proba(texts), atol=1e-6)
    assert loaded.threshold == 1.01


def test_calibrated_threshold_separates_in_from_out_of_domain():
    in_domain = np.array([[0.9, 0.1], [0.8, 0.2], [0.95, 0.05]])
    out_domain = np.array([[0.55, 0.45], [0.6, 0.4]])
    cut = calibrate_threshold(in_domain, out_domain)
    assert 0.6 < cut <= 0.8


def test_baselines_share_the_interface(domains):
    encoder, train, test = domains
    centroid = CentroidRouter(["science", "finance"], features(encoder)).fit(
        [q.text for q, _ in train], [label for _, label in train]
    )
    assert (
        np.mean([d.choice == label for d, (_, label) in zip(centroid.route([q for q, _ in test]), test, strict=True)])
        >= 0.9
    )
    oracle = OracleRouter(["science", "finance"], {q.id: label for q, label in test})
    assert [d.choice for d in oracle.route([q for q, _ in test])] == [label for _, label in test]
    random_choices = {d.choice for d in RandomRouter(["science", "finance"]).route([q for q, _ in test])}
    assert random_choices <= {"science", "finance"}
    with pytest.raises(RouterankError, match="oracle has no domain"):
        oracle.route(["a query it never saw"])


def test_router_needs_distinct_labels_and_training():
    with pytest.raises(RouterankError):
        SoftmaxRouter(["a"], lambda t: np.zeros((len(t), 2)))
    with pytest.raises(RouterankError, match="not trained"):
        SoftmaxRouter(["a", "b"], lambda t: np.zeros((len(t), 2))).route(["x"])
