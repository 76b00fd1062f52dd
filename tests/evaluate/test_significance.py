from __future__ import annotations

import numpy as np

from routerank.evaluate import paired_test


def test_identical_systems_are_not_different():
    a = {str(i): float(i % 3) / 3 for i in range(50)}
    result = paired_test(a, dict(a), trials=2000)
    assert result.t_pvalue == 1.0 and result.randomization_pvalue == 1.0 and result.delta == 0.0


def test_consistent_improvement_is_significant():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.6, size=100)
    a = {str(i): v for i, v in enumerate(base)}
    b = {str(i): v + 0.05 + rng.normal(0, 0.02) for i, v in enumerate(base)}
    result = paired_test(a, b, trials=2000)
    assert result.delta > 0.04 and result.t_pvalue < 1e-6 and result.randomization_pvalue < 0.001


def test_noise_is_not_significant():
    rng = np.random.default_rng(2)
    a = {str(i): rng.uniform() for i in range(60)}
    b = {q: v + rng.normal(0, 0.1) for q, v in a.items()}
    result = paired_test(a, b, trials=2000)
    assert result.t_pvalue > 0.05 and result.randomization_pvalue > 0.05
