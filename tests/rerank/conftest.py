from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2():
    from routerank.models.llm import load_causal_lm

    return load_causal_lm("smollm2", device="cpu")
