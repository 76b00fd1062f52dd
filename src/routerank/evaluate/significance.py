"""Paired significance between two systems' per-query scores: t-test and randomisation test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedTest:
    """The outcome of `paired_test`: each system's mean over the shared queries, their count, and two-sided
    p-values of a paired t-test and of a sign-flip randomisation test."""

    mean_a: float
    mean_b: float
    n: int
    t_pvalue: float
    randomization_pvalue: float

    @property
    def delta(self) -> float:
        """System b's mean minus system a's: positive when b scores higher."""
        return self.mean_b - self.mean_a


def paired_test(a: Mapping[str, float], b: Mapping[str, float], trials: int = 10_000, seed: int = 0) -> PairedTest:
    """Compare per-query values on the queries both systems were scored on (two-sided p-values)."""
    # deferred: scipy costs ~0.2 s at import and only this path needs it
    from scipy import stats

    common = sorted(set(a) & set(b))
    if not common:
        raise ValueError("the two systems share no queries")
    x = np.array([a[q] for q in common], dtype=np.float64)
    y = np.array([b[q] for q in common], dtype=np.float64)
    diff = y - x
    t_p = 1.0 if np.allclose(diff, 0.0) else float(stats.ttest_rel(y, x).pvalue)
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    count = 0
    batch = 1000
    for start in range(0, trials, batch):
        size = min(batch, trials - start)
        signs = rng.choice((-1.0, 1.0), size=(size, diff.size))
        count += int((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum())
    return PairedTest(float(x.mean()), float(y.mean()), len(common), t_p, (count + 1) / (trials + 1))
